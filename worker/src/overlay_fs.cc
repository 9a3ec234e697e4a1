#include "overlay_fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <functional>
#include <map>
#include <utility>

#include "heddle/error.h"

namespace heddle::worker {
namespace {

// Upper and lower inode numbers come from different filesystems: keep them apart, so that no
// two files ever show one inode number (cp -a and tar would take them for hard links).
constexpr ino_t kUpperInoBit = ino_t{1} << 63;
ino_t upper_ino(ino_t ino) { return ino | kUpperInoBit; }
ino_t lower_ino(ino_t ino) { return ino & ~kUpperInoBit; }

constexpr std::size_t kCopyChunk = 1 << 20;

int errno_of(long rc) { return rc == 0 ? 0 : errno; }

int check_name(std::string_view name) {
  if (name.empty() || name == "." || name == "..") return EINVAL;
  if (name.size() > NAME_MAX) return ENAMETOOLONG;
  if (UpperDir::is_marker(name)) return EINVAL;  // reserved for whiteouts
  return 0;
}

int write_all(int fd, const char* data, std::size_t size, off_t offset) {
  while (size > 0) {
    const ssize_t n = ::pwrite(fd, data, size, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
    offset += n;
  }
  return 0;
}

// Streams the lower file into `fd` with bounded memory.
int copy_data(FileHandle& from, int fd) {
  std::vector<char> buffer(kCopyChunk);
  for (off_t offset = 0;;) {
    ReadResult result;
    if (const int err = from.read(kCopyChunk, offset, result); err != 0) return err;
    const char* data = result.data.data();
    std::size_t size = std::min(kCopyChunk, result.data.size());
    if (result.fd >= 0) {
      const ssize_t n = ::pread(result.fd, buffer.data(), kCopyChunk, result.fd_offset);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      data = buffer.data();
      size = static_cast<std::size_t>(n);
    }
    if (size == 0) return 0;
    if (const int err = write_all(fd, data, size, offset); err != 0) return err;
    offset += static_cast<off_t>(size);
  }
}

// What the mount shows for an upper file.
void present_upper(struct stat& st, const ViewAttr& view) {
  st.st_mode = (st.st_mode & S_IFMT) | view.mode;
  st.st_uid = view.uid;
  st.st_gid = view.gid;
  st.st_ino = view.ino != 0 ? view.ino : upper_ino(st.st_ino);
}

// An open upper file: reads are spliced from its fd, writes go to it. `hidden_links` says
// how many of its links are not names in the mount (see OverlayFs::uncount_hidden).
class UpperFile final : public FileHandle {
 public:
  UpperFile(UniqueFd fd, const UpperDir& upper, std::function<void()> on_close = {},
            std::function<nlink_t()> hidden_links = {})
      : fd_(std::move(fd)),
        upper_(upper),
        on_close_(std::move(on_close)),
        hidden_links_(std::move(hidden_links)) {}
  UpperFile(const UpperFile&) = delete;
  UpperFile& operator=(const UpperFile&) = delete;
  ~UpperFile() override {
    if (on_close_) on_close_();
  }
  int read(std::size_t /*size*/, off_t offset, ReadResult& out) override {
    out.fd = fd_.get();
    out.fd_offset = offset;
    return 0;
  }
  // Answers for the open file even after its last name is gone.
  int stat(struct stat& st) override {
    if (::fstat(fd_.get(), &st) != 0) return errno;
    present_upper(st, upper_.view_of(fd_.get(), st));
    if (hidden_links_) st.st_nlink -= std::min(st.st_nlink, hidden_links_());
    return 0;
  }
  [[nodiscard]] int write_fd() const override { return fd_.get(); }

 private:
  UniqueFd fd_;
  const UpperDir& upper_;
  std::function<void()> on_close_;
  std::function<nlink_t()> hidden_links_;
};

// A lower layer's open file, counted while open (as UpperFile's on_close does).
class CountedFile final : public FileHandle {
 public:
  CountedFile(std::unique_ptr<FileHandle> file, std::function<void()> on_close)
      : file_(std::move(file)), on_close_(std::move(on_close)) {}
  CountedFile(const CountedFile&) = delete;
  CountedFile& operator=(const CountedFile&) = delete;
  ~CountedFile() override { on_close_(); }
  int read(std::size_t size, off_t offset, ReadResult& out) override {
    return file_->read(size, offset, out);
  }
  int stat(struct stat& st) override { return file_->stat(st); }
  [[nodiscard]] int write_fd() const override { return file_->write_fd(); }

 private:
  std::unique_ptr<FileHandle> file_;
  std::function<void()> on_close_;
};

// "12" -> 12; 0 for anything else (no node has id 0).
NodeId parse_id(std::string_view text) {
  NodeId id = 0;
  if (text.empty() || text.size() > 19 || text.front() == '0') return 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return 0;
    id = id * 10 + static_cast<NodeId>(c - '0');
  }
  return id;
}

constexpr std::string_view kLowerSuffix = ".lower";

// The overlay's path for a lower path: the root is "." here and "" there.
std::string overlay_path(const std::string& lower_path) {
  return lower_path.empty() ? "." : lower_path;
}

// "a/b" is at or below "a"; everything is below ".".
bool at_or_below(const std::string& path, const std::string& top) {
  if (top == ".") return true;
  return path == top || (path.size() > top.size() && path.starts_with(top) && path[top.size()] == '/');
}

}  // namespace

struct OverlayFs::Child {
  std::string path;
  UniqueFd parent_fd;      // the upper parent directory (O_PATH), when it exists
  bool in_upper = false;
  struct stat upper_st {};
  bool upper_opaque = false;  // an upper directory with the opaque marker
  bool whiteout = false;      // the lower name is deleted
  bool in_lower = false;      // the lower layer has the name and nothing deletes it
  NodeId lower = 0;           // its lower node, referenced until release()
  struct stat lower_st {};

