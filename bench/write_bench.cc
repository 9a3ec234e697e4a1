// heddle_write_bench: writable mounts (issue 14: a directory served through the copy-on-write
// overlay, `heddle-fuse-launcher mount --dir LOWER --overlay --overlay-dir OV`) side by side with
// the native file system and with fuse-overlayfs (Debian's package, the FUSE overlay rootless
// containers use) over the same lower directory, in one run.
//
// What is measured, per system (ours, native, fuse-overlayfs), each round on a fresh mount with
// an empty upper layer (native: a fresh directory):
//  1. write: a 1 GiB file written sequentially with write() of 1 MiB, then fsync() and close():
//     MiB/s over the whole, open to close. The write and fsync parts are printed per round.
//  2. tar: `tar -xf A -C DIR --no-same-owner` of a 10,000-file archive (generated here: 200
//     directories of 50 files of 0-8 KiB, about 40 MiB; the archive lies on the native file
//     system, in the page cache), into an empty directory of the system. Then `rm -rf` of what
//     it unpacked, timed too (an extra figure, no goal).
//  3. make: `make -j2` of a generated C project of 200 .c files in 10 directories, 11 headers, a
//     Makefile (-O2 -g -MMD -MP: objects and dependency files), a static archive (ar), a link,
//     and a hard link of the program. The sources are in the lower layer (natively: a copy);
//     everything built lands in the upper layer. Then a second `make -j2`, which has nothing to
//     do (an extra figure: stat of every target and prerequisite).
//  4. reads with an empty overlay: ours writable (empty overlay) against ours read-only, over the
//     same lower directory: a 1 GiB file read cold (after drop_caches), a second and a third
//     (warm) time, each on a new fd; a walk (readdir + lstat) of 10,000 empty files cold (after
//     drop_caches) and warm (the median of the next 5 walks). "Unchanged" is the goal: the
//     ratios should be 1 within 10%.
// Each figure is the median of --rounds rounds (default 5; make: --make-rounds, default 3, as a
// build takes 10-20 s pinned) with min-max; the systems are interleaved, a different one first
// in each round. Ratios are ours / the other system's median from the same run; the spread of a
// ratio is that of the rounds' own ratios (round i of ours against round i of the other). For
// MiB/s above 1 is better; for times below 1 is better.
//
// Diagnostics: the daemon's CPU time (user + system) and read()/write() system calls
// (/proc/PID/io) during each timed part; and a census of the FUSE requests of each workload,
// by opcode, from the kernel's fuse:fuse_request_send tracepoint (a private tracefs instance
// filtered on the mount's connection), taken in one extra, untimed round per FUSE system.
//
// Where the bytes go: a fresh ext4 (mkfs.ext4 defaults, so with a journal) on a sparse image in
// the scratch directory, through a loop device with direct I/O, holds the lower directories,
// the native directories and both upper layers. This VM's / is an ext4 without a journal, where
// every new inode costs a scan of the recently deleted ones (recently_deleted(), only without a
// journal): about 1 ms per file after a few thousand deletions, for all three systems alike, and
// dependent on what other jobs deleted. --on-tmp uses /tmp's own file system instead.
//
// Ours is mounted through the CLI, as a user would (`heddle-fuse-launcher mount --dir LOWER
// --overlay --overlay-dir OV --mountpoint MP --json`, read-only without the two overlay flags),
// and removed with `heddle-fuse-launcher unmount MP`. fuse-overlayfs runs in the foreground as
// our child: `fuse-overlayfs -f -o lowerdir=L,upperdir=U,workdir=W MP` with its defaults, and is
// unmounted with umount2 (as root). Without fuse-overlayfs its figures are reported as
// unavailable and the rest still runs.
//
// Everything lives under one mkdtemp directory /tmp/heddle-write-bench-XXXXXX (mode 0755: a
// read-only root mount is served by uid 65534), removed at the end. Cleanup is RAII on every
// path: SIGINT/SIGTERM/SIGHUP only set a flag; every child (tar, make, the launcher,
// fuse-overlayfs) runs in its own process group, so a terminal's ^C reaches only this program,
// which stops the running child (SIGTERM to its group) and unwinds; each FUSE mount is removed
// (ours: `unmount`; fuse-overlayfs: umount2, then the daemon is reaped) before its mount point is
// rmdir()ed, then the ext4 is unmounted and its loop device detached, the tracefs instance is
// removed, and anything still mounted under the scratch directory is lazily detached before it
// is removed. Needs root (FUSE, loop devices, tracefs, drop_caches) and about 3 GiB in /tmp.
// Run (release preset built):
//   sudo build/release/bin/heddle_write_bench             # about 6 minutes, pinned
//   sudo build/release/bin/heddle_write_bench --quick     # smoke test, about 1 minute
//   sudo build/release/bin/heddle_write_bench --parts tar --rounds 3 --systems ours,native
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench_support.h"
#include "heddle/error.h"
#include "heddle/launcher/mountinfo.h"
#include "heddle/unique_fd.h"

namespace {

namespace fs = std::filesystem;
using heddle::Error;
using heddle::UniqueFd;
using heddle::throw_errno;
using namespace heddle::bench;  // arguments, interruption, mount points, statistics, /proc

constexpr const char* kName = "heddle_write_bench";
constexpr std::size_t kChunk = 1 << 20;  // the write() and read() size of the sequential figures

// ---------------------------------------------------------------------------------------------
// Configuration

struct Config {
  int rounds = 5;
  int make_rounds = 3;  // a build takes 10-20 s here
  std::uint64_t write_mib = 1024;
  int tar_files = 10'000;
  int make_files = 200;  // .c files, in 10 directories
  std::uint64_t read_mib = 1024;
  int walk_dirs = 10;  // the walk of part 4: walk_dirs x walk_files_per_dir empty files
  int walk_files_per_dir = 1000;
  std::set<std::string> parts = {"write", "tar", "make", "read"};
  std::set<std::string> systems = {"ours", "native", "fuse-overlayfs"};
  bool on_tmp = false;  // work on /tmp's file system instead of a fresh ext4
  bool quick = false;
};

void usage() {
  std::printf(
      "usage: heddle_write_bench [--rounds N] [--make-rounds N] [--write-mib N] [--tar-files N] [--make-files N]\n"
      "                          [--read-mib N] [--parts write,tar,make,read]\n"
      "                          [--systems ours,native,fuse-overlayfs] [--on-tmp] [--quick]\n"
      "  --rounds N      fresh mounts per figure and system; figures are medians (default 5)\n"
      "  --make-rounds N the same for make -j2 (default 3)\n"
      "  --write-mib N   size of the sequentially written file (default 1024)\n"
      "  --tar-files N   files in the unpacked archive (default 10000)\n"
      "  --make-files N  .c files of the generated C project (default 200, at least 10)\n"
      "  --read-mib N    size of the file read through the empty overlay (default 1024)\n"
      "  --parts LIST    which parts to run (default all four)\n"
      "  --systems LIST  which of ours,native,fuse-overlayfs parts 1-3 run (default all three;\n"
      "                  part 4 needs ours)\n"
      "  --on-tmp        write on /tmp's own file system, not on a fresh ext4 (loop device)\n"
      "  --quick         smoke test: 2 rounds, 64 MiB files, 1,000 tar files, 20 .c files,\n"
      "                  a walk of 2 x 250 files (later options still apply)\n"
      "Compares writable mounts (heddle-fuse-launcher mount --dir --overlay --overlay-dir, the\n"
      "launcher next to this program) with the native file system and fuse-overlayfs, and the\n"
      "reads of a mount with an empty overlay with those of a read-only mount.\n"
      "Must run as root (FUSE mounts, drop_caches). Needs about 3 GiB in /tmp.\n");
}

Config parse_args(int argc, char** argv) {
  Config config;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      usage();
      std::exit(0);
    }
    if (arg == "--on-tmp") {
      config.on_tmp = true;
      continue;
    }
    if (arg == "--quick") {
      config.quick = true;
      config.rounds = 2;
      config.make_rounds = 2;
      config.write_mib = 64;
      config.tar_files = 1000;
      config.make_files = 20;
      config.read_mib = 64;
      config.walk_dirs = 2;
      config.walk_files_per_dir = 250;
      continue;
    }
    if (i + 1 >= argc) throw Error("missing value after " + std::string(arg), EINVAL);
    const char* value = argv[i + 1];
    if (arg == "--rounds") {
      config.rounds = parse_positive(argv[i], value);
    } else if (arg == "--make-rounds") {
      config.make_rounds = parse_positive(argv[i], value);
    } else if (arg == "--write-mib") {
      config.write_mib = static_cast<std::uint64_t>(parse_positive(argv[i], value));
    } else if (arg == "--tar-files") {
      config.tar_files = parse_positive(argv[i], value);
    } else if (arg == "--make-files") {
      config.make_files = std::max(10, parse_positive(argv[i], value));
    } else if (arg == "--read-mib") {
      config.read_mib = static_cast<std::uint64_t>(parse_positive(argv[i], value));
    } else if (arg == "--parts") {
      config.parts.clear();
      std::stringstream list{std::string(value)};
      for (std::string part; std::getline(list, part, ',');) {
        if (part != "write" && part != "tar" && part != "make" && part != "read") {
          throw Error("--parts: unknown part '" + part + "' (write, tar, make, read)", EINVAL);
        }
        config.parts.insert(part);
      }
    } else if (arg == "--systems") {
      config.systems.clear();
      std::stringstream list{std::string(value)};
      for (std::string system; std::getline(list, system, ',');) {
        if (system != "ours" && system != "native" && system != "fuse-overlayfs") {
          throw Error("--systems: unknown system '" + system + "' (ours, native, fuse-overlayfs)",
                      EINVAL);
        }
        config.systems.insert(system);
      }
    } else {
      throw Error("unknown argument '" + std::string(arg) + "' (see --help)", EINVAL);
    }
    ++i;
  }
  if (config.systems.count("ours") == 0) config.parts.erase("read");
  return config;
}

// ---------------------------------------------------------------------------------------------
// Child processes: each in its own process group (a terminal's ^C reaches only us; we stop the
// child and unwind), stdout captured or discarded, stderr appended to a log file.

