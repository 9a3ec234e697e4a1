// heddle_git_bench: the git backend (a heddle thread mounted through the sandboxed worker) side
// by side with the native file system holding `git archive REF | tar -x` of the same tree:
// sequential read of a 1 GiB streamed blob (cold and warm), a metadata walk of a 50,000-file
// tree (cold and warm), spawn -> MountReady on a 100,000-file repository against a 10-file
// one, and the worker's memory after walking 100,000 files (and after the kernel forgets them).
// See bench/README.md for what is measured and why.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "heddle/error.h"
#include "bench_support.h"
#include "heddle/launcher/supervisor.h"
#include "heddle/unique_fd.h"

namespace {

namespace fs = std::filesystem;
using heddle::Error;
using heddle::UniqueFd;
using heddle::throw_errno;
using namespace heddle::bench;  // arguments, interruption, mounts, processes, statistics
using heddle::ipc::GitSource;
using heddle::ipc::MountSpec;
using heddle::launcher::Supervisor;

constexpr std::size_t kReadBuffer = 1 << 20;  // the read() size of both sequential readers
constexpr const char* kThread = "main";

// ---------------------------------------------------------------------------------------------
// Configuration

struct Config {
  std::uint64_t blob_mib = 1024;  // above the worker's default 256 MiB cache cap: it streams
  int walk_dirs = 50;             // the metadata walk: walk_dirs x files_per_dir files
  int big_dirs = 100;             // the "big" repository: big_dirs x files_per_dir files
  int files_per_dir = 1000;
  int small_files = 10;  // the "small" repository, for spawn -> MountReady
  int read_rounds = 5;   // each: fresh mount, cold + warm read; cold + warm native read
  int walk_rounds = 5;   // each: fresh mount, cold + warm walk; cold + warm native walk
  int spawn_warmup = 1;  // per repository
  int spawn_rounds = 10;  // per repository, alternating big and small
};

Config parse_args(int argc, char** argv) {
  Config config;
  parse_flags(
      argc, argv,
      "usage: heddle_git_bench [--read-rounds N] [--walk-rounds N] [--spawn-rounds N]\n"
      "                        [--blob-mib N]\n"
      "  --read-rounds N   fresh mounts for the cold + warm 1 GiB read (default 5)\n"
      "  --walk-rounds N   fresh mounts for the cold + warm 50,000-file walk (default 5)\n"
      "  --spawn-rounds N  timed spawns per repository, 100,000 vs 10 files (default 10)\n"
      "  --blob-mib N      size of the streamed blob in MiB (default 1024; must exceed the\n"
      "                    worker's 256 MiB cache cap to stream)\n"
      "Must run as root (FUSE mounts, drop_caches). Set HEDDLE_FUSE_WORKER_BIN to use\n"
      "another worker binary.\n",
      {{"--read-rounds", [&](int v) { config.read_rounds = v; }},
       {"--walk-rounds", [&](int v) { config.walk_rounds = v; }},
       {"--spawn-rounds", [&](int v) { config.spawn_rounds = v; }},
       {"--blob-mib", [&](int v) { config.blob_mib = static_cast<std::uint64_t>(v); }}});
  return config;
}

// A thread of `repo` mounted on `mountpoint` with the default cache cap.
LiveMount mount_thread(const std::string& repo, const MountPoint& mountpoint) {
  return LiveMount(MountSpec::thread(GitSource{repo, kThread}, mountpoint.path()));
}

// ---------------------------------------------------------------------------------------------
// Child processes (git, tar, head), with a fixed git identity and no user or system config.

const std::vector<std::string> kGitEnv = {
    "GIT_CONFIG_GLOBAL=/dev/null",
    "GIT_CONFIG_NOSYSTEM=1",
    "GIT_AUTHOR_NAME=heddle",
    "GIT_AUTHOR_EMAIL=heddle@example.invalid",
    "GIT_COMMITTER_NAME=heddle",
    "GIT_COMMITTER_EMAIL=heddle@example.invalid",
    "GIT_AUTHOR_DATE=2024-05-06T07:08:09Z",
    "GIT_COMMITTER_DATE=2024-05-06T07:08:09Z",
};

// Runs argv to completion with kGitEnv; `feed`, if set, writes the child's stdin.
void run_tool(const std::vector<std::string>& argv, const std::function<void(int)>& feed = {}) {
  heddle::bench::run_command(argv, CommandOptions{kGitEnv, feed, nullptr});
}

void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) {
        check_interrupted();
        continue;
      }
      throw_errno("write to git fast-import");
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

