#include "inode_table.h"

#include "heap_trim.h"

namespace heddle::worker {

InodeTable::InodeTable(FileId root_id) {
  nodes_.emplace(kRootNode, Node{".", root_id, 1});
  by_id_.emplace(root_id, kRootNode);
}

NodeId InodeTable::acquire(const std::string& path, FileId id) {
  const std::lock_guard lock(mutex_);
  if (const auto it = by_id_.find(id); it != by_id_.end()) {
    Node& node = nodes_.at(it->second);
    ++node.nlookup;
    // The root keeps ".": it is the only path that always leads to it.
    if (it->second != kRootNode && node.path != path) node.path = path;
    return it->second;
  }
  const NodeId node = next_++;
  nodes_.emplace(node, Node{path, id, 1});
  by_id_.emplace(id, node);
  return node;
}

std::optional<NodeRef> InodeTable::find(NodeId node) const {
  const std::lock_guard lock(mutex_);
  const auto it = nodes_.find(node);
  if (it == nodes_.end()) return std::nullopt;
  return NodeRef{it->second.path, it->second.id};
}

NodeId InodeTable::find_id(FileId id) const {
  const std::lock_guard lock(mutex_);
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? 0 : it->second;
}

bool InodeTable::forget(NodeId node, std::uint64_t nlookup) noexcept {
  if (node == kRootNode) return false;
  {
    const std::lock_guard lock(mutex_);
    const auto it = nodes_.find(node);
    if (it == nodes_.end()) return false;
    Node& entry = it->second;
    if (entry.nlookup > nlookup) {
      entry.nlookup -= nlookup;
      return false;
    }
    if (const auto id = by_id_.find(entry.id); id != by_id_.end() && id->second == node) {
      by_id_.erase(id);
    }
    nodes_.erase(it);
    shrink_if_sparse(nodes_);
    shrink_if_sparse(by_id_);
  }
  node_forgotten();
  return true;
}

void InodeTable::set_next(NodeId node) {
  const std::lock_guard lock(mutex_);
  next_ = node;
}

void InodeTable::add_lookups(NodeId node, std::uint64_t n) {
  const std::lock_guard lock(mutex_);
  if (const auto it = nodes_.find(node); it != nodes_.end() && node != kRootNode) {
    it->second.nlookup += n;
  }
}

std::vector<std::pair<NodeId, std::string>> InodeTable::paths() const {
  const std::lock_guard lock(mutex_);
  std::vector<std::pair<NodeId, std::string>> out;
  out.reserve(nodes_.size());
  for (const auto& [node, entry] : nodes_) {
    if (node != kRootNode) out.emplace_back(node, entry.path);
  }
  return out;
}

std::size_t InodeTable::size() const {
  const std::lock_guard lock(mutex_);
  return nodes_.size();
}

}  // namespace heddle::worker
