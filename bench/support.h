// What the suites share (bench/README.md): the figures, the side-by-side loop, scratch
// directories and mounts, child processes, reads, walks, drop_caches and /proc readers.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "heddle/error.h"
#include "heddle/launcher/launcher_environment.h"
#include "heddle/launcher/mountinfo.h"
#include "heddle/launcher/supervisor.h"
#include "heddle/process.h"
#include "heddle/unique_fd.h"

namespace heddle::bench {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
inline constexpr std::uint64_t kMiB = 1ull << 20;
inline constexpr std::size_t kChunk = 1 << 20;  // every sequential read() and write()

inline double seconds_since(Clock::time_point t0) { return (Clock::now() - t0) / 1.0s; }
inline double ms_since(Clock::time_point t0) { return seconds_since(t0) * 1e3; }
template <typename Work>
double seconds_of(Work&& work) {  // the time work() takes
  const auto t0 = Clock::now();
  work();
  return seconds_since(t0);
}

struct Config {
  int rounds = 0;       // 0: the suite's default
  bool quick = false;   // a smoke test: small sizes, few rounds (the keys keep their names)
  bool on_tmp = false;  // write: /tmp's own file system instead of a fresh ext4
  [[nodiscard]] int rounds_or(int normal) const { return rounds > 0 ? rounds : quick ? 2 : normal; }
  [[nodiscard]] int pick(int normal, int small) const { return quick ? small : normal; }
};

// Signals only set a flag (main.cc), so that loops throw and every RAII guard unwinds.
inline volatile std::sig_atomic_t g_interrupted = 0;
inline void check_interrupted() {
  if (g_interrupted != 0) throw Error("interrupted by a signal", EINTR);
}

inline double percentile(std::vector<double> v, double p) {  // nearest rank
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}
inline double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Every figure of a run by its key, one sample per round. print() writes what bench/report
// reads: "RESULT key value", or "RESULT key median min max" for rounds; diag.* keys as DIAG.
class Figures {
 public:
  void add(const std::string& key, double value) { samples_[key].push_back(value); }
  void set(const std::string& key, double value) { samples_[key] = {value}; }
  [[nodiscard]] double median_of(const std::string& key) const { return median(samples_.at(key)); }
  // median(a) / median(b), spread of the rounds' own ratios (round i against round i).
  void ratio(const std::string& key, const std::string& a, const std::string& b) {
    if (!samples_.contains(a) || !samples_.contains(b)) return;
    const std::vector<double> x = samples_[a], y = samples_[b];
    std::pair<double, double> spread{INFINITY, -INFINITY};
    for (std::size_t i = 0; i < std::min(x.size(), y.size()); ++i)
      spread = {std::min(spread.first, x[i] / y[i]), std::max(spread.second, x[i] / y[i])};
    samples_[key] = {median(x) / median(y)};
    if (x.size() > 1) ratio_spread_[key] = spread;
  }
  void print() const {
    for (const auto& [key, v] : samples_) {
      if (std::isnan(median(v))) continue;  // nothing measured
      const auto ratio = ratio_spread_.find(key);
      const auto [low, high] = ratio != ratio_spread_.end()
                                   ? ratio->second
                                   : std::pair{std::ranges::min(v), std::ranges::max(v)};
      std::printf("%s %s %.3f", key.starts_with("diag.") ? "DIAG" : "RESULT", key.c_str(),
                  median(v));
      if (v.size() > 1 || ratio != ratio_spread_.end()) std::printf(" %.3f %.3f", low, high);
      std::printf("\n");
    }
  }

