#include "cli.h"

#include <grp.h>
#include <pwd.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <variant>

#include "commands.h"
#include "heddle/display_text.h"
#include "heddle/error.h"
#include "heddle/launcher/capture.h"
#include "heddle/log_levels.h"
#include "logging.h"

namespace heddle::launcher {
namespace {

constexpr const char* kUsageLine =
    "Usage: heddle-fuse-launcher [-v|-q] {mount|status|capture|restart|unmount|list|overlay|doctor|sandbox-exec|demo} "
    "... (see --help)";

constexpr const char* kHelp = R"(Usage: heddle-fuse-launcher [-v|-q] COMMAND [OPTIONS]
       heddle-fuse-launcher --repo-root R --thread-id T --mountpoint M --ipc-fd N

Expose a directory, or a heddle thread of a git repository, at a mountpoint
through a sandboxed FUSE worker. A thread is writable: changes go to an
overlay directory on disk, never into the repository. A directory is
read-only unless --overlay is given.

Commands:
  mount --dir DIR --mountpoint MP [--overlay | --overlay-dir ODIR]
        [--foreground] [--json] [--uid U] [--gid G] [--allow-other]
        [--sandbox=strict|degraded] [--restart-budget N[/SECONDS]]
  mount --repo-root REPO --thread-id THREAD [--cache-bytes N]
        [--read-only | --overlay-dir ODIR] [--pin] --mountpoint MP [...]
      Mount DIR, or the tree of THREAD in the git repository REPO, at MP.
      THREAD is refs/heads/THREAD, else refs/heddle/threads/THREAD, else any
      revision (a tag, a commit id). --cache-bytes caps the worker's cache of
      inflated blobs (default 256M; K, M, G suffixes); larger blobs stream.
      A thread mount is writable unless --read-only; a DIR mount is read-only
      unless --overlay. Writes are copied on write into an overlay directory:
      ODIR with --overlay-dir (which implies --overlay), else
      $XDG_STATE_HOME/heddle-fuse/overlays/KEY (root: /var/lib/heddle-fuse/
      overlays/KEY), KEY naming the source and thread, so mounting the same
      thread again resumes its changes. DIR and REPO are never written.
      One mount at a time may use an overlay. A thread mount follows its ref:
      when the ref moves (a commit, a fetch, a capture elsewhere), the mount
      serves the new commit within a second, without remounting; changes in
      the overlay stay on top. --pin keeps the commit resolved at mount time.
      Returns once the mount is ready and leaves a background supervisor
      holding it; with --foreground it stays and unmounts on SIGINT or SIGTERM.
      --json prints the MountReady frame plus supervisor_pid. --uid/--gid
      (number or name) name the user the mount is for; they default to yours.
      The worker never runs as uid 0: a mount for root is served by
      nobody:nogroup, which must be able to read DIR or REPO. Without root the
      mount goes through the setuid fusermount3, and the worker of a read-only
      mount runs as a uid from your /etc/subuid range when newuidmap exists and
      DIR or REPO is readable by others, else as you; a writable mount's worker
      runs as you. MP must be an empty directory owned by the mount's user;
      root resolves it with that user's rights, follows only symlinks only
      root can change, and mounts onto the directory it checked.
      --allow-other lets other users in (needs user_allow_other in
      /etc/fuse.conf without root). --sandbox=strict (the default) refuses to
      run without a user namespace; --sandbox=degraded runs the worker without
      namespaces, still with no capabilities, no_new_privs and seccomp.
      A worker that dies unasked (a signal, a non-zero exit, a broken
      protocol) is replaced under the live mount by a new one in the same
      sandbox; --restart-budget N/SECONDS allows at most N such restarts
      within SECONDS (default 3/300; 0 removes the mount at the first crash).
      Past the budget the mount is removed and the log names the cause.
  status MP [--json]
      Ask the mount's worker for its Status and print the reply, with whether
      the mount is writable, and its overlay's directory, size and file count,
      the worker's generation (1, then +1 for every successor) and how many
      times it was restarted after a crash.
  capture MP [-m MESSAGE] [--author "NAME <EMAIL>"] [--json]
      Record what the thread mount at MP shows (its commit's tree plus the
      overlay) as a commit whose parent is the commit it serves, and move the
      thread's ref to it, only if the ref has not moved meanwhile. Author and
      committer default to the repository's user.name and user.email. The
      mount then serves the new commit with an empty overlay, without
      unmounting; empty directories cannot be in a commit and stay in the
      overlay. If anything fails, nothing is lost. --json prints the commit.
  restart MP [--json] | restart --all [--json]
      Replace the mount's worker (every live mount of yours with --all) by a
      new one, on the same FUSE connection and in the same sandbox, without
      unmounting: after a package upgrade, running mounts get the new worker
      binary. Open files stay open. Requests the old worker had taken are sent
      again by the kernel (Linux 6.9 or later; before, they fail with EIO:
      see doctor). Prints the new worker's pid and generation.
  unmount MP
      Stop the worker (Stop, then SIGTERM, then SIGKILL) and return once the
      mount is gone.
  list [--json]
      Show every live mount of yours: mountpoint, source, thread, ro or rw,
      the pids of its worker, supervisor and guard, the worker's generation
      and crash restarts, its uptime, and the size and file count of its
      overlay.
  overlay list [--json]
      Show the overlays in the default overlays directory: KEY, source, thread,
      the mount using it (if any), size and file count.
  overlay show MP|KEY|ODIR [--json]
      List what an overlay changed: A added, M modified (copied up from the
      source), D deleted, R replaced (a directory removed and made again).
  overlay discard MP|KEY|ODIR
      Remove an overlay and all its changes; refused while a mount uses it.
      MP may be a mountpoint no longer mounted: its last overlay is found.
  sandbox-exec [--dir DIR | --repo-root REPO] [--sandbox=...] -- CMD [ARGS...]
      Run CMD in exactly the sandbox a worker for DIR or REPO would get (same
      namespaces, minimal root, identity, capabilities, seccomp), for debugging.
      Exits with CMD's exit code (128 + N if killed by signal N).
  doctor [--json]
      Check every precondition of a mount on this host (FUSE device, setuid
      helper, no_new_privs, user namespaces, a real sandbox probe) and print
      each as ok, warn or fail with its fix. Exits 1 if a mount would fail.
  demo
      Make a demo tree, mount it sandboxed, read it through the mount, print
      the Status reply and the worker's sandbox facts, and unmount.

heddle's worker interface (set HEDDLE_FUSE_WORKER_BIN to this program):
  --repo-root R --thread-id T --mountpoint M --ipc-fd N
      Mount thread T of R at M, writable with the default overlay, with a
      sandboxed worker and serve heddle's supervisor on fd N as
      heddle-fuse-worker does: MountReady or MountError, Status, and Stop (or
      EOF on N, or SIGTERM), which removes the mount; the changes stay.

Options:
  -v, --verbose  log more (debug; twice: trace)
  -q, --quiet    log less (warnings; twice: errors only)
  -h, --help     show this help
  --version      show the version

Files:
  $XDG_RUNTIME_DIR/heddle-fuse/*.sock  control sockets (root: /run/heddle-fuse)
  $XDG_STATE_HOME/heddle-fuse/*.log    per-mount supervisor logs, rotated at 1 MiB
                                       (default ~/.local/state; root: /var/log/heddle-fuse)
  $XDG_STATE_HOME/heddle-fuse/overlays/KEY/
                                       a writable mount's changes (upper/), its source
                                       (source.json) and lock (root: /var/lib/heddle-fuse)

Environment:
  HEDDLE_FUSE_LOG                   log levels, spdlog syntax: debug, or per logger
                                    warn,heddle-fuse-worker=debug
  HEDDLE_FUSE_WORKER_BIN            the worker binary (default: next to this program, or
                                    ../libexec/heddle-fuse/); ignored if it names this program
  HEDDLE_FUSE_WORKER_GIT_BIN        the worker of git threads (default: as above, named
                                    heddle-fuse-worker-git; HEDDLE_FUSE_WORKER_BIN if only
                                    that is set)
  HEDDLE_FUSE_WORKER_STOP_GRACE_MS  grace before each escalation step (default 2000)

Exit status: 0 success, 1 failure, 2 usage error.
See heddle-fuse-launcher(1) and heddle-fuse-worker(8).
)";

class Args {
 public:
  explicit Args(std::span<char*> args) : args_(args) {}
  [[nodiscard]] bool done() const { return next_ >= args_.size(); }
  [[nodiscard]] std::string peek() const { return args_[next_]; }
  std::string take() { return args_[next_++]; }
  std::string value_of(const std::string& flag) {
    if (done()) throw UsageError(flag + " needs a value");
    return take();
  }

 private:
  std::span<char*> args_;
  std::size_t next_ = 0;
};

bool is_number(const std::string& value) {
  return !value.empty() && value.size() < 10 &&
         value.find_first_not_of("0123456789") == std::string::npos;
}

uid_t parse_uid(const std::string& value) {
  if (is_number(value)) return static_cast<uid_t>(std::stoul(value));
  if (const passwd* pw = ::getpwnam(value.c_str())) return pw->pw_uid;
  throw UsageError("--uid " + value + ": no such user");
}

gid_t parse_gid(const std::string& value) {
  if (is_number(value)) return static_cast<gid_t>(std::stoul(value));
  if (const group* gr = ::getgrnam(value.c_str())) return gr->gr_gid;
  throw UsageError("--gid " + value + ": no such group");
}

// Bytes, with an optional K, M or G suffix (powers of 1024).
std::uint64_t parse_size(const std::string& value) {
  std::size_t digits = 0;
  while (digits < value.size() && std::isdigit(static_cast<unsigned char>(value[digits]))) ++digits;
  const std::string suffix = value.substr(digits);
  int shift = -1;
  if (suffix.empty()) shift = 0;
  if (suffix == "K" || suffix == "k") shift = 10;
  if (suffix == "M" || suffix == "m") shift = 20;
  if (suffix == "G" || suffix == "g") shift = 30;
  if (digits == 0 || digits > 12 || shift < 0) {
    throw UsageError("--cache-bytes " + value + ": expected a size such as 268435456 or 256M");
  }
  const std::uint64_t count = std::stoull(value.substr(0, digits));
  // 12 digits and a G overflow 64 bits; a wrapped size would be silently small (or zero).
  if (count > (std::numeric_limits<std::uint64_t>::max() >> shift)) {
    throw UsageError("--cache-bytes " + value + ": too large");
  }
  const std::uint64_t size = count << shift;
  if (size == 0) throw UsageError("--cache-bytes must be positive");
  return size;
}

// --restart-budget N or N/SECONDS: at most N restarts within SECONDS (default window 300).
RestartBudget parse_restart_budget(const std::string& value) {
  const auto slash = value.find('/');
  const std::string count = value.substr(0, slash);
  const std::string window = slash == std::string::npos ? "" : value.substr(slash + 1);
  RestartBudget budget = kDefaultRestartBudget;
  if (!is_number(count) || std::stoul(count) > 1000 ||
      (slash != std::string::npos && (!is_number(window) || std::stoul(window) == 0 ||
                                      std::stoul(window) > 86400 * 7))) {
    throw UsageError("--restart-budget " + value +
                     ": expected RESTARTS[/SECONDS], such as 3/300 (0 to never restart)");
  }
  budget.restarts = static_cast<unsigned>(std::stoul(count));
  if (!window.empty()) budget.window = std::chrono::seconds(std::stoul(window));
  return budget;
}

// --sandbox MODE or --sandbox=MODE.
ipc::SandboxMode parse_sandbox_mode(const std::string& flag, Args& args) {
  const std::string mode = flag == "--sandbox" ? args.value_of(flag) : flag.substr(10);
  if (mode != "strict" && mode != "degraded") {
    throw UsageError("--sandbox " + mode + ": expected strict or degraded");
  }
  return mode == "degraded" ? ipc::SandboxMode::kDegraded : ipc::SandboxMode::kStrict;
}

MountArgs parse_mount(Args& args) {
  MountArgs mount;
  while (!args.done()) {
    const std::string flag = args.take();
    if (flag == "--dir") {
      mount.dir = args.value_of(flag);
    } else if (flag == "--repo-root") {
      mount.repo_root = args.value_of(flag);
    } else if (flag == "--thread-id") {
      mount.thread_id = args.value_of(flag);
    } else if (flag == "--cache-bytes") {
      mount.cache_bytes = parse_size(args.value_of(flag));
    } else if (flag == "--mountpoint") {
      mount.mountpoint = args.value_of(flag);
    } else if (flag == "--foreground") {
      mount.foreground = true;
    } else if (flag == "--json") {
      mount.json = true;
    } else if (flag == "--allow-other") {
      mount.allow_other = true;
    } else if (flag == "--read-only") {
      mount.read_only = true;
    } else if (flag == "--overlay") {
      mount.overlay = true;
    } else if (flag == "--pin") {
      mount.pin = true;
    } else if (flag == "--overlay-dir") {
      mount.overlay_dir = args.value_of(flag);
      if (mount.overlay_dir.empty()) throw UsageError("--overlay-dir needs a non-empty value");
    } else if (flag == "--sandbox" || flag.starts_with("--sandbox=")) {
      mount.sandbox = parse_sandbox_mode(flag, args);
    } else if (flag == "--restart-budget") {
      mount.restart_budget = parse_restart_budget(args.value_of(flag));
    } else if (flag == "--uid") {
      mount.uid = parse_uid(args.value_of(flag));
    } else if (flag == "--gid") {
      mount.gid = parse_gid(args.value_of(flag));
    } else {
      throw UsageError("mount: unknown option " + flag);
    }
  }
  const bool git = !mount.repo_root.empty() || !mount.thread_id.empty();
  if (git && !mount.dir.empty()) {
    throw UsageError("mount: --dir and --repo-root/--thread-id exclude each other");
  }
  if (!git && mount.dir.empty()) {
    throw UsageError("mount: --dir, or --repo-root with --thread-id, is required");
  }
  if (git && (mount.repo_root.empty() || mount.thread_id.empty())) {
    throw UsageError("mount: --repo-root and --thread-id go together");
  }
  if (!git && mount.cache_bytes) throw UsageError("mount: --cache-bytes needs --repo-root");
  if (!git && mount.pin) throw UsageError("mount: --pin needs --repo-root");
  if (mount.mountpoint.empty()) throw UsageError("mount: --mountpoint is required");
  if (mount.read_only && (mount.overlay || !mount.overlay_dir.empty())) {
    throw UsageError(std::string("mount: --read-only and ") +
                     (mount.overlay ? "--overlay" : "--overlay-dir") + " exclude each other");
  }
  return mount;
}

// sandbox-exec [--dir D | --repo-root R] [--sandbox=strict|degraded] -- CMD ARGS...
SandboxExecArgs parse_sandbox_exec(Args& args) {
  SandboxExecArgs exec;
  while (!args.done()) {
    const std::string flag = args.take();
    if (flag == "--") {
      while (!args.done()) exec.command.push_back(args.take());
      break;
    }
    if (flag == "--dir") {
      exec.dir = args.value_of(flag);
    } else if (flag == "--repo-root") {
      exec.repo_root = args.value_of(flag);
    } else if (flag == "--sandbox" || flag.starts_with("--sandbox=")) {
      exec.sandbox = parse_sandbox_mode(flag, args);
    } else {
      throw UsageError("sandbox-exec: unknown option " + flag + " (the command goes after --)");
    }
  }
  if (!exec.dir.empty() && !exec.repo_root.empty()) {
    throw UsageError("sandbox-exec: --dir and --repo-root exclude each other");
  }
  if (exec.command.empty()) throw UsageError("sandbox-exec: a command is required after --");
  return exec;
}

// "status MP [--json]" and "unmount MP": one path, optionally --json.
std::pair<std::string, bool> parse_target(Args& args, const std::string& command, bool allow_json) {
  std::string mountpoint;
  bool json = false;
  while (!args.done()) {
    const std::string arg = args.take();
    if (allow_json && arg == "--json") {
      json = true;
    } else if (arg.starts_with("-")) {
      throw UsageError(command + ": unknown option " + arg);
    } else if (mountpoint.empty()) {
      mountpoint = arg;
    } else {
      throw UsageError(command + ": unexpected argument " + arg);
    }
  }
  if (mountpoint.empty()) throw UsageError(command + ": the mountpoint is required");
  return {mountpoint, json};
}

bool is_dropin_flag(const std::string& arg) {
  return arg == "--repo-root" || arg == "--thread-id" || arg == "--mountpoint" || arg == "--ipc-fd";
}

// Exactly the reference worker's four flags, "--flag value" only, each once.
DropInArgs parse_dropin(Args& args) {
  DropInArgs dropin;
  std::string ipc_fd;
  while (!args.done()) {
    const std::string flag = args.take();
    std::string* slot = flag == "--repo-root"    ? &dropin.repo_root
                        : flag == "--thread-id"  ? &dropin.thread_id
                        : flag == "--mountpoint" ? &dropin.mountpoint
                        : flag == "--ipc-fd"     ? &ipc_fd
                                                 : nullptr;
    if (slot == nullptr) throw UsageError("unrecognised argument " + flag + " (heddle worker mode)");
    if (!slot->empty()) throw UsageError(flag + " given twice");
    *slot = args.value_of(flag);
    if (slot->empty()) throw UsageError(flag + " needs a non-empty value");
  }
  for (const auto& [flag, value] : {std::pair{"--repo-root", dropin.repo_root},
                                    {"--thread-id", dropin.thread_id},
                                    {"--mountpoint", dropin.mountpoint},
                                    {"--ipc-fd", ipc_fd}}) {
    if (value.empty()) throw UsageError(std::string(flag) + " is required (heddle worker mode)");
  }
  if (!is_number(ipc_fd) || std::stoul(ipc_fd) < 3 || std::stoul(ipc_fd) > INT32_MAX) {
    throw UsageError("--ipc-fd " + ipc_fd + ": expected an inherited descriptor number above 2");
  }
  dropin.ipc_fd = static_cast<int>(std::stoul(ipc_fd));
  return dropin;
}

// overlay list [--json] | show TARGET [--json] | discard TARGET
OverlayCommand parse_overlay(Args& args) {
  if (args.done()) throw UsageError("overlay: list, show or discard is required");
  OverlayCommand overlay;
  const std::string action = args.take();
  if (action == "list") {
    overlay.action = OverlayCommand::Action::kList;
  } else if (action == "show") {
    overlay.action = OverlayCommand::Action::kShow;
  } else if (action == "discard") {
    overlay.action = OverlayCommand::Action::kDiscard;
  } else {
    throw UsageError("overlay: unknown action " + action + " (list, show or discard)");
  }
  const std::string command = "overlay " + action;
  const bool takes_target = overlay.action != OverlayCommand::Action::kList;
  const bool takes_json = overlay.action != OverlayCommand::Action::kDiscard;
  while (!args.done()) {
    const std::string arg = args.take();
    if (takes_json && arg == "--json") {
      overlay.json = true;
    } else if (arg.starts_with("-")) {
      throw UsageError(command + ": unknown option " + arg);
    } else if (takes_target && overlay.target.empty() && !arg.empty()) {
      overlay.target = arg;
    } else {
      throw UsageError(command + ": unexpected argument " + arg);
    }
  }
  if (takes_target && overlay.target.empty()) {
    throw UsageError(command + ": a mountpoint, an overlay KEY or an overlay directory is "
                     "required");
  }
  return overlay;
}

// capture MP [-m MESSAGE] [--author "Name <email>"] [--json]
CaptureArgs parse_capture(Args& args) {
  CaptureArgs capture;
  while (!args.done()) {
    const std::string arg = args.take();
    if (arg == "--json") {
      capture.json = true;
    } else if (arg == "-m" || arg == "--message") {
      capture.message = args.value_of(arg);
      if (capture.message.empty()) throw UsageError("capture: " + arg + " needs a message");
    } else if (arg == "--author") {
      capture.author = args.value_of(arg);
      try {
        (void)parse_author(capture.author);
      } catch (const Error& e) {
        throw UsageError("capture: " + e.message() + " (" + e.hint() + ")");
      }
    } else if (arg.starts_with("-")) {
      throw UsageError("capture: unknown option " + arg);
    } else if (capture.mountpoint.empty() && !arg.empty()) {
      capture.mountpoint = arg;
    } else {
      throw UsageError("capture: unexpected argument " + arg);
    }
  }
  if (capture.mountpoint.empty()) throw UsageError("capture: the mountpoint is required");
  return capture;
}

// Runs a parsed command with the environment main() read.
struct Dispatch {
  const LauncherEnvironment& env;
  int operator()(const HelpCommand&) const {
    std::cout << kHelp;
    return 0;
  }
  int operator()(const VersionCommand&) const {
    std::cout << "heddle-fuse-launcher " << HEDDLE_VERSION << "\n";
    return 0;
  }
  int operator()(const MountArgs& args) const { return mount_command(args, env); }
  int operator()(const StatusCommand& args) const {
    return status_command(args.mountpoint, args.json, env.dirs);
  }
  int operator()(const CaptureArgs& args) const { return capture_command(args, env.dirs); }
  int operator()(const RestartCommand& args) const { return restart_command(args, env.dirs); }
  int operator()(const UnmountCommand& args) const {
    return unmount_command(args.mountpoint, env);
  }
  int operator()(const ListCommand& args) const { return list_command(args.json, env.dirs); }
  int operator()(const DropInArgs& args) const { return dropin_command(args, env); }
  int operator()(const DoctorCommand& args) const { return doctor_command(args.json, env); }
  int operator()(const SandboxExecArgs& args) const {
    return sandbox_exec_command(args, env);
  }
  int operator()(const DemoCommand&) const { return demo_command(env); }
  int operator()(const OverlayCommand& args) const { return overlay_command(args, env.dirs); }
};

}  // namespace

namespace {

// "--json" at most, as list and doctor take.
bool parse_json_only(Args& args, const std::string& command) {
  bool json = false;
  while (!args.done()) {
    const std::string arg = args.take();
    if (arg != "--json") throw UsageError(command + ": unexpected argument " + arg);
    json = true;
  }
  return json;
}

ParsedCommand parse_command(Args& args) {
  if (args.done()) throw UsageError("a command is required");
  if (is_dropin_flag(args.peek())) return parse_dropin(args);
  const std::string command = args.take();
  if (command == "-h" || command == "--help" || command == "help") return HelpCommand{};
  if (command == "--version") return VersionCommand{};
  if (command == "mount") return parse_mount(args);
  if (command == "status") {
    auto [mountpoint, json] = parse_target(args, command, true);
    return StatusCommand{std::move(mountpoint), json};
  }
  if (command == "capture") return parse_capture(args);
  if (command == "unmount") return UnmountCommand{parse_target(args, command, false).first};
  if (command == "restart") {
    if (!args.done() && args.peek() == "--all") {
      args.take();
      return RestartCommand{"", true, parse_json_only(args, command)};
    }
    auto [mountpoint, json] = parse_target(args, command, true);
    return RestartCommand{std::move(mountpoint), false, json};
  }
  if (command == "list") return ListCommand{parse_json_only(args, command)};
  if (command == "doctor") return DoctorCommand{parse_json_only(args, command)};
  if (command == "sandbox-exec") return parse_sandbox_exec(args);
  if (command == "overlay") return parse_overlay(args);
  if (command == "demo") {
    if (!args.done()) throw UsageError("demo takes no arguments");
    return DemoCommand{};
  }
  throw UsageError("unknown command " + command);
}

}  // namespace

ParsedCli parse_cli(std::span<char*> argv) {
  Args args(argv);
  int verbosity = 0;
  // Global options come first: -v/-q, repeatable, also bundled (-vv).
  while (!args.done()) {
    const std::string arg = args.peek();
    if (arg == "--verbose" || arg == "--quiet") {
      verbosity += arg == "--verbose" ? 1 : -1;
    } else if (arg.size() >= 2 && arg[0] == '-' && arg.find_first_not_of(arg[1], 1) == std::string::npos &&
               (arg[1] == 'v' || arg[1] == 'q')) {
      const int count = static_cast<int>(arg.size() - 1);
      verbosity += arg[1] == 'v' ? count : -count;
    } else {
      break;
    }
    args.take();
  }
  return ParsedCli{parse_command(args), verbosity};
}

int run_cli(int argc, char** argv, LauncherEnvironment env) {
  const std::span<char*> args(argv + 1, static_cast<std::size_t>(argc > 0 ? argc - 1 : 0));
  try {
    const ParsedCli cli = parse_cli(args);
    // -v/-q win over HEDDLE_FUSE_LOG, for the worker too.
    if (const std::string level = configure_logging(env, cli.verbosity); !level.empty()) {
      env.set_worker_variable(kLogEnv, level);
    }
    return std::visit(Dispatch{env}, cli.command);
  } catch (const UsageError& e) {
    std::cerr << "heddle-fuse-launcher: " << escape_text(e.what()) << "\n" << kUsageLine << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "heddle-fuse-launcher: " << escape_text(e.what()) << "\n";
    return 1;
  }
}

}  // namespace heddle::launcher