  [[nodiscard]] bool exists() const { return in_upper || in_lower; }
  [[nodiscard]] mode_t type() const {
    return (in_upper ? upper_st.st_mode : lower_st.st_mode) & S_IFMT;
  }
  // The lower layer has this name: removing it needs a whiteout.
  [[nodiscard]] bool lower_named() const { return in_lower; }
  // A directory with nothing of the lower layer in it, which can be renamed in the upper.
  [[nodiscard]] bool pure_upper() const { return in_upper && (!in_lower || upper_opaque); }
};

OverlayFs::OverlayFs(std::unique_ptr<Backend> lower, const std::string& dir, uid_t owner_uid,
                     gid_t owner_gid, bool successor)
    : lower_(std::move(lower)), upper_(dir, owner_uid, owner_gid, successor) {
  struct stat root {};
  if (::fstat(upper_.root_fd(), &root) != 0) throw_errno("stat " + dir + "/upper");
  // A new upper root takes the lower root's mode and times, as a copy-up would.
  struct stat lower_root {};
  const UniqueFd root_fd(::openat(upper_.root_fd(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if ((root.st_mode & 07777) == S_IRWXU && lower_->getattr(kRootNode, lower_root) == 0 && root_fd) {
    static_cast<void>(upper_.store_attr(
        root_fd.get(), true, ViewAttr{lower_root.st_mode & 07777, owner_uid, owner_gid}));
    const timespec times[2] = {lower_root.st_atim, lower_root.st_mtim};
    ::futimens(root_fd.get(), times);
  }
  Node node;
  node.paths = {"."};
  node.type = S_IFDIR;
  node.lower = kRootNode;  // the lower root is never forgotten: no reference to hold
  node.upper = true;
  node.opaque = UpperDir::is_opaque(upper_.root_fd());
  node.upper_id = file_id(root);
  node.nlookup = 1;
  nodes_.emplace(kRootNode, std::move(node));
  upper_nodes_.emplace(file_id(root), kRootNode);
}

OverlayFs::Node* OverlayFs::find(NodeId node) {
  const auto it = nodes_.find(node);
  return it == nodes_.end() ? nullptr : &it->second;
}

int OverlayFs::resolve(const Node& parent, std::string_view name, Child& out) {
  if (parent.paths.empty()) return ENOENT;  // the directory was removed
  out.path = join_path(parent.paths.front(), std::string(name).c_str());
  const std::string child(name);
  // A source name that looks like a marker is data of the lower layer only (read-only).
  const bool marker = UpperDir::is_marker(name);
  if (parent.upper && !marker) {
    auto dir = upper_.open_dir(parent.paths.front());
    if (!dir.fd && dir.error != ENOENT) return dir.error;
    out.parent_fd = std::move(dir.fd);
  }
  if (out.parent_fd) {
    if (::fstatat(out.parent_fd.get(), child.c_str(), &out.upper_st, AT_SYMLINK_NOFOLLOW) == 0) {
      out.in_upper = true;
    } else if (errno != ENOENT) {
      return errno;
    }
    if (out.in_upper && S_ISDIR(out.upper_st.st_mode)) {
      const UniqueFd dir(::openat(out.parent_fd.get(), child.c_str(),
                                  O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      out.upper_opaque = dir && UpperDir::is_opaque(dir.get());
    }
    out.whiteout = parent.shows_lower() && UpperDir::has_whiteout(out.parent_fd.get(), name);
  }
  if (!parent.shows_lower() || out.whiteout) return 0;
  NodeId lower = 0;
  struct stat st {};
  const int err = lower_->lookup(parent.lower, name, lower, st);
  if (err == ENOENT) return 0;
  if (err != 0) return err;
  out.in_lower = true;
  out.lower = lower;
  out.lower_st = st;
  return 0;
}

void OverlayFs::release(Child& child) {
  if (child.lower != 0) lower_->forget(child.lower, 1);
  child.lower = 0;
}

NodeId OverlayFs::remember(Child& child, const std::string& path) {
  if (child.in_upper) {
    const FileId id = file_id(child.upper_st);
    if (const auto it = upper_nodes_.find(id); it != upper_nodes_.end()) {
      Node& node = nodes_.at(it->second);
      ++node.nlookup;
      if (std::find(node.paths.begin(), node.paths.end(), path) == node.paths.end()) {
        node.paths.push_back(path);
      }
      release(child);
      return it->second;
    }
    Node node;
    node.paths = {path};
    node.type = child.upper_st.st_mode & S_IFMT;
    node.upper = true;
    node.upper_id = id;
    node.nlookup = 1;
    if (S_ISDIR(child.upper_st.st_mode) && child.lower != 0 && S_ISDIR(child.lower_st.st_mode) &&
        !child.upper_opaque) {
      node.lower = std::exchange(child.lower, 0);  // a merged directory
    } else {
      node.opaque = S_ISDIR(child.upper_st.st_mode);
      release(child);
    }
    const NodeId id_out = next_++;
    nodes_.emplace(id_out, std::move(node));
    upper_nodes_.emplace(id, id_out);
    return id_out;
  }
  if (const auto it = lower_nodes_.find(path); it != lower_nodes_.end()) {
    Node& node = nodes_.at(it->second);
    ++node.nlookup;
    if (node.lower != child.lower) std::swap(node.lower, child.lower);  // the lower changed
    release(child);
    return it->second;
  }
  Node node;
  node.paths = {path};
  node.type = child.lower_st.st_mode & S_IFMT;
  node.lower = std::exchange(child.lower, 0);
  node.nlookup = 1;
  const NodeId id_out = next_++;
  nodes_.emplace(id_out, std::move(node));
  lower_nodes_.emplace(path, id_out);
  return id_out;
}

int OverlayFs::upper_stat(const std::string& path, struct stat& st) const {
  const auto [dir, name] = split_path(path);
  if (path == ".") {
    if (::fstat(upper_.root_fd(), &st) != 0) return errno;
    present_upper(st, upper_.view_of(upper_.root_fd(), st));
    return 0;
  }
  auto parent = upper_.open_dir(dir);
  if (!parent.fd) return parent.error;
  if (::fstatat(parent.fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return errno;
  present_upper(st, upper_.view_at(parent.fd.get(), name, st));
  return 0;
}

int OverlayFs::lower_stat(NodeId lower, struct stat& st) {
  if (const int err = lower_->getattr(lower, st); err != 0) return err;
  st.st_uid = upper_.owner_uid();
  st.st_gid = upper_.owner_gid();
  st.st_ino = lower_ino(st.st_ino);
  return 0;
}

int OverlayFs::lookup(NodeId parent, std::string_view name, NodeId& node, struct stat& st) {
  if (name.size() > NAME_MAX) return ENAMETOOLONG;
  if (name == "." || name == "..") return ENOENT;
  const std::lock_guard lock(mutex_);
  const Node* dir = find(parent);
  if (dir == nullptr) return ESTALE;
  Child child;
  if (const int err = resolve(*dir, name, child); err != 0) {
    release(child);
    return err;
  }
  if (!child.exists()) return ENOENT;
  if (child.in_upper) {
    st = child.upper_st;
    present_upper(st, upper_.view_at(child.parent_fd.get(), std::string(name), st));
  } else {
    st = child.lower_st;
    st.st_uid = upper_.owner_uid();
    st.st_gid = upper_.owner_gid();
    st.st_ino = lower_ino(st.st_ino);
  }
  const bool merged = child.in_upper && child.lower != 0 && !child.upper_opaque &&
                      S_ISDIR(st.st_mode) && S_ISDIR(child.lower_st.st_mode);
  if (merged) st.st_nlink = 1;  // unknown, as for any directory whose count we cannot know
  node = remember(child, child.path);
  uncount_hidden(nodes_.at(node), st);
  return 0;
}

void OverlayFs::forget(NodeId node, std::uint64_t nlookup) noexcept {
  if (node == kRootNode) return;
  const std::lock_guard lock(mutex_);
  const auto it = nodes_.find(node);
  if (it == nodes_.end()) return;
  Node& entry = it->second;
  if (entry.nlookup > nlookup) {
    entry.nlookup -= nlookup;
    return;
  }
  if (entry.upper) {
    if (const auto id = upper_nodes_.find(entry.upper_id);
        id != upper_nodes_.end() && id->second == node) {
      upper_nodes_.erase(id);
    }
  } else if (!entry.paths.empty()) {
    if (const auto path = lower_nodes_.find(entry.paths.front());
        path != lower_nodes_.end() && path->second == node) {
      lower_nodes_.erase(path);
    }
  }
  if (entry.lower != 0) lower_->forget(entry.lower, 1);
  if (entry.hidden != Node::Hidden::kNone) {
    upper_.unhide(hidden_name(node, entry.hidden == Node::Hidden::kLower));
  }
  nodes_.erase(it);
}

int OverlayFs::getattr(NodeId node, struct stat& st) {
  const std::lock_guard lock(mutex_);
  const Node* n = find(node);
  if (n == nullptr) return ESTALE;
  if (n->paths.empty() && n->hidden == Node::Hidden::kFile) {
    // Deleted but still open: st_nlink 0 and the current size, as on any filesystem.
    const std::string name = hidden_name(node, false);
    if (::fstatat(upper_.hidden_fd(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return errno;
    present_upper(st, upper_.view_at(upper_.hidden_fd(), name, st));
    uncount_hidden(*n, st);
    return 0;
  }
  if (n->paths.empty() && n->hidden == Node::Hidden::kLower) {
    if (const int err = lower_stat(n->lower, st); err != 0) return err;
    st.st_nlink = 0;
    return 0;
  }
  if (n->paths.empty()) return ENOENT;
  if (!n->upper) return lower_stat(n->lower, st);
  if (const int err = upper_stat(n->paths.front(), st); err != 0) return err;
  if (S_ISDIR(st.st_mode) && n->shows_lower()) st.st_nlink = 1;
  uncount_hidden(*n, st);
  return 0;
}

int OverlayFs::readlink(NodeId node, std::string& target) {
  const std::lock_guard lock(mutex_);
  const Node* n = find(node);
  if (n == nullptr) return ESTALE;
  if (n->paths.empty()) return ENOENT;
  if (!n->upper) return lower_->readlink(n->lower, target);
  const auto [dir, name] = split_path(n->paths.front());
  auto parent = upper_.open_dir(dir);
  if (!parent.fd) return parent.error;
  target.resize(PATH_MAX);
  const ssize_t size = ::readlinkat(parent.fd.get(), name.c_str(), target.data(), target.size());
  if (size < 0) return errno;
  target.resize(static_cast<std::size_t>(size));
  return 0;
}

int OverlayFs::merged_entries(const Node& dir, std::vector<DirEntry>& out, bool with_dots) {
  std::unordered_set<std::string> hidden;  // upper names and whiteouts
  bool opaque = dir.opaque;
  if (dir.upper) {
    auto fd = upper_.open(dir.paths.front(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (!fd.fd) return fd.error;
    std::vector<DirEntry> upper;
    if (const int err = read_entries(fd.fd.get(), upper); err != 0) return err;
    for (DirEntry& entry : upper) {
      if (entry.name == "." || entry.name == "..") {
        if (with_dots) out.push_back(DirEntry{entry.name, upper_ino(entry.ino), DT_DIR});
        continue;
      }
      if (entry.name == kOpaqueMarker) {
        opaque = true;
      } else if (UpperDir::is_marker(entry.name)) {
        hidden.insert(entry.name.substr(kWhiteoutPrefix.size()));
      } else {
        hidden.insert(entry.name);
        entry.ino = upper_ino(entry.ino);
        out.push_back(std::move(entry));
      }
    }
  }
  if (dir.lower == 0 || opaque) return 0;
  DirSnapshot lower;
  if (const int err = lower_->read_dir(dir.lower, lower); err != 0) return err;
  for (DirEntry& entry : lower.entries) {
    if (entry.name == "." || entry.name == "..") {
      if (with_dots && !dir.upper) out.push_back(DirEntry{entry.name, lower_ino(entry.ino), DT_DIR});
      continue;
    }
    if (hidden.contains(entry.name)) continue;
    entry.ino = lower_ino(entry.ino);
    out.push_back(std::move(entry));
  }
  return 0;
}

int OverlayFs::read_dir(NodeId node, DirSnapshot& out) {
  const std::lock_guard lock(mutex_);
  const Node* n = find(node);
  if (n == nullptr) return ESTALE;
  if (n->paths.empty()) return ENOENT;
  out.node = node;
  out.entries.clear();
  return merged_entries(*n, out.entries, true);
}

int OverlayFs::open_file(NodeId node, std::unique_ptr<FileHandle>& out) {
  NodeId lower = 0;
  {
    const std::lock_guard lock(mutex_);
    Node* n = find(node);
    if (n == nullptr) return ESTALE;
    if (n->paths.empty() && n->hidden == Node::Hidden::kNone) return ENOENT;
    if (S_ISDIR(n->type)) return EISDIR;
    if (n->upper) {
      auto fd = open_upper(node, *n, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
      if (!fd.fd) return fd.error;
      out = upper_handle(node, std::move(fd.fd));
      return 0;
    }
    lower = n->lower;
    ++n->handles;  // now: a removal while the lower file opens must hide it
  }
  // The kernel holds the node while it opens it, so `lower` stays referenced; a big blob is
  // opened without blocking the rest of the mount.
  std::unique_ptr<FileHandle> file;
  if (const int err = lower_->open_file(lower, file); err != 0) {
    closed(node);
    return err;
  }
  out = std::make_unique<CountedFile>(std::move(file), [this, node] { closed(node); });
  return 0;
}

int OverlayFs::statfs(struct statvfs& out) {
  return ::fstatvfs(upper_.root_fd(), &out) == 0 ? 0 : errno;
}

std::size_t OverlayFs::node_count() const {
  const std::lock_guard lock(mutex_);
  return nodes_.size();
}

void OverlayFs::add_status(nlohmann::ordered_json& extra) const {
  lower_->add_status(extra);
  extra["writable"] = true;
  extra["overlay"] = upper_.path();
}

void OverlayFs::mark_dirty(const std::string& path) { dirty_dirs_.insert(split_path(path).first); }

void OverlayFs::promote(const std::string& path, const struct stat& upper_st) {
  const auto it = lower_nodes_.find(path);
  if (it == lower_nodes_.end()) return;
  Node& node = nodes_.at(it->second);
  node.upper = true;
  node.upper_id = file_id(upper_st);
  upper_nodes_[node.upper_id] = it->second;
  lower_nodes_.erase(it);
}

int OverlayFs::copy_up_entry(const std::string& path, NodeId lower, bool with_data) {
  struct stat st {};
  if (const int err = lower_->getattr(lower, st); err != 0) return err;
  const auto [dir, name] = split_path(path);
  // In the upper layer the name would be a marker: such a source entry stays read-only.
  if (UpperDir::is_marker(name)) return EROFS;
  auto parent = upper_.open_dir(dir);
  if (!parent.fd) return parent.error;
  const std::string temp = upper_.temp_name();
  const int work = upper_.work_fd();
  // A file keeps its inode number through the copy-up (tar, rsync and git notice a change),
  // unless the source has other hard links to it, which keep that number.
  const bool keeps_ino = S_ISDIR(st.st_mode) || st.st_nlink <= 1;
  const ViewAttr view{st.st_mode & 07777, upper_.owner_uid(), upper_.owner_gid(),
                      keeps_ino ? lower_ino(st.st_ino) : 0};
  const timespec times[2] = {st.st_atim, st.st_mtim};
  int err = 0;
  if (S_ISREG(st.st_mode)) {
    const UniqueFd fd(::openat(work, temp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
                               disk_mode(false, view.mode)));
    if (!fd) return errno;
    std::unique_ptr<FileHandle> source;
    if (with_data) {
      err = lower_->open_file(lower, source);
      if (err == 0) err = copy_data(*source, fd.get());
    }
    if (err == 0) err = upper_.store_attr(fd.get(), false, view, true);
    if (err == 0) UpperDir::mark_origin(fd.get());
    if (err == 0) err = errno_of(::futimens(fd.get(), times));
  } else if (S_ISDIR(st.st_mode)) {
    if (::mkdirat(work, temp.c_str(), disk_mode(true, view.mode)) != 0) return errno;
    const UniqueFd fd(::openat(work, temp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    err = fd ? upper_.store_attr(fd.get(), true, view, true) : errno;
    if (err == 0) UpperDir::mark_origin(fd.get());
    if (err == 0) err = errno_of(::futimens(fd.get(), times));
  } else if (S_ISLNK(st.st_mode)) {
    std::string target;
    err = lower_->readlink(lower, target);
    if (err == 0) err = errno_of(::symlinkat(target.c_str(), work, temp.c_str()));
    if (err == 0) err = errno_of(::utimensat(work, temp.c_str(), times, AT_SYMLINK_NOFOLLOW));
  } else {
    return EPERM;  // devices, FIFOs and sockets are not copied up
  }
  // Visible only now, and whole.
  if (err == 0) {
    err = errno_of(::renameat2(work, temp.c_str(), parent.fd.get(), name.c_str(), RENAME_NOREPLACE));
  }
  if (err != 0) {
    upper_.remove_temp(temp);
    return err;
  }
  mark_dirty(path);
  struct stat upper_st {};
  if (::fstatat(parent.fd.get(), name.c_str(), &upper_st, AT_SYMLINK_NOFOLLOW) != 0) return errno;
  promote(path, upper_st);
  return 0;
}

int OverlayFs::copy_up_dirs(const std::string& path) {
  if (path == ".") return 0;
  std::string prefix;
  for (std::size_t start = 0; start <= path.size();) {
    const std::size_t slash = std::min(path.find('/', start), path.size());
    prefix = path.substr(0, slash);
    start = slash + 1;
    struct stat st {};
    const auto [dir, name] = split_path(prefix);
    auto parent = upper_.open_dir(dir);
    if (!parent.fd) return parent.error;
    if (::fstatat(parent.fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      if (!S_ISDIR(st.st_mode)) return ENOTDIR;
      continue;
    }
    if (errno != ENOENT) return errno;
    // Every directory above a node the kernel holds is held too, so it is in the table.
    const auto it = lower_nodes_.find(prefix);
    if (it == lower_nodes_.end()) return ENOENT;
    if (const int err = copy_up_entry(prefix, nodes_.at(it->second).lower, false); err != 0) {
      return err;
    }
  }
  return 0;
}

int OverlayFs::ensure_upper_dir(const Node& dir) {
  if (dir.paths.empty()) return ENOENT;
  return dir.upper ? 0 : copy_up_dirs(dir.paths.front());
}

int OverlayFs::copy_up(const Node& n, bool with_data) {
  if (n.upper) return 0;
  if (n.paths.empty()) return ENOENT;
  const std::string path = n.paths.front();
  if (const int err = copy_up_dirs(split_path(path).first); err != 0) return err;
  return copy_up_entry(path, n.lower, with_data);
}

int OverlayFs::new_entry(const std::string& path, int parent_fd, NodeId& node, struct stat& st) {
  const std::string name = split_path(path).second;
  Child child;
  if (::fstatat(parent_fd, name.c_str(), &child.upper_st, AT_SYMLINK_NOFOLLOW) != 0) return errno;
  child.in_upper = true;
  child.upper_opaque = true;  // a new directory has no lower content
  st = child.upper_st;
  present_upper(st, upper_.view_at(parent_fd, name, st));
  node = remember(child, path);
  mark_dirty(path);
  return 0;
}

// The upper directory `dir`, reusing the fd a resolve() already opened.
OpenResult OverlayFs::upper_parent(const Node& dir, Child& child) const {
  if (child.parent_fd) return {std::move(child.parent_fd), 0};
  return upper_.open_dir(dir.paths.front());
}

int OverlayFs::open_writable(NodeId node, int flags, std::unique_ptr<FileHandle>& out) {
  const std::lock_guard lock(mutex_);
  Node* n = find(node);
  if (n == nullptr) return ESTALE;
  if (S_ISDIR(n->type)) return EISDIR;
  if (const int err = copy_up(*n, (flags & O_TRUNC) == 0); err != 0) return err;
  auto fd = open_upper(node, *n,
                       (flags & (O_ACCMODE | O_APPEND | O_TRUNC)) | O_NOFOLLOW | O_NONBLOCK);
  if (!fd.fd) return fd.error;
  out = writer_handle(node, std::move(fd.fd));
  return 0;
}

// For a new entry `name` in `parent`: checks that it may be made, makes the directory upper,
// and opens it. With the lock held.
int OverlayFs::prepare_new(NodeId parent, std::string_view name, Child& child,
                           OpenResult& parent_fd) {
  if (const int err = check_name(name); err != 0) return err;
  const Node* dir = find(parent);
  if (dir == nullptr) return ESTALE;
  const int err = resolve(*dir, name, child);
  release(child);
  if (err != 0) return err;
  if (child.exists()) return EEXIST;
  if (const int e = ensure_upper_dir(*dir); e != 0) return e;
  parent_fd = upper_parent(*dir, child);
  return parent_fd.fd ? 0 : parent_fd.error;
}

int OverlayFs::create(NodeId parent, std::string_view name, mode_t mode, int flags, NodeId& node,
                      struct stat& st, std::unique_ptr<FileHandle>& out) {
  const std::lock_guard lock(mutex_);
  Child child;
  OpenResult parent_fd;
  if (const int err = prepare_new(parent, name, child, parent_fd); err != 0) return err;
  const std::string file(name);
  UniqueFd fd(::openat(parent_fd.fd.get(), file.c_str(),
                       (flags & (O_ACCMODE | O_APPEND)) | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                       disk_mode(false, mode & 07777)));
  if (!fd) return errno;
  if (const int e = upper_.store_attr(
          fd.get(), false, ViewAttr{mode & 07777, upper_.owner_uid(), upper_.owner_gid()}, true);
      e != 0) {
    ::unlinkat(parent_fd.fd.get(), file.c_str(), 0);
    return e;
  }
  if (child.whiteout) UpperDir::drop_whiteout(parent_fd.fd.get(), name);
  if (const int e = new_entry(child.path, parent_fd.fd.get(), node, st); e != 0) return e;
  out = writer_handle(node, std::move(fd));
  return 0;
}

int OverlayFs::mkdir(NodeId parent, std::string_view name, mode_t mode, NodeId& node,
                     struct stat& st) {
  const std::lock_guard lock(mutex_);
  Child child;
  OpenResult parent_fd;
  if (const int err = prepare_new(parent, name, child, parent_fd); err != 0) return err;
  // Made in work/ and renamed into place: a directory over a deleted lower one is opaque from
  // the moment it is visible.
  const std::string temp = upper_.temp_name();
  const int work = upper_.work_fd();
  if (::mkdirat(work, temp.c_str(), disk_mode(true, mode & 07777)) != 0) return errno;
  const UniqueFd fd(::openat(work, temp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  int e = fd ? 0 : errno;
  if (e == 0 && child.whiteout) e = UpperDir::make_opaque(fd.get());
  if (e == 0) {
    e = upper_.store_attr(fd.get(), true,
                          ViewAttr{mode & 07777, upper_.owner_uid(), upper_.owner_gid()}, true);
  }
  if (e == 0) {
    e = errno_of(::renameat2(work, temp.c_str(), parent_fd.fd.get(), std::string(name).c_str(),
                             RENAME_NOREPLACE));
  }
  if (e != 0) {
    upper_.remove_temp(temp);
    return e;
  }
  if (child.whiteout) UpperDir::drop_whiteout(parent_fd.fd.get(), name);
  return new_entry(child.path, parent_fd.fd.get(), node, st);
}

int OverlayFs::symlink(NodeId parent, std::string_view name, const std::string& target,
                       NodeId& node, struct stat& st) {
  const std::lock_guard lock(mutex_);
  Child child;
  OpenResult parent_fd;
  if (const int err = prepare_new(parent, name, child, parent_fd); err != 0) return err;
  if (::symlinkat(target.c_str(), parent_fd.fd.get(), std::string(name).c_str()) != 0) return errno;
  if (child.whiteout) UpperDir::drop_whiteout(parent_fd.fd.get(), name);
  return new_entry(child.path, parent_fd.fd.get(), node, st);
}

int OverlayFs::link(NodeId node, NodeId parent, std::string_view name, struct stat& st) {
  if (const int err = check_name(name); err != 0) return err;
  const std::lock_guard lock(mutex_);
  Node* n = find(node);
  const Node* dir = find(parent);
  if (n == nullptr || dir == nullptr) return ESTALE;
  if (S_ISDIR(n->type)) return EPERM;
  Child child;
  const int err = resolve(*dir, name, child);
  release(child);
  if (err != 0) return err;
  if (child.exists()) return EEXIST;
  if (const int e = copy_up(*n, true); e != 0) return e;
  if (n->paths.empty()) return ENOENT;
  if (const int e = ensure_upper_dir(*dir); e != 0) return e;
  const auto [from_dir, from_name] = split_path(n->paths.front());
  auto from = upper_.open_dir(from_dir);
  auto to = upper_.open_dir(dir->paths.front());
  if (!from.fd || !to.fd) return from.fd ? to.error : from.error;
  const std::string new_name(name);
  if (::linkat(from.fd.get(), from_name.c_str(), to.fd.get(), new_name.c_str(), 0) != 0) {
    return errno;
  }
  if (child.whiteout) UpperDir::drop_whiteout(to.fd.get(), name);
  n->paths.push_back(child.path);
  ++n->nlookup;
  mark_dirty(child.path);
  if (::fstatat(to.fd.get(), new_name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return errno;
  present_upper(st, upper_.view_at(to.fd.get(), new_name, st));
  return 0;
}

// Forgets that `path` names the node it named (the entry is gone from the mount).
void OverlayFs::drop_path(const Child& child) {
  const NodeId id = node_of(child);
  if (id == 0) return;
  if (!child.in_upper) lower_nodes_.erase(child.path);
  Node& node = nodes_.at(id);
  std::erase(node.paths, child.path);
  if (node.paths.empty() && node.upper && node.hidden == Node::Hidden::kNone) {
    // Its inode number may be reused by a new file: identify it no longer.
    upper_nodes_.erase(node.upper_id);
  }
}

NodeId OverlayFs::node_of(const Child& child) const {
  if (child.in_upper) {
    const auto it = upper_nodes_.find(file_id(child.upper_st));
    return it == upper_nodes_.end() ? 0 : it->second;
  }
  const auto it = lower_nodes_.find(child.path);
  return it == lower_nodes_.end() ? 0 : it->second;
}

OverlayFs::Node* OverlayFs::to_hide(NodeId node, const Child& child) {
  if (node == 0 || !S_ISREG(child.type())) return nullptr;
  Node* n = find(node);
  if (n == nullptr || n->hidden != Node::Hidden::kNone) return nullptr;
  // Open, or a hard link whose other name the kernel knows: a successor finds it by id, since
  // the journal keeps one name a node, which may be this one.
  return n->handles > 0 || (child.in_upper && n->paths.size() > 1) ? n : nullptr;
}

std::string OverlayFs::hidden_name(NodeId node, bool lower) {
  std::string name = std::to_string(node);
  if (lower) name += kLowerSuffix;
  return name;
}

void OverlayFs::unhide(NodeId id, Node& node) {
  if (node.hidden == Node::Hidden::kNone) return;
  upper_.unhide(hidden_name(id, node.hidden == Node::Hidden::kLower));
  node.hidden = Node::Hidden::kNone;
  if (node.paths.empty() && node.upper) {
    // Nothing keeps its inode number from reuse any more (see drop_path).
    const auto it = upper_nodes_.find(node.upper_id);
    if (it != upper_nodes_.end() && it->second == id) upper_nodes_.erase(it);
  }
}

OpenResult OverlayFs::open_upper(NodeId id, const Node& node, int flags) const {
  if (!node.paths.empty()) return upper_.open(node.paths.front(), flags);
  if (node.hidden != Node::Hidden::kFile) return {UniqueFd(), ENOENT};
  UniqueFd fd(::openat(upper_.hidden_fd(), hidden_name(id, false).c_str(), flags | O_CLOEXEC));
  const int err = fd ? 0 : errno;
  return {std::move(fd), err};
}

std::unique_ptr<FileHandle> OverlayFs::upper_handle(NodeId node, UniqueFd fd) {
  ++nodes_.at(node).handles;
  return std::make_unique<UpperFile>(
      std::move(fd), upper_, [this, node] { closed(node); },
      [this, node] { return hidden_links(node); });
}

nlink_t OverlayFs::hidden_links(NodeId node) {
  const std::lock_guard lock(mutex_);
  const Node* n = find(node);
  return n != nullptr && n->hidden == Node::Hidden::kFile ? 1 : 0;
}

void OverlayFs::closed(NodeId node) {
  const std::lock_guard lock(mutex_);
  Node* n = find(node);
  if (n == nullptr) return;
  if (n->handles > 0) --n->handles;
  // A hard link's hidden name stays while it has names (see to_hide), until forget.
  if (n->handles == 0 && n->paths.empty()) unhide(node, *n);
}

void OverlayFs::uncount_hidden(const Node& node, struct stat& st) {
  if (node.hidden == Node::Hidden::kFile && st.st_nlink > 0) --st.st_nlink;
}

int OverlayFs::unlink(NodeId parent, std::string_view name) {
  if (UpperDir::is_marker(name)) return EROFS;  // see copy_up_entry
  const std::lock_guard lock(mutex_);
  const Node* dir = find(parent);
  if (dir == nullptr) return ESTALE;
  Child child;
  int err = resolve(*dir, name, child);
  release(child);
  if (err != 0) return err;
  if (!child.exists()) return ENOENT;
  if (S_ISDIR(child.type())) return EISDIR;
  const NodeId id = node_of(child);
  Node* still_open = to_hide(id, child);
  if (const int e = ensure_upper_dir(*dir); e != 0) return e;
  auto parent_fd = upper_parent(*dir, child);
  if (!parent_fd.fd) return parent_fd.error;
  // The whiteout first: while the upper file is still there it wins, so a crash between the
  // two steps leaves the file, never a half-deleted state.
  if (child.lower_named()) err = UpperDir::add_whiteout(parent_fd.fd.get(), name);
  const std::string file(name);
  if (err == 0 && child.in_upper) {
    // An open file moves out of sight instead (a plain removal if that fails).
    if (still_open != nullptr &&
        upper_.hide(parent_fd.fd.get(), file, hidden_name(id, false), false) == 0) {
      still_open->hidden = Node::Hidden::kFile;
    } else {
      err = errno_of(::unlinkat(parent_fd.fd.get(), file.c_str(), 0));
    }
  } else if (err == 0 && still_open != nullptr &&
             upper_.hide_pointer(child.path, hidden_name(id, true)) == 0) {
    still_open->hidden = Node::Hidden::kLower;
  }
  if (err != 0) return err;
  drop_path(child);
  mark_dirty(child.path);
  return 0;
}

// 0 when the directory `child` shows no entry in the merged view, else ENOTEMPTY or an errno.
int OverlayFs::require_empty(const Child& child) {
  Node probe;
  probe.paths = {child.path};
  probe.upper = child.in_upper;
  probe.lower = child.lower;
  probe.opaque = child.upper_opaque;
  std::vector<DirEntry> entries;
  if (const int err = merged_entries(probe, entries); err != 0) return err;
  return entries.empty() ? 0 : ENOTEMPTY;
}

int OverlayFs::rmdir(NodeId parent, std::string_view name) {
  if (UpperDir::is_marker(name)) return EROFS;  // see copy_up_entry
  const std::lock_guard lock(mutex_);
  const Node* dir = find(parent);
  if (dir == nullptr) return ESTALE;
  Child child;
  int err = resolve(*dir, name, child);
  if (err == 0 && !child.exists()) err = ENOENT;
  if (err == 0 && !S_ISDIR(child.type())) err = ENOTDIR;
  if (err == 0) err = require_empty(child);
  const bool lower_named = child.lower_named();
  release(child);
  if (err != 0) return err;
  if (const int e = ensure_upper_dir(*dir); e != 0) return e;
  auto parent_fd = upper_parent(*dir, child);
  if (!parent_fd.fd) return parent_fd.error;
  if (lower_named) err = UpperDir::add_whiteout(parent_fd.fd.get(), name);
  if (err == 0 && child.in_upper) {
    err = upper_.set_aside(parent_fd.fd.get(), std::string(name));
  }
  if (err != 0) return err;
  drop_path(child);
  mark_dirty(child.path);
  return 0;
}

void OverlayFs::move_paths(const std::string& from, const std::string& to) {
  const std::string prefix = from + "/";
  for (auto& [id, node] : nodes_) {
    for (std::string& path : node.paths) {
      if (path == from) {
        path = to;
      } else if (path.starts_with(prefix)) {
        path = to + path.substr(from.size());
      }
    }
  }
}

int OverlayFs::rename(NodeId parent, std::string_view name, NodeId new_parent,
                      std::string_view new_name, unsigned flags) {
  if (const int err = check_name(new_name); err != 0) return err;
  if (UpperDir::is_marker(name)) return EROFS;  // see copy_up_entry
  if ((flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) != 0) return EINVAL;
  const bool exchange = (flags & RENAME_EXCHANGE) != 0;
  const std::lock_guard lock(mutex_);
  const Node* from_dir = find(parent);
  const Node* to_dir = find(new_parent);
  if (from_dir == nullptr || to_dir == nullptr) return ESTALE;
  Child from;
  Child to;
  int err = resolve(*from_dir, name, from);
  if (err == 0) err = resolve(*to_dir, new_name, to);
  const bool from_lower = from.lower_named();
  const bool to_lower = to.lower_named();
  const NodeId from_lower_node = from.in_upper ? 0 : from.lower;
  const NodeId to_lower_node = to.in_upper ? 0 : to.lower;
  const auto cleanup = [&](int e) {
    release(from);
    release(to);
    return e;
  };
  if (err != 0) return cleanup(err);
  if (!from.exists()) return cleanup(ENOENT);
  const bool from_is_dir = S_ISDIR(from.type());
  const bool to_is_dir = to.exists() && S_ISDIR(to.type());
  if (from.path == to.path) return cleanup(0);
  if (exchange) {
    if (!to.exists()) return cleanup(ENOENT);
    if ((from_is_dir && !from.pure_upper()) || (to_is_dir && !to.pure_upper())) {
      return cleanup(EXDEV);
    }
  } else if (to.exists()) {
    if ((flags & RENAME_NOREPLACE) != 0) return cleanup(EEXIST);
    if (from_is_dir && !to_is_dir) return cleanup(ENOTDIR);
    if (!from_is_dir && to_is_dir) return cleanup(EISDIR);
    if (to_is_dir) {
      if (const int e = require_empty(to); e != 0) return cleanup(e);
    }
  }
  // A directory with lower content would have to be copied whole: let the caller copy it.
  if (from_is_dir && !from.pure_upper()) return cleanup(EXDEV);
  if (to.path.starts_with(from.path + "/")) return cleanup(EINVAL);

  // Both ends in the upper layer, with their whole content.
  const auto [from_parent, from_name] = split_path(from.path);
  const auto [to_parent, to_name] = split_path(to.path);
  if (const int e = ensure_upper_dir(*from_dir); e != 0) return cleanup(e);
  if (const int e = ensure_upper_dir(*to_dir); e != 0) return cleanup(e);
  if (!from.in_upper) {
    if (const int e = copy_up_entry(from.path, from_lower_node, true); e != 0) return cleanup(e);
  }
  if (exchange && !to.in_upper) {
    if (const int e = copy_up_entry(to.path, to_lower_node, true); e != 0) return cleanup(e);
  }
  auto from_fd = upper_.open_dir(from_parent);
  auto to_fd = upper_.open_dir(to_parent);
  if (!from_fd.fd || !to_fd.fd) return cleanup(from_fd.fd ? to_fd.error : from_fd.error);
  // Re-read the two ends as they are now on disk.
  struct stat from_st {};
  if (::fstatat(from_fd.fd.get(), from_name.c_str(), &from_st, AT_SYMLINK_NOFOLLOW) != 0) {
    return cleanup(errno);
  }
  from.in_upper = true;
  from.upper_st = from_st;
  struct stat to_st {};
  const bool to_in_upper =
      ::fstatat(to_fd.fd.get(), to_name.c_str(), &to_st, AT_SYMLINK_NOFOLLOW) == 0;
  if (to_in_upper) {
    to.in_upper = true;
    to.upper_st = to_st;
  }
  // A file replaced by the rename that is open stays, out of sight (see unlink).
  const NodeId replaced_id = !exchange && to.exists() ? node_of(to) : 0;
  Node* replaced = to_hide(replaced_id, to);
  if (replaced != nullptr && to_in_upper) {
    if (upper_.hide(to_fd.fd.get(), to_name, hidden_name(replaced_id, false), true) == 0) {
      replaced->hidden = Node::Hidden::kFile;
    }
  } else if (replaced != nullptr &&
             upper_.hide_pointer(to.path, hidden_name(replaced_id, true)) == 0) {
    replaced->hidden = Node::Hidden::kLower;
  }

  if (!exchange) {
    // The old name's whiteout goes first: until the rename, the upper entry still wins.
    if (from_lower) err = UpperDir::add_whiteout(from_fd.fd.get(), from_name);
    // A directory landing where the lower layer has (or had) one must not show its content.
    if (err == 0 && from_is_dir && (to_lower || to.whiteout)) {
      const UniqueFd moved(::openat(from_fd.fd.get(), from_name.c_str(),
                                    O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      err = moved ? UpperDir::make_opaque(moved.get()) : errno;
    }
    // An empty upper directory being replaced may still hold markers: set it aside first.
    if (err == 0 && to_in_upper && to_is_dir) {
      err = upper_.set_aside(to_fd.fd.get(), to_name);
    }
  }
  if (err == 0) {
    err = errno_of(::renameat2(from_fd.fd.get(), from_name.c_str(), to_fd.fd.get(),
                               to_name.c_str(), flags));
  }
  if (err != 0) {
    if (replaced != nullptr) unhide(replaced_id, *replaced);
    return cleanup(err);
  }
  if (!exchange && to.whiteout) UpperDir::drop_whiteout(to_fd.fd.get(), to_name);

  if (exchange) {
    const std::string parked = std::string("\0", 1) + from.path;  // no real path has a NUL
    move_paths(from.path, parked);
    move_paths(to.path, from.path);
    move_paths(parked, to.path);
  } else {
    if (to.exists()) drop_path(to);
    move_paths(from.path, to.path);
    if (from_is_dir && (to_lower || to.whiteout)) {
      if (const auto it = upper_nodes_.find(file_id(from_st)); it != upper_nodes_.end()) {
        nodes_.at(it->second).opaque = true;
      }
    }
  }
  mark_dirty(from.path);
  mark_dirty(to.path);
  return cleanup(0);
}

int OverlayFs::setattr(NodeId node, const AttrChange& change, FileHandle* handle,
                       struct stat& st) {
  const std::lock_guard lock(mutex_);
  Node* n = find(node);
  if (n == nullptr) return ESTALE;
  const bool truncating = change.size && *change.size == 0;
  if (const int err = copy_up(*n, !truncating); err != 0) return err;
  const int handle_fd = handle != nullptr ? handle->write_fd() : -1;
  if (n->paths.empty()) {
    // The last name is gone; only the open file is left to change.
    if (handle_fd < 0) return ENOENT;
    if (change.size && ::ftruncate(handle_fd, *change.size) != 0) return errno;
    // As handle->stat() answers, which would take the lock again.
    if (::fstat(handle_fd, &st) != 0) return errno;
    present_upper(st, upper_.view_of(handle_fd, st));
    uncount_hidden(*n, st);
    return 0;
  }
  const auto [dir, name] = split_path(n->paths.front());
  const bool root = n->paths.front() == ".";
  auto parent = upper_.open_dir(root ? "." : dir);
  if (!parent.fd) return parent.error;
  const char* const at = root ? "." : name.c_str();
  struct stat disk {};
  if (::fstatat(parent.fd.get(), at, &disk, AT_SYMLINK_NOFOLLOW) != 0) return errno;
  const bool is_dir = S_ISDIR(disk.st_mode);
  if (change.size) {
    if (is_dir) return EISDIR;
    if (handle_fd >= 0) {
      if (::ftruncate(handle_fd, *change.size) != 0) return errno;
    } else {
      const UniqueFd fd(::openat(parent.fd.get(), at, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
      if (!fd || ::ftruncate(fd.get(), *change.size) != 0) return errno;
    }
  }
  if (change.mode || change.uid || change.gid) {
    ViewAttr view = upper_.view_at(parent.fd.get(), at, disk);
    if (change.mode) view.mode = *change.mode & 07777;
    if (change.uid) view.uid = *change.uid;
    if (change.gid) view.gid = *change.gid;
    if (S_ISLNK(disk.st_mode)) {
      // A symlink's mode is fixed and it cannot carry the attribute xattr.
      if (view.uid != upper_.owner_uid() || view.gid != upper_.owner_gid()) return EPERM;
    } else {
      const UniqueFd fd(::openat(parent.fd.get(), at,
                                 O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC |
                                     (is_dir ? O_DIRECTORY : 0)));
      if (!fd) return errno;
      if (const int err = upper_.store_attr(fd.get(), is_dir, view); err != 0) return err;
    }
  }
  if (change.atime || change.mtime) {
    const timespec omit{0, UTIME_OMIT};
    const timespec times[2] = {change.atime.value_or(omit), change.mtime.value_or(omit)};
    if (::utimensat(parent.fd.get(), at, times, AT_SYMLINK_NOFOLLOW) != 0) return errno;
  }
  if (::fstatat(parent.fd.get(), at, &st, AT_SYMLINK_NOFOLLOW) != 0) return errno;
  present_upper(st, upper_.view_at(parent.fd.get(), at, st));
  if (is_dir && n->shows_lower()) st.st_nlink = 1;
  return 0;
}

int OverlayFs::fsync(NodeId node, FileHandle* handle, bool datasync) {
  std::vector<std::string> dirs;
  UniqueFd own;
  int fd = handle != nullptr ? handle->write_fd() : -1;
  {
    const std::lock_guard lock(mutex_);
    const Node* n = find(node);
    if (n == nullptr) return ESTALE;
    if (!n->upper) return 0;  // nothing of it was written
    if (fd < 0 && !n->paths.empty()) {
      auto opened = upper_.open(n->paths.front(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
      if (!opened.fd) return opened.error;
      own = std::move(opened.fd);
      fd = own.get();
    }
    // The directories above it whose names changed, so that the file is found after a crash.
    for (const std::string& path : n->paths) {
      for (std::string dir = split_path(path).first;; dir = split_path(dir).first) {
        if (dirty_dirs_.erase(dir) != 0) dirs.push_back(dir);
        if (dir == ".") break;
      }
    }
    if (S_ISDIR(n->type) && !n->paths.empty() && dirty_dirs_.erase(n->paths.front()) != 0) {
      dirs.push_back(n->paths.front());
    }
  }
  int err = fd >= 0 && (datasync ? ::fdatasync(fd) : ::fsync(fd)) != 0 ? errno : 0;
  for (std::size_t i = 0; err == 0 && i < dirs.size(); ++i) {
    auto opened = upper_.open(dirs[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (opened.fd && ::fsync(opened.fd.get()) != 0) err = errno;
    if (err == 0) dirs[i].clear();
  }
  if (err != 0) {
    // Not durable yet: the next fsync tries these directories again.
    const std::lock_guard lock(mutex_);
    for (std::string& dir : dirs) {
      if (!dir.empty()) dirty_dirs_.insert(std::move(dir));
    }
  }
  return err;
}

}  // namespace heddle::worker

// ---- capture and follow (issue 15) ----------------------------------------------------------

namespace heddle::worker {

std::unique_ptr<FileHandle> OverlayFs::writer_handle(NodeId node, UniqueFd fd) {
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return upper_handle(node, std::move(fd));
  const FileId id = file_id(st);
  ++writers_[id];
  ++nodes_.at(node).handles;
  // Runs when the kernel releases the handle, on a request thread holding no lock.
  return std::make_unique<UpperFile>(
      std::move(fd), upper_,
      [this, id, node] {
        {
          const std::lock_guard lock(mutex_);
          if (const auto it = writers_.find(id); it != writers_.end() && --it->second == 0) {
            writers_.erase(it);
          }
        }
        closed(node);
      },
      [this, node] { return hidden_links(node); });
}

int OverlayFs::sync_all() {
  if (::syncfs(upper_.root_fd()) != 0) return errno;
  const std::lock_guard lock(mutex_);
  dirty_dirs_.clear();
  return 0;
}

NodeId OverlayFs::lower_lookup_path(const std::string& path, struct stat& st) {
  if (lower_->getattr(kRootNode, st) != 0) return 0;
  if (path == ".") return kRootNode;  // never forgotten: no reference to count
  NodeId at = kRootNode;
  for (std::size_t start = 0; start <= path.size();) {
    const std::size_t slash = std::min(path.find('/', start), path.size());
    NodeId next = 0;
    const int err = lower_->lookup(at, std::string_view(path).substr(start, slash - start), next, st);
    if (at != kRootNode) lower_->forget(at, 1);
    if (err != 0) return 0;
    at = next;
    start = slash + 1;
  }
  return at;
}

bool OverlayFs::upper_covers(const std::string& path) const {
  if (path == ".") return false;
  std::string dir = ".";
  for (std::size_t start = 0; start <= path.size();) {
    const std::size_t slash = std::min(path.find('/', start), path.size());
    const std::string name = path.substr(start, slash - start);
    const bool last = slash == path.size();
    auto fd = upper_.open_dir(dir);
    if (!fd.fd) return false;
    if (UpperDir::has_whiteout(fd.fd.get(), name)) return true;
    struct stat st {};
    if (::fstatat(fd.fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return false;
    if (last || !S_ISDIR(st.st_mode)) return true;
    const UniqueFd sub(::openat(fd.fd.get(), name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sub || UpperDir::is_opaque(sub.get())) return true;
    dir = join_path(dir, name.c_str());
    start = slash + 1;
  }
  return false;
}

bool OverlayFs::drop_upper_dir(const std::string& path, int dir_fd) {
  std::vector<DirEntry> entries;
  if (read_entries(dir_fd, entries) != 0) return false;
  bool empty = true;
  for (const DirEntry& entry : entries) {
    if (entry.name == "." || entry.name == "..") continue;
    const char* name = entry.name.c_str();
    if (UpperDir::is_marker(entry.name)) {
      // Whiteouts and opaque markers: the commit now says what is deleted.
      if (::unlinkat(dir_fd, name, 0) != 0) empty = false;
      continue;
    }
    struct stat st {};
    if (::fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      empty = false;
      continue;
    }
    const std::string child = join_path(path, name);
    if (S_ISDIR(st.st_mode)) {
      const UniqueFd sub(::openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      struct stat lower_st {};
      bool keep = !sub || !drop_upper_dir(child, sub.get());
      if (!keep) {
        // An empty directory cannot be in a commit: it stays unless the commit has it.
        const NodeId lower = lower_lookup_path(child, lower_st);
        keep = lower == 0 || !S_ISDIR(lower_st.st_mode);
        if (lower != 0 && lower != kRootNode) lower_->forget(lower, 1);
      }
      if (!keep && ::unlinkat(dir_fd, name, AT_REMOVEDIR) != 0) keep = true;
      if (keep) empty = false;
      continue;
    }
    // A file open for writing stays: later writes through its fd must not be lost. Its content
    // is the commit's anyway.
    if (writers_.contains(file_id(st)) || ::unlinkat(dir_fd, name, 0) != 0) empty = false;
  }
  dirty_dirs_.insert(path);
  return empty;
}

std::map<std::string, NodeId> OverlayFs::live_paths() const {
  // A node a retarget left behind (its lower object went) may share its path with the node
  // that replaced it: only the ones the tables still find count.
  std::map<std::string, NodeId> out;
  for (const auto& [path, id] : lower_nodes_) out.emplace(path, id);
  for (const auto& [upper_id, id] : upper_nodes_) {
    const Node& node = nodes_.at(id);
    if (!node.paths.empty()) out.emplace(node.paths.front(), id);
  }
  if (const auto root = nodes_.find(kRootNode); root != nodes_.end()) out.emplace(".", kRootNode);
  return out;
}

void OverlayFs::relink_nodes(const std::vector<TreeChange>& changes, bool dropped,
                             std::vector<KernelNote>& notes) {
  // Paths whose lower node went (removed, or another kind of object now).
  std::vector<std::string> gone;
  std::vector<std::string> added;
  for (const TreeChange& change : changes) {
    if (change.kind == TreeChange::Kind::kRemoved || change.kind == TreeChange::Kind::kReplaced ||
        change.kind == TreeChange::Kind::kModified) {
      gone.push_back(overlay_path(change.path));
    }
    if (change.kind == TreeChange::Kind::kAdded || change.kind == TreeChange::Kind::kReplaced) {
      added.push_back(overlay_path(change.path));
    }
  }
  const auto under = [](const std::string& path, const std::vector<std::string>& tops) {
    return std::any_of(tops.begin(), tops.end(),
                       [&](const std::string& top) { return at_or_below(path, top); });
  };
  // Parents before children: whether a directory shows the lower layer depends on its parent.
  const std::map<std::string, NodeId> by_path = live_paths();
  const auto parent_shows_lower = [&](const std::string& path) {
    const auto it = by_path.find(split_path(path).first);
    return it == by_path.end() || nodes_.at(it->second).shows_lower();
  };
  for (auto& [path, id] : by_path) {
    if (id == kRootNode) {
      Node& root = nodes_.at(id);
      root.opaque = UpperDir::is_opaque(upper_.root_fd());
      continue;
    }
    Node& node = nodes_.at(id);
    if (!node.upper) {
      if (node.lower == 0 || !under(path, gone)) continue;
      // Its lower object went: a lookup makes a new node, this one lives until forgotten.
      if (const auto it = lower_nodes_.find(path); it != lower_nodes_.end() && it->second == id) {
        lower_nodes_.erase(it);
      }
      continue;
    }
    struct stat upper_st {};
    const bool in_upper = upper_stat(path, upper_st) == 0;
    if (!in_upper && dropped) {
      // Its content is in the commit now: the node goes on as the lower one, keeping its id.
      struct stat lower_st {};
      const NodeId lower = lower_lookup_path(path, lower_st);
      upper_nodes_.erase(node.upper_id);
      if (node.lower != 0) lower_->forget(node.lower, 1);
      node.lower = 0;
      node.upper = false;
      node.opaque = false;
      if (lower == 0 || (lower_st.st_mode & S_IFMT) != node.type) {
        if (lower != 0) lower_->forget(lower, 1);
        node.paths.clear();  // not in the commit (a socket, say): gone from the mount
        const auto [dir, name] = split_path(path);
        if (const auto parent = by_path.find(dir); parent != by_path.end()) {
          notes.push_back(KernelNote{parent->second, name, 0});
        }
        continue;
      }
      node.lower = lower;
      node.paths.resize(1);
      lower_nodes_[path] = id;
      notes.push_back(KernelNote{0, {}, id});  // its attributes (inode number, times) changed
      continue;
    }
    if (!S_ISDIR(node.type)) continue;
    // A directory of the upper layer: which lower directory shows through it, if any.
    const auto dir = upper_.open(path, O_PATH | O_DIRECTORY | O_NOFOLLOW);
    const bool opaque = dir.fd && UpperDir::is_opaque(dir.fd.get());
    if (node.lower != 0 && (opaque || under(path, gone))) {
      lower_->forget(node.lower, 1);
      node.lower = 0;
    }
    if (node.lower == 0 && !opaque && (dropped || under(path, added)) && parent_shows_lower(path)) {
      struct stat lower_st {};
      const NodeId lower = lower_lookup_path(path, lower_st);
      if (lower != 0 && S_ISDIR(lower_st.st_mode)) {
        node.lower = lower;
        notes.push_back(KernelNote{0, {}, id});  // its listing changed
      } else if (lower != 0) {
        lower_->forget(lower, 1);
      }
    }
    node.opaque = opaque || node.lower == 0;
  }
}

RetargetOutcome OverlayFs::retarget(const std::string& commit, bool drop_overlay) {
  const std::lock_guard lock(mutex_);
  // Throws, changing nothing, when the commit cannot be read.
  const std::vector<TreeChange> changes = lower_->switch_tree(commit);
  RetargetOutcome out;
  out.commit = lower_->served_commit().value_or(commit);
  if (drop_overlay) {
    const UniqueFd root(::openat(upper_.root_fd(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (root) drop_upper_dir(".", root.get());
  }
  relink_nodes(changes, drop_overlay, out.notes);

  const std::map<std::string, NodeId> by_path = live_paths();
  for (const TreeChange& change : changes) {
    const std::string path = overlay_path(change.path);
    if (change.kind == TreeChange::Kind::kDirChanged) {
      if (const auto it = by_path.find(path); it != by_path.end()) {
        out.notes.push_back(KernelNote{0, {}, it->second});
      }
      continue;
    }
    if (change.kind == TreeChange::Kind::kRemoved && upper_covers(path)) {
      // Deleted upstream: a conflict only if the overlay holds something there (a whiteout
      // alone says the same as the commit).
      struct stat st {};
      if (!drop_overlay && upper_stat(path, st) == 0) out.conflicts.push_back(change.path);
      continue;
    }
    if (upper_covers(path)) {
      // What the overlay holds wins. After a capture only files still open for writing are
      // left, with the commit's content: no conflict.
      if (!drop_overlay) out.conflicts.push_back(change.path);
      continue;
    }
    const auto [dir, name] = split_path(path);
    if (const auto it = by_path.find(dir); it != by_path.end()) {
      out.notes.push_back(KernelNote{it->second, name, 0});
    }
  }
  return out;
}

// ---- takeover (issue 16): files removed while open ----------------------------------------

bool OverlayFs::restore_unnamed(NodeId id, std::uint64_t ino, mode_t type) {
  const std::lock_guard lock(mutex_);
  const int dir = upper_.hidden_fd();
  if (dir < 0 || id <= kRootNode || nodes_.contains(id) || !S_ISREG(type)) return false;
  Node node;
  node.type = S_IFREG;
  node.nlookup = 1;
  const std::string file = hidden_name(id, false);
  struct stat st {};
  if (::fstatat(dir, file.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    // The file itself: it must be the one the kernel was given.
    if (!S_ISREG(st.st_mode)) return false;
    struct stat shown = st;
    present_upper(shown, upper_.view_at(dir, file, st));
    if (shown.st_ino != ino) return false;
    node.upper = true;
    node.upper_id = file_id(st);
    node.hidden = Node::Hidden::kFile;
    upper_nodes_.try_emplace(node.upper_id, id);
    nodes_.emplace(id, std::move(node));
    return true;
  }
  // A lower file: its path, looked up in the lower layer (past any whiteout).
  std::string target(PATH_MAX, '\0');
  const ssize_t size =
      ::readlinkat(dir, hidden_name(id, true).c_str(), target.data(), target.size());
  if (size <= 0 || static_cast<std::size_t>(size) >= target.size()) return false;
  target.resize(static_cast<std::size_t>(size));
  // Written by a predecessor, so not trusted: components only, never "." or "..".
  for (std::size_t start = 0; start <= target.size();) {
    const std::size_t slash = std::min(target.find('/', start), target.size());
    const std::string_view part = std::string_view(target).substr(start, slash - start);
    if (part.empty() || part == "." || part == ".." || part.size() > NAME_MAX) return false;
    start = slash + 1;
  }
  struct stat lower_st {};
  const NodeId lower = lower_lookup_path(target, lower_st);
  if (lower == 0) return false;
  if (lower == kRootNode || !S_ISREG(lower_st.st_mode) || lower_ino(lower_st.st_ino) != ino) {
    if (lower != kRootNode) lower_->forget(lower, 1);
    return false;
  }
  node.lower = lower;
  node.hidden = Node::Hidden::kLower;
  nodes_.emplace(id, std::move(node));
  return true;
}

void OverlayFs::restore_done() {
  const std::lock_guard lock(mutex_);
  // What hides a node that is neither open nor a hard link (or no node at all) goes.
  for (const std::string& name : upper_.hidden_names()) {
    const bool pointer = name.ends_with(kLowerSuffix);
    const NodeId id =
        parse_id(pointer ? std::string_view(name).substr(0, name.size() - kLowerSuffix.size())
                         : std::string_view(name));
    Node* n = id == 0 ? nullptr : find(id);
    bool keep = false;
    if (n != nullptr && n->handles > 0 && pointer) {
      keep = !n->upper && n->lower != 0;
    } else if (n != nullptr && n->upper && !pointer) {
      // Open, or a hard link with another name left.
      struct stat st {};
      keep = ::fstatat(upper_.hidden_fd(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
             file_id(st) == n->upper_id && (n->handles > 0 || st.st_nlink > 1);
    }
    if (keep) {
      n->hidden = pointer ? Node::Hidden::kLower : Node::Hidden::kFile;
      continue;
    }
    upper_.unhide(name);
    if (n != nullptr && (n->hidden == Node::Hidden::kLower) == pointer) unhide(id, *n);
  }
}

}  // namespace heddle::worker
