// The supervisor of one sandboxed FUSE worker: spawn + handshake, Status, Stop/escalation,
// exit watching through the pidfd, restart of a crashed (or upgraded) worker on the same FUSE
// connection within a budget, and removal of the mount once no worker serves it.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "heddle/ipc/message.h"
#include "heddle/ipc/mount_spec.h"
#include "heddle/launcher/file_broker.h"
#include "heddle/launcher/fuse_mount.h"
#include "heddle/launcher/mount_guard.h"
#include "heddle/launcher/mount_watch.h"
#include "heddle/launcher/output_relay.h"
#include "heddle/launcher/overlay_dir.h"
#include "heddle/sandbox/sandboxed_process.h"
#include "heddle/unique_fd.h"

namespace heddle::launcher {

inline constexpr const char* kWorkerBinaryEnv = "HEDDLE_FUSE_WORKER_BIN";
// The git thread worker, heddle-fuse-worker-git (resolve_worker_binary_for).
inline constexpr const char* kGitWorkerBinaryEnv = "HEDDLE_FUSE_WORKER_GIT_BIN";
inline constexpr const char* kStopGraceEnv = "HEDDLE_FUSE_WORKER_STOP_GRACE_MS";
// Test hook for the fault matrix: set to anything, the worker ignores Stop and SIGTERM so the
// escalation can be observed from the CLI. (The worker's own hooks: heddle/ipc/worker_env.h.)
inline constexpr const char* kIgnoreStopEnv = "HEDDLE_FUSE_WORKER_TEST_IGNORE_STOP";
inline constexpr std::chrono::milliseconds kDefaultStopGrace{2000};

// How many times a mount's worker may be restarted after dying unasked (a signal, a non-zero
// exit, a broken protocol) within a sliding window; one more and the mount is removed.
struct RestartBudget {
  unsigned restarts = 0;  // 0: a worker's death ends the mount (no restart)
  std::chrono::seconds window{300};
  friend bool operator==(const RestartBudget&, const RestartBudget&) = default;
};
// What the CLI's mounts get unless --restart-budget says otherwise.
inline constexpr RestartBudget kDefaultRestartBudget{3, std::chrono::seconds(300)};
// "3/300" as --restart-budget takes it.
[[nodiscard]] std::string describe_budget(const RestartBudget& budget);

// `override_path` (HEDDLE_FUSE_WORKER_BIN) if given, else heddle-fuse-worker next to the running
// executable (or in ../libexec/heddle-fuse/ when installed). Throws heddle::Error naming
// where it looked.
[[nodiscard]] std::string resolve_worker_binary(const std::string& override_path = {});

// How to supervise, whatever is mounted. Pure defaults: main() reads the environment into a
// LauncherEnvironment (launcher_environment.h), tests set the fields they need.
struct SupervisorOptions {
  std::string worker_binary;  // empty: resolve_worker_binary()
  std::string git_worker_binary;  // empty: see resolve_worker_binary_for()
  std::string guard_binary;   // empty: resolve_guard_binary()
  std::chrono::milliseconds handshake_timeout{10000};
  std::chrono::milliseconds status_timeout{5000};
  std::chrono::milliseconds stop_grace = kDefaultStopGrace;
  // The worker ignores Stop and SIGTERM: for escalation tests.
  bool test_ignore_stop = false;
  // An unprivileged caller's worker may run as a uid from its /etc/subuid range.
  bool subordinate_ids = true;
  std::vector<std::string> worker_env;  // "NAME=value", the worker's whole environment
  // None by default here (a library caller opts in); the CLI's default is kDefaultRestartBudget.
  RestartBudget restart_budget;
};

// Which worker of its mount serves now, and how it came to.
struct RestartInfo {
  std::uint32_t generation = 1;  // 1: the first worker; +1 for every successor
  std::uint32_t restarts = 0;    // successors started after a crash (a `restart` is not one)
  std::string last_cause;        // why the last successor was started; empty if none was
};

// The worker program for `source` (source_kinds.h's worker_program), found as
// resolve_worker_binary() finds heddle-fuse-worker. A git thread's is git_worker_binary
// (HEDDLE_FUSE_WORKER_GIT_BIN) if set; else worker_binary if set, since one override names
// the worker of every kind (a stand-in of tests, or heddle's own worker).
[[nodiscard]] std::string resolve_worker_binary_for(const ipc::Source& source,
                                                    const SupervisorOptions& options);

// The sandbox a worker for `spec` gets (binds, identity, namespaces, environment), without
// its executable, argv or fds. `sandbox-exec` runs other commands in exactly this.
[[nodiscard]] sandbox::SandboxSpec worker_sandbox(const ipc::MountSpec& spec,
                                                  const SupervisorOptions& options);

class Supervisor {
 public:
  // Mounts, launches the sandboxed worker, hands it the fds, and returns after MountReady
  // (whose pid and mount_path ready() gives as the supervisor knows them, not as claimed).
  // A writable mount first takes its overlay's lock (EBUSY if another mount has it).
  // Throws heddle::Error: MountError's message, "worker exited before MountReady (...)",
  // or a handshake timeout. Nothing (process, mount, fd) survives a failed spawn.
  // `mountpoint` is the directory hold_mountpoint() checked, mounted onto as held; without
  // it spec.mountpoint is opened as it stands (the caller vouches for it).
  static std::unique_ptr<Supervisor> spawn(ipc::MountSpec spec, SupervisorOptions options = {},
                                           UniqueFd mountpoint = {});

  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;
  ~Supervisor();

