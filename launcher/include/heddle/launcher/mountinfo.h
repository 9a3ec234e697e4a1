// Reading /proc/self/mountinfo: which mounts exist, without touching (and maybe hanging on) them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "heddle/unique_fd.h"

namespace heddle::launcher {

struct MountEntry {
  int id = 0;
  int parent_id = 0;
  unsigned major = 0;
  unsigned minor = 0;  // for FUSE: the connection number in /sys/fs/fuse/connections
  std::string mount_point;
  std::string fstype;
  std::string source;
};

// Throws heddle::Error if the file cannot be read.
[[nodiscard]] std::vector<MountEntry> read_mountinfo(const std::string& path = "/proc/self/mountinfo");

// The topmost mount whose mount point is exactly `mount_point` (a canonical path), if any.
[[nodiscard]] std::optional<MountEntry> top_mount_at(const std::string& mount_point);

// The id of the mount `fd` lies on (statx with an empty mask: the kernel still gives it, and
// FUSE neither asks its server, dead, stuck or not started yet, nor refuses a caller that is
// not the mount's owner). While an fd holds a mount, its id is not reused. Throws heddle::Error.
[[nodiscard]] int mount_id_of(int fd);

// One mount, named without holding it: an fd on a mount makes a plain `umount` or
// `fusermount3 -u` of it fail with EBUSY, so nothing of ours keeps one open for long.
struct MountIdentity {
  int id = 0;                // mountinfo's id; reused once the mount is freed
  // statx's STATX_MNT_ID_UNIQUE (Linux 6.8), never reused; 0: unknown (an older kernel, or
  // a FUSE mount of another user, whose server refuses such a statx)
  std::uint64_t unique = 0;
  unsigned major = 0;        // its superblock's device (for FUSE, the connection)
  unsigned minor = 0;
  bool operator==(const MountIdentity&) const = default;
};

// The identity of the mount `fd` lies on (statx, which asks no FUSE server). Throws.
[[nodiscard]] MountIdentity mount_identity_of(int fd);

// `mount`'s line in `mounts` (id and device both match), if it is attached in this namespace.
[[nodiscard]] std::optional<MountEntry> find_mount(const MountIdentity& mount,
                                                   const std::vector<MountEntry>& mounts);

// The root of `mount` (O_PATH), opened at its present path and checked to be that very mount
// (by its unique id where the kernel has one); an empty fd if it is detached, covered by
// another mount or out of reach. Throws only if mountinfo cannot be read.
[[nodiscard]] UniqueFd open_mount(const MountIdentity& mount);

// "/proc/self/fd/N": names exactly the file `fd` holds, for calls that take only a path.
[[nodiscard]] std::string fd_path(int fd);

// "fuse.heddle": how our mounts show up, so we never unmount anything else.
inline constexpr const char* kFuseType = "fuse.heddle";

}  // namespace heddle::launcher
