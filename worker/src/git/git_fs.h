// A git tree (a heddle thread) served read-only through the Backend interface, with libgit2.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "backend.h"

namespace heddle::worker {

struct GitFsOptions {
  std::string repo_root;  // a work tree (with a .git dir or file) or a bare repository
  std::string thread;     // refs/heads/T, then refs/heddle/threads/T, then any revspec
  std::uint64_t cache_bytes = 256ull << 20;  // LRU of inflated blobs; larger blobs stream
  // Bytes open files may hold whole (the cache's blobs included, once each); past it, opens
  // stream or fail with ENOMEM. 0: 2 x cache_bytes + 512 MiB (room for a delta blob larger
  // than the cache, which has to be read whole).
  std::uint64_t held_bytes = 0;
  uid_t owner_uid = 0;    // reported as every node's owner (the user the mount is for)
  gid_t owner_gid = 0;
};

// Opens the repository and resolves the thread; reads nothing else (no tree walk, no blob).
// Throws heddle::Error whose what() is the MountError text: it says what is wrong and where
// (not a repository; unknown thread, listing up to 10 heads; a blob; unreadable for uid/gid).
[[nodiscard]] std::unique_ptr<Backend> open_git_fs(const GitFsOptions& options);

}  // namespace heddle::worker
