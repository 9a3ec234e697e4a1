#include "memory_limit.h"

#include <sys/resource.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "heddle/error.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define HEDDLE_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define HEDDLE_SANITIZED 1
#endif
#endif

namespace heddle::worker {

std::uint64_t default_memory_limit(std::uint64_t cache_bytes) noexcept {
  // The cache, what open files may hold beyond it (GitFs: 2 x cache + 512 MiB), 64 streams of
  // 1.1 MiB, libgit2's object cache (64 MiB), thread stacks and malloc arenas: 2 GiB covers
  // all but the caches with room to spare.
  return (2ull << 30) + 3 * cache_bytes;
}

MemoryLimitResult apply_memory_limit(std::uint64_t limit) {
  MemoryLimitResult out;
  if (limit == 0) {
    out.note = std::string(kMemoryLimitEnv) + "=0";
    return out;
  }
#ifdef HEDDLE_SANITIZED
  out.note = "a sanitizer build (its shadow memory would not fit)";
  return out;
#else
  struct rlimit current {};
  if (::getrlimit(RLIMIT_DATA, &current) != 0) {
    out.failed = true;
    out.note = std::string("getrlimit(RLIMIT_DATA): ") + std::strerror(errno);
    return out;
  }
  // Never raise: a lower limit from the host stays.
  if (current.rlim_cur != RLIM_INFINITY && current.rlim_cur <= limit) {
    out.bytes = current.rlim_cur;
    out.note = "the inherited limit is lower";
    return out;
  }
  struct rlimit wanted {static_cast<rlim_t>(limit), static_cast<rlim_t>(limit)};
  if (current.rlim_max != RLIM_INFINITY && current.rlim_max < wanted.rlim_max) {
    wanted.rlim_max = current.rlim_max;
  }
  if (::setrlimit(RLIMIT_DATA, &wanted) != 0) {
    out.failed = true;
    out.note = std::string("setrlimit(RLIMIT_DATA): ") + std::strerror(errno);
    return out;
  }
  out.bytes = limit;
  return out;
#endif
}

std::optional<std::uint64_t> memory_limit_from_env(const char* value) {
  if (value == nullptr || *value == '\0') return std::nullopt;
  std::uint64_t mib = 0;
  const char* end = value + std::strlen(value);
  const auto [ptr, ec] = std::from_chars(value, end, mib);
  if (ec != std::errc{} || ptr != end || mib > (std::uint64_t{1} << 40)) {
    throw Error(std::string(kMemoryLimitEnv) + "='" + value +
                    "' is not a number of MiB (0 for no limit)",
                EINVAL);
  }
  return mib << 20;
}

}  // namespace heddle::worker
