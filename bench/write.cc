// heddle_bench write: writable mounts (`heddle-fuse-launcher mount --dir LOWER --overlay
// --overlay-dir OV`, through the CLI as a user would) beside the native file system and
// fuse-overlayfs (`-f -o lowerdir=L,upperdir=U,workdir=W`, its defaults) over the same lower
// directory, each round on a fresh mount with an empty upper layer, the systems interleaved:
//  1. a 1 GiB file written with write() of 1 MiB, then fsync() and close(): MiB/s;
//  2. `tar -x` of a 10,000-file archive (0-8 KiB files, 50 per directory), then `rm -rf`;
//  3. `make -j2` of a generated C project (200 .c files, an archive, a link, a hard link), then
//     a second `make -j2` with nothing to do;
//  4. ours writable with an empty overlay against ours read-only: a 1 GiB read cold, second and
//     warm, and a walk of 10,000 empty files cold and warm (the median of 5): "unchanged".
// Also the daemons' CPU time (tar -x, write, make), and in one extra untimed round
// per FUSE system a census of its FUSE requests by opcode (the fuse:fuse_request_send
// tracepoint in a private tracefs instance). Everything is written on a fresh ext4 (with a
// journal) on a loop device: this VM's / has no journal, where each new inode costs a scan of
// the recently deleted ones. --on-tmp uses /tmp's own file system.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "heddle/launcher/mountinfo.h"
#include "heddle/unique_fd.h"
#include "support.h"

namespace heddle::bench {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
enum System { kOurs, kNative, kFuseOverlayfs };
constexpr const char* kKeys[] = {"ours", "native", "fuse_overlayfs"};

// The FUSE requests of one mount, by opcode, from a private tracefs instance (kernel >= 6.15).
class FuseTrace {
 public:
  FuseTrace() {
    dir_ = "/sys/kernel/tracing/instances/heddle-bench-" + std::to_string(::getpid());
    event_ = dir_ + "/events/fuse/fuse_request_send";
    if (::mkdir(dir_.c_str(), 0700) != 0) {
      dir_.clear();
    } else if (::access((event_ + "/enable").c_str(), W_OK) != 0 ||
               !put(dir_ + "/buffer_size_kb", "16384")) {
      remove();
    }
  }
  ~FuseTrace() { remove(); }
  [[nodiscard]] bool available() const { return !dir_.empty(); }
  void start(const std::string& mountpoint) {
    const auto entry = launcher::top_mount_at(mountpoint);
    if (!entry) throw Error("no mount at " + mountpoint, ENOENT);
    const unsigned dev =
        (static_cast<unsigned>(entry->major) << 20) | static_cast<unsigned>(entry->minor);
    if (!put(event_ + "/enable", "0") ||
        !put(event_ + "/filter", "connection == " + std::to_string(dev)) ||
        !put(dir_ + "/trace", "") || !put(event_ + "/enable", "1")) {
      throw Error("cannot set up the trace in " + dir_, EIO);
    }
  }
  std::map<std::string, std::uint64_t> stop() {
    put(event_ + "/enable", "0");
    std::map<std::string, std::uint64_t> counts;
    std::ifstream in(dir_ + "/trace");
    for (std::string line; std::getline(in, line);) {
      const auto open = line.find("(FUSE_"), close = line.find(')', open);
      if (line[0] != '#' && open != std::string::npos && close != std::string::npos)
        ++counts[line.substr(open + 6, close - open - 6)];
    }
    return counts;
  }

