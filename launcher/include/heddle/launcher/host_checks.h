// The host's preconditions for a mount, each a function that throws one heddle::Error naming
// the cause, the errno and the fix. `mount` calls the ones it needs; `doctor` calls them all.
#pragma once

#include <sys/types.h>

#include <string>

namespace heddle::launcher {

inline constexpr const char* kFuseDevice = "/dev/fuse";
inline constexpr const char* kFuseConf = "/etc/fuse.conf";
inline constexpr const char* kFusermount = "fusermount3";

// True when this process may call mount(2) itself: root in the initial user namespace.
// Everyone else mounts through the setuid fusermount3.
[[nodiscard]] bool can_mount_directly();

// /dev/fuse exists, is the FUSE character device, and is readable and writable by us.
void require_fuse_device();

// The setuid fusermount3 on $PATH, usable by this process: found, setuid root, and no
// no_new_privs on us (see below). Returns its path.
[[nodiscard]] std::string require_fusermount();

// No no_new_privs on this process: under it the kernel ignores every setuid bit.
void require_setuid_possible();

// /etc/fuse.conf has user_allow_other (needed for allow_other without root).
void require_user_allow_other();

// The value of a /proc/sys file, trimmed, or "" when it does not exist.
[[nodiscard]] std::string read_sysctl(const std::string& path);

}  // namespace heddle::launcher
