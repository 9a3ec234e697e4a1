#include "heddle/launcher/supervisor.h"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <string_view>

#include "heddle/error.h"
#include "heddle/ipc/fd_passing.h"
#include "heddle/ipc/frame.h"
#include "heddle/launcher/file_broker.h"
#include "heddle/launcher/source_access.h"
#include "heddle/launcher/source_kinds.h"
#include "heddle/launcher/worker_identity.h"
#include "heddle/launcher/worker_status.h"

namespace heddle::launcher {
namespace {

using std::chrono::milliseconds;

struct SocketPair {
  UniqueFd ours;
  UniqueFd theirs;
};

SocketPair make_socketpair(const char* what) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    throw_errno(std::string("socketpair for ") + what);
  }
  return SocketPair{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// The worker's argv names no path: what it serves comes in the bootstrap message.
sandbox::SandboxSpec worker_spec(const ipc::MountSpec& mount, const SupervisorOptions& options,
                                 int bootstrap_fd, int lock_fd, int output_fd) {
  sandbox::SandboxSpec spec = worker_sandbox(mount, options);
  spec.executable = options.worker_binary;
  spec.argv = {options.worker_binary, "--bootstrap-fd", "3"};
  spec.inherit_fds = {bootstrap_fd};
  // The worker holds the overlay's lock too (fd 4, unused by it), so a mount killed with its
  // supervisor keeps others out of the overlay until its worker has exited as well.
  if (lock_fd >= 0) spec.inherit_fds.push_back(lock_fd);
  spec.output_fd = output_fd;
  return spec;
}

void log_problems(const WorkerReplyCheck& check, pid_t worker, std::string_view what) {
  for (const std::string& problem : check.problems) {
    spdlog::warn("worker {}'s {}: {}", worker, what, problem);
  }
}

std::string worker_exit(sandbox::SandboxedProcess& process, milliseconds grace) {
  if (!process.wait_for_exit(grace)) process.signal(SIGKILL);
  return process.reap().describe();
}

// The worker's first frame, bounded by the handshake timeout. The guard is watched meanwhile:
// the watcher that would notice its loss only starts after MountReady, and until then a guard
// that died would leave the mount unguarded while the worker still announced it ready.
ipc::MountReady await_mount_ready(int ipc, sandbox::SandboxedProcess& process, MountGuard& guard,
                                  const std::string& mountpoint, const SupervisorOptions& options) {
  const auto deadline = std::chrono::steady_clock::now() + options.handshake_timeout;
  const auto left = [&] {
    return std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(
                                          deadline - std::chrono::steady_clock::now()));
  };
  pollfd ends[2] = {{ipc, POLLIN, 0}, {guard.pidfd(), POLLIN, 0}};
  int polled;
  do {
    polled = ::poll(ends, 2, static_cast<int>(left().count()));
  } while (polled < 0 && errno == EINTR);
  if (polled > 0 && ends[0].revents == 0) {
    const std::string how = guard.disarm();
    process.signal(SIGKILL);
    process.reap();
    throw Error("the mount guard " + std::to_string(guard.pid()) + " ended (" + how +
                    ") before MountReady",
                0, "something ended heddle-fuse-guard; the mount was removed");
  }
  std::optional<ipc::Message> first;
  try {
    first = ipc::read_frame(ipc, left());
  } catch (const Error& e) {
    if (e.code() == ETIMEDOUT) {
      throw Error("worker (pid " + std::to_string(process.pid()) + ") sent no MountReady within " +
                      std::to_string(options.handshake_timeout.count()) + " ms",
                  ETIMEDOUT, "see the worker's log above; the source may be on a slow filesystem");
    }
    throw Error("bad handshake from the worker: " + e.attempt(), e.code(), e.hint());
  }
  if (!first) {
    throw Error("worker exited before MountReady (" + worker_exit(process, options.stop_grace) + ")",
                0, "see the worker's log above");
  }
  if (auto* ready = std::get_if<ipc::MountReady>(&*first)) {
    WorkerReplyCheck check;
    ipc::MountReady checked =
        checked_mount_ready(*ready, process.pid(), mountpoint, check);
    log_problems(check, process.pid(), "MountReady");
    return checked;
  }
  if (auto* error = std::get_if<ipc::MountError>(&*first)) {
    worker_exit(process, options.stop_grace);
    throw Error("worker reported mount error: " + error->message, 0);
  }
  throw Error("worker sent " + std::string(ipc::kind_of(*first)) + " before MountReady", EPROTO);
}

}  // namespace

