#include "seccomp_policy.h"

#include <linux/prctl.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <iterator>
#include <memory>
#include <string>

#include "heddle/error.h"
#include "heddle/unique_fd.h"

namespace heddle::sandbox::detail {
namespace {

// What the worker, its libraries (glibc, libstdc++, libfuse 3.14, libgit2, zlib, spdlog,
// libcap-ng), the asan and tsan runtimes, and the commands `sandbox-exec` is documented for (a
// shell, coreutils, the escape probe; a shell's children only where allowed) were seen to call under `strace -f` through the test
// suites' real mounts, with the plain variants of the calls seen (lstat beside newfstatat,
// dup2 beside dup3) for other libcs and architectures, and what sanitizer runtimes are known
// to call (sigaltstack, madvise, sched_getaffinity, readlink, prctl queries). No splice,
// sendfile or copy_file_range: libfuse moves data with read and writev here. Names this
// libseccomp does not know (the legacy calls on arm64) are skipped.
constexpr const char* kAllowed[] = {
    // Files and descriptors.
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
    "preadv2", "pwritev2", "open", "openat", "openat2", "creat", "close", "close_range",
    "lseek", "dup", "dup2", "dup3", "fcntl", "pipe", "pipe2",
    "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs",
    "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents64", "getcwd",
    "chdir", "fchdir", "umask", "fadvise64",
    // A directory source watched for changes (worker/src/source_watch.h).
    "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
    // A writable mount's overlay (copy-up, whiteouts, renames, durability).
    "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2",
    "link", "linkat", "symlink", "symlinkat", "mknodat", "chmod", "fchmod", "fchmodat",
    "chown", "fchown", "fchownat", "lchown", "truncate", "ftruncate", "fallocate", "fsync",
    "fdatasync", "syncfs", "utimensat", "getxattr", "lgetxattr", "fgetxattr",
    "setxattr", "lsetxattr", "fsetxattr", "listxattr", "llistxattr", "flistxattr",
    "removexattr", "lremovexattr", "fremovexattr",
    // Memory.
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync",
    // Threads (clone is narrowed below), exec, waiting and time. fork and vfork: below.
    "execve", "exit", "exit_group", "wait4", "waitid", "set_tid_address",
    "set_robust_list", "get_robust_list", "rseq", "futex", "sched_yield",
    "sched_getaffinity", "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres",
    "gettimeofday", "time", "times", "arch_prctl",
    // Signals. A process group and a pid namespace of its own bound whom kill reaches.
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_sigpending", "sigaltstack", "kill", "tgkill", "tkill", "alarm", "setitimer",
    "getitimer",
    // Waiting on descriptors (no epoll, eventfd, signalfd or timerfd: nothing here uses them).
    "poll", "ppoll", "select", "pselect6",
    // Sockets received ready-made (the IPC socket): used, never made or connected.
    "sendmsg", "recvmsg", "sendto", "recvfrom", "shutdown", "getsockopt", "getsockname",
    "getpeername",
    // Who and where it is.
    "getpid", "gettid", "getppid", "getpgrp", "getpgid", "setpgid", "getsid", "setsid",
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
    "capget", "uname", "sysinfo", "getrlimit", "prlimit64", "getrusage", "getpriority",
    "getrandom", "getcpu",
};

// Refused with EPERM by name, as the kernel refuses an unprivileged caller: what a
// compromised worker would try first, so that the refusal is deliberate and reads so.
constexpr const char* kRefused[] = {
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    "bpf", "perf_event_open", "userfaultfd",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "keyctl", "add_key", "request_key",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "name_to_handle_at", "open_by_handle_at",
    "swapon", "swapoff", "reboot", "syslog", "acct", "quotactl", "quotactl_fd",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "iopl", "ioperm", "fanotify_init", "vhangup", "lookup_dcookie",
    // The worker receives its sockets ready-made (the IPC socketpair; the FUSE fd through
    // SCM_RIGHTS): a socket it could make or connect would reach Unix sockets in whatever a
    // bind shows (an object store's directory), or the host's abstract namespace.
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
};

// Starting a process. The worker starts none (libfuse with an adopted fd and libgit2 never
// do): a child could outlive it and keep reading /dev/fuse after its successor took over,
// which a sandbox without a pid namespace (degraded) would not stop. Refused with EPERM unless
// the sandbox allows children (SandboxSpec::allow_child_processes); clone is narrowed below.
constexpr const char* kProcesses[] = {"fork", "vfork"};

constexpr unsigned long long kNamespaceFlags[] = {
    CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET,
    CLONE_NEWIPC,  CLONE_NEWUTS, CLONE_NEWCGROUP, CLONE_NEWTIME,
};

// The ioctls allowed, on any fd: terminal queries (isatty, the window size) and the generic
// fd ones. libfuse 3.14 needs none: with clone_fd off it never calls FUSE_DEV_IOC_CLONE, and
// the FUSE fd carries only read and writev. Not TIOCSTI or TIOCLINUX, which type into or
// act on the caller's terminal.
constexpr unsigned long kAllowedIoctls[] = {
    TCGETS, TIOCGWINSZ, TIOCGPGRP, FIONREAD, FIONBIO, FIOCLEX, FIONCLEX,
};

// prctl: naming threads, dumpability, and the read-only queries libcap-ng and the sanitizer
// runtimes make. Not PR_SET_MM, PR_SET_PTRACER, PR_SET_SECUREBITS, PR_CAP_AMBIENT raises,
// PR_SET_SPECULATION_CTRL and the rest.
constexpr int kAllowedPrctls[] = {
    PR_SET_NAME,         PR_GET_NAME,    PR_SET_DUMPABLE, PR_GET_DUMPABLE,
    PR_GET_NO_NEW_PRIVS, PR_SET_NO_NEW_PRIVS, PR_CAPBSET_READ, PR_GET_SECCOMP,
    PR_GET_KEEPCAPS,     PR_GET_SECUREBITS, PR_SET_PDEATHSIG, PR_GET_PDEATHSIG,
    PR_SET_VMA,          PR_GET_TIMERSLACK,
};

// The query form of personality(2): it changes nothing.
constexpr unsigned int kPersonalityQuery = 0xffffffffu;

// The kernel reads ioctl's request, prctl's option and personality's argument as 32 bits.
constexpr scmp_datum_t kLow32 = 0xffffffffu;

struct ContextDeleter {
  void operator()(scmp_filter_ctx ctx) const { seccomp_release(ctx); }
};
using Context = std::unique_ptr<void, ContextDeleter>;

void check(int rc, const std::string& what) {
  if (rc < 0) throw Error("seccomp policy: " + what, -rc, "is libseccomp >= 2.5 installed?");
}

template <typename... Cmp>
void add_rule(scmp_filter_ctx ctx, uint32_t action, const char* name, Cmp... cmps) {
  const int nr = seccomp_syscall_resolve_name(name);
  if (nr == __NR_SCMP_ERROR) return;  // unknown to this libseccomp on this architecture
  check(seccomp_rule_add(ctx, action, nr, sizeof...(cmps), cmps...),
        std::string("rule for ") + name);
}

void add_narrowed_rules(scmp_filter_ctx ctx, bool children) {
  const uint32_t deny = SCMP_ACT_ERRNO(EPERM);
  // Threads (CLONE_THREAD), and plain children only if allowed; never a new namespace. clone3
  // hides its flags behind a pointer the filter cannot read: it is not listed, so it gets
  // ENOSYS and libc falls back to clone.
  unsigned long long all_namespaces = 0;
  for (unsigned long long flag : kNamespaceFlags) {
    all_namespaces |= flag;
    add_rule(ctx, deny, "clone", SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
  }
  if (children) {
    add_rule(ctx, SCMP_ACT_ALLOW, "clone", SCMP_A0(SCMP_CMP_MASKED_EQ, all_namespaces, 0));
  } else {
    const unsigned long long decided = all_namespaces | CLONE_THREAD;
    add_rule(ctx, SCMP_ACT_ALLOW, "clone", SCMP_A0(SCMP_CMP_MASKED_EQ, decided, CLONE_THREAD));
    add_rule(ctx, deny, "clone", SCMP_A0(SCMP_CMP_MASKED_EQ, decided, 0));
  }

  for (unsigned long request : kAllowedIoctls) {
    add_rule(ctx, SCMP_ACT_ALLOW, "ioctl", SCMP_A1(SCMP_CMP_MASKED_EQ, kLow32, request));
  }
  for (unsigned long request : {TIOCSTI, TIOCLINUX}) {
    add_rule(ctx, deny, "ioctl", SCMP_A1(SCMP_CMP_MASKED_EQ, kLow32, request));
  }
  for (int option : kAllowedPrctls) {
    add_rule(ctx, SCMP_ACT_ALLOW, "prctl",
             SCMP_A0(SCMP_CMP_MASKED_EQ, kLow32, static_cast<scmp_datum_t>(option)));
  }
  // libcap-ng asks whether each ambient capability is set.
  add_rule(ctx, SCMP_ACT_ALLOW, "prctl", SCMP_A0(SCMP_CMP_MASKED_EQ, kLow32, PR_CAP_AMBIENT),
           SCMP_A1(SCMP_CMP_EQ, PR_CAP_AMBIENT_IS_SET));
  add_rule(ctx, SCMP_ACT_ALLOW, "personality",
           SCMP_A0(SCMP_CMP_MASKED_EQ, kLow32, kPersonalityQuery));
  add_rule(ctx, deny, "personality", SCMP_A0(SCMP_CMP_NE, kPersonalityQuery));
}

}  // namespace

std::span<const char* const> allowed_syscalls() noexcept { return kAllowed; }
std::span<const char* const> refused_syscalls() noexcept { return kRefused; }
std::span<const char* const> process_syscalls() noexcept { return kProcesses; }
std::span<const char* const> narrowed_syscalls() noexcept {
  static constexpr const char* kNarrowed[] = {"clone", "ioctl", "prctl", "personality"};
  return kNarrowed;
}

std::vector<sock_filter> compile_seccomp_policy(bool allow_child_processes) {
  // Anything not allowed below fails with ENOSYS: a call this list does not know, including
  // those future kernels add, then looks like one an older kernel lacks, which glibc and the
  // libraries handle by falling back (clone3 to clone, statx to fstatat, getrandom to
  // /dev/urandom, faccessat2, close_range, epoll_pwait2) instead of failing hard on EPERM.
  Context ctx(seccomp_init(SCMP_ACT_ERRNO(ENOSYS)));
  if (!ctx) throw Error("seccomp policy: seccomp_init", ENOMEM);
  check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS),
        "bad-arch action");
  // We set no_new_privs ourselves, right before loading.
  check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 0), "nnp attribute");

  for (const char* name : kAllowed) add_rule(ctx.get(), SCMP_ACT_ALLOW, name);
  for (const char* name : kRefused) add_rule(ctx.get(), SCMP_ACT_ERRNO(EPERM), name);
  for (const char* name : kProcesses) {
    add_rule(ctx.get(), allow_child_processes ? SCMP_ACT_ALLOW : SCMP_ACT_ERRNO(EPERM), name);
  }
  add_narrowed_rules(ctx.get(), allow_child_processes);

  // libseccomp 2.5 exports only to an fd.
  UniqueFd mem(::memfd_create("heddle-seccomp", MFD_CLOEXEC));
  if (!mem) throw_errno("seccomp policy: memfd_create");
  check(seccomp_export_bpf(ctx.get(), mem.get()), "export");
  struct stat st {};
  if (::fstat(mem.get(), &st) != 0) throw_errno("seccomp policy: fstat");
  std::vector<sock_filter> program(static_cast<std::size_t>(st.st_size) / sizeof(sock_filter));
  const auto bytes = static_cast<ssize_t>(program.size() * sizeof(sock_filter));
  if (::pread(mem.get(), program.data(), static_cast<std::size_t>(bytes), 0) != bytes) {
    throw_errno("seccomp policy: read back the program");
  }
  return program;
}

}  // namespace heddle::sandbox::detail
