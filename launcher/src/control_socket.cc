#include "heddle/launcher/control_socket.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

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
    throw Error(ErrorKind::kConnect, "connect to " + path, errno);
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

namespace {

// mkdir -p, each directory it creates private; true if `dir` ends up a directory of ours.
bool make_private_dirs(const std::string& dir) {
  for (std::size_t slash = 1; slash != std::string::npos;) {
    slash = dir.find('/', slash + 1);
    const std::string prefix = dir.substr(0, slash);
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) return false;
  }
  struct stat st {};
  return ::lstat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == ::geteuid();
}

// The mountpoint as a file name a person recognises ("/home/a/mnt" -> "home-a-mnt"), made
// unique by its key.
std::string log_name(const std::string& mountpoint) {
  std::string name;
  for (char c : mountpoint) {
    const bool plain = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_';
    name += c == '/' ? '-' : plain ? c : '_';
  }
  name.erase(0, name.find_first_not_of('-'));
  name.resize(std::min<std::size_t>(name.size(), 64));
  return (name.empty() ? "root" : name) + "-" + mountpoint_key(mountpoint).substr(0, 8) + ".log";
}

}  // namespace

std::string log_dir() {
  std::string dir;
  if (::geteuid() == 0) {
    dir = "/var/log/heddle-fuse";
  } else if (const char* state = std::getenv("XDG_STATE_HOME"); state && *state == '/') {
    dir = std::string(state) + "/heddle-fuse";
  } else if (const char* home = std::getenv("HOME"); home && *home == '/') {
    dir = std::string(home) + "/.local/state/heddle-fuse";
  }
  // No usable home (a system user, HOME=/nonexistent): beside the control sockets.
  return !dir.empty() && make_private_dirs(dir) ? dir : runtime_dir();
}

std::string supervisor_log_path(const std::string& mountpoint) {
  return log_dir() + "/" + log_name(mountpoint);
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
  // Bound under a private name and renamed once listening: a socket at `path_` always
  // answers, so refusing one there means its supervisor is dead (see `list`).
  const std::string bound = path_ + ".new-" + std::to_string(::getpid());
  const sockaddr_un address = socket_address(bound);
  ::unlink(bound.c_str());
  // Created 0600 from the start: no window in which another user could connect.
  const mode_t old_mask = ::umask(0177);
  const int rc = ::bind(listener_.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address);
  ::umask(old_mask);
  if (rc != 0) throw_errno("bind " + bound);
  if (::listen(listener_.get(), 8) != 0 || ::rename(bound.c_str(), path_.c_str()) != 0) {
    const int saved = errno;
    ::unlink(bound.c_str());
    throw Error("listen on " + path_, saved);
  }
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

ipc::Message control_request_at(const std::string& path, const ipc::Message& request,
                                std::chrono::milliseconds timeout) {
  const UniqueFd fd = connect_to(path);
  ipc::write_frame(fd.get(), request, timeout);
  auto reply = ipc::read_frame(fd.get(), timeout);
  if (!reply) throw Error("the supervisor at " + path + " closed the connection", ECONNRESET);
  return std::move(*reply);
}

ipc::Message control_request(const std::string& mountpoint, const ipc::Message& request,
                             std::chrono::milliseconds timeout) {
  const std::string path = control_socket_path(mountpoint);
  try {
    return control_request_at(path, request, timeout);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kConnect && (e.code() == ENOENT || e.code() == ECONNREFUSED)) {
      throw Error("no heddle mount supervisor for " + mountpoint, e.code(),
                  "nothing is mounted there by heddle-fuse-launcher (no live socket " + path + ")");
    }
    throw;
  }
}

std::vector<std::string> control_sockets() {
  std::vector<std::string> sockets;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(runtime_dir(), ec)) {
    if (entry.path().extension() == ".sock" && entry.is_socket(ec)) {
      sockets.push_back(entry.path().string());
    }
  }
  std::sort(sockets.begin(), sockets.end());
  return sockets;
}

}  // namespace heddle::launcher