struct ProcessOptions {
  std::vector<std::string> env;          // "NAME=VALUE", replacing same-named variables
  std::string cwd;                       // empty: ours
  std::string* capture_stdout = nullptr;  // else stdout goes to /dev/null
  std::string stderr_log;                // empty: inherited
};

std::string command_text(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) out += (out.empty() ? "" : " ") + a;
  return out;
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by SIG") + ::sigabbrev_np(WTERMSIG(status));
  return "wait status " + std::to_string(status);
}

// The last `bytes` of a file, for error messages.
std::string tail_of(const std::string& path, std::size_t bytes = 600) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.size() > bytes ? "..." + text.substr(text.size() - bytes) : text;
}

// fork + exec with the options; returns the pid (also its process group id). `stdout_read`
// receives the read end of the stdout pipe when capturing.
pid_t spawn_process(const std::vector<std::string>& argv, const ProcessOptions& options,
                    UniqueFd* stdout_read) {
  // Everything the child needs is built before fork().
  std::vector<std::string> env = options.env;
  const auto name_of = [](std::string_view e) { return e.substr(0, e.find('=') + 1); };
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry = *e;
    const bool overridden = std::any_of(options.env.begin(), options.env.end(),
                                        [&](const auto& o) { return name_of(o) == name_of(entry); });
    if (!overridden) env.emplace_back(entry);
  }
  std::vector<char*> envp, args;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy = argv;
  for (auto& a : argv_copy) args.push_back(a.data());
  args.push_back(nullptr);

  int out_fds[2] = {-1, -1};
  if (options.capture_stdout != nullptr && ::pipe2(out_fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  UniqueFd out_read(out_fds[0]);
  UniqueFd out_write(out_fds[1]);
  UniqueFd null_fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!null_fd) throw_errno("open /dev/null");
  UniqueFd log_fd;
  if (!options.stderr_log.empty()) {
    log_fd = UniqueFd(::open(options.stderr_log.c_str(),
                             O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
    if (!log_fd) throw_errno("open " + options.stderr_log);
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork " + argv[0]);
  if (pid == 0) {
    ::setpgid(0, 0);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (const int signo : {SIGPIPE, SIGINT, SIGTERM, SIGHUP}) ::sigaction(signo, &dfl, nullptr);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    if (::dup2(null_fd.get(), STDIN_FILENO) < 0) ::_exit(126);
    if (::dup2(out_write ? out_write.get() : null_fd.get(), STDOUT_FILENO) < 0) ::_exit(126);
    if (log_fd && ::dup2(log_fd.get(), STDERR_FILENO) < 0) ::_exit(126);
    if (!options.cwd.empty() && ::chdir(options.cwd.c_str()) != 0) ::_exit(126);
    ::execvpe(args[0], args.data(), envp.data());
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also in the parent: no window in which a ^C reaches the child
  if (stdout_read != nullptr) *stdout_read = std::move(out_read);
  return pid;
}

// Waits for our child `pid`; on interruption its process group gets SIGTERM (then SIGKILL after
// 5 s). Returns the wait status.
int wait_process(pid_t pid) {
  bool terminated = false;
  auto t_term = Clock::now();
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, g_interrupted != 0 ? WNOHANG : 0);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) throw_errno("waitpid");
    if (g_interrupted != 0) {
      if (!terminated) {
        ::kill(-pid, SIGTERM);
        terminated = true;
        t_term = Clock::now();
      } else if (seconds_between(t_term, Clock::now()) > 5) {
        ::kill(-pid, SIGKILL);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

// Runs argv to completion; throws unless it exits 0 (with the tail of its stderr log), and if we
// were interrupted meanwhile.
void run_process(const std::vector<std::string>& argv, const ProcessOptions& options = {}) {
  UniqueFd out;
  const pid_t pid = spawn_process(argv, options, &out);
  if (out) {
    char buffer[16384];
    for (;;) {
      const ssize_t n = ::read(out.get(), buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) {
        if (g_interrupted != 0) ::kill(-pid, SIGTERM);
        continue;
      }
      if (n <= 0) break;
      options.capture_stdout->append(buffer, static_cast<std::size_t>(n));
    }
  }
  const int status = wait_process(pid);
  check_interrupted();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string message = "'" + command_text(argv) + "' " + describe_wait_status(status);
    if (!options.stderr_log.empty()) message += "; its stderr ends: " + tail_of(options.stderr_log);
    throw Error(message, 0);
  }
}

bool on_path(const char* program) {
  const char* path = std::getenv("PATH");
  std::string_view rest = path != nullptr ? path : "/usr/bin:/bin";
  while (!rest.empty()) {
    const auto colon = rest.find(':');
    const std::string dir(rest.substr(0, colon));
    if (::access((dir + "/" + program).c_str(), X_OK) == 0) return true;
    if (colon == std::string_view::npos) break;
    rest.remove_prefix(colon + 1);
  }
  return false;
}

bool process_exists(pid_t pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }

// ---------------------------------------------------------------------------------------------
// The daemons' counters

struct DaemonCounters {
  double cpu_s = 0;
  std::uint64_t syscr = 0;
  std::uint64_t syscw = 0;
};

DaemonCounters daemon_counters(pid_t pid) {
  DaemonCounters c;
  if (pid <= 0) return c;
  const auto [user, sys] = cpu_of(pid);
  c.cpu_s = user + sys;
  std::ifstream in("/proc/" + std::to_string(pid) + "/io");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("syscr:", 0) == 0) c.syscr = std::stoull(line.substr(6));
    if (line.rfind("syscw:", 0) == 0) c.syscw = std::stoull(line.substr(6));
  }
  return c;
}

DaemonCounters operator-(const DaemonCounters& a, const DaemonCounters& b) {
  return {a.cpu_s - b.cpu_s, a.syscr - b.syscr, a.syscw - b.syscw};
}

// ---------------------------------------------------------------------------------------------
// The census: how many FUSE requests of each kind a workload sends, from the kernel's
// fuse:fuse_request_send tracepoint, recorded in a private tracefs instance filtered on the
// mount's connection. Taken in extra rounds after the timed ones (tracing costs a little per
// request). Unavailable without tracefs or the tracepoint (kernels before 6.15).

class FuseTrace {
 public:
  FuseTrace() {
    for (const char* base : {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}) {
      if (::access((std::string(base) + "/instances").c_str(), W_OK) == 0) {
        base_ = base;
        break;
      }
    }
    if (base_.empty()) {
      missing_ = "no tracefs at /sys/kernel/tracing";
      return;
    }
    dir_ = base_ + "/instances/heddle-write-bench-" + std::to_string(::getpid());
    if (::mkdir(dir_.c_str(), 0700) != 0) {
      missing_ = "mkdir " + dir_ + ": " + std::strerror(errno);
      dir_.clear();
      return;
    }
    event_ = dir_ + "/events/fuse/fuse_request_send";
    if (::access((event_ + "/enable").c_str(), W_OK) != 0) {
      missing_ = "the kernel has no fuse:fuse_request_send tracepoint";
      remove();
      return;
    }
    if (!put(dir_ + "/buffer_size_kb", "16384")) {
      missing_ = "cannot size the trace buffer";
      remove();
    }
  }
  FuseTrace(const FuseTrace&) = delete;
  FuseTrace& operator=(const FuseTrace&) = delete;
  ~FuseTrace() { remove(); }

  [[nodiscard]] bool available() const { return !dir_.empty(); }
  [[nodiscard]] const std::string& missing() const { return missing_; }

  // Records the requests of the FUSE mount at `mountpoint` from now on.
  void start(const std::string& mountpoint) {
    const auto entry = heddle::launcher::top_mount_at(mountpoint);
    if (!entry) throw Error("no mount at " + mountpoint, ENOENT);
    // The kernel's dev_t is MAJOR << 20 | MINOR; FUSE connections have major 0.
    const unsigned dev = (static_cast<unsigned>(entry->major) << 20) | static_cast<unsigned>(entry->minor);
    if (!put(event_ + "/enable", "0") || !put(event_ + "/filter", "connection == " + std::to_string(dev)) ||
        !put(dir_ + "/trace", "") || !put(event_ + "/enable", "1")) {
      throw Error("cannot set up the trace in " + dir_, EIO);
    }
  }

  // Stops recording; the number of requests of each opcode since start().
  std::map<std::string, std::uint64_t> stop() {
    put(event_ + "/enable", "0");
    std::map<std::string, std::uint64_t> counts;
    std::ifstream in(dir_ + "/trace");
    for (std::string line; std::getline(in, line);) {
      if (line.empty() || line[0] == '#') continue;
      const auto open = line.find("(FUSE_");
      const auto close = open == std::string::npos ? open : line.find(')', open);
      if (close == std::string::npos) continue;
      ++counts[line.substr(open + 6, close - open - 6)];
    }
    // A full buffer would have overwritten the oldest events.
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      std::ifstream stats(dir_ + "/per_cpu/cpu" + std::to_string(cpu) + "/stats");
      if (!stats) break;
      for (std::string line; std::getline(stats, line);) {
        if (line.rfind("overrun:", 0) == 0 && std::stoull(line.substr(8)) != 0) {
          counts["(trace buffer overrun: counts incomplete)"] = 1;
        }
      }
    }
    put(dir_ + "/trace", "");
    return counts;
  }

 private:
  static bool put(const std::string& path, const std::string& value) {
    const UniqueFd fd(::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
    if (!fd) return false;
    const std::string line = value + "\n";
    return ::write(fd.get(), line.data(), line.size()) == static_cast<ssize_t>(line.size());
  }
  void remove() noexcept {
    if (dir_.empty()) return;
    put(event_ + "/enable", "0");
    if (::rmdir(dir_.c_str()) != 0) {
      std::fprintf(stderr, "%s: rmdir %s: %s\n", kName, dir_.c_str(), std::strerror(errno));
    }
    dir_.clear();
  }

  std::string base_, dir_, event_, missing_;
};

using Census = std::map<std::string, std::uint64_t>;

std::string census_text(const Census& census, double per) {
  std::vector<std::pair<std::uint64_t, std::string>> sorted;
  std::uint64_t total = 0;
  for (const auto& [name, count] : census) {
    sorted.emplace_back(count, name);
    total += count;
  }
  std::sort(sorted.rbegin(), sorted.rend());
  char buffer[128];
  std::snprintf(buffer, sizeof buffer, "%llu requests", static_cast<unsigned long long>(total));
  std::string out = buffer;
  if (per > 0) {
    std::snprintf(buffer, sizeof buffer, " (%.2f per file)", static_cast<double>(total) / per);
    out += buffer;
  }
  out += ":";
  for (const auto& [count, name] : sorted) {
    if (per > 0) {
      std::snprintf(buffer, sizeof buffer, " %s %llu (%.2f)", name.c_str(),
                    static_cast<unsigned long long>(count), static_cast<double>(count) / per);
    } else {
      std::snprintf(buffer, sizeof buffer, " %s %llu", name.c_str(), static_cast<unsigned long long>(count));
    }
    out += buffer;
  }
  return out;
}

std::uint64_t census_total(const Census& census) {
  std::uint64_t total = 0;
  for (const auto& [name, count] : census) total += count;
  return total;
}

// ---------------------------------------------------------------------------------------------
// The views: where a workload runs. Native is a fresh directory; ours and fuse-overlayfs are a
// fresh mount over a lower directory with an empty upper layer. finish() removes the mount and
// reports failures; the destructors clean up on every other path and never throw.

class View {
 public:
  virtual ~View() = default;
  [[nodiscard]] virtual const std::string& path() const = 0;
  [[nodiscard]] virtual pid_t daemon_pid() const { return 0; }
  // Removes the mount (throws if that fails); the upper layer stays for upper().
  virtual void finish() {}
  // The upper layer's directory, or empty (native).
  [[nodiscard]] virtual std::string upper() const { return ""; }
  // Throws if the daemon is gone.
  void check_alive(const char* during) const {
    const pid_t pid = daemon_pid();
    if (pid > 0 && !process_exists(pid)) {
      throw Error("the daemon of " + path() + " (pid " + std::to_string(pid) + ") died during " +
                      during,
                  0);
    }
  }
};

// A fresh directory `dir` (optionally a copy of `lower`, made with cp -a), removed afterwards.
class NativeView final : public View {
 public:
  NativeView(const std::string& dir, const std::string& lower) : dir_(dir) {
    if (lower.empty()) {
      if (::mkdir(dir_.c_str(), 0755) != 0) throw_errno("mkdir " + dir_);
    } else {
      run_process({"cp", "-a", lower, dir_});
    }
  }
  ~NativeView() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
    if (ec) std::fprintf(stderr, "%s: remove %s: %s\n", kName, dir_.c_str(), ec.message().c_str());
  }
  [[nodiscard]] const std::string& path() const override { return dir_; }

 private:
  std::string dir_;
};

// Ours through the CLI: `heddle-fuse-launcher mount --dir LOWER [--overlay --overlay-dir OV]
// --mountpoint MP --json`, which returns once the mount is ready and leaves a background
// supervisor; `heddle-fuse-launcher unmount MP` removes it. The overlay directory is removed
// afterwards (by the caller's scratch directory).
class OursView final : public View {
 public:
  OursView(const std::string& launcher, const std::string& lower, const std::string& mountpoint,
           const std::string& overlay_dir, const std::string& log)
      : launcher_(launcher), mountpoint_(mountpoint), overlay_(overlay_dir), log_(log) {
    std::vector<std::string> argv = {launcher_, "mount", "--dir", lower};
    if (!overlay_.empty()) {
      argv.insert(argv.end(), {"--overlay", "--overlay-dir", overlay_});
    }
    argv.insert(argv.end(), {"--mountpoint", mountpoint_.path(), "--json"});
    std::string out;
    try {
      run_process(argv, {{"HEDDLE_FUSE_LOG=warn"}, "", &out, log_});
      const auto start = out.rfind("\n{") != std::string::npos ? out.rfind("\n{") + 1 : out.find('{');
      if (start == std::string::npos) throw Error("no JSON from '" + command_text(argv) + "'", EPROTO);
      const auto json = nlohmann::json::parse(out.substr(start));
      worker_pid_ = json.at("pid").get<pid_t>();
      supervisor_pid_ = json.value("supervisor_pid", 0);
    } catch (const nlohmann::json::exception& e) {
      release();
      throw Error("the JSON of '" + command_text(argv) + "': " + e.what() + ": " + out, EPROTO);
    } catch (...) {
      release();
      throw;
    }
    if (!is_mounted(mountpoint_.path())) {
      release();
      throw Error(command_text(argv) + " returned but " + mountpoint_.path() + " is not mounted", 0);
    }
  }
  ~OursView() override { release(); }

  [[nodiscard]] const std::string& path() const override { return mountpoint_.path(); }
  [[nodiscard]] pid_t daemon_pid() const override { return worker_pid_; }
  [[nodiscard]] std::string upper() const override {
    return overlay_.empty() ? "" : overlay_ + "/upper";
  }
  void finish() override {
    run_process({launcher_, "unmount", mountpoint_.path()}, {{"HEDDLE_FUSE_LOG=warn"}, "", nullptr, log_});
    if (is_mounted(mountpoint_.path())) {
      throw Error("unmount returned but " + mountpoint_.path() + " is still mounted", EBUSY);
    }
    wait_for_supervisor();
  }

 private:
  // The supervisor holds the overlay's lock until it exits: wait for it (up to 10 s).
  void wait_for_supervisor() {
    const auto t0 = Clock::now();
    while (process_exists(supervisor_pid_) && seconds_between(t0, Clock::now()) < 10) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  // Never throws: `unmount` if still mounted (MountPoint detaches lazily as a last resort).
  void release() noexcept {
    try {
      if (is_mounted(mountpoint_.path())) {
        // Not run_process: it refuses to run anything once we are interrupted.
        const pid_t pid = spawn_process({launcher_, "unmount", mountpoint_.path()},
                                        {{"HEDDLE_FUSE_LOG=warn"}, "", nullptr, log_}, nullptr);
        int status = 0;
        const auto t0 = Clock::now();
        while (::waitpid(pid, &status, WNOHANG) == 0) {
          if (seconds_between(t0, Clock::now()) > 15) {
            ::kill(-pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            break;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
      }
      if (!is_mounted(mountpoint_.path())) wait_for_supervisor();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: unmount %s: %s\n", kName, mountpoint_.path().c_str(), e.what());
    }
  }

  std::string launcher_;
  MountPoint mountpoint_;  // destroyed after release(): detaches whatever is left, then rmdir
  std::string overlay_;
  std::string log_;
  pid_t worker_pid_ = 0;
  pid_t supervisor_pid_ = 0;
};

// fuse-overlayfs in the foreground, our child in its own process group:
// `fuse-overlayfs -f -o lowerdir=L,upperdir=U,workdir=W MP`. Ready once the mount shows in
// /proc/self/mountinfo; removed with umount2 (lazily if busy), then the daemon is reaped (it
// exits when unmounted; SIGTERM, then SIGKILL if it lingers).
class FuseOverlayfsView final : public View {
 public:
  FuseOverlayfsView(const std::string& lower, const std::string& mountpoint,
                    const std::string& state_dir, const std::string& log)
      : mountpoint_(mountpoint), upper_(state_dir + "/upper") {
    const std::string work = state_dir + "/work";
    for (const auto& dir : {state_dir, upper_, work}) {
      if (::mkdir(dir.c_str(), 0755) != 0) throw_errno("mkdir " + dir);
    }
    argv_ = {"fuse-overlayfs", "-f", "-o",
             "lowerdir=" + lower + ",upperdir=" + upper_ + ",workdir=" + work, mountpoint_.path()};
    pid_ = spawn_process(argv_, {{}, "", nullptr, log}, nullptr);
    try {
      const auto t0 = Clock::now();
      while (!is_mounted(mountpoint_.path())) {
        check_interrupted();
        if (reaped()) {
          throw Error(command_text(argv_) + " " + exit_ + " before mounting; its stderr ends: " +
                          tail_of(log),
                      0);
        }
        if (seconds_between(t0, Clock::now()) > 10) {
          throw Error(command_text(argv_) + " did not mount within 10 s", ETIMEDOUT);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    } catch (...) {
      stop();
      throw;
    }
  }
  ~FuseOverlayfsView() override { stop(); }

  [[nodiscard]] const std::string& path() const override { return mountpoint_.path(); }
  [[nodiscard]] pid_t daemon_pid() const override { return reaped_ ? 0 : pid_; }
  [[nodiscard]] std::string upper() const override { return upper_; }
  void finish() override {
    stop();
    if (is_mounted(mountpoint_.path())) {
      throw Error("fuse-overlayfs stopped but " + mountpoint_.path() + " is still mounted", EBUSY);
    }
    if (exit_.find("exited with status 0") == std::string::npos) {
      std::fprintf(stderr, "%s: fuse-overlayfs %s\n", kName, exit_.c_str());
    }
  }

 private:
  bool reaped() {
    if (!reaped_ && pid_ > 0) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        reaped_ = true;
        exit_ = describe_wait_status(status);
      }
    }
    return reaped_;
  }
  // Unmounts and reaps; never throws.
  void stop() noexcept {
    try {
      for (int attempt = 0; attempt < 20 && is_mounted(mountpoint_.path()); ++attempt) {
        if (::umount2(mountpoint_.path().c_str(), 0) == 0) break;
        if (errno != EBUSY || attempt == 19) {
          std::fprintf(stderr, "%s: umount %s: %s; detaching lazily\n", kName,
                       mountpoint_.path().c_str(), std::strerror(errno));
          ::umount2(mountpoint_.path().c_str(), MNT_DETACH);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: unmount %s: %s\n", kName, mountpoint_.path().c_str(), e.what());
    }
    if (pid_ <= 0) return;
    for (const int signo : {0, SIGTERM, SIGKILL}) {
      if (signo != 0 && !reaped_) ::kill(-pid_, signo);
      const auto t0 = Clock::now();
      while (!reaped() && seconds_between(t0, Clock::now()) < 3) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      if (reaped_) return;
    }
  }

  MountPoint mountpoint_;  // destroyed after stop()
  std::string upper_;
  std::vector<std::string> argv_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  std::string exit_;
};

// ---------------------------------------------------------------------------------------------
// The sources, generated once per run

// xoshiro256**: incompressible bytes at memory speed.
class Random {
 public:
  explicit Random(std::uint64_t seed) {
    for (auto& s : s_) {
      seed += 0x9e3779b97f4a7c15ull;  // splitmix64
      std::uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      s = z ^ (z >> 31);
    }
  }
  std::uint64_t next() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  void fill(char* data, std::size_t size) {
    for (std::size_t i = 0; i < size; i += 8) {
      const std::uint64_t word = next();
      std::memcpy(data + i, &word, std::min<std::size_t>(8, size - i));
    }
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::array<std::uint64_t, 4> s_{};
};

void write_all(int fd, const char* data, std::size_t size, const std::string& what) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) {
        check_interrupted();
        continue;
      }
      throw_errno("write " + what);
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

void write_file(const std::string& path, std::string_view content, mode_t mode = 0644) {
  const UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (!fd) throw_errno("create " + path);
  write_all(fd.get(), content.data(), content.size(), path);
}

void make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0) throw_errno("mkdir " + path);
}

void make_random_file(const std::string& path, std::uint64_t bytes) {
  const UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd) throw_errno("create " + path);
  Random random(0x6865646c65);
  std::vector<char> chunk(kChunk);
  for (std::uint64_t done = 0; done < bytes; done += kChunk) {
    check_interrupted();
    random.fill(chunk.data(), chunk.size());
    write_all(fd.get(), chunk.data(), static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, bytes - done)), path);
  }
  if (::fsync(fd.get()) != 0) throw_errno("fsync " + path);
}

// dirs x files_per_dir empty files dNNN/fNNNN.
void make_tree(const std::string& root, int dirs, int files_per_dir) {
  make_dir(root);
  char name[64];
  for (int d = 0; d < dirs; ++d) {
    check_interrupted();
    std::snprintf(name, sizeof name, "/d%03d", d);
    const std::string dir = root + name;
    make_dir(dir);
    for (int f = 0; f < files_per_dir; ++f) {
      std::snprintf(name, sizeof name, "/f%04d", f);
      if (::mknod((dir + name).c_str(), S_IFREG | 0644, 0) != 0) throw_errno("create " + dir + name);
    }
  }
}

// The archive's tree: `files` files of 0-8 KiB (printable bytes), 50 per directory, 10
// directories per top-level directory: tNN/sN/fNNN.
void make_tar_tree(const std::string& root, int files) {
  make_dir(root);
  Random random(0x746172);
  std::string content;
  char name[64];
  for (int i = 0; i < files; ++i) {
    if (i % 500 == 0) {
      check_interrupted();
      std::snprintf(name, sizeof name, "/t%02d", i / 500);
      make_dir(root + name);
    }
    if (i % 50 == 0) {
      std::snprintf(name, sizeof name, "/t%02d/s%d", i / 500, (i / 50) % 10);
      make_dir(root + name);
    }
    std::snprintf(name, sizeof name, "/t%02d/s%d/f%03d.txt", i / 500, (i / 50) % 10, i % 50);
    content.resize(random.next() % 8192);
    for (auto& c : content) c = static_cast<char>('a' + random.next() % 26);
    write_file(root + name, content);
  }
}

// The C project: src/mNN/fKKK.c (files / 10 per module), include/common.h and include/mNN.h,
// main.c and a Makefile building build/mNN/fKKK.o (+ .d), build/libproj.a, build/prog and the
// hard link build/prog.link.
void make_c_project(const std::string& root, int files) {
  const int modules = 10;
  const int per_module = files / modules;
  make_dir(root);
  make_dir(root + "/include");
  make_dir(root + "/src");
  write_file(root + "/include/common.h",
             "#ifndef COMMON_H\n#define COMMON_H\n#include <stdint.h>\n#include <stddef.h>\n"
             "#include <string.h>\n#include <stdio.h>\n#include <stdlib.h>\n"
             "typedef struct { uint64_t a, b; double c; char name[32]; } item_t;\n"
             "static inline uint64_t mix(uint64_t x) { x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; "
             "x ^= x >> 33; return x; }\n#endif\n");
  std::string main_c = "#include \"common.h\"\n";
  std::string main_body;
  char buffer[4096];
  for (int m = 0; m < modules; ++m) {
    std::snprintf(buffer, sizeof buffer, "%s/src/m%02d", root.c_str(), m);
    make_dir(buffer);
    std::string header = "#ifndef M" + std::to_string(m) + "_H\n#define M" + std::to_string(m) +
                         "_H\n#include \"common.h\"\n";
    for (int f = 0; f < per_module; ++f) {
      std::snprintf(buffer, sizeof buffer, "uint64_t m%02d_f%03d_run(uint64_t seed);\n", m, f);
      header += buffer;
      std::snprintf(buffer, sizeof buffer, "  r = m%02d_f%03d_run(r);\n", m, f);
      main_body += buffer;
      std::snprintf(
          buffer, sizeof buffer,
          "#include \"m%02d.h\"\n"
          "static uint64_t sum_%d(const item_t *v, size_t n) {\n"
          "  uint64_t s = %dU;\n"
          "  for (size_t i = 0; i < n; ++i) { s += mix(v[i].a ^ v[i].b) + (uint64_t)v[i].c;"
          " if (s & 1) s ^= 0x%xU; }\n"
          "  return s;\n}\n"
          "static uint64_t step_%d(const item_t *v, size_t n) {\n"
          "  uint64_t s = 7;\n"
          "  for (size_t i = 0; i < n; ++i) {\n"
          "    switch (v[i].a %% %d) {\n"
          "      case 0: s += 3; break;\n      case 1: s *= 5; break;\n"
          "      case 2: s ^= v[i].b; break;\n      case 3: s -= v[i].a; break;\n"
          "      default: s += mix(s);\n    }\n  }\n  return s;\n}\n"
          "static void fill_%d(item_t *v, size_t n, uint64_t seed) {\n"
          "  for (size_t i = 0; i < n; ++i) {\n"
          "    v[i].a = mix(seed + i); v[i].b = mix(v[i].a); v[i].c = (double)(v[i].a %% 1000) / %d.0;\n"
          "    snprintf(v[i].name, sizeof v[i].name, \"m%02d-f%03d-%%zu\", i);\n  }\n}\n"
          "uint64_t m%02d_f%03d_run(uint64_t seed) {\n"
          "  item_t v[64];\n  fill_%d(v, 64, seed);\n"
          "  uint64_t r = sum_%d(v, 64) ^ step_%d(v, 64);\n"
          "  for (int k = 0; k < %d; ++k) r = mix(r + (uint64_t)k + strlen(v[k %% 64].name));\n"
          "  return r;\n}\n",
          m, f, f, f * 31 + m, f, 5 + f % 3, f, 3 + f, m, f, m, f, f, f, f, 4 + f % 8);
      write_file(root + "/src/m" + (m < 10 ? "0" : "") + std::to_string(m) + "/f" +
                     (f < 10 ? "00" : f < 100 ? "0" : "") + std::to_string(f) + ".c",
                 buffer);
    }
    header += "#endif\n";
    std::snprintf(buffer, sizeof buffer, "%s/include/m%02d.h", root.c_str(), m);
    write_file(buffer, header);
    std::snprintf(buffer, sizeof buffer, "#include \"m%02d.h\"\n", m);
    main_c += buffer;
  }
  main_c += "int main(void) {\n  uint64_t r = 1;\n" + main_body +
            "  printf(\"%llu\\n\", (unsigned long long)r);\n  return 0;\n}\n";
  write_file(root + "/main.c", main_c);
  write_file(root + "/Makefile",
             "CC = cc\n"
             "CFLAGS = -O2 -g -Wall -Iinclude -MMD -MP\n"
             "SRCS := $(sort $(wildcard src/*/*.c))\n"
             "OBJS := $(patsubst src/%.c,build/%.o,$(SRCS))\n"
             "DIRS := $(sort $(dir $(OBJS)))\n"
             "all: build/prog build/prog.link\n"
             "$(DIRS):\n\tmkdir -p $@\n"
             "build/%.o: src/%.c | $(DIRS)\n\t$(CC) $(CFLAGS) -c $< -o $@\n"
             "build/libproj.a: $(OBJS)\n\trm -f $@\n\tar rcs $@ $^\n"
             "build/prog: main.c build/libproj.a | $(DIRS)\n"
             "\t$(CC) $(CFLAGS) -o $@ main.c build/libproj.a\n"
             "build/prog.link: build/prog\n\tln -f $< $@\n"
             "-include $(OBJS:.o=.d) build/prog.d\n"
             ".PHONY: all\n");
}

// ---------------------------------------------------------------------------------------------
// Walks

struct WalkResult {
  std::uint64_t entries = 0;
  std::uint64_t bytes = 0;  // st_size of the regular files
};

void walk_dir(const std::string& path, WalkResult& r) {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) throw_errno("opendir " + path);
  const std::unique_ptr<DIR, int (*)(DIR*)> closer(dir, &::closedir);
  for (;;) {
    errno = 0;
    const dirent* entry = ::readdir(dir);
    if (entry == nullptr) {
      if (errno != 0) throw_errno("readdir " + path);
      break;
    }
    const char* name = entry->d_name;
    if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'))) continue;
    const std::string child = path + "/" + name;
    struct stat st {};
    if (::lstat(child.c_str(), &st) != 0) throw_errno("lstat " + child);
    ++r.entries;
    if (S_ISREG(st.st_mode)) r.bytes += static_cast<std::uint64_t>(st.st_size);
    if ((r.entries & 4095) == 0) check_interrupted();
    if (entry->d_type == DT_DIR || (entry->d_type == DT_UNKNOWN && S_ISDIR(st.st_mode))) {
      walk_dir(child, r);
    }
  }
}

WalkResult walk(const std::string& root) {
  WalkResult r;
  walk_dir(root, r);
  return r;
}

// A walk that must see `expected` entries; returns ms.
double timed_walk_ms(const std::string& root, std::uint64_t expected) {
  const auto t0 = Clock::now();
  const WalkResult r = walk(root);
  const double ms = seconds_between(t0, Clock::now()) * 1e3;
  if (r.entries != expected) {
    throw Error("walked " + std::to_string(r.entries) + " of " + std::to_string(expected) +
                    " entries under " + root,
                EIO);
  }
  return ms;
}

// Entries directly and indirectly below `dir` (0 if it does not exist).
std::uint64_t count_entries(const std::string& dir) {
  if (::access(dir.c_str(), F_OK) != 0) return 0;
  return walk(dir).entries;
}

// ---------------------------------------------------------------------------------------------
// Statistics and report helpers

enum System { kOurs = 0, kNative = 1, kFuseOverlayfs = 2 };
constexpr std::array<const char*, 3> kSystemNames = {"ours", "native", "fuse-overlayfs"};
constexpr std::array<const char*, 3> kSystemKeys = {"ours", "native", "fuse_overlayfs"};
using PerSystem = std::array<std::vector<double>, 3>;

double min_of(const std::vector<double>& v) {
  return v.empty() ? std::nan("") : *std::min_element(v.begin(), v.end());
}
double max_of(const std::vector<double>& v) {
  return v.empty() ? std::nan("") : *std::max_element(v.begin(), v.end());
}
double ratio(const std::vector<double>& a, const std::vector<double>& b) {
  return a.empty() || b.empty() ? std::nan("") : median(a) / median(b);
}

void result(const std::string& key, double value) {
  if (!std::isnan(value)) std::printf("RESULT %s %.3f\n", key.c_str(), value);
}
void result(const std::string& key, double value, double low, double high) {
  if (!std::isnan(value)) std::printf("RESULT %s %.3f %.3f %.3f\n", key.c_str(), value, low, high);
}
void result_samples(const std::string& key, const std::vector<double>& v) {
  if (!v.empty()) result(key, median(v), min_of(v), max_of(v));
}
// The ratio of the medians, with the spread of the rounds' own ratios.
void result_ratio(const std::string& key, const std::vector<double>& a, const std::vector<double>& b) {
  if (a.empty() || b.empty()) return;
  double low = INFINITY, high = -INFINITY;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    low = std::min(low, a[i] / b[i]);
    high = std::max(high, a[i] / b[i]);
  }
  result(key, ratio(a, b), low, high);
}

