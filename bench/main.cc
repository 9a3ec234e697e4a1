// heddle_bench SUITE [--rounds N] [--quick] [--on-tmp]: one suite of benchmarks, every figure
// beside its physical limit or a peer measured in the same run (see bench/README.md). Ends with
// the RESULT lines that bench/report aggregates.
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>

#include "support.h"

namespace heddle::bench {
int echo_main(std::size_t size, const std::string& file);
void supervisor_suite(const Config&, Figures&);
void fs_suite(const Config&, Figures&);
void git_suite(const Config&, Figures&);
void write_suite(const Config&, Figures&);
void scaling_suite(const Config&, Figures&);
void unprivileged_suite(const Config&, Figures&);
void realtree_suite(const Config&, Figures&);
}  // namespace heddle::bench

namespace {

using namespace heddle::bench;

// The suites; bench/run runs all but scaling. What each measures and why: bench/README.md.
constexpr struct {
  const char* name;
  void (*run)(const Config&, Figures&);
  const char* what;
} kSuites[] = {
    {"supervisor", supervisor_suite, "Status round trip, spawn, idle memory, 100 mounts"},
    {"fs", fs_suite, "the directory backend vs native and passthrough_ll: reads, fio, walks"},
    {"git", git_suite, "the git backend vs native: a 1 GiB blob, a walk, spawn, memory"},
    {"write", write_suite, "writable mounts vs native and fuse-overlayfs: write, tar, make"},
    {"scaling", scaling_suite, "1 vs 16 readers of a git thread's blobs (run it unpinned)"},
    {"unprivileged", unprivileged_suite, "the CLI's mount and unmount as root vs heddle-test"},
    {"realtree", realtree_suite, "grep -r and tar -c of /usr/include: git thread, directory, native"},
};

int usage(FILE* out, int code) {
  std::fprintf(out, "usage: heddle_bench SUITE [--rounds N] [--quick] [--on-tmp] (as root)\n");
  for (const auto& s : kSuites) std::fprintf(out, "  %-12s %s\n", s.name, s.what);
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc == 4 && std::string_view(argv[1]) == "echo")  // the supervisor suite's peer
    return echo_main(std::stoul(argv[2]), argv[3]);
  const auto* suite = std::end(kSuites);
  Config config;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const auto named = std::ranges::find_if(kSuites, [&](const auto& s) { return arg == s.name; });
    if (arg == "--quick" || arg == "--on-tmp") {
      (arg == "--quick" ? config.quick : config.on_tmp) = true;
    } else if (arg == "--rounds" && i + 1 < argc && std::atoi(argv[i + 1]) > 0) {
      config.rounds = std::atoi(argv[++i]);
    } else if (named == std::end(kSuites) || suite != std::end(kSuites)) {
      const bool help = arg == "-h" || arg == "--help";
      return usage(help ? stdout : stderr, help ? 0 : 2);
    } else {
      suite = named;
    }
  }
  if (suite == std::end(kSuites)) return usage(stderr, 2);
  try {
    if (::geteuid() != 0) throw heddle::Error("must run as root (FUSE mounts, drop_caches)", EPERM);
    struct sigaction action {};
    action.sa_handler = [](int) { g_interrupted = 1; };
    for (const int signo : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(signo, &action, nullptr);
    ::signal(SIGPIPE, SIG_IGN);  // a dead helper must become an EPIPE we unwind from
    // The worker logs at info by default: a few lines per spawn would drown the report.
    ::setenv("HEDDLE_FUSE_LOG", "warn", /*overwrite=*/0);
    spdlog::set_level(spdlog::level::warn);
    ::umask(022);
    const auto t0 = Clock::now();
    Figures figures;
    suite->run(config, figures);
    figures.print();
    std::printf("heddle_bench %s: done in %.1f s\n", suite->name, seconds_since(t0));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "heddle_bench %s: FAILED: %s\n", suite->name, e.what());
    return 1;
  }
}
