// When the kernel opens files and directories itself (FUSE no_open and no_opendir: the worker
// answered ENOSYS to the first OPEN / OPENDIR), no OPEN, FLUSH or RELEASE reaches the worker,
// and READ and READDIR come with file handle 0, naming only the node. What a handle held per
// open is then kept here per node: a few open files and directory listings, the least
// recently used dropped first. Only for backends where a handle kept for a node is as good as
// a fresh one (CachePolicy::open_in_kernel).
#pragma once

#include <atomic>
#include <cstddef>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "backend.h"

namespace heddle::worker {

// At most `capacity` values by node, least recently used evicted first. A value taken out
// stays valid for its holder after eviction (shared ownership).
template <typename T>
class NodeLru {
 public:
  explicit NodeLru(std::size_t capacity) : capacity_(capacity) {}

  [[nodiscard]] std::shared_ptr<T> find(NodeId node) {
    const std::lock_guard lock(mutex_);
    const auto it = index_.find(node);
    if (it == index_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second);
    return it->second->second;
  }

  // Keeps `value` for `node` (replacing what was kept); evicts beyond capacity.
  void put(NodeId node, std::shared_ptr<T> value) {
    std::shared_ptr<T> evicted;  // destroyed outside the lock
    const std::lock_guard lock(mutex_);
    if (const auto it = index_.find(node); it != index_.end()) {
      evicted = std::exchange(it->second->second, std::move(value));
      order_.splice(order_.begin(), order_, it->second);
      return;
    }
    order_.emplace_front(node, std::move(value));
    index_.emplace(node, order_.begin());
    if (order_.size() > capacity_) {
      evicted = std::move(order_.back().second);
      index_.erase(order_.back().first);
      order_.pop_back();
    }
  }

  void erase(NodeId node) {
    std::shared_ptr<T> erased;  // destroyed outside the lock
    const std::lock_guard lock(mutex_);
    const auto it = index_.find(node);
    if (it == index_.end()) return;
    erased = std::move(it->second->second);
    order_.erase(it->second);
    index_.erase(it);
  }

  [[nodiscard]] std::size_t size() const {
    const std::lock_guard lock(mutex_);
    return order_.size();
  }

 private:
  using Entry = std::pair<NodeId, std::shared_ptr<T>>;
  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::list<Entry> order_;  // most recently used first
  std::unordered_map<NodeId, typename std::list<Entry>::iterator> index_;
};

class KernelOpens {
 public:
  // Files kept open: fewer than a git mount's streamed handles (64), so that kept streams never
  // exhaust them; enough for the parallel sequential readers a build runs.
  static constexpr std::size_t kFiles = 32;
  static constexpr std::size_t kListings = 16;

  // Set once at INIT, before any other request.
  std::atomic<bool> files{false};
  std::atomic<bool> dirs{false};

  // The handle reads of `node` go through, opened (Backend::open_node) on first use.
  [[nodiscard]] int file(Backend& fs, NodeId node, std::shared_ptr<FileHandle>& out);
  // The handle kept for `node`, or null: never opens one.
  [[nodiscard]] std::shared_ptr<FileHandle> kept_file(NodeId node) { return files_.find(node); }
  // The listing of directory `node`. `fresh`: list it again (a listing read from its start),
  // else the one kept, so that offsets handed out stay meaningful across requests.
  [[nodiscard]] int listing(Backend& fs, NodeId node, bool fresh,
                            std::shared_ptr<const DirSnapshot>& out);
  // The kernel has the whole listing (it caches it): the worker need not keep it.
  void listing_done(NodeId node) { listings_.erase(node); }

 private:
  NodeLru<FileHandle> files_{kFiles};
  NodeLru<const DirSnapshot> listings_{kListings};
};

}  // namespace heddle::worker
