#include "git/node_table.h"

#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <utility>

#include "heap_trim.h"
#include "heddle/error.h"

namespace heddle::worker::git {

namespace {

std::uint64_t rotl(std::uint64_t x, int b) noexcept { return (x << b) | (x >> (64 - b)); }

// SipHash-2-4 (Aumasson and Bernstein), 64-bit output.
std::uint64_t siphash24(std::uint64_t k0, std::uint64_t k1, std::string_view data) noexcept {
  std::uint64_t v0 = k0 ^ 0x736f6d6570736575ull;
  std::uint64_t v1 = k1 ^ 0x646f72616e646f6dull;
  std::uint64_t v2 = k0 ^ 0x6c7967656e657261ull;
  std::uint64_t v3 = k1 ^ 0x7465646279746573ull;
  const auto round = [&] {
    v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);
    v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;
    v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;
    v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);
  };
  const auto absorb = [&](std::uint64_t m) {
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  };
  const std::size_t whole = data.size() & ~std::size_t{7};
  for (std::size_t i = 0; i < whole; i += 8) {
    std::uint64_t m = 0;
    for (int b = 7; b >= 0; --b) m = (m << 8) | static_cast<unsigned char>(data[i + b]);
    absorb(m);
  }
  std::uint64_t last = static_cast<std::uint64_t>(data.size() & 0xff) << 56;
  for (std::size_t i = whole; i < data.size(); ++i) {
    last |= std::uint64_t{static_cast<unsigned char>(data[i])} << (8 * (i - whole));
  }
  absorb(last);
  v2 ^= 0xff;
  for (int i = 0; i < 4; ++i) round();
  return v0 ^ v1 ^ v2 ^ v3;
}

}  // namespace

InoHasher::Key InoHasher::random_key() {
  std::uint64_t words[2] = {};
  auto* bytes = reinterpret_cast<unsigned char*>(words);
  for (std::size_t got = 0; got < sizeof words;) {
    const ssize_t n = ::getrandom(bytes + got, sizeof words - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(std::string("cannot draw the inode-number key: getrandom: ") +
                      std::strerror(errno),
                  errno);
    }
    got += static_cast<std::size_t>(n);
  }
  return Key{words[0], words[1]};
}

ino_t InoHasher::operator()(std::string_view path, std::uint32_t round) const noexcept {
  // Each round hashes under its own key: independent alternatives for a colliding path.
  const std::uint64_t h = siphash24(key_.k0, key_.k1 ^ (0x9E3779B97F4A7C15ull * round), path);
  const std::uint64_t mask = bits_ >= 64 ? ~0ull : (std::uint64_t{1} << bits_) - 1;
  std::uint64_t ino = h & mask;
  if (ino <= kRootNode) ino += 2;  // 0 is no inode; 1 is the root's
  return static_cast<ino_t>(ino);
}

std::string child_path(std::string_view parent, std::string_view name) {
  std::string out;
  out.reserve(parent.size() + 1 + name.size());
  out.append(parent);
  if (!parent.empty()) out.push_back('/');
  out.append(name);
  return out;
}

std::string_view parent_path(std::string_view path) noexcept {
  const auto slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string_view{} : path.substr(0, slash);
}

NodeTable::NodeTable(NodeInfo root, InoHasher hasher) : hasher_(hasher) {
  root.path.clear();
  root.ino = kRootNode;
  auto entry = std::make_unique<Entry>();
  entry->info = std::make_shared<const NodeInfo>(std::move(root));
  entry->nlookup = 1;
  by_path_.emplace(std::string_view(entry->info->path), kRootNode);
  by_ino_.emplace(kRootNode, kRootNode);
  by_id_.emplace(kRootNode, std::move(entry));
}

ino_t NodeTable::ino_of(std::string_view path) const {
  if (path.empty()) return kRootNode;
  if (any_pinned_.load(std::memory_order_acquire)) {
    const std::shared_lock lock(mutex_);
    if (const auto it = pinned_.find(std::string(path)); it != pinned_.end()) return it->second;
  }
  return hasher_(path);
}

ino_t NodeTable::claim_ino(const std::string& path) {
  if (const auto it = pinned_.find(path); it != pinned_.end()) return it->second;
  const auto taken = [&](ino_t ino) {
    if (ino == kRootNode) return true;
    if (const auto owner = pinned_owner_.find(ino); owner != pinned_owner_.end()) {
      return owner->second != path;
    }
    return by_ino_.contains(ino);  // a live node of another path (ours would have been found)
  };
  const ino_t first = hasher_(path);
  if (!taken(first)) return first;
  // Collision: the live holder keeps its number for good; this path takes an alternative.
  ++collisions_;
  if (const auto live = by_ino_.find(first); live != by_ino_.end()) {
    const std::string& holder = by_id_.at(live->second)->info->path;
    if (pinned_owner_.emplace(first, holder).second) pinned_.emplace(holder, first);
  }
  for (std::uint32_t round = 1;; ++round) {
    const ino_t candidate = hasher_(path, round);
    if (taken(candidate)) continue;
    pinned_.emplace(path, candidate);
    pinned_owner_.emplace(candidate, path);
    any_pinned_.store(true, std::memory_order_release);
    return candidate;
  }
}

