// Everything the launcher does differently per kind of source, in one place: a new kind is a
// new alternative of ipc::Source and one more case in each function here.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "heddle/ipc/mount_spec.h"
#include "heddle/launcher/overlay_dir.h"
#include "heddle/launcher/source_access.h"

namespace heddle::launcher {

// An existing directory, canonical; `role` names it in the error.
[[nodiscard]] std::string canonical_source(const std::string& path, const char* role);

// The same source with its paths canonical (and checked to be directories), resolved with the
// authority of the mount's user `uid`/`gid` (as_mount_user): never root's on its behalf.
[[nodiscard]] ipc::Source canonical(const ipc::Source& source, uid_t uid, gid_t gid);

// What the worker reads, bound read-only into its sandbox, each path resolved and opened as the
// mount's user (as_mount_user) and bound only while it is still what was opened. For a thread
// that is the git dir and its kin (git_layout.h), not the work tree: heddle mounts threads
// inside the work tree. A DirSource without a path (sandbox-exec without a source) binds
// nothing. A path the mount's user may not read fails with EACCES and a hint naming the user.
[[nodiscard]] std::vector<SourceBind> source_binds(const ipc::Source& source, uid_t uid, gid_t gid);

// The paths of `binds`.
// The directories the file broker opens beneath (file_broker.h), opened as the mount's user;
// root 0 is the one the worker's requests name. A directory: the directory. A git thread:
// none, since libgit2 opens the repository's files itself and could not ask; its worker's
// identity must read them (worker_identity.h).
[[nodiscard]] std::vector<UniqueFd> source_broker_roots(const ipc::Source& source, uid_t uid,
                                                        gid_t gid);

[[nodiscard]] std::vector<std::string> bind_paths(const std::vector<SourceBind>& binds);

// "DIR" or "REPO#THREAD": messages and the mount's fsname.
[[nodiscard]] std::string source_label(const ipc::Source& source);

// The worker program that serves `source`: "heddle-fuse-worker" for a directory,
// "heddle-fuse-worker-git" for a git thread (only it links libgit2, whose 16 shared objects
// would otherwise be loaded by every spawn).
[[nodiscard]] const char* worker_program(const ipc::Source& source);

// The Status fields `status` and `list` show: "source", and "thread" for a thread.
void add_source_status(const ipc::Source& source, nlohmann::ordered_json& extra);

// What an overlay of this source records in source.json and is keyed by.
[[nodiscard]] OverlaySource overlay_source(const ipc::Source& source);

}  // namespace heddle::launcher
