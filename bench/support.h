// What the suites share: the command line, statistics and the figures table, the side-by-side
// loop, scratch directories and mounts (ours through the Supervisor API), child processes
// (heddle::Process, each with a timeout), reads, walks, drop_caches and /proc readers.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "heddle/error.h"
#include "heddle/launcher/supervisor.h"
#include "heddle/process.h"
#include "heddle/unique_fd.h"

namespace heddle::bench {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
inline constexpr std::uint64_t kMiB = 1ull << 20;
inline constexpr std::size_t kChunk = 1 << 20;  // every sequential read() and write()

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
inline double ms_since(Clock::time_point t0) { return seconds_since(t0) * 1e3; }

struct Config {
  int rounds = 0;       // 0: the suite's default
  bool quick = false;   // a smoke test: small sizes, few rounds (the keys keep their names)
  bool on_tmp = false;  // write: /tmp's own file system instead of a fresh ext4
  [[nodiscard]] int rounds_or(int normal) const { return rounds > 0 ? rounds : quick ? 2 : normal; }
  [[nodiscard]] int pick(int normal, int small) const { return quick ? small : normal; }
};

// Signals only set a flag (main.cc), so that loops throw and every RAII guard unwinds.
extern volatile std::sig_atomic_t g_interrupted;
inline void check_interrupted() {
  if (g_interrupted != 0) throw Error("interrupted by a signal", EINTR);
}

double median(std::vector<double> v);
double percentile(std::vector<double> v, double p);  // nearest rank

// Every figure of a run by its key: one sample per round (or one value). print() writes the
// lines bench/report reads: "RESULT key value" for one value, "RESULT key median min max" for
// rounds or a ratio of rounds; keys under diag. (diagnostics) as DIAG lines, which it skips.
class Figures {
 public:
  void add(const std::string& key, double value) { samples_[key].push_back(value); }
  void set(const std::string& key, double value) { samples_[key] = {value}; }
  [[nodiscard]] double median_of(const std::string& key) const { return median(samples_.at(key)); }
  // median(a) / median(b), spread of the rounds' own ratios (round i against round i).
  void ratio(const std::string& key, const std::string& a, const std::string& b);
  void print() const;

 private:
  std::map<std::string, std::vector<double>> samples_;
  std::map<std::string, std::pair<double, double>> ratio_spread_;
};

// The systems compared, side by side: body(system, round) for every round and system, a
// different system first each round, so that background load and the order hit all alike.
void side_by_side(int rounds, int systems, const std::function<void(int, int)>& body);

bool is_mounted(const std::string& path);
std::vector<std::string> mounts_under(const std::string& dir);
void unmount_quietly(const std::string& path);  // retried while busy, then lazily; never throws

// An empty directory to mount on; on destruction whatever is mounted on it is detached and it
// is rmdir()ed, never removed recursively.
class MountPoint {
 public:
  explicit MountPoint(std::string path) : path_(std::move(path)) {
    if (::mkdir(path_.c_str(), 0755) != 0) throw_errno("mkdir " + path_);
  }
  MountPoint(const MountPoint&) = delete;
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
  ~ScratchDir();
  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Our mount in this process, on a new MountPoint: Supervisor::spawn of a directory (read-only)
// or of a git thread ("main"), timed until MountReady. unmount() checks; the Supervisor's
// destructor unmounts too, quietly.
class LiveMount {
 public:
  LiveMount(ipc::Source source, const std::string& mountpoint);
  double unmount();  // Stop; the seconds it took
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

// Child processes, found on PATH. stdin and stdout are memfds, never pipes: a daemon a command
// leaves behind (the launcher's background supervisor) would hold a pipe open.
struct RunOptions {
  std::string input;             // written to its stdin
  std::string log;               // its stderr is appended there (else ours)
  std::vector<std::string> env;  // NAME=value added to ours
};
// Runs argv to completion, 10 minutes at most; throws unless it exits 0. Its stdout.
std::string run(const std::vector<std::string>& argv, const RunOptions& options = {});
// The git CLI with a fixed identity and date and no user or system config (kGitEnv).
extern const std::vector<std::string> kGitEnv;
void git(std::vector<std::string> args, const std::string& input = "");

// A daemon: stdout and stderr appended to `log` (else ours); `fd`, if not negative, becomes its
// fd 3. Killed and reaped on destruction. A FUSE server that mounts itself (passthrough_ll,
// fuse-overlayfs) is waited for with mounted() and ended with unmount().
class Daemon {
 public:
  Daemon(const std::vector<std::string>& argv, std::string log, int fd = -1);
  [[nodiscard]] pid_t pid() const { return process_.pid(); }
  // Waits up to `timeout` for it to exit, then kills it; its exit code (-1 if killed).
  int wait(std::chrono::milliseconds timeout) { return process_.finish(timeout).exit_code; }
  void mounted(const std::string& mountpoint);   // 10 s at most; throws if it exits first
  void unmount(const std::string& mountpoint) {  // then its session loop ends and it exits
    unmount_quietly(mountpoint);
    wait(3s);
    if (is_mounted(mountpoint)) throw Error(mountpoint + " is still mounted", EBUSY);
  }

