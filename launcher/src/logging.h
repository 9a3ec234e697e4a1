// Where the CLI's log goes: stderr (or the journal, when stderr is a journal stream), and for
// a background supervisor its per-mount log file.
#pragma once

#include <string>

namespace heddle::launcher {

// The level is HEDDLE_FUSE_LOG in spdlog's syntax (default info), or info moved by `verbosity`
// (-v/-q) if nonzero. Returns the level -v/-q chose ("debug"), which then replaces
// HEDDLE_FUSE_LOG for the worker too, or empty.
[[nodiscard]] std::string configure_logging(int verbosity);

// True when stderr is connected to systemd-journald ($JOURNAL_STREAM names its device:inode).
[[nodiscard]] bool stderr_is_journal();

// From now on log to `path`, rotated at 1 MiB with 3 old files kept; also to the journal if
// `journal`. The level stays.
void log_to_file(const std::string& path, bool journal);

}  // namespace heddle::launcher
