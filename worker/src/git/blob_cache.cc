#include "git/blob_cache.h"

#include <iterator>
#include <utility>

namespace heddle::worker::git {

Blob BlobCache::find(const OidKey& key) {
  Shard& shard = shards_[shard_of(key)];
  {
    const std::lock_guard lock(shard.mutex);
    if (const auto it = shard.index.find(key); it != shard.index.end()) {
      shard.lru.splice(shard.lru.begin(), shard.lru, it->second);
      hits_.fetch_add(1, std::memory_order_relaxed);
      return it->second->blob;
    }
  }
  misses_.fetch_add(1, std::memory_order_relaxed);
  return nullptr;
}

Blob BlobCache::insert(const OidKey& key, Blob blob) {
  if (!blob || blob->size() > limit_) return blob;
  const std::size_t home = shard_of(key);
  Shard& shard = shards_[home];
  {
    const std::lock_guard lock(shard.mutex);
    if (const auto it = shard.index.find(key); it != shard.index.end()) return it->second->blob;
    shard.lru.push_front(Entry{key, blob});
    try {
      shard.index.emplace(key, shard.lru.begin());
    } catch (...) {
      shard.lru.pop_front();
      return blob;  // not cached, still usable
    }
    bytes_.fetch_add(blob->size(), std::memory_order_relaxed);
    entries_.fetch_add(1, std::memory_order_relaxed);
  }
  evict(home, key);
  return blob;
}

void BlobCache::evict(std::size_t home, const OidKey& keep) noexcept {
  for (std::size_t i = 0; i < kShards && bytes_.load(std::memory_order_relaxed) > limit_; ++i) {
    Shard& shard = shards_[(home + i) % kShards];
    std::list<Entry> evicted;  // freed after the lock: freeing a big blob is not free
    {
      const std::lock_guard lock(shard.mutex);
      while (bytes_.load(std::memory_order_relaxed) > limit_ && !shard.lru.empty() &&
             !(shard.lru.back().key == keep)) {
        auto last = std::prev(shard.lru.end());
        shard.index.erase(last->key);
        bytes_.fetch_sub(last->blob->size(), std::memory_order_relaxed);
        entries_.fetch_sub(1, std::memory_order_relaxed);
        evicted.splice(evicted.begin(), shard.lru, last);
      }
    }
  }
}

BlobCache::Stats BlobCache::stats() const noexcept {
  Stats s;
  s.bytes = bytes_.load(std::memory_order_relaxed);
  s.limit = limit_;
  s.entries = entries_.load(std::memory_order_relaxed);
  s.hits = hits_.load(std::memory_order_relaxed);
  s.misses = misses_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace heddle::worker::git