 private:
  Process process_;
  std::string log_;
};

std::string own_bin_dir();

void drop_caches(const char* what);  // "3": page cache, dentries and inodes; "2": not pages

// Other jobs may drop the caches too, which turns a warm pass partly cold: `half` (which
// drops them `own_drops` times) is measured again, up to 3 attempts, if a foreign drop happened.
struct Disturbance {
  int discarded = 0;  // attempts measured again
  int disturbed = 0;  // kept although still disturbed after 3 attempts
  void measure(int own_drops, const std::function<void()>& half);
  void report(Figures& f) const {
    f.set("discarded_attempts", discarded);
    f.set("disturbed_half_rounds", disturbed);
  }
};

void write_all(int fd, const char* data, std::size_t size, const std::string& what);
void make_random_file(const std::string& path, std::uint64_t bytes);   // incompressible
void make_tree(const std::string& root, int dirs, int files_per_dir);  // empty dNNN/fNNNN
// read() of the whole file with a 1 MiB buffer, on a new fd; MiB/s.
double sequential_read_mibs(const std::string& path, std::uint64_t expected);
// The first and last MiB of both files are equal (full content is the tests' job).
void check_same_ends(const std::string& a, const std::string& b, std::uint64_t size);
// After drop_caches("3"): the first read (cold), the second, the third (warm), in MiB/s; then
// the ends compared with `same_as`, if not empty.
struct ReadPasses {
  double cold = 0, second = 0, warm = 0;
};
ReadPasses read_passes(const std::string& path, std::uint64_t size, const std::string& same_as);

struct WalkResult {
  std::uint64_t entries = 0, bytes = 0;  // lstat()ed successfully; st_size of regular files
  std::uint64_t errors = 0;              // failed opendir, readdir or lstat
  int first_errno = 0;
  double seconds = 0;
};
// find(1)-like: readdir, lstat of every entry's full path, recursion by d_type. Errors are
// counted: a walk that runs out of fds is a result.
WalkResult walk(const std::string& root);
double walk_ms(const std::string& root, std::uint64_t expected);  // must see every entry
// After drop_caches("3"): a cold walk, then the median of `warm` warm ones; ms.
std::pair<double, double> walk_passes(const std::string& root, std::uint64_t expected,
                                      int warm = 1);

// VmRSS, VmHWM (from /proc/PID/status) or Pss (smaps_rollup) of a process, in KiB.
double kib_of(pid_t pid, const std::string& key);
double cpu_seconds_of(pid_t pid);  // user + system of all its threads, 0 for pid 0

}  // namespace heddle::bench
