// clone3 into fresh namespaces, returning a pidfd; clone(2) where clone3 is refused.
#pragma once

#include <sys/types.h>

#include "heddle/unique_fd.h"

namespace heddle::sandbox::detail {

struct Cloned {
  pid_t pid = -1;   // 0 in the child
  UniqueFd pidfd;   // parent only
  // How clone3 with every namespace was worked around, for one log line; nullptr when it
  // was not. A static string.
  const char* fallback = nullptr;
};

// The namespaces every sandboxed process gets: user, mount, pid, ipc, net, uts, cgroup.
unsigned long long sandbox_namespace_flags() noexcept;

// Fork-like clone with a pidfd and the namespaces in `flags`: clone3, else clone(2) (with
// CLONE_PIDFD, else pidfd_open), dropping the cgroup namespace if the kernel rejects it. The
// child returns with pid 0 and must only run async-signal-safe code. Throws heddle::Error
// naming the syscall that failed last, its errno and a hint when the host refuses.
Cloned clone_with_pidfd(unsigned long long flags);

}  // namespace heddle::sandbox::detail
