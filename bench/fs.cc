// heddle_bench fs: the directory backend (read-only, Supervisor::spawn) beside the native file
// system and libfuse's passthrough_ll example (its defaults: cache=auto, 1 s timeouts), each
// round on a fresh mount, the systems interleaved (a different one first each round):
//  - a 1 GiB random file read with read() of 1 MiB: cold (after drop_caches), second (which
//    activates the pages: per 4 KiB page on FUSE, per folio on ext4), warm (the third); then
//    fio random 4 KiB reads (psync, buffered, --invalidate=0) on the same mount;
//  - walks (readdir + lstat) of 10,000 and 50,000 empty files, cold and warm. passthrough_ll
//    holds an O_PATH fd per inode, so the 50,000-file tree is tried once with the inherited
//    RLIMIT_NOFILE, and how far it got is reported.
#include <sys/resource.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "support.h"

namespace heddle::bench {
namespace {

using namespace std::chrono_literals;
enum System { kOurs, kNative, kPassthrough };
constexpr const char* kNames[] = {"ours", "native", "passthrough_ll"};

struct Env {
  const ScratchDir& root;
  std::string passthrough;  // the binary; empty: unavailable
  bool fio = false;
};

// Runs body(path) on `source` as `system` sees it: itself, or a fresh mount.
void with_view(const Env& env, System system, const std::string& source,
               const std::function<void(const std::string&)>& body) {
  if (system == kNative) return body(source);
  MountPoint mountpoint(env.root / "mnt");
  if (system == kOurs) {
    LiveMount mount = LiveMount::directory(source, mountpoint.path());
    body(mountpoint.path());
    mount.unmount();
    return;
  }
  ServerMount server({env.passthrough, "-f", "-o", "ro,source=" + source, mountpoint.path()},
                     mountpoint.path(), env.root / "passthrough_ll.log");
  body(mountpoint.path());
  server.finish();
}

// The systems of round `round`, a different one first each round.
std::vector<System> order_for(const Env& env, int round) {
  std::vector<System> order;
  for (int i = 0; i < 3; ++i) {
    const auto s = static_cast<System>((round + i) % 3);
    if (s != kPassthrough || !env.passthrough.empty()) order.push_back(s);
  }
  return order;
}

double fio_iops(const std::string& path, std::uint64_t size, int seconds) {
  const std::string out =
      output_of({"fio", "--name=r", "--rw=randread", "--bs=4k", "--size=" + std::to_string(size),
                 "--filename=" + path, "--runtime=" + std::to_string(seconds), "--time_based",
                 "--ioengine=psync", "--direct=0", "--invalidate=0", "--output-format=json"});
  const auto json = nlohmann::json::parse(out.substr(out.find('{')));
  const auto& job = json.at("jobs").at(0);
  if (job.value("error", 0) != 0) throw Error("fio on " + path + " failed", job.value("error", 0));
  return job.at("read").at("iops").get<double>();
}

}  // namespace

void fs_suite(const Config& config, Figures& f) {
  const auto t_start = Clock::now();
  const int rounds = config.rounds_or(5), per_dir = config.pick(1000, 250);
  const int small_dirs = config.pick(10, 4), big_dirs = config.pick(50, 10),
            fio_s = config.pick(5, 1);
  const std::uint64_t size = config.pick<std::uint64_t>(1024, 64) << 20;
  ScratchDir root("heddle-fs-bench-");
  Env env{root, own_bin_dir() + "/bench_passthrough_ll", on_path("fio")};
  if (::access(env.passthrough.c_str(), X_OK) != 0) env.passthrough.clear();
  f.set("passthrough_ll_available", env.passthrough.empty() ? 0 : 1);

  const std::string dir = root / "file", file = dir + "/big.bin", small = root / "tree-small",
                    big = root / "tree-big";
  std::filesystem::create_directory(dir);
  make_random_file(file, size);
  make_tree(small, small_dirs, per_dir);
  make_tree(big, big_dirs, per_dir);
  f.set("setup_s", seconds_since(t_start));
  const auto entries = [&](int dirs) { return static_cast<std::uint64_t>(dirs) * (1 + per_dir); };

  std::printf("heddle_bench fs: 1/2 sequential and random reads ...\n");
  Disturbance d;
  for (int round = 0; round < rounds; ++round) {
    for (const System s : order_for(env, round)) {
      const std::string name = kNames[s];
      ReadPasses read;
      double iops = 0;
      undisturbed(1, d, [&] {
        with_view(env, s, dir, [&](const std::string& path) {
          read = read_passes(path + "/big.bin", size);  // cold: the first read after mounting
          if (round == 0 && s != kNative) check_same_ends(path + "/big.bin", file, size);
          if (env.fio) iops = fio_iops(path + "/big.bin", size, fio_s);
        });
      });
      f.add("seq_read_cold_mibs_" + name, read.cold);
      f.add("seq_read_second_mibs_" + name, read.second);
      f.add("seq_read_warm_mibs_" + name, read.warm);
      if (env.fio) f.add("randread_iops_" + name, iops);
    }
  }

  std::printf("heddle_bench fs: 2/2 metadata walks ...\n");
  for (int round = 0; round < rounds; ++round) {
    for (const System s : order_for(env, round)) {
      for (const auto& [tree, dirs, key] :
           {std::tuple{small, small_dirs, "walk10k"}, {big, big_dirs, "walk50k"}}) {
        if (s == kPassthrough && dirs == big_dirs) continue;  // below, once
        double cold = 0, warm = 0;
        undisturbed(1, d, [&] {
          with_view(env, s, tree, [&](const std::string& path) {
            drop_caches("3");
            cold = walk_ms(path, entries(dirs));
            warm = walk_ms(path, entries(dirs));
          });
        });
        f.add(std::string(key) + "_cold_ms_" + kNames[s], cold);
        f.add(std::string(key) + "_warm_ms_" + kNames[s], warm);
      }
    }
  }
  if (!env.passthrough.empty()) {  // its failure is a result, not an error of the bench
    with_view(env, kPassthrough, big, [&](const std::string& path) {
      drop_caches("3");
      const WalkResult first = walk(path), second = walk(path);
      const auto done = [&](const WalkResult& w) {
        return w.errors == 0 && w.entries == entries(big_dirs);
      };
      f.set("walk50k_passthrough_ll_completed", done(first) && done(second));
      f.set("walk50k_passthrough_ll_entries", static_cast<double>(first.entries));
      f.set("walk50k_passthrough_ll_entries_second_walk", static_cast<double>(second.entries));
    });
  }
  rlimit nofile{};
  ::getrlimit(RLIMIT_NOFILE, &nofile);
  f.set("rlimit_nofile_soft", static_cast<double>(nofile.rlim_cur));
  d.report(f);

  // Ratios: ours / the other system. Above 1 is better for MiB/s and IOPS, below for times.
  const std::tuple<const char*, const char*, System> ratios[] = {
      {"second_seq_read_ratio_to_native", "seq_read_second_mibs_", kNative},
      {"warm_seq_read_ratio_to_native", "seq_read_warm_mibs_", kNative},
      {"cold_seq_read_ratio_to_native", "seq_read_cold_mibs_", kNative},
      {"cold_seq_read_ratio_to_passthrough_ll", "seq_read_cold_mibs_", kPassthrough},
      {"warm_seq_read_ratio_to_passthrough_ll", "seq_read_warm_mibs_", kPassthrough},
      {"randread_iops_ratio_to_native", "randread_iops_", kNative},
      {"randread_iops_ratio_to_passthrough_ll", "randread_iops_", kPassthrough},
      {"metadata_walk_ratio_to_passthrough_ll", "walk10k_cold_ms_", kPassthrough},
      {"metadata_walk_ratio_to_native", "walk10k_cold_ms_", kNative},
      {"walk10k_warm_ratio_to_passthrough_ll", "walk10k_warm_ms_", kPassthrough},
      {"dir_warm_walk50k_ratio_to_native", "walk50k_warm_ms_", kNative},
      {"cold_walk50k_ratio_to_native", "walk50k_cold_ms_", kNative}};
  for (const auto& [key, figure, other] : ratios)
    f.ratio(key, std::string(figure) + "ours", figure + std::string(kNames[other]));

  const auto t_cleanup = Clock::now();
  for (const auto& source : {dir, small, big}) std::filesystem::remove_all(source);
  f.set("cleanup_s", seconds_since(t_cleanup));
  f.set("total_s", seconds_since(t_start));
}

}  // namespace heddle::bench