std::size_t NodeTable::collisions() const {
  const std::shared_lock lock(mutex_);
  return collisions_;
}

std::shared_ptr<const NodeInfo> NodeTable::find(NodeId node) const {
  const std::shared_lock lock(mutex_);
  const auto it = by_id_.find(node);
  return it == by_id_.end() ? nullptr : it->second->info;
}

void NodeTable::set_next(NodeId node) {
  const std::unique_lock lock(mutex_);
  next_id_ = node;
}

void NodeTable::add_lookups(NodeId node, std::uint64_t n) {
  const std::shared_lock lock(mutex_);
  if (const auto it = by_id_.find(node); it != by_id_.end() && node != kRootNode) {
    it->second->nlookup.fetch_add(n, std::memory_order_relaxed);
  }
}

NodeId NodeTable::acquire_known(std::string_view path, std::shared_ptr<const NodeInfo>& out) {
  const std::shared_lock lock(mutex_);
  const auto it = by_path_.find(path);
  if (it == by_path_.end()) return 0;
  const auto& entry = *by_id_.at(it->second);
  entry.nlookup.fetch_add(1, std::memory_order_relaxed);
  out = entry.info;
  return it->second;
}

NodeId NodeTable::acquire(NodeInfo info, std::shared_ptr<const NodeInfo>& out) {
  if (const NodeId known = acquire_known(info.path, out); known != 0) return known;
  // Built before taking the exclusive lock: allocation is the slow part.
  auto built = std::make_shared<NodeInfo>(std::move(info));
  auto entry = std::make_unique<Entry>();
  entry->nlookup = 1;

  const std::unique_lock lock(mutex_);
  if (const auto it = by_path_.find(built->path); it != by_path_.end()) {
    // Another thread created it meanwhile.
    const auto& existing = *by_id_.at(it->second);
    existing.nlookup.fetch_add(1, std::memory_order_relaxed);
    out = existing.info;
    return it->second;
  }
  built->ino = claim_ino(built->path);
  entry->info = std::move(built);
  const NodeId id = next_id_++;
  out = entry->info;
  by_id_.emplace(id, std::move(entry));
  try {
    by_path_.emplace(std::string_view(out->path), id);
    by_ino_.emplace(out->ino, id);
  } catch (...) {
    by_path_.erase(std::string_view(out->path));
    by_id_.erase(id);
    throw;
  }
  return id;
}

bool NodeTable::forget(NodeId node, std::uint64_t nlookup) noexcept {
  if (node == kRootNode) return false;
  bool shrank = false;
  {
    const std::unique_lock lock(mutex_);
    const auto it = by_id_.find(node);
    if (it == by_id_.end()) return false;
    auto& count = it->second->nlookup;
    const std::uint64_t now = count.load(std::memory_order_relaxed);
    if (nlookup < now) {
      count.store(now - nlookup, std::memory_order_relaxed);
      return false;
    }
    if (const auto live = by_ino_.find(it->second->info->ino);
        live != by_ino_.end() && live->second == node) {
      by_ino_.erase(live);
    }
    // A gone node's path may name a newer node by now.
    if (const auto path = by_path_.find(std::string_view(it->second->info->path));
        path != by_path_.end() && path->second == node) {
      by_path_.erase(path);
    }
    by_id_.erase(it);
    shrank = shrink_if_sparse(by_id_);
    shrink_if_sparse(by_path_);
    shrink_if_sparse(by_ino_);
  }
  node_forgotten();
  return shrank;
}

NodeId NodeTable::id_of(std::string_view path) const {
  const std::shared_lock lock(mutex_);
  const auto it = by_path_.find(path);
  return it == by_path_.end() ? 0 : it->second;
}

void NodeTable::rebase(const Decide& decide) {
  const std::unique_lock lock(mutex_);
  for (auto& [id, entry] : by_id_) {
    if (entry->info->gone) continue;
    std::shared_ptr<const NodeInfo> next = decide(entry->info);
    if (next == entry->info) continue;
    if (next) {
      // Same path, but by_path_'s key views the old description's copy of it.
      if (const auto path = by_path_.find(std::string_view(entry->info->path));
          path != by_path_.end() && path->second == id) {
        by_path_.erase(path);
        by_path_.emplace(std::string_view(next->path), id);
      }
      entry->info = std::move(next);
      continue;
    }
    // by_path_ keys view the old description's path, which `gone` keeps alive until erased.
    auto gone = std::make_shared<NodeInfo>(*entry->info);
    gone->gone = true;
    if (const auto path = by_path_.find(std::string_view(entry->info->path));
        path != by_path_.end() && path->second == id) {
      by_path_.erase(path);
    }
    if (const auto live = by_ino_.find(entry->info->ino);
        live != by_ino_.end() && live->second == id) {
      by_ino_.erase(live);
    }
    entry->info = std::move(gone);
  }
}

std::size_t NodeTable::size() const {
  const std::shared_lock lock(mutex_);
  return by_id_.size();
}

}  // namespace heddle::worker::git
