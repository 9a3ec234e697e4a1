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

// A node table dropped a node; call without holding the table's lock (the trim takes malloc's
// arena locks, and allocations under the table lock would wait for it).
inline void node_forgotten() noexcept {
  static std::atomic<std::size_t> forgotten{0};
  if (forgotten.fetch_add(1, std::memory_order_relaxed) % kTrimEveryForgotten ==
      kTrimEveryForgotten - 1) {
    ::malloc_trim(0);
  }
}

}  // namespace heddle::worker
