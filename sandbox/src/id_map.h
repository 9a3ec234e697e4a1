// Writing a child's user-namespace id maps from the parent.
#pragma once

#include <sys/types.h>

#include <string>

namespace heddle::sandbox::detail {

// Maps exactly `uid` and `gid` to themselves in the child's user namespace.
// When `deny_setgroups` (required of an unprivileged writer), "deny" goes to setgroups
// between the two maps. Throws heddle::Error.
void write_id_maps(pid_t child, uid_t uid, gid_t gid, bool deny_setgroups);

// The same single-id maps through the setuid newuidmap/newgidmap, which check them against
// /etc/subuid and /etc/subgid. Mapping no id of the caller leaves setgroups allowed.
void write_subordinate_id_maps(pid_t child, uid_t uid, gid_t gid);

// When Ubuntu's AppArmor restricts unprivileged user namespaces, a hint naming the sysctl
// and our profile; "" elsewhere. Such a host lets clone succeed and then refuses the maps
// or the mounts with EACCES or EPERM.
[[nodiscard]] std::string userns_restriction_hint();

}  // namespace heddle::sandbox::detail
