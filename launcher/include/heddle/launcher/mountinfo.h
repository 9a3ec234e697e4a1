// Reading /proc/self/mountinfo: which mounts exist, without touching (and maybe hanging on) them.
#pragma once

#include <optional>
#include <string>
#include <vector>

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

// "/proc/self/fd/N": names exactly the file `fd` holds, for calls that take only a path.
[[nodiscard]] std::string fd_path(int fd);

// "fuse.heddle": how our mounts show up, so we never unmount anything else.
inline constexpr const char* kFuseType = "fuse.heddle";

}  // namespace heddle::launcher
