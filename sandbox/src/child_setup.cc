#include "child_setup.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <linux/seccomp.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <csignal>
#include <cerrno>

namespace heddle::sandbox::detail {
namespace {

// The kernel's struct sigaction for rt_sigaction on x86_64 and arm64 (glibc's differs).
struct kernel_sigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)();
  unsigned long mask;
};

// Every call goes through syscall(2): the sanitizers intercept the libc wrappers, and their
// interceptors are not safe in a child cloned from a multithreaded parent.
long sys(long number, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0) {
  long rc;
  do {
    rc = ::syscall(number, a, b, c, d, e);
  } while (rc < 0 && errno == EINTR);
  return rc;
}

template <typename T>
long ptr(T* p) {
  return reinterpret_cast<long>(p);
}

[[noreturn]] void fail(const ChildPlan& plan, SetupStage stage, int index = -1) {
  const SetupReport report{static_cast<int>(stage), errno, index};
  sys(SYS_write, plan.report_fd, ptr(&report), sizeof report);
  sys(SYS_exit_group, 127);
  __builtin_unreachable();
}

void check(const ChildPlan& plan, long rc, SetupStage stage, int index = -1) {
  if (rc < 0) fail(plan, stage, index);
}

void wait_for_parent(const ChildPlan& plan) {
  sys(SYS_close, plan.sync_write_fd);
  char byte = 0;
  const long n = sys(SYS_read, plan.sync_fd, ptr(&byte), 1);
  if (n != 1) {
    if (n == 0) errno = EPIPE;  // the parent went away before writing the maps
    fail(plan, SetupStage::kWaitForParent);
  }
}

void become_identity(const ChildPlan& plan) {
  check(plan, sys(SYS_setresgid, plan.gid, plan.gid, plan.gid), SetupStage::kSetGid);
  if (plan.clear_groups) {
    check(plan, sys(SYS_setgroups, 0, 0), SetupStage::kClearGroups);
    // A group that survived would still grant host access to another identity: fail closed.
    const long groups = sys(SYS_getgroups, 0, 0);
    if (groups != 0) {
      errno = groups < 0 ? errno : EPERM;
      fail(plan, SetupStage::kGroupsRemain);
    }
  }
  // The namespace maps no uid 0, so this does not clear the capabilities still needed to
  // build the root; files created in it from here on belong to a mapped identity.
  check(plan, sys(SYS_setresuid, plan.uid, plan.uid, plan.uid), SetupStage::kSetUid);
}

void arrange_fds(ChildPlan& plan) {
  const int fd_null = static_cast<int>(sys(SYS_openat, AT_FDCWD, ptr("/dev/null"), O_RDONLY));
  check(plan, fd_null, SetupStage::kStdin);
  check(plan, sys(SYS_dup3, fd_null, 0, 0), SetupStage::kStdin);
  sys(SYS_close, fd_null);
  if (plan.output_fd >= 0) {
    check(plan, sys(SYS_dup3, plan.output_fd, 1, 0), SetupStage::kArrangeFds);
    check(plan, sys(SYS_dup3, plan.output_fd, 2, 0), SetupStage::kArrangeFds);
  }

  // Lift everything we keep above the target range first so dup3 cannot clobber a kept fd.
  const int above = 3 + static_cast<int>(plan.inherit_count);
  int lifted[64];
  if (plan.inherit_count > sizeof lifted / sizeof lifted[0]) {
    errno = EMFILE;
    fail(plan, SetupStage::kArrangeFds);
  }
  for (std::size_t i = 0; i < plan.inherit_count; ++i) {
    lifted[i] = static_cast<int>(sys(SYS_fcntl, plan.inherit_fds[i], F_DUPFD_CLOEXEC, above));
    check(plan, lifted[i], SetupStage::kArrangeFds);
  }
  const int report = static_cast<int>(sys(SYS_fcntl, plan.report_fd, F_DUPFD_CLOEXEC, above));
  check(plan, report, SetupStage::kArrangeFds);
  plan.report_fd = report;
  for (std::size_t i = 0; i < plan.inherit_count; ++i) {
    check(plan, sys(SYS_dup3, lifted[i], 3 + static_cast<long>(i), 0), SetupStage::kArrangeFds);
  }
  // Everything else closes at execve; the report pipe must stay usable until then.
  check(plan, sys(SYS_close_range, above, ~0U, CLOSE_RANGE_CLOEXEC), SetupStage::kArrangeFds);
}

