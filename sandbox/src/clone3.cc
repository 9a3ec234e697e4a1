#include "clone3.h"

#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <fstream>
#include <string>
#include <utility>

#include "heddle/error.h"
#include "heddle/sandbox/sandbox_spec.h"

// raw_clone passes flags, stack and parent_tid first, as both of these take them; the order
// of child_tid and tls differs between them, but both are 0 here. s390 swaps flags and stack.
#if !defined(__x86_64__) && !defined(__aarch64__)
#error "check the clone(2) argument order of this architecture in raw_clone"
#endif

namespace heddle::sandbox::detail {
namespace {

// Dropped, rather than failing, when the kernel rejects them: cgroup namespaces came in
// Linux 4.6, and the sandbox mounts no cgroupfs for one to hide.
constexpr unsigned long long kOptionalNamespaces = CLONE_NEWCGROUP;

enum Method { kClone3, kClonePidfd, kClonePidfdOpen };

// Cloned::fallback, by [method][whether the optional namespaces were dropped].
constexpr const char* kFallbacks[3][2] = {
    {nullptr, "clone3 without a cgroup namespace: the kernel rejected CLONE_NEWCGROUP"},
    {"clone(2) with CLONE_PIDFD: clone3 is refused (Linux < 5.3 or a seccomp profile)",
     "clone(2) with CLONE_PIDFD, without a cgroup namespace: clone3 is refused and the kernel "
     "rejected CLONE_NEWCGROUP"},
    {"clone(2) then pidfd_open: clone3 is refused and clone(2) takes no CLONE_PIDFD",
     "clone(2) then pidfd_open, without a cgroup namespace: clone3 is refused, clone(2) takes "
     "no CLONE_PIDFD and the kernel rejected CLONE_NEWCGROUP"},
};

// Both are fork-like (no CLONE_VM, no new stack, SIGCHLD at exit) and return the child's pid,
// 0 in the child, or -1 with errno. With CLONE_PIDFD the kernel stores the pidfd in *pidfd.
long raw_clone3(unsigned long long flags, int* pidfd) {
  clone_args args{};
  args.flags = flags;
  args.pidfd = reinterpret_cast<std::uintptr_t>(pidfd);
  args.exit_signal = SIGCHLD;
  return ::syscall(SYS_clone3, &args, sizeof args);
}

long raw_clone(unsigned long long flags, int* pidfd) {
  // flags, stack, parent_tid (where CLONE_PIDFD stores the fd), child_tid, tls.
  return ::syscall(SYS_clone, static_cast<unsigned long>(flags | SIGCHLD), 0L, pidfd, 0L, 0L);
}

// One attempt, and another without the optional namespaces if the kernel rejects a flag.
// Leaves `flags` at what was tried last.
long clone_dropping_optional(long (*call)(unsigned long long, int*), unsigned long long& flags,
                             int* pidfd) {
  const long rc = call(flags, pidfd);
  if (rc >= 0 || errno != EINVAL || (flags & kOptionalNamespaces) == 0) return rc;
  flags &= ~kOptionalNamespaces;
  return call(flags, pidfd);
}

// Race-free: the child is ours and not yet reaped, so its pid cannot have been reused.
int open_pidfd(pid_t pid) {
  const long fd = ::syscall(SYS_pidfd_open, pid, 0);
  if (fd >= 0) return static_cast<int>(fd);
  const int error = errno;
  ::kill(pid, SIGKILL);
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  throw Error("pidfd_open on the new child " + std::to_string(pid), error,
              "pidfds need Linux >= 5.3");
}

// "into new user, mount and pid namespaces"
std::string describe_namespaces(unsigned long long flags) {
  constexpr std::pair<unsigned long long, const char*> kNames[] = {
      {CLONE_NEWUSER, "user"}, {CLONE_NEWNS, "mount"}, {CLONE_NEWPID, "pid"},
      {CLONE_NEWIPC, "ipc"},   {CLONE_NEWNET, "net"},  {CLONE_NEWUTS, "uts"},
      {CLONE_NEWCGROUP, "cgroup"}};
  std::string list;
  std::size_t left = static_cast<std::size_t>(
      std::count_if(std::begin(kNames), std::end(kNames),
                    [flags](const auto& name) { return (flags & name.first) != 0; }));
  for (const auto& [flag, name] : kNames) {
    if ((flags & flag) == 0) continue;
    list += name;
    --left;
    if (left > 0) list += left == 1 ? " and " : ", ";
  }
  return list.empty() ? " without new namespaces" : " into new " + list + " namespaces";
}

// A sysctl's current value, or "" where this kernel lacks it.
std::string sysctl_value(std::string name) {
  std::replace(name.begin(), name.end(), '.', '/');
  std::ifstream in("/proc/sys/" + name);
  std::string value;
  in >> value;
  return value;
}

std::string namespace_hint(int error) {
  switch (error) {
    case EPERM: {
      const std::string clone = sysctl_value("kernel.unprivileged_userns_clone");
      return "user namespaces are refused. Debian refuses them to unprivileged users while "
             "kernel.unprivileged_userns_clone is 0 (here: " +
             (clone.empty() ? std::string("absent") : clone) +
             "); `sysctl -w kernel.unprivileged_userns_clone=1` allows them. In a container, "
             "its seccomp profile may refuse namespace flags to clone(2) and clone3: run it "
             "with a profile that allows them";
    }
    case ENOSPC:
      return "a namespace limit is reached: user.max_user_namespaces is " +
             sysctl_value("user.max_user_namespaces") +
             " (`sysctl -w user.max_user_namespaces=15000` raises it; the other "
             "user.max_*_namespaces count too), or namespaces already nest 32 levels deep";
    case EACCES: {
      std::string hint =
          "a security module denies user namespaces: SELinux (the user_namespace create "
          "permission; see `ausearch -m avc`)";
      const std::string apparmor = sysctl_value("kernel.apparmor_restrict_unprivileged_userns");
      if (!apparmor.empty()) {
        hint += ", or AppArmor: kernel.apparmor_restrict_unprivileged_userns is " + apparmor +
                " (the profile the package ships grants `userns,`: apparmor_parser -r " +
                kAppArmorProfile + ")";
      }
      return hint;
    }
    case EUSERS:
      return "user namespaces already nest 32 levels deep (the limit before Linux 4.9)";
    case ENOSYS:
      return "the kernel lacks namespaces, or a seccomp profile refuses both clone3 and clone(2)";
    case EINVAL:
      return "the kernel lacks one of these namespaces (CONFIG_USER_NS, CONFIG_PID_NS, ...)";
    default:
      return "";
  }
}

}  // namespace

unsigned long long sandbox_namespace_flags() noexcept {
  return CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWNET |
         CLONE_NEWUTS | CLONE_NEWCGROUP;
}

// Raw clone3, not Boost.Process: the worker needs namespace flags, a pidfd and a child that
// sets up its sandbox before exec, which no process library offers.
Cloned clone_with_pidfd(unsigned long long flags) {
  int pidfd = -1;
  Method method = kClone3;
  unsigned long long tried = flags | CLONE_PIDFD;
  long rc = clone_dropping_optional(raw_clone3, tried, &pidfd);
  // Seccomp cannot read clone3's flags in memory, so container profiles (Docker's among them)
  // refuse clone3 outright, with ENOSYS or EPERM, and judge clone(2) instead. EPERM may also
  // be the user namespace refusal itself: clone(2) then fails alike and reports it.
  if (rc < 0 && (errno == ENOSYS || errno == EPERM)) {
    method = kClonePidfd;
    tried = flags | CLONE_PIDFD;
    rc = clone_dropping_optional(raw_clone, tried, &pidfd);
    if (rc < 0 && errno == EINVAL) {  // clone(2) takes CLONE_PIDFD since Linux 5.2
      method = kClonePidfdOpen;
      tried = flags;
      rc = clone_dropping_optional(raw_clone, tried, &pidfd);
    }
  }
  if (rc < 0) {
    const int error = errno;
    // The hints are about user namespaces; without one the errno speaks for itself.
    throw Error(ErrorKind::kClone,
                (method == kClone3 ? "clone3" : "clone(2)") + describe_namespaces(tried), error,
                (tried & CLONE_NEWUSER) != 0 ? namespace_hint(error) : "");
  }
  const bool dropped = (tried & kOptionalNamespaces) != (flags & kOptionalNamespaces);
  if (rc == 0) return Cloned{0, UniqueFd(), kFallbacks[method][dropped]};

  const auto pid = static_cast<pid_t>(rc);
  if (pidfd < 0) {  // also where an old clone(2) ignored CLONE_PIDFD instead of refusing it
    pidfd = open_pidfd(pid);
    method = kClonePidfdOpen;
  }
  return Cloned{pid, UniqueFd(pidfd), kFallbacks[method][dropped]};
}

}  // namespace heddle::sandbox::detail
