#include "heddle/launcher/control_socket.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "heddle/error.h"
#include "heddle/ipc/frame.h"

namespace heddle::launcher {
namespace {

// FNV-1a: a short, stable name for a mountpoint that may be longer than sun_path allows.
std::string mountpoint_key(const std::string& mountpoint) {
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (unsigned char c : mountpoint) {
    hash ^= c;
    hash *= 0x100000001b3ULL;
  }
  char buffer[17];
  std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(hash));
  return buffer;
}

sockaddr_un socket_address(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof address.sun_path) {
    throw Error("control socket path " + path, ENAMETOOLONG, "set a shorter XDG_RUNTIME_DIR");
  }
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  return address;
}

UniqueFd connect_to(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) throw_errno("socket");
  const sockaddr_un address = socket_address(path);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    throw_errno("connect to " + path);
  }
  return fd;
}

}  // namespace

std::string runtime_dir() {
  std::string dir;
  if (::geteuid() == 0) {
    dir = "/run/heddle-fuse";
  } else if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg && *xdg) {
    dir = std::string(xdg) + "/heddle-fuse";
  } else {
    // No login session (su, setpriv, cron): a private directory under /tmp, as tmux does.
    dir = "/tmp/heddle-fuse-" + std::to_string(::geteuid());
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("create " + dir);
  // Another user could have made it first (in /tmp): it must be ours, private, and real.
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) throw_errno("stat " + dir);
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    throw Error("runtime directory " + dir + " is not a private directory of yours", EPERM,
                "remove it, or set XDG_RUNTIME_DIR to a directory only you can use");
  }
  return dir;
}

std::string control_socket_path(const std::string& mountpoint) {
  return runtime_dir() + "/" + mountpoint_key(mountpoint) + ".sock";
}

std::string supervisor_log_path(const std::string& mountpoint) {
  return runtime_dir() + "/" + mountpoint_key(mountpoint) + ".log";
}

ControlServer::ControlServer(std::string path) : path_(std::move(path)) {
  try {
    connect_to(path_);
    throw Error("control socket " + path_, EADDRINUSE,
                "a supervisor already serves this mountpoint; unmount it first");
  } catch (const Error& e) {
    if (e.code() == EADDRINUSE) throw;
    if (e.code() == ECONNREFUSED) {
      spdlog::info("removing stale control socket {}", path_);
      ::unlink(path_.c_str());
    }
  }
  listener_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener_) throw_errno("socket");
  const sockaddr_un address = socket_address(path_);
  // Created 0600 from the start: no window in which another user could connect.
  const mode_t old_mask = ::umask(0177);
  const int rc = ::bind(listener_.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address);
  ::umask(old_mask);
  if (rc != 0) throw_errno("bind " + path_);
  if (::listen(listener_.get(), 8) != 0) throw_errno("listen on " + path_);
}

ControlServer::~ControlServer() { ::unlink(path_.c_str()); }

std::optional<UniqueFd> ControlServer::accept_peer() {
  UniqueFd peer(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!peer) {
    spdlog::warn("accept on {}: {}", path_, std::strerror(errno));
    return std::nullopt;
  }
  ucred cred{};
  socklen_t length = sizeof cred;
  if (::getsockopt(peer.get(), SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) {
    spdlog::warn("SO_PEERCRED on {}: {}", path_, std::strerror(errno));
    return std::nullopt;
  }
  if (cred.uid != ::geteuid() && cred.uid != 0) {
    spdlog::warn("refused control connection from uid {} pid {}", cred.uid, cred.pid);
    return std::nullopt;
  }
  return peer;
}

ipc::Message control_request(const std::string& mountpoint, const ipc::Message& request,
                             std::chrono::milliseconds timeout) {
  const std::string path = control_socket_path(mountpoint);
  UniqueFd fd;
  try {
    fd = connect_to(path);
  } catch (const Error& e) {
    if (e.code() == ENOENT || e.code() == ECONNREFUSED) {
      throw Error("no heddle mount supervisor for " + mountpoint, e.code(),
                  "nothing is mounted there by heddle-fuse-launcher (no live socket " + path + ")");
    }
    throw;
  }
  ipc::write_frame(fd.get(), request, timeout);
  auto reply = ipc::read_frame(fd.get(), timeout);
  if (!reply) throw Error("supervisor of " + mountpoint + " closed the connection", ECONNRESET);
  return std::move(*reply);
}

}  // namespace heddle::launcher
