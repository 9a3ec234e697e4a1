// The node journal (issue 16): what the kernel holds of this mount (node ids with their lookup
// counts, open file handles, the negotiated FUSE_INIT), kept in a memfd the supervisor owns and
// passes to every worker of the mount, so that a worker killed at any instant leaves its
// successor everything it needs to serve the same connection.
//
// A node is recorded as (parent node, name), not as a path: a rename of a directory then
// changes one record, not one per node below it, and a path with "..", an absolute path or an
// empty component cannot even be written down. The successor resolves nodes from the root
// down and checks each against the inode number and file type the kernel was given.
//
// Layout of the memfd (native byte order: the successor runs on the same machine):
//
//   [0, 4096)                    Header: magic, version, sizes, the active region, each
//                                region's committed length, the FUSE_INIT request and reply;
//                                its last 512 bytes: the requests in flight (in_flight.h)
//   [4096, 4096 + R)             region 0  } an append log of Records; one region is active,
//   [4096 + R, 4096 + 2R)        region 1  } the other receives the compacted state
//
// A record is written, then the region's committed length is advanced past it (a release
// store): a worker killed mid-record leaves that record out. When the active region is full,
// the state is written whole into the other region, whose length is then set, and only then
// is it made active: a kill at any point leaves one complete region. The journal is written
// before each reply that gives the kernel a reference or a handle, and updated after forgets
// and releases: the successor may count a reference too many (a leak until unmount), never one
// too few.
//
// A successor never trusts it (the dead worker may have been hostile): decode_journal() copies
// what it reads, checks every record against the limits below, and refuses the whole journal
// at the first bad one; the worker then starts empty and every node the kernel names is stale.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "backend.h"
#include "heddle/ipc/journal_size.h"
#include "heddle/unique_fd.h"

namespace heddle::worker {

// What a successor rebuilds. The root (node 1) is implicit.
struct JournalNode {
  NodeId parent = 0;  // 0: the node has no name any more (unlinked); it cannot be found again
  std::string name;
  std::uint64_t nlookup = 0;
  std::uint64_t ino = 0;  // st_ino as the kernel was given it
  std::uint32_t type = 0;  // S_IFMT bits
  friend bool operator==(const JournalNode&, const JournalNode&) = default;
};

struct JournalHandle {
  NodeId node = 0;
  std::int32_t flags = 0;  // open(2) flags, as the kernel passed them
  bool dir = false;
  friend bool operator==(const JournalHandle&, const JournalHandle&) = default;
};

struct JournalState {
  std::unordered_map<NodeId, JournalNode> nodes;
  std::unordered_map<std::uint64_t, JournalHandle> handles;
  std::string init_request;  // the FUSE_INIT request as read from /dev/fuse (header included)
  std::string init_reply;    // and the reply that went back
  // High-water marks: every node id and fh ever given to the kernel is below these, so that a
  // successor gives none of them to another file, even when it could restore nothing.
  NodeId next_node = kRootNode + 1;
  std::uint64_t next_fh = 1;
  std::string backend;  // Backend::takeover_state(), at most kMaxBackendState bytes
  std::string commit;   // the commit served (a git thread), empty or 40 or 64 hex digits
  friend bool operator==(const JournalState&, const JournalState&) = default;
};

// Limits a journal must keep (a decoded one is refused past them).
inline constexpr NodeId kMaxJournalId = NodeId{1} << 48;  // node ids and fh values
inline constexpr std::uint64_t kMaxJournalLookups = std::uint64_t{1} << 40;
inline constexpr std::size_t kMaxJournalEntries = std::size_t{1} << 22;
inline constexpr std::size_t kMaxInitBytes = 512;
inline constexpr std::size_t kMaxBackendState = 64;
// The memfd's size, which the supervisor sets and seals (ipc/journal_size.h).
using ipc::kJournalBytes;
using ipc::kJournalHeaderBytes;
using ipc::kJournalRegionBytes;
// The in-flight table (in_flight.h): 64 words at the end of the header page, which the header
// fields never reach (a journal of an earlier version left them zero).
inline constexpr std::size_t kInFlightOffset = kJournalHeaderBytes - 64 * sizeof(std::uint64_t);

// A name the journal accepts: one path component (not empty, ".", "..", no '/' or NUL, at most
// NAME_MAX bytes).
[[nodiscard]] bool valid_component(std::string_view name) noexcept;

struct JournalError {
  std::string reason;
  // What a sound header holds, though a record was not: the FUSE_INIT exchange and the
  // high-water marks (empty and 0 when the header itself was refused). A successor can still
  // take the connection over, with every node stale.
  JournalState header;
};

// One log record as stored (tests and the fuzzer build images from these).
struct JournalRecord {
  enum Type : std::uint16_t {
    kLookup = 1,   // a=node b=parent c=ino d=count aux=S_IFMT bits, name
    kForget = 2,   // a=node d=count
    kName = 3,     // a=node b=parent (0: no name), name
    kOpen = 4,     // a=fh b=node c=1 for a directory aux=open flags
    kRelease = 5,  // a=fh
  };
  std::uint16_t type = 0;
  std::uint32_t aux = 0;
  std::uint64_t a = 0, b = 0, c = 0, d = 0;
  std::string name;
};

// A journal image with `records` as region 0's log, and the FUSE_INIT bytes given. Only as
// long as the decoder needs (header and log).
[[nodiscard]] std::vector<std::byte> journal_image(const std::vector<JournalRecord>& records,
                                                   std::string_view init_request = {},
                                                   std::string_view init_reply = {});

// Decodes a journal image: the memfd's bytes, or as many as hold the header and the active
// region's log (shorter is an error). Never trusts it: see above.
[[nodiscard]] std::variant<JournalState, JournalError> decode_journal(
    std::span<const std::byte> image);

// The journal of a running worker. Thread-safe: every call takes one mutex.
class NodeJournal {
 public:
  // Formats `memfd` (maps it; sizes it only if it is empty, as a memfd the supervisor did not
  // size and seal is) and writes `state` as its content. Throws heddle::Error: a memfd of
  // another size, one sealed against writes, or an unusable one.
  NodeJournal(UniqueFd memfd, const JournalState& state);
  NodeJournal(const NodeJournal&) = delete;
  NodeJournal& operator=(const NodeJournal&) = delete;
  ~NodeJournal();

