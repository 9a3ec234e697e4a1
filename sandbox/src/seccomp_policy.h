// The syscall filter every sandboxed process runs under.
#pragma once

#include <linux/filter.h>

#include <span>
#include <vector>

namespace heddle::sandbox::detail {

// Compiled with libseccomp in the parent (it allocates), loaded raw in the child.
// An allow list: every call not on it fails with ENOSYS (an unknown or future call looks like
// one an older kernel lacks, so libc falls back). Refused with EPERM by name: mounting and
// namespace changes, tracing, module/kexec/bpf/keyring/perf facilities, userfaultfd, io_uring,
// handle-based opens, and making or connecting sockets; and, unless `allow_child_processes`,
// starting a process (fork, vfork, clone without CLONE_THREAD): a worker's child could outlive
// it and keep its FUSE fd. Narrowed by argument: clone with CLONE_THREAD (threads) and without
// CLONE_NEW* flags (with one: EPERM), clone3 ENOSYS (its flags sit behind a pointer, so libc
// falls back to clone), ioctl for terminal queries and generic fd requests only (TIOCSTI and
// TIOCLINUX: EPERM), prctl for naming, dumpability and queries, personality's query form
// only (a change: EPERM). Other architectures' syscalls kill the process.
[[nodiscard]] std::vector<sock_filter> compile_seccomp_policy(bool allow_child_processes = false);

// The lists the program is built from, by name, for the tests: allowed whatever the
// arguments; refused with EPERM; decided by argument (above).
[[nodiscard]] std::span<const char* const> allowed_syscalls() noexcept;
[[nodiscard]] std::span<const char* const> refused_syscalls() noexcept;
// Starting a process: refused with EPERM, or allowed with allow_child_processes.
[[nodiscard]] std::span<const char* const> process_syscalls() noexcept;
[[nodiscard]] std::span<const char* const> narrowed_syscalls() noexcept;

}  // namespace heddle::sandbox::detail
