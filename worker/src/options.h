// The worker's command line: `--dir SOURCE --mountpoint MP --bootstrap-fd N [--test-ignore-stop] [--expect-sandbox]`.
#pragma once

#include <span>
#include <string>
#include <variant>

namespace heddle::worker {

struct Options {
  std::string dir;         // the directory to serve, read-only
  std::string mountpoint;  // where the supervisor mounted the connection; only reported back
  int bootstrap_fd = -1;   // socket carrying [ipc socket, /dev/fuse fd] and the host pid
  bool test_ignore_stop = false;  // tests only: ignore Stop frames and SIGTERM
  bool expect_sandbox = false;    // refuse to serve unless confined (the launcher sets it)
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
