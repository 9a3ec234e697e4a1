// What a filesystem backend answers, free of FUSE types. fuse_ops.cc turns these answers into
// replies. DirFs (a host directory) and GitFs (a git tree) are read-only; OverlayFs puts a
// writable layer on disk over either. Every int-returning call returns 0 or an errno for the
// kernel.
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "heddle/error.h"

namespace heddle::worker {

using NodeId = std::uint64_t;
inline constexpr NodeId kRootNode = 1;  // FUSE_ROOT_ID

struct DirEntry {
  std::string name;  // bytes, not necessarily UTF-8
  ino_t ino = 0;
  unsigned char type = 0;  // DT_*
};

// A directory's entries, read once for an open's first READDIR (or, when the kernel opens
// directories itself, for a listing from offset 0), so that no directory stays open.
// Includes "." and "..".
struct DirSnapshot {
  NodeId node = 0;
  std::vector<DirEntry> entries;
};

// Where a read's bytes are: a range of an fd (spliced by libfuse) or bytes in memory.
struct ReadResult {
  int fd = -1;          // >= 0: read `size` bytes at `fd_offset` of this fd
  off_t fd_offset = 0;
  std::string_view data;  // otherwise: these bytes (valid until the next read on the handle
                          // or its release)
  std::string owned;      // storage `data` may point into
  std::shared_ptr<void> hold;  // or what keeps `data` valid until the result is dropped
};

// An open regular file. One handle is used by one request at a time for reads at increasing
// offsets, but the kernel may send concurrent reads on the same handle: implementations
// synchronise internally where they keep state.
class FileHandle {
 public:
  virtual ~FileHandle() = default;
  [[nodiscard]] virtual int read(std::size_t size, off_t offset, ReadResult& out) = 0;
  // Attributes through the open file (getattr with a handle); ENOSYS to use the node's.
  [[nodiscard]] virtual int stat(struct stat& /*st*/) { return ENOSYS; }
  // The fd that writes, truncation, fallocate and fsync go to; -1 for a read-only handle.
  [[nodiscard]] virtual int write_fd() const { return -1; }
};

// A setattr request; unset fields stay as they are.
struct AttrChange {
  std::optional<mode_t> mode;
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::optional<off_t> size;
  std::optional<timespec> atime;  // tv_nsec may be UTIME_NOW
  std::optional<timespec> mtime;
};

// One name whose meaning changed when the served commit changed (Backend::switch_tree).
struct TreeChange {
  enum class Kind {
    kAdded,       // a new name
    kRemoved,     // the name is gone (with everything below it)
    kReplaced,    // another kind of object under the same name (file <-> dir <-> link)
    kModified,    // the same kind of file, other content or mode: a new node all the same
    kDirChanged,  // a directory whose entries changed (listed separately)
  };
  std::string path;  // from the root, '/'-separated; "" is the root (kDirChanged only)
  Kind kind = Kind::kModified;
};

// What the kernel must drop after a retarget, in the node ids it holds.
struct KernelNote {
  NodeId parent = 0;  // non-zero: the entry `name` in `parent`
  std::string name;
  NodeId node = 0;  // non-zero: the node's attributes and cached pages
};

struct RetargetOutcome {
  std::string commit;                  // now served (40 hex)
  std::vector<std::string> conflicts;  // changed both in the overlay and upstream
  std::vector<KernelNote> notes;       // to send once every lock is released
};

struct CachePolicy {
  double entry_timeout = 1.0;  // seconds
  double attr_timeout = 1.0;
  // FOPEN_KEEP_CACHE, and cache_readdir for directories: pages and listings survive reopen.
  // Safe for immutable data; for live data, the kernel drops them when a refreshed attribute
  // shows a new mtime or size (FUSE_CAP_AUTO_INVAL_DATA), so staleness is bounded by
  // attr_timeout.
  bool keep_cache = false;
  // One handle per node serves every open of it as a fresh one would: a git node's content
  // never changes (a new content is a new node), and a directory source's node is one file,
  // read through one fd as it changes in place (a file replaced by another is a new node). The
  // kernel may then open files and directories itself, with no OPEN, OPENDIR, FLUSH or RELEASE
  // round trip (kernel_opens.h). Honoured only for a read-only backend: writes need per-open
  // handles.
  bool open_in_kernel = false;
};

// Where a backend that learns of changes in its source by itself (a watched directory) tells
// the kernel to drop what it caches, in the node ids it handed out. The calls may block on the
// kernel's locks: never from a request handler, nor holding a lock a request needs. 0 or an
// errno (ENOENT: the kernel had nothing cached there).
class KernelCache {
 public:
  virtual ~KernelCache() = default;
  virtual int invalidate_entry(std::uint64_t parent, const std::string& name) noexcept = 0;
  virtual int invalidate_node(std::uint64_t node) noexcept = 0;
  // The entry or the node `note` names.
  int tell(const KernelNote& note) noexcept {
    return note.parent != 0 ? invalidate_entry(note.parent, note.name)
                            : invalidate_node(note.node);
  }
};

class Backend {
 public:
  virtual ~Backend() = default;

