// nodeid -> {path beneath the source, lookup count, source identity}. No fds are held: every
// operation re-resolves the path, so the worker's fd use does not grow with the tree.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backend.h"
#include "source_tree.h"

namespace heddle::worker {

struct NodeRef {
  std::string path;  // "." for the root
  FileId id;
};

class InodeTable {
 public:
  explicit InodeTable(FileId root_id);

  // Records one lookup (the kernel now holds one more reference) of the file `id` found at
  // `path`, and returns its nodeid. Files with the same identity share a node (hardlinks); the
  // node's path becomes the most recent one it was found at. Nodeids are never reused, so the
  // generation is always 0.
  [[nodiscard]] NodeId acquire(const std::string& path, FileId id);

  // The node's path and identity, or nullopt for an unknown (forgotten) nodeid.
  [[nodiscard]] std::optional<NodeRef> find(NodeId node) const;

  // The node of the file `id`, or 0 when the kernel holds none.
  [[nodiscard]] NodeId find_id(FileId id) const;

  // Drops `nlookup` references; the node goes away at zero (then true). The root is never
  // dropped.
  bool forget(NodeId node, std::uint64_t nlookup) noexcept;

  [[nodiscard]] std::size_t size() const;
  // Every node but the root, with its path.
  [[nodiscard]] std::vector<std::pair<NodeId, std::string>> paths() const;

  // Takeover (Backend::set_next_node, add_lookups).
  void set_next(NodeId node);
  void add_lookups(NodeId node, std::uint64_t n);

 private:
  struct Node {
    std::string path;
    FileId id;
    std::uint64_t nlookup = 0;
  };

  mutable std::mutex mutex_;
  std::unordered_map<NodeId, Node> nodes_;
  std::unordered_map<FileId, NodeId, FileIdHash> by_id_;
  NodeId next_ = kRootNode + 1;
};

}  // namespace heddle::worker
