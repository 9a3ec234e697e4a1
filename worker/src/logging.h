// spdlog to stderr as "heddle-fuse-worker", level from HEDDLE_FUSE_LOG; libfuse's own messages
// are routed through it.
#pragma once

namespace heddle::worker {

// Installs the default logger. Call once, first thing in main().
void init_logging();

// True when HEDDLE_FUSE_LOG asks for trace (libfuse's per-request debug output is enabled then).
[[nodiscard]] bool trace_logging();

// Flushes every sink; call before _exit().
void flush_logs() noexcept;

}  // namespace heddle::worker
