#include "heddle/launcher/supervisor.h"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
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
#include "heddle/ipc/journal_size.h"
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

// The journal every worker of the mount gets (see supervisor.h): sized and sealed here, so that
// no worker can grow it into the host's memory nor shrink it under its successor.
UniqueFd make_journal() {
  UniqueFd fd(::memfd_create("heddle-node-journal", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) throw_errno("memfd_create for the node journal");
  if (::ftruncate(fd.get(), static_cast<off_t>(ipc::kJournalBytes)) != 0) {
    throw_errno("size the node journal");
  }
  if (::fcntl(fd.get(), F_ADD_SEALS, ipc::kJournalSeals) != 0) throw_errno("seal the node journal");
  return fd;
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

std::string describe_budget(const RestartBudget& budget) {
  return std::to_string(budget.restarts) + "/" + std::to_string(budget.window.count());
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
  // Computed once: every worker of this mount, successors included, gets exactly this sandbox.
  sandbox::SandboxSpec sandbox = worker_sandbox(spec, options);
  sandbox.executable = options.worker_binary;
  // The worker's argv names no path: what it serves comes in the bootstrap message.
  sandbox.argv = {options.worker_binary, "--bootstrap-fd", "3"};
  // Opened as the mount's user now, so that a source swapped later is not the one served.
  std::vector<UniqueFd> broker_roots = source_broker_roots(spec.source, spec.uid, spec.gid);
  std::unique_ptr<Supervisor> supervisor(new Supervisor(
      std::move(spec), std::move(options), std::move(overlay_lock), std::move(mount), nullptr,
      std::move(sandbox), std::move(broker_roots), make_journal()));
  // From here a failure unwinds through the worker's destructor (SIGKILL, reap), then the
  // supervisor's (the mount removed, the guard, if started, disarmed).
  std::unique_ptr<Worker> worker = supervisor->launch_worker(1);
  // From here until release, a SIGKILLed supervisor's mount is removed by the guard. Started
  // once the worker has exec'd, it starts while the worker loads and mounts: starting it
  // first kept this thread in the guard's vfork+exec (0.3 ms, several under load) on the
  // path to MountReady. Armed before MountReady, as before.
  supervisor->guard_ = MountGuard::start(supervisor->options_.guard_binary,
                                         supervisor->spec_.mountpoint,
                                         supervisor->mount_->identity());
  supervisor->guard_->await_armed();
  supervisor->ready_ = supervisor->await_ready(*worker);
  supervisor->worker_pid_.store(worker->process.pid(), std::memory_order_release);
  supervisor->worker_ = std::move(worker);
  supervisor->alive_.store(true, std::memory_order_release);
  supervisor->start_watching();
  return supervisor;
}

Supervisor::Supervisor(ipc::MountSpec spec, SupervisorOptions options,
                       std::optional<OverlayLock> overlay_lock, std::unique_ptr<FuseMount> mount,
                       std::unique_ptr<MountGuard> guard, sandbox::SandboxSpec sandbox,
                       std::vector<UniqueFd> broker_roots, UniqueFd journal)
    : spec_(std::move(spec)),
      options_(std::move(options)),
      overlay_lock_(std::move(overlay_lock)),
      mount_(std::move(mount)),
      guard_(std::move(guard)),
      sandbox_(std::move(sandbox)),
      broker_roots_(std::move(broker_roots)),
      journal_(std::move(journal)) {
  // libspdlog creates its registry lazily, in uninstrumented code; creating it before the
  // watcher exists orders that for ThreadSanitizer (and costs nothing).
  (void)spdlog::default_logger_raw();
  ended_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!ended_) throw_errno("eventfd");
  mount_watch_ = std::make_unique<MountWatch>(mount_->identity());
}

std::unique_ptr<Supervisor::Worker> Supervisor::launch_worker(std::uint32_t generation) {
  SocketPair ipc = make_socketpair("the worker IPC");
  SocketPair bootstrap = make_socketpair("the worker bootstrap");
  BrokerSockets broker_sockets = make_broker_sockets();
  std::vector<UniqueFd> roots;
  for (const UniqueFd& root : broker_roots_) {
    roots.emplace_back(::fcntl(root.get(), F_DUPFD_CLOEXEC, 3));
    if (!roots.back()) throw_errno("dup a source root for the file broker");
  }
  auto output = std::make_unique<OutputRelay>();
  sandbox::SandboxSpec sandbox = sandbox_;
  sandbox.inherit_fds = {bootstrap.theirs.get()};
  // The worker holds the overlay's lock too (fd 4, unused by it), so a mount killed with its
  // supervisor keeps others out of the overlay until its worker has exited as well.
  if (overlay_lock_) sandbox.inherit_fds.push_back(overlay_lock_->fd());
  sandbox.output_fd = output->write_fd();
  auto process = [&] {
    try {
      return sandbox::SandboxedProcess::launch(sandbox);
    } catch (const Error& e) {
      // Strict mode refuses to go on without a user namespace; say how to opt out.
      const bool refused = e.code() == EPERM || e.code() == EACCES || e.code() == ENOSPC;
      if (spec_.degraded() || !refused || e.kind() != ErrorKind::kClone) throw;
      throw e.with_hint("to run the worker without namespaces anyway, mount with --sandbox=degraded");
    }
  }();
  bootstrap.theirs.reset();
  output->start("worker " + std::to_string(process.pid()));
  if (process.clone_fallback() != nullptr) spdlog::info("sandbox: {}", process.clone_fallback());
  // Serving before the worker starts: it may need the broker to open its source's root.
  auto broker = std::make_unique<FileBroker>(std::move(roots), std::move(broker_sockets.supervisor),
                                             spec_.uid, spec_.gid);
  auto worker = std::unique_ptr<Worker>(new Worker{std::move(process), generation,
                                                   std::move(ipc.ours), std::move(output),
                                                   std::move(broker)});
  // The worker's fds: its IPC end, a dup of the connection (ours stays, so the connection
  // outlives the worker), the broker's socket, and the journal.
  const UniqueFd device = mount_->dup_device();
  const std::array<int, 4> fds = {ipc.theirs.get(), device.get(), broker_sockets.worker.get(),
                                  journal_.get()};
  const ipc::WorkerBootstrap payload{static_cast<std::uint32_t>(worker->process.pid()), spec_,
                                     options_.test_ignore_stop, generation};
  try {
    ipc::send_fds(bootstrap.ours.get(), fds, ipc::encode_bootstrap(payload));
  } catch (const Error& e) {
    // A worker that died at once closed its end first: its exit says why, not our EPIPE.
    if ((e.code() != EPIPE && e.code() != ECONNRESET) ||
        !worker->process.wait_for_exit(options_.stop_grace)) {
      throw;
    }
    throw Error("worker " + std::to_string(worker->process.pid()) +
                    " exited before MountReady (" + worker->process.reap().describe() + ")",
                0, "see the worker's log above");
  }
  return worker;
}

ipc::MountReady Supervisor::await_ready(Worker& worker) {
  return await_mount_ready(worker.ipc.get(), worker.process, *guard_, spec_.mountpoint, options_);
}

void Supervisor::start_watching() {
  watcher_ = std::thread([this] { watch(); });
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
  // mountinfo wakes nothing. worker_ is replaced by this thread only: read without the lock.
  pollfd ends[3] = {{worker_->process.pidfd(), POLLIN, 0},
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

namespace {

// Worth a successor: a crash (a signal, a non-zero exit). Not exit 0 (the worker was told to
// go: SIGTERM, say) and not 3 (the kernel ended the FUSE session: nothing is left to take over).
bool crashed(const sandbox::ExitStatus& status) {
  return status.signaled || (status.code != 0 && status.code != 3);
}

bool has_ended(int pidfd) {
  pollfd end{pidfd, POLLIN, 0};
  return ::poll(&end, 1, 0) > 0;
}

}  // namespace

void Supervisor::watch() {
  for (;;) {
    sandbox::SandboxedProcess& process = worker_->process;
    bool detached = await_end();
    const bool guard_lost =
        !detached && !process.wait_for_exit(milliseconds(0)) && !stopping_.load();
    if (detached) {
      // Its FUSE connection may live on (`umount -l` with a file still open), and the worker
      // with it, serving nothing anyone can reach: end it as unmount() would.
      spdlog::debug("the mount at {} was removed from outside; stopping worker {}",
                    spec_.mountpoint, process.pid());
      process.signal(SIGTERM);
      if (!process.wait_for_exit(options_.stop_grace)) process.signal(SIGKILL);
    } else if (guard_lost) {
      const std::string how = guard_->disarm();
      {
        std::lock_guard lock(exit_mutex_);
        guard_lost_ = how;
      }
      spdlog::error("the mount guard {} for {} ended ({}); stopping the worker so the mount "
                    "cannot outlive this supervisor unguarded",
                    guard_->pid(), spec_.mountpoint, how);
      process.signal(SIGKILL);
    }
    sandbox::ExitStatus status;
    try {
      status = process.reap();
    } catch (const std::exception& e) {
      spdlog::error("watching worker {}: {}", process.pid(), e.what());
    }
    // A worker whose FUSE session ended because the mount was removed exits on its own, often
    // before mountinfo's change is read; its mount, gone, says why.
    if (!detached && !guard_lost && !stopping_.load()) detached = !mount_watch_->attached();
    const bool requested = replace_requested_.exchange(false);
    const bool replaceable =
        !stopping_.load() && !guard_lost && !detached && (requested || crashed(status));
    {
      std::lock_guard lock(exit_mutex_);
      exit_status_ = status;
      // Before alive_ drops: status() then says "being restarted" only if one will be tried.
      restarting_ = replaceable && (requested || budget_left());
    }
    alive_.store(false, std::memory_order_release);
    if (replaceable) {
      const std::string cause =
          "worker " + std::to_string(process.pid()) + " exited (" + status.describe() + ")";
      const bool replaced = replace(requested, cause);
      {
        std::lock_guard lock(exit_mutex_);
        restarting_ = false;
      }
      if (replaced) continue;
    }
    from_outside_.store(detached, std::memory_order_release);
    if (stopping_.load() || guard_lost || detached) {
      spdlog::debug("worker {} for {} exited: {}", process.pid(), spec_.mountpoint,
                    status.describe());
    } else if (options_.restart_budget.restarts == 0 || !crashed(status)) {
      spdlog::warn("worker {} for {} exited unexpectedly: {}", process.pid(), spec_.mountpoint,
                   status.describe());
    }
    mount_->release();
    guard_->disarm();
    {
      std::lock_guard lock(exit_mutex_);
      ended_flag_ = true;
    }
    replaced_.notify_all();
    const std::uint64_t one = 1;
    if (::write(ended_.get(), &one, sizeof one) != sizeof one) {
      spdlog::error("signal the end of the mount at {}: {}", spec_.mountpoint,
                    std::strerror(errno));
    }
    return;
  }
}

bool Supervisor::replace(bool requested, const std::string& cause) {
  const RestartBudget& budget = options_.restart_budget;
  std::string why = cause;
  std::uint32_t generation = worker_->generation;  // each attempt takes the next number
  for (;;) {
    if (stopping_.load()) return false;
    {
      std::lock_guard lock(exit_mutex_);
      if (!requested) {
        if (!budget_left()) {
          budget_spent_ = budget.restarts > 0;
          if (budget_spent_) {
            spdlog::error("{}: {}; the restart budget ({} restarts in {} s) is spent: "
                          "removing the mount",
                          spec_.mountpoint, why, budget.restarts, budget.window.count());
          }
          return false;
        }
        restart_times_.push_back(std::chrono::steady_clock::now());
        ++restart_info_.restarts;
      }
      restart_info_.last_cause = why;
    }
    ++generation;
    if (requested) {
      spdlog::info("{}: restart requested; {}; starting worker generation {}", spec_.mountpoint,
                   why, generation);
    } else {
      spdlog::warn("{}: {}; starting worker generation {} (restart {} of at most {} within "
                   "{} s)",
                   spec_.mountpoint, why, generation, restart_times_.size(), budget.restarts,
                   budget.window.count());
    }
    std::unique_ptr<Worker> next;
    try {
      next = launch_worker(generation);
      (void)await_ready(*next);
    } catch (const std::exception& failure) {
      const std::string pid = next ? " " + std::to_string(next->process.pid()) : std::string();
      next.reset();  // killed and reaped
      if (has_ended(guard_->pidfd())) {
        // Without the guard nothing would remove the mount should we die: end it.
        const std::string how = guard_->disarm();
        std::lock_guard lock(exit_mutex_);
        guard_lost_ = how;
        return false;
      }
      // Without the hint: this names the cause, in the log and in exit_cause().
      const auto* error = dynamic_cast<const Error*>(&failure);
      why = "worker" + pid + " (generation " + std::to_string(generation) + ") failed: " +
            (error != nullptr ? error->message() : std::string(failure.what()));
      {
        std::lock_guard lock(exit_mutex_);
        last_failure_ = why;
      }
      requested = false;  // a successor that fails is a crash, whoever asked for it
      continue;
    }
    std::unique_ptr<Worker> old;
    {
      std::lock_guard lock(ipc_mutex_);
      old = std::move(worker_);
      worker_ = std::move(next);
      worker_pid_.store(worker_->process.pid(), std::memory_order_release);
      alive_.store(true, std::memory_order_release);
      // unmount() may have come and gone while the successor started: it is ours to stop.
      if (stopping_.load()) stop_worker();
    }
    {
      std::lock_guard lock(exit_mutex_);
      restart_info_.generation = generation;
      last_failure_.clear();
    }
    replaced_.notify_all();
    old.reset();  // its broker and output relay end, outside the lock
    spdlog::info("worker {} (generation {}) serves {}", pid(), generation, spec_.mountpoint);
    return true;
  }
}

bool Supervisor::budget_left() {
  const auto now = std::chrono::steady_clock::now();
  while (!restart_times_.empty() &&
         now - restart_times_.front() >= options_.restart_budget.window) {
    restart_times_.pop_front();
  }
  return restart_times_.size() < options_.restart_budget.restarts;
}

void Supervisor::stop_worker() {
  sandbox::SandboxedProcess& process = worker_->process;
  const milliseconds grace = options_.stop_grace;
  if (!process.wait_for_exit(milliseconds(0)) && worker_->ipc) {
    try {
      ipc::write_frame(worker_->ipc.get(), ipc::Stop{}, grace);
    } catch (const Error& e) {
      spdlog::debug("send Stop to worker {}: {}", process.pid(), e.what());
    }
  }
  if (!process.wait_for_exit(grace)) {
    spdlog::warn("worker {} did not exit {} ms after Stop; sending SIGTERM", process.pid(),
                 grace.count());
    process.signal(SIGTERM);
    if (!process.wait_for_exit(grace)) {
      spdlog::warn("worker {} ignored SIGTERM for {} ms; sending SIGKILL", process.pid(),
                   grace.count());
      process.signal(SIGKILL);
      if (!process.wait_for_exit(grace)) {
        spdlog::error("worker {} outlived SIGKILL by {} ms", process.pid(), grace.count());
      }
    }
  }
}

void Supervisor::restart() {
  std::lock_guard stop_lock(stop_mutex_);
  const std::string where = "restart the worker of " + spec_.mountpoint;
  if (stopped_ || stopping_.load()) throw Error(where, ESHUTDOWN, "the mount is being removed");
  std::uint32_t before = 0;
  {
    std::lock_guard lock(exit_mutex_);
    if (ended_flag_) throw Error(where, ESRCH, "the mount has ended");
    before = restart_info_.generation;
  }
  if (!is_alive()) {
    throw Error(where, EAGAIN, "a successor is being started already; try again in a moment");
  }
  replace_requested_.store(true);
  {
    std::lock_guard lock(ipc_mutex_);
    stop_worker();
  }
  // Each successor that fails may be followed by another, within the budget.
  const auto patience = (options_.handshake_timeout + 3 * options_.stop_grace) *
                        (options_.restart_budget.restarts + 2);
  std::unique_lock lock(exit_mutex_);
  replaced_.wait_for(lock, patience, [&] {
    return ended_flag_ || restart_info_.generation > before;
  });
  if (restart_info_.generation > before) return;
  const bool ended = ended_flag_;
  lock.unlock();
  if (ended) {
    throw Error(where + ": the mount ended instead: " + exit_cause(), 0,
                "see the mount's log for the successor's messages");
  }
  throw Error(where + ": no successor was ready within " +
                  std::to_string(std::chrono::duration_cast<std::chrono::seconds>(patience).count()) +
                  " s",
              ETIMEDOUT, "see the mount's log");
}

RestartInfo Supervisor::restart_info() const {
  std::lock_guard lock(exit_mutex_);
  return restart_info_;
}

int Supervisor::worker_pidfd() const {
  std::lock_guard lock(ipc_mutex_);
  return worker_ ? worker_->process.pidfd() : -1;
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
  std::string cause = !last_failure_.empty()
                          ? last_failure_
                          : "worker " + std::to_string(pid()) + " exited (" +
                                (exit_status_ ? exit_status_->describe() : std::string("?")) + ")";
  if (budget_spent_) {
    cause += "; the restart budget (" + std::to_string(options_.restart_budget.restarts) +
             " restarts in " + std::to_string(options_.restart_budget.window.count()) +
             " s) is spent";
  }
  return cause;
}

ipc::StatusOk Supervisor::status() {
  const ipc::Message reply =
      exchange(ipc::Status{}, options_.status_timeout, ipc::kind_of(ipc::StatusOk{}));
  const auto& ok = std::get<ipc::StatusOk>(reply);
  const pid_t pid = worker_pid_.load();
  WorkerReplyCheck check;
  ipc::StatusOk checked = checked_status(ok, pid, spec_.mountpoint, check);
  log_problems(check, pid, "StatusOk");
  return checked;
}

ipc::Message Supervisor::exchange(const ipc::Message& request, std::chrono::milliseconds timeout,
                                  std::string_view expected_kind) {
  std::lock_guard lock(ipc_mutex_);
  const std::string where = std::string(ipc::kind_of(request)) + " to the worker of " + spec_.mountpoint;
  if (!worker_ || !worker_->ipc) throw Error(where, ESHUTDOWN, "the mount was stopped");
  if (!is_alive()) {
    const auto exit = exit_status();
    std::lock_guard exit_lock(exit_mutex_);
    if (restarting_) {
      throw Error(where, EAGAIN, "its worker is being restarted; ask again in a moment");
    }
    throw Error(where, ESRCH, "the worker exited (" + (exit ? exit->describe() : "?") + ")");
  }
  Worker& worker = *worker_;
  try {
    // A reply that missed its deadline may still arrive: skip it so replies stay in step.
    for (; worker.unanswered > 0; --worker.unanswered) {
      (void)ipc::read_frame(worker.ipc.get(), options_.status_timeout);
    }
    ipc::write_frame(worker.ipc.get(), request, timeout);
    ++worker.unanswered;
    auto reply = ipc::read_frame(worker.ipc.get(), timeout);
    --worker.unanswered;
    if (!reply) throw Error("the worker closed its IPC socket", ECONNRESET);
    if (!expected_kind.empty() && ipc::kind_of(*reply) != expected_kind) {
      throw Error("expected " + std::string(expected_kind) + ", got " +
                      std::string(ipc::kind_of(*reply)),
                  EPROTO);
    }
    return std::move(*reply);
  } catch (const Error& e) {
    if (e.code() == ETIMEDOUT) {
      throw Error(where + ": no reply within " + std::to_string(timeout.count()) + " ms",
                  ETIMEDOUT, "the worker is alive but stuck; unmount escalates to SIGKILL");
    }
    // A malformed or cut frame leaves the stream out of step for good (no frame boundary can
    // be found again): a worker that breaks the protocol is ended, and so is its mount.
    worker.process.signal(SIGKILL);
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
    if (worker_) {
      stop_worker();
      worker_->ipc.reset();
    }
  }
  if (watcher_.joinable()) watcher_.join();
  if (worker_ && worker_->broker) worker_->broker->stop();
  mount_->release();
  if (guard_) guard_->disarm();  // none when the first worker failed to start
  // The worker is reaped and the mount gone: the overlay is free now, before whoever asked for
  // the unmount hears that it is done (`unmount MP && overlay discard MP`), not at our exit.
  if (!is_alive()) overlay_lock_.reset();
}

}  // namespace heddle::launcher
