// One FUSE mount made for the supervisor: the /dev/fuse connection and the mount on top.
#pragma once

#include <sys/types.h>

#include <mutex>
#include <string>

#include "heddle/launcher/mountinfo.h"
#include "heddle/unique_fd.h"

namespace heddle::launcher {

struct FuseMountOptions {
  std::string mountpoint;  // canonical, an existing empty directory
  // That directory, held (O_PATH) since it was resolved and checked: a direct mount goes
  // onto it, whatever the path names by then. -1: opened from `mountpoint` here.
  int mountpoint_fd = -1;
  std::string source;      // shown as the mount's source in mountinfo
  uid_t user_id = 0;       // the user the mount is for
  gid_t group_id = 0;
  bool allow_other = false;  // let users other than user_id in
  bool writable = false;     // read-write (a mount with an overlay); read-only otherwise
};

class FuseMount {
 public:
  // Mounts read-only (unless options.writable), nosuid, nodev, with default_permissions.
  // Root mounts directly, onto the held directory (fsopen/fsmount/move_mount); anyone else
  // (or root refused with EPERM, as in a container) goes through fusermount3, which checks
  // the path itself. This runs before anything in the supervisor could set no_new_privs,
  // which would void the helper's setuid bit. Throws heddle::Error with a hint.
  explicit FuseMount(const FuseMountOptions& options);
  FuseMount(const FuseMount&) = delete;
  FuseMount& operator=(const FuseMount&) = delete;
  ~FuseMount() { release(); }

  // A dup of the /dev/fuse fd, for a worker. The mount keeps its own until release(), and
  // never reads from it: the connection outlives a worker, so that a successor can take it
  // over with the kernel's state (node ids, open files, requests taken) intact.
  [[nodiscard]] UniqueFd dup_device();

  [[nodiscard]] const std::string& mountpoint() const noexcept { return mountpoint_; }
  // This mount and no other, wherever it moves. Named, not held: a held fd would make a
  // plain `umount` or `fusermount3 -u` from outside fail with EBUSY.
  [[nodiscard]] const MountIdentity& identity() const noexcept { return identity_; }

  // Lazily unmounts this mount (identity(), wherever it now is), unless it is gone or
  // something was mounted over it. Idempotent and safe from any thread. Returns true if it
  // unmounted now.
  bool release() noexcept;

 private:
  void mount_directly(const FuseMountOptions& options, int target_fd);
  void mount_legacy(const FuseMountOptions& options, int target_fd);
  // Holds the FUSE mount now on top of mountpoint_ (on `parent_fd`'s mount, if >= 0).
  void hold_new_mount(int parent_fd);
  void mount_with_fusermount(const FuseMountOptions& options);

  std::string mountpoint_;
  UniqueFd device_;
  MountIdentity identity_;
  std::mutex mutex_;
  bool released_ = false;
};

// Runs `helper` (fusermount3) to mount `mountpoint` with `mount_options` through its
// _FUSE_COMMFD protocol and returns the /dev/fuse connection it sends back. The helper gets
// fds 0-2 and that socket, nothing else of ours. Throws heddle::Error with its message.
UniqueFd mount_through_helper(const std::string& helper, const std::string& mount_options,
                              const std::string& mountpoint);

// Lazily detaches the mount whose root `mount_fd` holds, wherever it is now: umount2 of that
// very mount when we may mount directly, fusermount3 -u -z of its present path (from
// mountinfo) otherwise. False if it is detached already or something is mounted over it (not
// ours to remove with it). Throws heddle::Error with the helper's message.
bool detach_mount(int mount_fd);
// The same for the mount `mount` names (open_mount), held only while it is detached.
bool detach_mount(const MountIdentity& mount);

}  // namespace heddle::launcher
