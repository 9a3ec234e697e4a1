// Private to ipc/: waiting for an fd against one deadline, shared by frame.cc and fd_passing.cc.
#pragma once

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <optional>

#include "heddle/error.h"
#include "heddle/ipc/frame.h"

namespace heddle::ipc::detail {

class Deadline {
 public:
  // The end is fixed here, once, so that retries after EINTR or partial I/O never extend it.
  // Timeouts too long to add to now() without overflow are treated as none.
  explicit Deadline(Timeout timeout) {
    constexpr std::chrono::hours kForever(24 * 365 * 100);
    if (timeout && *timeout < kForever) end_ = std::chrono::steady_clock::now() + *timeout;
  }

  [[nodiscard]] bool bounded() const noexcept { return end_.has_value(); }

  // Blocks until `fd` reports one of `events` (or an error/hangup, which the next I/O call
  // will surface). Throws ETIMEDOUT naming `what` once the deadline has passed.
  void wait(int fd, short events, const char* what) const {
    pollfd entry{.fd = fd, .events = events, .revents = 0};
    for (;;) {
      const int ready = ::poll(&entry, 1, remaining_ms());
      if (ready > 0) {
        if ((entry.revents & POLLNVAL) != 0) throw Error(what, EBADF);
        return;
      }
      if (ready == 0) throw Error(what, ETIMEDOUT);
      if (errno != EINTR) throw_errno(what);
    }
  }

 private:
  // poll()'s timeout: -1 for none, else the time left rounded up so we never wake early
  // and spin; 0 once it has passed (poll then only reports what is already ready).
  [[nodiscard]] int remaining_ms() const {
    if (!end_) return -1;
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(*end_ - std::chrono::steady_clock::now());
    return static_cast<int>(std::clamp<std::chrono::milliseconds::rep>(left.count(), 0, INT_MAX));
  }

  std::optional<std::chrono::steady_clock::time_point> end_;
};

}  // namespace heddle::ipc::detail
