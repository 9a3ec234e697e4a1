// A writable view over a read-only backend, as overlayfs does it: the lower backend (a git
// thread or a directory) is never written; every change lands in an UpperDir on disk, so it
// survives the worker, the supervisor and a remount. Lower files are copied up atomically on
// their first change; deletions of lower names are whiteouts; a directory removed and made
// again is opaque. A directory that has lower content is renamed only by copying (EXDEV, as
// overlayfs without redirect_dir), which `mv` does by itself.
//
// A file removed (unlinked, or renamed over) while it is open through this overlay is kept
// out of sight in DIR/work/orphans under its node id, as NFS's silly rename and
// fuse-overlayfs do, until its last handle closes: a worker that takes the connection over
// (issue 16) finds it there by id, since it has no name left to be looked up by. A lower file
// cannot be moved: a symlink there names its lower path. A hard link's removed name is kept
// there too while the node has another name (the journal knows one name a node).
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "backend.h"
#include "source_tree.h"
#include "upper_dir.h"

namespace heddle::worker {

class OverlayFs final : public Backend {
 public:
  // `dir` holds upper/ and work/ (see UpperDir). Every node shows `owner_uid`:`owner_gid`
  // unless a chown inside the mount stored another owner. Throws heddle::Error.
  // A `successor` keeps what its predecessor hid (see restore_unnamed()).
  OverlayFs(std::unique_ptr<Backend> lower, const std::string& dir, uid_t owner_uid,
            gid_t owner_gid, bool successor = false);

  [[nodiscard]] int lookup(NodeId parent, std::string_view name, NodeId& node,
                           struct stat& st) override;
  void forget(NodeId node, std::uint64_t nlookup) noexcept override;
  [[nodiscard]] int getattr(NodeId node, struct stat& st) override;
  [[nodiscard]] int readlink(NodeId node, std::string& target) override;
  [[nodiscard]] int read_dir(NodeId node, DirSnapshot& out) override;
  [[nodiscard]] int open_file(NodeId node, std::unique_ptr<FileHandle>& out) override;
  [[nodiscard]] int statfs(struct statvfs& out) override;
  [[nodiscard]] CachePolicy cache_policy() const override { return lower_->cache_policy(); }
  [[nodiscard]] std::size_t node_count() const override;
  void add_status(nlohmann::ordered_json& extra) const override;

  [[nodiscard]] bool writable() const override { return true; }
  [[nodiscard]] int open_writable(NodeId node, int flags,
                                  std::unique_ptr<FileHandle>& out) override;
  [[nodiscard]] int create(NodeId parent, std::string_view name, mode_t mode, int flags,
                           NodeId& node, struct stat& st,
                           std::unique_ptr<FileHandle>& out) override;
  [[nodiscard]] int mkdir(NodeId parent, std::string_view name, mode_t mode, NodeId& node,
                          struct stat& st) override;
  [[nodiscard]] int symlink(NodeId parent, std::string_view name, const std::string& target,
                            NodeId& node, struct stat& st) override;
  [[nodiscard]] int link(NodeId node, NodeId parent, std::string_view name,
                         struct stat& st) override;
  [[nodiscard]] int unlink(NodeId parent, std::string_view name) override;
  [[nodiscard]] int rmdir(NodeId parent, std::string_view name) override;
  [[nodiscard]] int rename(NodeId parent, std::string_view name, NodeId new_parent,
                           std::string_view new_name, unsigned flags) override;
  [[nodiscard]] int setattr(NodeId node, const AttrChange& change, FileHandle* handle,
                            struct stat& st) override;
  [[nodiscard]] int fsync(NodeId node, FileHandle* handle, bool datasync) override;

  // Capture and follow: the lower layer switches commits under the overlay (see Backend).
  [[nodiscard]] std::optional<std::string> served_commit() const override {
    return lower_->served_commit();
  }
  [[nodiscard]] int sync_all() override;
  [[nodiscard]] RetargetOutcome retarget(const std::string& commit, bool drop_overlay) override;

  // Takeover: the overlay's own node ids (its lower layer's stay its own business).
  [[nodiscard]] bool set_next_node(NodeId node) override {
    const std::lock_guard lock(mutex_);
    next_ = node;
    return true;
  }
  [[nodiscard]] std::string takeover_state() const override { return lower_->takeover_state(); }
  void restore_takeover_state(std::string_view state) override {
    lower_->restore_takeover_state(state);
  }
  void add_lookups(NodeId node, std::uint64_t n) override {
    const std::lock_guard lock(mutex_);
    if (Node* found = find(node); found != nullptr && node != kRootNode) found->nlookup += n;
  }
  [[nodiscard]] bool restore_unnamed(NodeId node, std::uint64_t ino, mode_t type) override;
  void restore_done() override;

 private:
  struct Node {
    std::vector<std::string> paths;  // names in the mount; empty once the last is removed
    mode_t type = 0;                 // S_IFMT bits
    NodeId lower = 0;                // a lower node we hold one reference on, or 0
    bool upper = false;              // it exists in the upper layer
    bool opaque = false;             // a directory whose lower content does not show
    FileId upper_id{};
    std::uint64_t nlookup = 0;
    unsigned handles = 0;  // open through this overlay
    // Removed while open: its upper file is linked as DIR/work/orphans/ID (kFile), or a
    // symlink there names its lower path (kLower).
    enum class Hidden : std::uint8_t { kNone, kFile, kLower } hidden = Hidden::kNone;
    [[nodiscard]] bool shows_lower() const { return lower != 0 && !opaque; }
  };