// A bare repository whose `main` holds dirs x files small files (d000/f0000 ...), each with its
// own content, built with one `git fast-import` stream.
void make_many_file_repo(const std::string& repo, int dirs, int files_per_dir) {
  run_tool({"git", "init", "-q", "--bare", "-b", kThread, repo});
  run_tool({"git", "-C", repo, "-c", "gc.auto=0", "fast-import", "--quiet"}, [&](int fd) {
    std::string out;
    out.reserve(2 * kMiB);
    const std::string message = "many files\n";
    out += "commit refs/heads/main\n";
    out += "author heddle <heddle@example.invalid> 1714979289 +0000\n";
    out += "committer heddle <heddle@example.invalid> 1714979289 +0000\n";
    out += "data " + std::to_string(message.size()) + "\n" + message;
    char path[64];
    for (int d = 0; d < dirs; ++d) {
      for (int f = 0; f < files_per_dir; ++f) {
        if (dirs == 1) {
          std::snprintf(path, sizeof path, "f%04d", f);
        } else {
          std::snprintf(path, sizeof path, "d%03d/f%04d", d, f);
        }
        const std::string content = std::string("file ") + path + "\n";
        out += "M 100644 inline ";
        out += path;
        out += "\ndata " + std::to_string(content.size()) + "\n" + content + "\n";
        if (out.size() >= kMiB) {
          check_interrupted();
          write_all(fd, out);
          out.clear();
        }
      }
    }
    out += "done\n";
    write_all(fd, out);
  });
}

// A repository whose `main` holds one random blob of `mib` MiB, `big.bin`, added with
// `git add` (compression level 1: the data is incompressible anyway). The work tree copy is
// deleted after the commit: the mount and the extraction are what is compared.
void make_blob_repo(const std::string& repo, std::uint64_t mib) {
  run_tool({"git", "init", "-q", "-b", kThread, repo});
  const std::string file = repo + "/big.bin";
  run_tool({"/bin/sh", "-c", "head -c \"$0\" /dev/urandom > \"$1\"", std::to_string(mib << 20),
               file});
  run_tool({"git", "-C", repo, "-c", "gc.auto=0", "-c", "core.compression=1", "add", "big.bin"});
  run_tool({"git", "-C", repo, "-c", "gc.auto=0", "commit", "-q", "-m", "a big blob"});
  if (::unlink(file.c_str()) != 0) throw_errno("unlink " + file);
}

// `git archive main | tar -x` into a new directory `out` (tar.umask=022, as git means it).
void extract(const std::string& repo, const std::string& out) {
  if (::mkdir(out.c_str(), 0755) != 0) throw_errno("mkdir " + out);
  run_tool({"/bin/bash", "-c",
               "set -o pipefail; git -c tar.umask=0022 -C \"$0\" archive --format=tar \"$1\" | "
               "tar -x -C \"$2\"",
               repo, kThread, out});
}

// ---------------------------------------------------------------------------------------------
// What is measured

struct WalkResult {
  std::uint64_t entries = 0;
  double seconds = 0;
  [[nodiscard]] double per_second() const { return static_cast<double>(entries) / seconds; }
};

// recursive_directory_iterator (which recurses by d_type, without stat) + lstat of every entry.
WalkResult walk(const std::string& root, std::uint64_t expected) {
  WalkResult result;
  const auto t0 = Clock::now();
  for (auto it = fs::recursive_directory_iterator(root); it != fs::end(it); ++it) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) throw_errno("lstat " + it->path().string());
    if ((++result.entries & 4095) == 0) check_interrupted();
  }
  result.seconds = seconds_between(t0, Clock::now());
  if (result.entries != expected) {
    throw Error("walked " + std::to_string(result.entries) + " entries under " + root +
                    ", expected " + std::to_string(expected),
                EIO);
  }
  return result;
}

