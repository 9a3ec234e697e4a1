// The worker's command line. One backend: `--dir SOURCE`, or `--repo-root REPO --thread-id T
// [--cache-bytes N]`; plus `--mountpoint MP --bootstrap-fd N [--owner UID:GID]
// [--overlay DIR] [--test-ignore-stop] [--expect-sandbox[=degraded]]`.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>
#include <variant>

namespace heddle::worker {

struct Options {
  std::string dir;         // directory backend: the directory to serve, read-only
  std::string repo_root;   // git backend: the repository
  std::string thread_id;   // git backend: the thread (ref or revision) to serve
  std::uint64_t cache_bytes = 256ull << 20;  // git backend: the inflated-blob cache's cap
  std::string overlay_dir;  // non-empty: writable, changes kept in this directory
  uid_t owner_uid = 0;     // git backend and overlay: the owner every node reports (the mount's user)
  gid_t owner_gid = 0;
  std::string mountpoint;  // where the supervisor mounted the connection; only reported back
  int bootstrap_fd = -1;   // socket carrying [ipc socket, /dev/fuse fd] and the host pid
  bool test_ignore_stop = false;  // tests only: ignore Stop frames and SIGTERM
  bool expect_sandbox = false;    // refuse to serve unless confined (the launcher sets it)
  bool degraded_sandbox = false;  // confined without a user namespace: the bounding set stays

  [[nodiscard]] bool git() const noexcept { return !repo_root.empty(); }
};

struct HelpRequested {};
struct UsageError {
  std::string message;
};

using ParsedArgs = std::variant<Options, HelpRequested, UsageError>;

// `args` excludes argv[0]. Accepts `--flag VALUE` and `--flag=VALUE`.
[[nodiscard]] ParsedArgs parse_args(std::span<const char* const> args);

[[nodiscard]] std::string usage_text();

}  // namespace heddle::worker
