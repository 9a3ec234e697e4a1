#include "node_journal.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <vector>

#include <spdlog/spdlog.h>

#include "heddle/error.h"
#include "heap_trim.h"

namespace heddle::worker {
namespace {

// memcpy of nothing from an empty string_view's null data() is undefined (UBSan says so).
void copy_bytes(void* to, const void* from, std::size_t n) noexcept {
  if (n != 0) std::memcpy(to, from, n);
}

constexpr char kMagic[8] = {'H', 'D', 'L', 'J', 'R', 'N', 'L', '1'};
constexpr std::uint32_t kVersion = 1;

struct Header {
  char magic[8];
  std::uint32_t version;
  std::uint32_t header_bytes;
  std::uint64_t region_bytes;
  std::uint64_t active;   // 0 or 1 (atomic)
  std::uint64_t used[2];  // committed bytes of each region (atomic)
  std::uint32_t init_request_bytes;
  std::uint32_t init_reply_bytes;
  unsigned char init_request[kMaxInitBytes];
  unsigned char init_reply[kMaxInitBytes];
  std::uint64_t next_node;  // high-water marks (JournalState)
  std::uint64_t next_fh;
  std::uint32_t backend_bytes;
  std::uint32_t commit_bytes;
  unsigned char backend[kMaxBackendState];
  char commit[64];
};
static_assert(sizeof(Header) <= kInFlightOffset, "the header would overlap the in-flight table");

constexpr std::uint16_t kLookup = JournalRecord::kLookup;
constexpr std::uint16_t kForget = JournalRecord::kForget;
constexpr std::uint16_t kName = JournalRecord::kName;
constexpr std::uint16_t kOpen = JournalRecord::kOpen;
constexpr std::uint16_t kRelease = JournalRecord::kRelease;

struct RecordHead {
  std::uint16_t type;
  std::uint16_t name_bytes;
  std::uint32_t aux;
  std::uint64_t a, b, c, d;
};
static_assert(sizeof(RecordHead) == 40);

constexpr std::size_t padded(std::size_t n) { return (n + 7) & ~std::size_t{7}; }

std::uint64_t load(const std::uint64_t& word) {
  return std::atomic_ref<const std::uint64_t>(word).load(std::memory_order_acquire);
}
void store(std::uint64_t& word, std::uint64_t value) {
  std::atomic_ref<std::uint64_t>(word).store(value, std::memory_order_release);
}

// Applies one record to `state`; false (with `why`) for a record that a journal we wrote
// cannot contain.
bool apply(JournalState& state, const RecordHead& r, std::string_view name, std::string& why) {
  auto bad = [&](const std::string& text) {
    why = text;
    return false;
  };
  auto node_id_ok = [](std::uint64_t id) { return id > kRootNode && id < kMaxJournalId; };
  switch (r.type) {
    case kLookup: {
      if (!node_id_ok(r.a)) return bad("node id " + std::to_string(r.a) + " out of range");
      if (r.a >= state.next_node) return bad("a node id above the high-water mark");
      if (r.b == 0 || r.b >= kMaxJournalId || r.b == r.a) return bad("bad parent of a node");
      if (!valid_component(name)) return bad("a name that is not one path component");
      if (r.d == 0 || r.d > kMaxJournalLookups) return bad("a lookup count out of range");
      if ((r.aux & ~std::uint32_t{S_IFMT}) != 0 || r.aux == 0) return bad("a bad file type");
      auto [it, added] = state.nodes.try_emplace(r.a);
      JournalNode& node = it->second;
      if (added) {
        if (state.nodes.size() > kMaxJournalEntries) return bad("too many nodes");
        node.ino = r.c;
        node.type = r.aux;
      } else if (node.ino != r.c || node.type != r.aux) {
        return bad("a node whose identity changed");
      }
      node.nlookup += r.d;
      if (node.nlookup > kMaxJournalLookups) return bad("a lookup count out of range");
      node.parent = r.b;
      node.name.assign(name);
      return true;
    }
    case kForget: {
      if (!node_id_ok(r.a)) return bad("node id out of range");
      const auto it = state.nodes.find(r.a);
      if (it == state.nodes.end()) return true;
      if (it->second.nlookup > r.d) {
        it->second.nlookup -= r.d;
      } else {
        state.nodes.erase(it);
      }
      return true;
    }
    case kName: {
      if (!node_id_ok(r.a)) return bad("node id out of range");
      const auto it = state.nodes.find(r.a);
      if (r.b == 0) {
        if (!name.empty()) return bad("a name without a parent");
      } else if (r.b >= kMaxJournalId || r.b == r.a || !valid_component(name)) {
        return bad("a rename to a bad name");
      }
      if (it == state.nodes.end()) return true;
      it->second.parent = r.b;
      it->second.name.assign(name);
      return true;
    }
    case kOpen: {
      if (r.a == 0 || r.a >= kMaxJournalId) return bad("fh out of range");
      if (r.a >= state.next_fh) return bad("an fh above the high-water mark");
      if (r.b != kRootNode && !state.nodes.contains(r.b)) return bad("a handle of an unknown node");
      if (r.c > 1 || !name.empty()) return bad("a malformed open");
      if (!state.handles.contains(r.a) && state.handles.size() >= kMaxJournalEntries) {
        return bad("too many handles");
      }
      state.handles[r.a] = JournalHandle{r.b, static_cast<std::int32_t>(r.aux), r.c == 1};
      return true;
    }
    case kRelease:
      if (r.a == 0 || r.a >= kMaxJournalId) return bad("fh out of range");
      state.handles.erase(r.a);
      return true;
    default:
      return bad("unknown record type " + std::to_string(r.type));
  }
}

}  // namespace

bool valid_component(std::string_view name) noexcept {
  return !name.empty() && name.size() <= NAME_MAX && name != "." && name != ".." &&
         name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

std::variant<JournalState, JournalError> decode_journal(std::span<const std::byte> image) {
  if (image.size() < kJournalHeaderBytes) return JournalError{"the journal is too short", {}};
  Header h;
  std::memcpy(&h, image.data(), sizeof h);
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0) {
    return JournalError{"not a journal", {}};
  }
  if (h.version != kVersion || h.header_bytes != kJournalHeaderBytes ||
      h.region_bytes != kJournalRegionBytes) {
    return JournalError{"a journal of another version or layout", {}};
  }
  if (h.active > 1) return JournalError{"no active region", {}};
  const std::uint64_t used = h.used[h.active];
  if (used > kJournalRegionBytes) return JournalError{"a region longer than its room", {}};
  if (h.init_request_bytes > kMaxInitBytes || h.init_reply_bytes > kMaxInitBytes) {
    return JournalError{"FUSE_INIT bytes longer than their room", {}};
  }
  if (image.size() < kJournalHeaderBytes + h.active * kJournalRegionBytes + used) {
    return JournalError{"the journal is too short", {}};
  }
  if (h.next_node <= kRootNode || h.next_node > kMaxJournalId || h.next_fh == 0 ||
      h.next_fh > kMaxJournalId) {
    return JournalError{"high-water marks out of range", {}};
  }
  JournalState state;
  state.init_request.assign(reinterpret_cast<const char*>(h.init_request), h.init_request_bytes);
  state.init_reply.assign(reinterpret_cast<const char*>(h.init_reply), h.init_reply_bytes);
  state.next_node = h.next_node;
  state.next_fh = h.next_fh;
  if (h.backend_bytes > kMaxBackendState || (h.commit_bytes != 0 && h.commit_bytes != 40 &&
                                             h.commit_bytes != 64)) {
    return JournalError{"backend state or commit of a bad size", {}};
  }
  state.backend.assign(reinterpret_cast<const char*>(h.backend), h.backend_bytes);
  state.commit.assign(h.commit, h.commit_bytes);
  if (!std::all_of(state.commit.begin(), state.commit.end(),
                   [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); })) {
    return JournalError{"a commit that is not hexadecimal", {}};
  }
  JournalState header = state;

