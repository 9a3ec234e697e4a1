// What the benchmark programs share: argument checks, clean interruption, mount probes, scratch
// directories and mount points, supervisors that unmount on destruction, child processes,
// file readers, drop_caches, /proc readers, statistics and the report's RESULT lines.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
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
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "heddle/error.h"
#include "heddle/launcher/mountinfo.h"
#include "heddle/launcher/supervisor.h"
#include "heddle/unique_fd.h"

extern char** environ;

namespace heddle::bench {

using Clock = std::chrono::steady_clock;

// The program's name, for messages from destructors (set by main()).
inline const char* g_program = "heddle_bench";

// ---------------------------------------------------------------------------------------------
// Arguments and interruption

inline int parse_positive(const char* flag, const char* value) {
  char* end = nullptr;
  errno = 0;
  const long parsed = std::strtol(value, &end, 10);
  if (errno != 0 || end == value || *end != '\0' || parsed <= 0 || parsed > 100'000'000) {
    throw Error(std::string(flag) + ": expected a positive integer, got '" + value + "'", EINVAL);
  }
  return static_cast<int>(parsed);
}

// A command line of `--flag N` pairs, N a positive integer: each flag has its setter. -h or
// --help prints `usage` and exits 0; anything else throws.
struct Flag {
  std::string_view name;
  std::function<void(int)> set;
};

inline void parse_flags(int argc, char** argv, const std::string& usage,
                        const std::vector<Flag>& flags) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(usage.c_str(), stdout);
      std::exit(0);
    }
    const auto flag = std::find_if(flags.begin(), flags.end(), [&](const Flag& f) { return f.name == arg; });
    if (flag == flags.end()) throw Error("unknown argument '" + std::string(arg) + "' (see --help)", EINVAL);
    if (i + 1 >= argc) throw Error("missing value after " + std::string(arg), EINVAL);
    flag->set(parse_positive(argv[i], argv[i + 1]));
    ++i;
  }
}

// SIGINT/SIGTERM/SIGHUP only set a flag, so that the loops throw and every RAII guard
// (supervisors, mounts, scratch directories, child processes) is unwound normally. SIGPIPE is
// ignored: a dead helper process must become an EPIPE we unwind from, not a kill.
inline volatile std::sig_atomic_t g_interrupted = 0;

inline void on_signal(int) { g_interrupted = 1; }

inline void install_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = &on_signal;
  sigemptyset(&action.sa_mask);
  for (const int signo : {SIGINT, SIGTERM, SIGHUP}) {
    if (::sigaction(signo, &action, nullptr) != 0) throw_errno("sigaction");
  }
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  if (::sigaction(SIGPIPE, &ignore, nullptr) != 0) throw_errno("sigaction SIGPIPE");
}

inline void check_interrupted() {
  if (g_interrupted != 0) throw Error("interrupted by a signal", EINTR);
}

// main() of every bench: line-buffered stdout, the signal handlers, and one "FAILED" line
// (exit status 1) for any exception.
template <typename Run>
int bench_main(const char* program, Run&& run) {
  g_program = program;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    install_signal_handlers();
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: FAILED: %s\n", program, e.what());
    return 1;
  }
}

// ---------------------------------------------------------------------------------------------
// Timing and statistics

inline std::int64_t elapsed_ns(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(to - from).count();
}

inline double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// Nearest-rank percentile of sorted samples.
template <typename T>
T nearest_rank(const std::vector<T>& sorted, double p) {
  if (sorted.empty()) throw Error("percentile: no samples", EINVAL);
  auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  rank = std::clamp<std::size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

// Nearest-rank percentile.
inline double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return nearest_rank(v, p);
}

// The median (for an even count, the mean of the middle two).
inline double median(std::vector<double> v) {
  if (v.empty()) throw Error("median: no samples", EINVAL);
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Latency samples summarized in µs.
struct Stats {
  std::size_t n = 0;
  double p50_us = 0;
  double p99_us = 0;
  double max_us = 0;
  double min_us = 0;
  double mean_us = 0;
};

inline Stats summarize(std::vector<std::int64_t> ns) {
  if (ns.empty()) throw Error("summarize: no samples", EINVAL);
  std::sort(ns.begin(), ns.end());
  double sum = 0;
  for (const auto v : ns) sum += static_cast<double>(v);
  Stats s;
  s.n = ns.size();
  s.p50_us = static_cast<double>(nearest_rank(ns, 50)) / 1e3;
  s.p99_us = static_cast<double>(nearest_rank(ns, 99)) / 1e3;
  s.max_us = static_cast<double>(ns.back()) / 1e3;
  s.min_us = static_cast<double>(ns.front()) / 1e3;
  s.mean_us = sum / static_cast<double>(ns.size()) / 1e3;
  return s;
}

inline std::string join(const std::vector<double>& v, int decimals) {
  std::string out;
  char buffer[64];
  for (std::size_t i = 0; i < v.size(); ++i) {
    std::snprintf(buffer, sizeof buffer, "%.*f", decimals, v[i]);
    if (i > 0) out += ", ";
    out += buffer;
  }
  return out;
}

// Machine-readable report lines, which bench/run aggregates across runs.
inline void result_line(const char* key, double value) { std::printf("RESULT %s %.3f\n", key, value); }

// ---------------------------------------------------------------------------------------------
// The host, for the report's header

inline std::string kernel_release() {
  utsname u{};
  if (::uname(&u) != 0) throw_errno("uname");
  return u.release;
}

// The CPUs this process may run on (its children inherit them), e.g. "0" or "0,1".
inline std::string allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return "?";
  std::string out;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &set)) continue;
    if (!out.empty()) out += ',';
    out += std::to_string(cpu);
  }
  return out;
}