void restrict_mount(const ChildPlan& plan, const char* path, int index, unsigned int at_flags,
                    bool writable = false) {
  mount_attr attr{};
  // A writable bind holds data only: nothing in it is ever run by the sandboxed process.
  attr.attr_set = writable ? MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC
                           : MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
  check(plan, sys(SYS_mount_setattr, AT_FDCWD, ptr(path), at_flags, ptr(&attr), sizeof attr),
        SetupStage::kReadOnly, index);
}

// Clones every bind source as a detached mount tree while the child still has the caller's
// filesystem identity: the worker's own uid may not be able to traverse the path to its binary
// (a build tree under a 0700 /root), while the tree, once attached, needs no path at all.
// A checked path (one its caller opened as the mount's user) is cloned only if it is still
// that object: opened without following a last symlink, compared by device and inode, and
// cloned through that fd, so nothing swapped in since the check is bound with our authority.
long clone_tree(const ChildOp& op) {
  constexpr unsigned kClone = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE;
  if (!op.pinned) return sys(SYS_open_tree, AT_FDCWD, ptr(op.path), kClone);
  const long fd = sys(SYS_openat, AT_FDCWD, ptr(op.path), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return fd;
  struct statx st {};
  long rc = sys(SYS_statx, fd, ptr(""), AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_INO, ptr(&st));
  if (rc == 0 && (st.stx_dev_major != op.pin.dev_major || st.stx_dev_minor != op.pin.dev_minor ||
                  st.stx_ino != op.pin.ino)) {
    errno = ESTALE;
    rc = -1;
  }
  if (rc == 0) rc = sys(SYS_open_tree, fd, ptr(""), kClone | AT_EMPTY_PATH);
  const int saved = errno;
  sys(SYS_close, fd);
  errno = saved;
  return rc;
}

// trees[n] is the n-th bind op's tree, in op order.
void clone_bind_sources(const ChildPlan& plan, int* trees) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < plan.op_count; ++i) {
    if (plan.ops[i].kind != OpKind::kBind) continue;
    trees[n] = static_cast<int>(clone_tree(plan.ops[i]));
    check(plan, trees[n++], SetupStage::kCloneTree, static_cast<int>(i));
  }
}

