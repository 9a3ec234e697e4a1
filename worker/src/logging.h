// spdlog to stderr as "heddle-fuse-worker", level from HEDDLE_FUSE_LOG; libfuse's own messages
// are routed through it.
#pragma once

#include <string>

namespace heddle::worker {

// Installs the default logger, at the levels `log_levels` (HEDDLE_FUSE_LOG's value, which
// main() read) asks for. Call once, first thing in main().
void init_logging(const std::string& log_levels);

// True when HEDDLE_FUSE_LOG asks for trace (libfuse's per-request debug output is enabled then).
[[nodiscard]] bool trace_logging();

// Flushes every sink; call before _exit().
void flush_logs() noexcept;

}  // namespace heddle::worker