  // Reads the memfd a predecessor left: its decoded state, or why it was refused.
  [[nodiscard]] static std::variant<JournalState, JournalError> read(int memfd);

  // The kernel is about to hold `n` more references on `node`, found as `name` in `parent`.
  void looked_up(NodeId node, NodeId parent, std::string_view name, std::uint64_t ino,
                 mode_t type, std::uint64_t n = 1);
  void forgotten(NodeId node, std::uint64_t n);
  // The name changes the kernel was told of, for the nodes that had these names.
  void renamed(NodeId parent, std::string_view name, NodeId new_parent,
               std::string_view new_name, bool exchange);
  void unlinked(NodeId parent, std::string_view name);
  void opened(std::uint64_t fh, NodeId node, int flags, bool dir);
  void released(std::uint64_t fh);
  void set_init(std::string_view request, std::string_view reply);
  void set_backend(std::string_view state);
  void set_commit(std::string_view commit);

  [[nodiscard]] std::size_t node_count() const;
  [[nodiscard]] std::size_t handle_count() const;
  // False once the state outgrew a region (the journal stopped; a restart would find it stale).
  [[nodiscard]] bool healthy() const;
  [[nodiscard]] JournalState state() const;
  // The in-flight table's words in the shared mapping (written lock-free, see in_flight.h).
  [[nodiscard]] std::uint64_t* in_flight_slots() const noexcept {
    return reinterpret_cast<std::uint64_t*>(map_ + kInFlightOffset);
  }

 private:
  // A name in by_name_: a view of the node's own name in state_.nodes (whose elements never
  // move), so that indexing a name copies no string; and its hash, computed once, so that a
  // rehash or a bucket's scan hashes no name again. Each key views the name of the node it
  // maps to.
  struct Key {
    Key(NodeId p, std::string_view n) noexcept
        : parent(p), name(n), hash(std::hash<std::string_view>{}(n) ^ (p * 0x9E3779B97F4A7C15ULL)) {}
    NodeId parent;
    std::string_view name;
    std::size_t hash;
    friend bool operator==(const Key& a, const Key& b) noexcept {
      return a.hash == b.hash && a.parent == b.parent && a.name == b.name;
    }
  };
  struct KeyHash {
    std::size_t operator()(const Key& k) const noexcept { return k.hash; }
  };

  void append(std::uint16_t type, std::uint32_t aux, std::uint64_t a, std::uint64_t b,
              std::uint64_t c, std::uint64_t d, std::string_view name);
  bool compact();  // writes state_ into the other region and makes it active
  void compact_or_stop();  // compact(), or the journal stops (healthy() false) if it cannot
  void compact_if_mostly_dead();
  void set_name(NodeId node, NodeId parent, std::string_view name);
  void index(NodeId node, const JournalNode& entry);
  void index_names();

  UniqueFd fd_;
  std::byte* map_ = nullptr;
  mutable std::mutex mutex_;
  JournalState state_;
  // Only renames and unlinks look names up, and only a writable mount has them: the index is
  // built at the first one and kept from then on, so a read-only walk pays nothing for it.
  std::unordered_map<Key, NodeId, KeyHash> by_name_;
  bool indexed_ = false;
  std::uint64_t compacted_bytes_ = 0;  // the active region's length after the last compaction
  bool healthy_ = true;
};

}  // namespace heddle::worker
