// Writing a child's user-namespace id maps from the parent.
#pragma once

#include <sys/types.h>

namespace heddle::sandbox::detail {

// Maps exactly `uid` and `gid` to themselves in the child's user namespace.
// When `deny_setgroups` (required of an unprivileged writer), "deny" goes to setgroups
// between the two maps. Throws heddle::Error.
void write_id_maps(pid_t child, uid_t uid, gid_t gid, bool deny_setgroups);

}  // namespace heddle::sandbox::detail
