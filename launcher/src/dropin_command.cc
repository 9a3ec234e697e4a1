// heddle worker mode: heddle's supervisor spawns us as its FUSE worker. We mount with our own
// sandboxed worker and speak, on the fd heddle gave us, exactly what its worker would.
#include <fcntl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>

#include "commands.h"
#include "heddle/display_text.h"
#include "heddle/error.h"
#include "heddle/ipc/frame.h"
#include "heddle/launcher/overlay_dir.h"
#include "heddle/launcher/source_kinds.h"
#include "supervision.h"

namespace heddle::launcher {
namespace {

constexpr std::chrono::milliseconds kFrameTimeout{5000};

// The fd heddle passed: a socket, taken over and kept from every process we start.
UniqueFd take_ipc_fd(int fd) {
  const std::string what = "--ipc-fd " + std::to_string(fd);
  const char* hint = "heddle passes its end of a socketpair here, inherited without CLOEXEC";
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno(what, hint);
  if (!S_ISSOCK(st.st_mode)) throw Error(what + " is not a socket", ENOTSOCK, hint);
  if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) throw_errno(what);
  return UniqueFd(fd);
}

void send(int ipc, const ipc::Message& message) {
  try {
    ipc::write_frame(ipc, message, kFrameTimeout);
  } catch (const Error& e) {
    spdlog::warn("send {} to heddle: {}", ipc::kind_of(message), e.what());
  }
}

// One request from heddle; true when we are done. As heddle's own worker does, a broken
// stream or a message a worker never receives ends the mount like Stop.
bool answer_heddle(int ipc, Supervisor& supervisor, const DropInArgs& args) {
  std::optional<ipc::Message> request;
  try {
    request = ipc::read_frame(ipc, kFrameTimeout);
  } catch (const Error& e) {
    spdlog::warn("heddle's IPC stream broke ({}); unmounting", e.what());
    return true;
  }
  if (!request) {
    spdlog::info("heddle closed the IPC socket; unmounting {}", args.mountpoint);
    return true;
  }
  if (std::holds_alternative<ipc::Stop>(*request)) {
    spdlog::debug("Stop from heddle; unmounting {}", args.mountpoint);
    send(ipc, ipc::Stopping{});
    return true;
  }
  if (std::holds_alternative<ipc::Status>(*request)) {
    try {
      (void)supervisor.status();  // our worker answers, so the mount does
      send(ipc, ipc::StatusOk{static_cast<std::uint32_t>(::getpid()), args.mountpoint});
    } catch (const Error& e) {
      send(ipc, ipc::MountError{escape_text(e.what())});
    }
    return false;
  }
  spdlog::warn("heddle sent {}, which a worker never receives; unmounting", ipc::kind_of(*request));
  return true;
}

}  // namespace

int dropin_command(const DropInArgs& args, const LauncherEnvironment& env) {
  const UniqueFd ipc = take_ipc_fd(args.ipc_fd);
  const StopSignals signals;
  std::unique_ptr<ControlServer> server;
  std::unique_ptr<Supervisor> supervisor;
  std::unique_ptr<ThreadSync> sync;
  std::string overlay_dir;
  try {
    MountArgs mount;  // writable, with the default overlay, as heddle's own mounts are
    mount.repo_root = args.repo_root;
    mount.thread_id = args.thread_id;
    mount.mountpoint = args.mountpoint;
    PreparedMount prepared = prepare_mount(mount, env.dirs);
    const ipc::MountSpec& request = prepared.spec;
    overlay_dir = request.overlay_dir;
    // `list`, `status` and `unmount` see this mount as any other.
    server = std::make_unique<ControlServer>(control_socket_path(env.dirs, request.mountpoint));
    supervisor =
        Supervisor::spawn(request, env.supervisor_options(), std::move(prepared.mountpoint));
    // `capture` works here too. The mount stays pinned to the commit it resolved, as before
    // issue 15: heddle's protocol has no frame that would tell heddle the mount moved.
    sync = std::make_unique<ThreadSync>(*supervisor, true);
  } catch (const Error& e) {
    sync.reset();
    if (supervisor) supervisor->unmount();
    server.reset();
    if (!overlay_dir.empty()) forget_unused_overlay(env.dirs, overlay_dir);
    spdlog::error("{}", e.what());
    send(ipc.get(), ipc::MountError{escape_text(e.what())});
    return 1;
  }
  send(ipc.get(), ipc::MountReady{static_cast<std::uint32_t>(::getpid()), args.mountpoint});
  spdlog::info("serving {} at {} for heddle (worker pid {}), changes in {}",
               source_label(supervisor->spec().source), args.mountpoint, supervisor->pid(),
               supervisor->spec().overlay_dir);

  bool failed = false;
  for (bool done = false; !done;) {
    pollfd fds[4] = {{ipc.get(), POLLIN, 0}, {signals.fd(), POLLIN, 0},
                     {supervisor->ended_fd(), POLLIN, 0}, {server->fd(), POLLIN, 0}};
    if (::poll(fds, 4, -1) < 0) {
      if (errno == EINTR) continue;
      throw_errno("poll");
    }
    if (fds[2].revents != 0) {
      if (supervisor->unmounted_from_outside()) {
        // As heddle's own worker does once its session is over: no frame, the socket
        // closes, exit 0.
        spdlog::info("{} was unmounted from outside; exiting", args.mountpoint);
      } else {
        spdlog::error("the mount at {} ended: {}", args.mountpoint, supervisor->exit_cause());
        failed = true;
      }
      done = true;
    } else if (fds[1].revents != 0) {
      spdlog::info("signal {} received; unmounting {}", signals.take(), args.mountpoint);
      done = true;
    } else if (fds[0].revents != 0) {
      done = answer_heddle(ipc.get(), *supervisor, args);
    } else if (fds[3].revents != 0) {
      done = handle_control(*supervisor, *server, sync.get());
    }
  }
  sync.reset();
  supervisor->unmount();
  return failed ? 1 : 0;
}

}  // namespace heddle::launcher
