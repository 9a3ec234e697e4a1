// Repository files the worker reads itself (pack indexes, packs, loose objects, alternates):
// opened without following a final symlink and without blocking (a FIFO planted in the
// repository must not hang a FUSE thread, perhaps one holding a lock), and accepted only as
// regular files no larger than a cap (a link to /dev/zero must not exhaust memory).
#pragma once

#include <cstdint>
#include <string>

#include "heddle/unique_fd.h"

namespace heddle::worker::git {

struct RepoFile {
  UniqueFd fd;
  std::uint64_t size = 0;
  int error = 0;  // when !fd: ELOOP (a symlink), EINVAL (not a regular file), EFBIG, or open's
};

[[nodiscard]] RepoFile open_repo_file(const std::string& path, std::uint64_t max_size);

// The whole file, read through open_repo_file. 0 or its errno.
[[nodiscard]] int read_repo_file(const std::string& path, std::uint64_t max_size,
                                 std::string& out);

// For files libgit2 opens itself (HEAD, config, packed-refs, refs): 0 if `path` is missing or
// is (after symlinks) a regular file no larger than `max_size`, else EINVAL or EFBIG.
[[nodiscard]] int check_repo_file(const std::string& path, std::uint64_t max_size);

}  // namespace heddle::worker::git
