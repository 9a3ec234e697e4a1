// The worker's memory ceiling: RLIMIT_DATA (heap, anonymous and private writable mappings;
// read-only file mappings such as packs do not count), set on itself before serving, so that
// a repository crafted to make it allocate without end fails with ENOMEM instead of taking
// the host's memory. Sized from what the backend may legitimately hold (see README), so that
// normal use never reaches it; HEDDLE_FUSE_WORKER_MEMORY_LIMIT_MIB overrides it (0: none).
// Sanitizer builds reserve terabytes of shadow memory and are left unlimited.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "heddle/ipc/worker_env.h"

namespace heddle::worker {

using ipc::kMemoryLimitEnv;

// The default for a mount whose blob cache is `cache_bytes` (0 for a directory source).
[[nodiscard]] std::uint64_t default_memory_limit(std::uint64_t cache_bytes) noexcept;

// Applies `limit` bytes (0: none). Returns what was set, for the log, or an error text.
struct MemoryLimitResult {
  std::uint64_t bytes = 0;  // 0: no limit set
  std::string note;         // why none was set, or the error
  bool failed = false;
};
[[nodiscard]] MemoryLimitResult apply_memory_limit(std::uint64_t limit);

// The limit the environment asks for (kMemoryLimitEnv in MiB), or nullopt if unset. Throws
// heddle::Error for a value that is not a number.
[[nodiscard]] std::optional<std::uint64_t> memory_limit_from_env(const char* value);

}  // namespace heddle::worker
