// GitFs: the Backend over a git tree. Nodes are paths in one immutable tree, so attributes
// never change, and nothing is read until the kernel asks (open_git_fs reads refs and the
// commit only). Blobs up to the cache cap are served from an LRU of inflated blobs; larger
// ones are streamed (blob_stream.h).
#include "git/git_fs.h"

#include <dirent.h>
#include <sys/statvfs.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <shared_mutex>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "git/blob_cache.h"
#include "git/blob_stream.h"
#include "git/budget.h"
#include "git/checkout_filter.h"
#include "git/crlf_stream.h"
#include "git/held_blobs.h"
#include "git/lfs.h"
#include "git/node_table.h"
#include "git/oid.h"
#include "git/repository.h"
#include "git/warn_once.h"
#include "heap_trim.h"
#include "heddle/error.h"

namespace heddle::worker {
namespace git {
namespace {

constexpr std::uint32_t kTree = 0040000;
constexpr std::uint32_t kBlob = 0100644;
constexpr std::uint32_t kExecutable = 0100755;
constexpr std::uint32_t kLink = 0120000;
constexpr std::uint32_t kGitlink = 0160000;

constexpr double kForever = 86400.0;  // the tree is immutable: cache names and attributes
constexpr blksize_t kBlockSize = 4096;

bool is_dir(std::uint32_t mode) { return mode == kTree || mode == kGitlink; }
bool is_blob(std::uint32_t mode) { return mode == kBlob || mode == kExecutable || mode == kLink; }

unsigned char dirent_type(std::uint32_t mode) {
  if (is_dir(mode)) return DT_DIR;
  if (mode == kLink) return DT_LNK;
  return DT_REG;
}

// Streamed handles open at once: each holds about 4.5 MiB of buffers (WindowedReader::kWindow
// and Inflater::kInput), up to 1.3 MiB of seek points (Inflater::kMaxSnapshots) and a thread
// that inflates ahead of the reader. More opens fail with EMFILE.
constexpr std::uint64_t kMaxStreams = 64;

// Names a tree may hold but a directory must not show: git itself refuses to create most;
// longer than NAME_MAX, no program's buffer is sized for them.
bool bad_name(std::string_view name) {
  return name.empty() || name == "." || name == ".." || name.size() > NAME_MAX ||
         name.find_first_of(std::string_view("/\0", 2)) != std::string_view::npos;
}

// A path no program could open (git cannot check it out either): served nowhere. Bounding
// paths also bounds what the node table stores per node in very deep trees.
bool too_long(std::string_view path) { return path.size() >= PATH_MAX; }

// The bytes open files may hold whole (beyond the cache, which they share): twice the cache,
// plus room for one blob that has to be read whole (a delta larger than the cache).
std::uint64_t held_limit(std::uint64_t cache_bytes) { return 2 * cache_bytes + (512ull << 20); }

// Runs a Backend call: exceptions never reach the FUSE layer, they become errnos.
template <typename F>
int guarded(const char* op, F&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return ENOMEM;
  } catch (const std::exception& e) {
    try {
      spdlog::warn("git: {} failed: {}", op, e.what());
    } catch (...) {
    }
    return EIO;
  } catch (...) {
    return EIO;
  }
}

// A handle with a share of a Budget, released when the file is closed.
class LeasedHandle final : public FileHandle {
 public:
  LeasedHandle(std::unique_ptr<FileHandle> inner, Budget::Lease lease)
      : inner_(std::move(inner)), lease_(std::move(lease)) {}
  int read(std::size_t size, off_t offset, ReadResult& out) override {
    return inner_->read(size, offset, out);
  }
  int stat(struct stat& st) override { return inner_->stat(st); }

 private:
  std::unique_ptr<FileHandle> inner_;
  Budget::Lease lease_;
};

// A blob held in memory (cached, or read whole): reads are views into it, with no lock.
class MemoryHandle final : public FileHandle {
 public:
  explicit MemoryHandle(Blob blob) : blob_(std::move(blob)) {}

  int read(std::size_t size, off_t offset, ReadResult& out) override {
    if (offset < 0) return EINVAL;
    out.fd = -1;
    const auto begin = static_cast<std::uint64_t>(offset);
    if (begin >= blob_->size()) {
      out.data = {};
      return 0;
    }
    const auto length = std::min<std::uint64_t>(size, blob_->size() - begin);
    out.data = std::string_view(*blob_).substr(static_cast<std::size_t>(begin),
                                               static_cast<std::size_t>(length));
    return 0;
  }

 private:
  Blob blob_;  // keeps the bytes (and their HeldBlobs charge) alive after the cache evicts them
};

// A Git LFS object: reads are ranges of its fd, which libfuse splices to the kernel.
class LfsHandle final : public FileHandle {
 public:
  explicit LfsHandle(UniqueFd fd) : fd_(std::move(fd)) {}
  int read(std::size_t /*size*/, off_t offset, ReadResult& out) override {
    if (offset < 0) return EINVAL;
    out.fd = fd_.get();
    out.fd_offset = offset;
    return 0;
  }

