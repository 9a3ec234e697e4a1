// The in-flight table (issue 16), in process: the uniques a worker has read and not answered
// are in the journal's memfd for a successor to read, whatever thread recorded them; a journal
// of an earlier version (nothing there) reads as nothing in flight; and the table's place does
// not move the header fields a predecessor of another version wrote.
#include "in_flight.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>
#include <variant>
#include <vector>

#include <gtest/gtest.h>

#include "heddle/unique_fd.h"
#include "node_journal.h"

namespace heddle::worker {
namespace {

UniqueFd new_memfd() {
  UniqueFd fd(::memfd_create("in-flight-test", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  EXPECT_TRUE(fd) << std::strerror(errno);
  return fd;
}

UniqueFd dup_of(int fd) { return UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

std::vector<std::uint64_t> sorted(std::vector<std::uint64_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

TEST(InFlight, WhatIsRecordedIsInTheMemfdUntilAnswered) {
  UniqueFd fd = new_memfd();
  const UniqueFd keep = dup_of(fd.get());
  JournalState state;
  state.init_request = "init-request";
  state.init_reply = "init-reply";
  NodeJournal journal(std::move(fd), state);
  InFlight table;
  table.attach(journal.in_flight_slots());
  table.add(2);
  table.add(4);
  table.add(6);
  table.remove(4);
  EXPECT_EQ(sorted(read_in_flight(keep.get())), (std::vector<std::uint64_t>{2, 6}));
  // The journal itself still reads back whole beside the table.
  auto read = NodeJournal::read(keep.get());
  ASSERT_TRUE(std::holds_alternative<JournalState>(read));
  EXPECT_EQ(std::get<JournalState>(read).init_request, "init-request");
  EXPECT_EQ(std::get<JournalState>(read).init_reply, "init-reply");
  // A successor's journal over the same memfd keeps them until it has dealt with them.
  NodeJournal successor(dup_of(keep.get()), std::get<JournalState>(read));
  EXPECT_EQ(sorted(read_in_flight(keep.get())), (std::vector<std::uint64_t>{2, 6}));
  InFlight mine;
  mine.attach(successor.in_flight_slots());
  mine.clear();
  EXPECT_TRUE(read_in_flight(keep.get()).empty());
  EXPECT_EQ(table.overflows(), 0u);
}

TEST(InFlight, AFullTableCountsWhatItCannotHoldAndKeepsTheRest) {
  std::vector<std::uint64_t> slots(kInFlightSlots, 0);
  InFlight table;
  table.attach(slots.data());
  for (std::uint64_t i = 1; i <= kInFlightSlots + 6; ++i) table.add(2 * i);
  EXPECT_EQ(table.overflows(), 6u);
  EXPECT_EQ(std::count(slots.begin(), slots.end(), 0u), 0);
  for (std::uint64_t i = 1; i <= kInFlightSlots + 6; ++i) table.remove(2 * i);
  EXPECT_EQ(std::count(slots.begin(), slots.end(), 0u), static_cast<long>(kInFlightSlots));
}

// As the loop's threads use it: each records and clears its own requests at once, and an
// answer may come from another thread than the one that read the request.
TEST(InFlight, ThreadsRecordAndClearConcurrently) {
  std::vector<std::uint64_t> slots(kInFlightSlots, 0);
  InFlight table;
  table.attach(slots.data());
  constexpr int kThreads = 8;
  constexpr std::uint64_t kEach = 20'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&table, t] {
      for (std::uint64_t i = 0; i < kEach; ++i) {
        const std::uint64_t unique = 2 * (static_cast<std::uint64_t>(t) * kEach + i + 1);
        table.add(unique);
        if (i % 2 == 1) {
          table.remove(unique);
          table.remove(unique - 2);  // the previous one, from its slot elsewhere
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(table.overflows(), 0u);
  for (std::size_t i = 0; i < kInFlightSlots; ++i) {
    EXPECT_EQ(std::atomic_ref<std::uint64_t>(slots[i]).load(), 0u) << "slot " << i;
  }
}

TEST(InFlight, AnEarlierVersionsJournalHasNothingInFlight) {
  // journal_image() writes the header fields only, as every version before the table did.
  const auto image = journal_image({}, "init-request", "init-reply");
  UniqueFd fd = new_memfd();
  ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(kJournalBytes)), 0);
  ASSERT_EQ(::pwrite(fd.get(), image.data(), image.size(), 0), static_cast<ssize_t>(image.size()));
  EXPECT_TRUE(read_in_flight(fd.get()).empty());
  // A never-written memfd (a first worker that died at once) neither.
  const UniqueFd empty = new_memfd();
  EXPECT_TRUE(read_in_flight(empty.get()).empty());
  // What add() never stores is not read back: zero and odd (interrupt) uniques.
  const std::uint64_t words[3] = {0, 7, 8};
  ASSERT_EQ(::pwrite(fd.get(), words, sizeof words, static_cast<off_t>(kInFlightOffset)),
            static_cast<ssize_t>(sizeof words));
  EXPECT_EQ(read_in_flight(fd.get()), (std::vector<std::uint64_t>{8}));
  // The header fields sit where earlier versions put them: the FUSE_INIT bytes still decode.
  auto read = NodeJournal::read(fd.get());
  ASSERT_TRUE(std::holds_alternative<JournalState>(read));
  EXPECT_EQ(std::get<JournalState>(read).init_reply, "init-reply");
}

TEST(InFlight, OnlyRequestsThatGetAReplyAreTracked) {
  EXPECT_TRUE(tracked_request(FUSE_READ, 2));
  EXPECT_TRUE(tracked_request(FUSE_LOOKUP, 4));
  EXPECT_FALSE(tracked_request(FUSE_FORGET, 6));
  EXPECT_FALSE(tracked_request(FUSE_BATCH_FORGET, 6));
  EXPECT_FALSE(tracked_request(FUSE_INTERRUPT, 9));
  EXPECT_FALSE(tracked_request(FUSE_READ, 9));  // an odd unique is an interrupt's
  EXPECT_FALSE(tracked_request(FUSE_INIT, 2));  // the journal records that exchange itself
  EXPECT_FALSE(tracked_request(FUSE_READ, 0));  // a notification
}

}  // namespace
}  // namespace heddle::worker