  const std::byte* region =
      image.data() + kJournalHeaderBytes + h.active * kJournalRegionBytes;
  std::size_t at = 0;
  std::string why;
  while (at < used) {
    if (used - at < sizeof(RecordHead)) {
      return JournalError{"a truncated record", header};
    }
    RecordHead r;
    std::memcpy(&r, region + at, sizeof r);
    const std::size_t size = padded(sizeof r + r.name_bytes);
    if (r.name_bytes > NAME_MAX || size > used - at) {
      return JournalError{"a record longer than the region", header};
    }
    const std::string name(reinterpret_cast<const char*>(region + at + sizeof r), r.name_bytes);
    if (!apply(state, r, name, why)) {
      return JournalError{why + " (at byte " + std::to_string(at) + ")", header};
    }
    at += size;
  }
  return state;
}

std::vector<std::byte> journal_image(const std::vector<JournalRecord>& records,
                                     std::string_view init_request, std::string_view init_reply) {
  std::vector<std::byte> image(kJournalHeaderBytes);
  for (const JournalRecord& record : records) {
    const std::size_t at = image.size();
    const std::size_t name_bytes = std::min<std::size_t>(record.name.size(), 0xffff);
    image.resize(at + padded(sizeof(RecordHead) + name_bytes));
    const RecordHead r{record.type, static_cast<std::uint16_t>(name_bytes), record.aux,
                       record.a, record.b, record.c, record.d};
    std::memcpy(image.data() + at, &r, sizeof r);
    copy_bytes(image.data() + at + sizeof r, record.name.data(), name_bytes);
  }
  Header h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kVersion;
  h.header_bytes = kJournalHeaderBytes;
  h.region_bytes = kJournalRegionBytes;
  h.used[0] = image.size() - kJournalHeaderBytes;
  h.next_node = kRootNode + 1;
  h.next_fh = 1;
  for (const JournalRecord& record : records) {
    if (record.type == JournalRecord::kLookup) h.next_node = std::max(h.next_node, record.a + 1);
    if (record.type == JournalRecord::kOpen) h.next_fh = std::max(h.next_fh, record.a + 1);
  }
  h.next_node = std::min<std::uint64_t>(h.next_node, kMaxJournalId);
  h.next_fh = std::min<std::uint64_t>(h.next_fh, kMaxJournalId);
  h.init_request_bytes = static_cast<std::uint32_t>(std::min(init_request.size(), kMaxInitBytes));
  h.init_reply_bytes = static_cast<std::uint32_t>(std::min(init_reply.size(), kMaxInitBytes));
  copy_bytes(h.init_request, init_request.data(), h.init_request_bytes);
  copy_bytes(h.init_reply, init_reply.data(), h.init_reply_bytes);
  std::memcpy(image.data(), &h, sizeof h);
  return image;
}