// The directory of the running executable (where the build puts the launcher and the worker).
inline std::string own_bin_dir() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) throw Error("readlink /proc/self/exe", ec.value());
  return exe.parent_path().string();
}

// ---------------------------------------------------------------------------------------------
// Mounts, scratch directories and mount points

// The mount points currently listed in /proc/self/mountinfo.
inline std::vector<std::string> mount_points() {
  std::vector<std::string> out;
  for (const auto& entry : launcher::read_mountinfo()) out.push_back(entry.mount_point);
  return out;
}

inline bool is_mounted(const std::string& path) {
  const auto points = mount_points();
  return std::find(points.begin(), points.end(), path) != points.end();
}

// Mounts at or below `dir`.
inline std::vector<std::string> mounts_under(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& point : mount_points()) {
    if (point == dir || point.rfind(dir + "/", 0) == 0) out.push_back(std::move(point));
  }
  return out;
}

// Lazily detaches anything mounted at `path` (its owner should have unmounted it already:
// this is the last line of defence). True when nothing is left.
inline bool detach_all(const std::string& path) {
  for (int i = 0; i < 8 && is_mounted(path); ++i) {
    std::fprintf(stderr, "%s: %s still mounted at cleanup, detaching\n", g_program, path.c_str());
    if (::umount2(path.c_str(), MNT_DETACH) != 0) break;
  }
  return !is_mounted(path);
}

