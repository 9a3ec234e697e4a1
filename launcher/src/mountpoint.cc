#include "heddle/launcher/mountpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <climits>
#include <deque>
#include <filesystem>
#include <optional>
#include <vector>

#include "heddle/error.h"
#include "heddle/launcher/fuse_mount.h"
#include "heddle/launcher/mountinfo.h"
#include "heddle/launcher/source_access.h"

namespace heddle::launcher {
namespace fs = std::filesystem;
namespace {

struct Resolved {
  UniqueFd parent;   // the directory that holds it
  std::string name;  // its name there
  UniqueFd fd;       // it (the root of whatever is mounted on it), O_PATH
  std::string path;  // as walked
};

std::string join(const std::string& dir, const std::string& name) {
  return dir == "/" ? dir + name : dir + "/" + name;
}

// Type, owner and mode without asking a FUSE server (one mounted there may be dead or stuck).
struct statx stat_of(int fd, const std::string& what) {
  struct statx st {};
  if (::statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE | STATX_MODE | STATX_UID,
              &st) != 0) {
    throw_errno("stat " + what);
  }
  return st;
}

// A symlink root may follow: nobody but root could have made it or could swap it.
bool only_root_could_change(int dir, const struct statx& link) {
  const struct statx st = stat_of(dir, "the directory of a symlink");
  return link.stx_uid == 0 && st.stx_uid == 0 &&
         ((st.stx_mode & 022) == 0 || (st.stx_mode & S_ISVTX) != 0);
}

Resolved walk(const std::string& input, bool as_root) {
  std::error_code ec;
  const fs::path absolute = fs::absolute(input, ec).lexically_normal();
  if (ec) throw Error("mountpoint " + input, ec.value());
  std::deque<std::string> todo;
  for (const fs::path& part : absolute.relative_path()) todo.push_back(part.string());
  UniqueFd dir(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir) throw_errno("open /");
  std::string at = "/";
  const auto pending = [&] {
    while (!todo.empty() && (todo.front().empty() || todo.front() == ".")) todo.pop_front();
    return !todo.empty();
  };
  for (int links = 0; pending();) {
    const std::string name = todo.front();
    todo.pop_front();
    const bool last = !pending();
    if (name == "..") {
      dir.reset(::openat(dir.get(), "..", O_PATH | O_DIRECTORY | O_CLOEXEC));
      if (!dir) throw_errno("mountpoint " + input + ": open " + at + "/..");
      at = fs::path(at).parent_path().string();
      if (last) {
        throw Error("mountpoint " + input + " ends in \"..\" through a symlink", EINVAL,
                    "give the mountpoint's own path");
      }
      continue;
    }
    std::string here = join(at, name);
    for (const std::string& rest : todo) here = join(here, rest);
    UniqueFd next(::openat(dir.get(), name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!next) {
      const int err = errno;
      throw Error("mountpoint " + here, err,
                  err == ENOENT   ? "create it first: mkdir -p " + here
                  : err == EACCES ? "the user the mount is for must be able to reach it"
                                  : "");
    }
    // A mount's root is no symlink, and its attributes may be refused to all but its owner.
    const bool mount_root = mount_id_of(next.get()) != mount_id_of(dir.get());
    struct statx st {};
    if (!mount_root) st = stat_of(next.get(), join(at, name));
    if (!mount_root && S_ISLNK(st.stx_mode)) {
      if (++links > 40) throw Error("mountpoint " + input, ELOOP);
      if (as_root && !only_root_could_change(dir.get(), st)) {
        throw Error("mountpoint " + input + ": " + join(at, name) +
                        " is a symlink that someone other than root could change (owner uid " +
                        std::to_string(st.stx_uid) + ")",
                    EPERM,
                    "root follows only symlinks that only root can change: give the "
                    "mountpoint's real path");
      }
      std::string target(PATH_MAX, '\0');
      const ssize_t n = ::readlinkat(dir.get(), name.c_str(), target.data(), target.size());
      if (n < 0) throw_errno("mountpoint " + input + ": readlink " + join(at, name));
      target.resize(static_cast<std::size_t>(n));
      const fs::path link(target);
      if (link.is_absolute()) {
        dir.reset(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!dir) throw_errno("open /");
        at = "/";
      }
      std::vector<std::string> parts;
      for (const fs::path& part : link.relative_path()) parts.push_back(part.string());
      todo.insert(todo.begin(), parts.begin(), parts.end());
      continue;
    }
    if (last) return Resolved{std::move(dir), name, std::move(next), join(at, name)};
    if (!mount_root && !S_ISDIR(st.stx_mode)) {
      throw Error("mountpoint " + here + ": " + join(at, name) + " is not a directory", ENOTDIR,
                  "mount on an empty directory");
    }
    dir = std::move(next);
    at = join(at, name);
  }
  throw Error("mountpoint " + input + " is the root directory", EINVAL,
              "mount on an empty directory");
}

bool is_dead_fuse(int fd) {
  struct statfs st {};
  return ::fstatfs(fd, &st) != 0 && errno == ENOTCONN;
}

bool is_empty_directory(int fd, const std::string& path) {
  const int dir_fd = ::openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) throw_errno("list mountpoint " + path);
  DIR* dir = ::fdopendir(dir_fd);
  if (dir == nullptr) {
    const int err = errno;
    ::close(dir_fd);
    throw Error("list mountpoint " + path, err);
  }
  bool empty = true;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string_view name = entry->d_name;
    if (name != "." && name != "..") {
      empty = false;
      break;
    }
  }
  ::closedir(dir);
  return empty;
}

}  // namespace

