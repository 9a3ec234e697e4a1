// The mount guard: a small single-threaded process (heddle-fuse-guard) that outlives a
// SIGKILLed supervisor and removes its mount. It holds one end of a socketpair; EOF on it
// means the supervisor is gone. A supervisor that releases the mount itself disarms it first.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "heddle/launcher/mountinfo.h"
#include "heddle/unique_fd.h"

namespace heddle::launcher {

inline constexpr const char* kGuardBinaryEnv = "HEDDLE_FUSE_GUARD_BIN";

// `override_path` (HEDDLE_FUSE_GUARD_BIN) if given, else heddle-fuse-guard beside the running
// executable (or in ../libexec/heddle-fuse/). Throws heddle::Error naming where it looked.
[[nodiscard]] std::string resolve_guard_binary(const std::string& override_path = {});

class MountGuard {
 public:
  // Starts the guard for the mount at `mountpoint` that `mount` names (the guard detaches that
  // mount and no other, and holds no fd on it, which would make a `umount` from outside fail
  // with EBUSY), without waiting for
  // it (its exec overlaps the worker's): it holds its end of the socket from the start, so
  // the supervisor's death is seen even before it is armed. Throws heddle::Error.
  static std::unique_ptr<MountGuard> start(const std::string& binary,
                                           const std::string& mountpoint,
                                           const MountIdentity& mount);
  // Waits until the guard says it is armed. Throws heddle::Error naming its binary.
  void await_armed();
  MountGuard(const MountGuard&) = delete;
  MountGuard& operator=(const MountGuard&) = delete;
  // Disarms it and reaps it.
  ~MountGuard();

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  // Readable once the guard has exited.
  [[nodiscard]] int pidfd() const noexcept { return pidfd_.get(); }

  // The mount is being released on purpose: the guard exits without touching it. Reaps the
  // guard (SIGKILL after a second). Idempotent, safe from any thread. Returns how it ended
  // ("exit code 0", "signal 9 (SIGKILL)").
  std::string disarm() noexcept;

 private:
  MountGuard(pid_t pid, std::string binary, UniqueFd pidfd, UniqueFd socket) noexcept
      : pid_(pid), binary_(std::move(binary)), pidfd_(std::move(pidfd)), socket_(std::move(socket)) {}

  pid_t pid_;
  std::string binary_;
  UniqueFd pidfd_;
  UniqueFd socket_;
  std::mutex mutex_;
  std::string ended_;  // set once reaped
};

}  // namespace heddle::launcher
