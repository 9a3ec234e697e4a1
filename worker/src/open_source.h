// Everything the worker does differently per kind of source, in one place: a new kind is a
// new alternative of ipc::Source and one more case in each function here.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "backend.h"
#include "broker_client.h"
#include "heddle/ipc/mount_spec.h"

namespace heddle::worker {

// The read-only tree of `source`. Nodes a kind cannot give an owner of their own (a git tree)
// report `owner_uid`:`owner_gid`. A directory opens through `broker` what the worker may not
// (null: no broker). Throws heddle::Error.
[[nodiscard]] std::unique_ptr<Backend> open_source(const ipc::Source& source, uid_t owner_uid,
                                                   gid_t owner_gid,
                                                   std::shared_ptr<BrokerClient> broker = nullptr);

// "DIR" or "REPO thread T", for the log.
[[nodiscard]] std::string describe_source(const ipc::Source& source);

}  // namespace heddle::worker
