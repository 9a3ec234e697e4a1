#include "dir_fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstring>
#include <memory>
#include <unordered_map>

#include <spdlog/spdlog.h>

namespace heddle::worker {
namespace {

int fstat_errno(int fd, struct stat& st) { return ::fstat(fd, &st) == 0 ? 0 : errno; }

// An open source file: reads are ranges of its fd, which libfuse splices to the kernel.
class FdFileHandle final : public FileHandle {
 public:
  // `owner`: the file's stat at open, with its real owner and group.
  FdFileHandle(UniqueFd fd, ServedIno& inos, const struct stat& owner)
      : fd_(std::move(fd)), inos_(inos), uid_(owner.st_uid), gid_(owner.st_gid) {}
  int read(std::size_t /*size*/, off_t offset, ReadResult& out) override {
    out.fd = fd_.get();
    out.fd_offset = offset;
    return 0;
  }
  // Answers even if the path has since been replaced or removed in the source.
  int stat(struct stat& st) override {
    if (const int err = fstat_errno(fd_.get(), st); err != 0) return err;
    st.st_ino = inos_.of(st.st_dev, st.st_ino);
    if (st.st_uid == kOverflowId) st.st_uid = uid_;
    if (st.st_gid == kOverflowId) st.st_gid = gid_;
    return 0;
  }

