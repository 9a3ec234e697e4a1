#include "heddle/launcher/fuse_mount.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "heddle/error.h"
#include "heddle/launcher/mountinfo.h"

namespace heddle::launcher {

FuseMount::FuseMount(const FuseMountOptions& options) : mountpoint_(options.mountpoint) {
  device_.reset(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
  if (!device_) {
    const int err = errno;
    struct stat st {};
    const std::string mode =
        ::stat("/dev/fuse", &st) == 0 ? std::to_string(st.st_mode & 07777) : std::string("?");
    throw Error("open /dev/fuse", err,
                err == ENOENT ? "load the fuse module (modprobe fuse) or install fuse3"
                              : "the device must be readable and writable by you (mode now 0" +
                                    mode + "; stock systems use 0666)");
  }
  const std::string data = "fd=" + std::to_string(device_.get()) + ",rootmode=40000,user_id=" +
                           std::to_string(options.user_id) +
                           ",group_id=" + std::to_string(options.group_id) +
                           ",default_permissions";
  if (::mount(options.source.c_str(), mountpoint_.c_str(), kFuseType,
              MS_NOSUID | MS_NODEV | MS_RDONLY, data.c_str()) != 0) {
    const int err = errno;
    throw Error("mount FUSE on " + mountpoint_, err,
                err == EPERM ? "mounting directly needs root (CAP_SYS_ADMIN)"
                             : "the mountpoint must be an existing directory");
  }
  const auto entry = top_mount_at(mountpoint_);
  if (!entry || entry->fstype != kFuseType) {
    ::umount2(mountpoint_.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
    throw Error("find the new mount of " + mountpoint_ + " in /proc/self/mountinfo", ENOENT,
                "the mountpoint must be given as a canonical path");
  }
  major_ = entry->major;
  minor_ = entry->minor;
}

UniqueFd FuseMount::take_device() { return std::move(device_); }

bool FuseMount::release() noexcept {
  std::lock_guard lock(mutex_);
  if (released_) return false;
  released_ = true;
  device_.reset();
  try {
    const auto top = top_mount_at(mountpoint_);
    if (!top || top->major != major_ || top->minor != minor_) {
      return false;  // already gone, or someone mounted over it: not ours to remove
    }
    if (::umount2(mountpoint_.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
      spdlog::warn("unmount {}: {}", mountpoint_, std::strerror(errno));
      return false;
    }
    spdlog::debug("unmounted {}", mountpoint_);
    return true;
  } catch (const std::exception& e) {
    spdlog::warn("unmount {}: {}", mountpoint_, e.what());
    return false;
  }
}

}  // namespace heddle::launcher
