#include "heddle/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

// Boost 1.81's Process v2 uses these without including them when it uses std::filesystem.
#include <boost/optional.hpp>
#include <type_traits>
// clang-format off
#include <boost/asio/io_context.hpp>
#include <boost/process/v2/posix/default_launcher.hpp>
#include <boost/process/v2/posix/vfork_launcher.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/stdio.hpp>
// clang-format on
#include <cstdlib>
#include <string_view>

#include "heddle/error.h"

extern char** environ;

namespace heddle {
namespace {

namespace bp = boost::process::v2;
using Clock = std::chrono::steady_clock;

// Closes every fd but those in `keep`, which need not be sorted. Async-signal-safe. (Boost
// 1.81's own close_all, on Linux, closes only the fds above the highest kept one.)
void close_all_but(const std::vector<int>& keep) {
  unsigned low = 0;
  for (;;) {
    unsigned next = ~0U;  // the lowest kept fd from `low` on
    for (const int fd : keep) {
      const auto kept = static_cast<unsigned>(fd);
      if (fd >= 0 && kept >= low) next = std::min(next, kept);
    }
    if (next > low) ::close_range(low, next == ~0U ? ~0U : next - 1, 0);
    if (next == ~0U) return;
    low = next + 1;
  }
}

// The vfork launcher, as posix_spawn does: fork() copies the page tables of a caller that may
// be large (the bench, a supervisor with many mounts), and that cost sat on the path to
// MountReady (the guard is started before the worker). The child shares our memory until it
// execs, so what it runs below only makes system calls and writes nothing we read.
// ThreadSanitizer turns vfork into fork, and this launcher learns of a failed exec only
// through the memory it shares with the child: there, Boost's fork launcher, which uses a pipe.
#if defined(__SANITIZE_THREAD__)
using Launcher = bp::posix::default_launcher;
#else
using Launcher = bp::posix::vfork_launcher;
#endif

// What the child does between fork and exec, beyond the stdio: our own initializer rather than
// bp::posix::bind_fd, which in Boost 1.81 has no return statement in on_setup (undefined
// behaviour) and leaves FD_CLOEXEC set when an fd is bound to its own number.
struct ChildSetup {
  const std::vector<std::pair<int, int>>& fds;

  bp::error_code on_setup(Launcher& launcher, const bp::filesystem::path&, const char* const*) {
    for (const auto& [fd, target] : fds) launcher.fd_whitelist.push_back(target);
    return {};
  }

  bp::error_code on_exec_setup(Launcher& launcher, const bp::filesystem::path&,
                               const char* const*) {
    for (const auto& [fd, target] : fds) {
      if ((fd == target ? ::fcntl(fd, F_SETFD, 0) : ::dup2(fd, target)) < 0) {
        return {errno, bp::system_category()};
      }
    }
    // The supervisor blocks its stop signals and may ignore others; the helper must not.
    // Dispositions first: no handler of ours may run in this child, which shares our memory.
    for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    close_all_but(launcher.fd_whitelist);  // 0-2, the bound fds, Boost's exec-error pipe
    return {};
  }

  // The launcher would exit(3) the failed child, running our atexit handlers in memory it
  // shares with us; it has already reported errno to the parent.
  void on_exec_error(Launcher&, const bp::filesystem::path&, const char* const*,
                     const bp::error_code&) {
    ::_exit(127);
  }
  // Never called: Boost 1.81 detects on_exec_error by this five-argument form (a typo in its
  // decltype), then calls the one above. Without it, the one above would never run.
  void on_exec_error(Launcher&, const bp::error_code&, const bp::filesystem::path&,
                     const char* const*, const bp::error_code&);
};

// Starts argv with stdout on `out` and stderr on `err`; returns its pid, which the caller reaps.
pid_t start(const std::vector<std::string>& argv, const ProcessOptions& options, int out, int err) {
  const auto name_of = [](std::string_view var) { return var.substr(0, var.find('=')); };
  std::vector<const char*> env;
  for (char** var = environ; !options.clear_env && *var != nullptr; ++var) {
    bool replaced = false;
    for (const std::string& ours : options.env) {
      replaced = replaced || name_of(ours) == name_of(*var);
    }
    if (!replaced) env.push_back(*var);
  }
  for (const std::string& var : options.env) env.push_back(var.c_str());
  env.push_back(nullptr);

  // A context of our own: nothing runs on it, it only carries the process handle.
  boost::asio::io_context context;
  Launcher launcher;
  launcher.env = env.data();
  bp::error_code ec;
  const std::vector<std::string> args(argv.begin() + 1, argv.end());
  auto process = launcher(context.get_executor(), ec, argv.at(0), args,
                          bp::process_stdio{nullptr, out, err}, ChildSetup{options.fds});
  if (ec) {
    if (launcher.pid > 0) ::waitpid(launcher.pid, nullptr, 0);  // exec failed: reap it
    throw Error("run " + argv.at(0), ec.value());
  }
  const pid_t pid = process.id();
  process.detach();
  return pid;
}

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<long>(left.count(), 0));
}

