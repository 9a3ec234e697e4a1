// heddle_bench fs: the directory backend beside the native file system and libfuse's
// passthrough_ll (its defaults), a fresh mount each round: a 1 GiB read, fio random reads, walks.
#include <sys/resource.h>

#include "support.h"

namespace heddle::bench {
namespace {

enum System { kOurs, kNative, kPassthrough };
constexpr const char* kNames[] = {"ours", "native", "passthrough_ll"};

// Runs body(path) on `source` as `system` sees it: itself, or a fresh mount.
void with_view(const ScratchDir& root, int system, const std::string& source,
               const std::function<void(const std::string&)>& body) {
  const std::string mountpoint = root / "mnt";
  if (system == kNative) return body(source);
  if (system == kOurs) {
    LiveMount mount(ipc::DirSource{source}, mountpoint);
    body(mountpoint);
    mount.unmount();
    return;
  }
  MountPoint point(mountpoint);
  Daemon server(
      {own_bin_dir() + "/bench_passthrough_ll", "-f", "-o", "ro,source=" + source, mountpoint},
      root / "passthrough_ll.log");
  server.mounted(mountpoint);
  body(mountpoint);
  server.unmount(mountpoint);
}

double fio_iops(const std::string& path, std::uint64_t size, int seconds) {
  const std::string out =
      run({"fio", "--name=r", "--rw=randread", "--bs=4k", "--size=" + std::to_string(size),
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
  const int rounds = config.rounds_or(5), per_dir = config.pick(1000, 250),
            fio_s = config.pick(5, 1);
  const std::uint64_t size = std::uint64_t(config.pick(1024, 64)) << 20;
  ScratchDir root("heddle-fs-bench-");
  const bool passthrough = ::access((own_bin_dir() + "/bench_passthrough_ll").c_str(), X_OK) == 0,
             fio = !find_on_path("fio").empty();
  f.set("passthrough_ll_available", passthrough ? 1 : 0);
  const std::string dir = root / "file", file = dir + "/big.bin";
  std::filesystem::create_directory(dir);
  make_random_file(file, size);
  const std::tuple<std::string, std::string, std::uint64_t> trees[] = {
      // key, path, entries
      {"walk10k", root / "tree-small", make_tree(root / "tree-small", config.pick(10, 4), per_dir)},
      {"walk50k", root / "tree-big", make_tree(root / "tree-big", config.pick(50, 10), per_dir)}};
  f.set("setup_s", seconds_since(t_start));

  std::printf("heddle_bench fs: 1/2 sequential and random reads ...\n");
  Disturbance d;
  side_by_side(rounds, 3, [&](int s, int) {
    if (s == kPassthrough && !passthrough) return;
    ReadPasses read{};
    double iops = 0;
    d.measure(1, [&] {
      with_view(root, s, dir, [&](const std::string& path) {
        read = read_passes(path + "/big.bin", size, s == kNative ? "" : file);  // cold: 1st read
        if (fio) iops = fio_iops(path + "/big.bin", size, fio_s);
      });
    });
    for (std::size_t i = 0; i < read.size(); ++i)
      f.add(format("seq_read_%s_mibs_%s", kPasses[i], kNames[s]), read[i]);
    if (fio) f.add(std::string("randread_iops_") + kNames[s], iops);
  });

  std::printf("heddle_bench fs: 2/2 metadata walks ...\n");
  side_by_side(rounds, 3, [&](int s, int) {
    for (const auto& [key, tree, entries] : trees) {
      if (s == kPassthrough && (!passthrough || key == "walk50k")) continue;  // below, once
      std::pair<double, double> ms;
      d.measure(1, [&] {
        with_view(root, s, tree, [&](const std::string& path) { ms = walk_passes(path, entries); });
      });
      f.add(key + "_cold_ms_" + kNames[s], ms.first);
      f.add(key + "_warm_ms_" + kNames[s], ms.second);
    }
  });
  if (passthrough) {  // its failure is a result, not an error of the bench
    const auto& [key, tree, entries] = trees[1];
    with_view(root, kPassthrough, tree, [&](const std::string& path) {
      drop_caches("3");
      const WalkResult first = walk(path), second = walk(path);
      f.set("walk50k_passthrough_ll_completed", first.errors + second.errors == 0 &&
                                                    first.entries == entries &&
                                                    second.entries == entries);
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
  fs::remove_all(dir);
  for (const auto& [key, path, entries] : trees) fs::remove_all(path);
  f.set("cleanup_s", seconds_since(t_cleanup));
  f.set("total_s", seconds_since(t_start));
}

}  // namespace heddle::bench
