// The blob cache's eviction, step by step: which blobs stay under the byte cap, least recently
// used first out, across shards, and what a caller holding an evicted blob keeps.
#include "git/blob_cache.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <memory>
#include <sstream>
#include <string>

namespace {

using heddle::worker::git::Blob;
using heddle::worker::git::BlobCache;
using heddle::worker::git::OidKey;

// Blobs are named by a letter; the cache shards by the id's last byte.
OidKey key(char name, unsigned char shard) {
  OidKey k;
  k.bytes[0] = static_cast<unsigned char>(name);
  k.bytes.back() = shard;
  return k;
}

Blob blob(std::size_t size) { return std::make_shared<const std::string>(size, 'x'); }

struct EvictionCase {
  const char* name;
  std::uint64_t limit;
  // "+a4" caches 4 bytes as a (in shard 0), "+a4@3" in shard 3; "?a" looks a up.
  const char* steps;
  std::string cached;  // the names still cached afterwards
  std::uint64_t bytes;
};

TEST(BlobCache, EvictsLeastRecentlyUsedUnderTheCap) {
  const EvictionCase cases[] = {
      {"all fit", 12, "+a4 +b4 +c4", "abc", 12},
      {"the oldest goes first", 10, "+a4 +b4 +c4", "bc", 8},
      {"a hit makes a blob recent", 10, "+a4 +b4 ?a +c4", "ac", 8},
      {"as many go as it takes", 10, "+a3 +b3 +c3 +d9", "d", 9},
      {"exactly the cap stays", 8, "+a4 +b8", "b", 8},
      {"larger than the cap is never cached", 8, "+a4 +b9", "a", 4},
      {"the cap is global: another shard's blob goes", 10, "+a6@3 +b6@7", "b", 6},
      {"the inserting shard goes first", 10, "+a4@3 +b4@7 +c4@7", "ac", 8},
      {"a second insert of a key keeps the first copy", 10, "+a4 +a6", "a", 4},
  };
  for (const EvictionCase& c : cases) {
    BlobCache cache(c.limit);
    std::map<char, unsigned char> shards;
    std::istringstream steps(c.steps);
    for (std::string step; steps >> step;) {
      const char name = step[1];
      if (step[0] == '?') {
        (void)cache.find(key(name, shards[name]));
        continue;
      }
      const std::size_t at = step.find('@');
      shards[name] =
          static_cast<unsigned char>(at == std::string::npos ? 0 : std::stoi(step.substr(at + 1)));
      (void)cache.insert(key(name, shards[name]), blob(std::stoul(step.substr(2, at - 2))));
    }
    std::string cached;
    for (const auto& [name, shard] : shards) {
      if (cache.find(key(name, shard))) cached += name;
    }
    EXPECT_EQ(cached, c.cached) << c.name;
    EXPECT_EQ(cache.stats().bytes, c.bytes) << c.name;
    EXPECT_EQ(cache.stats().entries, c.cached.size()) << c.name;
  }
}

TEST(BlobCache, InsertReturnsWhatIsCachedAndCountsHitsAndMisses) {
  BlobCache cache(100);
  const Blob first = blob(4);
  EXPECT_EQ(cache.insert(key('a', 0), first), first);
  EXPECT_EQ(cache.insert(key('a', 0), blob(4)), first) << "concurrent misses share one copy";
  EXPECT_EQ(cache.insert(key('b', 0), nullptr), nullptr);
  EXPECT_EQ(cache.find(key('a', 0)), first);
  EXPECT_EQ(cache.find(key('b', 0)), nullptr);
  EXPECT_EQ(cache.find(key('c', 0)), nullptr);
  const BlobCache::Stats stats = cache.stats();
  EXPECT_EQ(stats.hits, 1u);
  EXPECT_EQ(stats.misses, 2u);
  EXPECT_EQ(stats.limit, 100u);
  EXPECT_EQ(stats.entries, 1u);
}

TEST(BlobCache, AnEvictedBlobStaysValidForItsHolder) {
  BlobCache cache(8);
  const Blob held = cache.insert(key('a', 0), blob(8));
  (void)cache.insert(key('b', 0), blob(8));
  EXPECT_EQ(cache.find(key('a', 0)), nullptr);
  ASSERT_NE(held, nullptr);
  EXPECT_EQ(*held, std::string(8, 'x'));
}

}  // namespace