sandbox::SandboxSpec worker_sandbox(const ipc::MountSpec& mount, const SupervisorOptions& options) {
  sandbox::SandboxSpec spec;
  std::vector<std::string> named;   // by the user: they choose the worker's identity
  std::vector<std::string> chosen;  // by the repository's files: they never do
  for (const SourceBind& bind : source_binds(mount.source, mount.uid, mount.gid)) {
    spec.checked_paths.push_back(bind.checked);
    (bind.chosen_by_repository ? chosen : named).push_back(bind.checked.path);
  }
  if (mount.writable()) {
    // Looked up as the mount's user, whose directory it is, and bound only while it is still
    // that directory: a path the user swaps afterwards is refused, never followed as root.
    struct stat st {};
    as_mount_user(mount.uid, mount.gid, [&] {
      if (::lstat(mount.overlay_dir.c_str(), &st) != 0) {
        throw_errno("overlay directory " + mount.overlay_dir + " as " +
                    mount_user_label(mount.uid, mount.gid));
      }
    });
    if (!S_ISDIR(st.st_mode)) throw Error("overlay directory " + mount.overlay_dir, ENOTDIR);
    spec.checked_paths.push_back(
        sandbox::CheckedPath{mount.overlay_dir, st.st_dev, st.st_ino, true, true});
  }
  spec.env = options.worker_env;
  // A git thread's files are read by libgit2, which cannot go through the file broker.
  const bool whole_tree = std::holds_alternative<ipc::GitSource>(mount.source);
  const WorkerIdentity identity =
      choose_worker_identity(mount.uid, mount.gid, named,
                             options.subordinate_ids && !mount.degraded(), mount.writable(),
                             whole_tree);
  require_readable_by_worker(identity, chosen, whole_tree);
  if (!identity.why.empty()) spdlog::info("{}", identity.why);
  spec.uid = identity.uid;
  spec.gid = identity.gid;
  spec.subordinate_ids = identity.subordinate;
  spec.user_namespace = !mount.degraded();
  if (mount.degraded()) {
    spdlog::warn("degraded sandbox: the worker runs without a user namespace (so without its own "
                 "mount, pid and network namespaces), still with no capabilities, no_new_privs, "
                 "seccomp and closed fds");
  }
  spec.hostname = "heddle-fuse-worker";
  return spec;
}

