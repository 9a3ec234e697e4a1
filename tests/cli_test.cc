// heddle-fuse-launcher as a user runs it: real processes, real mounts, exit codes and output.
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <cstdio>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "heddle/launcher/control_socket.h"
#include "support/child_process.h"
#include "support/test_support.h"

namespace heddle::test {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

std::vector<std::string> launcher_argv(std::vector<std::string> args) {
  args.insert(args.begin(), bin_path("heddle-fuse-launcher"));
  return args;
}

CommandResult launcher(std::vector<std::string> args, std::chrono::milliseconds timeout = 30s) {
  return run_command(launcher_argv(std::move(args)), timeout);
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HEDDLE_REQUIRE_MOUNT();
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    tree_ = std::make_unique<ScratchTree>();
    tree_->write("a.txt", "alpha\n");
    tree_->write("sub/b.txt", "beta\n");
  }

  void TearDown() override {
    if (!tree_) return;
    if (heddle_mounted(tree_->mountpoint())) {
      ADD_FAILURE() << "test left a mount; cleaning up";
      (void)launcher({"unmount", mp()});
      ::umount2(mp().c_str(), MNT_DETACH);
    }
    // The background supervisor is ours (we started it through the CLI): never leave it.
    if (supervisor_pid_ > 0 && !eventually([&] { return process_gone(supervisor_pid_); })) {
      ADD_FAILURE() << "supervisor " << supervisor_pid_ << " outlived its mount";
      ::kill(supervisor_pid_, SIGKILL);
    }
  }

  std::string mp() const { return tree_->mountpoint().string(); }
  std::string src() const { return tree_->source().string(); }

  Json mount_background() {
    const CommandResult result = launcher({"mount", "--dir", src(), "--mountpoint", mp(), "--json"});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    Json ready = Json::parse(result.out);
    supervisor_pid_ = ready.value("supervisor_pid", -1);
    return ready;
  }
  std::string lock_file(const std::string& mountpoint) const {
    return launcher::control_lock_path(launcher::control_socket_path(dirs_, mountpoint));
  }

  std::unique_ptr<ScratchTree> tree_;
  pid_t supervisor_pid_ = -1;
  // Read as the launchers these tests run (with our environment) read them.
  const launcher::UserDirs dirs_ = launcher::UserDirs::read();
};

TEST_F(CliTest, HelpAndVersion) {
  const CommandResult help = launcher({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("Usage: heddle-fuse-launcher"), std::string::npos);
  const CommandResult version = launcher({"--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(version.out.rfind("heddle-fuse-launcher ", 0), 0u) << version.out;
}

TEST_F(CliTest, BadArgumentsExitTwoWithAUsageLine) {
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"frobnicate"},
      {"mount"},
      {"mount", "--dir"},
      {"mount", "--dir", "/tmp"},
      {"mount", "--dir", "/tmp", "--mountpoint", "/mnt", "--bogus"},
      {"mount", "--dir", "/tmp", "--mountpoint", "/mnt", "--uid", "no-such-user-here"},
      {"status"},
      {"status", "/a", "/b"},
      {"unmount", "--json", "/a"},
      {"demo", "extra"},
      {"list", "extra"},
      {"-v"},
      {"-vq", "list"},
      // heddle worker mode: only its four flags, each once, "--flag value" only.
      {"--repo-root", "/r", "--thread-id", "t", "--mountpoint", "/m"},
      {"--repo-root", "/r", "--thread-id", "t", "--mountpoint", "/m", "--ipc-fd", "x"},
      {"--repo-root", "/r", "--repo-root", "/r", "--thread-id", "t", "--mountpoint", "/m",
       "--ipc-fd", "5"},
      {"--repo-root", "/r", "--thread-id", "t", "--mountpoint", "/m", "--ipc-fd", "5", "--dir", "/d"},
      // 2^34 + 1 GiB: 64 bits would wrap it to 1 GiB.
      {"mount", "--repo-root", "/tmp", "--thread-id", "t", "--cache-bytes", "17179869185G",
       "--mountpoint", "/mnt"},
  };
  for (const auto& args : cases) {
    const CommandResult result = launcher(args);
    std::string joined;
    for (const auto& arg : args) joined += arg + " ";
    EXPECT_EQ(result.exit_code, 2) << joined << "\n" << result.err;
    EXPECT_NE(result.err.find("Usage: heddle-fuse-launcher"), std::string::npos) << joined;
    EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 2) << result.err;
  }
}

