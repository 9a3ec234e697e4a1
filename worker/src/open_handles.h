// The handles the kernel holds (fh values), as a table: an fh is a key the worker looks up and
// checks, never a pointer it dereferences, so that a forged or stale value (a journal a dead
// worker wrote, issue 16) can only miss. Values keep counting across workers of a mount: a
// successor restores its predecessor's handles under their own numbers.
#pragma once

#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <unordered_map>

#include "backend.h"

namespace heddle::worker {

// An open file or an opened directory's snapshot (exactly one is set).
struct OpenHandle {
  std::unique_ptr<FileHandle> file;
  std::unique_ptr<DirSnapshot> dir;
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
