// Blobs held whole by open files, shared per object id and charged to one Budget: two opens of
// one blob hold one copy (a delta blob too big for the cache is not read again for each open
// while another is open), and the bytes all open files keep alive, evicted from the cache or
// never in it, stay under the budget's limit.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "git/blob_cache.h"
#include "git/budget.h"
#include "git/oid.h"

namespace heddle::worker::git {

class HeldBlobs {
 public:
  explicit HeldBlobs(std::uint64_t limit) : budget_(limit) {}
  HeldBlobs(const HeldBlobs&) = delete;
  HeldBlobs& operator=(const HeldBlobs&) = delete;

  // The blob `key`, shared with the open files that already hold it, or else loaded with
  // `load` and charged to the budget for as long as `out` (or a copy) lives. 0, the load's
  // errno, or ENOMEM when the budget cannot take it.
  [[nodiscard]] int hold(const OidKey& key, std::uint64_t size,
                         const std::function<int(Blob&)>& load, Blob& out);

  [[nodiscard]] const Budget& budget() const noexcept { return budget_; }

 private:
  Budget budget_;
  std::mutex mutex_;
  std::unordered_map<OidKey, std::weak_ptr<const std::string>, OidKeyHash> live_;
  std::size_t since_sweep_ = 0;
};

}  // namespace heddle::worker::git
