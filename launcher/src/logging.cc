#include "logging.h"

#include "heddle/display_text.h"
#include "heddle/log_levels.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string_view>

namespace heddle::launcher {
namespace {

constexpr const char* kLoggerName = "heddle-fuse-launcher";
constexpr const char* kPattern = "[%Y-%m-%d %H:%M:%S.%e] [%l] %v";
constexpr std::size_t kRotateBytes = 1 << 20;
constexpr std::size_t kRotateFiles = 3;

// %v, the message, with control characters escaped (display_text.h): a worker's relayed
// output, a repository's names and paths in errors can neither forge a line (a newline, then
// "<0>" under journald) nor drive the terminal reading the log.
class EscapedMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const std::string text = escape_text(std::string_view(msg.payload.data(), msg.payload.size()));
    dest.append(text.data(), text.data() + text.size());
  }
  [[nodiscard]] std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<EscapedMessage>();
  }
};

// Every sink gets its pattern through here, never through set_pattern().
void set_escaping_pattern(spdlog::sinks::sink& sink, const std::string& pattern) {
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<EscapedMessage>('v').set_pattern(pattern);
  sink.set_formatter(std::move(formatter));
}

// journald reads "<N>" at the start of each line as its syslog priority and stamps the time
// itself, so the line carries neither time nor level name.
class JournalSink final : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t text;
    formatter_->format(msg, text);
    const int priority = msg.level <= spdlog::level::debug ? 7
                         : msg.level == spdlog::level::info ? 6
                         : msg.level == spdlog::level::warn ? 4
                         : msg.level == spdlog::level::err  ? 3
                                                            : 2;
    std::fprintf(stderr, "<%d>%.*s", priority, static_cast<int>(text.size()), text.data());
  }
  void flush_() override { std::fflush(stderr); }
};

std::shared_ptr<spdlog::sinks::sink> journal_sink() {
  auto sink = std::make_shared<JournalSink>();
  set_escaping_pattern(*sink, "%v");
  return sink;
}

void install(std::vector<spdlog::sink_ptr> sinks) {
  const auto level = spdlog::get_level();
  auto logger = std::make_shared<spdlog::logger>(kLoggerName, sinks.begin(), sinks.end());
  logger->set_level(level);
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace

bool stderr_is_journal(const std::string& journal_stream) {
  unsigned long long device = 0;
  unsigned long long inode = 0;
  if (std::sscanf(journal_stream.c_str(), "%llu:%llu", &device, &inode) != 2) return false;
  struct stat st {};
  return ::fstat(STDERR_FILENO, &st) == 0 && st.st_dev == device && st.st_ino == inode;
}

std::string configure_logging(const LauncherEnvironment& env, int verbosity) {
  std::vector<spdlog::sink_ptr> sinks;
  if (stderr_is_journal(env.journal_stream)) {
    sinks.push_back(journal_sink());
  } else {
    // stdout carries results (--json); logs go to stderr.
    sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    set_escaping_pattern(*sinks.back(), kPattern);
  }
  install(std::move(sinks));
  apply_log_levels(env.log_levels);
  if (verbosity == 0) return {};
  const auto level = static_cast<spdlog::level::level_enum>(
      std::clamp(static_cast<int>(spdlog::level::info) - verbosity,
                 static_cast<int>(spdlog::level::trace), static_cast<int>(spdlog::level::err)));
  spdlog::set_level(level);
  const auto name = spdlog::level::to_string_view(level);
  return std::string(name.data(), name.size());
}

void log_to_file(const std::string& path, bool journal) {
  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::rotating_file_sink_mt>(path, kRotateBytes,
                                                                         kRotateFiles));
  set_escaping_pattern(*sinks.back(), "[%Y-%m-%d %H:%M:%S.%e] [%P] [%l] %v");
  if (journal) sinks.push_back(journal_sink());
  install(std::move(sinks));
  // Every line reaches the file at once: a supervisor can be SIGKILLed.
  spdlog::default_logger()->flush_on(spdlog::level::trace);
}

}  // namespace heddle::launcher
