// The nodes the kernel holds references to: nodeid -> {path, object id, git mode, size}.
// A path keeps its nodeid while the kernel remembers it; forget() drops nodes whose lookup
// count reaches zero, so memory follows what the kernel caches, not what was ever visited.
#pragma once

#include <git2/oid.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "backend.h"

namespace heddle::worker::git {

// What a node is; immutable once created (the tree it comes from never changes).
struct NodeInfo {
  std::string path;       // bytes from the root, '/'-separated; "" for the root
  git_oid oid{};          // tree, blob or (for a gitlink) a commit of another repository
  std::uint32_t mode = 0; // git filemode: 040000, 0100644, 0100755, 0120000, 0160000
  std::uint64_t size = 0; // blob size (from the object header); 0 for directories
  bool size_known = true; // false when the header could not be read (the object is damaged)
  ino_t ino = 0;          // stable: a hash of `path`
};

// A 64-bit hash of the path: the same path has the same st_ino for the whole mount, even
// after the kernel forgets it. 1 is the root's; 0 is never returned.
[[nodiscard]] ino_t path_ino(std::string_view path) noexcept;

// "a/b" + "c" -> "a/b/c"; "" + "c" -> "c".
[[nodiscard]] std::string child_path(std::string_view parent, std::string_view name);
// The parent of "a/b/c" is "a/b"; of "a" it is "" (the root).
[[nodiscard]] std::string_view parent_path(std::string_view path) noexcept;

class NodeTable {
 public:
  explicit NodeTable(NodeInfo root);
  NodeTable(const NodeTable&) = delete;
  NodeTable& operator=(const NodeTable&) = delete;

  // The node's description, or null if `node` is unknown (already forgotten).
  [[nodiscard]] std::shared_ptr<const NodeInfo> find(NodeId node) const;

  // Counts one lookup on the node for info->path, creating it from `info` if it is not known.
  // Returns its id and (through `out`) the node's description.
  [[nodiscard]] NodeId acquire(NodeInfo info, std::shared_ptr<const NodeInfo>& out);
  // Counts one lookup on the node for `path` if it is known and returns its id; else 0.
  [[nodiscard]] NodeId acquire_known(std::string_view path, std::shared_ptr<const NodeInfo>& out);

  void forget(NodeId node, std::uint64_t nlookup) noexcept;
  [[nodiscard]] std::size_t size() const;

 private:
  struct Entry {
    std::shared_ptr<const NodeInfo> info;
    // Increased under the shared lock (lookups of known paths run in parallel); decreased and
    // erased under the exclusive lock, which excludes those increments.
    mutable std::atomic<std::uint64_t> nlookup{0};
  };

  mutable std::shared_mutex mutex_;
  std::unordered_map<NodeId, std::unique_ptr<Entry>> by_id_;
  // Keys view the NodeInfo's path, which lives as long as the entry.
  std::unordered_map<std::string_view, NodeId> by_path_;
  NodeId next_id_ = kRootNode + 1;
};

}  // namespace heddle::worker::git
