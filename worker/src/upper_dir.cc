#include "upper_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include "heddle/error.h"

namespace heddle::worker {
namespace {

constexpr const char* kOriginXattr = "user.heddle.origin";
constexpr const char* kAttrXattr = "user.heddle.attr";
constexpr const char* kOrphans = "orphans";

UniqueFd make_and_open_dir(int parent, const char* name) {
  if (::mkdirat(parent, name, 0700) != 0 && errno != EEXIST) return UniqueFd();
  return UniqueFd(::openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
}

// Removes everything in the directory `fd` (never following a symlink) but the entry `keep`.
void empty_dir(int fd, const char* keep = nullptr) {
  UniqueFd dup(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  DIR* dir = dup ? ::fdopendir(dup.get()) : nullptr;
  if (dir == nullptr) return;
  static_cast<void>(dup.release());
  while (const dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    if (name == "." || name == ".." || (keep != nullptr && name == keep)) continue;
    if (::unlinkat(fd, name.c_str(), 0) == 0 || errno != EISDIR) continue;
    // A directory: its owner (the worker) may lack permissions inside only if the mode says
    // so; on-disk directories always keep owner rwx.
    UniqueFd child(::openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (child) empty_dir(child.get());
    ::unlinkat(fd, name.c_str(), AT_REMOVEDIR);
  }
  ::closedir(dir);
}

std::string whiteout_name(std::string_view name) {
  return std::string(kWhiteoutPrefix) + std::string(name);
}

}  // namespace

mode_t disk_mode(bool is_dir, mode_t view_mode) {
  const mode_t owner_bits = is_dir ? S_IRWXU : (S_IRUSR | S_IWUSR);
  return (view_mode & (S_IRWXU | S_IRWXG | S_IRWXO)) | owner_bits;
}

std::pair<std::string, std::string> split_path(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return {".", path};
  return {path.substr(0, slash), path.substr(slash + 1)};
}

UpperDir::UpperDir(const std::string& dir, uid_t owner_uid, gid_t owner_gid, bool successor)
    : dir_(dir), owner_uid_(owner_uid), owner_gid_(owner_gid) {
  // Files are created with the mode they keep on disk: the kernel already applied the user's
  // umask to the mode it sent, and the worker's own must not apply again.
  ::umask(0);
  const UniqueFd base(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!base) {
    throw Error("open overlay directory " + dir, errno,
                "the launcher creates it, owned by the worker's uid, before the mount");
  }
  upper_ = make_and_open_dir(base.get(), "upper");
  if (!upper_) throw_errno("open " + dir + "/upper", "the overlay must be writable by the worker");
  work_ = make_and_open_dir(base.get(), "work");
  if (!work_) throw_errno("open " + dir + "/work", "the overlay must be writable by the worker");
  empty_dir(work_.get(), successor ? kOrphans : nullptr);
  if (successor) {
    orphans_.reset(::openat(work_.get(), kOrphans, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  }
}

int UpperDir::open_orphans() {
  if (orphans_) return 0;
  if (::mkdirat(work_.get(), kOrphans, 0700) != 0 && errno != EEXIST) return errno;
  orphans_.reset(::openat(work_.get(), kOrphans, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  return orphans_ ? 0 : errno;
}

int UpperDir::hide(int dir_fd, const std::string& name, const std::string& hidden, bool keep) {
  if (const int err = open_orphans(); err != 0) return err;
  const int rc = keep ? ::linkat(dir_fd, name.c_str(), orphans_.get(), hidden.c_str(), 0)
                      : ::renameat(dir_fd, name.c_str(), orphans_.get(), hidden.c_str());
  return rc == 0 ? 0 : errno;
}

int UpperDir::hide_pointer(const std::string& target, const std::string& hidden) {
  if (const int err = open_orphans(); err != 0) return err;
  return ::symlinkat(target.c_str(), orphans_.get(), hidden.c_str()) == 0 ? 0 : errno;
}

void UpperDir::unhide(const std::string& hidden) const {
  if (orphans_) ::unlinkat(orphans_.get(), hidden.c_str(), 0);
}

std::vector<std::string> UpperDir::hidden_names() const {
  std::vector<std::string> names;
  if (!orphans_) return names;
  const UniqueFd fd(::openat(orphans_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  std::vector<DirEntry> entries;
  if (!fd || read_entries(fd.get(), entries) != 0) return names;
  for (DirEntry& entry : entries) {
    if (entry.name != "." && entry.name != "..") names.push_back(std::move(entry.name));
  }
  return names;
}

OpenResult UpperDir::open(const std::string& rel, int flags) const {
  return open_beneath(upper_.get(), rel, flags);
}

OpenResult UpperDir::open_dir(const std::string& rel) const {
  return open(rel, O_PATH | O_DIRECTORY | O_NOFOLLOW);
}

std::string UpperDir::temp_name() {
  return "tmp." + std::to_string(::getpid()) + "." + std::to_string(++next_temp_);
}

void UpperDir::remove_temp(const std::string& name) const {
  if (::unlinkat(work_.get(), name.c_str(), 0) == 0 || errno != EISDIR) return;
  UniqueFd child(::openat(work_.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (child) empty_dir(child.get());
  ::unlinkat(work_.get(), name.c_str(), AT_REMOVEDIR);
}

int UpperDir::set_aside(int dir_fd, const std::string& name) {
  const std::string temp = temp_name();
  if (::renameat(dir_fd, name.c_str(), work_.get(), temp.c_str()) != 0) return errno;
  remove_temp(temp);
  return 0;
}

bool UpperDir::has_whiteout(int dir_fd, std::string_view name) {
  struct stat st {};
  return ::fstatat(dir_fd, whiteout_name(name).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

int UpperDir::add_whiteout(int dir_fd, std::string_view name) {
  const int fd = ::openat(dir_fd, whiteout_name(name).c_str(),
                          O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

void UpperDir::drop_whiteout(int dir_fd, std::string_view name) {
  ::unlinkat(dir_fd, whiteout_name(name).c_str(), 0);
}

bool UpperDir::is_opaque(int dir_fd) {
  struct stat st {};
  return ::fstatat(dir_fd, kOpaqueMarker, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

int UpperDir::make_opaque(int dir_fd) {
  const int fd = ::openat(dir_fd, kOpaqueMarker, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

int UpperDir::store_attr(int fd, bool is_dir, const ViewAttr& view, bool fresh) const {
  mode_t disk = disk_mode(is_dir, view.mode);
  const bool plain =
      disk == view.mode && view.uid == owner_uid_ && view.gid == owner_gid_ && view.ino == 0;
  if (plain) {
    if (fresh) return 0;
    if (::fremovexattr(fd, kAttrXattr) != 0 && errno != ENODATA && errno != ENOTSUP) return errno;
  } else {
    char value[96];
    const int n = std::snprintf(value, sizeof value, "%o %u %u %llu", view.mode & 07777, view.uid,
                                view.gid, static_cast<unsigned long long>(view.ino));
    if (::fsetxattr(fd, kAttrXattr, value, static_cast<std::size_t>(n), 0) != 0) return errno;
    disk |= S_ISVTX;
  }
  return ::fchmod(fd, disk) == 0 ? 0 : errno;
}

namespace {
bool flagged(const struct stat& st) {
  return (st.st_mode & S_ISVTX) != 0 && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode));
}
}  // namespace

ViewAttr UpperDir::view_of(int fd, const struct stat& st) const {
  ViewAttr view{st.st_mode & 07777, owner_uid_, owner_gid_};
  if (!flagged(st)) return view;
  char value[96] = {};
  const ssize_t n = ::fgetxattr(fd, kAttrXattr, value, sizeof value - 1);
  unsigned mode = 0;
  unsigned uid = 0;
  unsigned gid = 0;
  unsigned long long ino = 0;
  if (n > 0 && std::sscanf(value, "%o %u %u %llu", &mode, &uid, &gid, &ino) >= 3) {
    view = ViewAttr{static_cast<mode_t>(mode & 07777), uid, gid, static_cast<ino_t>(ino)};
  }
  return view;
}

ViewAttr UpperDir::view_at(int dir_fd, const std::string& name, const struct stat& st) const {
  if (!flagged(st)) return ViewAttr{st.st_mode & 07777, owner_uid_, owner_gid_};
  const UniqueFd fd(::openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd) return ViewAttr{st.st_mode & 07777 & ~S_ISVTX, owner_uid_, owner_gid_};
  return view_of(fd.get(), st);
}

void UpperDir::mark_origin(int fd) {
  // Only for `overlay show`; a filesystem without user xattrs loses nothing else.
  static_cast<void>(::fsetxattr(fd, kOriginXattr, "lower", 5, 0));
}

}  // namespace heddle::worker
