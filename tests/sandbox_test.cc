// What the worker's sandbox looks like from /proc, checked without trusting our own code.
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <map>
#include <string>
#include <vector>

#include "heddle/launcher/launcher_environment.h"
#include "heddle/launcher/supervisor.h"
#include "heddle/sandbox/facts.h"
#include "support/test_support.h"

namespace heddle::test {
namespace {

using namespace std::chrono_literals;

class SandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HEDDLE_REQUIRE_MOUNT();
    tree_ = std::make_unique<ScratchTree>();
    tree_->write("file.txt", "content\n");
    launcher::SupervisorOptions options = launcher::LauncherEnvironment::read().supervisor_options();
    options.stop_grace = 500ms;
    supervisor_ = launcher::Supervisor::spawn(
        ipc::MountSpec::directory(tree_->source().string(), tree_->mountpoint().string()),
        options);
    proc_ = "/proc/" + std::to_string(supervisor_->pid());
  }
  void TearDown() override {
    if (supervisor_) supervisor_->unmount();
    if (tree_) {
      EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
    }
  }
  std::string status(const std::string& key) const {
    return proc_status_field(supervisor_->pid(), key);
  }

  std::unique_ptr<ScratchTree> tree_;
  std::unique_ptr<launcher::Supervisor> supervisor_;
  std::string proc_;
};

// What the worker serves, and where, comes in its bootstrap message: its argv, which anyone
// on the host may read, names no path but its own binary.
TEST_F(SandboxTest, TheWorkersCommandLineNamesNoSourceAndNoMountpoint) {
  const std::string cmdline = slurp(proc_ + "/cmdline");
  std::vector<std::string> argv;
  for (std::size_t at = 0; at < cmdline.size();) {
    const std::size_t end = cmdline.find('\0', at);
    argv.push_back(cmdline.substr(at, end - at));
    at = end == std::string::npos ? cmdline.size() : end + 1;
  }
  ASSERT_EQ(argv.size(), 3u) << cmdline;
  EXPECT_EQ(argv[1], "--bootstrap-fd");
  EXPECT_EQ(argv[2], "3");
  for (const fs::path& path : {tree_->source(), tree_->mountpoint(), tree_->root()}) {
    EXPECT_EQ(cmdline.find(path.string()), std::string::npos) << path << " in " << cmdline;
  }
}

TEST_F(SandboxTest, AllFiveCapabilitySetsAreEmpty) {
  for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    EXPECT_EQ(status(set), "0000000000000000") << set;
  }
}

