#include "supervision.h"

#include <spdlog/spdlog.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "heddle/display_text.h"
#include "heddle/error.h"
#include "heddle/ipc/frame.h"
#include "heddle/launcher/source_kinds.h"

namespace heddle::launcher {
namespace {

constexpr std::chrono::milliseconds kControlReadTimeout{5000};

ipc::Message answer_status(Supervisor& supervisor, ThreadSync* sync) {
  try {
    ipc::StatusOk status = supervisor.status();
    const ipc::MountSpec& request = supervisor.spec();
    status.extra["supervisor_pid"] = ::getpid();
    status.extra["guard_pid"] = supervisor.guard_pid();
    add_source_status(request.source, status.extra);
    if (sync != nullptr) sync->add_status(status.extra);
    // The request decides, whatever the worker says; the overlay's size is the client's to walk.
    status.extra["writable"] = request.writable();
    if (request.writable()) {
      status.extra["overlay"] = request.overlay_dir;
    } else {
      status.extra.erase("overlay");
    }
    status.extra["uptime_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::steady_clock::now() - supervisor.started())
                                    .count();
    // Which worker of the mount this is: the supervisor counts, whatever the worker says.
    const RestartInfo restarts = supervisor.restart_info();
    status.extra["generation"] = restarts.generation;
    status.extra["restarts"] = restarts.restarts;
    status.extra["restart_budget"] = describe_budget(supervisor.options().restart_budget);
    if (!restarts.last_cause.empty()) status.extra["last_restart"] = restarts.last_cause;
    return status;
  } catch (const Error& e) {
    // Escaped: it may quote the worker, and must encode (valid UTF-8) to reach the client.
    return ipc::MountError{escape_text(e.what())};
  }
}

// `restart`: the successor's Status once it serves, or why there is none.
ipc::Message answer_restart(Supervisor& supervisor, ThreadSync* sync) {
  try {
    supervisor.restart();
  } catch (const Error& e) {
    return ipc::MountError{escape_text(e.what())};
  }
  return answer_status(supervisor, sync);
}

}  // namespace

StopSignals::StopSignals() {
  sigemptyset(&set_);
  for (int signo : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set_, signo);
  if (::sigprocmask(SIG_BLOCK, &set_, &old_) != 0) throw_errno("sigprocmask");
  fd_.reset(::signalfd(-1, &set_, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!fd_) throw_errno("signalfd");
}

StopSignals::~StopSignals() {
  // A stop signal that came while we were already stopping is answered by that stop;
  // unblocking it would kill us with it instead of letting us exit as planned.
  while (take() != 0) {
  }
  ::sigprocmask(SIG_SETMASK, &old_, nullptr);
}

int StopSignals::take() const {
  signalfd_siginfo info{};
  return ::read(fd_.get(), &info, sizeof info) == sizeof info ? static_cast<int>(info.ssi_signo) : 0;
}

bool handle_control(Supervisor& supervisor, ControlServer& server, ThreadSync* sync) {
  auto peer = server.accept_peer();
  if (!peer) return false;
  std::optional<ipc::Message> request;
  try {
    request = ipc::read_frame(peer->get(), kControlReadTimeout);
  } catch (const Error& e) {
    spdlog::warn("control request: {}", e.what());
    return false;
  }
  if (!request) return false;
  ipc::Message reply = ipc::MountError{"unsupported request"};
  bool stop = false;
  if (std::holds_alternative<ipc::Status>(*request)) {
    reply = answer_status(supervisor, sync);
  } else if (const auto* capture = std::get_if<ipc::Capture>(&*request)) {
    reply = sync != nullptr ? sync->capture(*capture)
                            : ipc::Message(ipc::MountError{
                                  "only a thread mount (--repo-root, --thread-id) can be captured"});
  } else if (std::holds_alternative<ipc::Restart>(*request)) {
    spdlog::info("restart requested for {}", supervisor.spec().mountpoint);
    reply = answer_restart(supervisor, sync);
  } else if (std::holds_alternative<ipc::Stop>(*request)) {
    spdlog::info("unmount requested for {}", supervisor.spec().mountpoint);
    supervisor.unmount();
    reply = ipc::Stopping{};
    stop = true;
  }
  try {
    ipc::write_frame(peer->get(), reply, kControlReadTimeout);
  } catch (const Error& e) {
    spdlog::warn("control reply: {}", e.what());
  }
  return stop;
}

}  // namespace heddle::launcher