// Reads what is available from `fd` into `buffer`; closes fd on EOF or error.
void drain(UniqueFd& fd, std::string& buffer) {
  char chunk[4096];
  const ssize_t n = ::read(fd.get(), chunk, sizeof chunk);
  if (n > 0) {
    buffer.append(chunk, static_cast<std::size_t>(n));
  } else if (n == 0 || errno != EINTR) {
    fd.reset();
  }
}

std::pair<UniqueFd, UniqueFd> make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe");
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

}  // namespace

Process::Process(const std::vector<std::string>& argv, const ProcessOptions& options) {
  using Output = ProcessOptions::Output;
  UniqueFd out_write;
  UniqueFd err_write;
  if (options.output != Output::kInherit) std::tie(out_, out_write) = make_pipe();
  if (options.output == Output::kPipes) std::tie(err_, err_write) = make_pipe();
  const int out = out_write ? out_write.get() : STDOUT_FILENO;
  int err = options.output == Output::kMerged ? out : STDERR_FILENO;
  if (err_write) err = err_write.get();
  pid_ = start(argv, options, out, err);
}

Process::Process(Process&& other) noexcept
    : pid_(other.release()),
      out_(std::move(other.out_)),
      err_(std::move(other.err_)),
      out_buffer_(std::move(other.out_buffer_)),
      err_buffer_(std::move(other.err_buffer_)) {}

Process::~Process() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);  // our own unreaped child: the pid cannot have been recycled
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
}

std::optional<std::string> Process::read_line(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (const auto newline = out_buffer_.find('\n'); newline != std::string::npos) {
      std::string line = out_buffer_.substr(0, newline);
      out_buffer_.erase(0, newline + 1);
      return line;
    }
    if (!out_) return std::nullopt;
    pollfd pfd{out_.get(), POLLIN, 0};
    const int ready = ::poll(&pfd, 1, remaining_ms(deadline));
    if (ready == 0) return std::nullopt;
    if (ready > 0) drain(out_, out_buffer_);
  }
}

void Process::signal(int signo) const { ::kill(pid_, signo); }

ProcessResult Process::finish(std::chrono::milliseconds timeout) {
  ProcessResult result;
  const auto deadline = Clock::now() + timeout;
  while (out_ || err_) {
    pollfd fds[2] = {{out_ ? out_.get() : -1, POLLIN, 0}, {err_ ? err_.get() : -1, POLLIN, 0}};
    const int ready = ::poll(fds, 2, remaining_ms(deadline));
    if (ready == 0) {
      result.timed_out = true;
      break;
    }
    if (ready < 0) continue;
    if (fds[0].revents != 0) drain(out_, out_buffer_);
    if (fds[1].revents != 0) drain(err_, err_buffer_);
  }
  int status = 0;
  // Without pipes, wait out the deadline polling (a helper's run is short).
  while (!result.timed_out && ::waitpid(pid_, &status, WNOHANG) == 0) {
    if (Clock::now() >= deadline) {
      result.timed_out = true;
    } else {
      ::usleep(1000);
    }
  }
  if (result.timed_out) {
    ::kill(pid_, SIGKILL);
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  pid_ = -1;
  if (!result.timed_out && WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  result.out = std::move(out_buffer_);
  result.err = std::move(err_buffer_);
  return result;
}

ProcessResult run_process(const std::vector<std::string>& argv, const ProcessOptions& options,
                          std::chrono::milliseconds timeout) {
  return Process(argv, options).finish(timeout);
}

ProcessResult run_host_command(const std::vector<std::string>& argv, ProcessOptions options,
                               std::chrono::milliseconds timeout) {
  options.output = ProcessOptions::Output::kMerged;
  ProcessResult result = run_process(argv, options, timeout);
  while (!result.out.empty() && (result.out.back() == '\n' || result.out.back() == ' ')) {
    result.out.pop_back();
  }
  if (result.timed_out) {
    throw Error(argv[0] + " did not finish within " + std::to_string(timeout.count()) + " ms",
                ETIMEDOUT, result.out);
  }
  return result;
}

std::string find_on_path(const std::string& name) {
  // PATH is read here, not passed down like the other settings: looking a command up on it
  // at the time of the lookup is what execvp and every shell do.
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

}  // namespace heddle