std::variant<JournalState, JournalError> NodeJournal::read(int memfd) {
  struct stat st {};
  if (::fstat(memfd, &st) != 0) {
    return JournalError{std::string("fstat: ") + std::strerror(errno), {}};
  }
  if (st.st_size == 0) return JournalState{};  // never written: a first worker
  if (static_cast<std::uint64_t>(st.st_size) != kJournalBytes) {
    return JournalError{"the journal has the wrong size", {}};
  }
  // Read-only and shared: pages never written read as zeros and cost nothing. The decoder
  // copies each value once before checking it, so a concurrent writer could not slip a value
  // past a check (and none exists: the predecessor is dead, the supervisor never writes).
  void* map = ::mmap(nullptr, kJournalBytes, PROT_READ, MAP_SHARED, memfd, 0);
  if (map == MAP_FAILED) return JournalError{std::string("mmap: ") + std::strerror(errno), {}};
  auto decoded = decode_journal({static_cast<const std::byte*>(map), kJournalBytes});
  ::munmap(map, kJournalBytes);
  return decoded;
}

NodeJournal::NodeJournal(UniqueFd memfd, const JournalState& state) : fd_(std::move(memfd)) {
  // The supervisor sizes and seals it (grow, shrink, seal). One sealed against writes is
  // refused: no worker could keep it.
  const int seals = ::fcntl(fd_.get(), F_GET_SEALS);
  if (seals < 0) throw_errno("the node journal is not a memfd (F_GET_SEALS)");
  if ((seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) != 0) {
    throw Error("the node journal memfd is sealed against writes", EPERM,
                "the supervisor seals it against resizes only");
  }
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) throw_errno("fstat the node journal");
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size == 0 && (seals & F_SEAL_GROW) == 0) {
    // Not sized by its maker (an in-process user): sized here.
    if (::ftruncate(fd_.get(), static_cast<off_t>(kJournalBytes)) != 0) {
      throw_errno("size the node journal");
    }
  } else if (size != kJournalBytes) {
    throw Error("the node journal memfd is " + std::to_string(size) + " bytes, not " +
                    std::to_string(kJournalBytes),
                EINVAL, "the launcher and the worker are of different versions: restart the mount");
  }
  void* map = ::mmap(nullptr, kJournalBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (map == MAP_FAILED) throw_errno("map the node journal");
  map_ = static_cast<std::byte*>(map);

  auto& h = *reinterpret_cast<Header*>(map_);
  // A header of ours keeps its active region until compact() below has written the state
  // into the other one: a successor killed before that still leaves a readable journal.
  const bool ours = std::memcmp(h.magic, kMagic, sizeof kMagic) == 0 && h.version == kVersion &&
                    h.region_bytes == kJournalRegionBytes && h.active <= 1;
  if (!ours) {
    std::memset(map_, 0, kJournalHeaderBytes);
    std::memcpy(h.magic, kMagic, sizeof kMagic);
    h.version = kVersion;
    h.header_bytes = kJournalHeaderBytes;
    h.region_bytes = kJournalRegionBytes;
  }
  state_ = state;
  for (const auto& [id, node] : state_.nodes) state_.next_node = std::max(state_.next_node, id + 1);
  for (const auto& [fh, handle] : state_.handles) state_.next_fh = std::max(state_.next_fh, fh + 1);
  store(h.next_node, state_.next_node);
  store(h.next_fh, state_.next_fh);
  set_init(state.init_request, state.init_reply);
  set_backend(state.backend);
  set_commit(state.commit);
  if (!compact()) throw Error("the node journal's state does not fit its region", EFBIG);
}

