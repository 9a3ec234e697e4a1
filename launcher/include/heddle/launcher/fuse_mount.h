// One FUSE mount made by the supervisor: the /dev/fuse connection and the mount(2) on top.
#pragma once

#include <sys/types.h>

#include <mutex>
#include <string>

#include "heddle/unique_fd.h"

namespace heddle::launcher {

struct FuseMountOptions {
  std::string mountpoint;  // canonical, an existing empty directory
  std::string source;      // shown as the mount's source in mountinfo
  uid_t user_id = 0;       // the user the mount is for
  gid_t group_id = 0;
};

class FuseMount {
 public:
  // Opens /dev/fuse and mounts it read-only, nosuid, nodev, with default_permissions.
  // Privileged path: needs CAP_SYS_ADMIN. Throws heddle::Error with a hint.
  explicit FuseMount(const FuseMountOptions& options);
  FuseMount(const FuseMount&) = delete;
  FuseMount& operator=(const FuseMount&) = delete;
  ~FuseMount() { release(); }

  // Hands the /dev/fuse fd to the caller (to pass to the worker). Once only.
  [[nodiscard]] UniqueFd take_device();

  [[nodiscard]] const std::string& mountpoint() const noexcept { return mountpoint_; }
  // The kernel's connection number: /sys/fs/fuse/connections/<n>.
  [[nodiscard]] unsigned connection() const noexcept { return minor_; }

  // Lazily unmounts, but only if the mount on top of the mountpoint is still this one.
  // Idempotent and safe from any thread. Returns true if it unmounted now.
  bool release() noexcept;

 private:
  std::string mountpoint_;
  UniqueFd device_;
  unsigned major_ = 0;
  unsigned minor_ = 0;
  std::mutex mutex_;
  bool released_ = false;
};

}  // namespace heddle::launcher
