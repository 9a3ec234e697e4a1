#include "heddle/launcher/fuse_mount.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include "heddle/error.h"
#include "heddle/process.h"
#include "heddle/ipc/fd_passing.h"
#include "heddle/launcher/host_checks.h"
#include "heddle/launcher/mountinfo.h"

namespace heddle::launcher {
namespace {

// fusermount3 splits -o at commas; libfuse escapes them (and backslashes) in values.
std::string escape_option_value(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == ',' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

// fusermount3 prints "fusermount3: <what>: <strerror>"; recover the errno when it is there.
int errno_in(const std::string& message) {
  for (int err = 1; err < 134; ++err) {
    if (message.find(std::strerror(err)) != std::string::npos) return err;
  }
  return EIO;
}

}  // namespace

FuseMount::FuseMount(const FuseMountOptions& options) : mountpoint_(options.mountpoint) {
  if (can_mount_directly()) {
    UniqueFd opened;
    int target = options.mountpoint_fd;
    if (target < 0) {
      opened.reset(::open(mountpoint_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
      if (!opened) throw_errno("mountpoint " + mountpoint_, "mount on an existing directory");
      target = opened.get();
    }
    try {
      mount_directly(options, target);
    } catch (const Error& e) {
      if (e.code() != EPERM) throw;
      spdlog::info("mount(2) refused ({}); mounting through {} instead", e.what(), kFusermount);
      mount_with_fusermount(options);
    }
  } else {
    mount_with_fusermount(options);
  }
}

void FuseMount::mount_directly(const FuseMountOptions& options, int target) {
  require_fuse_device();
  device_.reset(::open(kFuseDevice, O_RDWR | O_CLOEXEC));
  if (!device_) throw_errno(std::string("open ") + kFuseDevice);
  const auto fail = [&](const std::string& what) {
    const int err = errno;
    device_.reset();
    throw Error(what + " for " + mountpoint_, err,
                err == EPERM ? "mounting directly needs CAP_SYS_ADMIN over the host"
                             : "the mountpoint must be an existing directory");
  };
  const UniqueFd context(::fsopen("fuse", FSOPEN_CLOEXEC));
  if (!context) {
    if (errno != ENOSYS) fail("fsopen fuse");
    mount_legacy(options, target);  // before Linux 5.2
    return;
  }
  const auto set = [&](const char* key, const std::string& value) {
    if (::fsconfig(context.get(), FSCONFIG_SET_STRING, key, value.c_str(), 0) != 0) {
      fail(std::string("fsconfig ") + key + "=" + value);
    }
  };
  const auto flag = [&](const char* key) {
    if (::fsconfig(context.get(), FSCONFIG_SET_FLAG, key, nullptr, 0) != 0) {
      fail(std::string("fsconfig ") + key);
    }
  };
  set("source", options.source);
  set("subtype", "heddle");
  set("fd", std::to_string(device_.get()));
  set("rootmode", "40000");
  set("user_id", std::to_string(options.user_id));
  set("group_id", std::to_string(options.group_id));
  flag("default_permissions");
  if (options.allow_other) flag("allow_other");
  if (!options.writable) flag("ro");
  if (::fsconfig(context.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) {
    fail("create the FUSE superblock");
  }
  UniqueFd mount(::fsmount(context.get(), FSMOUNT_CLOEXEC,
                                 MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
                                     (options.writable ? 0 : MOUNT_ATTR_RDONLY)));
  if (!mount) fail("fsmount FUSE");
  // Onto the directory that was resolved and checked, not whatever its path names by now.
  if (::move_mount(mount.get(), "", target, "",
                   MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0) {
    fail("mount FUSE");
  }
  try {
    identity_ = mount_identity_of(mount.get());  // no path is looked up again
  } catch (const Error&) {
    ::umount2(fd_path(mount.get()).c_str(), MNT_DETACH);
    device_.reset();
    throw;
  }
}

void FuseMount::mount_legacy(const FuseMountOptions& options, int target) {
  std::string data = "fd=" + std::to_string(device_.get()) + ",rootmode=40000,user_id=" +
                     std::to_string(options.user_id) +
                     ",group_id=" + std::to_string(options.group_id) + ",default_permissions";
  if (options.allow_other) data += ",allow_other";
  if (::mount(options.source.c_str(), fd_path(target).c_str(), kFuseType,
              MS_NOSUID | MS_NODEV | (options.writable ? 0 : MS_RDONLY), data.c_str()) != 0) {
    const int err = errno;
    device_.reset();
    throw Error("mount FUSE on " + mountpoint_, err,
                err == EPERM ? "mounting directly needs CAP_SYS_ADMIN over the host"
                             : "the mountpoint must be an existing directory");
  }
  hold_new_mount(target);
}

void FuseMount::hold_new_mount(int parent_fd) {
  const UniqueFd held(::open(mountpoint_.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  const auto entry = top_mount_at(mountpoint_);
  const bool found = held && entry && entry->fstype == kFuseType &&
                     mount_id_of(held.get()) == entry->id &&
                     (parent_fd < 0 || entry->parent_id == mount_id_of(parent_fd));
  if (found) identity_ = mount_identity_of(held.get());
  if (!found) {
    device_.reset();
    released_ = true;
    throw Error("find the new mount of " + mountpoint_ + " in /proc/self/mountinfo", ENOENT,
                "the mountpoint must be given as a canonical path");
  }
}

void FuseMount::mount_with_fusermount(const FuseMountOptions& options) {
  const std::string helper = require_fusermount();
  require_fuse_device();
  if (options.allow_other && ::geteuid() != 0) require_user_allow_other();

  // fusermount3 adds rootmode, user_id and group_id itself, always for the real uid.
  std::string mount_options = std::string(options.writable ? "" : "ro,") +
                              "nosuid,nodev,default_permissions,subtype=heddle,fsname=" +
                              escape_option_value(options.source);
  if (options.allow_other) mount_options += ",allow_other";
  device_ = mount_through_helper(helper, mount_options, mountpoint_);
  hold_new_mount(-1);  // the user's own path, just mounted on by fusermount3
}

UniqueFd mount_through_helper(const std::string& helper, const std::string& mount_options,
                              const std::string& mountpoint) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    throw_errno("socketpair for " + helper);
  }
  const UniqueFd ours(fds[0]);
  UniqueFd theirs(fds[1]);
  ProcessOptions process;
  process.env = {"_FUSE_COMMFD=" + std::to_string(theirs.get())};
  process.fds = {{theirs.get(), theirs.get()}};
  const ProcessResult result =
      run_host_command({helper, "-o", mount_options, "--", mountpoint}, process);
  theirs.reset();  // so a helper that sent nothing reads as EOF, not as a wait
  if (!result.ok()) {
    throw Error(helper + " could not mount " + mountpoint + ": " + result.out,
                errno_in(result.out),
                "see " + helper + "'s message; `heddle-fuse-launcher doctor` checks this host");
  }
  // It sent the connection before exiting; the message waits in our end of the socket.
  ipc::ReceivedFds received = ipc::receive_fds(ours.get(), 1, 1, std::chrono::milliseconds(1000));
  return std::move(received.fds.at(0));
}

UniqueFd FuseMount::dup_device() {
  std::lock_guard lock(mutex_);
  if (released_ || !device_) throw Error("the FUSE connection of " + mountpoint_ + " is closed", EBADF);
  UniqueFd fd(::fcntl(device_.get(), F_DUPFD_CLOEXEC, 3));
  if (!fd) throw_errno("dup the FUSE connection of " + mountpoint_);
  return fd;
}

bool FuseMount::release() noexcept {
  std::lock_guard lock(mutex_);
  if (released_) return false;
  released_ = true;
  // The last fd of the connection: closing it aborts what is still pending (ENOTCONN), so
  // nothing waits for a worker that will not come.
  device_.reset();
  try {
    const bool detached = detach_mount(identity_);
    if (detached) spdlog::debug("unmounted {}", mountpoint_);
    return detached;  // false: already gone, or covered (not ours to remove)
  } catch (const std::exception& e) {
    spdlog::warn("unmount {}: {}", mountpoint_, e.what());
    return false;
  }
}

bool detach_mount(const MountIdentity& mount) {
  const UniqueFd held = open_mount(mount);
  return held && detach_mount(held.get());
}

bool detach_mount(int mount_fd) {
  const int id = mount_id_of(mount_fd);
  std::optional<MountEntry> ours;
  const std::vector<MountEntry> mounts = read_mountinfo();
  for (const MountEntry& entry : mounts) {
    if (entry.id == id) ours = entry;
  }
  if (!ours) return false;  // detached already (held, its id is not anyone else's)
  for (const MountEntry& entry : mounts) {
    // Lazily detaching ours would take a mount on top of it along.
    if (entry.parent_id == id && entry.mount_point == ours->mount_point) return false;
  }
  if (can_mount_directly()) {
    if (::umount2(fd_path(mount_fd).c_str(), MNT_DETACH) == 0) return true;
    if (errno != EPERM) throw_errno("unmount " + ours->mount_point);
  }
  // fusermount3 unmounts only its caller's own FUSE mounts, at the path it is given.
  const std::string helper = require_fusermount();
  const ProcessResult result = run_host_command({helper, "-u", "-z", "--", ours->mount_point});
  if (!result.ok()) {
    throw Error(helper + " -u -z " + ours->mount_point + ": " + result.out, errno_in(result.out));
  }
  return true;
}

}  // namespace heddle::launcher
