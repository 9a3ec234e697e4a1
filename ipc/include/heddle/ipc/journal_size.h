// The node journal memfd's size and seals (issue 16). The supervisor makes the memfd this size
// and seals it, so that no worker can grow it (a hostile one would otherwise fill the host's
// memory through it) or shrink it under its successor; the worker writes within it. The format
// is the worker's (worker/src/node_journal.h); only the size is shared.
#pragma once

#include <fcntl.h>

#include <cstddef>

namespace heddle::ipc {

inline constexpr std::size_t kJournalHeaderBytes = 4096;
inline constexpr std::size_t kJournalRegionBytes = std::size_t{32} << 20;
inline constexpr std::size_t kJournalBytes = kJournalHeaderBytes + 2 * kJournalRegionBytes;
// Not F_SEAL_WRITE: every worker of the mount writes it in place.
inline constexpr int kJournalSeals = F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL;

}  // namespace heddle::ipc
