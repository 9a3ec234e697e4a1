// The supervisor of one sandboxed FUSE worker: spawn + handshake, Status, Stop/escalation,
// exit watching through the pidfd, and removal of the mount once the worker is gone.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
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
  // One request and its reply (issue 15's Freeze, Thaw, Retarget), bounded by `timeout`; the
  // reply whatever its kind. Throws heddle::Error as status() does (a broken stream kills the
  // worker; a timed-out reply is skipped when it comes).
  [[nodiscard]] ipc::Message exchange(const ipc::Message& request, std::chrono::milliseconds timeout);
  // Stop -> grace -> SIGTERM -> grace -> SIGKILL, then the mount is removed. Idempotent.
  void unmount();

  [[nodiscard]] bool is_alive() const noexcept { return alive_.load(std::memory_order_acquire); }
  [[nodiscard]] pid_t pid() const noexcept { return process_.pid(); }
  [[nodiscard]] pid_t guard_pid() const noexcept { return guard_->pid(); }
  [[nodiscard]] const ipc::MountReady& ready() const noexcept { return ready_; }
  [[nodiscard]] const ipc::MountSpec& spec() const noexcept { return spec_; }
  [[nodiscard]] std::chrono::steady_clock::time_point started() const noexcept { return started_; }
  // Readable once the worker has exited (on its own, killed for a lost guard, or stopped) and
  // the supervisor has reaped it and removed the mount; for poll loops. The supervisor alone
  // watches the worker: nothing else waits on its pidfd.
  [[nodiscard]] int ended_fd() const noexcept { return ended_.get(); }
  // The worker's pidfd, to signal it (tests); its exit is ended_fd()'s to report.
  [[nodiscard]] int worker_pidfd() const noexcept { return process_.pidfd(); }
  [[nodiscard]] std::optional<sandbox::ExitStatus> exit_status() const;
  // Why the mount ended without being asked to: the worker's exit, or the loss of the guard.
  [[nodiscard]] std::string exit_cause() const;
  // The mount left this namespace without us (`umount`, `fusermount3 -u`, ... from outside),
  // and the worker was ended for it (or had ended, its FUSE session over). Not an error: the
  // user removed the mount. Meaningful once ended_fd() is readable.
  [[nodiscard]] bool unmounted_from_outside() const noexcept {
    return from_outside_.load(std::memory_order_acquire);
  }

 private:
  Supervisor(ipc::MountSpec spec, SupervisorOptions options,
             std::optional<OverlayLock> overlay_lock, std::unique_ptr<FuseMount> mount,
             std::unique_ptr<MountGuard> guard, std::unique_ptr<OutputRelay> output,
             sandbox::SandboxedProcess process, UniqueFd ipc, ipc::MountReady ready,
             std::unique_ptr<FileBroker> broker);
  void watch();
  // Blocks until the worker or the guard ends (false) or the mount is gone from outside (true).
  bool await_end();

  const ipc::MountSpec spec_;
  const SupervisorOptions options_;
  // Declared before the mount so it is released after it: the overlay stays ours until the
  // mount is gone.
  std::optional<OverlayLock> overlay_lock_;
  std::unique_ptr<FuseMount> mount_;
  std::unique_ptr<MountGuard> guard_;  // destroyed (disarmed) after the mount is released
  std::unique_ptr<OutputRelay> output_;  // the worker's stdout and stderr, into our log
  sandbox::SandboxedProcess process_;
  const ipc::MountReady ready_;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();

  std::mutex ipc_mutex_;  // one request/reply on the IPC socket at a time
  UniqueFd ipc_;
  int unanswered_ = 0;  // replies still due after a timed-out exchange()
  // Opens, as the mount's user, what the worker may not (file_broker.h); ends with the worker.
  std::unique_ptr<FileBroker> broker_;

  std::atomic<bool> alive_{true};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> from_outside_{false};
  std::unique_ptr<MountWatch> mount_watch_;  // the watcher's: did the mount leave without us?
  mutable std::mutex exit_mutex_;
  std::optional<sandbox::ExitStatus> exit_status_;
  std::string guard_lost_;  // how the guard ended, if it died first

  std::mutex stop_mutex_;
  bool stopped_ = false;
  UniqueFd ended_;  // an eventfd, written once watch() has handled the worker's exit
  std::thread watcher_;
};

}  // namespace heddle::launcher
