// Starting helper programs (fusermount3, newuidmap, the mount guard; in tests git and our own
// binaries): Boost.Process v2 starts them, each with stdin on /dev/null, default signal
// handling, and no fd of ours but 0-2 and the ones bound; everything bounded by a timeout.
// The sandboxed worker is not started here (sandbox/ clones it with its namespaces).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "heddle/unique_fd.h"

namespace heddle {

struct ProcessOptions {
  enum class Output {
    kPipes,    // stdout and stderr each to a pipe of ours (ProcessResult::out and ::err)
    kMerged,   // both to one pipe (ProcessResult::out), interleaved as written
    kInherit,  // ours
  };
  Output output = Output::kPipes;
  std::vector<std::string> env;  // NAME=value entries added to our environment, replacing ours
  bool clear_env = false;        // then `env` is the whole environment
  // {fd of ours, its number in the child}; every other fd above 2 is closed in the child.
  std::vector<std::pair<int, int>> fds;
};

struct ProcessResult {
  int exit_code = -1;  // -1 when killed by a signal or at the deadline
  int signal = 0;      // the signal that ended it, or 0
  bool timed_out = false;
  std::string out;
  std::string err;
  [[nodiscard]] bool ok() const noexcept { return exit_code == 0; }
};

// A started process. The destructor SIGKILLs and reaps it if it is still running, so no caller
// leaves it behind. Throws heddle::Error if argv[0] (an absolute path) cannot be started.
class Process {
 public:
  explicit Process(const std::vector<std::string>& argv, const ProcessOptions& options = {});
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) = delete;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  // The next line of stdout (without '\n'), or nullopt on EOF or timeout.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout);
  void signal(int signo) const;
  // Reads all output until exit; SIGKILLs the process if `timeout` passes first.
  ProcessResult finish(std::chrono::milliseconds timeout);
  // Gives up ownership: the caller waits for the pid.
  pid_t release() noexcept { return std::exchange(pid_, -1); }

 private:
  pid_t pid_ = -1;
  UniqueFd out_;
  UniqueFd err_;
  std::string out_buffer_;
  std::string err_buffer_;
};

// Runs argv to completion, bounded by `timeout`.
ProcessResult run_process(const std::vector<std::string>& argv, const ProcessOptions& options = {},
                          std::chrono::milliseconds timeout = std::chrono::seconds(30));

// A trusted host helper run to completion: its stdout and stderr merged and trimmed in `out`.
// Throws heddle::Error (ETIMEDOUT, the output as hint) if it outlives `timeout`.
ProcessResult run_host_command(const std::vector<std::string>& argv, ProcessOptions options = {},
                               std::chrono::milliseconds timeout = std::chrono::seconds(10));

// The first executable `name` on $PATH (or /usr/bin:/bin when PATH is unset); "" if none.
std::string find_on_path(const std::string& name);

}  // namespace heddle
