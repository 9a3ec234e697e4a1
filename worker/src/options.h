// The worker's command line: `--bootstrap-fd N` and nothing else. What to serve, and where,
// arrives on that fd (ipc/mount_spec.h), so no path shows in /proc/PID/cmdline.
#pragma once

#include <span>
#include <string>
#include <variant>

namespace heddle::worker {

struct Options {
  int bootstrap_fd = -1;  // socket carrying [ipc socket, /dev/fuse fd] and the WorkerBootstrap
};

struct HelpRequested {};
struct UsageError {
  std::string message;
};

using ParsedArgs = std::variant<Options, HelpRequested, UsageError>;

// `args` excludes argv[0]. Accepts `--bootstrap-fd N` and `--bootstrap-fd=N`.
[[nodiscard]] ParsedArgs parse_args(std::span<const char* const> args);

[[nodiscard]] std::string usage_text();

}  // namespace heddle::worker
