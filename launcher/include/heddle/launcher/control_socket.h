// The per-mount control socket of a background supervisor: a Unix socket, mode 0600, that
// answers only its own uid or root (SO_PEERCRED). It speaks the worker's frame protocol:
// Status -> StatusOk (with extra fields), Stop -> Stopping once the mount is gone.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "heddle/ipc/message.h"
#include "heddle/launcher/user_dirs.h"
#include "heddle/unique_fd.h"

namespace heddle::launcher {

// /run/heddle-fuse for root, else $XDG_RUNTIME_DIR/heddle-fuse (without it
// /tmp/heddle-fuse-UID); created 0700 if missing.
[[nodiscard]] std::string runtime_dir(const UserDirs& dirs);

// /var/log/heddle-fuse for root, else $XDG_STATE_HOME/heddle-fuse (default
// ~/.local/state/heddle-fuse), created 0700; runtime_dir() if neither can be made.
[[nodiscard]] std::string log_dir(const UserDirs& dirs);

// Where the supervisor of `mountpoint` (a canonical path) listens, and where it logs.
[[nodiscard]] std::string control_socket_path(const UserDirs& dirs, const std::string& mountpoint);
[[nodiscard]] std::string supervisor_log_path(const UserDirs& dirs, const std::string& mountpoint);
// The lock file beside the control socket `socket_path` ("KEY.sock" -> "KEY.lock").
[[nodiscard]] std::string control_lock_path(const std::string& socket_path);

// Removes the supervisor logs (with their rotations) in log_dir() of mounts that have ended:
// not written for `max_age`, and no control socket in runtime_dir() for their mountpoint.
// The log of `starting` (the mountpoint of the supervisor starting now) stays. Returns how
// many files it removed; errors are skipped (expiry is housekeeping).
std::size_t expire_supervisor_logs(const UserDirs& dirs, const std::string& starting,
                                   std::chrono::hours max_age);

// Removes the control socket at `path` unless a supervisor holds its lock (one that lives, or
// is starting there): the socket of a dead supervisor, never a new one's. True if removed.
// `patience`: how long to wait for the lock (a supervisor just killed releases it a moment
// after its other fds: the kernel closes an exiting task's files last opened first).
bool remove_stale_control_socket(const std::string& path,
                                 std::chrono::milliseconds patience = std::chrono::milliseconds(0));

class ControlServer {
 public:
  // Takes the socket's lock (a file beside it, held for our life, then removed with the socket)
  // and binds and listens. A socket file nobody answers on is stale and replaced; a live one,
  // or a lock held for more than a second, means the mountpoint already has a supervisor
  // (EADDRINUSE).
  explicit ControlServer(std::string path);
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;
  ~ControlServer();

  [[nodiscard]] int fd() const noexcept { return listener_.get(); }
  // Accepts one connection; nullopt (after logging) if the peer is neither us nor root.
  [[nodiscard]] std::optional<UniqueFd> accept_peer();

 private:
  std::string path_;
  UniqueFd lock_;
  UniqueFd listener_;
};

// Sends one request to the supervisor listening at `path` and returns its reply.
[[nodiscard]] ipc::Message control_request_at(const std::string& path,
                                              const ipc::Message& request,
                                              std::chrono::milliseconds timeout);

// Every control socket in runtime_dir(), live or stale, sorted.
[[nodiscard]] std::vector<std::string> control_sockets(const UserDirs& dirs);

// Sends one request to the supervisor of `mountpoint` and returns its reply.
// Throws heddle::Error: ENOENT/ECONNREFUSED when no supervisor is there.
[[nodiscard]] ipc::Message control_request(const UserDirs& dirs, const std::string& mountpoint,
                                           const ipc::Message& request,
                                           std::chrono::milliseconds timeout);

}  // namespace heddle::launcher
