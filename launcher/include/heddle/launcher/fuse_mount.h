// One FUSE mount made for the supervisor: the /dev/fuse connection and the mount on top.
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
  bool allow_other = false;  // let users other than user_id in
  bool writable = false;     // read-write (a mount with an overlay); read-only otherwise
};

class FuseMount {
 public:
  // Mounts read-only (unless options.writable), nosuid, nodev, with default_permissions.
  // Root mounts directly; anyone else (or root refused with EPERM, as in a container) goes
  // through fusermount3. This
  // runs before anything in the supervisor could set no_new_privs, which would void the
  // helper's setuid bit. Throws heddle::Error with a hint.
  explicit FuseMount(const FuseMountOptions& options);
  FuseMount(const FuseMount&) = delete;
  FuseMount& operator=(const FuseMount&) = delete;
  ~FuseMount() { release(); }

  // Hands the /dev/fuse fd to the caller (to pass to the worker). Once only.
  [[nodiscard]] UniqueFd take_device();

  [[nodiscard]] const std::string& mountpoint() const noexcept { return mountpoint_; }
  // The mount's device number; the minor is the kernel's connection number
  // (/sys/fs/fuse/connections/<n>).
  [[nodiscard]] unsigned device_major() const noexcept { return major_; }
  [[nodiscard]] unsigned connection() const noexcept { return minor_; }

  // Lazily unmounts, but only if the mount on top of the mountpoint is still this one.
  // Idempotent and safe from any thread. Returns true if it unmounted now.
  bool release() noexcept;

 private:
  void mount_directly(const FuseMountOptions& options);
  void mount_with_fusermount(const FuseMountOptions& options);

  std::string mountpoint_;
  UniqueFd device_;
  unsigned major_ = 0;
  unsigned minor_ = 0;
  std::mutex mutex_;
  bool released_ = false;
};

// Runs `helper` (fusermount3) to mount `mountpoint` with `mount_options` through its
// _FUSE_COMMFD protocol and returns the /dev/fuse connection it sends back. The helper gets
// fds 0-2 and that socket, nothing else of ours. Throws heddle::Error with its message.
UniqueFd mount_through_helper(const std::string& helper, const std::string& mount_options,
                              const std::string& mountpoint);

// Lazily detaches the mount on top of `mountpoint` (canonical): umount2 when we may mount
// directly, fusermount3 -u -z otherwise. Throws heddle::Error with the helper's message.
void detach_mount(const std::string& mountpoint);

}  // namespace heddle::launcher
