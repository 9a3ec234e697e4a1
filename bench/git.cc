// heddle_bench git: the git backend (a thread mounted through the sandboxed worker) beside the
// native file system holding `git archive main | tar -x` of the same tree: a streamed 1 GiB blob
// read cold and warm, a 50,000-file walk cold and warm (fresh mount each round, ours and native
// alternating), spawn on a 100,000-file repository against a 10-file one, and the worker's
// memory after walking 100,000 files and after the kernel forgets them.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include "heddle/unique_fd.h"
#include "support.h"

namespace heddle::bench {
namespace {

using namespace std::chrono_literals;
constexpr const char* kThread = "main";  // LiveMount::thread's

// A fixed identity and no user or system config for the git CLI (set only while building).
const std::pair<const char*, const char*> kGitEnv[] = {
    {"GIT_CONFIG_GLOBAL", "/dev/null"}, {"GIT_CONFIG_NOSYSTEM", "1"},
    {"GIT_AUTHOR_NAME", "heddle"}, {"GIT_AUTHOR_EMAIL", "heddle@example.invalid"},
    {"GIT_COMMITTER_NAME", "heddle"}, {"GIT_COMMITTER_EMAIL", "heddle@example.invalid"},
    {"GIT_AUTHOR_DATE", "2024-05-06T07:08:09Z"}, {"GIT_COMMITTER_DATE", "2024-05-06T07:08:09Z"}};

// A bare repository whose main holds dirs x files small files, each with its own content.
void make_many_file_repo(const std::string& repo, int dirs, int files) {
  run({"git", "init", "-q", "--bare", "-b", kThread, repo});
  std::string stream =
      "commit refs/heads/main\ncommitter heddle <heddle@example.invalid> 1714979289 +0000\ndata "
      "11\nmany files\n";
  char path[64];
  for (int d = 0; d < dirs; ++d) {
    for (int f = 0; f < files; ++f) {
      if (dirs == 1) {
        std::snprintf(path, sizeof path, "f%04d", f);
      } else {
        std::snprintf(path, sizeof path, "d%03d/f%04d", d, f);
      }
      const std::string content = std::string("file ") + path + "\n";
      stream += std::string("M 100644 inline ") + path + "\ndata " +
                std::to_string(content.size()) + "\n" + content + "\n";
    }
  }
  run({"git", "-C", repo, "-c", "gc.auto=0", "fast-import", "--quiet"},
      {.input = stream + "done\n"});
}

// `git archive main | tar -x` into a new directory.
void extract(const std::string& repo, const std::string& out) {
  if (::mkdir(out.c_str(), 0755) != 0) throw_errno("mkdir " + out);
  run({"/bin/bash", "-c",
       "set -o pipefail; git -c tar.umask=0022 -C \"$0\" archive --format=tar \"$1\" | tar -x -C "
       "\"$2\"",
       repo, kThread, out});
}

// MiB of a file not in the page cache (or not up to date): mmap + mincore, nothing read.
double missing_mib(const std::string& path, std::uint64_t size) {
  const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd.get(), 0);
  if (map == MAP_FAILED) throw_errno("mmap " + path);
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident((size + page - 1) / page);
  const int rc = ::mincore(map, size, resident.data());
  ::munmap(map, size);
  if (rc != 0) throw_errno("mincore " + path);
  return static_cast<double>(std::count_if(resident.begin(), resident.end(),
                                           [](unsigned char r) { return (r & 1) == 0; })) *
         static_cast<double>(page) / kMiB;
}

double mib(std::uint64_t kib) { return static_cast<double>(kib) / 1024; }

}  // namespace

