#include "heddle/launcher/mount_guard.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "heddle/error.h"
#include "heddle/process.h"
#include "heddle/sandbox/sandboxed_process.h"

namespace heddle::launcher {
namespace {

constexpr std::chrono::milliseconds kArmTimeout{5000};
constexpr std::chrono::milliseconds kDisarmGrace{1000};

bool readable_within(int fd, std::chrono::milliseconds timeout) {
  pollfd pfd{fd, POLLIN, 0};
  int ready;
  do {
    ready = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
  } while (ready < 0 && errno == EINTR);
  return ready > 0;
}

std::string describe(const siginfo_t& info) {
  sandbox::ExitStatus status;
  status.signaled = info.si_code != CLD_EXITED;
  (status.signaled ? status.signal : status.code) = info.si_status;
  return status.describe();
}

}  // namespace

std::unique_ptr<MountGuard> MountGuard::start(const std::string& binary,
                                              const std::string& mountpoint,
                                              const MountIdentity& mount) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    throw_errno("socketpair for the mount guard");
  }
  UniqueFd ours(fds[0]);
  const UniqueFd theirs(fds[1]);
  // It lives as long as the mount; await_armed and disarm bound its start and its end.
  ProcessOptions options;
  options.output = ProcessOptions::Output::kInherit;
  options.fds = {{theirs.get(), theirs.get()}};
  const pid_t pid =
      Process({binary, "--fd", std::to_string(theirs.get()), "--mountpoint", mountpoint,
               "--mount-id", std::to_string(mount.id), "--mount-unique",
               std::to_string(mount.unique), "--mount-dev",
               std::to_string(mount.major) + ":" + std::to_string(mount.minor),
               "--supervisor-pid", std::to_string(::getpid())},
              options)
          .release();
  // Our own unreaped child: its pid cannot have been recycled yet.
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  std::unique_ptr<MountGuard> guard(new MountGuard(pid, binary, std::move(pidfd), std::move(ours)));
  if (!guard->pidfd_) {
    const int err = errno;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    guard->ended_ = "killed";
    throw Error("pidfd_open on the mount guard", err);
  }
  return guard;
}

void MountGuard::await_armed() {
  char armed = 0;
  if (!readable_within(socket_.get(), kArmTimeout) || ::read(socket_.get(), &armed, 1) != 1 ||
      armed != 'R') {
    throw Error("the mount guard " + binary_ + " did not start", ECHILD,
                "see its message above; reinstall heddle-fuse-launcher or set " +
                    std::string(kGuardBinaryEnv));
  }
}

MountGuard::~MountGuard() { disarm(); }

std::string MountGuard::disarm() noexcept {
  std::lock_guard lock(mutex_);
  if (!ended_.empty()) return ended_;
  const char disarm = 'D';
  (void)::send(socket_.get(), &disarm, 1, MSG_NOSIGNAL);
  if (!readable_within(pidfd_.get(), kDisarmGrace)) {
    ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
  }
  siginfo_t info{};
  int rc;
  do {
    rc = ::waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &info, WEXITED);
  } while (rc < 0 && errno == EINTR);
  socket_.reset();
  ended_ = rc == 0 ? describe(info) : "unknown";
  return ended_;
}

}  // namespace heddle::launcher
