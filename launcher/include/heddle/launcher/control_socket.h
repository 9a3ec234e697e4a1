// The per-mount control socket of a background supervisor: a Unix socket, mode 0600, that
// answers only its own uid or root (SO_PEERCRED). It speaks the worker's frame protocol:
// Status -> StatusOk (with extra fields), Stop -> Stopping once the mount is gone.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "heddle/ipc/message.h"
#include "heddle/unique_fd.h"

namespace heddle::launcher {

// /run/heddle-fuse for root, else $XDG_RUNTIME_DIR/heddle-fuse; created 0700 if missing.
[[nodiscard]] std::string runtime_dir();

// Where the supervisor of `mountpoint` (a canonical path) listens; the log sits beside it.
[[nodiscard]] std::string control_socket_path(const std::string& mountpoint);
[[nodiscard]] std::string supervisor_log_path(const std::string& mountpoint);

class ControlServer {
 public:
  // Binds and listens. A socket file nobody answers on is stale and replaced; a live one means
  // the mountpoint already has a supervisor (EADDRINUSE).
  explicit ControlServer(std::string path);
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;
  ~ControlServer();

  [[nodiscard]] int fd() const noexcept { return listener_.get(); }
  // Accepts one connection; nullopt (after logging) if the peer is neither us nor root.
  [[nodiscard]] std::optional<UniqueFd> accept_peer();

 private:
  std::string path_;
  UniqueFd listener_;
};

// Sends one request to the supervisor of `mountpoint` and returns its reply.
// Throws heddle::Error: ENOENT/ECONNREFUSED when no supervisor is there.
[[nodiscard]] ipc::Message control_request(const std::string& mountpoint,
                                           const ipc::Message& request,
                                           std::chrono::milliseconds timeout);

}  // namespace heddle::launcher
