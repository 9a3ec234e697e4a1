#include "heddle/sandbox/sandboxed_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "child_setup.h"
#include "clone3.h"
#include "heddle/error.h"
#include "id_map.h"
#include "launch_plan.h"

namespace heddle::sandbox {
namespace {

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("sandbox: pipe2");
  return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// Blocks until the child has exec'd (EOF on the CLOEXEC report pipe) or reported a failure.
void await_exec(const detail::LaunchPlan& plan, const SandboxedProcess& process,
                const UniqueFd& report, std::chrono::milliseconds timeout) {
  pollfd pfd{report.get(), POLLIN, 0};
  int ready;
  do {
    ready = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
  } while (ready < 0 && errno == EINTR);
  if (ready == 0) {
    throw Error("sandbox: setup did not reach execve within " +
                    std::to_string(timeout.count()) + " ms (pid " +
                    std::to_string(process.pid()) + ")",
                ETIMEDOUT, "a path bound into the sandbox may sit on a hung filesystem");
  }
  if (ready < 0) throw_errno("sandbox: poll the setup report");
  detail::SetupReport report_data;
  ssize_t n;
  do {
    n = ::read(report.get(), &report_data, sizeof report_data);
  } while (n < 0 && errno == EINTR);
  if (n == 0) return;
  if (n != static_cast<ssize_t>(sizeof report_data)) {
    throw Error("sandbox: read the setup report", n < 0 ? errno : EPROTO);
  }
  plan.throw_setup_failure(report_data);
}

}  // namespace

std::string ExitStatus::describe() const {
  if (!signaled) return "exit code " + std::to_string(code);
  const char* name = ::sigabbrev_np(signal);
  return "signal " + std::to_string(signal) + (name ? std::string(" (SIG") + name + ")" : "");
}

SandboxedProcess SandboxedProcess::launch(const SandboxSpec& spec) {
  const detail::LaunchPlan plan(spec);
  Pipe sync = make_pipe();
  Pipe report = make_pipe();
  const detail::ChildPlan child_plan = plan.child_plan(sync.read.get(), sync.write.get(), report.write.get());

  detail::Cloned cloned =
      detail::clone_with_pidfd(spec.user_namespace ? detail::sandbox_namespace_flags() : 0);
  if (cloned.pid == 0) detail::run_child(child_plan);

  // From here the destructor kills and reaps the child on any failure.
  SandboxedProcess process(cloned.pid, std::move(cloned.pidfd));
  process.clone_fallback_ = cloned.fallback;
  sync.read.reset();
  report.write.reset();
  if (spec.user_namespace && spec.subordinate_ids) {
    detail::write_subordinate_id_maps(process.pid(), spec.uid, spec.gid);
  } else if (spec.user_namespace) {
    detail::write_id_maps(process.pid(), spec.uid, spec.gid, !child_plan.clear_groups);
  }
  const char go = 1;
  if (::write(sync.write.get(), &go, 1) != 1) throw_errno("sandbox: release the child");
  sync.write.reset();
  await_exec(plan, process, report.read, spec.setup_timeout);
  return process;
}

SandboxedProcess::SandboxedProcess(SandboxedProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::move(other.pidfd_)),
      clone_fallback_(other.clone_fallback_),
      reaped_(other.reaped_.exchange(true)) {}

SandboxedProcess::~SandboxedProcess() {
  if (!pidfd_ || reaped_.load()) return;
  signal(SIGKILL);
  reap();
}

bool SandboxedProcess::signal(int signo) const {
  // Raw syscall: glibc 2.36's <sys/pidfd.h> lacks C linkage for C++.
  return ::syscall(SYS_pidfd_send_signal, pidfd_.get(), signo, nullptr, 0) == 0;
}

bool SandboxedProcess::wait_for_exit(std::chrono::milliseconds timeout) const {
  if (reaped_.load()) return true;
  pollfd pfd{pidfd_.get(), POLLIN, 0};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    const int ready = ::poll(&pfd, 1, static_cast<int>(std::max<long>(left.count(), 0)));
    if (ready > 0) return true;
    if (ready == 0) return false;
    if (errno != EINTR) return false;
  }
}

ExitStatus SandboxedProcess::reap() {
  siginfo_t info{};
  int rc;
  do {
    rc = ::waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &info, WEXITED);
  } while (rc < 0 && errno == EINTR);
  reaped_.store(true);
  if (rc < 0) throw_errno("waitid on pid " + std::to_string(pid_));
  ExitStatus status;
  status.signaled = info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED;
  (status.signaled ? status.signal : status.code) = info.si_status;
  return status;
}

}  // namespace heddle::sandbox