std::unique_ptr<Supervisor> Supervisor::spawn(ipc::MountSpec spec, SupervisorOptions options,
                                              UniqueFd mountpoint) {
  // The sandbox binds this program only: a directory's worker maps no libgit2.
  options.worker_binary = resolve_worker_binary_for(spec.source, options);
  options.guard_binary = resolve_guard_binary(options.guard_binary);
  std::optional<OverlayLock> overlay_lock;
  if (spec.writable()) {
    // Created and opened as the mount's user, in the user's directory: see prepare_mount.
    as_mount_user(spec.uid, spec.gid, [&] {
      overlay_lock = OverlayLock::acquire(spec.overlay_dir, spec.mountpoint);
    });
  }
  auto mount = std::make_unique<FuseMount>(
      FuseMountOptions{spec.mountpoint, mountpoint.get(), source_label(spec.source), spec.uid,
                       spec.gid, spec.allow_other, spec.writable()});
  mountpoint.reset();
  // From here until release, a SIGKILLed supervisor's mount is removed by the guard.
  auto guard = MountGuard::start(options.guard_binary, spec.mountpoint, mount->identity());
  SocketPair ipc = make_socketpair("the worker IPC");
  SocketPair bootstrap = make_socketpair("the worker bootstrap");
  BrokerSockets broker_sockets = make_broker_sockets();
  // Opened as the mount's user now, so that a source swapped later is not the one served.
  std::vector<UniqueFd> broker_roots = source_broker_roots(spec.source, spec.uid, spec.gid);
  auto output = std::make_unique<OutputRelay>();

  auto process = [&] {
    try {
      return sandbox::SandboxedProcess::launch(
          worker_spec(spec, options, bootstrap.theirs.get(),
                      overlay_lock ? overlay_lock->fd() : -1, output->write_fd()));
    } catch (const Error& e) {
      // Strict mode refuses to go on without a user namespace; say how to opt out.
      const bool refused = e.code() == EPERM || e.code() == EACCES || e.code() == ENOSPC;
      if (spec.degraded() || !refused || e.kind() != ErrorKind::kClone) throw;
      throw e.with_hint("to run the worker without namespaces anyway, mount with --sandbox=degraded");
    }
  }();
  bootstrap.theirs.reset();
  output->start("worker " + std::to_string(process.pid()));
  if (process.clone_fallback() != nullptr) spdlog::info("sandbox: {}", process.clone_fallback());
  // Serving before the worker starts: it may need the broker to open its source's root.
  auto broker = std::make_unique<FileBroker>(std::move(broker_roots),
                                             std::move(broker_sockets.supervisor), spec.uid,
                                             spec.gid);
  {
    // After this the worker holds the only /dev/fuse fd: when it dies, the kernel aborts the
    // connection and readers get ENOTCONN instead of hanging.
    const UniqueFd device = mount->take_device();
    const std::array<int, 3> fds = {ipc.theirs.get(), device.get(), broker_sockets.worker.get()};
    const ipc::WorkerBootstrap payload{static_cast<std::uint32_t>(process.pid()), spec,
                                       options.test_ignore_stop};
    ipc::send_fds(bootstrap.ours.get(), fds, ipc::encode_bootstrap(payload));
  }
  ipc.theirs.reset();
  broker_sockets.worker.reset();
  bootstrap.ours.reset();
  // Started before the worker, armed while it starts up: the two execs overlap.
  guard->await_armed();

  ipc::MountReady ready = await_mount_ready(ipc.ours.get(), process, *guard, spec.mountpoint, options);
  return std::unique_ptr<Supervisor>(new Supervisor(
      std::move(spec), std::move(options), std::move(overlay_lock), std::move(mount),
      std::move(guard), std::move(output), std::move(process), std::move(ipc.ours),
      std::move(ready), std::move(broker)));
}

Supervisor::Supervisor(ipc::MountSpec spec, SupervisorOptions options,
                       std::optional<OverlayLock> overlay_lock, std::unique_ptr<FuseMount> mount,
                       std::unique_ptr<MountGuard> guard, std::unique_ptr<OutputRelay> output,
                       sandbox::SandboxedProcess process, UniqueFd ipc, ipc::MountReady ready,
                       std::unique_ptr<FileBroker> broker)
    : spec_(std::move(spec)),
      options_(std::move(options)),
      overlay_lock_(std::move(overlay_lock)),
      mount_(std::move(mount)),
      guard_(std::move(guard)),
      output_(std::move(output)),
      process_(std::move(process)),
      ready_(std::move(ready)),
      ipc_(std::move(ipc)),
      broker_(std::move(broker)) {
  // libspdlog creates its registry lazily, in uninstrumented code; creating it before the
  // watcher exists orders that for ThreadSanitizer (and costs nothing).
  (void)spdlog::default_logger_raw();
  try {
    ended_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!ended_) throw_errno("eventfd");
    mount_watch_ = std::make_unique<MountWatch>(mount_->identity());
    watcher_ = std::thread([this] { watch(); });
  } catch (...) {
    // A worker nobody watches would leave its mount behind: kill, reap, unmount.
    process_.signal(SIGKILL);
    process_.reap();
    mount_->release();
    guard_->disarm();
    throw;
  }
}

