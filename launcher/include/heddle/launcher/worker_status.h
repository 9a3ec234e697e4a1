// What the supervisor takes from its worker's MountReady and StatusOk. The worker is the
// sandboxed, untrusted side: pid and mount_path are the supervisor's to say (it started the
// process and made the mount), and of the extra fields only those a worker sends, each with
// its type, are passed on to `status`, `list` and the logs.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "heddle/ipc/message.h"

namespace heddle::launcher {

// Why fields of a worker's reply were replaced or dropped: one short line each, for the log.
struct WorkerReplyCheck {
  std::vector<std::string> problems;
};

// `ready` with the worker's real pid and the mountpoint; a differing claim is a problem.
[[nodiscard]] ipc::MountReady checked_mount_ready(const ipc::MountReady& ready, pid_t worker_pid,
                                                  const std::string& mountpoint,
                                                  WorkerReplyCheck& check);

// `status` with pid and mount_path as above, and only the known extra fields of the right
// type (counters: unsigned integers; serving: a bool; commit, tree: hex object ids, commit
// also null). Fields the supervisor fills itself (source, thread, writable, overlay, the
// pids, ...) are dropped without a word; anything else dropped is a problem.
[[nodiscard]] ipc::StatusOk checked_status(const ipc::StatusOk& status, pid_t worker_pid,
                                           const std::string& mountpoint,
                                           WorkerReplyCheck& check);

}  // namespace heddle::launcher
