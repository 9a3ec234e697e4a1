#include "logging.h"

#include "heddle/log_levels.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include <fuse_log.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace heddle::worker {
namespace {


spdlog::level::level_enum to_spdlog(fuse_log_level level) {
  switch (level) {
    case FUSE_LOG_EMERG:
    case FUSE_LOG_ALERT:
    case FUSE_LOG_CRIT:
      return spdlog::level::critical;
    case FUSE_LOG_ERR:
      return spdlog::level::err;
    case FUSE_LOG_WARNING:
      return spdlog::level::warn;
    case FUSE_LOG_NOTICE:
    case FUSE_LOG_INFO:
      return spdlog::level::info;
    case FUSE_LOG_DEBUG:
      break;
  }
  return spdlog::level::debug;
}

// libfuse hands us printf-style messages; the attribute makes -Wformat-nonliteral accept the
// vsnprintf below.
__attribute__((format(printf, 2, 0))) void log_from_libfuse(fuse_log_level level,
                                                            const char* fmt, va_list ap) {
  const auto spd_level = to_spdlog(level);
  if (!spdlog::should_log(spd_level)) return;
  char buffer[2048];
  const int n = std::vsnprintf(buffer, sizeof buffer, fmt, ap);
  if (n < 0) return;
  std::string_view text(buffer, std::min(static_cast<std::size_t>(n), sizeof buffer - 1));
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
  spdlog::log(spd_level, "libfuse: {}", text);
}

bool g_trace = false;

}  // namespace

void init_logging(const std::string& log_levels) {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("heddle-fuse-worker", std::move(sink));
  // The supervisor relays these lines into its own log, which adds the time and the source.
  logger->set_pattern("[%l] %v");
  spdlog::set_default_logger(logger);

  apply_log_levels(log_levels);
  g_trace = spdlog::get_level() == spdlog::level::trace;
  fuse_set_log_func(&log_from_libfuse);
}

bool trace_logging() { return g_trace; }

void flush_logs() noexcept {
  try {
    if (auto logger = spdlog::default_logger()) logger->flush();
  } catch (...) {
    // Nothing sensible to do about a failing stderr.
  }
  std::fflush(stderr);
}

}  // namespace heddle::worker