 private:
  std::map<std::string, std::vector<double>> samples_;
  std::map<std::string, std::pair<double, double>> ratio_spread_;
};

// body(system, round) for every round and system, a different system first each round, so
// that background load and the order hit all alike.
inline void side_by_side(int rounds, int systems, const std::function<void(int, int)>& body) {
  for (int round = 0; round < rounds; ++round) {
    for (int i = 0; i < systems; ++i) {
      check_interrupted();
      body((round + i) % systems, round);
    }
  }
}

inline bool is_mounted(const std::string& path) { return launcher::top_mount_at(path).has_value(); }
inline std::vector<std::string> mounts_under(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& entry : launcher::read_mountinfo()) {
    if (entry.mount_point == dir || entry.mount_point.starts_with(dir + "/"))
      out.push_back(std::move(entry.mount_point));
  }
  return out;
}
// umount, else (busy) a lazy detach; never throws.
inline void unmount_quietly(const std::string& path) noexcept {
  try {
    if (is_mounted(path) && ::umount2(path.c_str(), 0) != 0) {
      std::fprintf(stderr, "bench: umount %s: %s; detaching lazily\n", path.c_str(),
                   std::strerror(errno));
      ::umount2(path.c_str(), MNT_DETACH);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench: unmount %s: %s\n", path.c_str(), e.what());
  }
}

// An empty directory to mount on; on destruction unmounted and rmdir()ed (never recursively).
class MountPoint {
 public:
  explicit MountPoint(std::string path) : path_(std::move(path)) {
    if (::mkdir(path_.c_str(), 0755) != 0) throw_errno("mkdir " + path_);
  }
  MountPoint(const MountPoint&) = delete;
  ~MountPoint() {
    unmount_quietly(path_);
    if (::rmdir(path_.c_str()) != 0)
      std::fprintf(stderr, "bench: rmdir %s: %s\n", path_.c_str(), std::strerror(errno));
  }
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// mkdtemp /tmp/PREFIXXXXXXX, mode 0755 (a root mount is served by uid 65534). Removed
// recursively on destruction unless something is still mounted below it: declare it first.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix) : path_("/tmp/" + prefix + "XXXXXX") {
    if (::mkdtemp(path_.data()) == nullptr) throw_errno("mkdtemp " + path_);
    if (::chmod(path_.c_str(), 0755) != 0) throw_errno("chmod " + path_);
  }
  ScratchDir(const ScratchDir&) = delete;
  ~ScratchDir() {
    try {
      for (const auto& point : mounts_under(path_)) unmount_quietly(point);
      std::error_code ec;
      if (mounts_under(path_).empty()) fs::remove_all(path_, ec);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench: cleanup of %s: %s\n", path_.c_str(), e.what());
    }
  }
  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Our mount on a new MountPoint: Supervisor::spawn, timed until MountReady. unmount() checks;
// the Supervisor's destructor unmounts quietly.
class LiveMount {
 public:
  LiveMount(ipc::Source source, const std::string& mountpoint)
      : mountpoint_(std::make_unique<MountPoint>(mountpoint)) {
    static const auto options = launcher::LauncherEnvironment::read().supervisor_options();
    ipc::MountSpec spec = ipc::MountSpec::directory({}, mountpoint);
    spec.source = std::move(source);
    spawn_seconds_ =
        seconds_of([&] { supervisor_ = launcher::Supervisor::spawn(std::move(spec), options); });
    if (!is_mounted(mountpoint))
      throw Error("spawn returned but " + mountpoint + " is unmounted", 0);
  }
  double unmount() {  // Stop; the seconds it took
    if (!supervisor_) return 0;
    const double seconds = seconds_of([&] { supervisor_->unmount(); });
    supervisor_.reset();
    if (is_mounted(mountpoint_->path()))
      throw Error(mountpoint_->path() + " is still mounted", EBUSY);
    return seconds;
  }
  launcher::Supervisor* operator->() const { return supervisor_.get(); }
  [[nodiscard]] double spawn_seconds() const { return spawn_seconds_; }
  std::uint64_t status_number(const char* key) {  // a number of StatusOk's extra fields
    return supervisor_->status().extra.at(key).get<std::uint64_t>();
  }

 private:
  std::unique_ptr<MountPoint> mountpoint_;  // destroyed last
  std::unique_ptr<launcher::Supervisor> supervisor_;
  double spawn_seconds_ = 0;
};

// printf into a string.
inline __attribute__((format(printf, 1, 2))) std::string format(const char* format, ...) {
  std::va_list args, again;
  va_start(args, format);
  va_copy(again, args);
  std::string out(static_cast<std::size_t>(std::vsnprintf(nullptr, 0, format, args)), '\0');
  std::vsnprintf(out.data(), out.size() + 1, format, again);
  va_end(again);
  va_end(args);
  return out;
}

inline void write_all(int fd, const char* data, std::size_t size, const std::string& what) {
  for (ssize_t n; size > 0; data += n, size -= static_cast<std::size_t>(n)) {
    while ((n = ::write(fd, data, size)) < 0 && errno == EINTR) check_interrupted();
    if (n < 0) throw_errno("write " + what);
  }
}
inline void write_file(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  if (!(out << content)) throw Error("write " + path, EIO);
}
inline std::string tail_of(const std::string& path) {  // of a log, for an error message
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.size() > 600 ? "..." + text.substr(text.size() - 600) : text;
}

// Child processes, found on PATH, through heddle::Process: `fds` bound as {ours, the child's},
// `fd3` as 3, stderr (and stdout unless bound) appended to `log`, else ours.
inline Process start(std::vector<std::string> argv, std::vector<std::pair<int, int>> fds,
                     const std::string& log, const std::vector<std::string>& env = {},
                     int fd3 = -1) {
  const std::string program =
      argv[0].find('/') == std::string::npos ? find_on_path(argv[0]) : argv[0];
  if (program.empty()) throw Error(argv[0] + " is not on PATH", ENOENT);
  argv[0] = program;
  const UniqueFd err(log.empty()
                         ? ::dup(STDERR_FILENO)
                         : ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!err) throw_errno("open " + log);
  fds.emplace_back(err.get(), 2);
  if (fd3 >= 0) fds.emplace_back(fd3, 3);
  if (std::ranges::none_of(fds, [](auto fd) { return fd.second == 1; }))
    fds.emplace_back(err.get(), 1);
  return Process(argv, {.output = ProcessOptions::Output::kInherit, .env = env, .fds = fds});
}

struct RunOptions {
  std::string input;             // its stdin
  std::string log;               // its stderr is appended there (else ours)
  std::vector<std::string> env;  // NAME=value added to ours
};
// Runs argv, 10 minutes at most; throws unless it exits 0. Its stdout. stdin and stdout are
// memfds: a daemon it leaves behind (a background supervisor) would hold a pipe open.
inline std::string run(const std::vector<std::string>& argv, const RunOptions& o = {}) {
  std::array<UniqueFd, 2> io{UniqueFd(::memfd_create("bench", MFD_CLOEXEC)),
                             UniqueFd(::memfd_create("bench", MFD_CLOEXEC))};
  if (!io[0] || !io[1]) throw_errno("memfd_create");
  write_all(io[0].get(), o.input.data(), o.input.size(), "memfd");
  ::lseek(io[0].get(), 0, SEEK_SET);
  const auto result = start(argv, {{io[0].get(), 0}, {io[1].get(), 1}}, o.log, o.env).finish(10min);
  std::string text;
  for (const auto& a : argv) text += (text.empty() ? "" : " ") + a;
  if (result.timed_out) throw Error("'" + text + "' timed out after 10 minutes", ETIMEDOUT);
  if (!result.ok()) {
    throw Error("'" + text + "' exited with " + std::to_string(result.exit_code) +
                    (o.log.empty() ? "" : "; its stderr ends: " + tail_of(o.log)),
                0);
  }
  std::ifstream out("/proc/self/fd/" + std::to_string(io[1].get()), std::ios::binary);
  return {std::istreambuf_iterator<char>(out), {}};
}

// The git CLI with a fixed identity and date and no user or system config (kGitEnv).
inline const std::vector<std::string> kGitEnv = {
    "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=heddle",
    "GIT_AUTHOR_EMAIL=heddle@example.invalid", "GIT_COMMITTER_NAME=heddle",
    "GIT_COMMITTER_EMAIL=heddle@example.invalid", "GIT_AUTHOR_DATE=2024-05-06T07:08:09Z",
    "GIT_COMMITTER_DATE=2024-05-06T07:08:09Z"};
inline void git(std::vector<std::string> args, const std::string& input = "") {
  args.insert(args.begin(), {"git", "-c", "gc.auto=0"});
  run(args, {.input = input, .env = kGitEnv});
}

// A daemon, its output appended to `log` (else ours), `fd` (if not negative) its fd 3; killed
// on destruction. A FUSE server mounting itself: mounted() waits for it, unmount() ends it.
class Daemon {
 public:
  Daemon(const std::vector<std::string>& argv, std::string log, int fd = -1)
      : process_(start(argv, {}, log, {}, fd)), log_(std::move(log)) {}
  [[nodiscard]] pid_t pid() const { return process_.pid(); }
  // Waits up to `timeout` for it to exit, then kills it; its exit code (-1 if killed).
  int wait(std::chrono::milliseconds timeout) { return process_.finish(timeout).exit_code; }
  void mounted(const std::string& mountpoint) {  // 10 s at most
    for (const auto t0 = Clock::now(); !is_mounted(mountpoint); std::this_thread::sleep_for(1ms)) {
      check_interrupted();
      if (seconds_since(t0) > 10)
        throw Error("no mount at " + mountpoint + " within 10 s: " + tail_of(log_), ETIMEDOUT);
    }
  }
  void unmount(const std::string& mountpoint) {  // then its session loop ends and it exits
    unmount_quietly(mountpoint);
    wait(3s);
    if (is_mounted(mountpoint)) throw Error(mountpoint + " is still mounted", EBUSY);
  }

 private:
  Process process_;
  std::string log_;
};

inline std::string own_bin_dir() {
  return fs::read_symlink("/proc/self/exe").parent_path().string();
}

// "3": page cache, dentries and inodes; "2": not pages.
inline void drop_caches(const char* what) {
  ::sync();
  std::ofstream out("/proc/sys/vm/drop_caches");
  if (!(out << what << "\n" << std::flush))
    throw Error(std::string("echo ") + what + " > /proc/sys/vm/drop_caches failed", EIO);
}

// Another job's drop_caches turns a warm pass partly cold: `half` (which drops them `own_drops`
// times) is measured again, up to 3 attempts, if a foreign drop happened.
struct Disturbance {
  int discarded = 0;  // attempts measured again
  int disturbed = 0;  // kept although still disturbed after 3 attempts
  void measure(int own_drops, const std::function<void()>& half) {
    const auto drops = [] {  // drop_caches writes seen in /proc/vmstat (ours: 2 each)
      std::ifstream in("/proc/vmstat");
      std::uint64_t total = 0, value = 0;
      for (std::string key; in >> key >> value;)
        total += key == "drop_pagecache" || key == "drop_slab" ? value : 0;
      return total;
    };
    for (int attempt = 1;; ++attempt) {
      check_interrupted();
      const std::uint64_t before = drops();
      half();
      if (drops() - before == 2ull * static_cast<std::uint64_t>(own_drops)) return;
      if (attempt == 3) return (void)++disturbed;
      ++discarded;
    }
  }
  void report(Figures& f, const std::string& prefix = "") const {
    f.set(prefix + "discarded_attempts", discarded);
    f.set(prefix + "disturbed_half_rounds", disturbed);
  }
};

inline void make_random_file(const std::string& path, std::uint64_t bytes) {  // incompressible
  const UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd) throw_errno("create " + path);
  std::mt19937_64 random(0x6865646c65);
  std::vector<std::uint64_t> chunk(kChunk / 8);
  for (std::uint64_t done = 0; done < bytes; done += kChunk) {
    check_interrupted();
    std::generate(chunk.begin(), chunk.end(), std::ref(random));
    write_all(fd.get(), reinterpret_cast<const char*>(chunk.data()),
              static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, bytes - done)), path);
  }
  if (::fsync(fd.get()) != 0) throw_errno("fsync " + path);
}

