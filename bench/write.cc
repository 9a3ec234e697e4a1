// heddle_bench write: writable mounts (`mount --overlay`) beside the native file system and
// fuse-overlayfs: write + fsync, tar -x, make -j2, a census of FUSE requests; then an empty
// overlay against read-only: reads and walks. On a fresh ext4 unless --on-tmp (README.md).
#include "support.h"

namespace heddle::bench {
namespace {

enum System { kOurs, kNative, kFuseOverlayfs };
constexpr const char* kKeys[] = {"ours", "native", "fuse_overlayfs"};
// Part 4's figures (+ empty_overlay or read_only) and their ratios (+ _ratio_to_read_only).
const std::array<std::string, 2> kReadFigures[] = {
    {"overlay_read_cold_mibs_", "empty_overlay_cold_seq_read"},
    {"diag.overlay_read_second_mibs_", "empty_overlay_second_seq_read"},
    {"overlay_read_warm_mibs_", "empty_overlay_warm_seq_read"},
    {"overlay_walk10k_cold_ms_", "empty_overlay_walk10k_cold"},
    {"overlay_walk10k_warm_ms_", "empty_overlay_walk10k_warm"}};

// The FUSE requests of one mount, from a private tracefs instance (kernel >= 6.15), if any.
class FuseTrace {
 public:
  FuseTrace() {
    const bool made = ::mkdir(dir_.c_str(), 0700) == 0;
    if (!made || !put(kEvent + "enable", "0") || !put("buffer_size_kb", "16384")) {
      if (made) ::rmdir(dir_.c_str());
      dir_.clear();
    }
  }
  ~FuseTrace() {
    if (available() && put(kEvent + "enable", "0")) ::rmdir(dir_.c_str());
  }
  [[nodiscard]] bool available() const { return !dir_.empty(); }
  void start(const std::string& mountpoint) {
    const auto m = launcher::top_mount_at(mountpoint);
    if (!m || !put(kEvent + "filter", format("connection == %u", (m->major << 20) | m->minor)) ||
        !put("trace", "") || !put(kEvent + "enable", "1")) {
      throw Error("cannot trace the FUSE requests of " + mountpoint + " in " + dir_, EIO);
    }
  }
  // Prints the requests by opcode after `what`; their total.
  double stop(const std::string& what) {
    put(kEvent + "enable", "0");
    std::map<std::string, int> counts;
    int total = 0;
    std::ifstream in(dir_ + "/trace");
    for (std::string line; std::getline(in, line);) {
      const auto open = line.find("(FUSE_"), close = line.find(')', open);
      if (line[0] != '#' && close != std::string::npos)
        ++counts[line.substr(open + 6, close - open - 6)], ++total;
    }
    std::string text = "census " + what + ":";
    for (const auto& [opcode, count] : counts) text += " " + opcode + " " + std::to_string(count);
    std::printf("%s (total %d)\n", text.c_str(), total);
    return total;
  }

