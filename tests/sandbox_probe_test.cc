// Probes run inside the sandbox itself: what a confined process can and cannot do.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "heddle/error.h"
#include "heddle/process.h"
#include "heddle/sandbox/sandboxed_process.h"
#include "support/test_support.h"

namespace heddle::test {
namespace {

using namespace std::chrono_literals;

class SandboxProbeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tree_ = std::make_unique<ScratchTree>();
    tree_->write("visible.txt", "inside\n");
  }

  // Runs `script` with /bin/sh in the sandbox (source bound read-only); its exit code. The
  // scripts' command substitutions and pipelines need children, which a worker's sandbox does
  // not allow: `children` false shows that.
  int run(const std::string& script, bool children = true) {
    sandbox::SandboxSpec spec;
    spec.executable = "/bin/sh";
    spec.argv = {"sh", "-c", script};
    spec.allow_child_processes = children;
    spec.readonly_paths = {tree_->source().string()};
    spec.uid = identity().first;  // without root, only our own ids can be mapped
    spec.gid = identity().second;
    auto process = sandbox::SandboxedProcess::launch(spec);
    if (!process.wait_for_exit(10s)) {
      process.signal(SIGKILL);
      ADD_FAILURE() << "probe hung: " << script;
    }
    const sandbox::ExitStatus status = process.reap();
    return status.signaled ? 128 + status.signal : status.code;
  }

  static std::pair<uid_t, gid_t> identity() {
    return running_as_root() ? std::pair<uid_t, gid_t>{65534, 65534}
                             : std::pair<uid_t, gid_t>{::getuid(), ::getgid()};
  }

  std::unique_ptr<ScratchTree> tree_;
};

TEST_F(SandboxProbeTest, APlainCommandRunsAsItsIdentityAndSeesTheSource) {
  const std::string ids = std::to_string(identity().first) + ":" + std::to_string(identity().second);
  EXPECT_EQ(run("test \"$(id -u):$(id -g)\" = " + ids), 0);
  EXPECT_EQ(run("test \"$(cat " + (tree_->source() / "visible.txt").string() + ")\" = inside"), 0);
}

TEST_F(SandboxProbeTest, HostSecretsAndHomesAreNotThere) {
  EXPECT_NE(run("test -e /etc/shadow"), 0);
  EXPECT_EQ(run("test \"$(ls -A /etc)\" = ld.so.cache"), 0) << "/etc holds more than the loader's cache";
  EXPECT_NE(run("test -e /root"), 0);
  EXPECT_NE(run("test -e /home"), 0);
}

TEST_F(SandboxProbeTest, NothingIsWritable) {
  EXPECT_NE(run("echo x > " + (tree_->source() / "new.txt").string()), 0);
  EXPECT_NE(run("echo x > /usr/heddle-probe"), 0);
  EXPECT_NE(run("mkdir /probe"), 0);
  EXPECT_FALSE(fs::exists(tree_->source() / "new.txt"));
}

TEST_F(SandboxProbeTest, NamespacesCannotBeCreatedOrEntered) {
  EXPECT_EQ(run("true"), 0) << "positive control";
  EXPECT_NE(run("unshare --user true"), 0);
  EXPECT_NE(run("unshare --mount true"), 0);
  EXPECT_NE(run("unshare --net true"), 0);
  EXPECT_NE(run("nsenter --target 1 --mount true"), 0);
}

TEST_F(SandboxProbeTest, HostProcessesCannotBeSeenOrSignalled) {
  const std::string us = std::to_string(::getpid());
  EXPECT_NE(run("kill -0 " + us), 0) << "the test process is reachable from the sandbox";
  EXPECT_EQ(run("test \"$(ls /proc | grep -c '^[0-9]')\" -lt 10"), 0)
      << "the sandbox's /proc shows more than its own handful of processes";
}

// Issue 12, item 4: kill(0, SIGTERM) from inside signals the sandbox's own process group only.
// A bystander with the sandbox's uid in the launcher's process group (as heddle's shell job
// would be) survives, and the sandboxed process leads a session of its own.
TEST_F(SandboxProbeTest, KillingItsProcessGroupReachesNothingOutside) {
  std::vector<std::string> sleeper = {"/bin/sleep", "60"};
  if (running_as_root()) {
    sleeper.insert(sleeper.begin(), {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534",
                                     "--clear-groups"});
  }
  Process bystander(sleeper);
  ASSERT_EQ(::getpgid(bystander.pid()), ::getpgrp()) << "the bystander must share our group";
  // Without the fix the signal reaches us too whenever the uids match (as heddle-test).
  struct sigaction ignore {}, old {};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGTERM, &ignore, &old), 0);

  sandbox::SandboxSpec spec;
  spec.executable = "/bin/sh";
  spec.argv = {"sh", "-c", "trap '' TERM; kill -TERM 0; kill -TERM -1; sleep 1"};
  spec.allow_child_processes = true;  // sleep
  spec.uid = identity().first;
  spec.gid = identity().second;
  auto process = sandbox::SandboxedProcess::launch(spec);
  const pid_t sid = ::getsid(process.pid());
  EXPECT_EQ(sid, process.pid()) << "the sandboxed process leads no session of its own";
  EXPECT_NE(sid, ::getsid(0));
  EXPECT_NE(::getpgid(process.pid()), ::getpgrp());
  ASSERT_TRUE(process.wait_for_exit(10s));
  EXPECT_EQ(process.reap().describe(), "exit code 0");
  std::this_thread::sleep_for(200ms);  // a signal sent would have ended it by now
  ::sigaction(SIGTERM, &old, nullptr);

  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(bystander.pid()), &info,
                     WEXITED | WNOHANG | WNOWAIT),
            0);
  EXPECT_EQ(info.si_pid, 0) << "the bystander ended: signal " << info.si_status;
}

// A worker's sandbox starts no process (issue 16: a child could outlive the worker and keep
// its FUSE fd). A shell there runs builtins, and a last command by exec, but no child.
TEST_F(SandboxProbeTest, WithoutChildrenAShellCanOnlyExec) {
  EXPECT_EQ(run("test \"$(echo ok)\" = ok", true), 0) << "positive control";
  EXPECT_NE(run("test \"$(echo ok)\" = ok", false), 0) << "a command substitution forked";
  EXPECT_NE(run("/bin/true && exit 0; exit 3", false), 0) << "a child ran";
  EXPECT_EQ(run("exec /bin/true", false), 0);
}

TEST_F(SandboxProbeTest, TheHostnameIsItsOwn) {
  EXPECT_EQ(run("test \"$(cat /proc/sys/kernel/hostname)\" = heddle-sandbox"), 0);
}

TEST_F(SandboxProbeTest, AnIdentityOfRootIsRefused) {
  sandbox::SandboxSpec spec;
  spec.executable = "/bin/true";
  spec.argv = {"true"};
  spec.uid = 0;
  EXPECT_THROW((void)sandbox::SandboxedProcess::launch(spec), Error);
}

TEST_F(SandboxProbeTest, AMissingPathIsNamedInTheError) {
  sandbox::SandboxSpec spec;
  spec.executable = "/bin/true";
  spec.argv = {"true"};
  spec.readonly_paths = {"/nonexistent/heddle-probe"};
  try {
    (void)sandbox::SandboxedProcess::launch(spec);
    FAIL() << "launch should have failed";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ENOENT);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/heddle-probe"), std::string::npos);
  }
  EXPECT_EQ(child_count(), 0);
}

}  // namespace
}  // namespace heddle::test