// Empty files dNNN/fNNNN (the walks read metadata only); the number of entries.
inline std::uint64_t make_tree(const std::string& root, int dirs, int files_per_dir) {
  for (int d = 0; d < dirs; ++d) {
    check_interrupted();
    fs::create_directories(format("%s/d%03d", root.c_str(), d));
    for (int f = 0; f < files_per_dir; ++f) {
      const std::string file = format("%s/d%03d/f%04d", root.c_str(), d, f);
      if (::mknod(file.c_str(), S_IFREG | 0644, 0) != 0) throw_errno("create " + file);
    }
  }
  ::sync();
  return static_cast<std::uint64_t>(dirs) * static_cast<std::uint64_t>(1 + files_per_dir);
}

// read() of the whole file with a 1 MiB buffer, on a new fd; MiB/s.
inline double sequential_read_mibs(const std::string& path, std::uint64_t expected) {
  static thread_local std::vector<char> buffer(kChunk, 1);  // no page faults inside the timing
  const auto t0 = Clock::now();
  const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  std::uint64_t total = 0;
  for (ssize_t n; (n = ::read(fd.get(), buffer.data(), buffer.size())) != 0;) {
    if (n < 0 && errno != EINTR) throw_errno("read " + path);
    n < 0 ? check_interrupted() : void(total += static_cast<std::uint64_t>(n));
  }
  const double seconds = seconds_since(t0);
  if (total != expected) throw Error("read " + std::to_string(total) + " bytes of " + path, EIO);
  return static_cast<double>(total) / kMiB / seconds;
}

