// An LRU of inflated blobs keyed by object id, capped in bytes. Entries are shared: an open
// file keeps its blob alive after eviction, so the cap bounds what the cache holds, not what
// open files hold.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "git/oid.h"

namespace heddle::worker::git {

using Blob = std::shared_ptr<const std::string>;

class BlobCache {
 public:
  struct Stats {
    std::uint64_t bytes = 0;
    std::uint64_t limit = 0;
    std::uint64_t entries = 0;
    std::uint64_t hits = 0;
    std::uint64_t misses = 0;
  };

  explicit BlobCache(std::uint64_t limit_bytes) : limit_(limit_bytes) {}
  BlobCache(const BlobCache&) = delete;
  BlobCache& operator=(const BlobCache&) = delete;

  [[nodiscard]] std::uint64_t limit() const noexcept { return limit_; }

  // The cached blob (counted as a hit, and made most recent), or null (a miss).
  [[nodiscard]] Blob find(const OidKey& key);
  // Caches `blob` (if it fits) and returns what is now cached for `key`: an entry another
  // thread inserted first wins, so that concurrent misses share one copy.
  Blob insert(const OidKey& key, Blob blob);

  [[nodiscard]] Stats stats() const noexcept;

 private:
  // Sharded by object id so that hits on different blobs do not contend; each shard's mutex
  // is held only for the map lookup and a list splice. Bytes are accounted globally so that
  // the cap applies to the whole cache (a blob may be almost as large as the cap).
  static constexpr std::size_t kShards = 16;

  struct Entry {
    OidKey key;
    Blob blob;
  };
  struct Shard {
    std::mutex mutex;
    std::list<Entry> lru;  // front = most recent
    std::unordered_map<OidKey, std::list<Entry>::iterator, OidKeyHash> index;
  };

  [[nodiscard]] static std::size_t shard_of(const OidKey& key) noexcept {
    return key.bytes[GIT_OID_RAWSZ - 1] % kShards;
  }
  // Evicts least recent entries, starting with shard `home`, until the cache fits its cap.
  // Never evicts `keep` (just inserted). Takes one shard lock at a time.
  void evict(std::size_t home, const OidKey& keep) noexcept;

  const std::uint64_t limit_;
  std::array<Shard, kShards> shards_;
  std::atomic<std::uint64_t> bytes_{0};
  std::atomic<std::uint64_t> entries_{0};
  std::atomic<std::uint64_t> hits_{0};
  std::atomic<std::uint64_t> misses_{0};
};

}  // namespace heddle::worker::git