TEST_F(CliTest, MountStatusUnmountEndToEnd) {
  const Json ready = mount_background();
  EXPECT_EQ(ready["kind"], "MountReady");
  EXPECT_EQ(ready["mount_path"], mp());
  const pid_t worker = ready["pid"].get<pid_t>();
  EXPECT_GT(worker, 1);
  EXPECT_GT(supervisor_pid_, 1);
  EXPECT_NE(supervisor_pid_, worker);
  ASSERT_TRUE(heddle_mounted(tree_->mountpoint()));
  EXPECT_EQ(slurp(tree_->mountpoint() / "sub" / "b.txt"), "beta\n");

  const CommandResult status_json = launcher({"status", mp(), "--json"});
  ASSERT_EQ(status_json.exit_code, 0) << status_json.err;
  const Json status = Json::parse(status_json.out);
  EXPECT_EQ(status["kind"], "StatusOk");
  EXPECT_EQ(status["pid"], worker);
  EXPECT_EQ(status["mount_path"], mp());
  EXPECT_EQ(status["supervisor_pid"], supervisor_pid_);
  EXPECT_EQ(status["source"], src());

  const CommandResult status_text = launcher({"status", mp()});
  EXPECT_EQ(status_text.exit_code, 0) << status_text.err;
  EXPECT_NE(status_text.out.find(std::to_string(worker)), std::string::npos) << status_text.out;

  const CommandResult unmount = launcher({"unmount", mp()});
  EXPECT_EQ(unmount.exit_code, 0) << unmount.err;
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
  EXPECT_TRUE(eventually([&] { return process_gone(supervisor_pid_); }));
  EXPECT_TRUE(eventually([&] { return process_gone(worker); }));
  EXPECT_FALSE(fs::exists(launcher::control_socket_path(dirs_, mp())));
  EXPECT_FALSE(fs::exists(lock_file(mp()))) << "the control socket's lock stayed behind";
}

// In the real sandbox (seccomp, /proc, the worker's identity) the source is watched: Status
// says so, and a change in the source shows within the 5 s waited, far inside the 10 minutes
// the kernel keeps names and attributes of a watched mount.
TEST_F(CliTest, ADirectoryMountWatchesItsSourceInItsSandbox) {
  mount_background();
  ASSERT_TRUE(heddle_mounted(tree_->mountpoint()));
  ASSERT_EQ(slurp(tree_->mountpoint() / "sub" / "b.txt"), "beta\n");
  ASSERT_FALSE(fs::exists(tree_->mountpoint() / "sub" / "c.txt"));
  const CommandResult status_json = launcher({"status", mp(), "--json"});
  ASSERT_EQ(status_json.exit_code, 0) << status_json.err;
  const Json status = Json::parse(status_json.out);
  EXPECT_EQ(status.value("source_watch", ""), "inotify") << status_json.out;
  EXPECT_GE(status.value("watched_dirs", 0u), 2u) << status_json.out;

  tree_->write("sub/b.txt", "beta, changed\n");
  tree_->write("sub/c.txt", "gamma\n");
  const fs::path changed = tree_->mountpoint() / "sub" / "b.txt";
  const fs::path created = tree_->mountpoint() / "sub" / "c.txt";
  EXPECT_TRUE(eventually([&] { return slurp(changed) == "beta, changed\n"; }));
  EXPECT_TRUE(eventually([&] { return slurp(created) == "gamma\n"; }));

  const CommandResult unmount = launcher({"unmount", mp()});
  EXPECT_EQ(unmount.exit_code, 0) << unmount.err;
}

TEST_F(CliTest, TheControlSocketIsPrivateAndChecksItsPeer) {
  mount_background();
  const std::string socket_path = launcher::control_socket_path(dirs_, mp());
  struct stat st {};
  ASSERT_EQ(::stat(socket_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_uid, ::geteuid());
  // Even with the file opened up, a stranger's connection is refused by SO_PEERCRED. (Only
  // root can become a stranger to try.)
  if (running_as_root()) {
    ASSERT_EQ(::chmod(socket_path.c_str(), 0666), 0);
    // A raw fork, not a helper program: the child itself is the stranger connecting.
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) _exit(3);
      try {
        (void)launcher::control_request(dirs_, mp(), ipc::Status{},
                                        std::chrono::milliseconds(3000));
        _exit(4);  // answered: the check failed
      } catch (const std::exception&) {
        _exit(0);
      }
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  }
  EXPECT_EQ(launcher({"status", mp()}).exit_code, 0) << "the owner must still get answers";
  EXPECT_EQ(launcher({"unmount", mp()}).exit_code, 0);
}

TEST_F(CliTest, ASecondMountOnABusyMountpointIsAClearError) {
  mount_background();
  const CommandResult second = launcher({"mount", "--dir", src(), "--mountpoint", mp()});
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE(second.err.find("already a mount"), std::string::npos) << second.err;
  EXPECT_EQ(std::count(second.err.begin(), second.err.end(), '\n'), 1) << second.err;
  EXPECT_EQ(launcher({"unmount", mp()}).exit_code, 0);
}

