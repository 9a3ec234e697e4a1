// Everything the launcher does differently per kind of source, in one place: a new kind is a
// new alternative of ipc::Source and one more case in each function here.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "heddle/ipc/mount_spec.h"
#include "heddle/launcher/overlay_dir.h"

namespace heddle::launcher {

// An existing directory, canonical; `role` names it in the error.
[[nodiscard]] std::string canonical_source(const std::string& path, const char* role);

// The same source with its paths canonical (and checked to be directories).
[[nodiscard]] ipc::Source canonical(const ipc::Source& source);

// What the worker reads, bound read-only into its sandbox. For a thread that is the git dir
// and its kin, not the work tree: heddle mounts threads inside the work tree. A DirSource
// without a path (sandbox-exec without a source) binds nothing.
[[nodiscard]] std::vector<std::string> source_binds(const ipc::Source& source);

// "DIR" or "REPO#THREAD": messages and the mount's fsname.
[[nodiscard]] std::string source_label(const ipc::Source& source);

// The Status fields `status` and `list` show: "source", and "thread" for a thread.
void add_source_status(const ipc::Source& source, nlohmann::ordered_json& extra);

// What an overlay of this source records in source.json and is keyed by.
[[nodiscard]] OverlaySource overlay_source(const ipc::Source& source);

}  // namespace heddle::launcher