 private:
  inline static const std::string kEvent = "events/fuse/fuse_request_send/";
  bool put(const std::string& file, const std::string& value) {
    std::ofstream out(dir_ + "/" + file);
    return static_cast<bool>(out << value << "\n" << std::flush);
  }
  std::string dir_ = "/sys/kernel/tracing/instances/heddle-bench-" + std::to_string(::getpid());
};

struct Env {
  const ScratchDir& root;  // mount points, the log
  std::string work;        // sources, native directories, upper layers
  std::string launcher = own_bin_dir() + "/heddle-fuse-launcher";
  std::string log = root / "tools.log";  // stderr of the launcher, fuse-overlayfs and the tools
  bool fuse_overlayfs = !find_on_path("fuse-overlayfs").empty();
  FuseTrace trace;
  int serial = 0;  // fresh names
  [[nodiscard]] std::string at(const std::string& name) const { return work + "/" + name; }
};

// Where a workload runs, served by `pid`: a fresh native directory (a copy of lower if asked),
// ours (an empty overlay, or read-only) or fuse-overlayfs. finish() unmounts and checks.
class View {
 public:
  View(Env& env, int system, const std::string& lower, bool copy_lower, bool overlay = true)
      : env_(env), system_(system) {
    const std::string n = std::to_string(++env.serial);
    if (system == kNative) {
      path = env.at("native-" + n);
      copy_lower ? (void)run({"cp", "-a", lower, path}) : (void)fs::create_directory(path);
      return;
    }
    path = mountpoint_.emplace(env.root / ("mnt-" + n)).path();
    const std::string& state = state_ = env.at((system == kOurs ? "overlay-" : "fo-") + n);
    upper = overlay ? state + "/upper" : "";
    if (system == kOurs) {
      std::vector<std::string> argv = {env.launcher, "mount", "--dir", lower, "--mountpoint", path};
      if (overlay) argv.insert(argv.end(), {"--overlay", "--overlay-dir", state});
      argv.push_back("--json");
      const std::string out = run(argv, {.log = env.log});
      const auto json = nlohmann::json::parse(out.substr(out.rfind("\n{") + 1));  // the last line
      pid = json.at("pid").get<pid_t>();
      supervisor_ = json.value("supervisor_pid", 0);
    } else {
      for (const auto& dir : {state, upper, state + "/work"}) fs::create_directory(dir);
      const std::string dirs = "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + state;
      server_.emplace(std::vector<std::string>{"fuse-overlayfs", "-f", "-o", dirs + "/work", path},
                      env.log);
      server_->mounted(path);
      pid = server_->pid();
    }
  }
  ~View() {  // the native directory, else the upper layer (untimed)
    std::error_code ec;
    fs::remove_all(system_ == kNative ? path : state_, ec);
  }
  void check_alive(const char* during) const {
    if (pid > 0 && ::kill(pid, 0) != 0)
      throw Error("the daemon of " + path + " died during " + during, 0);
  }
  void finish() {
    if (system_ == kFuseOverlayfs) return server_->unmount(path);
    if (system_ != kOurs) return;
    run({env_.launcher, "unmount", path}, {.log = env_.log});
    // The supervisor holds the overlay's lock until it exits.
    for (const auto t0 = Clock::now(); ::kill(supervisor_, 0) == 0 && seconds_since(t0) < 10;)
      std::this_thread::sleep_for(2ms);
    if (is_mounted(path)) throw Error(path + " is still mounted", EBUSY);
  }
  std::string path, upper;
  pid_t pid = 0;

