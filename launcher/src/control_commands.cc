#include <iostream>
#include <thread>

#include "commands.h"
#include "heddle/error.h"
#include "heddle/launcher/control_socket.h"
#include "heddle/launcher/fuse_mount.h"
#include "heddle/launcher/mountinfo.h"

namespace heddle::launcher {
namespace {

bool heddle_mount_at(const std::string& mountpoint) {
  const auto top = top_mount_at(mountpoint);
  return top && top->fstype == kFuseType;
}

[[noreturn]] void throw_reply_error(const ipc::Message& reply) {
  if (const auto* error = std::get_if<ipc::MountError>(&reply)) throw Error(error->message, 0);
  throw Error("unexpected reply " + std::string(ipc::kind_of(reply)) + " from the supervisor",
              EPROTO);
}

}  // namespace

int status_command(const std::string& path, bool json) {
  const std::string mountpoint = canonical_mountpoint(path);
  const ipc::Message reply =
      control_request(mountpoint, ipc::Status{}, std::chrono::milliseconds(10000));
  const auto* status = std::get_if<ipc::StatusOk>(&reply);
  if (status == nullptr) throw_reply_error(reply);
  if (json) {
    std::cout << ipc::encode_body(*status) << "\n";
    return 0;
  }
  std::cout << "mount:    " << status->mount_path << "\n"
            << "worker:   pid " << status->pid << ", answering\n";
  for (const auto& [key, value] : status->extra.items()) {
    std::cout << key << ": " << (value.is_string() ? value.get<std::string>() : value.dump())
              << "\n";
  }
  return 0;
}

int unmount_command(const std::string& path) {
  const std::string mountpoint = canonical_mountpoint(path);
  // Stop, then up to two grace periods of escalation, then the unmount itself.
  const auto timeout = 3 * stop_grace_from_env() + std::chrono::milliseconds(10000);
  try {
    const ipc::Message reply = control_request(mountpoint, ipc::Stop{}, timeout);
    if (!std::holds_alternative<ipc::Stopping>(reply)) throw_reply_error(reply);
  } catch (const Error& e) {
    const bool no_supervisor = e.code() == ENOENT || e.code() == ECONNREFUSED;
    if (!no_supervisor || !heddle_mount_at(mountpoint)) throw;
    // Its supervisor is gone: what is left is a dead mount of ours.
    detach_mount(mountpoint);
    std::cout << "removed stale mount at " << mountpoint << " (its supervisor was gone)\n";
    return 0;
  }
  for (int i = 0; i < 100 && heddle_mount_at(mountpoint); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (heddle_mount_at(mountpoint)) {
    throw Error("the mount at " + mountpoint + " is still present after Stop", EBUSY);
  }
  std::cout << "unmounted " << mountpoint << "\n";
  return 0;
}

}  // namespace heddle::launcher
