// The syscall filter every sandboxed process runs under.
#pragma once

#include <linux/filter.h>

#include <vector>

namespace heddle::sandbox::detail {

// Compiled with libseccomp in the parent (it allocates), loaded raw in the child.
// Denies, with EPERM: mounting and namespace changes, tracing, module/kexec/bpf/keyring/perf
// facilities, userfaultfd, io_uring, handle-based opens, tty injection; clone with any
// CLONE_NEW* flag. clone3 fails with ENOSYS because a filter cannot read its flags, so libc
// falls back to clone, whose flags it can. Other architectures' syscalls kill the process.
[[nodiscard]] std::vector<sock_filter> compile_seccomp_policy();

}  // namespace heddle::sandbox::detail