  // Once the session it serves exists, before it serves: the backend may tell the kernel of
  // changes from now on (null: no longer, before the session goes). Only the backend the
  // kernel talks to gets it (not an overlay's lower layer, whose node ids the kernel never sees).
  virtual void attach_kernel_cache(KernelCache* /*cache*/) {}

  // Finds `name` in directory `parent` and counts one kernel reference on the result.
  [[nodiscard]] virtual int lookup(NodeId parent, std::string_view name, NodeId& node,
                                   struct stat& st) = 0;
  // Drops `nlookup` references; a node with none left is forgotten (never the root).
  virtual void forget(NodeId node, std::uint64_t nlookup) noexcept = 0;

  [[nodiscard]] virtual int getattr(NodeId node, struct stat& st) = 0;
  // True while `node`'s attributes are a guess (a git object whose header could not be read):
  // the kernel must not keep them, and ask getattr again before it reads.
  [[nodiscard]] virtual bool provisional(NodeId /*node*/) const { return false; }
  [[nodiscard]] virtual int readlink(NodeId node, std::string& target) = 0;
  [[nodiscard]] virtual int read_dir(NodeId node, DirSnapshot& out) = 0;
  [[nodiscard]] virtual int open_file(NodeId node, std::unique_ptr<FileHandle>& out) = 0;
  // Opens `node` for the reads the kernel sends without an open (CachePolicy::open_in_kernel):
  // as open_file, except that a node gone since (a retarget) still serves the content it had,
  // as a file opened before the retarget does.
  [[nodiscard]] virtual int open_node(NodeId node, std::unique_ptr<FileHandle>& out) {
    return open_file(node, out);
  }
  [[nodiscard]] virtual int statfs(struct statvfs& out) = 0;

  [[nodiscard]] virtual CachePolicy cache_policy() const = 0;
  // Nodes currently remembered (the kernel holds a reference to each).
  [[nodiscard]] virtual std::size_t node_count() const = 0;
  // Backend-specific fields for StatusOk (e.g. the resolved commit, cache statistics).
  virtual void add_status(nlohmann::ordered_json& extra) const = 0;

