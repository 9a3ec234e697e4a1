// A pack's .idx (version 2), mapped read-only, to find where an object starts in its .pack.
// We need this because libgit2 can only stream loose objects (git_odb_open_rstream), and a
// blob larger than the cache must be inflated from the pack a buffer at a time.
#pragma once

#include <git2/oid.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace heddle::worker::git {

class PackIndex {
 public:
  // Maps `idx_path` and checks its layout; null if it is missing, unreadable or not a
  // version 2 index (then the objects in it are read through libgit2).
  [[nodiscard]] static std::unique_ptr<PackIndex> open(const std::string& idx_path);
  ~PackIndex();
  PackIndex(const PackIndex&) = delete;
  PackIndex& operator=(const PackIndex&) = delete;

  // The object's offset in the .pack, if this index lists it.
  [[nodiscard]] std::optional<std::uint64_t> find(const git_oid& oid) const noexcept;
  // The .pack next to the .idx.
  [[nodiscard]] const std::string& pack_path() const noexcept { return pack_path_; }
  [[nodiscard]] std::uint32_t count() const noexcept { return count_; }

 private:
  PackIndex(const unsigned char* map, std::size_t size, std::uint32_t count, std::string pack)
      : map_(map), size_(size), count_(count), pack_path_(std::move(pack)) {}

  const unsigned char* map_;
  std::size_t size_;
  std::uint32_t count_;
  std::string pack_path_;
};

}  // namespace heddle::worker::git