NodeJournal::~NodeJournal() {
  if (map_ != nullptr) ::munmap(map_, kJournalBytes);
}

void NodeJournal::append(std::uint16_t type, std::uint32_t aux, std::uint64_t a, std::uint64_t b,
                         std::uint64_t c, std::uint64_t d, std::string_view name) {
  if (!healthy_) return;
  auto& h = *reinterpret_cast<Header*>(map_);
  const std::size_t size = padded(sizeof(RecordHead) + name.size());
  const std::uint64_t active = h.active;
  std::uint64_t used = h.used[active];
  if (used + size > kJournalRegionBytes) {
    // The state already holds this change: the compacted region includes it.
    compact_or_stop();
    return;
  }
  std::byte* at = map_ + kJournalHeaderBytes + active * kJournalRegionBytes + used;
  const RecordHead r{type, static_cast<std::uint16_t>(name.size()), aux, a, b, c, d};
  std::memcpy(at, &r, sizeof r);
  if (!name.empty()) std::memcpy(at + sizeof r, name.data(), name.size());
  store(h.used[active], used + size);
}

bool NodeJournal::compact() {
  auto& h = *reinterpret_cast<Header*>(map_);
  const std::uint64_t target = load(h.active) == 0 ? 1 : 0;
  std::byte* region = map_ + kJournalHeaderBytes + target * kJournalRegionBytes;
  std::size_t used = 0;
  auto put = [&](std::uint16_t type, std::uint32_t aux, std::uint64_t a, std::uint64_t b,
                 std::uint64_t c, std::uint64_t d, std::string_view name) {
    const std::size_t size = padded(sizeof(RecordHead) + name.size());
    if (used + size > kJournalRegionBytes) return false;
    const RecordHead r{type, static_cast<std::uint16_t>(name.size()), aux, a, b, c, d};
    std::memcpy(region + used, &r, sizeof r);
    if (!name.empty()) std::memcpy(region + used + sizeof r, name.data(), name.size());
    used += size;
    return true;
  };
  // Parents before children is not needed: a record names its parent by id only.
  for (const auto& [id, node] : state_.nodes) {
    // An unnamed node is written with a placeholder name, then unnamed.
    if (!put(kLookup, node.type, id, node.parent != 0 ? node.parent : kRootNode, node.ino,
             node.nlookup, node.parent != 0 ? std::string_view(node.name) : "-")) {
      return false;
    }
    if (node.parent == 0 && !put(kName, 0, id, 0, 0, 0, {})) return false;
  }
  for (const auto& [fh, handle] : state_.handles) {
    if (handle.node != kRootNode && !state_.nodes.contains(handle.node)) continue;
    if (!put(kOpen, static_cast<std::uint32_t>(handle.flags), fh, handle.node, handle.dir ? 1 : 0,
             0, {})) {
      return false;
    }
  }
  store(h.used[target], used);
  store(h.active, target);
  compacted_bytes_ = used;
  // The old region's pages go back to the system.
  const std::uint64_t old = target == 0 ? 1 : 0;
  ::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
              static_cast<off_t>(kJournalHeaderBytes + old * kJournalRegionBytes),
              static_cast<off_t>(kJournalRegionBytes));
  return true;
}

