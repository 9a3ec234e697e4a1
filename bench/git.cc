// heddle_bench git: a git thread beside its extraction (a streamed 1 GiB blob, a walk, spawn,
// memory); heddle_bench scaling: 1 vs 16 readers of compressible blobs. See bench/README.md.
#include <atomic>

#include "support.h"

namespace heddle::bench {
namespace {

// A bare repository whose main holds dirs x files files (f0000... at the root if dirs is 1),
// each with its own content: "file NAME\n" unless `content` gives another.
void make_repo(const std::string& repo, int dirs, int files,
               const std::function<std::string()>& content = {}) {
  git({"init", "-q", "--bare", "-b", "main", repo});
  std::string stream =
      "commit refs/heads/main\ncommitter heddle <heddle@example.invalid> 1714979289 +0000\ndata "
      "11\nmany files\n";
  for (int d = 0; d < dirs; ++d) {
    for (int f = 0; f < files; ++f) {
      const std::string name = dirs == 1 ? format("f%04d", f) : format("d%03d/f%04d", d, f);
      const std::string text = content ? content() : "file " + name + "\n";
      stream +=
          "M 100644 inline " + name + "\ndata " + std::to_string(text.size()) + "\n" + text + "\n";
    }
  }
  git({"-C", repo, "fast-import", "--quiet"}, stream + "done\n");
}

void extract(const std::string& repo, const std::string& out) {
  if (::mkdir(out.c_str(), 0755) != 0) throw_errno("mkdir " + out);
  run({"/bin/bash", "-c", "set -o pipefail; git -c tar.umask=0022 -C $0 archive main | tar -xC $1",
       repo, out},
      {.env = kGitEnv});
}

}  // namespace

void git_suite(const Config& config, Figures& f) {
  const int rounds = config.rounds_or(5), per_dir = 1000, walk_dirs = config.pick(50, 10),
            big_dirs = config.pick(100, 20);
  const std::uint64_t size = std::uint64_t(config.pick(1024, 320)) << 20;
  if (size <= ipc::GitSource{}.cache_bytes)
    throw Error("the blob must exceed the worker's cache cap to stream", EINVAL);
  ScratchDir root("heddle-git-bench-");
  const std::string blob = root / "blob", walk_repo = root / "walk.git", big = root / "big.git",
                    small = root / "small.git";
  const std::string native_file = root / "blob-native/big.bin", native_walk = root / "walk-native";

  std::printf("heddle_bench git: building the repositories under %s ...\n", root.path().c_str());
  const auto t0 = Clock::now();
  git({"init", "-q", "-b", "main", blob});
  make_random_file(blob + "/big.bin", size);
  git({"-C", blob, "-c", "core.compression=1", "add", "big.bin"});
  git({"-C", blob, "commit", "-q", "-m", "a big blob"});
  if (::unlink((blob + "/big.bin").c_str()) != 0) throw_errno("unlink");  // as extracted: below
  extract(blob, root / "blob-native");
  make_repo(walk_repo, walk_dirs, per_dir);
  extract(walk_repo, native_walk);
  make_repo(big, big_dirs, per_dir);
  make_repo(small, 1, 10);
  f.set("build_s", seconds_since(t0));

  std::printf("heddle_bench git: 1/3 sequential read and metadata walk ...\n");
  Disturbance d;
  double hwm = 0;
  const std::uint64_t walk_entries = static_cast<std::uint64_t>(walk_dirs) * (1 + per_dir);
  side_by_side(rounds, 2, [&](int native, int round) {
    const std::string who = native ? "native" : "git";
    double cold = 0, warm = 0, missing = 0;
    d.measure(1, [&] {
      std::optional<LiveMount> mount;
      if (!native) mount.emplace(ipc::GitSource{blob, "main"}, root / "mnt-read");
      const std::string file = native ? native_file : root / "mnt-read/big.bin";
      drop_caches("3");
      cold = sequential_read_mibs(file, size);  // the first read after mounting
      // Not in the page cache: fincore's mmap + mincore, no read (streamed_opens counts 3).
      const auto resident = run({"fincore", "--bytes", "--noheadings", "--output=RES", file});
      missing = (static_cast<double>(size) - std::stod(resident)) / kMiB;
      warm = sequential_read_mibs(file, size);  // the page cache (keep_cache)
      if (native) return;
      const std::uint64_t streamed = mount->status_number("streamed_opens");
      if (streamed < 1) throw Error("Status streamed_opens is 0: the blob did not stream", EPROTO);
      f.set("streamed_opens", static_cast<double>(streamed));
      hwm = std::max(hwm, mib_of((*mount)->pid(), "VmHWM"));
      if (round == 0) check_same_ends(file, native_file, size);
      mount->unmount();
    });
    f.add(who + "_read_cold_mibs", cold);
    f.add(who + "_read_warm_mibs", warm);
    f.add(std::string("diag.missing_from_page_cache_mib_") + (native ? "native" : "ours"), missing);
    std::pair<double, double> ms;
    d.measure(1, [&] {
      std::optional<LiveMount> mount;
      if (!native) mount.emplace(ipc::GitSource{walk_repo, "main"}, root / "mnt-walk");
      ms = walk_passes(native ? native_walk : root / "mnt-walk", walk_entries);
      if (mount) mount->unmount();
    });
    f.add(who + "_walk_cold_eps", static_cast<double>(walk_entries) / ms.first * 1e3);
    f.add(who + "_walk_warm_eps", static_cast<double>(walk_entries) / ms.second * 1e3);
  });
  if (hwm * kMiB >= static_cast<double>(size) / 2)
    throw Error("the worker's VmHWM reached half the blob: it did not stream", ENOMEM);
  f.set("read_worker_vmhwm_mib", hwm);
  d.report(f);

  std::printf("heddle_bench git: 2/3 spawn -> MountReady ...\n");
  std::vector<double> spawn_ms[2];
  side_by_side(1 + config.pick(10, 3), 2, [&](int k, int round) {
    LiveMount mount(ipc::GitSource{k == 0 ? big : small, "main"}, root / "mnt-spawn");
    mount.unmount();
    if (round >= 1) spawn_ms[k].push_back(mount.spawn_seconds() * 1e3);
  });
  f.set("spawn_100k_p50_ms", percentile(spawn_ms[0], 50));
  f.set("spawn_10_p50_ms", percentile(spawn_ms[1], 50));

  std::printf("heddle_bench git: 3/3 worker memory ...\n");
  {
    LiveMount mount(ipc::GitSource{big, "main"}, root / "mnt-memory");
    const pid_t pid = mount->pid();
    const double idle_mib = mib_of(pid, "VmRSS");
    walk_ms(root / "mnt-memory", static_cast<std::uint64_t>(big_dirs) * (1 + per_dir));
    f.set("walk100k_worker_vmrss_mib", mib_of(pid, "VmRSS"));
    f.set("walk100k_worker_vmhwm_mib", mib_of(pid, "VmHWM"));
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
    f.set("forget_worker_vmrss_mib", mib_of(pid, "VmRSS"));
    f.set("forget_worker_vmrss_ratio_to_idle", mib_of(pid, "VmRSS") / idle_mib);
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

void scaling_suite(const Config& config, Figures& f) {
  ScratchDir root("heddle-scaling-");
  const std::string repo = root / "repo";
  const std::size_t blob = 4 << 20, blobs = config.pick(64, 16);
  std::mt19937 random(7);
  make_repo(repo, 1, blobs, [&] {  // words of a 4096-word vocabulary: deflates about 3:1
    std::string text;
    for (char word[8]; text.size() < blob; text += word)
      std::snprintf(word, sizeof word, "w%05u ", static_cast<unsigned>(random() % 4096));
    return text.substr(0, blob);
  });
  for (const int readers : {1, 16}) {
    LiveMount mount(ipc::GitSource{repo, "main"}, root / "mnt");
    const double cpu0 = cpu_seconds_of(mount->pid());
    const auto t0 = Clock::now();
    std::atomic<std::size_t> next{0};
    std::vector<std::jthread> threads;
    for (int t = 0; t < readers; ++t) {
      threads.emplace_back([&] {
        for (std::size_t n; (n = next++) < blobs;)
          sequential_read_mibs(root / format("mnt/f%04zu", n), blob);
      });
    }
    threads.clear();  // joined
    const double wall = seconds_since(t0), cpu = cpu_seconds_of(mount->pid()) - cpu0;
    f.set("readers_" + std::to_string(readers) + "_wall_s", wall);
    f.set("readers_" + std::to_string(readers) + "_worker_cpu_per_wall", cpu / wall);
  }
  f.ratio("speedup_16_over_1", "readers_1_wall_s", "readers_16_wall_s");
}

}  // namespace heddle::bench
