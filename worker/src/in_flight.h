// Requests a worker has read from /dev/fuse and not yet answered (issue 16), kept in the node
// journal's memfd so that they outlive a SIGKILL. A successor on a kernel without
// FUSE_NOTIFY_RESEND (before Linux 6.9) cannot have them sent again: it answers each with an
// error instead, so that no process waits on them until unmount.
//
// A fixed table of kInFlightSlots 8-byte slots at the end of the journal's header page, lock
// free: a request's `unique` is stored in a free slot once read() has returned it, and the slot
// is zeroed once the reply carrying that unique has been written. Zero is "free": a journal of
// an earlier version, which never wrote there, has nothing in flight. Loop threads are at most
// 32 and each holds one request at a time, so 64 slots do not fill; if they ever did, the
// request goes unrecorded (counted in overflows()) and a successor without RESEND leaves it
// waiting, as before this table existed.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <vector>

namespace heddle::worker {

inline constexpr std::size_t kInFlightSlots = 64;

// Whether a request of `opcode` with `unique` gets a reply that libfuse writes: FORGET,
// BATCH_FORGET and NOTIFY_REPLY get none, an INTERRUPT (odd unique) is not in the kernel's
// processing queue, and FUSE_INIT is the journal's own business (its exchange is recorded).
[[nodiscard]] bool tracked_request(std::uint32_t opcode, std::uint64_t unique) noexcept;

class InFlight {
 public:
  // `slots`: kInFlightSlots words in a shared mapping, or null (nothing is recorded). Before
  // any request is read.
  void attach(std::uint64_t* slots) noexcept { slots_ = slots; }
  [[nodiscard]] bool attached() const noexcept { return slots_ != nullptr; }
  // After read() returned the request; before it is processed.
  void add(std::uint64_t unique) noexcept;
  // After the reply with this unique was written.
  void remove(std::uint64_t unique) noexcept;
  // Zeroes every slot (a successor, once it has dealt with its predecessor's).
  void clear() noexcept;
  [[nodiscard]] std::uint64_t overflows() const noexcept { return overflows_.load(); }

 private:
  std::uint64_t* slots_ = nullptr;
  std::atomic<std::uint64_t> overflows_{0};
};

// The uniques a predecessor left in `memfd`'s table (none for a memfd too short to hold it).
// Not trusted: a value names at most a request the predecessor could have answered itself.
[[nodiscard]] std::vector<std::uint64_t> read_in_flight(int memfd);

}  // namespace heddle::worker