  // What a name in a directory is in the merged view. Owns one reference on `lower`.
  struct Child;

  [[nodiscard]] Node* find(NodeId node);
  [[nodiscard]] int resolve(const Node& parent, std::string_view name, Child& out);
  void release(Child& child);
  [[nodiscard]] NodeId remember(Child& child, const std::string& path);
  [[nodiscard]] int upper_stat(const std::string& path, struct stat& st) const;
  [[nodiscard]] int lower_stat(NodeId lower, struct stat& st);

  // Makes `path` (a directory of the mount) and its parents exist in the upper layer.
  [[nodiscard]] int copy_up_dirs(const std::string& path);
  // Copies the lower entry `lower` up to `path` (its parent already upper), atomically.
  [[nodiscard]] int copy_up_entry(const std::string& path, NodeId lower, bool with_data);
  [[nodiscard]] int ensure_upper_dir(const Node& dir);
  [[nodiscard]] int copy_up(const Node& n, bool with_data);
  // The node of `path`, now upper, keyed by its upper identity.
  void promote(const std::string& path, const struct stat& upper_st);
  void drop_path(const Child& child);
  // The node the entry `child` is, or 0.
  [[nodiscard]] NodeId node_of(const Child& child) const;
  // For a removal of `child` (a file, which `node` is): the node, when it must be hidden.
  [[nodiscard]] Node* to_hide(NodeId node, const Child& child);
  // The name a node's hidden file (or, `lower`, its pointer) has in DIR/work/orphans.
  [[nodiscard]] static std::string hidden_name(NodeId node, bool lower);
  // Removes what hides `node`; a node with no name left is then no longer found by identity.
  void unhide(NodeId id, Node& node);
  // The upper file of `node` (by its name, or hidden), opened with `flags`.
  [[nodiscard]] OpenResult open_upper(NodeId id, const Node& node, int flags) const;
  // A handle of `node` counts in its `handles` until closed (then an unneeded hidden file goes).
  [[nodiscard]] std::unique_ptr<FileHandle> upper_handle(NodeId node, UniqueFd fd);
  void closed(NodeId node);
  [[nodiscard]] nlink_t hidden_links(NodeId node);
  // The link count the mount shows: a hidden file's link in DIR/work/orphans is not one.
  static void uncount_hidden(const Node& node, struct stat& st);
  void move_paths(const std::string& from, const std::string& to);
  // The merged listing; "." and ".." only `with_dots`.
  [[nodiscard]] int merged_entries(const Node& dir, std::vector<DirEntry>& out,
                                   bool with_dots = false);
  [[nodiscard]] int require_empty(const Child& child);
  [[nodiscard]] int new_entry(const std::string& path, int parent_fd, NodeId& node,
                              struct stat& st);
  [[nodiscard]] OpenResult upper_parent(const Node& dir, Child& child) const;
  [[nodiscard]] int prepare_new(NodeId parent, std::string_view name, Child& child,
                                OpenResult& parent_fd);
  void mark_dirty(const std::string& path);

  // Retarget, with the lock held. An open-for-writing handle counts in writers_ until closed.
  [[nodiscard]] std::unique_ptr<FileHandle> writer_handle(NodeId node, UniqueFd fd);
  // The lower node of `path` (one reference counted), or 0 when the lower layer lacks it.
  [[nodiscard]] NodeId lower_lookup_path(const std::string& path, struct stat& st);
  // Whether the upper layer decides what `path` is (an entry, a whiteout, or an opaque or
  // non-directory entry above it).
  [[nodiscard]] bool upper_covers(const std::string& path) const;
  // Empties the upper directory `path` (open as `dir_fd`) but for files open for writing and
  // directories the lower layer lacks. True when nothing is left in it.
  bool drop_upper_dir(const std::string& path, int dir_fd);
  // Path -> node of every node the tables find (root included).
  [[nodiscard]] std::map<std::string, NodeId> live_paths() const;
  // Node fixes after the lower layer switched: `changes` are the lower layer's.
  void relink_nodes(const std::vector<TreeChange>& changes, bool dropped,
                    std::vector<KernelNote>& notes);

  const std::unique_ptr<Backend> lower_;
  UpperDir upper_;

  mutable std::mutex mutex_;  // the tables and every change to the upper layer
  std::unordered_map<NodeId, Node> nodes_;
  std::unordered_map<std::string, NodeId> lower_nodes_;            // lower-only nodes by path
  std::unordered_map<FileId, NodeId, FileIdHash> upper_nodes_;     // upper nodes by identity
  std::unordered_set<std::string> dirty_dirs_;  // directories whose names changed since fsync
  std::unordered_map<FileId, unsigned, FileIdHash> writers_;  // open-for-writing handles
  NodeId next_ = kRootNode + 1;
};

}  // namespace heddle::worker