// The first and last MiB of both files are equal (full content is the tests' job).
inline void check_same_ends(const std::string& a, const std::string& b, std::uint64_t size) {
  for (const std::uint64_t offset : {std::uint64_t{0}, size - std::min(size, kMiB)})
    run({"cmp", "-s", "-i", std::to_string(offset), "-n", std::to_string(kMiB), a, b});
}

// After drop_caches("3"), MiB/s of 3 reads, kPasses; the ends checked against `same_as`.
inline constexpr const char* kPasses[] = {"cold", "second", "warm"};
using ReadPasses = std::array<double, std::size(kPasses)>;
inline ReadPasses read_passes(const std::string& path, std::uint64_t size,
                              const std::string& same_as) {
  drop_caches("3");
  ReadPasses r;
  for (double& pass : r) pass = sequential_read_mibs(path, size);
  if (!same_as.empty()) check_same_ends(path, same_as, size);
  return r;
}

// find(1)-like: readdir, lstat of every entry's full path, recursion by d_type. Errors are
// counted: a walk that runs out of fds is a result.
struct WalkResult {
  std::uint64_t entries = 0, bytes = 0;  // lstat()ed successfully; st_size of regular files
  std::uint64_t errors = 0;              // failed opendir, readdir or lstat
  int first_errno = 0;
  double seconds = 0;
};
inline void walk_dir(const std::string& path, WalkResult& r) {
  const auto error = [&r] { r.first_errno = r.errors++ == 0 ? errno : r.first_errno; };
  const std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(path.c_str()), &::closedir);
  if (!dir) return error();
  for (errno = 0; const dirent* entry = ::readdir(dir.get()); errno = 0) {
    const std::string_view name = entry->d_name;
    if (name == "." || name == "..") continue;
    const std::string child = path + "/" + entry->d_name;
    struct stat st {};
    if (::lstat(child.c_str(), &st) != 0) {
      error();
      continue;
    }
    if (S_ISREG(st.st_mode)) r.bytes += static_cast<std::uint64_t>(st.st_size);
    if ((++r.entries & 4095) == 0 && g_interrupted != 0) return;
    if (entry->d_type == DT_DIR || (entry->d_type == DT_UNKNOWN && S_ISDIR(st.st_mode)))
      walk_dir(child, r);
  }
  if (errno != 0) error();
}
inline WalkResult walk(const std::string& root) {
  WalkResult r;
  r.seconds = seconds_of([&] { walk_dir(root, r); });
  check_interrupted();
  return r;
}
inline double walk_ms(const std::string& root, std::uint64_t expected) {  // must see all
  const WalkResult r = walk(root);
  if (r.errors != 0 || r.entries != expected) {
    throw Error("walked " + std::to_string(r.entries) + " of " + std::to_string(expected) +
                    " entries under " + root + " with " + std::to_string(r.errors) + " errors",
                r.first_errno);
  }
  return r.seconds * 1e3;
}
// After drop_caches("3"): a cold walk, then the median of `warm` warm ones; ms.
inline std::pair<double, double> walk_passes(const std::string& root, std::uint64_t expected,
                                             int warm = 1) {
  drop_caches("3");
  const double cold = walk_ms(root, expected);
  std::vector<double> warm_ms;
  while (std::ssize(warm_ms) < warm) warm_ms.push_back(walk_ms(root, expected));
  return {cold, median(warm_ms)};
}

// VmRSS, VmHWM (from /proc/PID/status) or Pss (smaps_rollup) of a process, in KiB.
inline double kib_of(pid_t pid, const std::string& key) {
  const std::string path =
      "/proc/" + std::to_string(pid) + (key == "Pss" ? "/smaps_rollup" : "/status");
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (line.starts_with(key + ":")) return std::stod(line.substr(key.size() + 1));
  throw Error("no " + key + " in " + path, EIO);
}
inline double mib_of(pid_t pid, const std::string& key) { return kib_of(pid, key) / 1024; }

// User + system time of all its threads, 0 for pid 0.
inline double cpu_seconds_of(pid_t pid) {
  if (pid <= 0) return 0;
  std::string text;
  std::getline(std::ifstream("/proc/" + std::to_string(pid) + "/stat"), text);
  unsigned long user = 0, system = 0;  // fields 14 and 15, counted after the command's ')'
  std::sscanf(text.c_str() + text.rfind(')') + 1,
              "%*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %lu %lu", &user, &system);
  return static_cast<double>(user + system) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace heddle::bench