// How much of a file is not in the page cache (or not up to date), in MiB: mmap + mincore.
// The mapping is never touched, so this reads nothing; on the mount it costs one open.
double missing_from_page_cache_mib(const std::string& path, std::uint64_t size) {
  const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd.get(), 0);
  if (map == MAP_FAILED) throw_errno("mmap " + path);
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident((size + page - 1) / page);
  const int rc = ::mincore(map, size, resident.data());
  const int saved = errno;
  ::munmap(map, size);
  if (rc != 0) throw Error("mincore " + path, saved);
  const auto missing = std::count_if(resident.begin(), resident.end(),
                                     [](unsigned char r) { return (r & 1) == 0; });
  return static_cast<double>(missing) * static_cast<double>(page) / kMiB;
}

std::uint64_t status_number(LiveMount& mount, const char* key) {
  const auto status = mount->status();
  if (!status.extra.contains(key)) throw Error(std::string("Status has no '") + key + "'", EPROTO);
  return status.extra.at(key).get<std::uint64_t>();
}

// Other jobs on a shared machine may drop the caches too (tests do `echo 2 >
// /proc/sys/vm/drop_caches`), which turns a "warm" pass into a partly cold one. /proc/vmstat
// counts every drop_caches write; a half-round (cold + warm pass) that saw one it did not make
// is measured again, up to kAttempts times, and the number of discarded attempts is reported.
constexpr int kAttempts = 3;

// Runs `half` (which drops the caches once, first, then measures) until no foreign drop
// happened during it, at most kAttempts times. Returns false if the last attempt was disturbed.
bool undisturbed(const std::function<void()>& half, int& discarded) {
  for (int attempt = 1;; ++attempt) {
    check_interrupted();
    const std::uint64_t before = drops_so_far();
    half();
    // Our own drop_caches("3") counts twice (page cache + slab).
    if (drops_so_far() - before == 2) return true;
    if (attempt == kAttempts) return false;
    ++discarded;
  }
}

// --- 1. sequential read of the streamed blob

struct ReadResults {
  std::vector<double> ours_cold, ours_warm, native_cold, native_warm;  // MiB/s per round
  std::uint64_t streamed_opens = 0;  // after the last round's two opens
  std::vector<double> worker_read_cold_mib, worker_read_warm_mib;  // the worker's rchar deltas
  std::vector<double> ours_missing_mib, native_missing_mib;  // not cached after the cold read
  // CPU seconds during the cold read through the mount: the worker's and the reader's.
  std::vector<double> worker_user_s, worker_sys_s, reader_user_s, reader_sys_s;
  double worker_hwm_mib = 0;  // the largest VmHWM of the rounds' workers
  double worker_rss_mib = 0;
  int discarded = 0;  // attempts disturbed by a foreign drop_caches
  int disturbed = 0;  // kept half-rounds still disturbed after kAttempts
};

