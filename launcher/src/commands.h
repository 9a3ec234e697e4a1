// The CLI's subcommands. Each returns the process exit code; errors are thrown as
// heddle::Error (exit 1) or UsageError (exit 2).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "heddle/ipc/mount_spec.h"
#include "heddle/launcher/launcher_environment.h"
#include "heddle/launcher/supervisor.h"
#include "heddle/unique_fd.h"

namespace heddle::launcher {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct MountArgs {
  std::string dir;        // the directory backend, or
  std::string repo_root;  // the git backend, with thread_id
  std::string thread_id;
  std::optional<std::uint64_t> cache_bytes;
  std::string mountpoint;
  bool foreground = false;
  bool json = false;
  bool allow_other = false;
  bool read_only = false;    // --read-only
  bool overlay = false;      // --overlay
  bool pin = false;          // --pin: keep serving the commit resolved at mount time
  std::string overlay_dir;   // --overlay-dir DIR (implies --overlay)
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  ipc::SandboxMode sandbox = ipc::SandboxMode::kStrict;  // --sandbox=strict|degraded
  std::optional<RestartBudget> restart_budget;  // --restart-budget N[/SECONDS]

  // A thread is writable unless --read-only; a directory only with --overlay(-dir).
  [[nodiscard]] bool writable() const {
    return !read_only && (overlay || !overlay_dir.empty() || !repo_root.empty());
  }
};

struct SandboxExecArgs {
  std::string dir;        // bind this source, as a --dir worker gets it, or
  std::string repo_root;  // the git paths a --repo-root worker gets
  std::vector<std::string> command;
  ipc::SandboxMode sandbox = ipc::SandboxMode::kStrict;  // --sandbox=strict|degraded
};

// heddle's worker argv: --repo-root R --thread-id T --mountpoint M --ipc-fd N, any order.
struct DropInArgs {
  std::string repo_root;
  std::string thread_id;
  std::string mountpoint;  // echoed verbatim in MountReady and StatusOk, as heddle passed it
  int ipc_fd = -1;
};

// A mount request ready for Supervisor::spawn: the spec, and its mountpoint held open.
struct PreparedMount {
  ipc::MountSpec spec;
  UniqueFd mountpoint;  // O_PATH, from hold_mountpoint()
};

// Canonical paths, the identity, and the checks that give clear errors before mounting.
[[nodiscard]] PreparedMount prepare_mount(const MountArgs& args, const UserDirs& dirs);
// The mountpoint's canonical form, found without touching the mount itself (a dead FUSE
// mount answers ENOTCONN, a stuck one hangs).
[[nodiscard]] std::string canonical_mountpoint(const std::string& path);

int mount_command(const MountArgs& args, const LauncherEnvironment& env);
// overlay list [--json] | show MP-or-KEY [--json] | discard MP-or-KEY
struct OverlayCommand {
  enum class Action { kList, kShow, kDiscard };
  Action action = Action::kList;
  std::string target;  // a mountpoint, a KEY, or an overlay directory
  bool json = false;
};
int overlay_command(const OverlayCommand& command, const UserDirs& dirs);
// "512 B", "1.5 KiB", "2.0 GiB": sizes in `list` and `overlay list`.
[[nodiscard]] std::string format_bytes(std::uint64_t bytes);
int status_command(const std::string& mountpoint, bool json, const UserDirs& dirs);
// capture MP [-m MESSAGE] [--author "Name <email>"] [--json]
struct CaptureArgs {
  std::string mountpoint;
  std::string message;
  std::string author;
  bool json = false;
};
int capture_command(const CaptureArgs& args, const UserDirs& dirs);
int list_command(bool json, const UserDirs& dirs);
// Serves heddle's supervisor on args.ipc_fd as its worker would, with a sandboxed worker
// of ours behind it.
int dropin_command(const DropInArgs& args, const LauncherEnvironment& env);
int unmount_command(const std::string& mountpoint, const LauncherEnvironment& env);
// restart MP [--json] | restart --all [--json]: a successor worker under each live mount.
struct RestartCommand {
  std::string mountpoint;  // empty with --all
  bool all = false;
  bool json = false;
};
int restart_command(const RestartCommand& command, const UserDirs& dirs);
int demo_command(const LauncherEnvironment& env);
int doctor_command(bool json, const LauncherEnvironment& env);
// Runs the command in a worker's sandbox; returns its exit code (128 + signal if killed).
int sandbox_exec_command(const SandboxExecArgs& args, const LauncherEnvironment& env);

}  // namespace heddle::launcher
