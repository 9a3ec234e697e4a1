#include "in_flight.h"

#include <linux/fuse.h>
#include <unistd.h>

#include <cstring>

#include <spdlog/spdlog.h>

#include "node_journal.h"

namespace heddle::worker {
namespace {

static_assert(kInFlightOffset + kInFlightSlots * sizeof(std::uint64_t) == kJournalHeaderBytes);

std::atomic_ref<std::uint64_t> slot(std::uint64_t* slots, std::size_t i) noexcept {
  return std::atomic_ref<std::uint64_t>(slots[i]);
}

// Each loop thread starts looking for a free slot at its own place, and remembers where it
// put its request: its reply (on the same thread, for every synchronous handler) then finds
// the slot at once.
std::atomic<std::size_t> next_home{0};
thread_local std::size_t home = next_home.fetch_add(1) % kInFlightSlots;
thread_local std::size_t last = kInFlightSlots;

}  // namespace

bool tracked_request(std::uint32_t opcode, std::uint64_t unique) noexcept {
  constexpr std::uint32_t kNotifyReply = 41;  // FUSE_NOTIFY_REPLY
  if (unique == 0 || (unique & 1) != 0) return false;
  return opcode != FUSE_FORGET && opcode != FUSE_BATCH_FORGET && opcode != FUSE_INTERRUPT &&
         opcode != kNotifyReply && opcode != FUSE_INIT;
}

void InFlight::add(std::uint64_t unique) noexcept {
  if (slots_ == nullptr) return;
  for (std::size_t n = 0; n < kInFlightSlots; ++n) {
    const std::size_t i = (home + n) % kInFlightSlots;
    std::uint64_t free = 0;
    // A plain load first: a taken slot costs no locked instruction.
    if (slot(slots_, i).load(std::memory_order_relaxed) == 0 &&
        slot(slots_, i).compare_exchange_strong(free, unique, std::memory_order_release,
                                                std::memory_order_relaxed)) {
      last = i;
      return;
    }
  }
  if (overflows_.fetch_add(1, std::memory_order_relaxed) == 0) {
    spdlog::warn("in-flight table full: a request goes unrecorded (a successor without "
                 "FUSE_NOTIFY_RESEND could not fail it)");
  }
}

void InFlight::remove(std::uint64_t unique) noexcept {
  if (slots_ == nullptr) return;
  if (last < kInFlightSlots && slot(slots_, last).load(std::memory_order_relaxed) == unique) {
    slot(slots_, last).store(0, std::memory_order_release);
    last = kInFlightSlots;
    return;
  }
  for (std::size_t i = 0; i < kInFlightSlots; ++i) {
    // Only the thread answering this request clears its unique: a load finds it, a store frees it.
    if (slot(slots_, i).load(std::memory_order_relaxed) == unique) {
      slot(slots_, i).store(0, std::memory_order_release);
      return;
    }
  }
}

void InFlight::clear() noexcept {
  if (slots_ == nullptr) return;
  for (std::size_t i = 0; i < kInFlightSlots; ++i) slot(slots_, i).store(0);
}

std::vector<std::uint64_t> read_in_flight(int memfd) {
  std::uint64_t slots[kInFlightSlots] = {};
  const ssize_t n = ::pread(memfd, slots, sizeof slots, static_cast<off_t>(kInFlightOffset));
  std::vector<std::uint64_t> out;
  if (n != static_cast<ssize_t>(sizeof slots)) return out;
  for (const std::uint64_t unique : slots) {
    // What add() could have stored: an even, non-zero unique.
    if (unique != 0 && (unique & 1) == 0) out.push_back(unique);
  }
  return out;
}

}  // namespace heddle::worker