Supervisor::~Supervisor() {
  try {
    unmount();
  } catch (const std::exception& e) {
    spdlog::error("unmount {} on destruction: {}", spec_.mountpoint, e.what());
  }
}

bool Supervisor::await_end() {
  // Whichever ends first: the worker, the guard, or the mount's place in this namespace.
  // Without the guard nothing would remove the mount should this process die, so its loss
  // ends the mount too. Checked once before waiting: a change before the watch opened
  // mountinfo wakes nothing.
  pollfd ends[3] = {{process_.pidfd(), POLLIN, 0},
                    {guard_->pidfd(), POLLIN, 0},
                    {mount_watch_->fd(), POLLPRI, 0}};
  bool changed = true;
  for (;;) {
    // Our own unmount comes only once the worker has exited, and after stopping_: never
    // mistaken for one from outside.
    if (changed && !stopping_.load() && !mount_watch_->attached()) return true;
    const int polled = ::poll(ends, 3, -1);
    if (polled < 0 && errno == EINTR) continue;
    if (polled < 0 || ends[0].revents != 0 || ends[1].revents != 0) return false;
    changed = ends[2].revents != 0;
  }
}

void Supervisor::watch() {
  bool detached = await_end();
  const bool guard_lost = !detached && !process_.wait_for_exit(milliseconds(0)) &&
                          !stopping_.load();
  if (detached) {
    // Its FUSE connection may live on (`umount -l` with a file still open), and the worker
    // with it, serving nothing anyone can reach: end it as unmount() would.
    spdlog::debug("the mount at {} was removed from outside; stopping worker {}",
                  spec_.mountpoint, process_.pid());
    process_.signal(SIGTERM);
    if (!process_.wait_for_exit(options_.stop_grace)) process_.signal(SIGKILL);
  } else if (guard_lost) {
    const std::string how = guard_->disarm();
    {
      std::lock_guard lock(exit_mutex_);
      guard_lost_ = how;
    }
    spdlog::error("the mount guard {} for {} ended ({}); stopping the worker so the mount cannot "
                  "outlive this supervisor unguarded",
                  guard_->pid(), spec_.mountpoint, how);
    process_.signal(SIGKILL);
  }
  sandbox::ExitStatus status;
  try {
    status = process_.reap();
  } catch (const std::exception& e) {
    spdlog::error("watching worker {}: {}", process_.pid(), e.what());
  }
  {
    std::lock_guard lock(exit_mutex_);
    exit_status_ = status;
  }
  // A worker whose FUSE session ended because the mount was removed exits on its own, often
  // before mountinfo's change is read; its mount, gone, says why.
  if (!detached && !guard_lost && !stopping_.load()) detached = !mount_watch_->attached();
  from_outside_.store(detached, std::memory_order_release);
  alive_.store(false, std::memory_order_release);
  if (stopping_.load() || guard_lost || detached) {
    spdlog::debug("worker {} for {} exited: {}", process_.pid(), spec_.mountpoint,
                  status.describe());
  } else {
    spdlog::warn("worker {} for {} exited unexpectedly: {}", process_.pid(),
                 spec_.mountpoint, status.describe());
  }
  mount_->release();
  guard_->disarm();
  const std::uint64_t one = 1;
  if (::write(ended_.get(), &one, sizeof one) != sizeof one) {
    spdlog::error("signal the end of the mount at {}: {}", spec_.mountpoint, std::strerror(errno));
  }
}

std::optional<sandbox::ExitStatus> Supervisor::exit_status() const {
  std::lock_guard lock(exit_mutex_);
  return exit_status_;
}

std::string Supervisor::exit_cause() const {
  std::lock_guard lock(exit_mutex_);
  if (unmounted_from_outside()) return "it was unmounted from outside";
  if (!guard_lost_.empty()) {
    return "its mount guard " + std::to_string(guard_->pid()) + " ended (" + guard_lost_ + ")";
  }
  return "worker " + std::to_string(process_.pid()) + " exited (" +
         (exit_status_ ? exit_status_->describe() : std::string("?")) + ")";
}

