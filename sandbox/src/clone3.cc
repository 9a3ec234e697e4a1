#include "clone3.h"

#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "heddle/error.h"

namespace heddle::sandbox::detail {

unsigned long long sandbox_namespace_flags() noexcept {
  return CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWNET |
         CLONE_NEWUTS | CLONE_NEWCGROUP;
}

Cloned clone_with_pidfd(unsigned long long flags) {
  int pidfd = -1;
  clone_args args{};
  args.flags = flags | CLONE_PIDFD;
  args.pidfd = reinterpret_cast<std::uintptr_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  const long rc = ::syscall(SYS_clone3, &args, sizeof args);
  if (rc < 0) {
    const int err = errno;
    const char* hint = "";
    switch (err) {
      case ENOSYS:
        hint = "this kernel or a seccomp profile lacks clone3 (Linux >= 5.3 is needed)";
        break;
      case EPERM:
      case EACCES:
        hint = "user namespaces are forbidden here: check kernel.unprivileged_userns_clone, "
               "SELinux/AppArmor policy, or the container's seccomp profile";
        break;
      case ENOSPC:
        hint = "the namespace limit is reached: raise user.max_user_namespaces";
        break;
      case EUSERS:
        hint = "user namespaces nest too deep";
        break;
      default:
        break;
    }
    throw Error("clone3 into new namespaces", err, hint);
  }
  if (rc == 0) return Cloned{0, UniqueFd()};
  return Cloned{static_cast<pid_t>(rc), UniqueFd(pidfd)};
}

}  // namespace heddle::sandbox::detail