 private:
  static bool put(const std::string& path, const std::string& value) {
    std::ofstream out(path);
    return static_cast<bool>(out << value << "\n" << std::flush);
  }
  void remove() {
    if (dir_.empty()) return;
    put(event_ + "/enable", "0");
    ::rmdir(dir_.c_str());
    dir_.clear();
  }
  std::string dir_, event_;
};

struct Env {
  const Config& config;
  const ScratchDir& root;  // mount points, the log
  std::string work;        // sources, native directories, upper layers
  std::string launcher = own_bin_dir() + "/heddle-fuse-launcher";
  std::string log = root / "tools.log";  // stderr of the launcher, fuse-overlayfs and the tools
  bool fuse_overlayfs = on_path("fuse-overlayfs");
  FuseTrace trace;
  int serial = 0;  // fresh names
  [[nodiscard]] std::string at(const std::string& name) const { return work + "/" + name; }
};

// Where a workload runs: a fresh native directory (a copy of lower if asked), ours (an empty
// overlay, or read-only without one) or fuse-overlayfs with an empty upper layer. finish()
// removes the mount and reports failures; the destructors clean up on every other path.
class View {
 public:
  View(Env& env, System system, const std::string& lower, bool copy_lower, bool overlay = true)
      : env_(env), system_(system) {
    const std::string n = std::to_string(++env.serial);
    if (system == kNative) {
      path = env.at("native-" + n);
      if (copy_lower) {
        run({"cp", "-a", lower, path});
      } else if (::mkdir(path.c_str(), 0755) != 0) {
        throw_errno("mkdir " + path);
      }
      return;
    }
    mountpoint_.emplace(env.root / ("mnt-" + n));
    path = mountpoint_->path();
    if (system == kOurs) {
      std::vector<std::string> argv = {env.launcher, "mount", "--dir", lower};
      if (overlay) {
        upper = env.at("overlay-" + n);
        argv.insert(argv.end(), {"--overlay", "--overlay-dir", upper});
        upper += "/upper";
      }
      argv.insert(argv.end(), {"--mountpoint", path, "--json"});
      std::string out;
      run(argv, {.out = &out, .log = env.log});
      const auto json = nlohmann::json::parse(
          out.substr(out.rfind("\n{") != std::string::npos ? out.rfind("\n{") + 1 : out.find('{')));
      pid = json.at("pid").get<pid_t>();
      supervisor_ = json.value("supervisor_pid", 0);
    } else {
      const std::string state = env.at("fo-" + n);
      upper = state + "/upper";
      for (const auto& dir : {state, upper, state + "/work"}) fs::create_directory(dir);
      const std::string options =
          "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + state + "/work";
      server_.emplace(std::vector<std::string>{"fuse-overlayfs", "-f", "-o", options, path}, path,
                      env.log);
      pid = server_->pid();
    }
    if (!is_mounted(path)) throw Error(path + " is not mounted", 0);
  }
  ~View() {
    if (system_ == kNative) {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  }
  void check_alive(const char* during) const {
    if (pid > 0 && ::kill(pid, 0) != 0)
      throw Error("the daemon of " + path + " died during " + during, 0);
  }
  void finish() {
    if (system_ == kOurs) {
      run({env_.launcher, "unmount", path}, {.log = env_.log});
      // The supervisor holds the overlay's lock until it exits.
      for (const auto t0 = Clock::now(); ::kill(supervisor_, 0) == 0 && seconds_since(t0) < 10;)
        std::this_thread::sleep_for(2ms);
      if (is_mounted(path)) throw Error(path + " is still mounted", EBUSY);
    } else if (system_ == kFuseOverlayfs) {
      server_->finish();
    }
  }
  std::string path, upper;
  pid_t pid = 0;

 private:
  Env& env_;
  System system_;
  std::optional<MountPoint> mountpoint_;  // destroyed last: detaches whatever is left
  std::optional<ServerMount> server_;
  pid_t supervisor_ = 0;
};

// A fresh ext4 (mkfs defaults: with a journal) on a sparse image, through a loop device with
// direct I/O. Unmounted and detached on destruction.
class LoopFs {
 public:
  LoopFs(const std::string& image, const std::string& at, std::uint64_t bytes,
         const std::string& log)
      : mountpoint_(at) {
    std::ofstream{image}.close();  // a sparse image
    fs::resize_file(image, bytes);
    run({"mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0", image},
        {.log = log});
    std::string out;
    run({"losetup", "--find", "--show", "--direct-io=on", image}, {.out = &out, .log = log});
    device_ = out.substr(0, out.find('\n'));
    run({"mount", "-t", "ext4", device_, at}, {.log = log});
    ::chmod(at.c_str(), 0755);
  }
  ~LoopFs() {
    unmount_quietly(mountpoint_.path());
    try {
      run({"losetup", "-d", device_});
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench: losetup -d %s: %s\n", device_.c_str(), e.what());
    }
  }

