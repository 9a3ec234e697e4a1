// The handles the kernel holds (fh values), as a table: an fh is a key the worker looks up and
// checks, never a pointer it dereferences, so that a forged or stale value (a journal a dead
// worker wrote, issue 16) can only miss. Values keep counting across workers of a mount: a
// successor restores its predecessor's handles under their own numbers.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include "backend.h"

namespace heddle::worker {

// An opened directory's listing, read at its first READDIR rather than at OPENDIR: while the
// kernel keeps the listing (cache_readdir), a warm opendir reads nothing (the overlay's merged
// listing took a sixth of the time of a warm walk of an empty overlay).
class DirListing {
 public:
  explicit DirListing(NodeId node) : node_(node) {}
  // The listing, read now if not yet (then the same for every later READDIR). 0 or an errno.
  [[nodiscard]] int get(Backend& fs, const DirSnapshot*& out) {
    const std::lock_guard lock(mutex_);
    if (!snapshot_) {
      auto snapshot = std::make_unique<DirSnapshot>();
      if (const int err = fs.read_dir(node_, *snapshot); err != 0) return err;
      snapshot_ = std::move(snapshot);
    }
    out = snapshot_.get();
    return 0;
  }

 private:
  const NodeId node_;
  std::mutex mutex_;
  std::unique_ptr<const DirSnapshot> snapshot_;
};

// An open file or an opened directory (exactly one is set).
struct OpenHandle {
  std::unique_ptr<FileHandle> file;
  std::unique_ptr<DirListing> dir;
};

class OpenHandles {
 public:
  // Stores `handle` under a new fh.
  [[nodiscard]] std::uint64_t add(std::shared_ptr<OpenHandle> handle) {
    const std::unique_lock lock(mutex_);
    const std::uint64_t fh = next_++;
    handles_.emplace(fh, std::move(handle));
    return fh;
  }
  // Stores `handle` under `fh` (a restored one); later fh values are above it.
  void put(std::uint64_t fh, std::shared_ptr<OpenHandle> handle) {
    const std::unique_lock lock(mutex_);
    handles_[fh] = std::move(handle);
    if (fh >= next_) next_ = fh + 1;
  }
  // Keeps fh values below `fh` unused from now on (a predecessor's, even those not restored).
  void reserve_below(std::uint64_t fh) {
    const std::unique_lock lock(mutex_);
    if (fh > next_) next_ = fh;
  }
  [[nodiscard]] std::shared_ptr<OpenHandle> find(std::uint64_t fh) const {
    const std::shared_lock lock(mutex_);
    const auto it = handles_.find(fh);
    return it == handles_.end() ? nullptr : it->second;
  }
  [[nodiscard]] std::shared_ptr<OpenHandle> take(std::uint64_t fh) {
    const std::unique_lock lock(mutex_);
    const auto it = handles_.find(fh);
    if (it == handles_.end()) return nullptr;
    auto out = std::move(it->second);
    handles_.erase(it);
    return out;
  }
  [[nodiscard]] std::size_t size() const {
    const std::shared_lock lock(mutex_);
    return handles_.size();
  }

 private:
  mutable std::shared_mutex mutex_;
  std::unordered_map<std::uint64_t, std::shared_ptr<OpenHandle>> handles_;
  std::uint64_t next_ = 1;
};

}  // namespace heddle::worker