TEST_F(CliTest, ForegroundMountStaysAndUnmountsOnSigterm) {
  ChildProcess foreground(launcher_argv({"mount", "--dir", src(), "--mountpoint", mp(),
                                         "--foreground"}));
  supervisor_pid_ = foreground.pid();
  const auto line = foreground.read_line(15s);
  ASSERT_TRUE(line.has_value()) << "no ready line";
  EXPECT_EQ(line->rfind("mounted ", 0), 0u) << *line;
  EXPECT_TRUE(heddle_mounted(tree_->mountpoint()));
  EXPECT_EQ(launcher({"status", mp()}).exit_code, 0);

  foreground.signal(SIGTERM);
  const CommandResult result = foreground.finish(15s);
  EXPECT_FALSE(result.timed_out);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
}

TEST_F(CliTest, StatusAndUnmountOfSomethingNotMountedAreClearErrors) {
  for (const char* command : {"status", "unmount"}) {
    const CommandResult result = launcher({command, mp()});
    EXPECT_EQ(result.exit_code, 1) << command;
    EXPECT_NE(result.err.find("no heddle mount supervisor"), std::string::npos) << result.err;
  }
}

// (A source the worker cannot read was the failure here; since issue 18 the file broker
// serves such a source, so the worker is made to fail instead.)
TEST_F(CliTest, AWorkerFailureIsOneLineNamingTheCauseAndNothingStaysBehind) {
  const CommandResult result =
      run_command({"/usr/bin/env", "HEDDLE_FUSE_WORKER_PANIC_ON_INIT=1",
                   bin_path("heddle-fuse-launcher"), "mount", "--dir", src(), "--mountpoint", mp()},
                  30s);
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
  EXPECT_NE(result.err.find("worker exited before MountReady (exit code 101)"), std::string::npos)
      << result.err;
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
  EXPECT_FALSE(fs::exists(launcher::control_socket_path(dirs_, mp())));
}

TEST_F(CliTest, OverlappingSourceAndMountpointAreRefused) {
  const CommandResult result = launcher({"mount", "--dir", tree_->root().string(), "--mountpoint", mp()});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("overlap"), std::string::npos) << result.err;
}

TEST_F(CliTest, TheGuardRemovesTheMountOfASigkilledSupervisor) {
  const Json ready = mount_background();
  const pid_t guard = ready["guard_pid"].get<pid_t>();
  ASSERT_EQ(::kill(supervisor_pid_, SIGKILL), 0);
  // The worker sees IPC EOF and exits; the guard sees EOF too and removes the mount.
  EXPECT_TRUE(eventually([&] { return !heddle_mounted(tree_->mountpoint()); }));
  EXPECT_TRUE(eventually([&] { return process_gone(supervisor_pid_); }));
  EXPECT_TRUE(eventually([&] { return process_gone(ready["pid"].get<pid_t>()); }));
  EXPECT_TRUE(eventually([&] { return process_gone(guard); }));
  EXPECT_FALSE(fs::exists(launcher::control_socket_path(dirs_, mp())))
      << "the dead supervisor's socket";
  EXPECT_FALSE(fs::exists(lock_file(mp()))) << "the dead supervisor's socket's lock";
}

TEST_F(CliTest, UnmountRemovesTheMountOfADeadSupervisorAndGuard) {
  const Json ready = mount_background();
  // A stopped guard cannot act; both then die, leaving a mount that answers ENOTCONN.
  const pid_t guard = ready["guard_pid"].get<pid_t>();
  ASSERT_EQ(::kill(guard, SIGSTOP), 0);
  ASSERT_EQ(::kill(supervisor_pid_, SIGKILL), 0);
  ASSERT_TRUE(eventually([&] { return process_gone(supervisor_pid_); }));
  ASSERT_TRUE(eventually([&] { return process_gone(ready["pid"].get<pid_t>()); }));
  ASSERT_EQ(::kill(guard, SIGKILL), 0);
  ASSERT_TRUE(eventually([&] { return process_gone(guard); }));
  ASSERT_TRUE(heddle_mounted(tree_->mountpoint()));
  const CommandResult result = launcher({"unmount", mp()});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("stale"), std::string::npos) << result.out;
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
  EXPECT_FALSE(fs::exists(launcher::control_socket_path(dirs_, mp()))) << "the dead one's socket";
  EXPECT_FALSE(fs::exists(lock_file(mp()))) << "the dead supervisor's socket's lock";
}

