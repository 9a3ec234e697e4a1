// Which host uid and gid the sandboxed worker runs as.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace heddle::launcher {

struct WorkerIdentity {
  uid_t uid = 0;
  gid_t gid = 0;
  bool subordinate = false;  // mapped through newuidmap/newgidmap
  std::string why;           // one line for the log
};

// The first id of `user`'s range in a /etc/subuid-style file (name or uid, start, count).
[[nodiscard]] std::optional<unsigned> subordinate_id_start(const std::string& file, uid_t user);

// Root's worker is nobody (or the mount's own user when root mounts for someone else). An
// unprivileged caller's worker gets a uid from its /etc/subuid and /etc/subgid ranges when
// newuidmap and newgidmap exist and every path of `named_paths` is readable by others, so a
// compromised worker is not even the caller; otherwise it runs as the caller. A writable
// mount's worker never gets a subordinate uid: the files it writes must be the caller's.
// `named_paths` are the source the user named (a directory, a repository's own .git), never
// what the repository's files name (gitdir, commondir, alternates): a repository does not
// choose who serves it. Those go to require_readable_by_worker.
// `whole_tree`: every file and directory below each path must be readable by others too, not
// only the path itself (a git directory, whose files libgit2 opens inside the worker and no
// file broker can stand in for); a directory source's private files go through the broker.
[[nodiscard]] WorkerIdentity choose_worker_identity(uid_t mount_uid, gid_t mount_gid,
                                                    const std::vector<std::string>& named_paths,
                                                    bool allow_subordinate, bool writable = false,
                                                    bool whole_tree = false);

// Refuses (EACCES) a path the repository's files chose that a subordinate worker could not
// read: the mount fails, naming it, instead of the worker running as the caller.
void require_readable_by_worker(const WorkerIdentity& worker,
                                const std::vector<std::string>& chosen_paths,
                                bool whole_tree = false);

}  // namespace heddle::launcher
