#include "heddle/launcher/output_relay.h"

#include <fcntl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <string_view>

#include "heddle/error.h"

namespace heddle::launcher {
namespace {

constexpr std::size_t kMaxLine = 4096;

// The worker writes "[LEVEL] message"; anything else (a sanitizer report, a library's own
// print) is unexpected enough to be a warning.
void log_line(spdlog::logger& logger, const std::string& prefix, std::string_view line) {
  auto level = spdlog::level::warn;
  if (line.size() > 2 && line.front() == '[') {
    if (const auto close = line.find("] "); close != std::string_view::npos) {
      const auto parsed = spdlog::level::from_str(std::string(line.substr(1, close - 1)));
      if (parsed != spdlog::level::off) {
        level = parsed;
        line.remove_prefix(close + 2);
      }
    }
  }
  logger.log(level, "{}: {}", prefix, line);
}

}  // namespace

OutputRelay::OutputRelay() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2 for the worker's output");
  read_end_.reset(fds[0]);
  write_end_.reset(fds[1]);
  stop_.reset(::eventfd(0, EFD_CLOEXEC));
  if (!stop_) throw_errno("eventfd");
}

OutputRelay::~OutputRelay() {
  if (!thread_.joinable()) return;
  const std::uint64_t one = 1;
  (void)!::write(stop_.get(), &one, sizeof one);
  thread_.join();
}

void OutputRelay::start(std::string prefix) {
  write_end_.reset();
  // Our sinks, but no filter of our own: the child already logged at the level it was given
  // (HEDDLE_FUSE_LOG is passed on), which may differ from ours ("warn,heddle-fuse-worker=debug").
  std::shared_ptr<spdlog::logger> logger = spdlog::default_logger()->clone("heddle-fuse-worker");
  logger->set_level(spdlog::level::trace);
  thread_ = std::thread([this, logger = std::move(logger), prefix = std::move(prefix)] {
    relay(*logger, prefix);
  });
}

void OutputRelay::relay(spdlog::logger& logger, const std::string& prefix) {
  std::string pending;
  char buffer[4096];
  bool stopping = false;
  for (;;) {
    pollfd fds[2] = {{read_end_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (!stopping && ::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents != 0 && !stopping) {
      // Drain only what is already there: a leaked copy of the write end must not hold us.
      stopping = true;
      ::fcntl(read_end_.get(), F_SETFL, O_NONBLOCK);
    }
    const ssize_t n = ::read(read_end_.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buffer, static_cast<std::size_t>(n));
    for (std::size_t end; (end = pending.find('\n')) != std::string::npos || pending.size() > kMaxLine;) {
      const std::size_t cut = end == std::string::npos ? kMaxLine : end;
      log_line(logger, prefix, std::string_view(pending).substr(0, cut));
      pending.erase(0, end == std::string::npos ? cut : cut + 1);
    }
  }
  if (!pending.empty()) log_line(logger, prefix, pending);
}

}  // namespace heddle::launcher
