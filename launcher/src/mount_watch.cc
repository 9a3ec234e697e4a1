#include "heddle/launcher/mount_watch.h"

#include <fcntl.h>

#include "heddle/error.h"

namespace heddle::launcher {

MountWatch::MountWatch(const MountIdentity& mount)
    : mount_(mount), fd_(::open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC)) {
  if (!fd_) throw_errno("open /proc/self/mountinfo", "the supervisor watches its mount there");
}

bool MountWatch::attached() const noexcept {
  try {
    return find_mount(mount_, read_mountinfo()).has_value();
  } catch (const std::exception&) {
    return true;
  }
}

}  // namespace heddle::launcher