ReadResults run_read_bench(const Config& config, const ScratchDir& root, const std::string& repo,
                           const std::string& native_file) {
  ReadResults r;
  const std::uint64_t size = config.blob_mib << 20;
  std::vector<char> buffer(kReadBuffer, 1);  // touched: no page faults inside the timing
  for (int round = 0; round < config.read_rounds; ++round) {
    double cold = 0, warm = 0, worker_cold = 0, worker_warm = 0, missing = 0;
    double worker_user = 0, worker_sys = 0, reader_user = 0, reader_sys = 0;
    const bool ours_ok = undisturbed(
        [&] {
          MountPoint mountpoint(root / "mnt-read");
          LiveMount mount = mount_thread(repo, mountpoint);
          const std::string file = mountpoint.path() + "/big.bin";
          const pid_t pid = mount->pid();
          drop_caches("3");
          const std::uint64_t rchar0 = rchar_of(pid);
          const auto worker0 = cpu_of(pid);
          const auto reader0 = own_cpu();
          cold = sequential_read_mibs(file, size, buffer);  // the first read after mounting
          const auto reader1 = own_cpu();
          const auto worker1 = cpu_of(pid);
          const std::uint64_t rchar1 = rchar_of(pid);
          worker_user = worker1.first - worker0.first;
          worker_sys = worker1.second - worker0.second;
          reader_user = reader1.first - reader0.first;
          reader_sys = reader1.second - reader0.second;
          missing = missing_from_page_cache_mib(file, size);
          warm = sequential_read_mibs(file, size, buffer);  // the page cache (keep_cache)
          const std::uint64_t rchar2 = rchar_of(pid);
          worker_cold = static_cast<double>(rchar1 - rchar0) / kMiB;
          worker_warm = static_cast<double>(rchar2 - rchar1) / kMiB;
          r.streamed_opens = status_number(mount, "streamed_opens");
          if (r.streamed_opens < 1) {
            throw Error("Status streamed_opens is 0: the blob did not stream (cache cap?)",
                        EPROTO);
          }
          const Memory m = memory_of(pid);
          r.worker_hwm_mib = std::max(r.worker_hwm_mib, m.hwm_mib());
          r.worker_rss_mib = std::max(r.worker_rss_mib, m.rss_mib());
          if (round == 0) check_same_ends(file, native_file, size);
          mount.unmount();
        },
        r.discarded);
    r.ours_cold.push_back(cold);
    r.ours_warm.push_back(warm);
    r.worker_read_cold_mib.push_back(worker_cold);
    r.worker_read_warm_mib.push_back(worker_warm);
    r.ours_missing_mib.push_back(missing);
    r.worker_user_s.push_back(worker_user);
    r.worker_sys_s.push_back(worker_sys);
    r.reader_user_s.push_back(reader_user);
    r.reader_sys_s.push_back(reader_sys);
    const bool native_ok = undisturbed(
        [&] {
          drop_caches("3");
          cold = sequential_read_mibs(native_file, size, buffer);
          missing = missing_from_page_cache_mib(native_file, size);
          warm = sequential_read_mibs(native_file, size, buffer);
        },
        r.discarded);
    r.native_cold.push_back(cold);
    r.native_warm.push_back(warm);
    r.native_missing_mib.push_back(missing);
    r.disturbed += static_cast<int>(!ours_ok) + static_cast<int>(!native_ok);
  }
  if (r.worker_hwm_mib * kMiB >= static_cast<double>(size) / 2) {
    throw Error("the worker's VmHWM reached " + std::to_string(r.worker_hwm_mib) +
                    " MiB reading a " + std::to_string(config.blob_mib) + " MiB blob",
                ENOMEM);
  }
  return r;
}

// --- 2. metadata walk

struct WalkResults {
  std::uint64_t entries = 0;
  std::vector<double> ours_cold, ours_warm, native_cold, native_warm;  // entries/s per round
  int discarded = 0;
  int disturbed = 0;
};

WalkResults run_walk_bench(const Config& config, const ScratchDir& root, const std::string& repo,
                           const std::string& native_dir) {
  WalkResults r;
  r.entries = static_cast<std::uint64_t>(config.walk_dirs) *
              (1 + static_cast<std::uint64_t>(config.files_per_dir));
  for (int round = 0; round < config.walk_rounds; ++round) {
    double cold = 0, warm = 0;
    const bool ours_ok = undisturbed(
        [&] {
          MountPoint mountpoint(root / "mnt-walk");
          LiveMount mount = mount_thread(repo, mountpoint);
          drop_caches("3");
          cold = walk(mountpoint.path(), r.entries).per_second();
          warm = walk(mountpoint.path(), r.entries).per_second();
          mount.unmount();
        },
        r.discarded);
    r.ours_cold.push_back(cold);
    r.ours_warm.push_back(warm);
    const bool native_ok = undisturbed(
        [&] {
          drop_caches("3");
          cold = walk(native_dir, r.entries).per_second();
          warm = walk(native_dir, r.entries).per_second();
        },
        r.discarded);
    r.native_cold.push_back(cold);
    r.native_warm.push_back(warm);
    r.disturbed += static_cast<int>(!ours_ok) + static_cast<int>(!native_ok);
  }
  return r;
}

