// heddle_bench realtree: grep -r and tar -c, cold and warm, of a tree nobody here wrote
// (/usr/include, 5,000 files at least) as a directory mount and a git thread, beside a copy.
#include "support.h"

namespace heddle::bench {

void realtree_suite(const Config& config, Figures& f) {
  const int rounds = config.rounds_or(3);  // 256 MiB here: a cold grep takes seconds
  const std::uint64_t wanted = config.pick(5000, 500);
  ScratchDir root("heddle-realtree-");
  const std::string tree = root / "tree", repo = root / "tree.git", mountpoint = root / "mnt";
  const auto t0 = Clock::now();
  fs::create_directory(tree);
  std::uint64_t files = 0;
  for (const std::string from : {"/usr/include", "/usr/share/perl", "/usr/lib/python3"}) {
    if (files >= wanted || !fs::is_directory(from)) continue;
    run({"cp", "-a", config.quick ? from + "/linux" : from, tree + from.substr(from.rfind('/'))});
    files = static_cast<std::uint64_t>(std::ranges::count(run({"find", tree, "-type", "f"}), '\n'));
  }
  if (files < wanted) throw Error("only " + std::to_string(files) + " files to copy", ENOENT);
  f.set("realtree_files", static_cast<double>(files));
  f.set("realtree_mib", static_cast<double>(walk(tree).bytes) / kMiB);
  git({"init", "-q", "--bare", "-b", "main", repo});
  git({"--git-dir=" + repo, "--work-tree=" + tree, "add", "-A"});
  // As git leaves it: the commit's auto gc (in the foreground here) packs its new objects.
  git({"--git-dir=" + repo, "--work-tree=" + tree, "-c", "gc.auto=6700", "-c",
       "gc.autoDetach=false", "commit", "-q", "-m", "a real tree"});
  f.set("realtree_build_s", seconds_since(t0));

  // In the tree ($0). grep matches nothing: it reads every byte (with its output on /dev/null it
  // stops a file at its first match); GNU tar does not read files it would archive to /dev/null.
  const std::pair<std::string, const char*> tools[] = {
      {"grep",
       "cd \"$0\" && { grep -r -F -e 'heddle-bench: no header' . >/dev/null; [ $? = 1 ]; }"},
      {"tar_c", "set -o pipefail; cd \"$0\" && tar -cf - . | cat >/dev/null"}};
  const char* systems[] = {"native", "git", "dir"};
  const ipc::Source sources[] = {ipc::DirSource{}, ipc::GitSource{repo, "main"},
                                 ipc::DirSource{tree}};
  std::printf("heddle_bench realtree: grep -r and tar -c: native | git | dir ...\n");
  ::setenv("LC_ALL", "C", 1);  // grep's fastest
  Disturbance d;
  side_by_side(rounds, 3, [&](int s, int) {
    for (const auto& [tool, script] : tools) {
      std::vector<double> ms;  // cold, then 3 warm
      d.measure(1, [&] {
        std::optional<LiveMount> mount;
        if (s != 0) mount.emplace(sources[s], mountpoint);
        drop_caches("3");
        const auto tool_run = [&] { run({"/bin/bash", "-c", script, mount ? mountpoint : tree}); };
        for (ms.clear(); ms.size() < 4;) ms.push_back(1e3 * seconds_of(tool_run));
        if (mount) mount->unmount();
      });
      f.add("realtree_" + tool + "_cold_ms_" + systems[s], ms[0]);
      f.add("realtree_" + tool + "_warm_ms_" + systems[s],
            median(std::vector(ms.begin() + 1, ms.end())));
    }
  });
  d.report(f, "realtree_");
  for (const auto& [tool, script] : tools)  // time ours / native: realtree_grep_warm_git_ratio
    for (const std::string& key : {"realtree_" + tool + "_cold_", "realtree_" + tool + "_warm_"})
      for (const std::string system : {"git", "dir"})
        f.ratio(key + system + "_ratio", key + "ms_" + system, key + "ms_native");
}

}  // namespace heddle::bench
