// A successor worker's rebuild (issue 16): every node of a decoded journal is found again
// through the backend, from the root down, under its old id and with its old lookup count; every
// handle is reopened with its recorded flags. What cannot be found again, or is not what the
// kernel was told (another inode number or file type), stays unknown: the kernel's next request
// for it gets ESTALE (a node) or EBADF (a handle), never another file's data.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "backend.h"
#include "node_journal.h"
#include "open_handles.h"

namespace heddle::worker {

struct RestoreReport {
  JournalState kept;  // what was restored: the successor's journal starts from it
  std::size_t nodes = 0;
  std::size_t stale_nodes = 0;
  std::size_t handles = 0;
  std::size_t lost_handles = 0;
  // The names, as recorded, of the stale nodes whose parent is back: where the kernel may
  // still cache a stale node (under this name, if the journal told the truth).
  std::vector<std::pair<NodeId, std::string>> stale_names;
};

// Throws heddle::Error (ENOTSUP) for a backend that cannot keep node ids.
[[nodiscard]] RestoreReport restore_journal(Backend& fs, OpenHandles& handles,
                                            const JournalState& state);

// Opened for writing, as fuse_ops decides it (O_TRUNC and O_APPEND count).
[[nodiscard]] bool opens_for_writing(int flags) noexcept;

}  // namespace heddle::worker