void NodeJournal::compact_or_stop() {
  if (compact()) return;
  healthy_ = false;
  spdlog::error("node journal: the state outgrew its region; a restarted worker would find "
                "every node stale");
}

// After a walk and its forget, the log holds every lookup and forget while the state is a
// fraction of it: those pages stay resident (the memfd's shmem counts in the worker's RSS)
// until the region fills. Written whole into the other region, the log shrinks to the state
// and compact() punches the old one out. Only when at least kDeadRatio times the state's
// estimate, and when what was appended since the last compaction pays for this one.
void NodeJournal::compact_if_mostly_dead() {
  constexpr std::uint64_t kMinBytes = 512 * 1024;
  constexpr std::uint64_t kDeadRatio = 4;
  constexpr std::uint64_t kNodeEstimate = sizeof(RecordHead) + 24;  // a short name, padded
  if (!healthy_) return;
  const auto& h = *reinterpret_cast<const Header*>(map_);
  const std::uint64_t used = h.used[h.active];
  const std::uint64_t live = state_.nodes.size() * kNodeEstimate +
                             state_.handles.size() * sizeof(RecordHead);
  if (used < kMinBytes || used < kDeadRatio * live || used - compacted_bytes_ < live) return;
  compact_or_stop();
}

void NodeJournal::index(NodeId node, const JournalNode& entry) {
  // A key already there may view another node's name: replaced, not reassigned.
  const Key key{entry.parent, entry.name};
  by_name_.erase(key);
  by_name_.emplace(key, node);
}

void NodeJournal::index_names() {
  if (indexed_) return;
  indexed_ = true;
  by_name_.reserve(state_.nodes.size());
  // Two nodes named alike (one the kernel still holds, one found since): the newer, whose id
  // is the higher (ids are never reused), is the one the name now means.
  for (const auto& [id, node] : state_.nodes) {
    if (node.parent == 0) continue;
    const auto there = by_name_.find(Key{node.parent, node.name});
    if (there == by_name_.end() || there->second < id) index(id, node);
  }
}

void NodeJournal::set_name(NodeId node, NodeId parent, std::string_view name) {
  auto it = state_.nodes.find(node);
  if (it == state_.nodes.end()) return;
  JournalNode& entry = it->second;
  // Out of the index before its name changes under the key that views it.
  if (indexed_ && entry.parent != 0) {
    const auto old = by_name_.find(Key{entry.parent, entry.name});
    if (old != by_name_.end() && old->second == node) by_name_.erase(old);
  }
  entry.parent = parent;
  entry.name.assign(parent != 0 ? name : std::string_view{});
  if (indexed_ && parent != 0) index(node, entry);
}

void NodeJournal::looked_up(NodeId node, NodeId parent, std::string_view name,
                            std::uint64_t ino, mode_t type, std::uint64_t n) {
  if (node <= kRootNode || node >= kMaxJournalId || !valid_component(name)) return;
  const std::lock_guard lock(mutex_);
  if (node >= state_.next_node) {
    state_.next_node = node + 1;
    store(reinterpret_cast<Header*>(map_)->next_node, state_.next_node);
  }
  auto [it, added] = state_.nodes.try_emplace(node);
  if (added) {
    it->second.ino = ino;
    it->second.type = type & S_IFMT;
  } else if (it->second.ino != ino || it->second.type != (type & S_IFMT)) {
    // The backend answered a new identity for the id (it reuses none; a retarget keeps the id
    // of an unchanged file only): record what the kernel now has.
    it->second.ino = ino;
    it->second.type = type & S_IFMT;
    append(kForget, 0, node, 0, 0, kMaxJournalLookups, {});
    const std::uint64_t kept = it->second.nlookup;
    it->second.nlookup = kept + n;
    set_name(node, parent, name);
    append(kLookup, type & S_IFMT, node, parent, ino, kept + n, name);
    return;
  }
  it->second.nlookup += n;
  // The common case, a name looked up again, changes no index.
  if (it->second.parent != parent || it->second.name != name) set_name(node, parent, name);
  append(kLookup, type & S_IFMT, node, parent, ino, n, name);
}

void NodeJournal::forgotten(NodeId node, std::uint64_t n) {
  const std::lock_guard lock(mutex_);
  const auto it = state_.nodes.find(node);
  if (it == state_.nodes.end()) return;
  if (it->second.nlookup > n) {
    it->second.nlookup -= n;
  } else {
    set_name(node, 0, {});
    state_.nodes.erase(it);
    shrink_if_sparse(state_.nodes);
    if (indexed_) shrink_if_sparse(by_name_);
  }
  append(kForget, 0, node, 0, 0, n, {});
  compact_if_mostly_dead();
}

