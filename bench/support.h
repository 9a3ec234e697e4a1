// What the bench suites share: interruption, statistics and the figures table, scratch
// directories and mount points, our mounts (the one user of the Supervisor API), child processes
// (heddle::Process), file readers and walks, drop_caches and /proc readers.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "heddle/error.h"
#include "heddle/launcher/supervisor.h"
#include "heddle/process.h"

namespace heddle::bench {

using Clock = std::chrono::steady_clock;
inline constexpr std::uint64_t kMiB = 1ull << 20;
inline constexpr std::size_t kChunk = 1 << 20;  // every sequential read() and write()

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The command line, shared by every suite.
struct Config {
  int rounds = 0;       // 0: the suite's default
  bool quick = false;   // a smoke test: small sizes, few rounds (the keys keep their names)
  bool on_tmp = false;  // write: /tmp's own file system instead of a fresh ext4
  [[nodiscard]] int rounds_or(int normal) const { return rounds > 0 ? rounds : quick ? 2 : normal; }
  template <typename T>
  [[nodiscard]] T pick(T normal, T small) const {
    return quick ? small : normal;
  }
};

// Signals only set a flag, so that loops throw and every RAII guard unwinds.
extern volatile std::sig_atomic_t g_interrupted;
void install_signal_handlers();
inline void check_interrupted() {
  if (g_interrupted != 0) throw Error("interrupted by a signal", EINTR);
}

// ---- statistics and the figures of a run

double median(std::vector<double> v);
double percentile(std::vector<double> v, double p);  // nearest rank

// Every figure of a run by its RESULT key: one sample per round (or one value). print() shows
// them as one table and as the RESULT lines `heddle_bench report` reads: "RESULT key value" for
// a single value, "RESULT key median min max" for rounds.
class Figures {
 public:
  void add(const std::string& key, double value) { samples_[key].push_back(value); }
  void set(const std::string& key, double value) { samples_[key] = {value}; }
  [[nodiscard]] const std::vector<double>& at(const std::string& key) const;
  [[nodiscard]] double median_of(const std::string& key) const { return median(at(key)); }
  // median(a) / median(b), spread of the rounds' own ratios (round i against round i).
  void ratio(const std::string& key, const std::string& a, const std::string& b);
  void print(const std::string& title) const;

 private:
  struct Spread {
    double low, high;
  };
  std::map<std::string, std::vector<double>> samples_;
  std::map<std::string, Spread> ratio_spread_;
};

// ---- scratch directories, mount points, mounts

bool is_mounted(const std::string& path);
std::vector<std::string> mounts_under(const std::string& dir);
// umount2, retried while busy, then lazily; never throws.
void unmount_quietly(const std::string& path);

// An empty directory to mount on; on destruction anything mounted on it is detached and it is
// rmdir()ed, never removed recursively.
class MountPoint {
 public:
  explicit MountPoint(std::string path);
  MountPoint(const MountPoint&) = delete;
  MountPoint& operator=(const MountPoint&) = delete;
  ~MountPoint();
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// mkdtemp /tmp/PREFIXXXXXXX, mode 0755 (a root mount is served by uid 65534). Removed
// recursively on destruction, unless something is still mounted below it. Declare it first.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix);
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir();
  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Our mount in this process: Supervisor::spawn of a directory (read-only) or of a git thread,
// timed until MountReady. Unmounts on destruction; unmount() reports failures.
class LiveMount {
 public:
  static LiveMount directory(const std::string& source, const std::string& mountpoint);
  static LiveMount thread(const std::string& repo, const std::string& mountpoint);  // "main"
  LiveMount(LiveMount&&) noexcept = default;
  ~LiveMount();
  // Stop, the worker exits, the mount is gone (checked); the seconds Supervisor::unmount took.
  double unmount();
  launcher::Supervisor* operator->() const { return supervisor_.get(); }
  [[nodiscard]] double spawn_seconds() const { return spawn_seconds_; }
  std::uint64_t status_number(const char* key);  // a number of StatusOk's extra fields