 private:
  MountPoint mountpoint_;
  std::string device_;
};

void write_file(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  if (!(out << content)) throw Error("write " + path, EIO);
}

// tNN/sN/fNNN.txt: `files` files of 0-8 KiB of letters, 50 per directory.
void make_tar_tree(const std::string& root, int files) {
  std::mt19937_64 random(0x746172);
  char name[64];
  for (int i = 0; i < files; ++i) {
    std::snprintf(name, sizeof name, "/t%02d/s%d", i / 500, (i / 50) % 10);
    if (i % 50 == 0) fs::create_directories(root + name);
    std::snprintf(name, sizeof name, "/t%02d/s%d/f%03d.txt", i / 500, (i / 50) % 10, i % 50);
    std::string content(random() % 8192, 'a');
    for (auto& c : content) c = static_cast<char>('a' + random() % 26);
    write_file(root + name, content);
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
  char buffer[4096];
  for (int m = 0; m < 10; ++m) {
    std::snprintf(buffer, sizeof buffer, "%s/src/m%02d", root.c_str(), m);
    fs::create_directories(buffer);
    std::string header = "#ifndef M" + std::to_string(m) + "_H\n#define M" + std::to_string(m) +
                         "_H\n#include \"common.h\"\n";
    for (int f = 0; f < files / 10; ++f) {
      std::snprintf(buffer, sizeof buffer, "uint64_t m%02d_f%03d_run(uint64_t seed);\n", m, f);
      header += buffer;
      std::snprintf(buffer, sizeof buffer, "  r = m%02d_f%03d_run(r);\n", m, f);
      main_body += buffer;
      std::snprintf(
          buffer, sizeof buffer,
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
          "    v[i].a = mix(seed + i); v[i].b = mix(v[i].a); v[i].c = (double)(v[i].a %% 1000) / "
          "%d.0;\n"
          "    snprintf(v[i].name, sizeof v[i].name, \"m%02d-f%03d-%%zu\", i);\n  }\n}\n"
          "uint64_t m%02d_f%03d_run(uint64_t seed) {\n"
          "  item_t v[64];\n  fill_%d(v, 64, seed);\n"
          "  uint64_t r = sum_%d(v, 64) ^ step_%d(v, 64);\n"
          "  for (int k = 0; k < %d; ++k) r = mix(r + (uint64_t)k + strlen(v[k %% 64].name));\n"
          "  return r;\n}\n",
          m, f, f, f * 31 + m, f, 5 + f % 3, f, 3 + f, m, f, m, f, f, f, f, 4 + f % 8);
      const std::string c_file = buffer;
      std::snprintf(buffer, sizeof buffer, "%s/src/m%02d/f%03d.c", root.c_str(), m, f);
      write_file(buffer, c_file);
    }
    std::snprintf(buffer, sizeof buffer, "%s/include/m%02d.h", root.c_str(), m);
    write_file(buffer, header + "#endif\n");
    std::snprintf(buffer, sizeof buffer, "#include \"m%02d.h\"\n", m);
    main_c += buffer;
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
      "build/prog.link: build/prog\n\tln -f $< $@\n-include $(OBJS:.o=.d) build/prog.d\n.PHONY: "
      "all\n");
}

std::uint64_t count_entries(const std::string& dir) {
  return ::access(dir.c_str(), F_OK) == 0 ? walk(dir).entries : 0;
}

// Times `work` on `view`. In a timed round its seconds and (if cpu_is_a_key) the daemon's CPU
// time become figures (KEY_SYSTEM, KEY_daemon_cpu_s_SYSTEM); in the census round
// (FUSE systems only) its FUSE requests, printed by opcode, and their total, returned.
double measure(Env& env, View& view, System system, bool census, const std::string& key, Figures& f,
               const std::function<void()>& work, bool cpu_is_a_key = true) {
  ::sync();
  if (census) env.trace.start(view.path);
  const double cpu0 = cpu_seconds_of(view.pid);
  const auto t0 = Clock::now();
  work();
  const double seconds = seconds_since(t0);
  view.check_alive(key.c_str());
  const std::string sys = kKeys[system];
  if (census) {
    double total = 0;
    std::printf("census %s, %s:", key.c_str(), sys.c_str());
    for (const auto& [opcode, count] : env.trace.stop()) {
      std::printf(" %s %llu", opcode.c_str(), static_cast<unsigned long long>(count));
      total += static_cast<double>(count);
    }
    std::printf(" (total %.0f)\n", total);
    return total;
  }
  if (system != kNative && cpu_is_a_key)
    f.add(key + "_daemon_cpu_s_" + sys, cpu_seconds_of(view.pid) - cpu0);
  return seconds;
}

// The timed rounds of a part, the systems interleaved (a different one first each round), then
// one census round per FUSE system (traced, untimed) if tracing is available. Whatever a round
// left in the work directory (overlay and upper directories) is removed after it, untimed.
void rounds(Env& env, int n, const std::function<void(System, bool)>& body) {
  for (int round = 0; round < n + (env.trace.available() ? 1 : 0); ++round) {
    for (int i = 0; i < 3; ++i) {
      const auto s = static_cast<System>((round + i) % 3);
      if ((s == kFuseOverlayfs && !env.fuse_overlayfs) || (round == n && s == kNative)) continue;
      check_interrupted();
      body(s, round == n);
      for (const auto& entry : fs::directory_iterator(env.work)) {
        const std::string name = entry.path().filename().string();
        if (name.starts_with("overlay-") || name.starts_with("fo-")) fs::remove_all(entry.path());
      }
      ::sync();
    }
  }
}

}  // namespace

void write_suite(const Config& config, Figures& f) {
  const auto t_start = Clock::now();
  const int n = config.rounds_or(5),
            make_rounds = config.rounds > 0 ? config.rounds : config.pick(3, 2);
  const int tar_files = config.pick(10'000, 1000), make_files = config.pick(200, 20);
  const int walk_dirs = config.pick(10, 2), walk_per_dir = config.pick(1000, 250);
  const std::uint64_t write_bytes = config.pick<std::uint64_t>(1024, 64) << 20,
                      read_bytes = write_bytes;
  ScratchDir root("heddle-write-bench-");  // destroyed last
  Env env{config, root, root / "work"};
  f.set("fuse_overlayfs_available", env.fuse_overlayfs ? 1 : 0);
  std::optional<LoopFs> disk;  // destroyed before the scratch directory, after every view
  if (config.on_tmp) {
    fs::create_directory(env.work);
  } else {
    disk.emplace(root / "disk.img", env.work, (2 * write_bytes + read_bytes) + (4096ull << 20),
                 env.log);
  }

  std::printf("heddle_bench write: creating the sources under %s ...\n", env.work.c_str());
  const std::string empty = env.at("lower-empty"), project = env.at("lower-project"),
                    reads = env.at("lower-read");
  const std::string tar_tree = env.at("tar-tree"), archive = env.at("archive.tar");
  fs::create_directory(empty);
  make_tar_tree(tar_tree, tar_files);
  const WalkResult expected = walk(tar_tree);
  run({"tar", "-cf", archive, "-C", tar_tree, "."}, {.log = env.log});
  fs::remove_all(tar_tree);
  make_c_project(project, make_files);
  fs::create_directory(reads);
  make_random_file(reads + "/big.bin", read_bytes);
  make_tree(reads + "/tree", walk_dirs, walk_per_dir);
  ::setenv("LC_ALL", "C", 1);  // for tar and make

  std::printf("heddle_bench write: 1/4 write + fsync ...\n");
  std::vector<char> data(16 * kChunk);  // random bytes, written round and round
  std::generate(data.begin(), data.end(), std::mt19937(0x7772697465));
  rounds(env, n, [&](System s, bool census) {
    View view(env, s, empty, false);
    const std::string file = view.path + "/written.bin", key = "write_seq_1g";  // whatever the size
    double write_s = 0;
    const double seconds = measure(env, view, s, census, key, f, [&] {
      const auto t0 = Clock::now();
      UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
      if (!fd) throw_errno("create " + file);
      for (std::uint64_t done = 0; done < write_bytes; done += kChunk)
        write_all(fd.get(), data.data() + done % data.size(), kChunk, file);
      write_s = seconds_since(t0);
      if (::fsync(fd.get()) != 0 || ::close(fd.release()) != 0) throw_errno("fsync " + file);
    });
    if (fs::file_size(file) != write_bytes) throw Error(file + ": wrong size", EIO);
    view.finish();
    if (!view.upper.empty() && fs::file_size(view.upper + "/written.bin") != write_bytes)
      throw Error("not in the upper layer", EIO);
    if (count_entries(empty) != 0) throw Error(empty + " (the lower layer) changed", EIO);
    if (census) return;
    f.add(key + "_mibs_" + kKeys[s], static_cast<double>(write_bytes) / kMiB / seconds);
    f.add(key + "_write_s_" + kKeys[s], write_s);
    f.add(key + "_fsync_s_" + kKeys[s], seconds - write_s);
  });

  std::printf("heddle_bench write: 2/4 tar -x of %d files, then rm -rf ...\n", tar_files);
  rounds(env, n, [&](System s, bool census) {
    View view(env, s, empty, false);
    const std::string dest = view.path + "/x";
    fs::create_directory(dest);
    const double tar = measure(env, view, s, census, "tar_x_10k", f, [&] {
      run({"tar", "-xf", archive, "-C", dest, "--no-same-owner"}, {.log = env.log});
    });
    const WalkResult got = walk(dest);
    if (got.entries != expected.entries || got.bytes != expected.bytes)
      throw Error(dest + ": tar -x gave another tree", EIO);
    const auto rm_rf = [&] { run({"rm", "-rf", dest}, {.log = env.log}); };
    const double rm = measure(env, view, s, census, "rm_rf_10k", f, rm_rf, false);
    if (count_entries(view.path) != 0) throw Error(view.path + " not empty after rm -rf", EIO);
    view.finish();
    if (census) {
      f.set(std::string("tar_x_10k_fuse_requests_per_file_") + kKeys[s], tar / tar_files);
      return;
    }
    f.add(std::string("tar_x_10k_ms_") + kKeys[s], tar * 1e3);
    f.add(std::string("rm_rf_10k_ms_") + kKeys[s], rm * 1e3);
  });

  std::printf("heddle_bench write: 3/4 make -j2 of %d .c files ...\n", make_files);
  rounds(env, make_rounds, [&](System s, bool census) {
    View view(env, s, project, /*copy_lower=*/true);
    std::string out;
    const auto make = [&] {
      run({"make", "-C", view.path, "--no-print-directory", "-j2"}, {.out = &out, .log = env.log});
    };
    const double build = measure(env, view, s, census, "make_j2", f, make);
    struct stat prog = {}, link = {};
    if (::stat((view.path + "/build/prog").c_str(), &prog) != 0 ||
        ::stat((view.path + "/build/prog.link").c_str(), &link) != 0 ||
        prog.st_ino != link.st_ino || prog.st_nlink != 2) {
      throw Error(view.path + ": make did not leave build/prog and its hard link", EIO);
    }
    const double noop =
        measure(env, view, s, census, "make_noop", f, make, false);  // stats everything
    if (out.find("Nothing to be done") == std::string::npos &&
        out.find("is up to date") == std::string::npos) {
      throw Error("the second make did something: " + out, EIO);
    }
    view.finish();
    if (census) {
      f.set(std::string("make_j2_fuse_requests_") + kKeys[s], build);
      return;
    }
    f.add(std::string("make_j2_s_") + kKeys[s], build);
    f.add(std::string("make_noop_ms_") + kKeys[s], noop * 1e3);
  });

  std::printf("heddle_bench write: 4/4 reads, empty overlay vs read-only ...\n");
  const std::uint64_t walk_entries = static_cast<std::uint64_t>(walk_dirs) * (1 + walk_per_dir);
  Disturbance d;
  for (int round = 0; round < n; ++round) {
    for (const bool overlay : {round % 2 == 1, round % 2 == 0}) {
      const std::string mode = overlay ? "empty_overlay" : "read_only";
      ReadPasses read;
      double walk_cold = 0, walk_warm = 0;
      undisturbed(2, d, [&] {
        View view(env, kOurs, reads, false, overlay);
        read = read_passes(view.path + "/big.bin", read_bytes);
        if (round == 0) check_same_ends(view.path + "/big.bin", reads + "/big.bin", read_bytes);
        drop_caches("3");
        walk_cold = walk_ms(view.path + "/tree", walk_entries);
        std::vector<double> warm_walks;  // one takes about 40 ms: a single one is noise
        for (int i = 0; i < 5; ++i)
          warm_walks.push_back(walk_ms(view.path + "/tree", walk_entries));
        walk_warm = median(warm_walks);
        view.check_alive("the reads");
        view.finish();
        for (const auto& entry : fs::directory_iterator(env.work)) {
          if (entry.path().filename().string().starts_with("overlay-"))
            fs::remove_all(entry.path());
        }
      });
      f.add("overlay_read_cold_mibs_" + mode, read.cold);
      f.add("diag.overlay_read_second_mibs_" + mode, read.second);
      f.add("overlay_read_warm_mibs_" + mode, read.warm);
      f.add("overlay_walk10k_cold_ms_" + mode, walk_cold);
      f.add("overlay_walk10k_warm_ms_" + mode, walk_warm);
    }
  }

  // Ratios: ours / the other system; for MiB/s above 1 is better, for times below 1.
  for (const std::string key :
       {"write_seq_1g_mibs", "tar_x_10k_ms", "rm_rf_10k_ms", "make_j2_s", "make_noop_ms"}) {
    const std::string base = key.substr(0, key.rfind('_'));
    for (const System other : {kNative, kFuseOverlayfs})
      f.ratio(base + "_ratio_to_" + kKeys[other], key + "_ours", key + "_" + kKeys[other]);
  }
  const std::pair<const char*, const char*> reads_ratios[] = {
      {"empty_overlay_cold_seq_read_ratio_to_read_only", "overlay_read_cold_mibs_"},
      {"empty_overlay_second_seq_read_ratio_to_read_only", "diag.overlay_read_second_mibs_"},
      {"empty_overlay_warm_seq_read_ratio_to_read_only", "overlay_read_warm_mibs_"},
      {"empty_overlay_walk10k_cold_ratio_to_read_only", "overlay_walk10k_cold_ms_"},
      {"empty_overlay_walk10k_warm_ratio_to_read_only", "overlay_walk10k_warm_ms_"}};
  for (const auto& [key, figure] : reads_ratios)
    f.ratio(key, std::string(figure) + "empty_overlay", std::string(figure) + "read_only");
  f.set("write_bench_total_s", seconds_since(t_start));
}

}  // namespace heddle::bench
