// clone3 into fresh namespaces, returning a pidfd.
#pragma once

#include <sys/types.h>

#include "heddle/unique_fd.h"

namespace heddle::sandbox::detail {

struct Cloned {
  pid_t pid = -1;   // 0 in the child
  UniqueFd pidfd;   // parent only
};

// The namespaces every sandboxed process gets: user, mount, pid, ipc, net, uts, cgroup.
unsigned long long sandbox_namespace_flags() noexcept;

// Fork-like clone3 with CLONE_PIDFD and `flags`; the child returns with pid 0 and must only
// run async-signal-safe code. Throws heddle::Error with a hint when the host refuses.
Cloned clone_with_pidfd(unsigned long long flags);

}  // namespace heddle::sandbox::detail