ipc::StatusOk Supervisor::status() {
  const ipc::Message reply = exchange(ipc::Status{}, options_.status_timeout);
  if (const auto* ok = std::get_if<ipc::StatusOk>(&reply)) {
    WorkerReplyCheck check;
    ipc::StatusOk checked = checked_status(*ok, process_.pid(), spec_.mountpoint, check);
    log_problems(check, process_.pid(), "StatusOk");
    return checked;
  }
  process_.signal(SIGKILL);
  throw Error("Status to the worker of " + spec_.mountpoint + ": expected StatusOk, got " +
                  std::string(ipc::kind_of(reply)),
              EPROTO, "the worker broke the IPC protocol and was killed; its mount is removed");
}

ipc::Message Supervisor::exchange(const ipc::Message& request, std::chrono::milliseconds timeout) {
  std::lock_guard lock(ipc_mutex_);
  const std::string where = std::string(ipc::kind_of(request)) + " to the worker of " + spec_.mountpoint;
  if (!ipc_) throw Error(where, ESHUTDOWN, "the mount was stopped");
  if (!is_alive()) {
    const auto exit = exit_status();
    throw Error(where, ESRCH, "the worker exited (" + (exit ? exit->describe() : "?") + ")");
  }
  try {
    // A reply that missed its deadline may still arrive: skip it so replies stay in step.
    for (; unanswered_ > 0; --unanswered_) {
      (void)ipc::read_frame(ipc_.get(), options_.status_timeout);
    }
    ipc::write_frame(ipc_.get(), request, timeout);
    ++unanswered_;
    auto reply = ipc::read_frame(ipc_.get(), timeout);
    --unanswered_;
    if (!reply) throw Error("the worker closed its IPC socket", ECONNRESET);
    return std::move(*reply);
  } catch (const Error& e) {
    if (e.code() == ETIMEDOUT) {
      throw Error(where + ": no reply within " + std::to_string(timeout.count()) + " ms",
                  ETIMEDOUT, "the worker is alive but stuck; unmount escalates to SIGKILL");
    }
    // A malformed or cut frame leaves the stream out of step for good (no frame boundary can
    // be found again): a worker that breaks the protocol is ended, and so is its mount.
    process_.signal(SIGKILL);
    throw Error(where + ": " + e.attempt(), e.code(),
                "the worker broke the IPC protocol and was killed; its mount is removed");
  }
}

void Supervisor::unmount() {
  std::lock_guard stop_lock(stop_mutex_);
  if (!stopped_) {
    stopped_ = true;
    stopping_.store(true);
    std::lock_guard lock(ipc_mutex_);
    const milliseconds grace = options_.stop_grace;
    if (is_alive()) {
      try {
        ipc::write_frame(ipc_.get(), ipc::Stop{}, grace);
      } catch (const Error& e) {
        spdlog::debug("send Stop to worker {}: {}", process_.pid(), e.what());
      }
    }
    if (!process_.wait_for_exit(grace)) {
      spdlog::warn("worker {} did not exit {} ms after Stop; sending SIGTERM", process_.pid(),
                   grace.count());
      process_.signal(SIGTERM);
      if (!process_.wait_for_exit(grace)) {
        spdlog::warn("worker {} ignored SIGTERM for {} ms; sending SIGKILL", process_.pid(),
                     grace.count());
        process_.signal(SIGKILL);
        if (!process_.wait_for_exit(grace)) {
          spdlog::error("worker {} outlived SIGKILL by {} ms", process_.pid(), grace.count());
        }
      }
    }
    ipc_.reset();
  }
  if (watcher_.joinable()) watcher_.join();
  if (broker_) broker_->stop();
  mount_->release();
  guard_->disarm();
  // The worker is reaped and the mount gone: the overlay is free now, before whoever asked for
  // the unmount hears that it is done (`unmount MP && overlay discard MP`), not at our exit.
  if (!is_alive()) overlay_lock_.reset();
}

}  // namespace heddle::launcher
