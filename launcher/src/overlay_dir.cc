#include "heddle/launcher/overlay_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <utility>

#include "heddle/error.h"
#include "heddle/launcher/source_access.h"

namespace heddle::launcher {
namespace fs = std::filesystem;
namespace {

constexpr const char* kSourceTemp = "source.json.tmp";
// What a directory may hold to count as an overlay (discard refuses anything else).
constexpr const char* kOverlayEntries[] = {"source.json", "source.json.tmp", "lock", "upper",
                                           "work"};

// FNV-1a 64. Part of the on-disk contract (KEY names resume a thread's changes): never change it.
std::uint64_t fnv1a(const std::string& bytes) {
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

std::string key_part(const std::string& text) {
  std::string out;
  for (char c : text) {
    const bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                       c == '.' || c == '_' || c == '-';
    out += plain ? c : '_';
  }
  out.resize(std::min<std::size_t>(out.size(), 80));  // the hash keeps it unique
  return out;
}

// source.json's bytes. JSON needs UTF-8; other bytes become U+FFFD, and comparisons go
// through the same encoding so such a path still matches itself.
std::string source_json(const OverlaySource& source) {
  nlohmann::ordered_json body;
  body["source"] = source.source;
  body["thread"] = source.git() ? nlohmann::ordered_json(source.thread) : nullptr;
  body["kind"] = source.git() ? "git" : "dir";
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::optional<OverlaySource> parse_source_json(const std::string& text) {
  try {
    const auto body = nlohmann::json::parse(text);
    OverlaySource source{body.at("source").get<std::string>(), ""};
    if (body.contains("thread") && body["thread"].is_string()) {
      source.thread = body["thread"].get<std::string>();
    }
    return source;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

std::string read_small_file(const std::string& path) {
  const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) throw_errno("open " + path);
  std::string text;
  char buffer[4096];
  for (ssize_t n; (n = ::read(fd.get(), buffer, sizeof buffer)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("read " + path);
    text.append(buffer, static_cast<std::size_t>(n));
    if (text.size() > (1 << 20)) break;
  }
  return text;
}

void write_file_atomically(const std::string& dir, const std::string& name,
                           const std::string& text) {
  const std::string temp = dir + "/" + kSourceTemp;
  const std::string path = dir + "/" + name;
  ::unlink(temp.c_str());  // left by a crash
  {
    const UniqueFd fd(
        ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) throw_errno("create " + temp);
    if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()) ||
        ::fsync(fd.get()) != 0) {
      throw_errno("write " + temp);
    }
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) throw_errno("rename " + temp + " to " + path);
}

// mkdir -p; only the directories it makes are 0700 (existing ones are the user's business).
void make_dirs(const std::string& dir) {
  for (std::size_t slash = 1; slash != std::string::npos;) {
    slash = dir.find('/', slash + 1);
    const std::string prefix = dir.substr(0, slash);
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("create " + prefix);
  }
}

// The overlays directory must be the caller's and private: it names every source mounted.
void require_private_dir(const std::string& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) throw_errno("stat " + dir);
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) {
    throw Error("overlays directory " + dir + " is not a directory of yours", EPERM,
                "remove it, or give --overlay-dir");
  }
  if ((st.st_mode & 077) != 0 && ::chmod(dir.c_str(), 0700) != 0) throw_errno("chmod " + dir);
}

bool only_overlay_entries(const std::string& dir, std::string* stranger) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (std::find(std::begin(kOverlayEntries), std::end(kOverlayEntries), name) ==
        std::end(kOverlayEntries)) {
      if (stranger != nullptr) *stranger = name;
      return false;
    }
  }
  if (ec) throw Error("list " + dir, ec.value());
  return true;
}

// Root hands an existing overlay to a new worker uid (the same thread mounted for another user).
void chown_tree(const std::string& dir, uid_t uid, gid_t gid) {
  if (::lchown(dir.c_str(), uid, gid) != 0) throw_errno("chown " + dir);
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (::lchown(it->path().c_str(), uid, gid) != 0) throw_errno("chown " + it->path().string());
  }
  if (ec) throw Error("walk " + dir, ec.value());
}

