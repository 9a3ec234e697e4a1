#include <fcntl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "cli_output.h"
#include "commands.h"
#include "heddle/error.h"
#include "heddle/ipc/frame.h"
#include "heddle/launcher/control_socket.h"
#include "heddle/launcher/host_checks.h"
#include "heddle/launcher/mountinfo.h"
#include "heddle/launcher/mountpoint.h"
#include "heddle/launcher/overlay_dir.h"
#include "heddle/launcher/source_access.h"
#include "heddle/launcher/source_kinds.h"
#include "heddle/launcher/worker_identity.h"
#include "logging.h"
#include "supervision.h"

namespace heddle::launcher {
namespace fs = std::filesystem;
namespace {

std::string ready_text(const Supervisor& supervisor, bool json) {
  const ipc::MountReady& ready = supervisor.ready();
  if (json) {
    const nlohmann::ordered_json body = {{"kind", "MountReady"},
                                         {"pid", ready.pid},
                                         {"mount_path", ready.mount_path},
                                         {"supervisor_pid", ::getpid()},
                                         {"guard_pid", supervisor.guard_pid()}};
    return json_output(body) + "\n";
  }
  const ipc::MountSpec& request = supervisor.spec();
  return escape_text("mounted " + source_label(request.source) + " at " + ready.mount_path +
                     (request.writable() ? " read-write, changes in " + request.overlay_dir
                                         : " read-only") +
                     " (worker pid " + std::to_string(supervisor.pid()) + ", supervisor pid " +
                     std::to_string(::getpid()) + ")") +
         "\n";
}

// The supervising process's main loop: control requests, stop signals, the mount's end.
int serve(Supervisor& supervisor, ControlServer& server, const StopSignals& signals,
          ThreadSync* sync) {
  for (;;) {
    pollfd fds[3] = {{server.fd(), POLLIN, 0}, {signals.fd(), POLLIN, 0},
                     {supervisor.ended_fd(), POLLIN, 0}};
    if (::poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      throw_errno("poll");
    }
    if (fds[2].revents != 0) {
      supervisor.unmount();
      if (supervisor.unmounted_from_outside()) {
        // The user removed the mount: nothing failed, and nothing of it is left to serve.
        spdlog::info("{} was unmounted from outside; exiting", supervisor.spec().mountpoint);
        return 0;
      }
      spdlog::error("the mount at {} ended: {}; mount removed", supervisor.spec().mountpoint,
                    supervisor.exit_cause());
      return 1;
    }
    if (fds[1].revents != 0) {
      spdlog::info("signal {} received; unmounting {}", signals.take(),
                   supervisor.spec().mountpoint);
      supervisor.unmount();
      return 0;
    }
    if (fds[0].revents != 0 && handle_control(supervisor, server, sync)) return 0;
  }
}

void write_all(int fd, const std::string& text) {
  for (std::size_t done = 0; done < text.size();) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

// Mounts and supervises in this process. The first line of output ("0..." ready or
// "1..." error) goes to `report_fd`, which is then closed, or to stdout/stderr if -1.
int run_supervisor(PreparedMount& prepared, const MountArgs& args,
                   const LauncherEnvironment& env, int report_fd) {
  const ipc::MountSpec& request = prepared.spec;
  const auto report = [&](bool ok, const std::string& text) {
    if (report_fd < 0) {
      (ok ? std::cout : std::cerr) << text << std::flush;
      return;
    }
    write_all(report_fd, (ok ? "0" : "1") + text);
    ::close(report_fd);
  };
  std::unique_ptr<Supervisor> supervisor;
  std::unique_ptr<ControlServer> server;
  std::unique_ptr<ThreadSync> sync;  // a thread mount's capture and follow
  StopSignals signals;
  try {
    server = std::make_unique<ControlServer>(control_socket_path(env.dirs, request.mountpoint));
    SupervisorOptions options = env.supervisor_options();
    if (args.restart_budget) options.restart_budget = *args.restart_budget;
    supervisor = Supervisor::spawn(request, std::move(options), std::move(prepared.mountpoint));
    if (std::holds_alternative<ipc::GitSource>(request.source)) {
      sync = std::make_unique<ThreadSync>(*supervisor, args.pin);
    }
  } catch (const Error& e) {
    sync.reset();
    if (supervisor) supervisor->unmount();
    server.reset();  // gone before the caller hears of the failure
    if (request.writable()) forget_unused_overlay(env.dirs, request.overlay_dir);
    report(false, "heddle-fuse-launcher: " + escape_text(e.what()) + "\n");
    return 1;
  }
  report(true, ready_text(*supervisor, args.json));
  const int code = serve(*supervisor, *server, signals, sync.get());
  sync.reset();  // the follower stops before the supervisor goes
  return code;
}

// Leaves a background supervisor (double fork, setsid) and relays its first line.
int run_in_background(PreparedMount& prepared, const MountArgs& args,
                      const LauncherEnvironment& env) {
  const ipc::MountSpec& request = prepared.spec;
  const std::string log_path = supervisor_log_path(env.dirs, request.mountpoint);
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  UniqueFd report_read(pipe_fds[0]);
  UniqueFd report_write(pipe_fds[1]);
  std::fflush(nullptr);
  // Raw fork, not Boost.Process: the daemon is this very process (no exec) going on as the
  // background supervisor.
  const pid_t child = ::fork();
  if (child < 0) throw_errno("fork");
  if (child == 0) {
    report_read.reset();
    if (::setsid() < 0 || ::chdir("/") != 0) _exit(1);
    const pid_t daemon = ::fork();
    if (daemon != 0) _exit(daemon < 0 ? 1 : 0);
    // Our log lines go to the log file, and to the journal if stderr is one; anything else
    // written to stderr (a sanitizer's report, say) lands in the log file too.
    const bool journal = stderr_is_journal(env.journal_stream);
    const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (null_fd < 0 || log_fd < 0) _exit(1);
    ::dup2(null_fd, STDIN_FILENO);
    ::dup2(log_fd, STDOUT_FILENO);
    if (!journal) ::dup2(log_fd, STDERR_FILENO);
    ::close(null_fd);
    ::close(log_fd);
    int code = 1;
    try {
      log_to_file(log_path, journal);
      if (env.log_max_age.count() > 0) {
        if (const std::size_t removed =
                expire_supervisor_logs(env.dirs, request.mountpoint, env.log_max_age)) {
          spdlog::info("removed {} log file(s) of mounts that ended over {} days ago", removed,
                       env.log_max_age.count() / 24);
        }
      }
      code = run_supervisor(prepared, args, env, report_write.release());
    } catch (const std::exception& e) {
      spdlog::error("{}", e.what());
    }
    std::exit(code);
  }
  report_write.reset();
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  std::string output;
  char buffer[4096];
  for (ssize_t n; (n = ::read(report_read.get(), buffer, sizeof buffer)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    output.append(buffer, static_cast<std::size_t>(n));
  }
  if (output.empty()) {
    throw Error("the background supervisor exited before the mount was ready", 0,
                "see " + log_path);
  }
  const bool ok = output[0] == '0';
  if (ok) {
    std::cout << output.substr(1) << std::flush;
    return 0;
  }
  // One line: the error, then where the worker's own messages went.
  while (!output.empty() && output.back() == '\n') output.pop_back();
  std::cerr << output.substr(1) << " (log: " << log_path << ")\n";
  return 1;
}

}  // namespace

std::string canonical_mountpoint(const std::string& path) {
  fs::path p = fs::path(path).lexically_normal();
  // A symlink as the last component is followed with readlink(2), which never asks the
  // filesystem mounted there; everything above it is resolved by canonical().
  for (int links = 0;; ++links) {
    if (!p.has_filename() && p.has_parent_path() && p != p.root_path()) p = p.parent_path();
    if (p == p.root_path()) return p.string();
    std::error_code ec;
    const fs::path parent = fs::canonical(fs::absolute(p, ec).parent_path(), ec);
    if (ec) throw Error("mountpoint " + path, ec.value());
    p = parent / p.filename();
    std::string target(PATH_MAX, '\0');
    const ssize_t n = ::readlink(p.c_str(), target.data(), target.size());
    if (n < 0) return p.string();  // not a symlink (EINVAL), or absent: the checks say so
    if (links == 40) throw Error("mountpoint " + path, ELOOP);
    target.resize(static_cast<std::size_t>(n));
    p = (parent / target).lexically_normal();  // an absolute target replaces the parent
  }
}

PreparedMount prepare_mount(const MountArgs& args, const UserDirs& dirs) {
  ipc::MountSpec request;
  if (!args.repo_root.empty()) {
    ipc::GitSource git{args.repo_root, args.thread_id};
    if (args.cache_bytes) git.cache_bytes = *args.cache_bytes;
    request.source = git;
  } else {
    request.source = ipc::DirSource{args.dir};
  }
  request.uid = args.uid.value_or(::getuid());
  if (args.gid) {
    request.gid = *args.gid;
  } else if (const auto account = args.uid ? account_of(*args.uid) : std::nullopt) {
    request.gid = account->gid;
  } else {
    request.gid = ::getgid();
  }
  // With the mount's user's authority, not root's: see source_access.h.
  request.source = canonical(request.source, request.uid, request.gid);
  request.sandbox = args.sandbox;
  const std::vector<std::string> read_paths =
      bind_paths(source_binds(request.source, request.uid, request.gid));
  // Resolved and checked as the user the mount is for, and held: see mountpoint.h.
  HeldMountpoint mountpoint = hold_mountpoint(args.mountpoint, request.uid, request.gid);
  request.mountpoint = mountpoint.path;
  for (const std::string& source : read_paths) {
    if (path_within(request.mountpoint, source) || path_within(source, request.mountpoint)) {
      throw Error("mountpoint " + request.mountpoint + " and source " + source + " overlap",
                  EINVAL, "the worker would look up paths through its own mount and deadlock");
    }
  }
  request.allow_other = args.allow_other;
  if (args.writable()) {
    // The worker writes the overlay: never inside what it serves, the repository or the mount.
    const OverlaySource source = overlay_source(request.source);
    std::vector<std::string> forbidden = read_paths;
    forbidden.push_back(source.source);  // a repository's work tree, beyond its git dir
    forbidden.push_back(request.mountpoint);
    const WorkerIdentity worker = choose_worker_identity(request.uid, request.gid, {}, false, true);
    if (::geteuid() == 0 && request.uid != 0) {
      // Root mounting for a user: the overlay is the user's, so it is found, checked and made
      // by the user (as_mount_user), never by root, which would follow the user's symlinks and
      // chown what it found. Its default place is the user's own state home.
      const auto account = account_of(request.uid);
      const UserDirs users{"", "", account ? account->home : ""};
      try {
        as_mount_user(request.uid, request.gid, [&] {
          request.overlay_dir = prepare_overlay_dir(users, args.overlay_dir, source, forbidden,
                                                    worker.uid, worker.gid);
        });
      } catch (const Error& e) {
        throw Error(e.kind(), e.attempt() + " (as " + mount_user_label(request.uid, request.gid) +
                                  ")",
                    e.code(), e.hint());
      }
    } else {
      request.overlay_dir =
          prepare_overlay_dir(dirs, args.overlay_dir, source, forbidden, worker.uid, worker.gid);
    }
  }
  return PreparedMount{std::move(request), std::move(mountpoint.fd)};
}

int mount_command(const MountArgs& args, const LauncherEnvironment& env) {
  PreparedMount request = prepare_mount(args, env.dirs);
  return args.foreground ? run_supervisor(request, args, env, -1)
                         : run_in_background(request, args, env);
}

}  // namespace heddle::launcher

