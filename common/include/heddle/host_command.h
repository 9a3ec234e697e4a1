// Running a trusted host helper (fusermount3, newuidmap) to completion, with a deadline and
// its output captured for the error message. Header-only: sandbox/ and launcher/ both use it.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "heddle/error.h"
#include "heddle/unique_fd.h"

extern char** environ;

namespace heddle {

struct HostCommandResult {
  int exit_code = -1;  // -1 when killed by a signal (or by our deadline)
  std::string output;  // stdout and stderr, interleaved, trimmed
  [[nodiscard]] bool ok() const noexcept { return exit_code == 0; }
};

// The first executable `name` on $PATH (or /usr/bin:/bin when PATH is unset); "" if none.
inline std::string find_on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr && *path != '\0' ? path : "/usr/bin:/bin";
  for (std::size_t start = 0; start <= dirs.size();) {
    std::size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    const std::string dir = dirs.substr(start, end - start);
    start = end + 1;
    if (dir.empty() || dir[0] != '/') continue;  // a relative PATH entry is never trusted
    const std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

// Starts argv[0] (an absolute path) with stdin on /dev/null, stdout and stderr on `output_fd`
// (or ours, if -1), `extra_env` appended to our environment, default signal handling, and
// `keep_fd` (if >= 0) left open at the same number. Returns its pid; throws heddle::Error.
inline pid_t spawn_host_process(const std::vector<std::string>& argv,
                                const std::vector<std::string>& extra_env, int output_fd,
                                int keep_fd) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  if (output_fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, output_fd, 1);
    posix_spawn_file_actions_adddup2(&actions, output_fd, 2);
  }
  // dup2 onto itself clears FD_CLOEXEC in the child only (glibc >= 2.29), so no other spawn
  // running concurrently in this multithreaded process inherits it.
  if (keep_fd >= 0) posix_spawn_file_actions_adddup2(&actions, keep_fd, keep_fd);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigset_t all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);  // the supervisor blocks its stop signals
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  std::vector<char*> env;
  for (char** var = environ; *var != nullptr; ++var) env.push_back(*var);
  for (const std::string& var : extra_env) env.push_back(const_cast<char*>(var.c_str()));
  env.push_back(nullptr);

  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, args[0], &actions, &attr, args.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw Error("run " + argv.at(0), rc);
  return pid;
}

// Runs argv[0] to completion as spawn_host_process does, capturing its output. Kills it at
// `timeout`.
inline HostCommandResult run_host_command(const std::vector<std::string>& argv,
                                          const std::vector<std::string>& extra_env = {},
                                          int keep_fd = -1,
                                          std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw_errno("pipe for " + argv.at(0));
  UniqueFd read_end(out[0]);
  UniqueFd write_end(out[1]);
  const pid_t pid = spawn_host_process(argv, extra_env, write_end.get(), keep_fd);
  write_end.reset();

  HostCommandResult result;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool killed = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd pfd{read_end.get(), POLLIN, 0};
    const int ready = ::poll(&pfd, 1, static_cast<int>(std::max<long>(left.count(), 0)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      ::kill(pid, SIGKILL);  // our own unreaped child: the pid cannot have been recycled
      killed = true;
      break;
    }
    char buffer[1024];
    const ssize_t n = ::read(read_end.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (result.output.size() < 8192) result.output.append(buffer, static_cast<std::size_t>(n));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!killed && WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  while (!result.output.empty() && (result.output.back() == '\n' || result.output.back() == ' ')) {
    result.output.pop_back();
  }
  if (killed) {
    throw Error(argv[0] + " did not finish within " + std::to_string(timeout.count()) + " ms",
                ETIMEDOUT, result.output);
  }
  return result;
}

}  // namespace heddle