// Relative paths resolve against the working directory; a symlinked mountpoint is the same
// mount to mount, status and unmount, through the link or its target; a newline is just a
// byte of a name (mountinfo escapes it, the control socket is named by a hash).
TEST_F(CliTest, RelativeSymlinkedAndNewlinePathsNameOneMount) {
  const fs::path odd = tree_->root() / "with\nnewline";
  fs::create_directory(odd);
  fs::create_directory_symlink(odd, tree_->root() / "link");
  const auto in_root = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"/usr/bin/env", "-C", tree_->root().string(),
                               bin_path("heddle-fuse-launcher")});
    return run_command(args, 30s);
  };
  const CommandResult mounted = in_root({"mount", "--dir", "source", "--mountpoint", "link", "--json"});
  ASSERT_EQ(mounted.exit_code, 0) << mounted.err;
  const Json ready = Json::parse(mounted.out);
  supervisor_pid_ = ready.value("supervisor_pid", -1);
  EXPECT_EQ(ready.value("mount_path", ""), odd.string());
  EXPECT_TRUE(heddle_mounted(odd));
  EXPECT_EQ(slurp(odd / "sub" / "b.txt"), "beta\n");
  EXPECT_EQ(in_root({"status", "link"}).exit_code, 0);
  EXPECT_EQ(launcher({"status", odd.string()}).exit_code, 0);
  const CommandResult unmounted = in_root({"unmount", "./link/"});
  EXPECT_EQ(unmounted.exit_code, 0) << unmounted.err;
  EXPECT_TRUE(eventually([&] { return !heddle_mounted(odd); }));
  EXPECT_TRUE(eventually([&] { return process_gone(supervisor_pid_); }));
}