// --- 3. spawn -> MountReady, 100,000 files vs 10 files

struct SpawnResults {
  std::vector<double> big_ms, small_ms;
};

SpawnResults run_spawn_bench(const Config& config, const ScratchDir& root,
                             const std::string& big_repo, const std::string& small_repo) {
  SpawnResults r;
  for (int i = 0; i < config.spawn_warmup + config.spawn_rounds; ++i) {
    // Alternating, so that background load hits both alike.
    for (const bool big : {true, false}) {
      check_interrupted();
      MountPoint mountpoint(root / "mnt-spawn");
      LiveMount mount = mount_thread(big ? big_repo : small_repo, mountpoint);
      const double ms = mount.spawn_seconds() * 1e3;
      mount.unmount();
      if (i >= config.spawn_warmup) (big ? r.big_ms : r.small_ms).push_back(ms);
    }
  }
  return r;
}

// --- 4. worker memory after walking 100,000 files, and after the kernel forgets them

struct MemoryResults {
  std::uint64_t entries = 0;
  double walk_seconds = 0;
  Memory at_mount, after_walk, after_forget;
  std::uint64_t nodes_at_mount = 0, nodes_after_walk = 0, nodes_after_forget = 0;
  double forget_seconds = 0;  // drop_caches until the node count settled
  bool disturbed = false;     // a foreign drop_caches happened during the walk
};

MemoryResults run_memory_bench(const Config& config, const ScratchDir& root,
                               const std::string& big_repo) {
  MemoryResults r;
  r.entries = static_cast<std::uint64_t>(config.big_dirs) *
              (1 + static_cast<std::uint64_t>(config.files_per_dir));
  MountPoint mountpoint(root / "mnt-memory");
  LiveMount mount = mount_thread(big_repo, mountpoint);
  const pid_t pid = mount->pid();
  r.at_mount = memory_of(pid);
  r.nodes_at_mount = status_number(mount, "nodes");
  const std::uint64_t drops = drops_so_far();
  r.walk_seconds = walk(mountpoint.path(), r.entries).seconds;
  r.after_walk = memory_of(pid);
  r.nodes_after_walk = status_number(mount, "nodes");
  r.disturbed = drops_so_far() != drops;
  const auto t0 = Clock::now();
  drop_caches("2");
  // Forgets arrive asynchronously: wait until the count stops falling (at most 10 s).
  std::uint64_t last = r.nodes_after_walk;
  int stable = 0;
  while (seconds_between(t0, Clock::now()) < 10 && stable < 5) {
    check_interrupted();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const std::uint64_t now = status_number(mount, "nodes");
    stable = now == last ? stable + 1 : 0;
    last = now;
  }
  r.forget_seconds = seconds_between(t0, Clock::now());
  r.nodes_after_forget = last;
  r.after_forget = memory_of(pid);
  mount.unmount();
  return r;
}

// ---------------------------------------------------------------------------------------------
// Report

void row(const char* metric, double ours, double native, int decimals = 1) {
  char o[32], n[32], q[32];
  std::snprintf(o, sizeof o, "%.*f", decimals, ours);
  std::snprintf(n, sizeof n, "%.*f", decimals, native);
  std::snprintf(q, sizeof q, "%.2fx", ours / native);
  std::printf("| %-52s | %10s | %10s | %7s |\n", metric, o, n, q);
}

void row_ours(const char* metric, double ours, int decimals = 1) {
  char o[32];
  std::snprintf(o, sizeof o, "%.*f", decimals, ours);
  std::printf("| %-52s | %10s | %10s | %7s |\n", metric, o, "-", "-");
}