void NodeJournal::renamed(NodeId parent, std::string_view name, NodeId new_parent,
                          std::string_view new_name, bool exchange) {
  if (!valid_component(name) || !valid_component(new_name)) return;
  const std::lock_guard lock(mutex_);
  index_names();
  const auto from = by_name_.find(Key{parent, name});
  const auto to = by_name_.find(Key{new_parent, new_name});
  const NodeId moved = from != by_name_.end() ? from->second : 0;
  const NodeId other = to != by_name_.end() ? to->second : 0;
  if (other != 0) {
    if (exchange) {
      set_name(other, parent, name);
      append(kName, 0, other, parent, 0, 0, name);
    } else {
      set_name(other, 0, {});
      append(kName, 0, other, 0, 0, 0, {});
    }
  }
  if (moved != 0) {
    set_name(moved, new_parent, new_name);
    append(kName, 0, moved, new_parent, 0, 0, new_name);
  }
}

void NodeJournal::unlinked(NodeId parent, std::string_view name) {
  if (!valid_component(name)) return;
  const std::lock_guard lock(mutex_);
  index_names();
  const auto it = by_name_.find(Key{parent, name});
  if (it == by_name_.end()) return;
  const NodeId node = it->second;
  set_name(node, 0, {});
  append(kName, 0, node, 0, 0, 0, {});
}

void NodeJournal::opened(std::uint64_t fh, NodeId node, int flags, bool dir) {
  if (fh == 0 || fh >= kMaxJournalId) return;
  const std::lock_guard lock(mutex_);
  if (node != kRootNode && !state_.nodes.contains(node)) return;
  if (fh >= state_.next_fh) {
    state_.next_fh = fh + 1;
    store(reinterpret_cast<Header*>(map_)->next_fh, state_.next_fh);
  }
  state_.handles[fh] = JournalHandle{node, flags, dir};
  append(kOpen, static_cast<std::uint32_t>(flags), fh, node, dir ? 1 : 0, 0, {});
}

void NodeJournal::released(std::uint64_t fh) {
  const std::lock_guard lock(mutex_);
  if (state_.handles.erase(fh) == 0) return;
  append(kRelease, 0, fh, 0, 0, 0, {});
}

void NodeJournal::set_init(std::string_view request, std::string_view reply) {
  if (request.size() > kMaxInitBytes || reply.size() > kMaxInitBytes) return;
  const std::lock_guard lock(mutex_);
  auto& h = *reinterpret_cast<Header*>(map_);
  state_.init_request.assign(request);
  state_.init_reply.assign(reply);
  copy_bytes(h.init_request, request.data(), request.size());
  copy_bytes(h.init_reply, reply.data(), reply.size());
  h.init_request_bytes = static_cast<std::uint32_t>(request.size());
  h.init_reply_bytes = static_cast<std::uint32_t>(reply.size());
}

void NodeJournal::set_backend(std::string_view state) {
  if (state.size() > kMaxBackendState) return;
  const std::lock_guard lock(mutex_);
  auto& h = *reinterpret_cast<Header*>(map_);
  state_.backend.assign(state);
  copy_bytes(h.backend, state.data(), state.size());
  h.backend_bytes = static_cast<std::uint32_t>(state.size());
}

void NodeJournal::set_commit(std::string_view commit) {
  if (commit.size() != 0 && commit.size() != 40 && commit.size() != 64) return;
  const std::lock_guard lock(mutex_);
  auto& h = *reinterpret_cast<Header*>(map_);
  state_.commit.assign(commit);
  // Length first to 0: a successor never reads a half-written commit as a whole one.
  h.commit_bytes = 0;
  copy_bytes(h.commit, commit.data(), commit.size());
  h.commit_bytes = static_cast<std::uint32_t>(commit.size());
}

std::size_t NodeJournal::node_count() const {
  const std::lock_guard lock(mutex_);
  return state_.nodes.size();
}

std::size_t NodeJournal::handle_count() const {
  const std::lock_guard lock(mutex_);
  return state_.handles.size();
}

bool NodeJournal::healthy() const {
  const std::lock_guard lock(mutex_);
  return healthy_;
}

JournalState NodeJournal::state() const {
  const std::lock_guard lock(mutex_);
  return state_;
}

}  // namespace heddle::worker