HeldMountpoint hold_mountpoint(const std::string& path, uid_t uid, gid_t gid) {
  const bool root = ::geteuid() == 0;
  Resolved found;
  as_mount_user(uid, gid, [&] { found = walk(path, root); });  // every step checked as uid

  for (bool removed_stale = false;;) {
    if (mount_id_of(found.fd.get()) == mount_id_of(found.parent.get())) break;
    const int there = mount_id_of(found.fd.get());
    std::optional<MountEntry> entry;
    for (MountEntry& mount : read_mountinfo()) {
      if (mount.id == there) entry = std::move(mount);
    }
    const bool ours = entry && entry->fstype == kFuseType;
    if (ours && !removed_stale && is_dead_fuse(found.fd.get())) {
      detach_mount(found.fd.get());  // the mount held, whatever the path leads to now
      found.fd.reset();  // no reference of ours keeps the dead mount alive
      spdlog::info("removed a stale heddle mount at {} (its worker was gone)", found.path);
      removed_stale = true;
      // The same name in the same (held) directory: what was under the dead mount.
      found.fd.reset(::openat(found.parent.get(), found.name.c_str(),
                              O_PATH | O_NOFOLLOW | O_CLOEXEC));
      if (!found.fd) throw_errno("mountpoint " + found.path);
      continue;
    }
    const std::string what = entry ? entry->fstype + " from " + entry->source : "a mount";
    throw Error("mountpoint " + found.path + " is already a mount (" + what + ")", EBUSY,
                ours ? "unmount it first: heddle-fuse-launcher unmount " + found.path
                     : "choose an empty directory that is not a mount point");
  }

  const struct statx st = stat_of(found.fd.get(), "mountpoint " + found.path);
  if (!S_ISDIR(st.stx_mode)) {
    throw Error("mountpoint " + found.path + " is not a directory", ENOTDIR,
                "mount on an empty directory");
  }
  // Root may mount for anyone; the directory must be the user's the mount is for.
  const uid_t owner = root ? uid : ::getuid();
  if (owner != 0 && st.stx_uid != owner) {
    const bool self = owner == ::getuid();
    throw Error("mountpoint " + found.path + " belongs to uid " + std::to_string(st.stx_uid) +
                    (self ? ", not to you (uid " + std::to_string(owner) + ")"
                          : ", not to uid " + std::to_string(owner) + ", whom the mount is for"),
                EPERM,
                self ? "mount on a directory you own"
                     : "mount on a directory uid " + std::to_string(owner) + " owns");
  }
  if (!is_empty_directory(found.fd.get(), found.path)) {
    throw Error("mountpoint " + found.path + " is not empty", ENOTEMPTY,
                "the mount would hide its contents; choose an empty directory");
  }
  return HeldMountpoint{found.path, std::move(found.fd)};
}

}  // namespace heddle::launcher