 private:
  UniqueFd fd_;
};

// Files counted once each in Status, however often the kernel looks them up again.
class PathCount {
 public:
  void note(const std::string& path) {
    const std::lock_guard lock(mutex_);
    if (paths_.insert(path).second) count_.fetch_add(1, std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint64_t count() const noexcept {
    return count_.load(std::memory_order_relaxed);
  }

 private:
  std::mutex mutex_;
  std::unordered_set<std::string> paths_;
  std::atomic<std::uint64_t> count_{0};
};

class GitFs final : public Backend {
 public:
  GitFs(const GitFsOptions& options, RepoPtr repo, const ResolvedThread& resolved)
      : options_(options),
        resolved_(resolved),
        time_(resolved.time),
        locator_(object_directories(repo.get())),
        filter_(repo.get(), resolved.commit),
        common_dir_(git_repository_commondir(repo.get())),
        pool_(options.repo_root, std::move(repo)),
        nodes_(root_info(resolved), InoHasher(InoHasher::random_key())),
        cache_(options.cache_bytes),
        held_(options.held_bytes != 0 ? options.held_bytes : held_limit(options.cache_bytes)) {}

  int lookup(NodeId parent, std::string_view name, NodeId& node, struct stat& st) override {
    return guarded("lookup", [&] {
      if (name.size() > NAME_MAX) return ENAMETOOLONG;
      if (bad_name(name)) return name.find('/') != std::string_view::npos ? EINVAL : ENOENT;
      // The tree read and the node made from it belong to one commit (see switch_tree).
      const std::shared_lock tree_lock(tree_mutex_);
      const auto dir = nodes_.find(parent);
      if (!dir) return ESTALE;
      if (dir->gone) return ENOENT;
      if (dir->mode == kGitlink) return ENOENT;  // shown empty: see fill_stat
      if (dir->mode != kTree) return ENOTDIR;

      std::string path = child_path(dir->path, name);
      if (too_long(path)) return ENAMETOOLONG;
      std::shared_ptr<const NodeInfo> info;
      if ((node = nodes_.acquire_known(path, info)) != 0) {  // known: no need for the tree
        fill_stat(*info, st);
        return 0;
      }
      NodeInfo child;
      child.path = std::move(path);
      const int err = read_entry(*dir, name, child);
      if (err != 0) return err;
      plan_checkout(child);
      node = nodes_.acquire(std::move(child), info);
      fill_stat(*info, st);
      return 0;
    });
  }

  void forget(NodeId node, std::uint64_t nlookup) noexcept override {
    // The kernel forgot most of what it held (a walk's entries, after memory pressure): the
    // trees libgit2 parsed for them go too, and their memory back to the system. The next
    // walk is cold in the kernel anyway, and re-parses each directory's tree once.
    if (nodes_.forget(node, nlookup)) {
      pool_.close_idle();
      trim_heap();
    }
  }

  int getattr(NodeId node, struct stat& st) override {
    return guarded("getattr", [&] {
      const auto info = nodes_.find(node);
      if (!info) return ESTALE;
      fill_stat(*info, st);
      if (info->gone) st.st_nlink = 0;  // as an unlinked file still open
      if (is_blob(info->mode) && !info->size_known) {
        // Provisional (see provisional()): the header is read again, and the kernel asks
        // again. Unreadable, the file is EIO, also for reads of a file the kernel opened.
        std::uint64_t size = 0;
        const auto lease = pool_.acquire();
        if (const int err = read_size(lease, *info, size); err != 0) return err;
        st.st_size = static_cast<off_t>(size);
      }
      return 0;
    });
  }

  bool provisional(NodeId node) const override {
    const auto info = nodes_.find(node);
    return info && is_blob(info->mode) && !info->size_known;
  }

  int readlink(NodeId node, std::string& target) override {
    return guarded("readlink", [&] {
      const auto info = nodes_.find(node);
      if (!info) return ESTALE;
      if (info->mode != kLink) return EINVAL;
      // A target is a path: a bigger blob is not read at all.
      std::uint64_t size = info->size;
      if (!info->size_known) {
        const auto lease = pool_.acquire();
        if (const int err = read_size(lease, *info, size); err != 0) return err;
      }
      if (size >= PATH_MAX) return ENAMETOOLONG;
      Blob blob;
      if (const int err = load_blob(*info, blob); err != 0) return err;
      target.assign(*blob);
      return 0;
    });
  }

  int read_dir(NodeId node, DirSnapshot& out) override {
    return guarded("read_dir", [&] {
      const std::shared_lock tree_lock(tree_mutex_);
      const auto dir = nodes_.find(node);
      if (!dir) return ESTALE;
      if (dir->gone) return ENOENT;
      if (!is_dir(dir->mode)) return ENOTDIR;
      out.node = node;
      out.entries.clear();
      out.entries.push_back(DirEntry{".", dir->ino, DT_DIR});
      out.entries.push_back(DirEntry{"..", nodes_.ino_of(parent_path(dir->path)), DT_DIR});
      if (dir->mode == kGitlink) return 0;

      const auto lease = pool_.acquire();
      TreePtr tree;
      if (const int err = lookup_tree(lease, *dir, tree); err != 0) return err;
      const std::size_t count = git_tree_entrycount(tree.get());
      out.entries.reserve(count + 2);
      std::uint64_t hidden = 0;
      for (std::size_t i = 0; i < count; ++i) {
        const git_tree_entry* entry = git_tree_entry_byindex(tree.get(), i);
        const std::string_view name = git_tree_entry_name(entry);
        std::string path = child_path(dir->path, name);
        if (bad_name(name) || too_long(path)) {
          ++hidden;
          continue;
        }
        out.entries.push_back(DirEntry{std::string(name), nodes_.ino_of(path),
                                       dirent_type(git_tree_entry_filemode(entry))});
      }
      if (hidden > 0) count_hidden(dir->ino, hidden);
      return 0;
    });
  }

  int open_file(NodeId node, std::unique_ptr<FileHandle>& out) override {
    return open_served(node, false, out);
  }

  int open_node(NodeId node, std::unique_ptr<FileHandle>& out) override {
    return open_served(node, true, out);
  }

  int open_served(NodeId node, bool even_gone, std::unique_ptr<FileHandle>& out) {
    return guarded("open", [&] {
      const auto info = nodes_.find(node);
      if (!info) return ESTALE;
      if (info->gone && !even_gone) return ENOENT;
      if (is_dir(info->mode)) return EISDIR;
      if (info->mode == kLink) return ELOOP;  // the kernel follows links before opening
      std::uint64_t size = info->size;
      if (!info->size_known) {
        // The header could not be read at lookup; try again (a host `git gc` may have been
        // moving objects), and give up for this open only.
        const auto lease = pool_.acquire();
        if (const int err = read_size(lease, *info, size); err != 0) return err;
      }
      if (info->served == NodeInfo::Served::kLfs) return open_lfs(*info, out);
      if (info->served == NodeInfo::Served::kConverted) {
        std::shared_ptr<const CrlfIndex> index;
        if (const int err = streamed_conversion(*info, index); err != 0) return err;
        if (index) return open_converted_stream(*info, index, out);
        // Converted in memory (it fits the cache): no stream to fall back on.
        Blob blob;
        const int err =
            held_.hold(converted_key(*info), size,
                       [&](Blob& loaded) { return load_converted(*info, loaded); }, blob);
        if (err != 0) return err;
        out = std::make_unique<MemoryHandle>(std::move(blob));
        return 0;
      }
      if (size <= cache_.limit()) {
        Blob blob;
        const int err = held_.hold(OidKey(info->oid), size,
                                   [&](Blob& loaded) { return load_blob(*info, loaded); }, blob);
        if (err == 0) {
          out = std::make_unique<MemoryHandle>(std::move(blob));
          return 0;
        }
        // Open files already hold all they may: a stream needs only its buffers.
        if (err != ENOMEM) return err;
      }
      return open_stream(*info, size, out);
    });
  }

  int statfs(struct statvfs& out) override {
    out = {};
    out.f_bsize = kBlockSize;
    out.f_frsize = kBlockSize;
    out.f_files = nodes_.size();
    out.f_namemax = 255;
    out.f_flag = ST_RDONLY | ST_NOSUID | ST_NODEV;
    return 0;
  }

  CachePolicy cache_policy() const override {
    CachePolicy policy;
    policy.entry_timeout = kForever;
    policy.attr_timeout = kForever;
    policy.keep_cache = true;
    policy.open_in_kernel = true;
    return policy;
  }

  std::size_t node_count() const override { return nodes_.size(); }

  // Takeover: ids are kept, and so is the inode-number key (takeover_state).
  bool set_next_node(NodeId node) override {
    nodes_.set_next(node);
    return true;
  }
  void add_lookups(NodeId node, std::uint64_t n) override { nodes_.add_lookups(node, n); }
  std::string takeover_state() const override {
    const InoHasher::Key key = nodes_.hasher().key();
    std::string out(sizeof key, '\0');
    std::memcpy(out.data(), &key, sizeof key);
    return out;
  }
  void restore_takeover_state(std::string_view state) override {
    InoHasher::Key key;
    if (state.size() != sizeof key) return;
    std::memcpy(&key, state.data(), sizeof key);
    nodes_.set_hasher(InoHasher(key));
  }

  void add_status(nlohmann::ordered_json& extra) const override {
    const auto stats = cache_.stats();
    {
      const std::lock_guard lock(resolved_mutex_);
      if (resolved_.commit) {
        extra["commit"] = to_hex(*resolved_.commit);
      } else {
        extra["commit"] = nullptr;
      }
      extra["tree"] = to_hex(resolved_.tree);
      extra["retargets"] = retargets_;
    }
    extra["cache_bytes"] = stats.bytes;
    extra["cache_limit"] = stats.limit;
    extra["cache_entries"] = stats.entries;
    extra["cache_hits"] = stats.hits;
    extra["cache_misses"] = stats.misses;
    extra["streamed_opens"] = streamed_opens_.load(std::memory_order_relaxed);
    extra["open_streams"] = streams_.used();
    extra["held_bytes"] = held_.budget().used();
    extra["held_limit"] = held_.budget().limit();
    extra["opens_refused_for_memory"] = held_.budget().refusals() + streams_.refusals();
    extra["hidden_names"] = hidden_names_.load(std::memory_order_relaxed);
    extra["inode_collisions"] = nodes_.collisions();
    extra["whole_reads_of_big_blobs"] = whole_reads_.load(std::memory_order_relaxed);
    extra["repositories_open"] = pool_.size();
    extra["nodes"] = nodes_.size();
    extra["converted_files"] = converted_.count();
    extra["lfs_files"] = lfs_served_.count();
    extra["lfs_missing"] = lfs_missing_.count();
    extra["filter_drivers_not_run"] = drivers_not_run_.count();
    extra["conversions_too_big"] = too_big_.count();
  }

  std::optional<std::string> served_commit() const override {
    const std::lock_guard lock(resolved_mutex_);
    if (!resolved_.commit) return std::nullopt;
    return to_hex(*resolved_.commit);
  }

  std::vector<TreeChange> switch_tree(const std::string& commit) override {
    const auto lease = pool_.acquire();
    const ResolvedThread next = resolve_commit(lease.repo(), commit);
    const std::unique_lock tree_lock(tree_mutex_);
    git_oid old_tree{};
    {
      const std::lock_guard lock(resolved_mutex_);
      old_tree = resolved_.tree;
    }
    std::vector<RawChange> raw;
    if (git_oid_cmp(&old_tree, &next.tree) != 0) {
      RawChange root;
      root.kind = TreeChange::Kind::kDirChanged;
      root.new_oid = next.tree;
      root.new_mode = kTree;
      raw.push_back(root);
      diff_trees(lease.repo(), old_tree, next.tree, "", raw);
    }
    std::unordered_map<std::string_view, const RawChange*> by_path;
    for (const RawChange& change : raw) by_path.emplace(change.path, &change);
    // A changed .gitattributes may change how unchanged blobs are served (checkout_filter.h):
    // then every file is served anew, and every directory may have attributes above it.
    const bool attributes_changed = std::any_of(raw.begin(), raw.end(), [](const RawChange& c) {
      return c.path == ".gitattributes" || c.path.ends_with("/.gitattributes");
    });
    std::vector<std::string> reconverted;
    if (next.commit) filter_.set_commit(*next.commit);
    nodes_.rebase([&](const std::shared_ptr<const NodeInfo>& info) {
      auto kept = rebased(lease, by_path, info);
      if (!attributes_changed || !kept) return kept;
      if (!is_dir(kept->mode)) {
        if (info->path != "" && by_path.count(info->path) == 0) reconverted.push_back(info->path);
        return std::shared_ptr<const NodeInfo>();
      }
      auto dir = std::make_shared<NodeInfo>(*kept);
      dir->gitattributes_above = true;  // over-approximated: plan() asks the attributes
      return std::shared_ptr<const NodeInfo>(std::move(dir));
    });
    {
      const std::lock_guard lock(resolved_mutex_);
      resolved_ = next;
      ++retargets_;
    }
    time_.store(next.time, std::memory_order_relaxed);
    std::vector<TreeChange> out;
    out.reserve(raw.size() + reconverted.size());
    for (RawChange& change : raw) out.push_back(TreeChange{std::move(change.path), change.kind});
    for (std::string& path : reconverted)
      out.push_back(TreeChange{std::move(path), TreeChange::Kind::kModified});
    return out;
  }

  RetargetOutcome retarget(const std::string& commit, bool /*drop_overlay*/) override {
    RetargetOutcome outcome;
    // Changed directories keep their ids through the switch: their entries are named in them.
    for (TreeChange& change : switch_tree(commit)) {
      switch (change.kind) {
        case TreeChange::Kind::kAdded:
        case TreeChange::Kind::kRemoved:
        case TreeChange::Kind::kReplaced:
        case TreeChange::Kind::kModified: {
          const std::string_view parent = parent_path(change.path);
          if (const NodeId dir = nodes_.id_of(parent); dir != 0) {
            const std::string_view name =
                std::string_view(change.path).substr(parent.empty() ? 0 : parent.size() + 1);
            outcome.notes.push_back(KernelNote{dir, std::string(name), 0});
          }
          break;
        }
        case TreeChange::Kind::kDirChanged:
          if (const NodeId node = nodes_.id_of(change.path); node != 0) {
            outcome.notes.push_back(KernelNote{0, {}, node});
          }
          break;
      }
    }
    outcome.commit = served_commit().value_or(commit);
    return outcome;
  }

 private:
  // One difference between two trees, as diff_trees finds it.
  struct RawChange {
    std::string path;
    TreeChange::Kind kind = TreeChange::Kind::kModified;
    git_oid new_oid{};
    std::uint32_t new_mode = 0;
  };

  // What a tree entry's mode means here: unknown modes are plain files (as read_entry does).
  static std::uint32_t served_mode(const git_tree_entry* entry) {
    const auto mode = static_cast<std::uint32_t>(git_tree_entry_filemode(entry));
    return is_dir(mode) || is_blob(mode) ? mode : kBlob;
  }

  // The kind of inode a mode makes: a change of it is a new node, never an update.
  static int inode_kind(std::uint32_t mode) {
    if (mode == kTree) return 0;
    if (mode == kGitlink) return 1;
    if (mode == kLink) return 2;
    return 3;
  }

  // `commit` (40 hex digits) as served: its tree and time. Throws heddle::Error.
  static ResolvedThread resolve_commit(git_repository* repo, const std::string& commit) {
    git_oid oid{};
    if (commit.size() != GIT_OID_HEXSZ ||
        commit.find_first_not_of("0123456789abcdef") != std::string::npos ||
        git_oid_fromstr(&oid, commit.c_str()) < 0) {
      throw Error("retarget: \"" + commit.substr(0, 64) +
                      "\" is not a commit id (40 lowercase hex digits)",
                  EINVAL);
    }
    git_commit* raw = nullptr;
    if (git_commit_lookup(&raw, repo, &oid) < 0) {
      throw Error("retarget: commit " + commit + " cannot be read from the repository: " +
                      last_error_message(),
                  ENOENT);
    }
    ResolvedThread out;
    out.commit = oid;
    out.tree = *git_commit_tree_id(raw);
    out.time = static_cast<std::int64_t>(git_commit_time(raw));
    git_commit_free(raw);
    return out;
  }

  static TreePtr read_tree(git_repository* repo, const git_oid& oid, const std::string& path) {
    git_tree* raw = nullptr;
    if (git_tree_lookup(&raw, repo, &oid) < 0) {
      throw Error("retarget: tree " + to_hex(oid) + " ('" + path +
                      "') cannot be read: " + last_error_message(),
                  EIO);
    }
    return TreePtr(raw);
  }

  // The names that differ between two trees, descending only into directories whose tree
  // changed. Names never served (bad_name, too_long) are left out.
  static void diff_trees(git_repository* repo, const git_oid& old_id, const git_oid& new_id,
                         const std::string& prefix, std::vector<RawChange>& out) {
    const TreePtr old_tree = read_tree(repo, old_id, prefix);
    const TreePtr new_tree = read_tree(repo, new_id, prefix);
    const auto served = [](std::string_view name, const std::string& path) {
      return !bad_name(name) && !too_long(path);
    };
    for (std::size_t i = 0, n = git_tree_entrycount(old_tree.get()); i < n; ++i) {
      const git_tree_entry* before = git_tree_entry_byindex(old_tree.get(), i);
      const char* name = git_tree_entry_name(before);
      std::string path = child_path(prefix, name);
      if (!served(name, path)) continue;
      const git_tree_entry* after = git_tree_entry_byname(new_tree.get(), name);
      RawChange change;
      change.path = std::move(path);
      if (after == nullptr) {
        change.kind = TreeChange::Kind::kRemoved;
        out.push_back(std::move(change));
        continue;
      }
      const std::uint32_t old_mode = served_mode(before);
      change.new_mode = served_mode(after);
      change.new_oid = *git_tree_entry_id(after);
      if (old_mode == change.new_mode &&
          git_oid_cmp(git_tree_entry_id(before), &change.new_oid) == 0) {
        continue;
      }
      if (inode_kind(old_mode) != inode_kind(change.new_mode)) {
        change.kind = TreeChange::Kind::kReplaced;
        out.push_back(std::move(change));
      } else if (change.new_mode == kTree) {
        change.kind = TreeChange::Kind::kDirChanged;
        const git_oid old_oid = *git_tree_entry_id(before);
        const git_oid new_oid = change.new_oid;
        const std::string sub = change.path;
        out.push_back(std::move(change));
        diff_trees(repo, old_oid, new_oid, sub, out);
      } else {
        change.kind = TreeChange::Kind::kModified;
        out.push_back(std::move(change));
      }
    }
    for (std::size_t i = 0, n = git_tree_entrycount(new_tree.get()); i < n; ++i) {
      const git_tree_entry* after = git_tree_entry_byindex(new_tree.get(), i);
      const char* name = git_tree_entry_name(after);
      std::string path = child_path(prefix, name);
      if (!served(name, path) || git_tree_entry_byname(old_tree.get(), name) != nullptr) continue;
      RawChange change;
      change.path = std::move(path);
      change.kind = TreeChange::Kind::kAdded;
      change.new_mode = served_mode(after);
      change.new_oid = *git_tree_entry_id(after);
      out.push_back(std::move(change));
    }
  }

  // What a live node becomes in the new tree (NodeTable::rebase): unchanged, updated, or gone.
  std::shared_ptr<const NodeInfo> rebased(
      const RepoPool::Lease& lease,
      const std::unordered_map<std::string_view, const RawChange*>& changes,
      const std::shared_ptr<const NodeInfo>& info) {
    if (const auto self = changes.find(info->path); self != changes.end()) {
      const RawChange& change = *self->second;
      // A file whose content or mode changed is a new node too (under the same inode number):
      // the kernel caches pages per node, and a file open before must keep its content while
      // a new open reads the new one. Directories keep their node: they are only listed.
      if (change.kind != TreeChange::Kind::kDirChanged) return nullptr;
      auto next = std::make_shared<NodeInfo>(*info);
      next->oid = change.new_oid;
      next->mode = change.new_mode;
      next->size = 0;
      next->size_known = true;
      if (is_blob(next->mode)) next->size_known = read_size(lease, *next, next->size) == 0;
      return next;
    }
    // The nearest changed ancestor decides: a directory that changed keeps what it does not
    // list; one that went (or became something else) takes everything below it along.
    for (std::string_view path = info->path; !path.empty();) {
      path = parent_path(path);
      const auto above = changes.find(path);
      if (above == changes.end()) continue;
      return above->second->kind == TreeChange::Kind::kDirChanged ? info : nullptr;
    }
    return info;
  }

  static NodeInfo root_info(const ResolvedThread& resolved) {
    NodeInfo root;
    root.oid = resolved.tree;
    root.mode = kTree;
    return root;
  }

  void fill_stat(const NodeInfo& info, struct stat& st) const noexcept {
    st = {};
    st.st_ino = info.ino;
    st.st_uid = options_.owner_uid;
    st.st_gid = options_.owner_gid;
    st.st_blksize = kBlockSize;
    st.st_nlink = 1;
    st.st_atim.tv_sec = st.st_mtim.tv_sec = st.st_ctim.tv_sec =
        time_.load(std::memory_order_relaxed);
    switch (info.mode) {
      case kTree:
        st.st_mode = S_IFDIR | 0755;
        st.st_nlink = 2;
        st.st_size = kBlockSize;
        break;
      case kGitlink:
        // A submodule: we do not have its objects (they live in another repository, which
        // the sandbox does not even mount), so it is an empty directory, as in `git archive`
        // and in an unpopulated checkout. Read-only like the whole mount; 0755 like git's.
        st.st_mode = S_IFDIR | 0755;
        st.st_nlink = 2;
        st.st_size = kBlockSize;
        break;
      case kLink:
        st.st_mode = S_IFLNK | 0777;
        st.st_size = static_cast<off_t>(info.size);
        break;
      case kExecutable:
        st.st_mode = S_IFREG | 0755;
        st.st_size = static_cast<off_t>(info.size);
        break;
      default:
        st.st_mode = S_IFREG | 0644;
        st.st_size = static_cast<off_t>(info.size);
        break;
    }
    st.st_blocks = (st.st_size + 511) / 512;
  }

  // Hidden entries are counted once per directory (a listing may be taken many times).
  void count_hidden(ino_t dir, std::uint64_t hidden) {
    const std::lock_guard lock(hidden_mutex_);
    if (hidden_dirs_.insert(dir).second) {
      hidden_names_.fetch_add(hidden, std::memory_order_relaxed);
    }
  }

  void warn_object(const git_oid& oid, const std::string& path, const std::string& what) {
    warnings_.warn(OidKey(oid), "object " + to_hex(oid) + " ('" + path + "') " + what +
                                    "; reading it gives EIO");
  }

  // Before libgit2 reads an object: a loose file that is not a regular file would block it.
  int check_loose(const NodeInfo& info) {
    if (!locator_.loose_is_special(info.oid)) return 0;
    warn_object(info.oid, info.path, "is stored as a FIFO, a device or a link to one");
    return EIO;
  }

  int lookup_tree(const RepoPool::Lease& lease, const NodeInfo& dir, TreePtr& tree) {
    if (const int err = check_loose(dir); err != 0) return err;
    git_tree* raw = nullptr;
    if (git_tree_lookup(&raw, lease.repo(), &dir.oid) < 0) {
      warn_object(dir.oid, dir.path, "is a missing or damaged tree: " + last_error_message());
      return EIO;
    }
    tree.reset(raw);
    return 0;
  }

  // Fills `child` (path already set) from `name`'s entry in the tree `dir`.
  int read_entry(const NodeInfo& dir, std::string_view name, NodeInfo& child) {
    const auto lease = pool_.acquire();
    TreePtr tree;
    if (const int err = lookup_tree(lease, dir, tree); err != 0) return err;
    const git_tree_entry* entry = git_tree_entry_byname(tree.get(), std::string(name).c_str());
    if (entry == nullptr) return ENOENT;
    child.oid = *git_tree_entry_id(entry);
    child.gitattributes_above =
        dir.gitattributes_above || git_tree_entry_byname(tree.get(), ".gitattributes") != nullptr;
    child.mode = static_cast<std::uint32_t>(git_tree_entry_filemode(entry));
    if (!is_dir(child.mode) && !is_blob(child.mode)) child.mode = kBlob;  // normalised already
    if (is_blob(child.mode)) {
      // The size from the object header: cheap (no inflating the whole blob).
      child.size_known = read_size(lease, child, child.size) == 0;
    }
    return 0;
  }

  int read_size(const RepoPool::Lease& lease, const NodeInfo& info, std::uint64_t& size) {
    if (const int err = check_loose(info); err != 0) return err;
    std::size_t length = 0;
    git_object_t type = GIT_OBJECT_INVALID;
    if (git_odb_read_header(&length, &type, lease.odb(), &info.oid) < 0) {
      warn_object(info.oid, info.path, "is missing or damaged: " + last_error_message());
      return EIO;
    }
    if (type != GIT_OBJECT_BLOB) {
      warn_object(info.oid, info.path, std::string("is a ") + git_object_type2string(type) +
                                           ", not a blob");
      return EIO;
    }
    size = length;
    return 0;
  }

  // Decides how a new blob node is served, as `git checkout` of the served commit would write
  // it (checkout_filter.h): only for files that attributes can reach, so that a tree without
  // .gitattributes costs nothing more. On failure the blob is served as stored.
  void plan_checkout(NodeInfo& child) {
    if (!filter_.enabled() || child.mode == kLink || !is_blob(child.mode) || !child.size_known) {
      return;
    }
    if (!child.gitattributes_above && !filter_.applies_everywhere()) return;
    CheckoutFilter::Plan plan;
    if (filter_.plan(child.path, plan) != 0) {
      warn_object(child.oid, child.path,
                  "has attributes libgit2 cannot read (" + last_error_message() +
                      "); served as stored");
      return;
    }
    if (plan.driver == "lfs" && serve_lfs(child)) return;
    if (!plan.driver.empty() && plan.driver != "lfs") drivers_not_run_.note(child.path);
    if (!plan.convert) return;
    if (child.size > cache_.limit()) {
      plan_streamed_conversion(child);
      return;
    }
    std::string converted;
    bool changed = false;
    if (filter_.convert(child.path, child.oid, converted, changed) != 0) {
      warn_object(child.oid, child.path,
                  "cannot be converted for checkout (" + last_error_message() +
                      "); served as stored");
      return;
    }
    if (!changed) return;
    child.size = converted.size();
    child.served = NodeInfo::Served::kConverted;
    converted_.note(child.path);
    (void)cache_.insert(converted_key(child), std::make_shared<const std::string>(std::move(converted)));
  }

  // A blob larger than the cache whose attributes convert it: its converted size now (one pass
  // over it), its bytes streamed at each open (crlf_stream.h).
  void plan_streamed_conversion(NodeInfo& child) {
    CheckoutFilter::StreamPlan plan;
    if (filter_.stream_plan(child.path, plan) != 0) {
      warn_object(child.oid, child.path,
                  "has attributes libgit2 cannot apply (" + last_error_message() +
                      "); served as stored");
      return;
    }
    if (plan.kind == CheckoutFilter::StreamPlan::Kind::kNone) return;
    if (plan.kind == CheckoutFilter::StreamPlan::Kind::kUnsupported) {
      too_big_.note(child.path);
      warnings_.warn(OidKey(child.oid), "'" + child.path + "' (" + std::to_string(child.size) +
                                            " bytes) is larger than the blob cache and its `" +
                                            plan.why + "` conversion does not stream: served "
                                            "as stored, without its checkout conversion");
      return;
    }
    std::shared_ptr<const CrlfIndex> index;
    if (index_conversion(child, child.size, plan.crlf, index) != 0) return;  // warned
    if (!index->convert) return;
    child.size = index->size;
    child.served = NodeInfo::Served::kConverted;
    converted_.note(child.path);
  }

  // The conversion index of a blob of `raw_size` stored bytes at info.path: remembered by
  // blob, path and commit (converted_key), or made by reading the blob once.
  int index_conversion(const NodeInfo& info, std::uint64_t raw_size, const CrlfRule& rule,
                       std::shared_ptr<const CrlfIndex>& out) {
    const OidKey key = converted_key(info);
    {
      const std::lock_guard lock(crlf_mutex_);
      if (const auto it = crlf_indexes_.find(key); it != crlf_indexes_.end()) {
        out = it->second;
        return 0;
      }
    }
    std::unique_ptr<ByteSource> raw;
    if (const int err = open_raw(info, raw_size, raw); err != 0) return err;
    auto index = std::make_shared<CrlfIndex>();
    std::string why;
    if (const int err = index_crlf(*raw, rule, *index, why); err != 0) {
      warn_object(info.oid, info.path, "cannot be read for its checkout conversion: " + why);
      return err;
    }
    out = index;
    const std::lock_guard lock(crlf_mutex_);
    if (crlf_indexes_.size() >= kMaxCrlfIndexes) crlf_indexes_.clear();  // a few KiB each
    crlf_indexes_.emplace(key, out);
    return 0;
  }

  // For a converted node: the index to stream it with, or null when it converts in memory
  // (the blob fits the cache). After a retarget the key has another commit: indexed again.
  int streamed_conversion(const NodeInfo& info, std::shared_ptr<const CrlfIndex>& out) {
    out = nullptr;
    std::uint64_t raw_size = 0;
    {
      const auto lease = pool_.acquire();
      if (const int err = read_size(lease, info, raw_size); err != 0) return err;
    }
    if (raw_size <= cache_.limit()) return 0;
    CheckoutFilter::StreamPlan plan;
    if (filter_.stream_plan(info.path, plan) != 0 ||
        plan.kind != CheckoutFilter::StreamPlan::Kind::kCrlf) {
      warn_object(info.oid, info.path, "no longer converts as it did at lookup");
      return EIO;
    }
    if (const int err = index_conversion(info, raw_size, plan.crlf, out); err != 0) return err;
    if (!out->convert || out->size != info.size) {
      warn_object(info.oid, info.path, "converts to " + std::to_string(out->size) +
                                           " bytes now, " + std::to_string(info.size) +
                                           " at lookup");
      return EIO;
    }
    return 0;
  }

  // The stored bytes of a blob, streamed; a delta (which cannot stream) is read whole, shared
  // with other opens and charged to the held budget.
  int open_raw(const NodeInfo& info, std::uint64_t size, std::unique_ptr<ByteSource>& out) {
    std::unique_ptr<Inflater> inflater;
    std::string why;
    const ObjectLocation where = locator_.locate(info.oid);
    switch (Inflater::open(where, inflater, why, seek_points_.get(info.oid, where))) {
      case Inflater::OpenResult::kOk:
        if (inflater->size() != size) {
          warn_object(info.oid, info.path, "has a header of " + std::to_string(inflater->size()) +
                                               " bytes, but libgit2 says " +
                                               std::to_string(size));
          return EIO;
        }
        out = std::move(inflater);
        return 0;
      case Inflater::OpenResult::kCannotStream: {
        Blob blob;
        if (const int err = hold_unstreamable(info, size, why, blob); err != 0) return err;
        out = std::make_unique<MemorySource>(std::move(blob));
        return 0;
      }
      case Inflater::OpenResult::kDamaged:
        break;
    }
    warn_object(info.oid, info.path, "cannot be streamed: " + why);
    return EIO;
  }

  int open_converted_stream(const NodeInfo& info, const std::shared_ptr<const CrlfIndex>& index,
                            std::unique_ptr<FileHandle>& out) {
    Budget::Lease slot = streams_.take(1);
    if (!slot) return EMFILE;
    std::unique_ptr<ByteSource> raw;
    if (const int err = open_raw(info, index->raw_size, raw); err != 0) return err;
    auto reader = std::make_unique<WindowedReader>(
        std::make_unique<CrlfSource>(std::move(raw), index), info.oid, warnings_);
    streamed_opens_.fetch_add(1, std::memory_order_relaxed);
    out = std::make_unique<LeasedHandle>(std::move(reader), std::move(slot));
    return 0;
  }

  // A Git LFS pointer whose object is present: served as the object. Otherwise (not a pointer,
  // or no such object of that size and hash) false, and the pointer is served.
  bool serve_lfs(NodeInfo& child) {
    if (child.size > kMaxLfsPointerSize) return false;  // git-lfs passes it through
    Blob blob;
    if (load_blob(child, blob) != 0) return false;
    const auto pointer = parse_lfs_pointer(*blob);
    if (!pointer) return false;
    // Hashed once per object for the mount's life, not at every lookup of a path to it.
    bool verified = false;
    {
      const std::lock_guard lock(lfs_mutex_);
      verified = lfs_verified_.count(pointer->oid) > 0;
    }
    if (!open_lfs_object(common_dir_, *pointer, !verified)) {
      lfs_missing_.note(child.path);
      return false;
    }
    if (!verified) {
      const std::lock_guard lock(lfs_mutex_);
      lfs_verified_.insert(pointer->oid);
    }
    child.size = pointer->size;
    child.served = NodeInfo::Served::kLfs;
    lfs_served_.note(child.path);
    return true;
  }

  int open_lfs(const NodeInfo& info, std::unique_ptr<FileHandle>& out) {
    Blob blob;
    if (const int err = load_blob(info, blob); err != 0) return err;
    const auto pointer = parse_lfs_pointer(*blob);
    if (!pointer) return EIO;
    // Hashed at lookup already; the size is checked again (the file may have changed since).
    UniqueFd fd = open_lfs_object(common_dir_, *pointer, false);
    if (!fd) {
      warnings_.warn(OidKey(info.oid), "the Git LFS object of '" + info.path +
                                           "' is gone or changed since it was looked up; "
                                           "reading it gives EIO");
      return EIO;
    }
    out = std::make_unique<LfsHandle>(std::move(fd));
    return 0;
  }

  // The cache key of a blob's converted bytes at a path: neither the blob's id (the stored
  // bytes) nor any other object's.
  // The commit is in it too: a retarget may bring other attributes for the same blob and path.
  OidKey converted_key(const NodeInfo& info) {
    const std::string seed =
        "heddle checkout\n" + filter_.commit_hex() + "\n" + to_hex(info.oid) + "\n" + info.path;
    git_oid key{};
    (void)git_odb_hash(&key, seed.data(), seed.size(), GIT_OBJECT_BLOB);
    return OidKey(key);
  }

  int load_converted(const NodeInfo& info, Blob& out) {
    const OidKey key = converted_key(info);
    if ((out = cache_.find(key))) return 0;
    std::string converted;
    bool changed = false;
    if (filter_.convert(info.path, info.oid, converted, changed) != 0) {
      warn_object(info.oid, info.path, "cannot be converted for checkout: " + last_error_message());
      return EIO;
    }
    if (converted.size() != info.size) {
      warn_object(info.oid, info.path, "converts to " + std::to_string(converted.size()) +
                                           " bytes now, " + std::to_string(info.size) +
                                           " at lookup");
      return EIO;
    }
    out = cache_.insert(key, std::make_shared<const std::string>(std::move(converted)));
    return 0;
  }

  // The whole blob: from the cache, or read and (if it fits) cached.
  int load_blob(const NodeInfo& info, Blob& out) {
    const OidKey key(info.oid);
    if ((out = cache_.find(key))) return 0;
    if (const int err = read_whole(info, out); err != 0) return err;
    out = cache_.insert(key, std::move(out));
    return 0;
  }

  // A blob the inflater cannot stream (a delta, in practice): still answered, by holding it
  // whole, shared by every open of it and charged, never more than the budget held whole.
  int hold_unstreamable(const NodeInfo& info, std::uint64_t size, const std::string& why,
                        Blob& blob) {
    warnings_.warn(OidKey(info.oid), "blob " + to_hex(info.oid) + " ('" + info.path + "', " +
                                         std::to_string(size) + " bytes) cannot be streamed (" +
                                         why + "); reading it whole through libgit2");
    return held_.hold(OidKey(info.oid), size,
                      [&](Blob& loaded) {
                        whole_reads_.fetch_add(1, std::memory_order_relaxed);
                        return read_whole(info, loaded);
                      },
                      blob);
  }

  int read_whole(const NodeInfo& info, Blob& out) {
    if (const int err = check_loose(info); err != 0) return err;
    const auto lease = pool_.acquire();
    git_odb_object* raw = nullptr;
    if (git_odb_read(&raw, lease.odb(), &info.oid) < 0) {
      warn_object(info.oid, info.path, "is missing or damaged: " + last_error_message());
      return EIO;
    }
    const OdbObjectPtr object(raw);
    if (git_odb_object_type(object.get()) != GIT_OBJECT_BLOB) {
      warn_object(info.oid, info.path, "is not a blob");
      return EIO;
    }
    // Copied so that the libgit2 object (and the repository handle) can go back.
    out = std::make_shared<const std::string>(
        static_cast<const char*>(git_odb_object_data(object.get())),
        git_odb_object_size(object.get()));
    return 0;
  }

  int open_stream(const NodeInfo& info, std::uint64_t size, std::unique_ptr<FileHandle>& out) {
    Budget::Lease slot = streams_.take(1);
    if (!slot) return EMFILE;
    std::unique_ptr<Inflater> stream;
    std::string why;
    const ObjectLocation where = locator_.locate(info.oid);
    switch (Inflater::open(where, stream, why, seek_points_.get(info.oid, where))) {
      case Inflater::OpenResult::kOk:
        if (stream->size() != size) {
          warn_object(info.oid, info.path, "has a header of " + std::to_string(stream->size()) +
                                               " bytes, but libgit2 says " +
                                               std::to_string(size));
          return EIO;
        }
        streamed_opens_.fetch_add(1, std::memory_order_relaxed);
        out = std::make_unique<LeasedHandle>(
            std::make_unique<WindowedReader>(std::move(stream), info.oid, warnings_),
            std::move(slot));
        return 0;
      case Inflater::OpenResult::kCannotStream: {
        Blob blob;
        if (const int err = hold_unstreamable(info, size, why, blob); err != 0) return err;
        out = std::make_unique<MemoryHandle>(std::move(blob));
        return 0;
      }
      case Inflater::OpenResult::kDamaged:
        break;
    }
    warn_object(info.oid, info.path, "cannot be streamed: " + why);
    return EIO;
  }

  const GitFsOptions options_;
  mutable std::mutex resolved_mutex_;
  ResolvedThread resolved_;  // what is served now: changed by switch_tree
  std::uint64_t retargets_ = 0;
  std::atomic<std::int64_t> time_;  // resolved_.time, for stat without the lock
  // Shared by the requests that read trees (lookup, read_dir); switch_tree takes it alone, so
  // no node is made from the old tree after the new one is in place.
  std::shared_mutex tree_mutex_;
  ObjectLocator locator_;  // before pool_: built from the repository pool_ then takes over
  CheckoutFilter filter_;  // before pool_ too
  const std::string common_dir_;  // where Git LFS objects are (lfs/objects/)
  RepoPool pool_;
  NodeTable nodes_;
  BlobCache cache_;
  HeldBlobs held_;             // what open files hold whole
  Budget streams_{kMaxStreams};  // streamed handles open
  SeekPointRegistry seek_points_;  // shared by the opens of one big blob
  std::mutex hidden_mutex_;
  std::unordered_set<ino_t> hidden_dirs_;
  std::atomic<std::uint64_t> hidden_names_{0};
  WarnOnce warnings_;
  std::atomic<std::uint64_t> streamed_opens_{0};
  std::atomic<std::uint64_t> whole_reads_{0};
  std::mutex lfs_mutex_;
  std::unordered_set<std::string> lfs_verified_;  // LFS objects whose hash matched
  PathCount converted_;
  PathCount lfs_served_;
  PathCount lfs_missing_;
  PathCount drivers_not_run_;
  PathCount too_big_;
  static constexpr std::size_t kMaxCrlfIndexes = 4096;
  std::mutex crlf_mutex_;
  std::unordered_map<OidKey, std::shared_ptr<const CrlfIndex>, OidKeyHash> crlf_indexes_;
};

}  // namespace
}  // namespace git

std::unique_ptr<Backend> open_git_fs(const GitFsOptions& options) {
  auto repo = git::open_repository(options.repo_root);
  const auto resolved = git::resolve_thread(repo.get(), options.thread, options.repo_root);
  return std::make_unique<git::GitFs>(options, std::move(repo), resolved);
}

}  // namespace heddle::worker