TEST_F(CliTest, MountsAGitThreadByName) {
  const std::string repo = src();
  const std::string script =
      "set -e; cd \"$0\"; export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1;"
      "g='git -c user.name=t -c user.email=t@t.invalid';"
      "$g init -q -b main .; $g add -A; $g commit -q -m one;"
      "$g update-ref refs/heddle/threads/feature HEAD";
  ASSERT_EQ(run_command({"/bin/sh", "-c", script, repo}).exit_code, 0);
  const CommandResult mounted =
      launcher({"mount", "--repo-root", repo, "--thread-id", "feature", "--cache-bytes", "8M",
                "--mountpoint", mp(), "--json"});
  ASSERT_EQ(mounted.exit_code, 0) << mounted.err;
  supervisor_pid_ = Json::parse(mounted.out).value("supervisor_pid", -1);
  EXPECT_EQ(slurp(tree_->mountpoint() / "sub" / "b.txt"), "beta\n");
  const CommandResult status = launcher({"status", mp(), "--json"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  const Json reply = Json::parse(status.out);
  EXPECT_EQ(reply["commit"].get<std::string>().size(), 40u) << status.out;
  EXPECT_EQ(reply["cache_limit"], 8u << 20) << status.out;
  EXPECT_EQ(reply["writable"], true) << "a thread is writable by default: " << status.out;
  EXPECT_EQ(launcher({"unmount", mp()}).exit_code, 0);
  // The thread's overlay outlives the mount until the user drops it.
  EXPECT_EQ(launcher({"overlay", "discard", mp()}).exit_code, 0);

  // Where heddle puts a thread: inside the work tree. Only .git is read, so this is allowed.
  const fs::path inside = tree_->source() / ".heddle" / "threads" / "main";
  fs::create_directories(inside);
  const CommandResult nested = launcher(
      {"mount", "--repo-root", repo, "--thread-id", "main", "--mountpoint", inside.string()});
  ASSERT_EQ(nested.exit_code, 0) << nested.err;
  EXPECT_EQ(slurp(inside / "a.txt"), "alpha\n");
  EXPECT_EQ(launcher({"unmount", inside.string()}).exit_code, 0);
  EXPECT_FALSE(heddle_mounted(inside));
  EXPECT_EQ(launcher({"overlay", "discard", inside.string()}).exit_code, 0);
  EXPECT_EQ(launcher({"mount", "--repo-root", repo, "--thread-id", "main", "--mountpoint",
                      (tree_->source() / ".git").string()})
                .exit_code,
            1)
      << "a mount over the git dir itself must be refused";

  const CommandResult unknown = launcher({"mount", "--repo-root", repo, "--thread-id", "nope",
                                          "--mountpoint", mp()});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("existing heads: main"), std::string::npos) << unknown.err;
  EXPECT_EQ(launcher({"mount", "--repo-root", repo, "--mountpoint", mp()}).exit_code, 2);
  EXPECT_EQ(launcher({"mount", "--dir", repo, "--thread-id", "main", "--mountpoint", mp()})
                .exit_code,
            2);
}

TEST_F(CliTest, DemoRunsEndToEnd) {
  const CommandResult demo = launcher({"demo"}, 60s);
  EXPECT_EQ(demo.exit_code, 0) << demo.out << demo.err;
  EXPECT_NE(demo.out.find("demo OK"), std::string::npos) << demo.out;
  EXPECT_NE(demo.out.find("confined: yes"), std::string::npos) << demo.out;
}

// `list` shows each live mount of ours with its pids and forgets the sockets of dead
// supervisors.
TEST_F(CliTest, ListShowsLiveMountsAndRemovesStaleSockets) {
  ScratchTree other;
  other.write("c.txt", "gamma\n");
  const Json first = mount_background();
  const CommandResult second = launcher(
      {"mount", "--dir", other.source().string(), "--mountpoint", other.mountpoint().string(), "--json"});
  ASSERT_EQ(second.exit_code, 0) << second.err;
  const Json second_ready = Json::parse(second.out);
  const pid_t second_supervisor = second_ready["supervisor_pid"].get<pid_t>();

  // A socket nobody listens on any more, as a SIGKILLed supervisor's guard could miss.
  const std::string stale = launcher::runtime_dir(dirs_) + "/00000000deadbeef.sock";
  {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof address.sun_path, "%s", stale.c_str());
    ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  }

  const CommandResult listed = launcher({"list", "--json"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  const Json entries = Json::parse(listed.out);
  std::map<std::string, Json> by_mountpoint;
  for (const Json& entry : entries) by_mountpoint[entry.value("mountpoint", "")] = entry;
  ASSERT_TRUE(by_mountpoint.contains(mp())) << listed.out;
  ASSERT_TRUE(by_mountpoint.contains(other.mountpoint().string())) << listed.out;
  const Json& mine = by_mountpoint[mp()];
  EXPECT_EQ(mine["source"], src());
  EXPECT_TRUE(mine["thread"].is_null());
  EXPECT_EQ(mine["worker_pid"], first["pid"]);
  EXPECT_EQ(mine["supervisor_pid"], supervisor_pid_);
  EXPECT_EQ(mine["guard_pid"], first["guard_pid"]);
  EXPECT_GE(mine["uptime_ms"].get<long>(), 0);
  EXPECT_FALSE(fs::exists(stale)) << "list left the stale socket";
  EXPECT_FALSE(fs::exists(launcher::control_lock_path(stale))) << "list left its lock";

  const CommandResult table = launcher({"list"});
  EXPECT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("MOUNTPOINT"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find(mp()), std::string::npos) << table.out;
  EXPECT_NE(table.out.find(std::to_string(supervisor_pid_)), std::string::npos) << table.out;

  ASSERT_EQ(launcher({"unmount", other.mountpoint().string()}).exit_code, 0);
  EXPECT_TRUE(eventually([&] { return process_gone(second_supervisor); }));
  // Other tests may mount in parallel: look only at ours.
  const auto listed_mountpoints = [&] {
    std::set<std::string> found;
    for (const Json& entry : Json::parse(launcher({"list", "--json"}).out)) {
      const std::string mountpoint = entry.value("mountpoint", "");
      if (mountpoint == mp() || mountpoint == other.mountpoint().string()) found.insert(mountpoint);
    }
    return found;
  };
  EXPECT_EQ(listed_mountpoints(), std::set<std::string>{mp()});
  ASSERT_EQ(launcher({"unmount", mp()}).exit_code, 0);
  EXPECT_TRUE(listed_mountpoints().empty());
}

// The background supervisor logs to its own file under the state directory (root: /var/log),
// private, with the worker's lines relayed under a prefix; -q and -v move the level.
TEST_F(CliTest, BackgroundSupervisorLogsToAPrivateFileWithTheWorkersLines) {
  const fs::path state = tree_->root() / "state";
  const auto mount_with = [&](const std::string& flag) {
    const CommandResult result = run_command(
        {"/usr/bin/env", "XDG_STATE_HOME=" + state.string(), bin_path("heddle-fuse-launcher"),
         flag, "mount", "--dir", src(), "--mountpoint", mp(), "--json"});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    supervisor_pid_ = Json::parse(result.out).value("supervisor_pid", -1);
    const pid_t worker = Json::parse(result.out).value("pid", -1);
    EXPECT_EQ(launcher({"unmount", mp()}).exit_code, 0);
    EXPECT_TRUE(eventually([&] { return process_gone(supervisor_pid_); }));
    return worker;
  };
  const pid_t worker = mount_with("-v");
  const fs::path dir = ::geteuid() == 0 ? fs::path("/var/log/heddle-fuse") : state / "heddle-fuse";
  const fs::path log = dir / fs::path(launcher::supervisor_log_path(dirs_, mp())).filename();
  // Named after the mountpoint, '/' as '-' and other bytes as '_', plus a key.
  EXPECT_EQ(log.filename().string().rfind("tmp-heddle_test_", 0), 0u) << log;
  ASSERT_TRUE(fs::exists(log)) << log;
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat(log.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string verbose = slurp(log);
  EXPECT_NE(verbose.find("[debug]"), std::string::npos) << verbose;
  EXPECT_NE(verbose.find("worker " + std::to_string(worker) + ": serving"), std::string::npos)
      << verbose;
  EXPECT_NE(verbose.find("unmount requested for " + mp()), std::string::npos) << verbose;

  fs::remove(log);
  mount_with("-q");
  const std::string quiet = fs::exists(log) ? slurp(log) : "";
  EXPECT_EQ(quiet.find("[info]"), std::string::npos) << quiet;
  EXPECT_EQ(quiet.find("[debug]"), std::string::npos) << quiet;
  fs::remove(log);
}

// Under systemd, stderr is a journal stream: lines carry a priority and no timestamp of ours,
// the worker's relayed lines too.
TEST_F(CliTest, LogsToTheJournalWithPriorities) {
  // JOURNAL_STREAM names stderr's device:inode, as systemd sets it for a service.
  ChildProcess foreground({"/bin/sh", "-c",
                           "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec \"$0\" \"$@\"",
                           bin_path("heddle-fuse-launcher"), "mount", "--foreground", "--dir", src(),
                           "--mountpoint", mp()});
  const auto ready = foreground.read_line(20s);
  ASSERT_TRUE(ready.has_value());
  EXPECT_EQ(ready->rfind("mounted ", 0), 0u) << *ready;
  foreground.signal(SIGTERM);
  const CommandResult result = foreground.finish(20s);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.err.find("<6>signal 15 received; unmounting " + mp()), std::string::npos)
      << result.err;
  EXPECT_NE(result.err.find("<6>worker "), std::string::npos) << result.err;
  EXPECT_EQ(result.err.find("[info]"), std::string::npos) << result.err;
}

// HEDDLE_FUSE_LOG takes spdlog's per-logger syntax: here a quiet launcher, a chatty worker.
TEST_F(CliTest, LogLevelsPerLoggerReachTheWorker) {
  ChildProcess foreground({"/usr/bin/env", "HEDDLE_FUSE_LOG=warn,heddle-fuse-worker=debug",
                           bin_path("heddle-fuse-launcher"), "mount", "--foreground", "--dir",
                           src(), "--mountpoint", mp()});
  const auto ready = foreground.read_line(20s);
  ASSERT_TRUE(ready.has_value());
  // A read makes sure the worker has handled FUSE_INIT, which it logs at debug.
  EXPECT_EQ(slurp(tree_->mountpoint() / "a.txt"), "alpha\n");
  foreground.signal(SIGTERM);
  const CommandResult result = foreground.finish(20s);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.err.find("[debug] worker "), std::string::npos) << result.err;
  EXPECT_EQ(result.err.find("signal 15 received"), std::string::npos) << result.err;
}

// Issue 12, item 1: the guard of a SIGKILLed supervisor removes its mount by identity (mount
// id and device), wherever its directory has moved since, not by the path it was given.
TEST_F(CliTest, TheGuardRemovesTheMountOfADeadSupervisorWhereverItsDirectoryMoved) {
  const fs::path before = tree_->root() / "p";
  const fs::path after = tree_->root() / "q";
  fs::create_directories(before / "mnt");
  const CommandResult mounted =
      launcher({"mount", "--dir", src(), "--mountpoint", (before / "mnt").string(), "--json"});
  ASSERT_EQ(mounted.exit_code, 0) << mounted.err;
  const Json ready = Json::parse(mounted.out);
  supervisor_pid_ = ready.value("supervisor_pid", -1);
  const pid_t guard = ready.value("guard_pid", -1);
  fs::rename(before, after);
  ASSERT_TRUE(heddle_mounted(after / "mnt"));
  ASSERT_EQ(::kill(supervisor_pid_, SIGKILL), 0);
  EXPECT_TRUE(eventually([&] { return !heddle_mounted(after / "mnt"); }, 10s))
      << "the guard left the moved mount";
  EXPECT_TRUE(eventually([&] { return process_gone(guard); }, 10s));
  EXPECT_TRUE(eventually([&] { return process_gone(ready.value("pid", -1)); }, 10s));
  if (heddle_mounted(after / "mnt")) ::umount2((after / "mnt").c_str(), MNT_DETACH);
}

// Issue 12, item 12c: a guard that wakes late, after a new supervisor took its mountpoint,
// leaves the new supervisor's control socket alone (it is removed only under its lock).
TEST_F(CliTest, ALateGuardLeavesTheNextSupervisorsControlSocketAlone) {
  const Json first = mount_background();
  const pid_t first_supervisor = supervisor_pid_;
  const pid_t guard = first.value("guard_pid", -1);
  const pid_t worker = first.value("pid", -1);
  ASSERT_EQ(::kill(guard, SIGSTOP), 0);
  ASSERT_EQ(::kill(first_supervisor, SIGKILL), 0);
  ASSERT_TRUE(eventually([&] { return process_gone(first_supervisor); }, 10s));
  ASSERT_TRUE(eventually([&] { return process_gone(worker); }, 10s));
  ASSERT_TRUE(heddle_mounted(tree_->mountpoint()))
      << "the guard was stopped: the dead mount stays; guard " << proc_status_field(guard, "State")
      << "\n" << slurp(launcher::supervisor_log_path(dirs_, mp()));

  const Json second = mount_background();  // replaces the dead mount and its socket
  ASSERT_NE(supervisor_pid_, first_supervisor);
  ASSERT_EQ(::kill(guard, SIGCONT), 0);
  EXPECT_TRUE(eventually([&] { return process_gone(guard); }, 10s));
  EXPECT_TRUE(fs::exists(launcher::control_socket_path(dirs_, mp())))
      << "the first supervisor's guard removed the second one's socket";
  const CommandResult status = launcher({"status", mp()});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_TRUE(heddle_mounted(tree_->mountpoint()));
  EXPECT_EQ(launcher({"unmount", mp()}).exit_code, 0);
  EXPECT_TRUE(eventually([&] { return process_gone(second.value("pid", -1)); }, 10s));
}

// Issue 12, item 12d: a starting supervisor removes the logs of mounts that ended more than
// 14 days ago (with their rotations); recent logs, live mounts' logs and other files stay.
TEST_F(CliTest, LogsOfMountsThatEndedLongAgoAreRemovedWhenASupervisorStarts) {
  const fs::path dir = launcher::log_dir(dirs_);
  const auto aged = [](const fs::path& path, std::chrono::hours age) {
    std::ofstream(path) << "old\n";
    fs::last_write_time(path, fs::file_time_type::clock::now() - age);
  };
  char key[16];
  std::snprintf(key, sizeof key, "%08x", static_cast<unsigned>(::getpid()) * 2654435761u);
  const std::string stem = std::string("heddle-expiry-test-") + key;
  const fs::path expired = dir / (stem + ".log");
  const fs::path rotated = dir / (stem + ".2.log");
  const fs::path recent = dir / ("heddle-expiry-test-recent-" + std::string(key) + ".log");
  const fs::path other = dir / (stem + ".notes");
  const Json live = mount_background();  // a live mount whose log has not been written lately
  const fs::path live_log = launcher::supervisor_log_path(dirs_, mp());
  ASSERT_TRUE(fs::exists(live_log));
  fs::last_write_time(live_log, fs::file_time_type::clock::now() - std::chrono::hours(24 * 20));
  aged(expired, std::chrono::hours(24 * 15));
  aged(rotated, std::chrono::hours(24 * 30));
  aged(other, std::chrono::hours(24 * 30));
  aged(recent, std::chrono::hours(24 * 13));

  const fs::path second = tree_->root() / "mnt2";
  fs::create_directory(second);
  const CommandResult mounted =
      launcher({"mount", "--dir", src(), "--mountpoint", second.string(), "--json"});
  ASSERT_EQ(mounted.exit_code, 0) << mounted.err;
  const pid_t second_supervisor = Json::parse(mounted.out).value("supervisor_pid", -1);

  EXPECT_FALSE(fs::exists(expired));
  EXPECT_FALSE(fs::exists(rotated));
  EXPECT_TRUE(fs::exists(recent));
  EXPECT_TRUE(fs::exists(other));
  EXPECT_TRUE(fs::exists(live_log)) << "the log of a live mount was removed";
  const std::string second_log = slurp(launcher::supervisor_log_path(dirs_, second.string()));
  EXPECT_NE(second_log.find("log file(s) of mounts that ended over 14 days ago"),
            std::string::npos)
      << second_log;

  EXPECT_EQ(launcher({"unmount", second.string()}).exit_code, 0);
  EXPECT_TRUE(eventually([&] { return process_gone(second_supervisor); }));
  EXPECT_EQ(launcher({"unmount", mp()}).exit_code, 0);
  for (const fs::path& path : {expired, rotated, recent, other,
                               fs::path(launcher::supervisor_log_path(dirs_, second.string()))}) {
    std::error_code ec;
    fs::remove(path, ec);
  }
  (void)live;
}

// Issue 18: a mount removed from outside ends its supervisor, guard and worker within 2 s, as
// it would with `unmount`: no process, no control socket, not in `list`, and the mountpoint
// takes a new mount at once. Every way a user (fusermount3) or root (umount too) has, and
// the lazy ones with a reader holding a file open, whose FUSE connection would otherwise
// keep the worker serving: that file then fails (ENOTCONN or EIO), the mount being gone.
struct OutsideUnmount {
  std::string name;
  std::vector<std::string> argv;  // the mountpoint is appended
  bool reader = false;            // a file in the mount is held open across it
};

std::vector<OutsideUnmount> outside_unmounts() {
  std::vector<OutsideUnmount> ways = {
      {"fusermount3 -u", {"/usr/bin/fusermount3", "-u", "--"}},
      {"fusermount3 -u -z", {"/usr/bin/fusermount3", "-u", "-z", "--"}},
      {"fusermount3 -u -z with a reader", {"/usr/bin/fusermount3", "-u", "-z", "--"}, true},
  };
  if (running_as_root()) {  // umount(8) of a FUSE mount is root's alone
    ways.push_back({"umount", {"/usr/bin/umount", "--"}});
    ways.push_back({"umount -l with a reader", {"/usr/bin/umount", "-l", "--"}, true});
  }
  return ways;
}

std::size_t count_of(const std::string& text, const std::string& part) {
  std::size_t count = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++count;
  return count;
}

TEST_F(CliTest, AMountRemovedFromOutsideEndsItsProcessesAndSocket) {
  const std::string socket_path = launcher::control_socket_path(dirs_, mp());
  const fs::path log = launcher::supervisor_log_path(dirs_, mp());
  const auto listed = [&] {
    const CommandResult list = launcher({"list", "--json"});
    EXPECT_EQ(list.exit_code, 0) << list.err;
    for (const Json& entry : Json::parse(list.out)) {
      if (entry.value("mountpoint", "") == mp()) return true;
    }
    return false;
  };
  for (const OutsideUnmount& way : outside_unmounts()) {
    SCOPED_TRACE(way.name);
    std::error_code ec;
    fs::remove(log, ec);  // this mount's lines only
    mount_background();
    const CommandResult status = launcher({"status", mp(), "--json"});
    ASSERT_EQ(status.exit_code, 0) << status.err;
    const Json before = Json::parse(status.out);
    const std::map<std::string, pid_t> ours = {
        {"worker", before["pid"].get<pid_t>()},
        {"supervisor", before["supervisor_pid"].get<pid_t>()},
        {"guard", before["guard_pid"].get<pid_t>()}};
    ASSERT_EQ(ours.at("supervisor"), supervisor_pid_);
    ASSERT_TRUE(listed());
    UniqueFd reader;
    if (way.reader) {
      reader.reset(::open((tree_->mountpoint() / "a.txt").c_str(), O_RDONLY | O_CLOEXEC));
      ASSERT_TRUE(reader) << std::strerror(errno);  // never read: no page of it is cached
    }

    std::vector<std::string> argv = way.argv;
    argv.push_back(mp());
    const CommandResult removed = run_command(argv, 10s);
    ASSERT_EQ(removed.exit_code, 0) << removed.out << removed.err;
    EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
    const auto start = std::chrono::steady_clock::now();
    for (const auto& [what, pid] : ours) {
      EXPECT_TRUE(eventually([&] { return process_gone(pid); }, 2s)) << what << " " << pid;
    }
    EXPECT_TRUE(eventually([&] { return !fs::exists(socket_path); }, 2s)) << socket_path;
    EXPECT_LE(std::chrono::steady_clock::now() - start, 2s);
    EXPECT_FALSE(listed());
    if (reader) {
      char byte = 0;
      EXPECT_EQ(::pread(reader.get(), &byte, 1, 0), -1);
      EXPECT_TRUE(errno == ENOTCONN || errno == EIO) << std::strerror(errno);
      reader.reset();
    }
    const std::string ended = slurp(log);
    EXPECT_EQ(count_of(ended, "unmounted from outside"), 1u) << ended;
    EXPECT_EQ(ended.find("[error]"), std::string::npos) << ended;

    // At once, the same mountpoint again; and `unmount` of it is no "from outside".
    mount_background();
    EXPECT_EQ(slurp(tree_->mountpoint() / "a.txt"), "alpha\n");
    const CommandResult unmount = launcher({"unmount", mp()});
    EXPECT_EQ(unmount.exit_code, 0) << unmount.err;
    EXPECT_TRUE(eventually([&] { return process_gone(supervisor_pid_); }));
    EXPECT_EQ(count_of(slurp(log), "unmounted from outside"), 1u) << slurp(log);
  }
  std::error_code ec;
  fs::remove(log, ec);
}

}  // namespace
}  // namespace heddle::test
