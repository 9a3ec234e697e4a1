// A process confined by clone3 namespaces, a minimal root, zero capabilities, no_new_privs and
// seccomp. Owns its pidfd; every signal goes through it, so a recycled pid is never hit.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <string>

#include "heddle/sandbox/sandbox_spec.h"
#include "heddle/unique_fd.h"

namespace heddle::sandbox {

struct ExitStatus {
  int code = 0;         // exit code when !signaled
  int signal = 0;       // terminating signal when signaled
  bool signaled = false;
  [[nodiscard]] bool success() const noexcept { return !signaled && code == 0; }
  [[nodiscard]] std::string describe() const;  // "exit code 1", "signal 9 (SIGKILL)"
};

class SandboxedProcess {
 public:
  // Returns once the child has called execve. Throws heddle::Error naming the setup step that
  // failed, its errno and a hint; no child, fd or namespace outlives a failed launch.
  static SandboxedProcess launch(const SandboxSpec& spec);

  SandboxedProcess(SandboxedProcess&& other) noexcept;
  SandboxedProcess& operator=(SandboxedProcess&&) = delete;
  SandboxedProcess(const SandboxedProcess&) = delete;
  SandboxedProcess& operator=(const SandboxedProcess&) = delete;
  // Kills (SIGKILL) and reaps the child if nobody has reaped it yet.
  ~SandboxedProcess();

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  // How the host's refusal of clone3 was worked around (for one log line), or nullptr.
  [[nodiscard]] const char* clone_fallback() const noexcept { return clone_fallback_; }
  // Pollable: becomes readable when the process has exited.
  [[nodiscard]] int pidfd() const noexcept { return pidfd_.get(); }

  // pidfd_send_signal. Returns false if the process is already gone.
  bool signal(int signo) const;
  // Waits for the exit without reaping; true if it exited within `timeout`.
  [[nodiscard]] bool wait_for_exit(std::chrono::milliseconds timeout) const;
  // Blocks until the process exits, then reaps it. Call from one thread only.
  ExitStatus reap();
  [[nodiscard]] bool reaped() const noexcept { return reaped_.load(); }

 private:
  SandboxedProcess(pid_t pid, UniqueFd pidfd) noexcept : pid_(pid), pidfd_(std::move(pidfd)) {}

  pid_t pid_ = -1;
  UniqueFd pidfd_;
  const char* clone_fallback_ = nullptr;
  std::atomic<bool> reaped_{false};
};

}  // namespace heddle::sandbox
