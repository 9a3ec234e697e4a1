// heddle_bench SUITE [--rounds N] [--quick] [--on-tmp]: one suite of benchmarks, every figure
// beside its physical limit or a peer measured in the same run (see bench/README.md). Ends with
// the figures table and the RESULT lines that `heddle_bench report` (report.cc) aggregates.
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "support.h"

namespace heddle::bench {
int echo_main(int fd);
int report_main(const std::string& out, const std::vector<std::string>& files);
void supervisor_suite(const Config&, Figures&);
void fs_suite(const Config&, Figures&);
void git_suite(const Config&, Figures&);
void write_suite(const Config&, Figures&);
}  // namespace heddle::bench

namespace {

using namespace heddle::bench;

struct Suite {
  const char* name;
  void (*run)(const Config&, Figures&);
  const char* what;
};

// The scenarios, one line each; what each measures and why: bench/README.md.
constexpr Suite kSuites[] = {
    {"supervisor", supervisor_suite,
     "Status round trip vs a raw socketpair; spawn vs the unsandboxed worker and bwrap + "
     "passthrough_ll; idle memory; 100 mounts (--rounds: Status round trips, default 10000)"},
    {"fs", fs_suite,
     "the directory backend vs native and passthrough_ll: 1 GiB reads, fio, walks of 10k and 50k "
     "files (--rounds default 5)"},
    {"git", git_suite,
     "the git backend vs native: a streamed 1 GiB blob, a 50k walk, spawn 100k vs 10 files, "
     "worker memory (--rounds default 5)"},
    {"write", write_suite,
     "writable mounts vs native and fuse-overlayfs: 1 GiB write + fsync, tar -x, make -j2; reads "
     "through an empty overlay vs read-only (--rounds default 5, make 3; --on-tmp)"},
};

void usage(FILE* out) {
  std::fprintf(out, "usage: heddle_bench SUITE [--rounds N] [--quick] [--on-tmp]\n");
  for (const Suite& s : kSuites) std::fprintf(out, "  %-10s %s\n", s.name, s.what);
  std::fprintf(out, "Must run as root (FUSE mounts, drop_caches).\n");
  std::fprintf(out, "       heddle_bench report OUT_PREFIX RESULT_FILE...: bench/run's summary\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc >= 4 && std::string_view(argv[1]) == "report")
    return report_main(argv[2], {argv + 3, argv + argc});
  if (argc == 2 && std::string_view(argv[1]) == "echo") return echo_main(3);  // supervisor's peer
  const Suite* suite = nullptr;
  Config config;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") return usage(stdout), 0;
    if (arg == "--quick") {
      config.quick = true;
    } else if (arg == "--on-tmp") {
      config.on_tmp = true;
    } else if (arg == "--rounds" && i + 1 < argc && std::atoi(argv[i + 1]) > 0) {
      config.rounds = std::atoi(argv[++i]);
    } else {
      for (const Suite& s : kSuites) suite = arg == s.name ? &s : suite;
      if (suite == nullptr || arg != suite->name) return usage(stderr), 2;
    }
  }
  if (suite == nullptr) return usage(stderr), 2;
  try {
    if (::geteuid() != 0) throw heddle::Error("must run as root (FUSE mounts, drop_caches)", EPERM);
    install_signal_handlers();
    // The worker logs at info by default: a few lines per spawn would drown the report.
    ::setenv("HEDDLE_FUSE_LOG", "warn", /*overwrite=*/0);
    spdlog::set_level(spdlog::level::warn);
    ::umask(022);
    const auto t0 = Clock::now();
    Figures figures;
    suite->run(config, figures);
    figures.print(std::string("heddle_bench ") + suite->name);
    std::printf("heddle_bench %s: done in %.1f s\n", suite->name, seconds_since(t0));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "heddle_bench %s: FAILED: %s\n", suite->name, e.what());
    return 1;
  }
}