void report(const Config& config, double build_seconds, const ReadResults& rd,
            const WalkResults& wk, const SpawnResults& sp, const MemoryResults& mem) {
  const double read_cold = median(rd.ours_cold), read_cold_native = median(rd.native_cold);
  const double read_warm = median(rd.ours_warm), read_warm_native = median(rd.native_warm);
  const double walk_cold = median(wk.ours_cold), walk_cold_native = median(wk.native_cold);
  const double walk_warm = median(wk.ours_warm), walk_warm_native = median(wk.native_warm);
  const double spawn_big = percentile(sp.big_ms, 50), spawn_small = percentile(sp.small_ms, 50);

  std::printf("\n## heddle_git_bench\n\n");
  std::printf("- nproc: %ld, affinity: CPU %s (the worker inherits it)\n",
              ::sysconf(_SC_NPROCESSORS_ONLN), allowed_cpus().c_str());
  std::printf("- kernel: %s\n", kernel_release().c_str());
  std::printf("- repositories built in %.1f s: a %llu MiB random blob (git add, packed, "
              "zlib level 1); %d x %d files and %d x %d files (git fast-import); %d files\n",
              build_seconds, static_cast<unsigned long long>(config.blob_mib), config.walk_dirs,
              config.files_per_dir, config.big_dirs, config.files_per_dir, config.small_files);
  std::printf("- native: `git archive main | tar -x` of the same tree on the file system of /tmp\n");
  std::printf("- read: %d rounds (fresh mount each), read() with a %zu KiB buffer; cold = after "
              "drop_caches 3 (first read after mounting), warm = the second read; medians\n",
              config.read_rounds, kReadBuffer >> 10);
  std::printf("- walk: %d rounds (fresh mount each), recursive_directory_iterator + lstat of "
              "%llu entries; cold = after drop_caches 3, warm = the second walk; medians\n",
              config.walk_rounds, static_cast<unsigned long long>(wk.entries));
  std::printf("- spawn: %d warm-up + %d timed spawns per repository, alternating; p50\n\n",
              config.spawn_warmup, config.spawn_rounds);

  std::printf("| %-52s | %10s | %10s | %7s |\n", "metric", "ours", "native", "ratio");
  std::printf("|%s|%s|%s|%s|\n", std::string(54, '-').c_str(),
              std::string(11, '-').append(":").c_str(), std::string(11, '-').append(":").c_str(),
              std::string(8, '-').append(":").c_str());
  const std::string blob = config.blob_mib % 1024 == 0
                               ? std::to_string(config.blob_mib / 1024) + " GiB"
                               : std::to_string(config.blob_mib) + " MiB";
  row((blob + " sequential read, cold (MiB/s)").c_str(), read_cold, read_cold_native);
  row((blob + " sequential read, warm (MiB/s)").c_str(), read_warm, read_warm_native);
  row("walk + lstat 50k entries, cold (entries/s)", walk_cold, walk_cold_native, 0);
  row("walk + lstat 50k entries, warm (entries/s)", walk_warm, walk_warm_native, 0);
  row("spawn -> MountReady p50 (ms): 100k files | 10 files", spawn_big, spawn_small, 2);
  row_ours(("worker VmHWM after the " + blob + " reads (MiB)").c_str(), rd.worker_hwm_mib);
  row_ours("worker VmRSS at mount, 100k repo (MiB)", mem.at_mount.rss_mib());
  row_ours("worker VmRSS after lstat of 100k files (MiB)", mem.after_walk.rss_mib());
  row_ours("worker VmHWM after lstat of 100k files (MiB)", mem.after_walk.hwm_mib());
  row_ours("worker VmRSS after drop_caches 2 (MiB)", mem.after_forget.rss_mib());
  row_ours("Status nodes after the walk", static_cast<double>(mem.nodes_after_walk), 0);
  row_ours("Status nodes after drop_caches 2", static_cast<double>(mem.nodes_after_forget), 0);

  std::printf("\nRatio = ours / native (for MiB/s and entries/s, below 1 is slower than native; "
              "for spawn, 100k-file repo / 10-file repo).\n");
  std::printf("Per round (MiB/s): ours cold %s; warm %s; native cold %s; warm %s\n",
              join(rd.ours_cold, 0).c_str(), join(rd.ours_warm, 0).c_str(),
              join(rd.native_cold, 0).c_str(), join(rd.native_warm, 0).c_str());
  std::printf("Per round (entries/s): ours cold %s; warm %s; native cold %s; warm %s\n",
              join(wk.ours_cold, 0).c_str(), join(wk.ours_warm, 0).c_str(),
              join(wk.native_cold, 0).c_str(), join(wk.native_warm, 0).c_str());
  std::printf("Foreign drop_caches (other jobs, seen in /proc/vmstat): %d read and %d walk "
              "attempts discarded and measured again; %d read and %d walk half-rounds kept "
              "although still disturbed after %d attempts\n",
              rd.discarded, wk.discarded, rd.disturbed, wk.disturbed, kAttempts);
  std::printf("Spawn (ms): 100k files p50 %.2f max %.2f; 10 files p50 %.2f max %.2f\n", spawn_big,
              percentile(sp.big_ms, 100), spawn_small, percentile(sp.small_ms, 100));
  std::printf("Streamed blob: Status streamed_opens %llu; worker VmRSS %.1f MiB, VmHWM %.1f MiB "
              "after the reads; the worker read (rchar, MiB) %s during the cold reads, %s during "
              "the warm ones\n",
              static_cast<unsigned long long>(rd.streamed_opens), rd.worker_rss_mib,
              rd.worker_hwm_mib, join(rd.worker_read_cold_mib, 1).c_str(),
              join(rd.worker_read_warm_mib, 1).c_str());
  std::printf("Page cache after the cold read (mincore), MiB not cached or not up to date: ours "
              "%s; native %s\n",
              join(rd.ours_missing_mib, 1).c_str(), join(rd.native_missing_mib, 1).c_str());
  std::printf("CPU during the cold read through the mount (s, medians): worker user %.2f, "
              "system %.2f; reader user %.2f, system %.2f; wall %.2f\n",
              median(rd.worker_user_s), median(rd.worker_sys_s), median(rd.reader_user_s),
              median(rd.reader_sys_s), static_cast<double>(config.blob_mib) / read_cold);
  std::printf("100k walk: %llu entries in %.2f s (%.0f entries/s, fresh mount, page cache as "
              "built); nodes %llu at mount -> %llu after the walk -> %llu %.1f s after "
              "drop_caches 2; VmRSS %.1f -> %.1f -> %.1f MiB, VmHWM %.1f -> %.1f -> %.1f MiB%s\n\n",
              static_cast<unsigned long long>(mem.entries), mem.walk_seconds,
              static_cast<double>(mem.entries) / mem.walk_seconds,
              static_cast<unsigned long long>(mem.nodes_at_mount),
              static_cast<unsigned long long>(mem.nodes_after_walk),
              static_cast<unsigned long long>(mem.nodes_after_forget), mem.forget_seconds,
              mem.at_mount.rss_mib(), mem.after_walk.rss_mib(), mem.after_forget.rss_mib(),
              mem.at_mount.hwm_mib(), mem.after_walk.hwm_mib(), mem.after_forget.hwm_mib(),
              mem.disturbed ? " (DISTURBED: another job dropped the caches during the walk)" : "");

  // Machine-readable, like heddle_bench's.
  result_line("git_read_cold_mibs", read_cold);
  result_line("native_read_cold_mibs", read_cold_native);
  result_line("ratio_read_cold", read_cold / read_cold_native);
  result_line("git_read_warm_mibs", read_warm);
  result_line("native_read_warm_mibs", read_warm_native);
  result_line("ratio_read_warm", read_warm / read_warm_native);
  result_line("git_walk_cold_eps", walk_cold);
  result_line("native_walk_cold_eps", walk_cold_native);
  result_line("ratio_walk_cold", walk_cold / walk_cold_native);
  result_line("git_walk_warm_eps", walk_warm);
  result_line("native_walk_warm_eps", walk_warm_native);
  result_line("ratio_walk_warm", walk_warm / walk_warm_native);
  // The figure: a heddle thread's tree is immutable, so its walk is the one whose
  // entries stay cached. A time ratio (ours / native; below 1 is faster).
  result_line("warm_walk_ratio_to_native", walk_warm_native / walk_warm);
  result_line("spawn_100k_p50_ms", spawn_big);
  result_line("spawn_10_p50_ms", spawn_small);
  result_line("ratio_spawn_100k_10", spawn_big / spawn_small);
  result_line("streamed_opens", static_cast<double>(rd.streamed_opens));
  result_line("read_worker_vmhwm_mib", rd.worker_hwm_mib);
  result_line("walk100k_worker_vmrss_mib", mem.after_walk.rss_mib());
  result_line("walk100k_worker_vmhwm_mib", mem.after_walk.hwm_mib());
  result_line("walk100k_nodes", static_cast<double>(mem.nodes_after_walk));
  result_line("forget_worker_vmrss_mib", mem.after_forget.rss_mib());
  result_line("forget_nodes", static_cast<double>(mem.nodes_after_forget));
  result_line("discarded_attempts", rd.discarded + wk.discarded);
  result_line("disturbed_half_rounds", rd.disturbed + wk.disturbed);
  result_line("build_s", build_seconds);
}

