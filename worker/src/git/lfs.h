// Git LFS as `git lfs smudge` sees it, without git-lfs: a pointer blob (the spec's format,
// https://github.com/git-lfs/git-lfs/blob/main/docs/spec.md) names an object that git-lfs keeps
// in <common git dir>/lfs/objects/OID[0:2]/OID[2:4]/OID.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "heddle/unique_fd.h"

namespace heddle::worker::git {

// git-lfs reads no more of a blob to decide whether it is a pointer.
inline constexpr std::uint64_t kMaxLfsPointerSize = 1024;
// Objects up to this size are hashed before they are served; bigger ones are checked by size
// only (hashing gigabytes at every lookup would cost more than the whole mount).
inline constexpr std::uint64_t kLfsHashCheckLimit = 16ull << 20;

struct LfsPointer {
  std::string oid;  // 64 lowercase hex digits (sha256)
  std::uint64_t size = 0;
};

// The pointer `blob` holds, or nullopt if it is not one git-lfs would smudge without an
// extension program: "version URL\noid sha256:HEX\nsize N\n" exactly (no ext-* lines).
[[nodiscard]] std::optional<LfsPointer> parse_lfs_pointer(std::string_view blob);

// <common_dir>lfs/objects/ab/cd/abcd... (common_dir ends with '/', as libgit2 gives it).
[[nodiscard]] std::string lfs_object_path(const std::string& common_dir, const std::string& oid);

// The object `pointer` names, open for reading, if it is there as a regular file of the
// pointer's size and (up to kLfsHashCheckLimit, when `check_hash`) with the named sha256.
// Otherwise an invalid fd: the object counts as missing.
[[nodiscard]] UniqueFd open_lfs_object(const std::string& common_dir, const LfsPointer& pointer,
                                       bool check_hash);

}  // namespace heddle::worker::git