  // One Status round trip, bounded by status_timeout. pid and mount_path are the worker's and
  // the mount's as the supervisor knows them; of the worker's extra fields only the known,
  // well-typed ones are kept (worker_status.h), the rest dropped with a warning.
  [[nodiscard]] ipc::StatusOk status();
  // One request and its reply (Status; issue 15's Freeze, Thaw, Retarget), bounded by
  // `timeout`: of `expected_kind` if given, else whatever its kind. Throws heddle::Error: a
  // broken stream or a reply of another kind kills the worker; a timed-out reply is skipped
  // when it comes.
  [[nodiscard]] ipc::Message exchange(const ipc::Message& request, std::chrono::milliseconds timeout,
                                      std::string_view expected_kind = {});
  // Stop -> grace -> SIGTERM -> grace -> SIGKILL, then the mount is removed. Idempotent.
  void unmount();
  // Replaces the worker on the same connection (`heddle-fuse-launcher restart`: an upgraded
  // binary, without unmounting): the worker gets Stop (escalated as unmount() does), and a
  // successor with the same sandbox takes over; requests the old one had taken are resent by
  // the kernel (Linux >= 6.9). Returns once the successor is ready. Not charged to the restart
  // budget, unless the successor fails. Throws heddle::Error if the mount ends instead, or is
  // stopping (ESHUTDOWN), or a restart is already under way (EAGAIN).
  void restart();
  [[nodiscard]] RestartInfo restart_info() const;

  // The worker serving now (false while a successor is being started, and once the mount ended).
  [[nodiscard]] bool is_alive() const noexcept { return alive_.load(std::memory_order_acquire); }
  [[nodiscard]] pid_t pid() const noexcept { return worker_pid_.load(std::memory_order_acquire); }
  [[nodiscard]] pid_t guard_pid() const noexcept { return guard_->pid(); }
  [[nodiscard]] const ipc::MountReady& ready() const noexcept { return ready_; }
  [[nodiscard]] const ipc::MountSpec& spec() const noexcept { return spec_; }
  [[nodiscard]] const SupervisorOptions& options() const noexcept { return options_; }
  [[nodiscard]] std::chrono::steady_clock::time_point started() const noexcept { return started_; }
  // Readable once the worker has exited (on its own, killed for a lost guard, or stopped) and
  // the supervisor has reaped it and removed the mount; for poll loops. The supervisor alone
  // watches the worker: nothing else waits on its pidfd.
  [[nodiscard]] int ended_fd() const noexcept { return ended_.get(); }
  // The current worker's pidfd, to signal it (tests); its exit is ended_fd()'s to report.
  [[nodiscard]] int worker_pidfd() const;
  [[nodiscard]] std::optional<sandbox::ExitStatus> exit_status() const;
  // Why the mount ended without being asked to: the worker's exit (and a spent restart
  // budget), or the loss of the guard.
  [[nodiscard]] std::string exit_cause() const;
  // The mount left this namespace without us (`umount`, `fusermount3 -u`, ... from outside),
  // and the worker was ended for it (or had ended, its FUSE session over). Not an error: the
  // user removed the mount. Meaningful once ended_fd() is readable.
  [[nodiscard]] bool unmounted_from_outside() const noexcept {
    return from_outside_.load(std::memory_order_acquire);
  }