 private:
  Env& env_;
  int system_;
  std::optional<MountPoint> mountpoint_;  // destroyed last: detaches whatever is left
  std::optional<Daemon> server_;
  pid_t supervisor_ = 0;
  std::string state_;  // ours: the overlay directory; fuse-overlayfs: upper and work
};

// A fresh ext4 (with a journal) on a sparse image, through a loop device with direct I/O.
struct LoopFs {
  LoopFs(const std::string& image, const std::string& at, std::uint64_t bytes,
         const std::string& log)
      : point(at) {
    run({"truncate", "-s", std::to_string(bytes), image});
    run({"mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0", image},
        {.log = log});
    device = run({"losetup", "--find", "--show", "--direct-io=on", image}, {.log = log});
    device.resize(device.find('\n'));
    run({"mount", "-t", "ext4", device, at}, {.log = log});
    ::chmod(at.c_str(), 0755);
  }
  ~LoopFs() {
    unmount_quietly(point.path());
    run_process({find_on_path("losetup"), "-d", device});
  }
  MountPoint point;
  std::string device;
};

// tNN/sN/fNNN.txt: `files` files of 0-8 KiB of letters, 50 per directory.
void make_tar_tree(const std::string& root, int files) {
  std::mt19937_64 random(0x746172);
  for (int i = 0; i < files; ++i) {
    const std::string dir = format("%s/t%02d/s%d", root.c_str(), i / 500, (i / 50) % 10);
    if (i % 50 == 0) fs::create_directories(dir);
    std::string content(random() % 8192, 'a');
    for (auto& c : content) c = static_cast<char>('a' + random() % 26);
    write_file(format("%s/f%03d.txt", dir.c_str(), i % 50), content);
  }
}

// src/mNN/fKKK.c (files / 10 per module), include/common.h and mNN.h, main.c and a Makefile
// building build/mNN/fKKK.o (+ .d), build/libproj.a, build/prog and the hard link prog.link.
void make_c_project(const std::string& root, int files) {
  fs::create_directories(root + "/include");
  write_file(root + "/include/common.h",
             "#ifndef COMMON_H\n#define COMMON_H\n#include <stdint.h>\n#include <stddef.h>\n"
             "#include <string.h>\n#include <stdio.h>\n#include <stdlib.h>\n"
             "typedef struct { uint64_t a, b; double c; char name[32]; } item_t;\n"
             "static inline uint64_t mix(uint64_t x) { x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; "
             "x ^= x >> 33; return x; }\n#endif\n");
  std::string main_c = "#include \"common.h\"\n", main_body;
  for (int m = 0; m < 10; ++m) {
    fs::create_directories(format("%s/src/m%02d", root.c_str(), m));
    std::string header = format("#ifndef M%d_H\n#define M%d_H\n#include \"common.h\"\n", m, m);
    for (int f = 0; f < files / 10; ++f) {
      header += format("uint64_t m%02d_f%03d_run(uint64_t seed);\n", m, f);
      main_body += format("  r = m%02d_f%03d_run(r);\n", m, f);
      write_file(
          format("%s/src/m%02d/f%03d.c", root.c_str(), m, f),
          format(
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
              "    v[i].a = mix(seed + i); v[i].b = mix(v[i].a); "
              "v[i].c = (double)(v[i].a %% 1000) / %d.0;\n"
              "    snprintf(v[i].name, sizeof v[i].name, \"m%02d-f%03d-%%zu\", i);\n  }\n}\n"
              "uint64_t m%02d_f%03d_run(uint64_t seed) {\n"
              "  item_t v[64];\n  fill_%d(v, 64, seed);\n"
              "  uint64_t r = sum_%d(v, 64) ^ step_%d(v, 64);\n"
              "  for (int k = 0; k < %d; ++k) r = mix(r + (uint64_t)k + strlen(v[k %% 64].name));\n"
              "  return r;\n}\n",
              m, f, f, f * 31 + m, f, 5 + f % 3, f, 3 + f, m, f, m, f, f, f, f, 4 + f % 8));
    }
    write_file(format("%s/include/m%02d.h", root.c_str(), m), header + "#endif\n");
    main_c += format("#include \"m%02d.h\"\n", m);
  }
  write_file(root + "/main.c",
             main_c + "int main(void) {\n  uint64_t r = 1;\n" + main_body +
                 "  printf(\"%llu\\n\", (unsigned long long)r);\n  return 0;\n}\n");
  write_file(
      root + "/Makefile",
      "CC = cc\nCFLAGS = -O2 -g -Wall -Iinclude -MMD -MP\n"
      "SRCS := $(sort $(wildcard src/*/*.c))\nOBJS := $(patsubst src/%.c,build/%.o,$(SRCS))\n"
      "DIRS := $(sort $(dir $(OBJS)))\nall: build/prog build/prog.link\n$(DIRS):\n\tmkdir -p $@\n"
      "build/%.o: src/%.c | $(DIRS)\n\t$(CC) $(CFLAGS) -c $< -o $@\n"
      "build/libproj.a: $(OBJS)\n\trm -f $@\n\tar rcs $@ $^\n"
      "build/prog: main.c build/libproj.a | $(DIRS)\n\t$(CC) $(CFLAGS) -o $@ main.c "
      "build/libproj.a\n"
      "build/prog.link: build/prog\n\tln -f $< $@\n-include $(OBJS:.o=.d) build/prog.d\n"
      ".PHONY: all\n");
}

// One round of a part on one system, in a fresh view. time() times a step (and the daemon's
// CPU time, KEY_daemon_cpu_s_SYSTEM, if `cpu`), or in the census round counts its FUSE requests.
struct Round {
  Env& env;
  int system;
  bool census;
  Figures& f;
  View view;
  double time(const std::string& key, const std::function<void()>& work, bool cpu = true) {
    ::sync();
    if (census) env.trace.start(view.path);
    const double cpu0 = cpu_seconds_of(view.pid);
    const double seconds = seconds_of(work);
    view.check_alive(key.c_str());
    if (!census) {
      if (system != kNative && cpu) add(key + "_daemon_cpu_s", cpu_seconds_of(view.pid) - cpu0);
      return seconds;
    }
    return env.trace.stop(key + ", " + kKeys[system]);
  }
  void add(const std::string& key, double value) {
    if (!census) f.add(key + "_" + kKeys[system], value);
  }
};

// A part's rounds side by side, then one census round per FUSE system if tracing is available.
void rounds(Env& env, Figures& f, int n, const std::string& lower, bool copy_lower,
            const std::function<void(Round&)>& body) {
  side_by_side(n + (env.trace.available() ? 1 : 0), 3, [&](int s, int round) {
    if ((s == kFuseOverlayfs && !env.fuse_overlayfs) || (round == n && s == kNative)) return;
    {
      Round r{env, s, round == n, f, View(env, s, lower, copy_lower)};
      body(r);
    }
    ::sync();
  });
}

}  // namespace

void write_suite(const Config& config, Figures& f) {
  const auto t_start = Clock::now();
  const int n = config.rounds_or(5), make_rounds = config.rounds_or(3);
  const int tar_files = config.pick(10'000, 1000), make_files = config.pick(200, 20);
  const std::uint64_t bytes = std::uint64_t(config.pick(1024, 64)) << 20;  // written, read
  ScratchDir root("heddle-write-bench-");                                  // destroyed last
  Env env{root, root / "work"};
  f.set("fuse_overlayfs_available", env.fuse_overlayfs ? 1 : 0);
  std::optional<LoopFs> disk;  // destroyed before the scratch directory, after every view
  if (!config.on_tmp) disk.emplace(root / "disk.img", env.work, 3 * bytes + (4ull << 30), env.log);
  fs::create_directories(env.work);  // --on-tmp

  std::printf("heddle_bench write: creating the sources under %s ...\n", env.work.c_str());
  const std::string empty = env.at("lower-empty"), project = env.at("lower-project"),
                    reads = env.at("lower-read"), tar_tree = env.at("tar-tree"),
                    archive = env.at("archive.tar");
  fs::create_directory(empty);
  make_tar_tree(tar_tree, tar_files);
  const WalkResult expected = walk(tar_tree);
  run({"tar", "-cf", archive, "-C", tar_tree, "."}, {.log = env.log});
  fs::remove_all(tar_tree);
  make_c_project(project, make_files);
  fs::create_directory(reads);
  make_random_file(reads + "/big.bin", bytes);
  const std::uint64_t walk_entries =
      make_tree(reads + "/tree", config.pick(10, 2), config.pick(1000, 250));
  ::setenv("LC_ALL", "C", 1);  // for tar and make

  std::printf("heddle_bench write: 1/4 write + fsync ...\n");
  std::vector<char> data(16 * kChunk);  // random bytes, written round and round
  std::generate(data.begin(), data.end(), std::mt19937(0x7772697465));
  rounds(env, f, n, empty, false, [&](Round& r) {
    const std::string file = r.view.path + "/written.bin", key = "write_seq_1g";  // whatever size
    double write_s = 0;
    const double seconds = r.time(key, [&] {
      const auto t0 = Clock::now();
      UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
      if (!fd) throw_errno("create " + file);
      for (std::uint64_t done = 0; done < bytes; done += kChunk)
        write_all(fd.get(), data.data() + done % data.size(), kChunk, file);
      write_s = seconds_since(t0);
      if (::fsync(fd.get()) != 0 || ::close(fd.release()) != 0) throw_errno("fsync " + file);
    });
    if (fs::file_size(file) != bytes) throw Error(file + ": wrong size", EIO);
    r.view.finish();
    if (!r.view.upper.empty() && fs::file_size(r.view.upper + "/written.bin") != bytes)
      throw Error("not in the upper layer", EIO);
    if (!fs::is_empty(empty)) throw Error(empty + " (the lower layer) changed", EIO);
    r.add(key + "_mibs", static_cast<double>(bytes) / kMiB / seconds);
    r.add(key + "_write_s", write_s);
    r.add(key + "_fsync_s", seconds - write_s);
  });

  std::printf("heddle_bench write: 2/4 tar -x of %d files, then rm -rf ...\n", tar_files);
  rounds(env, f, n, empty, false, [&](Round& r) {
    const std::string dest = r.view.path + "/x";
    fs::create_directory(dest);
    const double tar = r.time("tar_x_10k", [&] {
      run({"tar", "-xf", archive, "-C", dest, "--no-same-owner"}, {.log = env.log});
    });
    const WalkResult got = walk(dest);
    if (got.entries != expected.entries || got.bytes != expected.bytes)
      throw Error(dest + ": tar -x gave another tree", EIO);
    const auto rm_rf = [&] { run({"rm", "-rf", dest}, {.log = env.log}); };
    const double rm = r.time("rm_rf_10k", rm_rf, false);
    if (!fs::is_empty(r.view.path)) throw Error(r.view.path + " not empty after rm -rf", EIO);
    r.view.finish();
    if (r.census)
      f.set(std::string("tar_x_10k_fuse_requests_per_file_") + kKeys[r.system], tar / tar_files);
    r.add("tar_x_10k_ms", tar * 1e3);
    r.add("rm_rf_10k_ms", rm * 1e3);
  });

  std::printf("heddle_bench write: 3/4 make -j2 of %d .c files ...\n", make_files);
  rounds(env, f, make_rounds, project, /*copy_lower=*/true, [&](Round& r) {
    std::string out;
    const auto make = [&] {
      out = run({"make", "-C", r.view.path, "--no-print-directory", "-j2"}, {.log = env.log});
    };
    const double build = r.time("make_j2", make);
    struct stat prog = {}, link = {};
    if (::stat((r.view.path + "/build/prog").c_str(), &prog) != 0 ||
        ::stat((r.view.path + "/build/prog.link").c_str(), &link) != 0 ||
        prog.st_ino != link.st_ino || prog.st_nlink != 2) {
      throw Error(r.view.path + ": make did not leave build/prog and its hard link", EIO);
    }
    const double noop = r.time("make_noop", make, false);  // stats everything
    if (out.find("Nothing to be done") == std::string::npos &&
        out.find("is up to date") == std::string::npos) {
      throw Error("the second make did something: " + out, EIO);
    }
    r.view.finish();
    if (r.census) f.set(std::string("make_j2_fuse_requests_") + kKeys[r.system], build);
    r.add("make_j2_s", build);
    r.add("make_noop_ms", noop * 1e3);
  });

  std::printf("heddle_bench write: 4/4 reads, empty overlay vs read-only ...\n");
  Disturbance d;
  side_by_side(n, 2, [&](int overlay, int) {
    const std::string mode = overlay ? "empty_overlay" : "read_only";
    ReadPasses read{};
    std::pair<double, double> walk_ms;
    d.measure(2, [&] {
      View view(env, kOurs, reads, false, overlay);
      read = read_passes(view.path + "/big.bin", bytes, reads + "/big.bin");
      // One warm walk takes about 40 ms: a single one is noise; the median of 5.
      walk_ms = walk_passes(view.path + "/tree", walk_entries, 5);
      view.check_alive("the reads");
      view.finish();
    });
    const double values[] = {read[0], read[1], read[2], walk_ms.first, walk_ms.second};
    for (std::size_t i = 0; i < std::size(values); ++i) f.add(kReadFigures[i][0] + mode, values[i]);
  });

  // Ratios: ours / the other system; for MiB/s above 1 is better, for times below 1.
  for (const std::string key :
       {"write_seq_1g_mibs", "tar_x_10k_ms", "rm_rf_10k_ms", "make_j2_s", "make_noop_ms"}) {
    const std::string base = key.substr(0, key.rfind('_'));
    for (const System other : {kNative, kFuseOverlayfs})
      f.ratio(base + "_ratio_to_" + kKeys[other], key + "_ours", key + "_" + kKeys[other]);
  }
  for (const auto& [figure, ratio] : kReadFigures)
    f.ratio(ratio + "_ratio_to_read_only", figure + "empty_overlay", figure + "read_only");
  f.set("write_bench_total_s", seconds_since(t_start));
}

}  // namespace heddle::bench
