// The code that runs in the child between clone3 and execve. The supervisor is multithreaded,
// so this runs only raw system calls on memory prepared by the parent: no malloc, no locks, no
// libc wrappers that sanitizers intercept.
#pragma once

#include <linux/filter.h>
#include <sys/types.h>

#include <cstddef>

namespace heddle::sandbox::detail {

enum class SetupStage : int {
  kWaitForParent = 1,
  kSetGid,
  kClearGroups,
  kGroupsRemain,
  kSetUid,
  kStdin,
  kArrangeFds,
  kCloneTree,
  kMakePrivate,
  kStageRoot,
  kPivotRoot,
  kMakeDir,
  kCreateFile,
  kBind,
  kReadOnly,
  kSymlink,
  kMountProc,
  kDetachOldRoot,
  kHostname,
  kRlimits,
  kDropCaps,
  kNoNewPrivs,
  kSeccomp,
  kExec,
  kNewSession,
};

// What the child writes to the report pipe when a step fails, before _exit(127).
struct SetupReport {
  int stage = 0;
  int error = 0;
  int index = -1;  // which op (or capability, or rlimit), or -1
};

// One step of filling the new root, after pivot_root and before the old root is detached.
// The child runs the plan's steps in one loop, in order (bubblewrap's SetupOp list).
enum class OpKind : unsigned char {
  kDir,      // mkdir 0755; an existing one is fine
  kBind,     // the host path's tree at the same path, then restricted (see `writable`)
  kSymlink,  // `target` at `path`
  kProc,     // mkdir /proc and mount the sandbox's own proc there
};

// The object a checked bind must still be when the child clones it (see CheckedPath).
struct PinnedObject {
  unsigned dev_major = 0;
  unsigned dev_minor = 0;
  unsigned long long ino = 0;
  friend bool operator==(const PinnedObject&, const PinnedObject&) = default;
};

struct ChildOp {
  OpKind kind;
  const char* path;
  const char* target;  // kSymlink only
  bool is_file;        // kBind: the mount point is a file, created empty
  bool writable;       // kBind: nosuid, nodev, noexec instead of read-only
  bool pinned;         // kBind: clone only if `path` still names `pin` (else ESTALE)
  PinnedObject pin;
};

// Binds are grabbed as detached mount trees before the identity switch, one fd each.
inline constexpr std::size_t kMaxBinds = 32;

struct ChildPlan {
  int sync_fd = -1;    // parent writes one byte once the id maps are in place
  int sync_write_fd = -1;  // the parent's end: closed first, so a dead parent means EOF
  int report_fd = -1;  // O_CLOEXEC: EOF at the parent means execve succeeded
  const int* inherit_fds = nullptr;
  std::size_t inherit_count = 0;
  int output_fd = -1;  // becomes stdout and stderr, unless -1
  uid_t uid = 0;
  gid_t gid = 0;
  // The parent left setgroups allowed, so drop them here and fail if any remain. Otherwise
  // (an unprivileged caller mapping itself) the kernel keeps the caller's own groups.
  bool clear_groups = false;
  bool namespaces = true;  // false: degraded, no namespaces and no minimal root
  const ChildOp* ops = nullptr;  // run in order; a failure reports the op's index
  std::size_t op_count = 0;
  const char* hostname = nullptr;
  std::size_t hostname_len = 0;
  int last_cap = 0;
  unsigned long max_open_files = 0;
  unsigned long max_processes = 0;
  const sock_fprog* seccomp = nullptr;
  const char* executable = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
};

// Where the tmpfs that becomes the new root is staged, and where the old root is parked.
inline constexpr const char* kStagingDir = "/tmp";
inline constexpr const char* kOldRootName = "oldroot";
inline constexpr const char* kOldRootPath = "/oldroot";

// Takes a copy: it rewrites report_fd when it moves the fds into place.
[[noreturn]] void run_child(ChildPlan plan) noexcept;

}  // namespace heddle::sandbox::detail
