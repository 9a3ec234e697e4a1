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

// Which mount is which, whatever its path comes to be: the mount id as mountinfo and statx
// give it, and the device, which tells a recycled id from the mount recorded.
struct MountIdentity {
  int id = 0;
  unsigned major = 0;
  unsigned minor = 0;  // for FUSE: the connection number
  [[nodiscard]] bool matches(const MountEntry& entry) const noexcept {
    return entry.id == id && entry.major == major && entry.minor == minor;
  }
};

// The id of the mount `fd` lies on (statx STATX_MNT_ID). Throws heddle::Error.
[[nodiscard]] int mount_id_of(int fd);

// The identity of the mount whose root `fd` is (statx, never asking a FUSE server).
// Throws heddle::Error.
[[nodiscard]] MountIdentity identity_of_mount(int fd);

// "/proc/self/fd/N": names exactly the file `fd` holds, for calls that take only a path.
[[nodiscard]] std::string fd_path(int fd);

// "fuse.heddle": how our mounts show up, so we never unmount anything else.
inline constexpr const char* kFuseType = "fuse.heddle";

}  // namespace heddle::launcher
