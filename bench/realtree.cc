// heddle_bench realtree: a real tree nobody here wrote (/usr/include, topped up from other system
// trees to 5,000 files) copied into a scratch directory, served as a directory mount of that copy
// and as a git thread of a scratch repository committed from it, beside the copy itself (the
// repository's checkout): grep -r and tar -c, cold (a fresh mount, caches dropped) and warm.
#include "support.h"

namespace heddle::bench {
namespace {

enum System { kNative, kGit, kDir };
constexpr const char* kNames[] = {"native", "git", "dir"};

// Through bash for the redirections, in the tree ($0). grep's pattern matches nothing, so that it
// reads every byte (with its output on /dev/null it stops a file at its first match); GNU tar
// does not read the files it would archive to /dev/null, so its archive goes there through cat.
const std::pair<std::string, const char*> kTools[] = {
    {"grep", "cd \"$0\" && { grep -r -F -e 'heddle-bench: in no header' . >/dev/null; test $? = 1; }"},
    {"tar_c", "set -o pipefail; cd \"$0\" && tar -cf - . | cat >/dev/null"}};

double tool_ms(const char* script, const std::string& tree) {
  const auto t0 = Clock::now();
  run({"/bin/bash", "-c", script, tree}, {.env = {"LC_ALL=C"}});
  return ms_since(t0);
}

}  // namespace

void realtree_suite(const Config& config, Figures& f) {
  const int rounds = config.rounds_or(5), warm_passes = 3;
  const std::uint64_t wanted = config.pick(5000, 500);
  ScratchDir root("heddle-realtree-");
  const std::string tree = root / "tree", repo = root / "tree.git", mountpoint = root / "mnt";
  const auto t0 = Clock::now();
  fs::create_directory(tree);
  std::uint64_t files = 0;
  for (const std::string source : {"/usr/include", "/usr/share/perl", "/usr/lib/python3"}) {
    if (files >= wanted || !fs::is_directory(source)) continue;
    std::printf("heddle_bench realtree: copying %s ...\n", source.c_str());
    run({"cp", "-a", config.quick ? source + "/linux" : source, tree + "/" + fs::path(source).filename().string()});
    const std::string names = run({"find", tree, "-type", "f"});
    files = static_cast<std::uint64_t>(std::ranges::count(names, '\n'));
  }
  if (files < wanted) throw Error("found " + std::to_string(files) + " system files to copy", ENOENT);
  f.set("realtree_files", static_cast<double>(files));
  f.set("realtree_mib", static_cast<double>(walk(tree).bytes) / kMiB);
  std::printf("heddle_bench realtree: committing %s ...\n", tree.c_str());
  git({"init", "-q", "--bare", "-b", "main", repo});
  git({"--git-dir=" + repo, "--work-tree=" + tree, "add", "-A"});
  git({"--git-dir=" + repo, "--work-tree=" + tree, "commit", "-q", "-m", "a real tree"});
  f.set("realtree_build_s", seconds_since(t0));

  std::printf("heddle_bench realtree: grep -r and tar -c, native | git | dir ...\n");
  Disturbance d;
  side_by_side(rounds, 3, [&](int s, int) {
    for (const auto& [tool, script] : kTools) {
      double cold = 0;
      std::vector<double> warm;
      d.measure(1, [&] {
        std::optional<LiveMount> mount;
        if (s != kNative) {
          mount.emplace(s == kGit ? ipc::Source{ipc::GitSource{repo, "main"}} : ipc::DirSource{tree},
                        mountpoint);
        }
        const std::string path = mount ? mountpoint : tree;
        drop_caches("3");
        cold = tool_ms(script, path);
        warm.clear();
        while (std::ssize(warm) < warm_passes) warm.push_back(tool_ms(script, path));
        if (mount) mount->unmount();
      });
      f.add("realtree_" + tool + "_cold_ms_" + kNames[s], cold);
      f.add("realtree_" + tool + "_warm_ms_" + kNames[s], median(warm));
    }
  });
  f.set("realtree_discarded_attempts", d.discarded);
  f.set("realtree_disturbed_half_rounds", d.disturbed);
  // Ratios: time ours / native (below 1 is faster), e.g. realtree_grep_warm_git_ratio.
  for (const auto& [tool, script] : kTools) {
    for (const std::string when : {"_cold_", "_warm_"}) {
      const std::string key = "realtree_" + tool + when;
      for (const System s : {kGit, kDir})
        f.ratio(key + kNames[s] + "_ratio", key + "ms_" + kNames[s], key + "ms_native");
    }
  }
}

}  // namespace heddle::bench