 private:
  explicit LiveMount(ipc::MountSpec spec);
  std::unique_ptr<launcher::Supervisor> supervisor_;
  std::string mountpoint_;
  double spawn_seconds_ = 0;
};

// ---- child processes (heddle::Process), each with a timeout. Their stdin and stdout are
// memfds and their stderr the log, never pipes: a daemon a command leaves behind (the
// launcher's background supervisor) would hold a pipe open.

struct RunOptions {
  std::string input;           // written to its stdin
  std::string* out = nullptr;  // receives its stdout (else discarded)
  std::string log;             // its stderr is appended there (else inherited)
  std::chrono::seconds timeout{600};
};
// Runs argv (PATH lookup) to completion; throws unless it exits 0.
void run(const std::vector<std::string>& argv, const RunOptions& options = {});
std::string output_of(const std::vector<std::string>& argv);

// A daemon that runs until stopped: stdout and stderr appended to `log` (else ours); `fd`, if
// not negative, becomes its fd 3. Killed and reaped on destruction.
class Daemon {
 public:
  Daemon(const std::vector<std::string>& argv, const std::string& log, int fd = -1);
  [[nodiscard]] pid_t pid() const { return process_.pid(); }
  // Waits up to `timeout` for it to exit, then kills it; its exit code (-1 if killed).
  int wait(std::chrono::milliseconds timeout) { return process_.finish(timeout).exit_code; }

 private:
  Process process_;
};

// A FUSE server that mounts itself (passthrough_ll, fuse-overlayfs), waited for until mounted
// (10 s at most). finish() unmounts it (its session loop ends and it exits) and checks.
class ServerMount {
 public:
  ServerMount(const std::vector<std::string>& argv, std::string mountpoint,
              const std::string& log);
  [[nodiscard]] pid_t pid() const { return daemon_.pid(); }
  void finish();

 private:
  Daemon daemon_;
  std::string mountpoint_;
};

bool on_path(const char* program);
std::string own_bin_dir();

// ---- caches, files, walks

void drop_caches(const char* what);  // "3": page cache, dentries and inodes; "2": not pages

// Other jobs may drop the caches too, which turns a warm pass partly cold: `half` (which
// drops them `own_drops` times) is measured again, up to 3 attempts, if a foreign drop happened.
struct Disturbance {
  int discarded = 0;  // attempts measured again
  int disturbed = 0;  // kept although still disturbed after 3 attempts
  void report(Figures& f) const;
};
void undisturbed(int own_drops, Disturbance& d, const std::function<void()>& half);

void write_all(int fd, const char* data, std::size_t size, const std::string& what);
void make_random_file(const std::string& path, std::uint64_t bytes);   // incompressible
void make_tree(const std::string& root, int dirs, int files_per_dir);  // empty dNNN/fNNNN
// read() of the whole file with a 1 MiB buffer, on a new fd; MiB/s.
double sequential_read_mibs(const std::string& path, std::uint64_t expected);
// After drop_caches("3"): the first read (cold), the second, the third (warm); MiB/s.
struct ReadPasses {
  double cold = 0, second = 0, warm = 0;
};
ReadPasses read_passes(const std::string& path, std::uint64_t expected);
// The first and last MiB of both files are equal (full content is the tests' job).
void check_same_ends(const std::string& a, const std::string& b, std::uint64_t size);

struct WalkResult {
  std::uint64_t entries = 0;  // lstat()ed successfully
  std::uint64_t bytes = 0;    // st_size of the regular files
  std::uint64_t errors = 0;   // failed opendir, readdir or lstat
  int first_errno = 0;
  double seconds = 0;
};
// find(1)-like: readdir, lstat of every entry's full path, recursion by d_type. Errors are
// counted: a walk that runs out of fds is a result.
WalkResult walk(const std::string& root);
double walk_ms(const std::string& root, std::uint64_t expected);  // must see every entry

// ---- /proc

struct Memory {
  std::uint64_t rss_kib = 0, hwm_kib = 0;
};
Memory memory_of(pid_t pid);
std::uint64_t pss_kib_of(pid_t pid);
std::vector<pid_t> descendants(pid_t pid);
double cpu_seconds_of(pid_t pid);  // user + system, 0 for pid 0

}  // namespace heddle::bench
