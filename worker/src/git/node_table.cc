#include "git/node_table.h"

#include <mutex>
#include <utility>

namespace heddle::worker::git {

ino_t path_ino(std::string_view path) noexcept {
  if (path.empty()) return kRootNode;
  // FNV-1a, then a splitmix64 finaliser to spread FNV's weak high bits.
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (const char c : path) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  if (h <= kRootNode) h += 2;  // 0 is no inode; 1 is the root's
  return static_cast<ino_t>(h);
}

std::string child_path(std::string_view parent, std::string_view name) {
  std::string out;
  out.reserve(parent.size() + 1 + name.size());
  out.append(parent);
  if (!parent.empty()) out.push_back('/');
  out.append(name);
  return out;
}

std::string_view parent_path(std::string_view path) noexcept {
  const auto slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string_view{} : path.substr(0, slash);
}

NodeTable::NodeTable(NodeInfo root) {
  root.path.clear();
  root.ino = kRootNode;
  auto entry = std::make_unique<Entry>();
  entry->info = std::make_shared<const NodeInfo>(std::move(root));
  entry->nlookup = 1;
  by_path_.emplace(std::string_view(entry->info->path), kRootNode);
  by_id_.emplace(kRootNode, std::move(entry));
}

std::shared_ptr<const NodeInfo> NodeTable::find(NodeId node) const {
  const std::shared_lock lock(mutex_);
  const auto it = by_id_.find(node);
  return it == by_id_.end() ? nullptr : it->second->info;
}

NodeId NodeTable::acquire_known(std::string_view path, std::shared_ptr<const NodeInfo>& out) {
  const std::shared_lock lock(mutex_);
  const auto it = by_path_.find(path);
  if (it == by_path_.end()) return 0;
  const auto& entry = *by_id_.at(it->second);
  entry.nlookup.fetch_add(1, std::memory_order_relaxed);
  out = entry.info;
  return it->second;
}

NodeId NodeTable::acquire(NodeInfo info, std::shared_ptr<const NodeInfo>& out) {
  if (const NodeId known = acquire_known(info.path, out); known != 0) return known;
  // Built before taking the exclusive lock: allocation is the slow part.
  info.ino = path_ino(info.path);
  auto entry = std::make_unique<Entry>();
  entry->info = std::make_shared<const NodeInfo>(std::move(info));
  entry->nlookup = 1;

  const std::unique_lock lock(mutex_);
  if (const auto it = by_path_.find(entry->info->path); it != by_path_.end()) {
    // Another thread created it meanwhile.
    const auto& existing = *by_id_.at(it->second);
    existing.nlookup.fetch_add(1, std::memory_order_relaxed);
    out = existing.info;
    return it->second;
  }
  const NodeId id = next_id_++;
  out = entry->info;
  by_id_.emplace(id, std::move(entry));
  try {
    by_path_.emplace(std::string_view(out->path), id);
  } catch (...) {
    by_id_.erase(id);
    throw;
  }
  return id;
}

void NodeTable::forget(NodeId node, std::uint64_t nlookup) noexcept {
  if (node == kRootNode) return;
  const std::unique_lock lock(mutex_);
  const auto it = by_id_.find(node);
  if (it == by_id_.end()) return;
  auto& count = it->second->nlookup;
  const std::uint64_t now = count.load(std::memory_order_relaxed);
  if (nlookup < now) {
    count.store(now - nlookup, std::memory_order_relaxed);
    return;
  }
  by_path_.erase(std::string_view(it->second->info->path));
  by_id_.erase(it);
}

std::size_t NodeTable::size() const {
  const std::shared_lock lock(mutex_);
  return by_id_.size();
}

}  // namespace heddle::worker::git