bool has_xattr(const std::string& path, const char* name) {
  return ::lgetxattr(path.c_str(), name, nullptr, 0) >= 0;
}

std::string join(const std::string& rel, const std::string& name) {
  return rel.empty() ? name : rel + "/" + name;
}

void collect_changes(const std::string& abs, const std::string& rel, OverlayChanges& out) {
  std::set<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(abs, ec)) {
    names.insert(entry.path().filename().string());
  }
  if (ec) throw Error("list " + abs, ec.value());
  const std::string prefix = kWhiteoutPrefix;
  for (const std::string& name : names) {
    if (name == kOpaqueMarker) continue;
    if (name.starts_with(prefix)) {
      // A whiteout next to an entry of the same name is stale: the entry wins.
      const std::string target = name.substr(prefix.size());
      if (!target.empty() && !names.contains(target)) out.deleted.push_back(join(rel, target));
      continue;
    }
    const std::string path = abs + "/" + name;
    const std::string relative = join(rel, name);
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) throw_errno("stat " + path);
    const bool origin = has_xattr(path, kOriginXattr);
    if (!S_ISDIR(st.st_mode)) {
      (origin ? out.modified : out.added).push_back(relative);
      continue;
    }
    const bool opaque = ::access((path + "/" + kOpaqueMarker).c_str(), F_OK) == 0;
    if (opaque) {
      out.replaced.push_back(relative);
    } else if (!origin) {
      out.added.push_back(relative);
    } else {
      // A copied-up directory is usually only the parent of a change; it is a change itself
      // when its attributes were set, or when nothing below it changed.
      bool empty = true;
      for (const auto& child : fs::directory_iterator(path, ec)) {
        (void)child;
        empty = false;
        break;
      }
      if (has_xattr(path, kAttrXattr) || empty) out.modified.push_back(relative);
    }
    collect_changes(path, relative, out);
  }
}

std::string lock_path(const std::string& dir) { return dir + "/" + kOverlayLockFile; }

std::string holder_text(int fd) {
  std::string text;
  char buffer[4096];
  for (off_t offset = 0;;) {
    const ssize_t n = ::pread(fd, buffer, sizeof buffer, offset);
    if (n <= 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
    offset += n;
  }
  return text;
}

}  // namespace

bool path_within(const std::string& inner, const std::string& outer) {
  return inner == outer ||
         (inner.size() > outer.size() && inner.compare(0, outer.size(), outer) == 0 &&
          (outer == "/" || inner[outer.size()] == '/'));
}

std::string overlay_key(const OverlaySource& source) {
  std::string base = fs::path(source.source).filename().string();
  if (base.empty()) base = "root";
  std::string name = key_part(base);
  if (source.git()) name += "-" + key_part(source.thread);
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016llx",
                static_cast<unsigned long long>(fnv1a(source.source + '\0' + source.thread)));
  return name + "-" + hash;
}

std::string overlays_root(const UserDirs& dirs) {
  if (::geteuid() == 0) return "/var/lib/heddle-fuse/overlays";
  if (dirs.xdg_state_home.starts_with('/')) return dirs.xdg_state_home + "/heddle-fuse/overlays";
  std::string home = dirs.home;
  if (!home.starts_with('/')) {
    const auto account = account_of(::getuid());
    home = account ? account->home : "";
  }
  if (!home.starts_with('/')) {
    throw Error("find a home for overlays", ENOENT, "set XDG_STATE_HOME, or give --overlay-dir");
  }
  return home + "/.local/state/heddle-fuse/overlays";
}