void git_suite(const Config& config, Figures& f) {
  const int rounds = config.rounds_or(5), per_dir = 1000, walk_dirs = config.pick(50, 10),
            big_dirs = config.pick(100, 20);
  const std::uint64_t size = config.pick<std::uint64_t>(1024, 320) << 20;
  if (size <= ipc::GitSource{}.cache_bytes)
    throw Error("the blob must exceed the worker's cache cap to stream", EINVAL);
  ScratchDir root("heddle-git-bench-");
  const std::string blob = root / "blob", walk_repo = root / "walk.git", big = root / "big.git",
                    small = root / "small.git";
  const std::string native_file = root / "blob-native/big.bin", native_walk = root / "walk-native";

  std::printf("heddle_bench git: building the repositories under %s ...\n", root.path().c_str());
  const auto t0 = Clock::now();
  for (const auto& [name, value] : kGitEnv) ::setenv(name, value, 1);
  run({"git", "init", "-q", "-b", kThread, blob});
  make_random_file(blob + "/big.bin", size);
  run({"git", "-C", blob, "-c", "gc.auto=0", "-c", "core.compression=1", "add", "big.bin"});
  run({"git", "-C", blob, "-c", "gc.auto=0", "commit", "-q", "-m", "a big blob"});
  if (::unlink((blob + "/big.bin").c_str()) != 0) throw_errno("unlink");  // as extracted: below
  extract(blob, root / "blob-native");
  make_many_file_repo(walk_repo, walk_dirs, per_dir);
  extract(walk_repo, native_walk);
  make_many_file_repo(big, big_dirs, per_dir);
  make_many_file_repo(small, 1, 10);
  for (const auto& [name, value] : kGitEnv) ::unsetenv(name);
  f.set("build_s", seconds_since(t0));

  std::printf("heddle_bench git: 1/4 sequential read ...\n");
  Disturbance d;
  double hwm = 0;
  for (int round = 0; round < rounds; ++round) {
    double cold = 0, warm = 0, missing = 0;
    undisturbed(1, d, [&] {
      MountPoint mountpoint(root / "mnt-read");
      LiveMount mount = LiveMount::thread(blob, mountpoint.path());
      const std::string file = mountpoint.path() + "/big.bin";
      drop_caches("3");
      cold = sequential_read_mibs(file, size);  // the first read after mounting
      missing = missing_mib(file, size);        // opens it: streamed_opens counts 3
      warm = sequential_read_mibs(file, size);  // the page cache (keep_cache)
      const std::uint64_t streamed = mount.status_number("streamed_opens");
      if (streamed < 1) throw Error("Status streamed_opens is 0: the blob did not stream", EPROTO);
      f.set("streamed_opens", static_cast<double>(streamed));
      hwm = std::max(hwm, mib(memory_of(mount->pid()).hwm_kib));
      if (round == 0) check_same_ends(file, native_file, size);
      mount.unmount();
    });
    f.add("git_read_cold_mibs", cold);
    f.add("git_read_warm_mibs", warm);
    f.add("diag.missing_from_page_cache_mib_ours", missing);
    undisturbed(1, d, [&] {
      drop_caches("3");
      cold = sequential_read_mibs(native_file, size);
      missing = missing_mib(native_file, size);
      warm = sequential_read_mibs(native_file, size);
    });
    f.add("native_read_cold_mibs", cold);
    f.add("native_read_warm_mibs", warm);
    f.add("diag.missing_from_page_cache_mib_native", missing);
  }
  if (hwm * kMiB >= static_cast<double>(size) / 2)
    throw Error("the worker's VmHWM reached half the blob: it did not stream", ENOMEM);
  f.set("read_worker_vmhwm_mib", hwm);

  std::printf("heddle_bench git: 2/4 metadata walk ...\n");
  const std::uint64_t walk_entries = static_cast<std::uint64_t>(walk_dirs) * (1 + per_dir);
  const auto eps = [&](const std::string& path) {
    return static_cast<double>(walk_entries) / walk_ms(path, walk_entries) * 1e3;
  };
  for (int round = 0; round < rounds; ++round) {
    double cold = 0, warm = 0;
    undisturbed(1, d, [&] {
      MountPoint mountpoint(root / "mnt-walk");
      LiveMount mount = LiveMount::thread(walk_repo, mountpoint.path());
      drop_caches("3");
      cold = eps(mountpoint.path());
      warm = eps(mountpoint.path());
      mount.unmount();
    });
    f.add("git_walk_cold_eps", cold);
    f.add("git_walk_warm_eps", warm);
    undisturbed(1, d, [&] {
      drop_caches("3");
      cold = eps(native_walk);
      warm = eps(native_walk);
    });
    f.add("native_walk_cold_eps", cold);
    f.add("native_walk_warm_eps", warm);
  }
  d.report(f);

  std::printf("heddle_bench git: 3/4 spawn -> MountReady ...\n");
  std::vector<double> spawn_ms[2];
  for (int i = 0; i < 1 + config.pick(10, 3); ++i) {
    for (const int k : {0, 1}) {  // alternating, so that background load hits both alike
      MountPoint mountpoint(root / "mnt-spawn");
      LiveMount mount = LiveMount::thread(k == 0 ? big : small, mountpoint.path());
      mount.unmount();
      if (i >= 1) spawn_ms[k].push_back(mount.spawn_seconds() * 1e3);
    }
  }
  f.set("spawn_100k_p50_ms", percentile(spawn_ms[0], 50));
  f.set("spawn_10_p50_ms", percentile(spawn_ms[1], 50));

  std::printf("heddle_bench git: 4/4 worker memory ...\n");
  {
    MountPoint mountpoint(root / "mnt-memory");
    LiveMount mount = LiveMount::thread(big, mountpoint.path());
    const pid_t pid = mount->pid();
    walk_ms(mountpoint.path(), static_cast<std::uint64_t>(big_dirs) * (1 + per_dir));
    const Memory after_walk = memory_of(pid);
    f.set("walk100k_worker_vmrss_mib", mib(after_walk.rss_kib));
    f.set("walk100k_worker_vmhwm_mib", mib(after_walk.hwm_kib));
    std::uint64_t nodes = mount.status_number("nodes");
    f.set("walk100k_nodes", static_cast<double>(nodes));
    drop_caches("2");
    // Forgets arrive asynchronously: wait until the node count stops falling (10 s at most).
    const auto t_forget = Clock::now();
    for (int stable = 0; stable < 5 && seconds_since(t_forget) < 10;) {
      std::this_thread::sleep_for(100ms);
      const std::uint64_t now = mount.status_number("nodes");
      stable = now == nodes ? stable + 1 : 0;
      nodes = now;
    }
    f.set("forget_nodes", static_cast<double>(nodes));
    f.set("forget_worker_vmrss_mib", mib(memory_of(pid).rss_kib));
    mount.unmount();
  }
  // Ratios: ours / native (for spawn, the 100k-file repository / the 10-file one).
  for (const std::string what : {"read_cold", "read_warm", "walk_cold", "walk_warm"}) {
    const std::string unit = what[0] == 'r' ? "_mibs" : "_eps";
    f.ratio("ratio_" + what, "git_" + what + unit, "native_" + what + unit);
  }
  // The figure, as a time ratio (below 1 is faster): a thread's tree is immutable.
  f.ratio("warm_walk_ratio_to_native", "native_walk_warm_eps", "git_walk_warm_eps");
  f.ratio("ratio_spawn_100k_10", "spawn_100k_p50_ms", "spawn_10_p50_ms");
}

}  // namespace heddle::bench
