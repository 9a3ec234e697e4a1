// Memory the kernel's forgets free goes back to the system in batches.
#pragma once

#include <malloc.h>

#include <atomic>
#include <cstddef>

namespace heddle::worker {

// A walk of 100,000 entries and its forget left a git worker at 28 MiB against 11 idle: glibc
// keeps freed chunks in its arenas (one per FUSE thread) and returns only the top of the main
// heap by itself. malloc_trim(0) gives their free pages back (16.8 MiB). It costs a pass over
// the arenas, so it runs once per kTrimEveryForgotten nodes: after large batches, never per
// request.
inline constexpr std::size_t kTrimEveryForgotten = 4096;

// Gives the free pages of every arena back.
inline void trim_heap() noexcept { ::malloc_trim(0); }

// A node table dropped a node; call without holding the table's lock (the trim takes malloc's
// arena locks, and allocations under the table lock would wait for it).
inline void node_forgotten() noexcept {
  static std::atomic<std::size_t> forgotten{0};
  if (forgotten.fetch_add(1, std::memory_order_relaxed) % kTrimEveryForgotten ==
      kTrimEveryForgotten - 1) {
    trim_heap();
  }
}

// A hash table keeps the bucket array of the largest size it had (8 bytes per entry it ever
// held: about 1 MiB per table after a walk of 100,000 entries) until it is rehashed. Shrunk
// once it holds fewer than an eighth of its buckets: each shrink is paid for by the erases
// before it.
// True when it shrank: the table lost most of what it held.
template <typename HashTable>
bool shrink_if_sparse(HashTable& table) noexcept {
  constexpr std::size_t kSlack = 8, kFloor = 1024;
  if (table.bucket_count() <= kFloor || table.size() * kSlack >= table.bucket_count()) {
    return false;
  }
  try {
    table.rehash(0);
  } catch (...) {  // no memory for the smaller array: keep the larger one
  }
  return true;
}

}  // namespace heddle::worker
