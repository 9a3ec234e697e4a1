// The node journal's codec (issue 16), in process: what a worker writes reads back as the same
// state, through compaction and a torn last record; and what a hostile predecessor may have
// written instead is refused by name, valid and invalid input side by side.
#include "node_journal.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include <gtest/gtest.h>

#include "heddle/unique_fd.h"

namespace heddle::worker {
namespace {

using Record = JournalRecord;

UniqueFd new_memfd() {
  UniqueFd fd(::memfd_create("journal-test", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  EXPECT_TRUE(fd) << std::strerror(errno);
  return fd;
}

UniqueFd dup_of(int fd) { return UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

// A memfd holding `image`, sized as a journal is.
UniqueFd memfd_with(const std::vector<std::byte>& image) {
  UniqueFd fd = new_memfd();
  EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(kJournalBytes)), 0);
  EXPECT_EQ(::pwrite(fd.get(), image.data(), image.size(), 0),
            static_cast<ssize_t>(image.size()));
  return fd;
}

JournalState read_ok(int fd) {
  auto read = NodeJournal::read(fd);
  if (const auto* error = std::get_if<JournalError>(&read)) {
    ADD_FAILURE() << "refused: " << error->reason;
    return {};
  }
  return std::get<JournalState>(read);
}

Record lookup(NodeId node, NodeId parent, std::string name, std::uint64_t count = 1) {
  return Record{Record::kLookup, S_IFREG, node, parent, 1000 + node, count, std::move(name)};
}

TEST(NodeJournal, WhatIsWrittenReadsBack) {
  UniqueFd fd = new_memfd();
  const int raw = fd.get();
  UniqueFd keep = dup_of(raw);
  NodeJournal journal(std::move(fd), JournalState{});
  journal.set_init("init-request", "init-reply");
  journal.looked_up(2, 1, "dir", 502, S_IFDIR);
  journal.looked_up(3, 2, "a.txt", 503, S_IFREG, 3);
  journal.looked_up(4, 2, "b.txt", 504, S_IFREG);
  journal.forgotten(3, 1);
  journal.renamed(2, "b.txt", 1, "moved.txt", false);
  journal.looked_up(5, 1, "gone", 505, S_IFREG);
  journal.unlinked(1, "gone");
  journal.opened(7, 3, O_RDWR, false);
  journal.opened(8, 2, O_RDONLY, true);
  journal.opened(9, 4, O_RDONLY, false);
  journal.released(9);

  const JournalState state = read_ok(keep.get());
  EXPECT_EQ(state, journal.state());
  EXPECT_EQ(state.init_request, "init-request");
  EXPECT_EQ(state.nodes.at(3).nlookup, 2u);
  EXPECT_EQ(state.nodes.at(4).parent, 1u);
  EXPECT_EQ(state.nodes.at(4).name, "moved.txt");
  EXPECT_EQ(state.nodes.at(5).parent, 0u);  // unlinked: cannot be found again
  EXPECT_EQ(state.handles.size(), 2u);
  EXPECT_EQ(state.handles.at(7), (JournalHandle{3, O_RDWR, false}));
}

// A walk and its forget: the log holds every lookup and forget, the state almost nothing. The
// journal compacts once the log is mostly dead, and the memfd's pages (the worker's RSS, as
// shmem) go back to the system instead of staying until the region fills.
TEST(NodeJournal, AMostlyForgottenLogIsCompactedAndItsPagesGivenBack) {
  UniqueFd fd = new_memfd();
  const UniqueFd keep = dup_of(fd.get());
  NodeJournal journal(std::move(fd), JournalState{});
  constexpr NodeId kNodes = 100'000;
  for (NodeId node = 2; node < 2 + kNodes; ++node) {
    journal.looked_up(node, 1, "f" + std::to_string(node), node, S_IFREG);
  }
  struct stat st {};
  ASSERT_EQ(::fstat(keep.get(), &st), 0);
  const auto walked = static_cast<std::uint64_t>(st.st_blocks) * 512;
  EXPECT_GT(walked, 4'000'000u) << "100,000 lookups hold about 5 MB of log";
  for (NodeId node = 2; node < 2 + kNodes - 10; ++node) journal.forgotten(node, 1);
  ASSERT_TRUE(journal.healthy());
  ASSERT_EQ(::fstat(keep.get(), &st), 0);
  const auto forgotten = static_cast<std::uint64_t>(st.st_blocks) * 512;
  EXPECT_LT(forgotten, 1'100'000u) << "after the forget the memfd still holds " << forgotten;
  const JournalState state = read_ok(keep.get());
  EXPECT_EQ(state, journal.state());
  EXPECT_EQ(state.nodes.size(), 10u);
}

// The name index a rename needs is built at the first rename: where two live nodes carry the
// same name (the kernel still holds the older), the name means the newer one.
TEST(NodeJournal, ARenameMovesTheNodeTheNameNowMeans) {
  UniqueFd fd = new_memfd();
  NodeJournal journal(std::move(fd), JournalState{});
  journal.looked_up(2, 1, "a.txt", 502, S_IFREG);
  journal.unlinked(1, "a.txt");  // builds the index; node 2 has no name now
  journal.looked_up(3, 1, "b.txt", 503, S_IFREG);
  journal.looked_up(4, 1, "b.txt", 504, S_IFREG);  // b.txt replaced, node 3 still held
  journal.renamed(1, "b.txt", 1, "c.txt", false);
  const JournalState state = journal.state();
  EXPECT_EQ(state.nodes.at(2).parent, 0u);
  EXPECT_EQ(state.nodes.at(4).name, "c.txt");
  EXPECT_EQ(state.nodes.at(3).name, "b.txt");

  UniqueFd lazy_fd = new_memfd();
  NodeJournal lazy(std::move(lazy_fd), JournalState{});
  lazy.looked_up(3, 1, "b.txt", 503, S_IFREG);
  lazy.looked_up(4, 1, "b.txt", 504, S_IFREG);
  lazy.renamed(1, "b.txt", 1, "c.txt", false);  // the first rename builds the index
  EXPECT_EQ(lazy.state().nodes.at(4).name, "c.txt");
  EXPECT_EQ(lazy.state().nodes.at(3).name, "b.txt");
}

TEST(NodeJournal, CompactionKeepsTheStateAndASuccessorStartsFromIt) {
  UniqueFd fd = new_memfd();
  UniqueFd keep = dup_of(fd.get());
  NodeJournal journal(std::move(fd), JournalState{});
  // Enough records to fill a region twice over (long names: fewer calls); few live nodes.
  const std::string long_name(240, 'n');
  const std::size_t rounds = 2 * kJournalRegionBytes / 280;
  for (std::size_t i = 0; i < rounds; ++i) {
    const NodeId node = 2 + i % 64;
    journal.looked_up(node, 1, long_name + std::to_string(node), node, S_IFREG);
    if (node % 2 == 1) journal.forgotten(node, 1);  // odd nodes come and go
  }
  ASSERT_TRUE(journal.healthy());
  const JournalState state = read_ok(keep.get());
  EXPECT_EQ(state, journal.state());
  EXPECT_EQ(state.nodes.size(), 32u);

  // A successor formats the same memfd from what it restored; its predecessor's log is gone.
  JournalState restored;
  restored.nodes[2] = state.nodes.at(2);
  restored.init_request = "r";
  restored.next_node = state.next_node;  // 66: the high-water mark stays
  restored.next_fh = state.next_fh;
  NodeJournal successor(dup_of(keep.get()), restored);
  EXPECT_EQ(read_ok(keep.get()), restored);
  EXPECT_EQ(read_ok(keep.get()).next_node, 66u);
}

TEST(NodeJournal, ARecordNotYetCommittedIsLeftOut) {
  auto image = journal_image({lookup(2, 1, "a")});
  // A second record written past the committed length: a worker killed before committing it.
  const auto torn = journal_image({lookup(2, 1, "a"), lookup(3, 1, "b")});
  image.resize(torn.size());
  std::memcpy(image.data() + kJournalHeaderBytes, torn.data() + kJournalHeaderBytes,
              torn.size() - kJournalHeaderBytes);
  const auto decoded = decode_journal(image);
  ASSERT_TRUE(std::holds_alternative<JournalState>(decoded));
  EXPECT_EQ(std::get<JournalState>(decoded).nodes.size(), 1u);
}

TEST(NodeJournal, AnEmptyMemfdIsAFirstWorkersJournal) {
  const UniqueFd fd = new_memfd();
  EXPECT_EQ(read_ok(fd.get()), JournalState{});
}

// Each case: records a hostile worker could have left, and what the refusal says.
TEST(NodeJournal, HostileRecordsAreRefusedByName) {
  struct Case {
    std::vector<Record> records;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{lookup(2, 1, "..")}, "not one path component"},
      {{lookup(2, 1, ".")}, "not one path component"},
      {{lookup(2, 1, "")}, "not one path component"},
      {{lookup(2, 1, "/etc/passwd")}, "not one path component"},
      {{lookup(2, 1, "a/../../b")}, "not one path component"},
      {{lookup(2, 1, std::string("a\0b", 3))}, "not one path component"},
      {{lookup(2, 1, std::string(256, 'x'))}, "longer than the region"},
      {{lookup(0, 1, "a")}, "node id 0 out of range"},
      {{lookup(1, 1, "a")}, "node id 1 out of range"},
      {{lookup(kMaxJournalId, 1, "a")}, "out of range"},
      {{lookup(~NodeId{0}, 1, "a")}, "out of range"},
      {{lookup(2, 0, "a")}, "bad parent"},
      {{lookup(2, 2, "a")}, "bad parent"},
      {{lookup(2, 1, "a", 0)}, "lookup count out of range"},
      {{lookup(2, 1, "a", kMaxJournalLookups + 1)}, "lookup count out of range"},
      {{lookup(2, 1, "a", kMaxJournalLookups), lookup(2, 1, "a", 1)}, "lookup count out of range"},
      {{Record{Record::kLookup, 0xdead, 2, 1, 2, 1, "a"}}, "bad file type"},
      {{lookup(2, 1, "a"), Record{Record::kLookup, S_IFDIR, 2, 1, 1002, 1, "a"}},
       "identity changed"},
      {{lookup(2, 1, "a"), Record{Record::kName, 0, 2, 1, 0, 0, ".."}}, "bad name"},
      {{lookup(2, 1, "a"), Record{Record::kName, 0, 2, 0, 0, 0, "x"}}, "without a parent"},
      {{Record{Record::kOpen, 0, 0, 1, 0, 0, ""}}, "fh out of range"},
      {{Record{Record::kOpen, 0, 5, 99, 0, 0, ""}}, "unknown node"},
      {{Record{Record::kOpen, 0, 5, 1, 2, 0, ""}}, "malformed open"},
      {{Record{Record::kRelease, 0, kMaxJournalId, 0, 0, 0, ""}}, "fh out of range"},
      {{Record{77, 0, 2, 1, 0, 0, ""}}, "unknown record type 77"},
  };
  for (const Case& c : cases) {
    const auto decoded = decode_journal(journal_image(c.records, "init", "reply"));
    const auto* error = std::get_if<JournalError>(&decoded);
    ASSERT_NE(error, nullptr) << "accepted a journal that should say " << c.says;
    EXPECT_NE(error->reason.find(c.says), std::string::npos) << error->reason;
    // The header was sound: a successor may still take the connection over.
    EXPECT_EQ(error->header.init_request, "init");
  }
}

TEST(NodeJournal, ValidRecordsBesideTheHostileOnesAreAccepted) {
  const auto decoded = decode_journal(journal_image({
      lookup(2, 1, "dir"),
      lookup(3, 2, "...", 5),             // a name of three dots is a name
      lookup(4, 99, "orphan"),            // a parent the journal lacks: stale at rebuild, not bad
      Record{Record::kForget, 0, 77, 0, 0, 9, ""},  // an unknown node: nothing to do
      Record{Record::kForget, 0, 3, 0, 0, ~std::uint64_t{0}, ""},  // more than it has: gone
      Record{Record::kOpen, O_RDWR, 5, 2, 1, 0, ""},
      Record{Record::kRelease, 0, 6, 0, 0, 0, ""},
  }));
  ASSERT_TRUE(std::holds_alternative<JournalState>(decoded))
      << std::get<JournalError>(decoded).reason;
  const auto& state = std::get<JournalState>(decoded);
  EXPECT_EQ(state.nodes.size(), 2u);
  EXPECT_TRUE(state.handles.at(5).dir);
}

TEST(NodeJournal, BrokenHeadersAreRefused) {
  auto valid = journal_image({lookup(2, 1, "a")}, "init");
  struct Case {
    std::size_t offset;  // a u64 in the header
    std::uint64_t value;
    std::string says;
  };
  const std::vector<Case> cases = {
      {0, 0x4141414141414141, "not a journal"},
      {8, 2, "another version"},
      {16, 1 << 20, "another version"},                  // region size
      {24, 2, "no active region"},                       // active
      {24, 1, "too short"},                              // active region 1, past the image
      {32, kJournalRegionBytes + 8, "longer than its room"},  // used[0]
      {32, 96, "too short"},                             // committed past the image's end
      {48, std::uint64_t{kMaxInitBytes + 1}, "FUSE_INIT bytes"},
      // The high-water marks (next node id, next fh) after the FUSE_INIT bytes.
      {1080, 0, "high-water marks out of range"},
      {1080, kMaxJournalId + 1, "high-water marks out of range"},
      {1088, 0, "high-water marks out of range"},
      {1080, 2, "node id above the high-water mark"},  // the log's node 2 is not below it
  };
  for (const Case& c : cases) {
    auto image = valid;
    std::memcpy(image.data() + c.offset, &c.value, sizeof c.value);
    const auto decoded = decode_journal(image);
    const auto* error = std::get_if<JournalError>(&decoded);
    ASSERT_NE(error, nullptr) << "offset " << c.offset;
    EXPECT_NE(error->reason.find(c.says), std::string::npos) << error->reason;
  }
  EXPECT_TRUE(std::holds_alternative<JournalState>(decode_journal(valid)));
  EXPECT_TRUE(std::holds_alternative<JournalError>(decode_journal({})));
}

TEST(NodeJournal, RandomBytesNeverCrashTheDecoder) {
  std::mt19937_64 random(16);
  for (int round = 0; round < 2000; ++round) {
    // A sound header over random records, and random bytes over everything.
    auto image = journal_image({});
    const std::size_t bytes = 8 * (random() % 128);
    image.resize(kJournalHeaderBytes + bytes);
    for (std::size_t i = kJournalHeaderBytes; i < image.size(); ++i) {
      image[i] = static_cast<std::byte>(random());
    }
    const std::uint64_t used = bytes;
    std::memcpy(image.data() + 32, &used, sizeof used);
    static_cast<void>(decode_journal(image));
    if (round % 4 == 0) {
      for (std::size_t i = 0; i < kJournalHeaderBytes; ++i) {
        image[i] = static_cast<std::byte>(random());
      }
      static_cast<void>(decode_journal(image));
    }
  }
}

TEST(NodeJournal, AMemfdOfAnotherSizeOrSealedIsRefused) {
  UniqueFd small = new_memfd();
  ASSERT_EQ(::ftruncate(small.get(), 4096), 0);
  const auto read = NodeJournal::read(small.get());
  ASSERT_TRUE(std::holds_alternative<JournalError>(read));
  EXPECT_NE(std::get<JournalError>(read).reason.find("wrong size"), std::string::npos);

  // Sized, but not as a journal is: refused, naming both sizes (and never resized).
  for (const bool seal : {false, true}) {
    UniqueFd wrong = new_memfd();
    ASSERT_EQ(::ftruncate(wrong.get(), 4096), 0);
    if (seal) {
      ASSERT_EQ(::fcntl(wrong.get(), F_ADD_SEALS, ipc::kJournalSeals), 0);
    }
    const int raw = wrong.get();
    const UniqueFd keep = dup_of(raw);
    try {
      NodeJournal journal(std::move(wrong), JournalState{});
      ADD_FAILURE() << "a 4096-byte journal was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), EINVAL);
      EXPECT_NE(std::string(e.what()).find("4096 bytes, not " + std::to_string(kJournalBytes)),
                std::string::npos) << e.what();
    }
    struct stat st {};
    ASSERT_EQ(::fstat(keep.get(), &st), 0);
    EXPECT_EQ(st.st_size, 4096);
  }

  UniqueFd sealed = memfd_with(journal_image({}));
  ASSERT_EQ(::fcntl(sealed.get(), F_ADD_SEALS, F_SEAL_WRITE), 0);
  EXPECT_THROW(NodeJournal(std::move(sealed), JournalState{}), Error);
}

// What the supervisor hands over: sized and sealed against resizes. The worker writes it
// without resizing, and a successor reads it back.
TEST(NodeJournal, APresizedSealedMemfdIsWrittenInPlace) {
  UniqueFd fd = new_memfd();
  ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(kJournalBytes)), 0);
  ASSERT_EQ(::fcntl(fd.get(), F_ADD_SEALS, ipc::kJournalSeals), 0);
  const UniqueFd keep = dup_of(fd.get());
  {
    NodeJournal journal(std::move(fd), JournalState{});
    journal.looked_up(2, 1, "a", 502, S_IFREG, 2);
    ASSERT_TRUE(journal.healthy());
  }
  EXPECT_EQ(read_ok(keep.get()).nodes.at(2).nlookup, 2u);
  NodeJournal successor(dup_of(keep.get()), read_ok(keep.get()));
  EXPECT_EQ(successor.node_count(), 1u);
}

TEST(NodeJournal, ASuccessorReadsWhatAnImageHolds) {
  const UniqueFd fd = memfd_with(journal_image({lookup(2, 1, "a", 4)}, "req", "rep"));
  const JournalState state = read_ok(fd.get());
  EXPECT_EQ(state.nodes.at(2).nlookup, 4u);
  EXPECT_EQ(state.init_reply, "rep");
}

}  // namespace
}  // namespace heddle::worker
