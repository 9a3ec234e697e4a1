// heddle_bench SUITE [--rounds N] [--quick] [--on-tmp]: one suite of benchmarks (bench/README.md),
// ending with the RESULT lines that bench/report aggregates.
#include <spdlog/spdlog.h>

#include "support.h"

namespace heddle::bench {
int echo_main(std::size_t size, const std::string& file);
using Suite = void(const Config&, Figures&);
Suite supervisor_suite, fs_suite, git_suite, write_suite, scaling_suite, unprivileged_suite,
    realtree_suite;
}  // namespace heddle::bench

namespace {

using namespace heddle::bench;

// The suites; bench/run runs all but scaling. What each measures and why: bench/README.md.
constexpr struct { const char* name; Suite* run; const char* what; } kSuites[] = {
    {"supervisor", supervisor_suite, "Status round trip, spawn, idle memory, 100 mounts"},
    {"fs", fs_suite, "the directory backend vs native and passthrough_ll: reads, fio, walks"},
    {"git", git_suite, "the git backend vs native: a 1 GiB blob, a walk, spawn, memory"},
    {"write", write_suite, "writable mounts vs native and fuse-overlayfs: write, tar, make"},
    {"scaling", scaling_suite, "1 vs 16 readers of a git thread's blobs (run it unpinned)"},
    {"unprivileged", unprivileged_suite, "the CLI's mount and unmount as root vs heddle-test"},
    {"realtree", realtree_suite,
     "grep -r and tar -c of /usr/include: git thread, directory, native"},
};

int usage(FILE* out, int code) {
  std::fprintf(out, "usage: heddle_bench SUITE [--rounds N] [--quick] [--on-tmp] (as root)\n");
  for (const auto& s : kSuites) std::fprintf(out, "  %-12s %s\n", s.name, s.what);
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  if (args.size() == 3 && args[0] == "echo")  // the supervisor suite's peer
    return echo_main(std::stoul(argv[2]), argv[3]);
  if (!args.empty() && (args[0] == "-h" || args[0] == "--help")) return usage(stdout, 0);
  const auto* suite = std::ranges::find_if(
      kSuites, [&](const auto& s) { return !args.empty() && args[0] == s.name; });
  Config config;
  for (std::size_t i = 1; suite != std::end(kSuites) && i < args.size(); ++i) {
    const int n = i + 1 < args.size() ? std::atoi(args[i + 1].data()) : 0;  // argv: 0-terminated
    if (args[i] == "--quick" || args[i] == "--on-tmp") {
      (args[i] == "--quick" ? config.quick : config.on_tmp) = true;
    } else if (args[i] == "--rounds" && n > 0) {
      config.rounds = n, ++i;
    } else {
      suite = std::end(kSuites);
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
