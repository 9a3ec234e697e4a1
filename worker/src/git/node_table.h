// The nodes the kernel holds references to: nodeid -> {path, object id, git mode, size}.
// A path keeps its nodeid while the kernel remembers it; forget() drops nodes whose lookup
// count reaches zero, so memory follows what the kernel caches, not what was ever visited.
#pragma once

#include <git2/oid.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "backend.h"

namespace heddle::worker::git {

// What a node is; immutable once created. A retarget (NodeTable::rebase) replaces it whole.
struct NodeInfo {
  std::string path;       // bytes from the root, '/'-separated; "" for the root
  git_oid oid{};          // tree, blob or (for a gitlink) a commit of another repository
  std::uint32_t mode = 0; // git filemode: 040000, 0100644, 0100755, 0120000, 0160000
  std::uint64_t size = 0; // blob size (from the object header); 0 for directories
  bool size_known = true; // false when the header could not be read (the object is damaged)
  ino_t ino = 0;          // stable for the mount's life: see InoHasher
  // A .gitattributes in some directory above this node (from the trees read to reach it):
  // only then can attributes convert a file (checkout_filter.h), unless they apply everywhere.
  bool gitattributes_above = false;
  // How a blob is served: as stored, converted as `git checkout` writes it (`size` is then the
  // converted size), or as the Git LFS object its pointer names (`size` is the object's).
  enum class Served : std::uint8_t { kAsStored, kConverted, kLfs };
  Served served = Served::kAsStored;
  // The path is not in the served tree any more (a retarget removed it); the kernel still
  // holds the node until it forgets it.
  bool gone = false;
};

// Inode numbers from paths: SipHash-2-4 of the path under a key drawn at random per mount, so
// that a repository cannot be built to make two paths collide. The same path has the same
// number for the whole mount, even after the kernel forgets it. Numbers are in [2, 2^bits):
// 1 is the root's, 0 is no inode, and bit 63 stays clear for the overlay's upper layer.
class InoHasher {
 public:
  struct Key {
    std::uint64_t k0 = 0;
    std::uint64_t k1 = 0;
  };
  // `bits` below 63 only for tests that need collisions.
  explicit InoHasher(Key key, unsigned bits = 63) noexcept : key_(key), bits_(bits) {}
  // A key from getrandom(2). Throws heddle::Error when no randomness is to be had.
  [[nodiscard]] static Key random_key();

  [[nodiscard]] Key key() const noexcept { return key_; }
  // `round` > 0 gives the alternative numbers a colliding path probes.
  [[nodiscard]] ino_t operator()(std::string_view path, std::uint32_t round = 0) const noexcept;

 private:
  Key key_;
  unsigned bits_;
};

// "a/b" + "c" -> "a/b/c"; "" + "c" -> "c".
[[nodiscard]] std::string child_path(std::string_view parent, std::string_view name);
// The parent of "a/b/c" is "a/b"; of "a" it is "" (the root).
[[nodiscard]] std::string_view parent_path(std::string_view path) noexcept;

// Two paths whose hashes collide while both have live nodes: the first keeps the number, the
// second takes the first free alternative (round 1, 2, ...), and both choices are pinned for
// the mount's life (a path's number never changes once a node has shown it).
class NodeTable {
 public:
  NodeTable(NodeInfo root, InoHasher hasher);
  NodeTable(const NodeTable&) = delete;
  NodeTable& operator=(const NodeTable&) = delete;

  // The node's description, or null if `node` is unknown (already forgotten).
  [[nodiscard]] std::shared_ptr<const NodeInfo> find(NodeId node) const;

  // Counts one lookup on the node for info->path, creating it from `info` if it is not known.
  // Returns its id and (through `out`) the node's description.
  [[nodiscard]] NodeId acquire(NodeInfo info, std::shared_ptr<const NodeInfo>& out);
  // Counts one lookup on the node for `path` if it is known and returns its id; else 0.
  [[nodiscard]] NodeId acquire_known(std::string_view path, std::shared_ptr<const NodeInfo>& out);

  // True when the table just shrank: the kernel forgot most of the nodes it held.
  bool forget(NodeId node, std::uint64_t nlookup) noexcept;
  [[nodiscard]] std::size_t size() const;

  // Takeover (issue 16, Backend::set_next_node and add_lookups).
  void set_next(NodeId node);
  // A predecessor's key, before any node but the root exists.
  void set_hasher(InoHasher hasher) { hasher_ = hasher; }
  [[nodiscard]] InoHasher hasher() const { return hasher_; }
  void add_lookups(NodeId node, std::uint64_t n);

  // The number `path` has (or will have) as a node: its hash, unless a collision pinned
  // another. For readdir's d_ino.
  [[nodiscard]] ino_t ino_of(std::string_view path) const;
  // Collisions resolved so far (Status).
  [[nodiscard]] std::size_t collisions() const;

  // The live node of `path`, or 0; counts nothing.
  [[nodiscard]] NodeId id_of(std::string_view path) const;

  // After the served tree changed: under the exclusive lock, each live node takes what
  // `decide` answers for it: the same pointer (unchanged), a new description (same path and
  // number; new object, mode or size), or null: the path is gone. A gone node is no longer
  // found by path (a lookup makes a new node), and keeps its old description, marked gone,
  // until the kernel forgets it. `decide` runs with the lock held: no NodeTable calls in it.
  using Decide =
      std::function<std::shared_ptr<const NodeInfo>(const std::shared_ptr<const NodeInfo>&)>;
  void rebase(const Decide& decide);

 private:
  struct Entry {
    std::shared_ptr<const NodeInfo> info;
    // Increased under the shared lock (lookups of known paths run in parallel); decreased and
    // erased under the exclusive lock, which excludes those increments.
    mutable std::atomic<std::uint64_t> nlookup{0};
  };

  // Under the exclusive lock: the number for a new node at `path`, pinning it (and the live
  // holder's) when its hash is another path's.
  [[nodiscard]] ino_t claim_ino(const std::string& path);

  InoHasher hasher_;  // replaced only before any lookup (set_hasher)
  mutable std::shared_mutex mutex_;
  std::unordered_map<NodeId, std::unique_ptr<Entry>> by_id_;
  // Keys view the NodeInfo's path, which lives as long as the entry.
  std::unordered_map<std::string_view, NodeId> by_path_;
  std::unordered_map<ino_t, NodeId> by_ino_;  // live nodes
  std::unordered_map<std::string, ino_t> pinned_;  // paths whose number a collision decided
  std::unordered_map<ino_t, std::string> pinned_owner_;
  std::atomic<bool> any_pinned_{false};
  std::size_t collisions_ = 0;
  NodeId next_id_ = kRootNode + 1;
};

}  // namespace heddle::worker::git
