#include "heddle/launcher/fuse_mount.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/socket.h>

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
    try {
      mount_directly(options);
    } catch (const Error& e) {
      if (e.code() != EPERM) throw;
      spdlog::info("mount(2) refused ({}); mounting through {} instead", e.what(), kFusermount);
      mount_with_fusermount(options);
    }
  } else {
    mount_with_fusermount(options);
  }
  const auto entry = top_mount_at(mountpoint_);
  if (!entry || entry->fstype != kFuseType) {
    device_.reset();
    released_ = true;
    throw Error("find the new mount of " + mountpoint_ + " in /proc/self/mountinfo", ENOENT,
                "the mountpoint must be given as a canonical path");
  }
  major_ = entry->major;
  minor_ = entry->minor;
}

void FuseMount::mount_directly(const FuseMountOptions& options) {
  require_fuse_device();
  device_.reset(::open(kFuseDevice, O_RDWR | O_CLOEXEC));
  if (!device_) throw_errno(std::string("open ") + kFuseDevice);
  std::string data = "fd=" + std::to_string(device_.get()) + ",rootmode=40000,user_id=" +
                     std::to_string(options.user_id) +
                     ",group_id=" + std::to_string(options.group_id) + ",default_permissions";
  if (options.allow_other) data += ",allow_other";
  if (::mount(options.source.c_str(), mountpoint_.c_str(), kFuseType,
              MS_NOSUID | MS_NODEV | (options.writable ? 0 : MS_RDONLY), data.c_str()) != 0) {
    const int err = errno;
    device_.reset();
    throw Error("mount FUSE on " + mountpoint_, err,
                err == EPERM ? "mounting directly needs CAP_SYS_ADMIN over the host"
                             : "the mountpoint must be an existing directory");
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
    detach_mount(mountpoint_);
    spdlog::debug("unmounted {}", mountpoint_);
    return true;
  } catch (const std::exception& e) {
    spdlog::warn("unmount {}: {}", mountpoint_, e.what());
    return false;
  }
}

void detach_mount(const std::string& mountpoint) {
  if (can_mount_directly()) {
    if (::umount2(mountpoint.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0) return;
    if (errno != EPERM) throw_errno("unmount " + mountpoint);
  }
  const std::string helper = require_fusermount();
  const ProcessResult result = run_host_command({helper, "-u", "-z", "--", mountpoint});
  if (!result.ok()) {
    throw Error(helper + " -u -z " + mountpoint + ": " + result.out, errno_in(result.out));
  }
}

}  // namespace heddle::launcher