// Non-dumpable: no core, no ptrace or /proc/PID/mem from its own uid; the kernel shows it by
// giving the process's /proc files to root.
TEST_F(SandboxTest, TheWorkerIsNotDumpableAndHasResourceLimits) {
  struct stat st {};
  ASSERT_EQ(::stat((proc_ + "/environ").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u) << "the worker is dumpable";
  std::map<std::string, std::string> limits;
  std::istringstream lines(slurp(proc_ + "/limits"));
  for (std::string line; std::getline(lines, line);) {
    if (line.size() > 26) limits[line.substr(0, 26)] = line.substr(26);
  }
  const auto soft_and_hard = [&](const std::string& name) {
    std::istringstream values(limits[name]);
    std::string soft, hard;
    values >> soft >> hard;
    return soft + "/" + hard;
  };
  EXPECT_EQ(soft_and_hard("Max core file size        "), "0/0");
  EXPECT_EQ(soft_and_hard("Max open files            "), "4096/4096");
  EXPECT_EQ(soft_and_hard("Max processes             "), "256/256");
}

TEST_F(SandboxTest, NoNewPrivsAndSeccompFilterAreSet) {
  EXPECT_EQ(status("NoNewPrivs"), "1");
  EXPECT_EQ(status("Seccomp"), "2");
}

TEST_F(SandboxTest, RunsAsItsOwnIdentityWithNoMappingToHostRoot) {
  const std::string uid = std::to_string(expected_worker_uid());
  const std::string gid = std::to_string(expected_worker_gid());
  EXPECT_EQ(status("Uid"), uid + "\t" + uid + "\t" + uid + "\t" + uid);
  EXPECT_EQ(status("Gid"), gid + "\t" + gid + "\t" + gid + "\t" + gid);
  // Root and newgidmap leave setgroups allowed, so the groups go; a caller mapping only
  // itself cannot drop its own groups (the kernel denies setgroups), which grant nothing new.
  if (running_as_root() || subordinate_start("/etc/subgid")) {
    EXPECT_EQ(status("Groups"), "");
  } else {
    EXPECT_EQ(slurp(proc_ + "/setgroups"), "deny\n");
  }
  for (const char* map : {"/uid_map", "/gid_map"}) {
    std::istringstream lines(slurp(proc_ + map));
    long inside = -1;
    long outside = -1;
    long count = -1;
    int entries = 0;
    while (lines >> inside >> outside >> count) {
      ++entries;
      EXPECT_NE(outside, 0) << map << " maps to host id 0";
      EXPECT_EQ(count, 1) << map;
    }
    EXPECT_EQ(entries, 1) << map;
  }
}

TEST_F(SandboxTest, EveryNamespaceDiffersFromOurs) {
  for (const char* ns : {"user", "mnt", "pid", "net", "ipc", "uts", "cgroup"}) {
    const auto ours = fs::read_symlink(std::string("/proc/self/ns/") + ns);
    const auto theirs = fs::read_symlink(proc_ + "/ns/" + ns);
    EXPECT_NE(ours, theirs) << ns;
  }
  EXPECT_EQ(status("NSpid").substr(status("NSpid").rfind('\t') + 1), "1") << "not PID 1 inside";
}

TEST_F(SandboxTest, TheRootIsMinimalAndHoldsTheSourceReadOnly) {
  const fs::path root = proc_ + "/root";
  for (const char* absent : {"home", "root", "etc/shadow", "etc/passwd", "var", "dev/sda", "oldroot"}) {
    EXPECT_FALSE(fs::exists(root / absent)) << absent << " is visible to the worker";
  }
  // All of /etc it gets is the dynamic loader's cache.
  std::vector<std::string> etc;
  for (const auto& entry : fs::directory_iterator(root / "etc")) etc.push_back(entry.path().filename());
  EXPECT_EQ(etc, std::vector<std::string>{"ld.so.cache"});
  EXPECT_TRUE(fs::exists(root / "usr"));
  EXPECT_TRUE(fs::exists(root / tree_->source().relative_path() / "file.txt"));
  // The worker's own view of its mounts: the source, and the root itself, are read-only.
  std::istringstream mounts(slurp(proc_ + "/mountinfo"));
  bool source_seen = false;
  for (std::string line; std::getline(mounts, line);) {
    std::istringstream fields(line);
    std::string id, parent, dev, mount_root, mount_point, options;
    fields >> id >> parent >> dev >> mount_root >> mount_point >> options;
    if (mount_point == tree_->source().string() || mount_point == "/") {
      EXPECT_EQ(options.rfind("ro", 0), 0u) << mount_point << " is mounted " << options;
      source_seen = source_seen || mount_point != "/";
    }
  }
  EXPECT_TRUE(source_seen);
}

TEST_F(SandboxTest, TheOnlyNetworkIsALoopbackWithNoRoutes) {
  std::istringstream dev(slurp(proc_ + "/net/dev"));
  std::vector<std::string> interfaces;
  for (std::string line; std::getline(dev, line);) {
    const auto colon = line.find(':');
    if (colon == std::string::npos || line.find('|') != std::string::npos) continue;
    std::string name = line.substr(0, colon);
    name.erase(0, name.find_first_not_of(' '));
    interfaces.push_back(name);
  }
  EXPECT_EQ(interfaces, std::vector<std::string>{"lo"});
  // A loopback that was never brought up gives no usable route, v4 or v6 (the kernel's
  // built-in v6 "unreachable" entries carry RTF_REJECT).
  std::istringstream v4(slurp(proc_ + "/net/route"));
  for (std::string line; std::getline(v4, line);) {
    EXPECT_TRUE(line.empty() || line.rfind("Iface", 0) == 0) << "IPv4 route: " << line;
  }
  std::istringstream v6(slurp(proc_ + "/net/ipv6_route"));
  constexpr unsigned long kRtfReject = 0x0200;
  for (std::string line; std::getline(v6, line);) {
    std::istringstream fields(line);
    std::string field;
    for (int i = 0; i < 9; ++i) fields >> field;
    EXPECT_NE(std::stoul(field, nullptr, 16) & kRtfReject, 0u) << "IPv6 route: " << line;
  }
}

TEST_F(SandboxTest, ItsFdsAreOnlyWhatItWasGiven) {
  if (!running_as_root() && expected_worker_uid() != ::getuid()) {
    // A worker under a subordinate uid is not ours to inspect, which is the point of it.
    std::error_code ec;
    fs::directory_iterator(proc_ + "/fd", ec);
    EXPECT_EQ(ec.value(), EACCES);
    return;
  }
  int count = 0;
  for (const auto& entry : fs::directory_iterator(proc_ + "/fd")) {
    ++count;
    struct stat st {};
    if (::stat(entry.path().c_str(), &st) != 0) {
      // Closed between the listing and the stat: a worker thread's short-lived fd, not a leak.
      EXPECT_EQ(errno, ENOENT) << entry.path();
      continue;
    }
    const std::string target = fs::read_symlink(entry.path()).string();
    if (S_ISCHR(st.st_mode)) {
      // /dev/null (stdin), /dev/fuse, or the terminal a person ran the tests from.
      const bool expected = st.st_rdev == makedev(1, 3) || st.st_rdev == makedev(10, 229) ||
                            major(st.st_rdev) == 136 || major(st.st_rdev) == 4 ||
                            major(st.st_rdev) == 5;
      EXPECT_TRUE(expected) << "unexpected device fd in the worker: " << target;
    } else {
      const bool expected = S_ISSOCK(st.st_mode) || S_ISFIFO(st.st_mode) ||
                            target.rfind("anon_inode:", 0) == 0 ||
                            target.rfind(tree_->source().string(), 0) == 0 ||
                            // the mount's node journal (issue 16), which the supervisor made
                            target.rfind("/memfd:heddle-node-journal", 0) == 0 ||
                            (S_ISREG(st.st_mode) && target.find(".log") != std::string::npos);
      EXPECT_TRUE(expected) << "unexpected fd in the worker: " << target;
    }
  }
  EXPECT_LE(count, 12);
}

TEST_F(SandboxTest, FactsReaderAgreesItIsConfined) {
  const sandbox::SandboxFacts facts = sandbox::read_facts(supervisor_->pid());
  EXPECT_TRUE(facts.confined()) << facts.describe();
}

}  // namespace
}  // namespace heddle::test