  // Modifying operations. A read-only backend keeps these defaults: EROFS.
  [[nodiscard]] virtual bool writable() const { return false; }
  // Opens for writing (O_WRONLY/O_RDWR, O_TRUNC, O_APPEND in `flags`).
  [[nodiscard]] virtual int open_writable(NodeId /*node*/, int /*flags*/,
                                          std::unique_ptr<FileHandle>& /*out*/) {
    return EROFS;
  }
  // Creates a regular file and opens it with `flags`; counts one reference on the node.
  [[nodiscard]] virtual int create(NodeId /*parent*/, std::string_view /*name*/, mode_t /*mode*/,
                                   int /*flags*/, NodeId& /*node*/, struct stat& /*st*/,
                                   std::unique_ptr<FileHandle>& /*out*/) {
    return EROFS;
  }
  [[nodiscard]] virtual int mkdir(NodeId /*parent*/, std::string_view /*name*/, mode_t /*mode*/,
                                  NodeId& /*node*/, struct stat& /*st*/) {
    return EROFS;
  }
  [[nodiscard]] virtual int symlink(NodeId /*parent*/, std::string_view /*name*/,
                                    const std::string& /*target*/, NodeId& /*node*/,
                                    struct stat& /*st*/) {
    return EROFS;
  }
  // A new name for `node` (a hard link); counts one more reference on it.
  [[nodiscard]] virtual int link(NodeId /*node*/, NodeId /*parent*/, std::string_view /*name*/,
                                 struct stat& /*st*/) {
    return EROFS;
  }
  [[nodiscard]] virtual int unlink(NodeId /*parent*/, std::string_view /*name*/) { return EROFS; }
  [[nodiscard]] virtual int rmdir(NodeId /*parent*/, std::string_view /*name*/) { return EROFS; }
  // `flags`: 0, RENAME_NOREPLACE or RENAME_EXCHANGE.
  [[nodiscard]] virtual int rename(NodeId /*parent*/, std::string_view /*name*/,
                                   NodeId /*new_parent*/, std::string_view /*new_name*/,
                                   unsigned /*flags*/) {
    return EROFS;
  }
  // `handle` is the open file the change came through, or null.
  [[nodiscard]] virtual int setattr(NodeId /*node*/, const AttrChange& /*change*/,
                                    FileHandle* /*handle*/, struct stat& /*st*/) {
    return EROFS;
  }
  // Makes the node's data, and the names that changed above it, durable.
  [[nodiscard]] virtual int fsync(NodeId /*node*/, FileHandle* /*handle*/, bool /*datasync*/) {
    return 0;
  }

  // Capture and follow (issue 15). The commit served (40 hex), or nullopt when the source is
  // not a commit (a directory, a tree).
  [[nodiscard]] virtual std::optional<std::string> served_commit() const { return std::nullopt; }
  // Makes every change acknowledged so far durable (before a capture reads it): 0 or an errno.
  [[nodiscard]] virtual int sync_all() { return 0; }
  // Serves `commit` from now on, keeping the node ids of directories that stay and of files
  // that did not change (a changed file is a new node, so that fds open on the old one keep
  // their content and pages). drop_overlay:
  // the overlay's content is in `commit` (see ipc::Retarget). Throws heddle::Error, and then
  // still serves what it served.
  [[nodiscard]] virtual RetargetOutcome retarget(const std::string& /*commit*/,
                                                 bool /*drop_overlay*/) {
    throw Error("this mount serves no git commit: it cannot be retargeted", 0);
  }
  // For a lower layer: the same switch, answering what changed by path (no notes).
  [[nodiscard]] virtual std::vector<TreeChange> switch_tree(const std::string& /*commit*/) {
    throw Error("this mount serves no git commit: it cannot be retargeted", 0);
  }

  // Takeover (issue 16): a successor worker gives the nodes the kernel holds their old ids.
  // The next node this backend creates takes the id `node`, and those after it count on from
  // there; false when the backend cannot choose its ids (its nodes are then all stale). Only
  // before serving, from one thread.
  [[nodiscard]] virtual bool set_next_node(NodeId /*node*/) { return false; }
  // Counts `n` more references on the known node `node`.
  virtual void add_lookups(NodeId /*node*/, std::uint64_t /*n*/) {}
  // A node the kernel holds that could not be found by name (removed while open): true when
  // the backend kept it where it finds it by id, with inode number `ino` and file type `type`
  // as the kernel was given them; it then counts one reference on it. Only before serving.
  [[nodiscard]] virtual bool restore_unnamed(NodeId /*node*/, std::uint64_t /*ino*/,
                                             mode_t /*type*/) {
    return false;
  }
  // The nodes and handles are restored: what was kept for a node no longer held can go.
  virtual void restore_done() {}
  // What else a successor must share with this worker to show the same nodes (the git
  // backend's inode-number key), at most kMaxTakeoverState bytes; and, in the successor, before
  // any lookup, the same taken over (from a journal: any bytes; only numbers may change).
  static constexpr std::size_t kMaxTakeoverState = 64;
  [[nodiscard]] virtual std::string takeover_state() const { return {}; }
  virtual void restore_takeover_state(std::string_view /*state*/) {}
};

}  // namespace heddle::worker