 private:
  UniqueFd fd_;
  ServedIno& inos_;
  uid_t uid_;
  gid_t gid_;
};

}  // namespace

DirFs::DirFs(SourceTree tree)
    : tree_(std::move(tree)), nodes_(tree_.root_id()), inos_(tree_.root_id().dev) {}

int DirFs::open_node(NodeId node, int flags, UniqueFd& fd, struct stat& st, bool owner) const {
  auto ref = nodes_.find(node);
  if (!ref) return ESTALE;
  auto opened = tree_.open_beneath(ref->path, flags);
  if (!opened.fd) return opened.error;
  if (const int err = fstat_errno(opened.fd.get(), st); err != 0) return err;
  if (file_id(st) != ref->id) return ESTALE;
  if (owner) tree_.restore_owner(ref->path, st);
  fd = std::move(opened.fd);
  return 0;
}

int DirFs::lookup_path(const std::string& path, NodeId& node, struct stat& st) {
  // O_PATH|O_NOFOLLOW: a trailing symlink is opened as itself; one in the middle is ELOOP.
  auto opened = tree_.open_beneath(path, O_PATH | O_NOFOLLOW);
  if (!opened.fd) return opened.error;
  if (const int err = fstat_errno(opened.fd.get(), st); err != 0) return err;
  node = nodes_.acquire(path, file_id(st));
  // Watched before the kernel hears of it: its entries are looked up after this reply. A
  // change made before the watch is caught by stating it again.
  if (watch_ && S_ISDIR(st.st_mode) &&
      watch_->watch(node, opened.fd.get()) == SourceWatch::Watched::kNow) {
    struct stat again {};
    if (fstat_errno(opened.fd.get(), again) == 0) st = again;
  }
  tree_.restore_owner(path, st);
  st.st_ino = inos_.of(st.st_dev, st.st_ino);
  return 0;
}

NodeId DirFs::child_node(NodeId dir, const std::string& name) const {
  const auto ref = nodes_.find(dir);
  if (!ref) return 0;
  const auto opened = tree_.open_beneath(join_path(ref->path, name.c_str()), O_PATH | O_NOFOLLOW);
  struct stat st {};
  if (!opened.fd || fstat_errno(opened.fd.get(), st) != 0) return 0;
  return nodes_.find_id(file_id(st));
}

std::vector<KernelNote> DirFs::everything() const {
  std::vector<KernelNote> out{KernelNote{0, {}, kRootNode}};
  // A node's parent is the node of its path's directory, found as the source is now (a parent
  // gone since has no entries the kernel could still use).
  std::unordered_map<std::string, NodeId> parents{{".", kRootNode}};
  for (auto& [node, path] : nodes_.paths()) {
    out.push_back(KernelNote{0, {}, node});
    const std::size_t slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
    auto [it, fresh] = parents.try_emplace(dir, 0);
    if (fresh) {
      const auto opened = tree_.open_beneath(dir, O_PATH | O_NOFOLLOW | O_DIRECTORY);
      struct stat st {};
      if (opened.fd && fstat_errno(opened.fd.get(), st) == 0) {
        it->second = nodes_.find_id(file_id(st));
      }
    }
    if (it->second != 0) out.push_back(KernelNote{it->second, path.substr(slash + 1), 0});
  }
  return out;
}

void DirFs::attach_kernel_cache(KernelCache* cache) {
  watch_.reset();
  if (cache == nullptr) return;
  try {
    watch_ = std::make_unique<SourceWatch>(
        *cache, [this](NodeId dir, const std::string& name) { return child_node(dir, name); },
        [this] { return everything(); });
  } catch (const std::exception& e) {
    watch_off_ = "off_no_inotify";
    spdlog::warn("source watch off: {}; names and attributes are cached for 1 s", e.what());
    return;
  }
  static_cast<void>(watch_->watch(kRootNode, tree_.root_fd()));
}

int DirFs::lookup(NodeId parent, std::string_view name, NodeId& node, struct stat& st) {
  // The kernel sends single components; "." and ".." only come with export support, which this
  // filesystem does not offer.
  if (name == "." || name == "..") return ENOENT;
  if (name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos) {
    return EINVAL;
  }
  if (name.size() > NAME_MAX) return ENAMETOOLONG;
  const auto dir = nodes_.find(parent);
  if (!dir) return ESTALE;
  return lookup_path(join_path(dir->path, std::string(name).c_str()), node, st);
}

void DirFs::forget(NodeId node, std::uint64_t nlookup) noexcept {
  if (nodes_.forget(node, nlookup) && watch_) watch_->unwatch(node);
}

int DirFs::getattr(NodeId node, struct stat& st) {
  UniqueFd fd;
  if (const int err = open_node(node, O_PATH | O_NOFOLLOW, fd, st, true); err != 0) return err;
  st.st_ino = inos_.of(st.st_dev, st.st_ino);
  return 0;
}

int DirFs::readlink(NodeId node, std::string& target) {
  UniqueFd fd;
  struct stat st {};
  if (const int err = open_node(node, O_PATH | O_NOFOLLOW, fd, st); err != 0) return err;
  if (!S_ISLNK(st.st_mode)) return EINVAL;
  std::size_t capacity = PATH_MAX;
  for (;;) {
    target.resize(capacity);
    const ssize_t n = ::readlinkat(fd.get(), "", target.data(), target.size());
    if (n < 0) return errno;
    if (static_cast<std::size_t>(n) < target.size()) {
      target.resize(static_cast<std::size_t>(n));
      return 0;
    }
    if (capacity >= (std::size_t{1} << 20)) return ENAMETOOLONG;
    capacity *= 2;  // possibly truncated: try again with more room
  }
}

int DirFs::read_dir(NodeId node, DirSnapshot& out) {
  UniqueFd fd;
  struct stat st {};
  if (const int err = open_node(node, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, fd, st); err != 0) {
    return err;
  }
  out.node = node;
  out.entries.clear();
  const int err = read_entries(fd.get(), out.entries);  // `fd` closes: the snapshot holds none
  // The entries' d_ino are on the directory's filesystem (a mountpoint's entry shows the
  // covered directory's, as in any readdir).
  for (DirEntry& entry : out.entries) entry.ino = inos_.of(st.st_dev, entry.ino);
  return err;
}

int DirFs::open_file(NodeId node, std::unique_ptr<FileHandle>& out) {
  UniqueFd fd;
  struct stat st {};
  // O_NONBLOCK: should the path have become a FIFO, the open must not hang a FUSE thread.
  if (const int err = open_node(node, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, fd, st, true);
      err != 0) {
    return err;
  }
  if (S_ISDIR(st.st_mode)) return EISDIR;
  if (!S_ISREG(st.st_mode)) return EINVAL;
  out = std::make_unique<FdFileHandle>(std::move(fd), inos_, st);
  return 0;
}

int DirFs::statfs(struct statvfs& out) {
  return ::fstatvfs(tree_.root_fd(), &out) == 0 ? 0 : errno;
}

void DirFs::add_status(nlohmann::ordered_json& extra) const {
  extra["source"] = tree_.path();
  extra["other_filesystems"] = inos_.other_devices();
  if (watch_) {
    watch_->add_status(extra);
  } else {
    extra["source_watch"] = watch_off_;
  }
}

}  // namespace heddle::worker
