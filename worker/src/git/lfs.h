// Git LFS as `git lfs smudge` sees it, without git-lfs: a pointer blob (the spec's format,
// https://github.com/git-lfs/git-lfs/blob/main/docs/spec.md) names an object that git-lfs keeps
// in <common git dir>/lfs/objects/OID[0:2]/OID[2:4]/OID.
#pragma once

#include <cstdint>
#include <string>

#include "heddle/lfs_pointer.h"
#include "heddle/unique_fd.h"

namespace heddle::worker::git {

// Objects up to this size are hashed before they are served; bigger ones are checked by size
// only (hashing gigabytes at every lookup would cost more than the whole mount).
inline constexpr std::uint64_t kLfsHashCheckLimit = 16ull << 20;

// One pointer format for the worker and capture (heddle/lfs_pointer.h).
using heddle::kMaxLfsPointerSize;
using heddle::lfs_object_path;
using heddle::LfsPointer;
using heddle::parse_lfs_pointer;

// The object `pointer` names, open for reading, if it is there as a regular file of the
// pointer's size and (up to kLfsHashCheckLimit, when `check_hash`) with the named sha256.
// Otherwise an invalid fd: the object counts as missing.
[[nodiscard]] UniqueFd open_lfs_object(const std::string& common_dir, const LfsPointer& pointer,
                                       bool check_hash);

}  // namespace heddle::worker::git