int run(const Config& config) {
  if (::geteuid() != 0) {
    throw Error("heddle_git_bench must run as root (FUSE mounts, drop_caches)", EPERM);
  }
  if (config.blob_mib <= GitSource{}.cache_bytes / kMiB) {
    throw Error("--blob-mib must exceed the worker's cache cap (" +
                    std::to_string(GitSource{}.cache_bytes / kMiB) + " MiB), or it does not stream",
                EINVAL);
  }
  ::setenv("HEDDLE_FUSE_LOG", "warn", /*overwrite=*/0);
  spdlog::set_level(spdlog::level::warn);

  // Destroyed last: every mount point and supervisor below is gone before it is removed.
  ScratchDir root("heddle-git-bench-");
  const std::string blob_repo = root / "blob", walk_repo = root / "walk.git",
                    big_repo = root / "big.git", small_repo = root / "small.git";
  const std::string blob_native = root / "blob-native", walk_native = root / "walk-native";

  // Children are forked here, before any supervisor (and its threads) exists.
  std::printf("heddle_git_bench: building the repositories under %s ...\n", root.path().c_str());
  const auto t0 = Clock::now();
  std::string steps;
  auto step = [&steps, last = t0](const char* what) mutable {
    const auto now = Clock::now();
    char buffer[96];
    std::snprintf(buffer, sizeof buffer, "%s%s %.1f s", steps.empty() ? "" : ", ", what,
                  seconds_between(last, now));
    steps += buffer;
    last = now;
  };
  make_blob_repo(blob_repo, config.blob_mib);
  step("blob repo");
  extract(blob_repo, blob_native);
  step("its extraction");
  make_many_file_repo(walk_repo, config.walk_dirs, config.files_per_dir);
  step("walk repo");
  extract(walk_repo, walk_native);
  step("its extraction");
  make_many_file_repo(big_repo, config.big_dirs, config.files_per_dir);
  step("100k repo");
  make_many_file_repo(small_repo, 1, config.small_files);
  step("10-file repo");
  const double build_seconds = seconds_between(t0, Clock::now());
  std::printf("heddle_git_bench: built in %.1f s (%s)\n", build_seconds, steps.c_str());
  struct stat st {};
  if (::stat((blob_native + "/big.bin").c_str(), &st) != 0 ||
      static_cast<std::uint64_t>(st.st_size) != config.blob_mib << 20) {
    throw Error("the extracted big.bin is missing or has the wrong size", EIO);
  }

  std::printf("heddle_git_bench: 1/4 sequential read ...\n");
  const ReadResults read = run_read_bench(config, root, blob_repo, blob_native + "/big.bin");
  std::printf("heddle_git_bench: 2/4 metadata walk ...\n");
  const WalkResults walked = run_walk_bench(config, root, walk_repo, walk_native);
  std::printf("heddle_git_bench: 3/4 spawn -> MountReady ...\n");
  const SpawnResults spawn = run_spawn_bench(config, root, big_repo, small_repo);
  std::printf("heddle_git_bench: 4/4 worker memory ...\n");
  const MemoryResults memory = run_memory_bench(config, root, big_repo);
  if (!mounts_under(root.path()).empty()) throw Error("mounts left under " + root.path(), EBUSY);

  report(config, build_seconds, read, walked, spawn, memory);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return bench_main("heddle_git_bench", [&] { return run(parse_args(argc, argv)); });
}