std::string cell(const std::vector<double>& v, int decimals) {
  if (v.empty()) return "n/a";
  char buffer[96];
  std::snprintf(buffer, sizeof buffer, "%.*f (%.*f-%.*f)", decimals, median(v), decimals,
                min_of(v), decimals, max_of(v));
  return buffer;
}

std::string ratio_cell(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.empty() || b.empty()) return "-";
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.2fx", median(a) / median(b));
  return buffer;
}

// ---------------------------------------------------------------------------------------------
// The run

// A fresh ext4 file system (mkfs.ext4 defaults: with a journal) on a sparse image through a loop
// device with direct I/O, mounted at `mountpoint`, for everything the workloads write: the
// native directories, the upper layers and the lower ones. The host's own /tmp may be an ext4
// without a journal, where each new inode costs a scan of recently deleted ones (ext4's
// recently_deleted(), only in no-journal mode): 1 ms per file after a few thousand deletions on
// this VM, for native and both overlays alike, and growing with other jobs' deletions. Removed
// (umount, losetup -d) on destruction; the image goes with the scratch directory.
class LoopFs {
 public:
  LoopFs(const std::string& image, const std::string& mountpoint, std::uint64_t bytes,
         const std::string& log)
      : mountpoint_(mountpoint) {
    {
      const UniqueFd fd(::open(image.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
      if (!fd) throw_errno("create " + image);
      if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) throw_errno("truncate " + image);
    }
    run_process({"mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                 image},
                {{}, "", nullptr, log});
    std::string out;
    run_process({"losetup", "--find", "--show", "--direct-io=on", image}, {{}, "", &out, log});
    device_ = out.substr(0, out.find('\n'));
    if (device_.rfind("/dev/loop", 0) != 0) throw Error("losetup printed '" + out + "'", EPROTO);
    try {
      run_process({"mount", "-t", "ext4", device_, mountpoint_.path()}, {{}, "", nullptr, log});
      if (::chmod(mountpoint_.path().c_str(), 0755) != 0) throw_errno("chmod " + mountpoint_.path());
    } catch (...) {
      release();
      throw;
    }
  }
  LoopFs(const LoopFs&) = delete;
  LoopFs& operator=(const LoopFs&) = delete;
  ~LoopFs() { release(); }
  [[nodiscard]] const std::string& path() const { return mountpoint_.path(); }
  [[nodiscard]] const std::string& device() const { return device_; }

 private:
  void release() noexcept {
    for (int attempt = 0; attempt < 20 && is_mounted(mountpoint_.path()); ++attempt) {
      if (::umount2(mountpoint_.path().c_str(), 0) == 0) break;
      if (errno != EBUSY || attempt == 19) {
        std::fprintf(stderr, "%s: umount %s: %s; detaching lazily\n", kName,
                     mountpoint_.path().c_str(), std::strerror(errno));
        ::umount2(mountpoint_.path().c_str(), MNT_DETACH);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!device_.empty()) {
      // Not run_process: it refuses to run once we are interrupted. A lazily detached file
      // system keeps the device until it is free; losetup -d then marks it to autoclear.
      try {
        const pid_t pid = spawn_process({"losetup", "-d", device_}, {}, nullptr);
        int status = 0;
        ::waitpid(pid, &status, 0);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: losetup -d %s: %s\n", kName, device_.c_str(), e.what());
      }
      device_.clear();
    }
  }

  MountPoint mountpoint_;
  std::string device_;
};

struct Environment {
  Environment(const Config& c, const ScratchDir& r) : config(c), root(r) {}
  const Config& config;
  const ScratchDir& root;  // mount points and logs
  std::string work;        // sources, native directories, upper layers (a fresh ext4 by default)
  std::string description;  // of work's file system
  [[nodiscard]] std::string at(const std::string& name) const { return work + "/" + name; }
  std::string launcher;
  bool fuse_overlayfs = false;
  std::string fuse_overlayfs_missing;
  std::string ours_log, fo_log, tool_log;  // stderr of the launcher, fuse-overlayfs, tar/make
  int serial = 0;                          // for fresh directory names
  FuseTrace* trace = nullptr;              // the census of FUSE requests, if available
};

// The timed rounds, then one census round (FUSE systems only, traced, not timed) if available.
// `rounds` is the number of timed rounds of the part.
int rounds_with_census(const Environment& env, int rounds) {
  return rounds + (env.trace != nullptr && env.trace->available() ? 1 : 0);
}
bool skip(int rounds, int round, System system) { return round >= rounds && system == kNative; }
void begin_census(const Environment& env, int rounds, int round, const View& view) {
  if (round >= rounds) env.trace->start(view.path());
}
// Stores the census of a census round; true when this round's timings are to be kept.
bool end_census(const Environment& env, int rounds, int round, Census& census) {
  if (round < rounds) return true;
  census = env.trace->stop();
  return false;
}

// A fresh view of `lower` for `system`: a native directory (a copy of lower when copy_lower),
// ours with an empty overlay, or fuse-overlayfs with an empty upper layer.
std::unique_ptr<View> open_view(Environment& env, System system, const std::string& lower,
                                bool copy_lower) {
  const std::string n = std::to_string(++env.serial);
  switch (system) {
    case kNative:
      return std::make_unique<NativeView>(env.at("native-" + n), copy_lower ? lower : "");
    case kOurs:
      return std::make_unique<OursView>(env.launcher, lower, env.root / ("mnt-" + n),
                                        env.at("overlay-" + n), env.ours_log);
    case kFuseOverlayfs:
      return std::make_unique<FuseOverlayfsView>(lower, env.root / ("mnt-" + n),
                                                 env.at("fo-" + n), env.fo_log);
  }
  throw Error("unknown system", EINVAL);
}

// The systems of a round, a different one first in each round.
std::vector<System> order_for(const Environment& env, int round) {
  std::vector<System> order;
  for (int i = 0; i < 3; ++i) {
    const auto s = static_cast<System>((round + i) % 3);
    if (s == kFuseOverlayfs && !env.fuse_overlayfs) continue;
    if (env.config.systems.count(s == kFuseOverlayfs ? "fuse-overlayfs" : kSystemNames[s]) == 0) {
      continue;
    }
    order.push_back(s);
  }
  return order;
}

// Removes what a round left (the overlay or upper directory), untimed, and writes everything back.
void clean_after(Environment& env) {
  for (const auto& entry : fs::directory_iterator(env.work)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("overlay-", 0) == 0 || name.rfind("fo-", 0) == 0) {
      if (!mounts_under(entry.path().string()).empty()) {
        throw Error("mounts remain under " + entry.path().string(), EBUSY);
      }
      fs::remove_all(entry.path());
    }
  }
  ::sync();
}

struct Diagnostics {
  PerSystem cpu_s;      // the daemon's CPU time during the timed part
  PerSystem syscr;      // its read() calls
  PerSystem syscw;      // its write() calls
};

void note(Diagnostics& d, System s, const DaemonCounters& c) {
  if (s == kNative) return;
  d.cpu_s[s].push_back(c.cpu_s);
  d.syscr[s].push_back(static_cast<double>(c.syscr));
  d.syscw[s].push_back(static_cast<double>(c.syscw));
}

// --- 1. sequential write + fsync

struct WriteResults {
  PerSystem mibs, write_s, fsync_s;
  Diagnostics diag;
  std::array<Census, 3> census;
};

WriteResults run_write(Environment& env, const std::string& lower) {
  WriteResults r;
  const int rounds = env.config.rounds;
  const std::uint64_t size = env.config.write_mib << 20;
  std::vector<char> data(16 * kChunk);  // 16 MiB of random bytes, written round and round
  Random(0x7772697465).fill(data.data(), data.size());
  for (int round = 0; round < rounds_with_census(env, rounds); ++round) {
    for (const System system : order_for(env, round)) {
      if (skip(rounds, round, system)) continue;
      check_interrupted();
      auto view = open_view(env, system, lower, false);
      const std::string file = view->path() + "/written.bin";
      ::sync();
      begin_census(env, rounds, round, *view);
      const DaemonCounters c0 = daemon_counters(view->daemon_pid());
      const auto t0 = Clock::now();
      UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
      if (!fd) throw_errno("create " + file);
      for (std::uint64_t done = 0; done < size; done += kChunk) {
        if ((done & (64 * kChunk - 1)) == 0) check_interrupted();
        write_all(fd.get(), data.data() + (done % data.size()), kChunk, file);
      }
      const auto t1 = Clock::now();
      if (::fsync(fd.get()) != 0) throw_errno("fsync " + file);
      if (::close(fd.release()) != 0) throw_errno("close " + file);
      const auto t2 = Clock::now();
      const DaemonCounters c1 = daemon_counters(view->daemon_pid());
      view->check_alive("the write");
      if (end_census(env, rounds, round, r.census[system])) {
        note(r.diag, system, c1 - c0);
        r.mibs[system].push_back(static_cast<double>(size) / kMiB / seconds_between(t0, t2));
        r.write_s[system].push_back(seconds_between(t0, t1));
        r.fsync_s[system].push_back(seconds_between(t1, t2));
      }
      struct stat st {};
      if (::stat(file.c_str(), &st) != 0) throw_errno("stat " + file);
      if (static_cast<std::uint64_t>(st.st_size) != size) throw Error(file + ": wrong size", EIO);
      view->finish();
      // The data landed in the upper layer, and the lower one is untouched.
      if (!view->upper().empty()) {
        const std::string upper_file = view->upper() + "/written.bin";
        if (::stat(upper_file.c_str(), &st) != 0 || static_cast<std::uint64_t>(st.st_size) != size) {
          throw Error(std::string(kSystemNames[system]) + ": " + upper_file + " is not " +
                          std::to_string(size) + " bytes after unmounting",
                      EIO);
        }
      }
      if (count_entries(lower) != 0) throw Error(lower + " (the lower layer) changed", EIO);
      view.reset();
      clean_after(env);
    }
  }
  return r;
}

// --- 2. tar -x of a 10,000-file archive, then rm -rf

struct TarResults {
  PerSystem tar_ms, rm_ms;
  Diagnostics tar_diag, rm_diag;
  std::array<Census, 3> tar_census, rm_census;
};

TarResults run_tar(Environment& env, const std::string& lower, const std::string& archive,
                   std::uint64_t expected_entries, std::uint64_t expected_bytes) {
  TarResults r;
  const int rounds = env.config.rounds;
  for (int round = 0; round < rounds_with_census(env, rounds); ++round) {
    for (const System system : order_for(env, round)) {
      if (skip(rounds, round, system)) continue;
      check_interrupted();
      auto view = open_view(env, system, lower, false);
      const std::string dest = view->path() + "/x";
      make_dir(dest);
      ::sync();
      begin_census(env, rounds, round, *view);
      DaemonCounters c0 = daemon_counters(view->daemon_pid());
      auto t0 = Clock::now();
      run_process({"tar", "-xf", archive, "-C", dest, "--no-same-owner"},
                  {{"LC_ALL=C"}, "", nullptr, env.tool_log});
      double ms = seconds_between(t0, Clock::now()) * 1e3;
      DaemonCounters c1 = daemon_counters(view->daemon_pid());
      if (end_census(env, rounds, round, r.tar_census[system])) {
        r.tar_ms[system].push_back(ms);
        note(r.tar_diag, system, c1 - c0);
      }
      view->check_alive("tar -x");
      const WalkResult got = walk(dest);
      if (got.entries != expected_entries || got.bytes != expected_bytes) {
        throw Error(std::string(kSystemNames[system]) + ": tar -x gave " +
                        std::to_string(got.entries) + " entries and " +
                        std::to_string(got.bytes) + " bytes, expected " +
                        std::to_string(expected_entries) + " and " +
                        std::to_string(expected_bytes),
                    EIO);
      }
      ::sync();
      begin_census(env, rounds, round, *view);
      c0 = daemon_counters(view->daemon_pid());
      t0 = Clock::now();
      run_process({"rm", "-rf", dest}, {{"LC_ALL=C"}, "", nullptr, env.tool_log});
      ms = seconds_between(t0, Clock::now()) * 1e3;
      c1 = daemon_counters(view->daemon_pid());
      if (end_census(env, rounds, round, r.rm_census[system])) {
        r.rm_ms[system].push_back(ms);
        note(r.rm_diag, system, c1 - c0);
      }
      view->check_alive("rm -rf");
      if (count_entries(view->path()) != 0) throw Error(view->path() + " not empty after rm -rf", EIO);
      view->finish();
      view.reset();
      clean_after(env);
    }
  }
  return r;
}

// --- 3. make -j2 of a C project

struct MakeResults {
  PerSystem make_s, noop_ms;
  Diagnostics diag;
  std::array<Census, 3> census, noop_census;
  std::uint64_t built_entries = 0;  // what one build adds (objects, .d files, dirs, ...)
};

MakeResults run_make(Environment& env, const std::string& project) {
  MakeResults r;
  const int rounds = env.config.make_rounds;
  const std::uint64_t source_entries = count_entries(project);
  for (int round = 0; round < rounds_with_census(env, rounds); ++round) {
    for (const System system : order_for(env, round)) {
      if (skip(rounds, round, system)) continue;
      check_interrupted();
      auto view = open_view(env, system, project, /*copy_lower=*/true);
      ::sync();
      std::string out;
      begin_census(env, rounds, round, *view);
      DaemonCounters c0 = daemon_counters(view->daemon_pid());
      auto t0 = Clock::now();
      run_process({"make", "-j2"}, {{"LC_ALL=C"}, view->path(), &out, env.tool_log});
      const double seconds = seconds_between(t0, Clock::now());
      const DaemonCounters c1 = daemon_counters(view->daemon_pid());
      if (end_census(env, rounds, round, r.census[system])) {
        r.make_s[system].push_back(seconds);
        note(r.diag, system, c1 - c0);
      }
      view->check_alive("make");
      struct stat prog {}, link {};
      if (::stat((view->path() + "/build/prog").c_str(), &prog) != 0 ||
          ::stat((view->path() + "/build/prog.link").c_str(), &link) != 0 || prog.st_size == 0 ||
          prog.st_ino != link.st_ino || prog.st_nlink != 2) {
        throw Error(std::string(kSystemNames[system]) +
                        ": make did not leave build/prog and its hard link build/prog.link",
                    EIO);
      }
      // Nothing to do the second time: make stats every target and prerequisite.
      out.clear();
      begin_census(env, rounds, round, *view);
      t0 = Clock::now();
      run_process({"make", "-j2"}, {{"LC_ALL=C"}, view->path(), &out, env.tool_log});
      const double ms = seconds_between(t0, Clock::now()) * 1e3;
      if (end_census(env, rounds, round, r.noop_census[system])) r.noop_ms[system].push_back(ms);
      if (out.find("Nothing to be done") == std::string::npos &&
          out.find("is up to date") == std::string::npos) {
        throw Error(std::string(kSystemNames[system]) + ": the second make did something: " + out,
                    EIO);
      }
      r.built_entries = count_entries(view->path()) - source_entries;
      view->finish();
      view.reset();
      clean_after(env);
    }
  }
  return r;
}

// --- 4. reads through an empty overlay against a read-only mount

enum ReadMode { kReadOnly = 0, kEmptyOverlay = 1 };
constexpr std::array<const char*, 2> kReadModeNames = {"read-only", "empty overlay"};
constexpr std::array<const char*, 2> kReadModeKeys = {"read_only", "empty_overlay"};

struct ReadResults {
  std::array<std::vector<double>, 2> cold_mibs, second_mibs, warm_mibs, walk_cold_ms, walk_warm_ms;
  std::array<std::vector<double>, 2> worker_warm_read_mib;  // rchar during the warm read
  std::array<std::vector<double>, 2> worker_cold_cpu_s;     // CPU time during the cold read
  int discarded = 0;  // attempts measured again after a foreign drop_caches
  int disturbed = 0;  // kept although disturbed after 3 attempts
  std::uint64_t upper_entries_after = 0;  // what reading left in the overlay (should be 0)
};

ReadResults run_reads(Environment& env, const std::string& lower, std::uint64_t file_bytes,
                      std::uint64_t walk_entries) {
  ReadResults r;
  std::vector<char> buffer(kChunk, 1);
  for (int round = 0; round < env.config.rounds; ++round) {
    for (const ReadMode mode : {static_cast<ReadMode>(round % 2), static_cast<ReadMode>(1 - round % 2)}) {
      double cold = 0, second = 0, warm = 0, walk_cold = 0, walk_warm = 0, warm_rchar = 0, cpu = 0;
      for (int attempt = 1;; ++attempt) {
        check_interrupted();
        const std::string n = std::to_string(++env.serial);
        const std::string overlay = mode == kEmptyOverlay ? env.at("overlay-" + n) : "";
        const std::uint64_t drops0 = drops_so_far();
        {
          OursView view(env.launcher, lower, env.root / ("mnt-" + n), overlay, env.ours_log);
          const pid_t pid = view.daemon_pid();
          const std::string file = view.path() + "/big.bin";
          drop_caches("3");
          const double cpu0 = daemon_counters(pid).cpu_s;
          cold = sequential_read_mibs(file, file_bytes, buffer);
          cpu = daemon_counters(pid).cpu_s - cpu0;
          second = sequential_read_mibs(file, file_bytes, buffer);
          const std::uint64_t rchar0 = rchar_of(pid);
          warm = sequential_read_mibs(file, file_bytes, buffer);
          warm_rchar = static_cast<double>(rchar_of(pid) - rchar0) / kMiB;
          if (round == 0) check_same_ends(file, lower + "/big.bin", file_bytes);
          drop_caches("3");
          walk_cold = timed_walk_ms(view.path() + "/tree", walk_entries);
          // Warm: the median of 5 walks in a row (one takes about 40 ms: a single one is noise).
          std::vector<double> warm_walks;
          for (int i = 0; i < 5; ++i) warm_walks.push_back(timed_walk_ms(view.path() + "/tree", walk_entries));
          walk_warm = median(warm_walks);
          view.check_alive("the reads");
          view.finish();
          if (!overlay.empty()) r.upper_entries_after = std::max(r.upper_entries_after, count_entries(overlay + "/upper"));
        }
        clean_after(env);
        if (drops_so_far() - drops0 == 4) break;  // our own two drops, counted twice each
        if (attempt == 3) {
          ++r.disturbed;
          break;
        }
        ++r.discarded;
      }
      r.cold_mibs[mode].push_back(cold);
      r.second_mibs[mode].push_back(second);
      r.warm_mibs[mode].push_back(warm);
      r.walk_cold_ms[mode].push_back(walk_cold);
      r.walk_warm_ms[mode].push_back(walk_warm);
      r.worker_warm_read_mib[mode].push_back(warm_rchar);
      r.worker_cold_cpu_s[mode].push_back(cpu);
    }
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Report

void row(const std::string& metric, const PerSystem& v, int decimals) {
  std::printf("| %-46s | %20s | %20s | %20s | %8s | %8s |\n", metric.c_str(),
              cell(v[kOurs], decimals).c_str(), cell(v[kNative], decimals).c_str(),
              cell(v[kFuseOverlayfs], decimals).c_str(), ratio_cell(v[kOurs], v[kNative]).c_str(),
              ratio_cell(v[kOurs], v[kFuseOverlayfs]).c_str());
}

void diag_line(const char* what, const Diagnostics& d, double per) {
  for (const System s : {kOurs, kFuseOverlayfs}) {
    if (d.cpu_s[s].empty()) continue;
    std::printf("- %s, %s: daemon CPU %s s; daemon read() calls %s, write() calls %s",
                what, kSystemNames[s], cell(d.cpu_s[s], 2).c_str(), cell(d.syscr[s], 0).c_str(),
                cell(d.syscw[s], 0).c_str());
    if (per > 0) {
      std::printf(" (%.1f and %.1f per file)", median(d.syscr[s]) / per, median(d.syscw[s]) / per);
    }
    std::printf("\n");
  }
}

void results_per_system(const std::string& key, const PerSystem& v) {
  for (const System s : {kOurs, kNative, kFuseOverlayfs}) {
    result_samples(key + "_" + kSystemKeys[s], v[s]);
  }
}

void ratio_results(const std::string& key, const PerSystem& v) {
  result_ratio(key + "_ratio_to_native", v[kOurs], v[kNative]);
  result_ratio(key + "_ratio_to_fuse_overlayfs", v[kOurs], v[kFuseOverlayfs]);
}

struct Goal {
  std::string what;
  double value;
  bool met;
  std::string why;
};

void print_goal(const Goal& g) {
  if (std::isnan(g.value)) {
    std::printf("- %s: not measured\n", g.what.c_str());
    return;
  }
  std::printf("- %s: %s (%.2f)\n", g.what.c_str(), g.met ? "met" : "MISSED", g.value);
  if (!g.met && !g.why.empty()) std::printf("  %s\n", g.why.c_str());
}

int run(const Config& config) {
  if (::geteuid() != 0) throw Error("heddle_write_bench must run as root (FUSE, drop_caches)", EPERM);
  ::umask(022);
  const auto t_start = Clock::now();
  ScratchDir root("heddle-write-bench-");  // destroyed last: every view inside goes first
  Environment env{config, root};
  env.launcher = own_bin_dir() + "/heddle-fuse-launcher";
  if (config.systems.count("ours") != 0 && ::access(env.launcher.c_str(), X_OK) != 0) {
    throw_errno(env.launcher);
  }
  env.fuse_overlayfs = on_path("fuse-overlayfs");
  if (!env.fuse_overlayfs) env.fuse_overlayfs_missing = "fuse-overlayfs is not on PATH (apt-get install fuse-overlayfs)";
  env.ours_log = root / "launcher.log";
  env.fo_log = root / "fuse-overlayfs.log";
  env.tool_log = root / "tools.log";
  FuseTrace trace;  // its tracefs instance is removed before the scratch directory
  env.trace = &trace;
  std::optional<LoopFs> disk;  // unmounted after every view (declared after: destroyed before)
  if (config.on_tmp) {
    env.work = root / "work";
    make_dir(env.work);
    env.description = "the file system of " + root.path() + " (--on-tmp)";
  } else {
    const std::uint64_t bytes = (2 * config.write_mib + config.read_mib + 4096) << 20;
    disk.emplace(root / "disk.img", root / "disk", bytes, env.tool_log);
    env.work = disk->path();
    env.description = "a fresh ext4 (mkfs.ext4 defaults, " + std::to_string(bytes >> 30) +
                      " GiB sparse image, " + disk->device() + " with direct I/O) at " + env.work;
  }
  const auto has = [&](const char* part) { return config.parts.count(part) != 0; };

  std::printf("%s: creating the sources under %s ...\n", kName, root.path().c_str());
  const std::string empty = env.at("lower-empty"), project = env.at("lower-project"),
                    read_src = env.at("lower-read"), tar_tree = env.at("tar-tree"),
                    archive = env.at("archive.tar");
  make_dir(empty);
  std::uint64_t tar_entries = 0, tar_bytes = 0, walk_entries = 0;
  if (has("tar")) {
    make_tar_tree(tar_tree, config.tar_files);
    const WalkResult w = walk(tar_tree);
    tar_entries = w.entries;
    tar_bytes = w.bytes;
    run_process({"tar", "-cf", archive, "-C", tar_tree, "."}, {{"LC_ALL=C"}, "", nullptr, env.tool_log});
    fs::remove_all(tar_tree);
  }
  if (has("make")) make_c_project(project, config.make_files);
  if (has("read")) {
    make_dir(read_src);
    make_random_file(read_src + "/big.bin", config.read_mib << 20);
    make_tree(read_src + "/tree", config.walk_dirs, config.walk_files_per_dir);
    walk_entries = static_cast<std::uint64_t>(config.walk_dirs) *
                   (1 + static_cast<std::uint64_t>(config.walk_files_per_dir));
  }
  ::sync();
  const double setup_s = seconds_between(t_start, Clock::now());
  std::printf("%s: sources created in %.1f s\n", kName, setup_s);

  WriteResults wr;
  TarResults tr;
  MakeResults mr;
  ReadResults rr;
  if (has("write")) {
    std::printf("%s: write: %llu MiB + fsync ...\n", kName, static_cast<unsigned long long>(config.write_mib));
    wr = run_write(env, empty);
  }
  if (has("tar")) {
    std::printf("%s: tar: -x of %d files, then rm -rf ...\n", kName, config.tar_files);
    tr = run_tar(env, empty, archive, tar_entries, tar_bytes);
  }
  if (has("make")) {
    std::printf("%s: make: -j2 of %d .c files ...\n", kName, config.make_files);
    mr = run_make(env, project);
  }
  if (has("read")) {
    std::printf("%s: reads: empty overlay vs read-only ...\n", kName);
    rr = run_reads(env, read_src, config.read_mib << 20, walk_entries);
  }
  for (const auto& point : mounts_under(root.path())) {
    if (!disk || point != disk->path()) throw Error("mount left at " + point, EBUSY);
  }
  const double total_s = seconds_between(t_start, Clock::now());

  // ---- report
  const Config& c = config;
  std::printf("\n## heddle_write_bench\n\n");
  std::printf("- nproc: %ld, CPUs allowed: %s, kernel: %s\n", ::sysconf(_SC_NPROCESSORS_ONLN),
              allowed_cpus().c_str(), kernel_release().c_str());
  std::printf("- ours: %s mount --dir LOWER --overlay --overlay-dir OV (a fresh, empty OV each "
              "round)\n", env.launcher.c_str());
  if (env.fuse_overlayfs) {
    std::printf("- fuse-overlayfs: fuse-overlayfs -f -o lowerdir=L,upperdir=U,workdir=W "
                "(defaults; a fresh, empty U each round)\n");
  } else {
    std::printf("- fuse-overlayfs: UNAVAILABLE (%s)\n", env.fuse_overlayfs_missing.c_str());
  }
  std::printf("- native: a fresh directory; it, the lower directories and both upper layers are "
              "on %s\n", env.description.c_str());
  std::printf("- %d rounds (make: %d), systems interleaved (a different one first each round). "
              "Cells: median (min-max). Sources built in %.1f s; total %.1f s\n\n",
              c.rounds, c.make_rounds, setup_s, total_s);
  std::printf("| %-46s | %20s | %20s | %20s | %8s | %8s |\n", "metric", "ours", "native",
              "fuse-overlayfs", "ours/nat", "ours/fo");
  std::printf("|%s|%s|%s|%s|%s|%s|\n", std::string(48, '-').c_str(),
              std::string(21, '-').append(":").c_str(), std::string(21, '-').append(":").c_str(),
              std::string(21, '-').append(":").c_str(), std::string(9, '-').append(":").c_str(),
              std::string(9, '-').append(":").c_str());
  if (has("write")) {
    row(std::to_string(c.write_mib) + " MiB write + fsync (MiB/s)", wr.mibs, 0);
    row("  of which write() (s)", wr.write_s, 2);
    row("  of which fsync() + close() (s)", wr.fsync_s, 2);
  }
  if (has("tar")) {
    row("tar -x " + std::to_string(c.tar_files) + " files (ms)", tr.tar_ms, 0);
    row("rm -rf of them (ms)", tr.rm_ms, 0);
  }
  if (has("make")) {
    row("make -j2, " + std::to_string(c.make_files) + " .c files (s)", mr.make_s, 2);
    row("make -j2 again, nothing to do (ms)", mr.noop_ms, 0);
  }
  std::printf("\nRatios are ours / the other system's medians: for MiB/s above 1 is better, for "
              "times below 1.\n");
  if (has("write")) {
    for (const System s : {kOurs, kNative, kFuseOverlayfs}) {
      if (wr.mibs[s].empty()) continue;
      std::printf("Per round, write, %s: %s MiB/s (write %s s, fsync %s s)\n", kSystemNames[s],
                  join(wr.mibs[s], 0).c_str(), join(wr.write_s[s], 2).c_str(),
                  join(wr.fsync_s[s], 2).c_str());
    }
    diag_line("write", wr.diag, 0);
  }
  if (has("tar")) {
    std::printf("Archive: %d files, %llu entries, %.1f MiB of file data\n", c.tar_files,
                static_cast<unsigned long long>(tar_entries), static_cast<double>(tar_bytes) / kMiB);
    for (const System s : {kOurs, kNative, kFuseOverlayfs}) {
      if (tr.tar_ms[s].empty()) continue;
      std::printf("Per round, %s: tar -x %s ms; rm -rf %s ms\n", kSystemNames[s],
                  join(tr.tar_ms[s], 0).c_str(), join(tr.rm_ms[s], 0).c_str());
    }
    diag_line("tar -x", tr.tar_diag, static_cast<double>(c.tar_files));
    diag_line("rm -rf", tr.rm_diag, static_cast<double>(c.tar_files));
  }
  if (has("make")) {
    std::printf("C project: %d .c files; a build adds %llu entries\n", c.make_files,
                static_cast<unsigned long long>(mr.built_entries));
    for (const System s : {kOurs, kNative, kFuseOverlayfs}) {
      if (mr.make_s[s].empty()) continue;
      std::printf("Per round, %s: make -j2 %s s; nothing to do %s ms\n", kSystemNames[s],
                  join(mr.make_s[s], 2).c_str(), join(mr.noop_ms[s], 0).c_str());
    }
    diag_line("make -j2", mr.diag, 0);
  }
  if (has("read")) {
    std::printf("\nReads through ours, writable with an empty overlay against read-only (the same "
                "lower directory; %llu MiB file, walk of %llu entries):\n\n",
                static_cast<unsigned long long>(c.read_mib),
                static_cast<unsigned long long>(walk_entries));
    std::printf("| %-36s | %20s | %20s | %8s |\n|%s|%s|%s|%s|\n", "metric", "empty overlay",
                "read-only", "ratio", std::string(38, '-').c_str(),
                std::string(21, '-').append(":").c_str(), std::string(21, '-').append(":").c_str(),
                std::string(9, '-').append(":").c_str());
    const auto read_row = [&](const char* what, const std::array<std::vector<double>, 2>& v, int d) {
      std::printf("| %-36s | %20s | %20s | %8s |\n", what, cell(v[kEmptyOverlay], d).c_str(),
                  cell(v[kReadOnly], d).c_str(), ratio_cell(v[kEmptyOverlay], v[kReadOnly]).c_str());
    };
    read_row("sequential read, cold (MiB/s)", rr.cold_mibs, 0);
    read_row("sequential read, second (MiB/s)", rr.second_mibs, 0);
    read_row("sequential read, warm (MiB/s)", rr.warm_mibs, 0);
    read_row("walk, cold (ms)", rr.walk_cold_ms, 1);
    read_row("walk, warm (ms)", rr.walk_warm_ms, 1);
    for (const ReadMode m : {kEmptyOverlay, kReadOnly}) {
      std::printf("Per round, %s: read cold %s, second %s, warm %s MiB/s; walk cold %s, warm %s ms; "
                  "worker read %s MiB during the warm read, CPU %s s during the cold read\n",
                  kReadModeNames[m], join(rr.cold_mibs[m], 0).c_str(),
                  join(rr.second_mibs[m], 0).c_str(), join(rr.warm_mibs[m], 0).c_str(),
                  join(rr.walk_cold_ms[m], 1).c_str(), join(rr.walk_warm_ms[m], 1).c_str(),
                  join(rr.worker_warm_read_mib[m], 0).c_str(),
                  join(rr.worker_cold_cpu_s[m], 2).c_str());
    }
    std::printf("Entries the reads left in the overlay's upper directory: %llu (expected 0). "
                "Foreign drop_caches: %d attempts measured again, %d kept although disturbed\n",
                static_cast<unsigned long long>(rr.upper_entries_after), rr.discarded, rr.disturbed);
  }

  std::printf("\nFUSE requests per workload (census: one extra, untimed round per FUSE system, "
              "from the fuse:fuse_request_send tracepoint)%s\n",
              trace.available() ? ":" : (": UNAVAILABLE (" + trace.missing() + ")").c_str());
  for (const System s : {kOurs, kFuseOverlayfs}) {
    const auto line = [&](const char* what, const Census& census, double per) {
      if (!census.empty()) std::printf("- %s, %s: %s\n", what, kSystemNames[s], census_text(census, per).c_str());
    };
    line("write + fsync", wr.census[s], 0);
    line("tar -x", tr.tar_census[s], c.tar_files);
    line("rm -rf", tr.rm_census[s], c.tar_files);
    line("make -j2", mr.census[s], 0);
    line("make -j2, nothing to do", mr.noop_census[s], 0);
  }

  std::printf("\nGoals:\n");
  const double write_ratio = ratio(wr.mibs[kOurs], wr.mibs[kNative]);
  print_goal({"1 GiB write + fsync >= 0.5x native (ours/native MiB/s)", write_ratio,
              write_ratio >= 0.5,
              "see the write/fsync split and the worker's CPU time and write() calls above"});
  const double tar_native = ratio(tr.tar_ms[kOurs], tr.tar_ms[kNative]);
  print_goal({"tar -x <= 2x native (ours/native time)", tar_native, tar_native <= 2.0,
              "see the worker's read()/write() calls per file above (about one each per FUSE "
              "request)"});
  const double tar_fo = ratio(tr.tar_ms[kOurs], tr.tar_ms[kFuseOverlayfs]);
  print_goal({"tar -x faster than fuse-overlayfs (ours/fuse-overlayfs time)", tar_fo, tar_fo < 1.0,
              "compare both daemons' requests and CPU time per file above"});
  const double make_native = ratio(mr.make_s[kOurs], mr.make_s[kNative]);
  print_goal({"make -j2 <= 1.3x native (ours/native time)", make_native, make_native <= 1.3,
              "see the worker's CPU time during make above (it shares CPU 0 with the compilers "
              "when pinned)"});
  const auto read_goal = [&](const char* what, const std::array<std::vector<double>, 2>& v,
                             bool time) {
    const double value = ratio(v[kEmptyOverlay], v[kReadOnly]);
    print_goal({what, value, time ? value <= 1.1 : value >= 0.9,
                "the overlay's lookups in the (empty) upper directory, or noise: see the rounds"});
  };
  read_goal("empty overlay: cold read unchanged, >= 0.9x read-only", rr.cold_mibs, false);
  read_goal("empty overlay: warm read unchanged, >= 0.9x read-only", rr.warm_mibs, false);
  read_goal("empty overlay: cold walk unchanged, <= 1.1x read-only time", rr.walk_cold_ms, true);
  read_goal("empty overlay: warm walk unchanged, <= 1.1x read-only time", rr.walk_warm_ms, true);

  std::printf("\n");
  const std::string write_key = "write_seq_1g";  // the key's name whatever --write-mib
  results_per_system(write_key + "_mibs", wr.mibs);
  results_per_system(write_key + "_write_s", wr.write_s);
  results_per_system(write_key + "_fsync_s", wr.fsync_s);
  ratio_results(write_key, wr.mibs);
  results_per_system("tar_x_10k_ms", tr.tar_ms);
  ratio_results("tar_x_10k", tr.tar_ms);
  results_per_system("rm_rf_10k_ms", tr.rm_ms);
  ratio_results("rm_rf_10k", tr.rm_ms);
  for (const System s : {kOurs, kFuseOverlayfs}) {
    if (!tr.tar_census[s].empty()) {
      result(std::string("tar_x_10k_fuse_requests_per_file_") + kSystemKeys[s],
             static_cast<double>(census_total(tr.tar_census[s])) / c.tar_files);
    }
    if (!mr.census[s].empty()) {
      result(std::string("make_j2_fuse_requests_") + kSystemKeys[s],
             static_cast<double>(census_total(mr.census[s])));
    }
    if (tr.tar_diag.syscr[s].empty()) continue;
    result_samples(std::string("tar_x_10k_daemon_cpu_s_") + kSystemKeys[s], tr.tar_diag.cpu_s[s]);
  }
  results_per_system("make_j2_s", mr.make_s);
  ratio_results("make_j2", mr.make_s);
  results_per_system("make_noop_ms", mr.noop_ms);
  ratio_results("make_noop", mr.noop_ms);
  for (const System s : {kOurs, kFuseOverlayfs}) {
    result_samples(std::string("make_j2_daemon_cpu_s_") + kSystemKeys[s], mr.diag.cpu_s[s]);
    result_samples(std::string("write_seq_1g_daemon_cpu_s_") + kSystemKeys[s], wr.diag.cpu_s[s]);
  }
  for (const ReadMode m : {kEmptyOverlay, kReadOnly}) {
    const std::string suffix = std::string("_") + kReadModeKeys[m];
    result_samples("overlay_read_cold_mibs" + suffix, rr.cold_mibs[m]);
    result_samples("overlay_read_warm_mibs" + suffix, rr.warm_mibs[m]);
    result_samples("overlay_walk10k_cold_ms" + suffix, rr.walk_cold_ms[m]);
    result_samples("overlay_walk10k_warm_ms" + suffix, rr.walk_warm_ms[m]);
  }
  result_ratio("empty_overlay_cold_seq_read_ratio_to_read_only", rr.cold_mibs[kEmptyOverlay], rr.cold_mibs[kReadOnly]);
  result_ratio("empty_overlay_second_seq_read_ratio_to_read_only", rr.second_mibs[kEmptyOverlay], rr.second_mibs[kReadOnly]);
  result_ratio("empty_overlay_warm_seq_read_ratio_to_read_only", rr.warm_mibs[kEmptyOverlay], rr.warm_mibs[kReadOnly]);
  result_ratio("empty_overlay_walk10k_cold_ratio_to_read_only", rr.walk_cold_ms[kEmptyOverlay], rr.walk_cold_ms[kReadOnly]);
  result_ratio("empty_overlay_walk10k_warm_ratio_to_read_only", rr.walk_warm_ms[kEmptyOverlay], rr.walk_warm_ms[kReadOnly]);
  result("fuse_overlayfs_available", env.fuse_overlayfs ? 1 : 0);
  result("write_bench_total_s", total_s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return bench_main(kName, [&] { return run(parse_args(argc, argv)); });
}