std::string prepare_overlay_dir(const UserDirs& dirs, const std::string& requested,
                                const OverlaySource& source,
                                const std::vector<std::string>& forbidden, uid_t owner_uid,
                                gid_t owner_gid) {
  std::string dir;
  if (requested.empty()) {
    const std::string root = overlays_root(dirs);
    make_dirs(root);
    require_private_dir(root);
    dir = root + "/" + overlay_key(source);
  } else {
    dir = requested;
  }
  std::error_code ec;
  dir = fs::weakly_canonical(fs::absolute(dir, ec), ec).string();
  if (ec) throw Error("overlay directory " + requested, ec.value());
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const char* choose = requested.empty() ? "give another with --overlay-dir"
                                         : "choose a directory outside both";
  for (const std::string& path : forbidden) {
    if (path_within(dir, path) || path_within(path, dir)) {
      // The worker writes there: it must never be the repository, the source or the mount.
      throw Error("overlay directory " + dir + " and " + path + " overlap", EINVAL, choose);
    }
  }
  if (::mkdir(dir.c_str(), 0700) != 0) {
    if (errno == ENOENT) throw_errno("create overlay directory " + dir, "its parent must exist");
    if (errno != EEXIST) throw_errno("create overlay directory " + dir);
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0) throw_errno("stat " + dir);
    if (!S_ISDIR(st.st_mode)) throw Error("overlay directory " + dir, ENOTDIR);
    if (::access((dir + "/" + kOverlaySourceFile).c_str(), F_OK) == 0) {
      const auto existing = read_overlay_source(dir);
      const auto wanted = parse_source_json(source_json(source));
      if (!existing || existing != wanted) {
        throw Error("overlay directory " + dir + " holds the changes of another source" +
                        (existing ? " (" + existing->source +
                                        (existing->git() ? "#" + existing->thread : "") + ")"
                                  : std::string()),
                    EEXIST,
                    "discard them (heddle-fuse-launcher overlay discard " + dir + ") or " + choose);
      }
    } else if (std::string stranger; !only_overlay_entries(dir, &stranger)) {
      throw Error("overlay directory " + dir + " is neither empty nor an overlay (it holds " +
                      stranger + ")",
                  ENOTEMPTY, "give an empty or new directory");
    }
    if (::geteuid() == 0) {
      if (st.st_uid != owner_uid || st.st_gid != owner_gid) chown_tree(dir, owner_uid, owner_gid);
    } else if (st.st_uid != ::geteuid()) {
      throw Error("overlay directory " + dir + " belongs to uid " + std::to_string(st.st_uid),
                  EPERM, "use a directory of your own");
    }
  } else if (::geteuid() == 0 && ::chown(dir.c_str(), owner_uid, owner_gid) != 0) {
    throw_errno("chown " + dir);
  }
  // Nobody else may read the changes, or write them.
  if (::chmod(dir.c_str(), 0700) != 0) throw_errno("chmod " + dir);
  if (::access((dir + "/" + kOverlaySourceFile).c_str(), F_OK) != 0) {
    write_file_atomically(dir, kOverlaySourceFile, source_json(source));
  }
  return dir;
}

std::optional<OverlaySource> read_overlay_source(const std::string& dir) {
  try {
    return parse_source_json(read_small_file(dir + "/" + kOverlaySourceFile));
  } catch (const Error&) {
    return std::nullopt;
  }
}

OverlayLock OverlayLock::acquire(const std::string& dir, const std::string& mountpoint) {
  const std::string path = lock_path(dir);
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) throw_errno("open " + path, "the overlay directory must exist (prepare_overlay_dir)");
  // A SIGKILLed supervisor's worker may take a moment to see EOF and exit, and `overlay list`
  // probes the lock briefly: retry for a second before calling the overlay busy.
  for (int attempt = 0;; ++attempt) {
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) break;
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) throw_errno("lock " + path);
    if (attempt == 50) {
      const std::string holder = holder_text(fd.get());
      throw Error("overlay " + dir + " is in use by the mount at " +
                      (holder.empty() ? std::string("(unknown)") : holder),
                  EBUSY, "unmount that first, or give this mount another --overlay-dir");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (::ftruncate(fd.get(), 0) != 0 ||
      ::pwrite(fd.get(), mountpoint.data(), mountpoint.size(), 0) !=
          static_cast<ssize_t>(mountpoint.size())) {
    throw_errno("write " + path);
  }
  return OverlayLock(std::move(fd));
}