// An empty directory to mount on; on destruction anything still mounted on it is detached and
// it is rmdir()ed: a mount point is never removed recursively, so a mount that somehow
// survived can never be walked into.
class MountPoint {
 public:
  explicit MountPoint(std::string path) : path_(std::move(path)) {
    if (::mkdir(path_.c_str(), 0755) != 0) throw_errno("mkdir " + path_);
  }
  MountPoint(const MountPoint&) = delete;
  MountPoint& operator=(const MountPoint&) = delete;
  ~MountPoint() {
    try {
      if (!detach_all(path_)) {
        std::fprintf(stderr, "%s: cannot unmount %s; leaving it\n", g_program, path_.c_str());
        return;
      }
      if (::rmdir(path_.c_str()) != 0) {
        std::fprintf(stderr, "%s: rmdir %s: %s\n", g_program, path_.c_str(), std::strerror(errno));
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: cleanup of %s: %s\n", g_program, path_.c_str(), e.what());
    }
  }
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A mkdtemp() directory /tmp/PREFIXXXXXXX, mode 0755: a root mount is served by nobody
// (uid 65534), who must be able to reach what it serves. On destruction anything still mounted
// at or below it is detached; if that fails it is left alone (never walked into), else it is
// removed recursively. Declare it before the MountPoints and supervisors inside it, so that
// they are gone first.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix) {
    std::string pattern = "/tmp/" + prefix + "XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) throw_errno("mkdtemp " + pattern);
    path_ = pattern;
    if (::chmod(path_.c_str(), 0755) != 0) {
      const int saved = errno;
      ::rmdir(path_.c_str());
      throw Error("chmod 0755 " + path_, saved);
    }
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir() {
    try {
      for (const auto& point : mounts_under(path_)) (void)detach_all(point);
      if (!mounts_under(path_).empty()) {
        std::fprintf(stderr, "%s: mounts remain under %s; leaving it\n", g_program, path_.c_str());
        return;
      }
      std::error_code ec;
      std::filesystem::remove_all(path_, ec);
      if (ec) {
        std::fprintf(stderr, "%s: remove %s: %s\n", g_program, path_.c_str(), ec.message().c_str());
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: cleanup of %s: %s\n", g_program, path_.c_str(), e.what());
    }
  }
  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A Supervisor that unmounts on destruction and reports failures (Supervisor's destructor
// unmounts too, but only logs). Declare it after its MountPoint, so it goes first.
class LiveMount {
 public:
  explicit LiveMount(ipc::MountSpec request, launcher::SupervisorOptions options = {}) {
    const std::string point = request.mountpoint;
    const auto t0 = Clock::now();
    supervisor_ = launcher::Supervisor::spawn(std::move(request), std::move(options));
    spawn_seconds_ = seconds_between(t0, Clock::now());
    if (!is_mounted(point)) throw Error("spawn returned but " + point + " is not mounted", 0);
  }
  LiveMount(const LiveMount&) = delete;
  LiveMount& operator=(const LiveMount&) = delete;
  LiveMount(LiveMount&&) = default;
  ~LiveMount() {
    try {
      unmount();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: unmount: %s\n", g_program, e.what());
    }
  }
  // Stop -> the worker exits -> the mount is removed; throws if it is still mounted after.
  void unmount() {
    if (!supervisor_) return;
    const std::string point = supervisor_->spec().mountpoint;
    supervisor_->unmount();
    supervisor_.reset();
    if (is_mounted(point)) throw Error("unmount returned but " + point + " is still mounted", EBUSY);
  }
  launcher::Supervisor& operator*() { return *supervisor_; }
  launcher::Supervisor* operator->() { return supervisor_.get(); }
  const launcher::Supervisor* operator->() const { return supervisor_.get(); }
  // False once unmounted.
  explicit operator bool() const { return supervisor_ != nullptr; }
  // How long Supervisor::spawn took (until MountReady).
  [[nodiscard]] double spawn_seconds() const { return spawn_seconds_; }

 private:
  std::unique_ptr<launcher::Supervisor> supervisor_;
  double spawn_seconds_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Child processes run to completion

struct CommandOptions {
  std::vector<std::string> env;              // "NAME=VALUE", replacing same-named variables
  std::function<void(int)> feed;             // if set, writes the child's stdin (then closed)
  std::string* capture_stdout = nullptr;     // if set, receives the child's stdout
};

// Runs argv (PATH lookup) to completion. Throws unless the child exits 0. The child is always
// reaped; it gets SIGKILL if we die first.
inline void run_command(const std::vector<std::string>& argv, const CommandOptions& options = {}) {
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

  int in_fds[2] = {-1, -1};
  if (options.feed && ::pipe2(in_fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  UniqueFd in_read(in_fds[0]);
  UniqueFd in_write(in_fds[1]);
  int out_fds[2] = {-1, -1};
  if (options.capture_stdout != nullptr && ::pipe2(out_fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  UniqueFd out_read(out_fds[0]);
  UniqueFd out_write(out_fds[1]);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork " + argv[0]);
  if (pid == 0) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &dfl, nullptr);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    if (in_read && ::dup2(in_read.get(), STDIN_FILENO) < 0) ::_exit(126);
    if (out_write && ::dup2(out_write.get(), STDOUT_FILENO) < 0) ::_exit(126);
    ::execvpe(args[0], args.data(), envp.data());
    ::_exit(127);
  }
  in_read.reset();
  out_write.reset();
  std::exception_ptr failure;
  if (options.feed) {
    try {
      options.feed(in_write.get());
    } catch (...) {
      failure = std::current_exception();
    }
    in_write.reset();  // EOF: the child finishes (or gives up) and exits
  }
  if (out_read) {
    char buffer[4096];
    for (;;) {
      const ssize_t n = ::read(out_read.get(), buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      options.capture_stdout->append(buffer, static_cast<std::size_t>(n));
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw_errno("waitpid " + argv[0]);
  }
  if (failure) std::rethrow_exception(failure);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string command;
    for (const auto& a : argv) {
      if (!command.empty()) command += ' ';
      command += a;
    }
    throw Error("'" + command + "' failed (wait status " + std::to_string(status) + ")", 0);
  }
}

// ---------------------------------------------------------------------------------------------
// Reading files and dropping caches

inline constexpr std::uint64_t kMiB = 1ull << 20;

// Writes back dirty pages, then drops the page cache ("3": and dentries and inodes) or only the
// dentries and inodes ("2").
inline void drop_caches(const char* what) {
  ::sync();
  std::ofstream out("/proc/sys/vm/drop_caches");
  out << what << "\n";
  out.flush();
  if (!out) throw Error(std::string("echo ") + what + " > /proc/sys/vm/drop_caches failed", EIO);
}

// How many drop_caches writes the system has seen (/proc/vmstat: each of ours, "3", counts
// twice, page cache + slab): another job's drop turns a warm pass partly cold.
inline std::uint64_t drops_so_far() {
  std::ifstream in("/proc/vmstat");
  if (!in) throw_errno("open /proc/vmstat");
  std::uint64_t total = 0;
  std::string key;
  std::uint64_t value = 0;
  while (in >> key >> value) {
    if (key == "drop_pagecache" || key == "drop_slab") total += value;
  }
  return total;
}

// Reads `path` start to end with read() into `buffer` (the benches use 1 MiB); returns MiB/s.
inline double sequential_read_mibs(const std::string& path, std::uint64_t expected,
                                   std::vector<char>& buffer) {
  const auto t0 = Clock::now();
  const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  std::uint64_t total = 0;
  for (;;) {
    const ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) {
        check_interrupted();
        continue;
      }
      throw_errno("read " + path);
    }
    if (n == 0) break;
    total += static_cast<std::uint64_t>(n);
    if ((total & (64 * kMiB - 1)) == 0) check_interrupted();
  }
  const auto t1 = Clock::now();
  if (total != expected) {
    throw Error("read " + std::to_string(total) + " bytes of " + path + ", expected " +
                    std::to_string(expected),
                EIO);
  }
  return static_cast<double>(total) / static_cast<double>(kMiB) / seconds_between(t0, t1);
}

// The first and the last MiB of both files must be equal (e.g. a file and the same file through
// a mount; the full content is the tests' job).
inline void check_same_ends(const std::string& a, const std::string& b, std::uint64_t size) {
  const auto chunk = [&](const std::string& path, std::uint64_t offset) {
    const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("open " + path);
    std::string out(std::min<std::uint64_t>(kMiB, size - offset), '\0');
    std::size_t got = 0;
    while (got < out.size()) {
      const ssize_t n = ::pread(fd.get(), out.data() + got, out.size() - got,
                                static_cast<off_t>(offset + got));
      if (n <= 0) throw_errno("pread " + path);
      got += static_cast<std::size_t>(n);
    }
    return out;
  };
  for (const std::uint64_t offset : {std::uint64_t{0}, size - std::min(size, kMiB)}) {
    if (chunk(a, offset) != chunk(b, offset)) {
      throw Error(a + " and " + b + " differ at offset " + std::to_string(offset), EIO);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// /proc readers

struct Memory {
  std::uint64_t rss_kib = 0;
  std::uint64_t hwm_kib = 0;
  [[nodiscard]] double rss_mib() const { return static_cast<double>(rss_kib) / 1024.0; }
  [[nodiscard]] double hwm_mib() const { return static_cast<double>(hwm_kib) / 1024.0; }
};

// VmRSS and VmHWM of a process, from /proc/<pid>/status.
inline Memory memory_of(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/status";
  std::ifstream in(path);
  if (!in) throw_errno("open " + path);
  Memory m;
  bool rss = false, hwm = false;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      m.rss_kib = std::stoull(line.substr(6));
      rss = true;
    } else if (line.rfind("VmHWM:", 0) == 0) {
      m.hwm_kib = std::stoull(line.substr(6));
      hwm = true;
    }
  }
  if (!rss || !hwm) throw Error("no VmRSS/VmHWM in " + path, EIO);
  return m;
}

// Pss of a process in KiB (its private pages plus its share of the pages it shares), from
// /proc/<pid>/smaps_rollup: unlike VmRSS, the Pss of many processes adds up to the memory
// they use together.
inline std::uint64_t pss_kib_of(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/smaps_rollup";
  std::ifstream in(path);
  if (!in) throw_errno("open " + path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Pss:", 0) == 0) return std::stoull(line.substr(4));
  }
  throw Error("no Pss in " + path, EIO);
}

// The children of every thread of a process (from /proc/<pid>/task/*/children), recursively.
inline std::vector<pid_t> descendants(pid_t pid) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator(
           "/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(task.path() / "children");
    pid_t child = 0;
    while (in >> child) {
      out.push_back(child);
      const auto below = descendants(child);
      out.insert(out.end(), below.begin(), below.end());
    }
  }
  return out;
}

// rchar of a process (bytes it read through read()/pread() etc.), from /proc/<pid>/io.
inline std::uint64_t rchar_of(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/io";
  std::ifstream in(path);
  if (!in) throw_errno("open " + path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("rchar:", 0) == 0) return std::stoull(line.substr(6));
  }
  throw Error("no rchar in " + path, EIO);
}

// CPU seconds (user, system) of a process, all threads: /proc/<pid>/stat fields 14 and 15.
inline std::pair<double, double> cpu_of(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  std::ifstream in(path);
  std::string text;
  if (!in || !std::getline(in, text)) throw_errno("read " + path);
  std::istringstream fields(text.substr(text.rfind(')') + 2));  // after "pid (comm) "
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  const auto hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
  return {utime / hz, stime / hz};
}

// CPU seconds (user, system) of this process.
inline std::pair<double, double> own_cpu() {
  rusage usage{};
  if (::getrusage(RUSAGE_SELF, &usage) != 0) throw_errno("getrusage");
  const auto seconds = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return {seconds(usage.ru_utime), seconds(usage.ru_stime)};
}

}  // namespace heddle::bench