void bind(const ChildPlan& plan, const ChildOp& op, int tree, int index) {
  if (op.is_file) {
    const long fd =
        sys(SYS_openat, AT_FDCWD, ptr(op.path), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
    if (fd < 0 && errno != EEXIST) fail(plan, SetupStage::kCreateFile, index);
    if (fd >= 0) sys(SYS_close, fd);
  }
  check(plan, sys(SYS_move_mount, tree, ptr(""), AT_FDCWD, ptr(op.path), MOVE_MOUNT_F_EMPTY_PATH),
        SetupStage::kBind, index);
  sys(SYS_close, tree);
  restrict_mount(plan, op.path, index, AT_RECURSIVE, op.writable);
}

void run_op(const ChildPlan& plan, const ChildOp& op, const int*& next_tree, int index) {
  switch (op.kind) {
    case OpKind::kDir:
      if (sys(SYS_mkdirat, AT_FDCWD, ptr(op.path), 0755) < 0 && errno != EEXIST) {
        fail(plan, SetupStage::kMakeDir, index);
      }
      return;
    case OpKind::kBind: bind(plan, op, *next_tree++, index); return;
    case OpKind::kSymlink:
      check(plan, sys(SYS_symlinkat, ptr(op.target), AT_FDCWD, ptr(op.path)),
            SetupStage::kSymlink, index);
      return;
    case OpKind::kProc:
      check(plan, sys(SYS_mkdirat, AT_FDCWD, ptr(op.path), 0555), SetupStage::kMountProc, index);
      check(plan,
            sys(SYS_mount, ptr("proc"), ptr(op.path), ptr("proc"), MS_NOSUID | MS_NODEV | MS_NOEXEC,
                0),
            SetupStage::kMountProc, index);
      return;
  }
}

void build_root(const ChildPlan& plan, const int* trees) {
  // Nothing mounted here may propagate back to the host.
  check(plan, sys(SYS_mount, ptr("none"), ptr("/"), 0, MS_REC | MS_PRIVATE, 0),
        SetupStage::kMakePrivate);
  check(plan,
        sys(SYS_mount, ptr("tmpfs"), ptr(kStagingDir), ptr("tmpfs"), MS_NOSUID | MS_NODEV,
            ptr("mode=0755,size=1m")),
        SetupStage::kStageRoot);
  check(plan, sys(SYS_chdir, ptr(kStagingDir)), SetupStage::kStageRoot);
  check(plan, sys(SYS_mkdirat, AT_FDCWD, ptr(kOldRootName), 0700), SetupStage::kStageRoot);
  check(plan, sys(SYS_pivot_root, ptr("."), ptr(kOldRootName)), SetupStage::kPivotRoot);
  check(plan, sys(SYS_chdir, ptr("/")), SetupStage::kPivotRoot);

  const int* next_tree = trees;
  for (std::size_t i = 0; i < plan.op_count; ++i) {
    run_op(plan, plan.ops[i], next_tree, static_cast<int>(i));
  }
  // Not ops: whatever the plan holds, the host root goes and the new root is sealed.
  check(plan, sys(SYS_umount2, ptr(kOldRootPath), MNT_DETACH), SetupStage::kDetachOldRoot);
  check(plan, sys(SYS_unlinkat, AT_FDCWD, ptr(kOldRootPath), AT_REMOVEDIR),
        SetupStage::kDetachOldRoot);
  restrict_mount(plan, "/", -1, 0);
}

// Needs CAP_SETPCAP: inside our user namespace we hold it; a degraded, unprivileged child
// never does, and its bounding set can grant nothing under no_new_privs.
void drop_bounding_set(const ChildPlan& plan) {
  for (int cap = 0; cap <= plan.last_cap; ++cap) {
    if (sys(SYS_prctl, PR_CAPBSET_DROP, cap) < 0 && errno != EINVAL) {
      if (errno == EPERM && !plan.namespaces) return;
      fail(plan, SetupStage::kDropCaps, cap);
    }
  }
}

void drop_capabilities(const ChildPlan& plan) {
  // libcap-ng allocates and reads /proc, which is unsafe here; the worker re-checks with
  // libcap-ng after exec.
  drop_bounding_set(plan);
  check(plan, sys(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0),
        SetupStage::kDropCaps);
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  check(plan, sys(SYS_capset, ptr(&header), ptr(data)), SetupStage::kDropCaps);
}

// Soft and hard alike, so the sandboxed process cannot raise them again. The parent clamped
// them to its own hard limits: raising one would need CAP_SYS_RESOURCE over the host.
void set_rlimits(const ChildPlan& plan) {
  const struct {
    int resource;
    unsigned long value;
  } limits[] = {{RLIMIT_NOFILE, plan.max_open_files},
                {RLIMIT_NPROC, plan.max_processes},
                {RLIMIT_CORE, 0}};
  for (const auto& limit : limits) {
    const rlimit value{limit.value, limit.value};
    check(plan, sys(SYS_prlimit64, 0, limit.resource, ptr(&value), 0), SetupStage::kRlimits,
          limit.resource);
  }
}

// The supervisor blocks signals it reads through signalfd; execve would pass that mask (and
// any ignored dispositions) on to the worker, which must die on SIGTERM.
void reset_signals() {
  for (long signo = 1; signo < _NSIG; ++signo) {
    if (signo == SIGKILL || signo == SIGSTOP) continue;
    kernel_sigaction action{};
    action.handler = SIG_DFL;
    sys(SYS_rt_sigaction, signo, ptr(&action), 0, sizeof(action.mask));
  }
  const unsigned long empty = 0;
  sys(SYS_rt_sigprocmask, SIG_SETMASK, ptr(&empty), 0, sizeof empty);
}

}  // namespace

void run_child(ChildPlan plan) noexcept {
  reset_signals();
  wait_for_parent(plan);
  // Out of the caller's process group and session (bubblewrap's --new-session, runc): else
  // kill(0, sig) or kill(-pgid, sig) from inside reaches the supervisor, heddle and the shell
  // job whenever their uids match, and the caller's terminal stays its controlling one.
  check(plan, sys(SYS_setsid), SetupStage::kNewSession);
  arrange_fds(plan);
  if (plan.namespaces) {
    int trees[kMaxBinds];
    clone_bind_sources(plan, trees);
    become_identity(plan);
    build_root(plan, trees);
    check(plan, sys(SYS_sethostname, ptr(plan.hostname), static_cast<long>(plan.hostname_len)),
          SetupStage::kHostname);
  } else {
    // Host root loses CAP_SETPCAP with its uid, so the bounding set goes first.
    drop_bounding_set(plan);
    become_identity(plan);
  }
  set_rlimits(plan);
  drop_capabilities(plan);
  check(plan, sys(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), SetupStage::kNoNewPrivs);
  // Last before execve, so nothing above runs under the filter.
  check(plan, sys(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, ptr(plan.seccomp)),
        SetupStage::kSeccomp);
  sys(SYS_execve, ptr(plan.executable), ptr(plan.argv), ptr(plan.envp));
  fail(plan, SetupStage::kExec);
}

}  // namespace heddle::sandbox::detail