std::optional<std::string> overlay_holder(const std::string& dir) {
  const UniqueFd fd(::open(lock_path(dir).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return std::nullopt;
    throw_errno("open " + lock_path(dir));
  }
  if (::flock(fd.get(), LOCK_SH | LOCK_NB) == 0) return std::nullopt;  // closing unlocks
  if (errno != EWOULDBLOCK) throw_errno("lock " + lock_path(dir));
  return holder_text(fd.get());
}

std::string overlay_last_mountpoint(const std::string& dir) {
  const UniqueFd fd(::open(lock_path(dir).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  return fd ? holder_text(fd.get()) : std::string();
}

OverlayUsage overlay_usage(const std::string& dir) {
  OverlayUsage usage;
  const std::string upper = dir + "/" + kOverlayUpperDir;
  std::set<std::pair<dev_t, ino_t>> linked;
  std::error_code ec;
  if (!fs::exists(upper, ec)) return usage;
  for (auto it = fs::recursive_directory_iterator(upper, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0 || S_ISDIR(st.st_mode)) continue;
    if (it->path().filename().string().starts_with(kWhiteoutPrefix)) continue;
    ++usage.files;
    if (!S_ISREG(st.st_mode)) continue;
    if (st.st_nlink > 1 && !linked.insert({st.st_dev, st.st_ino}).second) continue;
    usage.bytes += static_cast<std::uint64_t>(st.st_size);
  }
  if (ec) throw Error("walk " + upper, ec.value());
  return usage;
}

OverlayChanges overlay_changes(const std::string& dir) {
  OverlayChanges changes;
  const std::string upper = dir + "/" + kOverlayUpperDir;
  std::error_code ec;
  if (!fs::is_directory(upper, ec)) return changes;
  collect_changes(upper, "", changes);
  for (auto* list : {&changes.added, &changes.modified, &changes.deleted, &changes.replaced}) {
    std::sort(list->begin(), list->end());
  }
  return changes;
}

void discard_overlay(const std::string& dir) {
  std::string stranger;
  const bool looks_like_overlay = ::access((dir + "/" + kOverlaySourceFile).c_str(), F_OK) == 0 ||
                                  ::access((dir + "/" + kOverlayUpperDir).c_str(), F_OK) == 0;
  if (!looks_like_overlay || !only_overlay_entries(dir, &stranger)) {
    // Never remove a directory that is not plainly an overlay (a mistyped path, say ~).
    throw Error("discard " + dir + ": not an overlay directory" +
                    (stranger.empty() ? std::string() : " (it holds " + stranger + ")"),
                EINVAL, "`heddle-fuse-launcher overlay list` shows the overlays");
  }
  // Held while removing, so no mount can start on it meanwhile.
  const UniqueFd lock(::open(lock_path(dir).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (lock && ::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) throw_errno("lock " + lock_path(dir));
    const std::string holder = holder_text(lock.get());
    throw Error("overlay " + dir + " is in use by the mount at " + holder, EBUSY,
                "unmount it first: heddle-fuse-launcher unmount " + holder);
  }
  // Directories the worker left without owner write (or search) would stop the removal.
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) == 0 && S_ISDIR(st.st_mode) &&
        (st.st_mode & S_IRWXU) != S_IRWXU && st.st_uid == ::geteuid()) {
      ::chmod(it->path().c_str(), (st.st_mode & 07777) | S_IRWXU);
    }
  }
  ec.clear();
  fs::remove_all(dir, ec);
  if (ec) throw Error("remove " + dir, ec.value());
}

void forget_unused_overlay(const UserDirs& dirs, const std::string& dir) noexcept {
  try {
    std::error_code ec;
    if (fs::path(dir).parent_path() != fs::weakly_canonical(overlays_root(dirs), ec)) {
      return;  // a directory the user chose
    }
    const std::string upper = dir + "/" + kOverlayUpperDir;
    if (fs::exists(upper, ec) && !fs::is_empty(upper, ec)) return;
    if (ec || overlay_holder(dir)) return;
    discard_overlay(dir);
  } catch (const std::exception&) {
    // Best effort: what is left is an empty overlay, which `overlay discard` removes.
  }
}

}  // namespace heddle::launcher
