// Running our binaries as a user would: argv in, exit code and output out, always bounded.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "heddle/unique_fd.h"

namespace heddle::test {

struct CommandResult {
  int exit_code = -1;  // -1 if killed by a signal or timed out
  bool timed_out = false;
  std::string out;
  std::string err;
};

// A started process with its stdout and stderr piped to us. The destructor SIGKILLs and
// reaps it if it is still running, so no test leaves it behind.
class ChildProcess {
 public:
  explicit ChildProcess(const std::vector<std::string>& argv);
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  // The next line of stdout (without '\n'), or nullopt on EOF or timeout.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout);
  void signal(int signo) const;
  // Reads all output until exit; kills the process if `timeout` passes first.
  CommandResult finish(std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  UniqueFd out_;
  UniqueFd err_;
  std::string out_buffer_;
  std::string err_buffer_;
};

// Runs argv to completion (bounded by `timeout`).
CommandResult run_command(const std::vector<std::string>& argv,
                          std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace heddle::test
