// What a supervising process does besides the Supervisor itself: take the stop signals, and
// answer the control socket (status, unmount, list). Shared by `mount` and heddle worker mode.
#pragma once

#include <signal.h>

#include "heddle/launcher/control_socket.h"
#include "heddle/launcher/supervisor.h"
#include "heddle/launcher/thread_sync.h"
#include "heddle/unique_fd.h"

namespace heddle::launcher {

// Blocks SIGINT, SIGTERM and SIGHUP (create it before any thread exists, so every thread
// inherits the mask) and reads them through a signalfd; on destruction, discards those still
// pending and restores the mask.
class StopSignals {
 public:
  StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  ~StopSignals();

  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  // Reads a pending signal; its number, or 0 if none is pending.
  int take() const;

 private:
  sigset_t set_{};
  sigset_t old_{};
  UniqueFd fd_;
};

// Answers one control request; true when it asked us to stop (and we did). `sync` (a thread
// mount's capture and follow) answers Capture and adds to Status; without it Capture fails.
bool handle_control(Supervisor& supervisor, ControlServer& server, ThreadSync* sync = nullptr);

}  // namespace heddle::launcher
