#include "seccomp_policy.h"

#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>

#include "heddle/error.h"
#include "heddle/unique_fd.h"

namespace heddle::sandbox::detail {
namespace {

constexpr const char* kDeniedSyscalls[] = {
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
};

constexpr unsigned long kNamespaceFlags[] = {
    CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET,
    CLONE_NEWIPC,  CLONE_NEWUTS, CLONE_NEWCGROUP, CLONE_NEWTIME,
};

struct ContextDeleter {
  void operator()(scmp_filter_ctx ctx) const { seccomp_release(ctx); }
};
using Context = std::unique_ptr<void, ContextDeleter>;

void check(int rc, const std::string& what) {
  if (rc < 0) throw Error("seccomp policy: " + what, -rc, "is libseccomp >= 2.5 installed?");
}

void add_rule(scmp_filter_ctx ctx, uint32_t action, const char* name, unsigned count = 0,
              scmp_arg_cmp cmp = {}) {
  const int nr = seccomp_syscall_resolve_name(name);
  if (nr == __NR_SCMP_ERROR) return;  // unknown to this libseccomp: nothing to deny
  check(count == 0 ? seccomp_rule_add(ctx, action, nr, 0)
                   : seccomp_rule_add(ctx, action, nr, count, cmp),
        std::string("rule for ") + name);
}

}  // namespace

std::vector<sock_filter> compile_seccomp_policy() {
  Context ctx(seccomp_init(SCMP_ACT_ALLOW));
  if (!ctx) throw Error("seccomp policy: seccomp_init", ENOMEM);
  check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS),
        "bad-arch action");
  // We set no_new_privs ourselves, right before loading.
  check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 0), "nnp attribute");

  const uint32_t deny = SCMP_ACT_ERRNO(EPERM);
  for (const char* name : kDeniedSyscalls) add_rule(ctx.get(), deny, name);
  add_rule(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), "clone3");
  for (unsigned long flag : kNamespaceFlags) {
    add_rule(ctx.get(), deny, "clone", 1, SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
  }
  add_rule(ctx.get(), deny, "ioctl", 1, SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCSTI));
  add_rule(ctx.get(), deny, "ioctl", 1, SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCLINUX));

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