 private:
  // One worker and what is its alone; a restart replaces it whole.
  struct Worker {
    sandbox::SandboxedProcess process;
    std::uint32_t generation;
    UniqueFd ipc;
    std::unique_ptr<OutputRelay> output;  // its stdout and stderr, into our log
    // Opens, as the mount's user, what the worker may not (file_broker.h); ends with it.
    std::unique_ptr<FileBroker> broker;
    int unanswered = 0;  // replies still due after a timed-out exchange()
  };

  Supervisor(ipc::MountSpec spec, SupervisorOptions options,
             std::optional<OverlayLock> overlay_lock, std::unique_ptr<FuseMount> mount,
             std::unique_ptr<MountGuard> guard, sandbox::SandboxSpec sandbox,
             std::vector<UniqueFd> broker_roots, UniqueFd journal);
  // Starts worker `generation` in sandbox_ and hands it its fds and bootstrap; not yet ready.
  std::unique_ptr<Worker> launch_worker(std::uint32_t generation);
  // Its MountReady, bounded by the handshake timeout (guard watched meanwhile).
  ipc::MountReady await_ready(Worker& worker);
  void start_watching();
  void watch();
  // Blocks until the worker or the guard ends (false) or the mount is gone from outside (true).
  bool await_end();
  // After the worker's unasked (or requested) exit: start successors until one is ready
  // (true), or the budget is spent, the mount is stopping, or the guard is gone (false).
  bool replace(bool requested, const std::string& cause);
  // Whether the budget allows one more restart now (forgetting those out of its window);
  // exit_mutex_ held.
  bool budget_left();
  // Stop -> grace -> SIGTERM -> grace -> SIGKILL of the current worker; ipc_mutex_ held.
  void stop_worker();

  const ipc::MountSpec spec_;
  const SupervisorOptions options_;
  // Declared before the mount so it is released after it: the overlay stays ours until the
  // mount is gone.
  std::optional<OverlayLock> overlay_lock_;
  std::unique_ptr<FuseMount> mount_;  // keeps its own /dev/fuse fd; each worker gets a dup
  std::unique_ptr<MountGuard> guard_;  // destroyed (disarmed) after the mount is released
  // Every worker's sandbox, computed once: a successor gets exactly the first one's.
  const sandbox::SandboxSpec sandbox_;
  const std::vector<UniqueFd> broker_roots_;  // each worker's broker gets dups
  // The node and handle journal (a memfd) every worker of the mount gets; the worker's format,
  // never read here.
  const UniqueFd journal_;
  ipc::MountReady ready_;  // the first worker's
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();

  mutable std::mutex ipc_mutex_;  // one request/reply at a time; guards worker_'s replacement
  std::unique_ptr<Worker> worker_;  // written by the watcher only, under ipc_mutex_
  std::atomic<pid_t> worker_pid_{0};

  std::atomic<bool> alive_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> from_outside_{false};
  std::atomic<bool> replace_requested_{false};  // restart(): the next exit is asked for
  std::unique_ptr<MountWatch> mount_watch_;  // the watcher's: did the mount leave without us?
  mutable std::mutex exit_mutex_;
  std::condition_variable replaced_;  // generation or ended changed (exit_mutex_)
  std::optional<sandbox::ExitStatus> exit_status_;
  std::string guard_lost_;  // how the guard ended, if it died first
  RestartInfo restart_info_;
  std::deque<std::chrono::steady_clock::time_point> restart_times_;  // within the window
  std::string last_failure_;  // a successor that failed to start, and why
  bool budget_spent_ = false;
  bool restarting_ = false;  // a successor is being started (or about to be)
  bool ended_flag_ = false;

  std::mutex stop_mutex_;
  bool stopped_ = false;
  UniqueFd ended_;  // an eventfd, written once watch() has handled the worker's exit
  std::thread watcher_;
};

}  // namespace heddle::launcher
