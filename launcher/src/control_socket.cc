#include "heddle/launcher/control_socket.h"

#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <sys/file.h>
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
#include <thread>

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

// The lock file is held by the supervisor serving the socket, and taken briefly by whoever
// removes a stale one, so that no one removes a socket a new supervisor just made. Whoever
// removes the socket removes the lock file too, still holding it (none pile up in the runtime
// directory), so a lock taken on a file no longer at its path is not the lock: it is let go
// and taken again.
UniqueFd lock_control_socket(const std::string& socket_path, std::chrono::milliseconds patience) {
  const std::string path = control_lock_path(socket_path);
  const auto deadline = std::chrono::steady_clock::now() + patience;
  for (;;) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) throw_errno("open " + path);
    while (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK && errno != EINTR) throw_errno("lock " + path);
      if (std::chrono::steady_clock::now() >= deadline) return UniqueFd();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    struct stat held {}, named {};
    if (::fstat(fd.get(), &held) != 0) throw_errno("stat " + path);
    if (::lstat(path.c_str(), &named) == 0 && named.st_dev == held.st_dev &&
        named.st_ino == held.st_ino) {
      return fd;
    }
  }
}

}  // namespace

bool remove_stale_control_socket(const std::string& path, std::chrono::milliseconds patience) {
  const UniqueFd lock = lock_control_socket(path, patience);
  if (!lock) return false;
  const bool removed = ::unlink(path.c_str()) == 0;
  ::unlink(control_lock_path(path).c_str());  // still held: a waiter sees it gone, starts again
  return removed;
}

std::string runtime_dir(const UserDirs& dirs) {
  std::string dir;
  if (::geteuid() == 0) {
    dir = "/run/heddle-fuse";
  } else if (!dirs.xdg_runtime_dir.empty()) {
    dir = dirs.xdg_runtime_dir + "/heddle-fuse";
  } else {
    // No login session (su, setpriv, cron): a private directory under /tmp, as tmux does.
    dir = "/tmp/heddle-fuse-" + std::to_string(::geteuid());
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("create " + dir);
  // Another user could have made it first (in /tmp): it must be ours, private, and real.
  // Anything else is refused, never used or repaired: its sockets could be anyone's.
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) throw_errno("stat " + dir);
  const bool ours = st.st_uid == ::geteuid();
  std::string what;
  if (!S_ISDIR(st.st_mode)) {
    what = "is not a directory";
  } else if (!ours) {
    what = "belongs to uid " + std::to_string(st.st_uid) + ", not to you";
  } else if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    what = std::string("has mode ") + mode + ", open to others";
  }
  if (!what.empty()) {
    const std::string fix =
        "set XDG_RUNTIME_DIR to a directory only you can use (mkdir -m 0700 ~/.run && export "
        "XDG_RUNTIME_DIR=~/.run)";
    throw Error("runtime directory " + dir + " " + what + ": it is not safe to use", EPERM,
                ours ? "remove it (rm -r " + dir + "), or " + fix
                     : "someone else created it first; ask root to remove it, or " + fix);
  }
  return dir;
}

std::string control_socket_path(const UserDirs& dirs, const std::string& mountpoint) {
  return runtime_dir(dirs) + "/" + mountpoint_key(mountpoint) + ".sock";
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

std::string log_dir(const UserDirs& dirs) {
  std::string dir;
  if (::geteuid() == 0) {
    dir = "/var/log/heddle-fuse";
  } else if (dirs.xdg_state_home.starts_with('/')) {
    dir = dirs.xdg_state_home + "/heddle-fuse";
  } else if (dirs.home.starts_with('/')) {
    dir = dirs.home + "/.local/state/heddle-fuse";
  }
  // No usable home (a system user, HOME=/nonexistent): beside the control sockets.
  return !dir.empty() && make_private_dirs(dir) ? dir : runtime_dir(dirs);
}

std::string supervisor_log_path(const UserDirs& dirs, const std::string& mountpoint) {
  return log_dir(dirs) + "/" + log_name(mountpoint);
}

std::string control_lock_path(const std::string& socket_path) {
  return socket_path.substr(0, socket_path.rfind(".sock")) + ".lock";
}

namespace {

// The mountpoint key a log file is named by ("home-a-mnt-0123abcd.log", rotated
// "home-a-mnt-0123abcd.1.log"), or "" if the name is not one of ours.
std::string log_key(std::string name) {
  if (!name.ends_with(".log")) return "";
  name.resize(name.size() - 4);
  if (const auto dot = name.rfind('.'); dot != std::string::npos &&
      name.find_first_not_of("0123456789", dot + 1) == std::string::npos) {
    name.resize(dot);
  }
  const auto dash = name.rfind('-');
  if (dash == std::string::npos || name.size() - dash - 1 != 8) return "";
  return name.substr(dash + 1);
}

}  // namespace

std::size_t expire_supervisor_logs(const UserDirs& dirs, const std::string& starting,
                                   std::chrono::hours max_age) {
  namespace fs = std::filesystem;
  std::vector<std::string> live = {mountpoint_key(starting).substr(0, 8)};
  try {
    for (const std::string& socket : control_sockets(dirs)) {
      live.push_back(fs::path(socket).filename().string().substr(0, 8));
    }
  } catch (const Error&) {
    return 0;  // which mounts live is unknown: keep everything
  }
  const auto oldest = fs::file_time_type::clock::now() - max_age;
  std::size_t removed = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(log_dir(dirs), ec)) {
    const std::string key = log_key(entry.path().filename().string());
    if (key.empty() || std::find(live.begin(), live.end(), key) != live.end()) continue;
    std::error_code file_ec;
    if (!entry.is_regular_file(file_ec) || entry.is_symlink(file_ec)) continue;
    const auto written = entry.last_write_time(file_ec);
    if (!file_ec && written < oldest && fs::remove(entry.path(), file_ec)) ++removed;
  }
  return removed;
}

ControlServer::ControlServer(std::string path) : path_(std::move(path)) {
  lock_ = lock_control_socket(path_, std::chrono::milliseconds(1000));
  if (!lock_) {
    throw Error("control socket " + path_, EADDRINUSE,
                "another supervisor is starting at this mountpoint; unmount it first");
  }
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

ControlServer::~ControlServer() {
  ::unlink(path_.c_str());
  ::unlink(control_lock_path(path_).c_str());  // before lock_ is let go (see lock_control_socket)
}

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

ipc::Message control_request(const UserDirs& dirs, const std::string& mountpoint,
                             const ipc::Message& request, std::chrono::milliseconds timeout) {
  const std::string path = control_socket_path(dirs, mountpoint);
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

std::vector<std::string> control_sockets(const UserDirs& dirs) {
  std::vector<std::string> sockets;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(runtime_dir(dirs), ec)) {
    if (entry.path().extension() == ".sock" && entry.is_socket(ec)) {
      sockets.push_back(entry.path().string());
    }
  }
  std::sort(sockets.begin(), sockets.end());
  return sockets;
}

}  // namespace heddle::launcher
