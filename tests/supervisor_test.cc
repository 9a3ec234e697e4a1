// The Supervisor end to end: real sandboxed workers, real mounts, real kernels.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <future>
#include <set>
#include <thread>

#include "heddle/error.h"
#include "heddle/ipc/worker_env.h"
#include "heddle/launcher/launcher_environment.h"
#include "heddle/launcher/mountpoint.h"
#include "heddle/launcher/supervisor.h"
#include "heddle/process.h"
#include "support/test_support.h"

namespace heddle::test {
namespace {

using ipc::MountSpec;
using launcher::Supervisor;
using launcher::SupervisorOptions;
using namespace std::chrono_literals;

class SupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HEDDLE_REQUIRE_MOUNT();
    tree_ = std::make_unique<ScratchTree>();
    tree_->write("hello.txt", "hello, sandbox\n");
    tree_->write("empty", "");
    tree_->write("dir/nested/deep.txt", "deep\n");
    tree_->write("tool.sh", "#!/bin/sh\n", 0755);
    std::string big(1 << 20, '\0');
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 % 251);
    tree_->write("big.bin", big);
  }
  void TearDown() override {
    if (tree_) {
      EXPECT_FALSE(heddle_mounted(tree_->mountpoint())) << "a test left its mount";
    }
  }

  MountSpec request() const {
    return MountSpec::directory(tree_->source().string(), tree_->mountpoint().string());
  }
  // What main() would pass (the sanitizers' options reach the worker), with a short grace.
  static SupervisorOptions fast_options() {
    SupervisorOptions options = launcher::LauncherEnvironment::read().supervisor_options();
    options.stop_grace = 500ms;
    return options;
  }
  static void kill_worker(const Supervisor& supervisor) {
    ASSERT_EQ(::syscall(SYS_pidfd_send_signal, supervisor.worker_pidfd(), SIGKILL, nullptr, 0), 0);
  }

  std::unique_ptr<ScratchTree> tree_;
};

// libgit2 and the 16 objects it needs cost every exec about 4 ms: a directory's worker is
// heddle-fuse-worker, which links none of them (GitMountTest checks that a thread's maps it).
TEST_F(SupervisorTest, ADirectoryWorkerMapsNoLibgit2) {
  auto supervisor = Supervisor::spawn(request(), fast_options());
  const auto files = mapped_files(supervisor->pid());
  supervisor->unmount();
  if (!files) GTEST_SKIP() << "only root may read a worker's maps (it is not dumpable)";
  ASSERT_FALSE(files->empty());
  EXPECT_EQ(fs::path(files->front()).filename(), "heddle-fuse-worker");
  for (const std::string& file : *files) {
    EXPECT_EQ(file.find("libgit2"), std::string::npos) << file;
    EXPECT_EQ(file.find("libcrypto"), std::string::npos) << file;
  }
}

TEST_F(SupervisorTest, SpawnReturnsAfterMountReadyWithTheMountInPlace) {
  auto supervisor = Supervisor::spawn(request(), fast_options());
  EXPECT_TRUE(supervisor->is_alive());
  EXPECT_EQ(supervisor->ready().mount_path, tree_->mountpoint().string());
  EXPECT_EQ(static_cast<pid_t>(supervisor->ready().pid), supervisor->pid());
  EXPECT_TRUE(heddle_mounted(tree_->mountpoint()));
  supervisor->unmount();
}

TEST_F(SupervisorTest, ReadsThroughTheMountEqualTheSource) {
  auto supervisor = Supervisor::spawn(request(), fast_options());
  for (const char* name : {"hello.txt", "empty", "dir/nested/deep.txt", "big.bin", "tool.sh"}) {
    EXPECT_EQ(slurp(tree_->mountpoint() / name), slurp(tree_->source() / name)) << name;
  }
  EXPECT_EQ(fs::status(tree_->mountpoint() / "tool.sh").permissions() & fs::perms::owner_exec,
            fs::perms::owner_exec);
  supervisor->unmount();
}

// The directory backend keeps pages and listings across opens (for warm reads); a source that
// changes must still show through once the kernel refreshes the attributes (1 s timeout).
TEST_F(SupervisorTest, ChangesToTheSourceShowWithinTheAttributeTimeout) {
  auto supervisor = Supervisor::spawn(request(), fast_options());
  const fs::path file = tree_->mountpoint() / "hello.txt";
  const fs::path dir = tree_->mountpoint() / "dir";
  EXPECT_EQ(slurp(file), "hello, sandbox\n");
  EXPECT_EQ(slurp(file), "hello, sandbox\n");  // the second open keeps the cached page
  const auto names = [&] {
    std::set<std::string> found;
    for (const auto& entry : fs::directory_iterator(dir)) found.insert(entry.path().filename());
    return found;
  };
  EXPECT_EQ(names(), std::set<std::string>{"nested"});
  EXPECT_EQ(slurp(dir / "nested" / "deep.txt"), "deep\n");
  tree_->write("hello.txt", "changed, and longer than before\n");
  tree_->write("dir/new.txt", "new\n");
  // Same size, new content: only the mtime tells.
  std::this_thread::sleep_for(10ms);
  tree_->write("dir/nested/deep.txt", "DEEP\n");
  EXPECT_TRUE(eventually([&] { return slurp(file) == "changed, and longer than before\n"; }, 3s));
  EXPECT_TRUE(eventually([&] { return names() == std::set<std::string>{"nested", "new.txt"}; }, 3s));
  EXPECT_TRUE(eventually([&] { return slurp(dir / "nested" / "deep.txt") == "DEEP\n"; }, 3s));
  supervisor->unmount();
}

TEST_F(SupervisorTest, StatusRoundTripNamesTheWorkerAndTheMount) {
  auto supervisor = Supervisor::spawn(request(), fast_options());
  for (int i = 0; i < 3; ++i) {
    const ipc::StatusOk status = supervisor->status();
    EXPECT_EQ(static_cast<pid_t>(status.pid), supervisor->pid());
    EXPECT_EQ(status.mount_path, tree_->mountpoint().string());
    // The directory worker's own counters pass the supervisor's list of known fields.
    for (const char* key : {"uptime_ms", "nodes", "other_filesystems"}) {
      EXPECT_TRUE(status.extra.contains(key)) << key << " missing from " << status.extra.dump();
    }
  }
  supervisor->unmount();
}

TEST_F(SupervisorTest, StatusTimesOutOnAStoppedWorkerAndRecoversWhenItResumes) {
  SupervisorOptions options = fast_options();
  options.status_timeout = 300ms;
  auto supervisor = Supervisor::spawn(request(), options);
  const auto signal_worker = [&](int signo) {
    ASSERT_EQ(::syscall(SYS_pidfd_send_signal, supervisor->worker_pidfd(), signo, nullptr, 0), 0);
  };
  const ipc::StatusOk before = supervisor->status();
  const auto before_at = std::chrono::steady_clock::now();
  signal_worker(SIGSTOP);
  const auto started = std::chrono::steady_clock::now();
  try {
    (void)supervisor->status();
    ADD_FAILURE() << "a stopped worker answered";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ETIMEDOUT) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, 2s);
  signal_worker(SIGCONT);
  std::this_thread::sleep_for(300ms);  // the late reply is waiting in the socket by now
  // It must not be taken for this request's: the worker's uptime tells a fresh reply (written
  // now) from the late one (written at SIGCONT, 300 ms ago).
  const ipc::StatusOk fresh = supervisor->status();
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - before_at);
  const auto uptime_delta =
      fresh.extra.at("uptime_ms").get<long>() - before.extra.at("uptime_ms").get<long>();
  EXPECT_GE(uptime_delta, elapsed.count() - 150) << "got the stale reply";
  EXPECT_EQ(supervisor->status().mount_path, tree_->mountpoint().string());
  supervisor->unmount();
}

TEST_F(SupervisorTest, UnmountStopsCleanlyRemovesTheMountAndIsIdempotent) {
  auto supervisor = Supervisor::spawn(request(), fast_options());
  const auto started = std::chrono::steady_clock::now();
  supervisor->unmount();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 500ms) << "Stop alone should suffice";
  EXPECT_FALSE(supervisor->is_alive());
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
  ASSERT_TRUE(supervisor->exit_status().has_value());
  EXPECT_TRUE(supervisor->exit_status()->success()) << supervisor->exit_status()->describe();
  supervisor->unmount();
  EXPECT_THROW((void)supervisor->status(), Error);
}

// Its own unmount removes the mount too: never taken for one from outside.
TEST_F(SupervisorTest, ItsOwnUnmountIsNotAnUnmountFromOutside) {
  auto supervisor = Supervisor::spawn(request(), fast_options());
  supervisor->unmount();
  EXPECT_FALSE(supervisor->unmounted_from_outside());
  EXPECT_EQ(supervisor->exit_cause().find("outside"), std::string::npos) << supervisor->exit_cause();
}

// Issue 18: `fusermount3 -u -z` while a reader holds a file open detaches the mount but keeps
// its FUSE connection, so the worker's session goes on: the supervisor notices the detach
// itself, ends the worker (the reader's file then fails) and says so through ended_fd().
TEST_F(SupervisorTest, AMountDetachedFromOutsideWithAFileOpenEndsTheWorker) {
  auto supervisor = Supervisor::spawn(request(), fast_options());
  const pid_t worker = supervisor->pid();
  const UniqueFd reader(::open((tree_->mountpoint() / "hello.txt").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(reader) << std::strerror(errno);
  const ProcessResult removed =
      run_process({"/usr/bin/fusermount3", "-u", "-z", "--", tree_->mountpoint().string()}, {}, 10s);
  ASSERT_EQ(removed.exit_code, 0) << removed.out << removed.err;
  pollfd ended{supervisor->ended_fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&ended, 1, 2000), 1) << "the supervisor did not notice within 2 s";
  EXPECT_TRUE(supervisor->unmounted_from_outside());
  EXPECT_FALSE(supervisor->is_alive());
  EXPECT_NE(supervisor->exit_cause().find("unmounted from outside"), std::string::npos)
      << supervisor->exit_cause();
  EXPECT_NE(::kill(worker, 0), 0) << "worker " << worker << " still exists";
  char byte = 0;
  EXPECT_EQ(::pread(reader.get(), &byte, 1, 0), -1);
  EXPECT_TRUE(errno == ENOTCONN || errno == EIO) << std::strerror(errno);
  EXPECT_NO_THROW(supervisor->unmount());
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
}

TEST_F(SupervisorTest, DestructionUnmounts) {
  Supervisor::spawn(request(), fast_options()).reset();
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
}

TEST_F(SupervisorTest, PanicOnInitFailsSpawnCleanlyAndTheNextSpawnWorks) {
  const int fds_before = open_fd_count();
  SupervisorOptions panicking = fast_options();
  panicking.worker_env.push_back(std::string(ipc::kPanicOnInitEnv) + "=1");
  try {
    (void)Supervisor::spawn(request(), panicking);
    FAIL() << "spawn should have failed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exited before MountReady"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("exit code 101"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
  EXPECT_EQ(open_fd_count(), fds_before);
  EXPECT_EQ(child_count(), 0);

  auto supervisor = Supervisor::spawn(request(), fast_options());
  EXPECT_EQ(slurp(tree_->mountpoint() / "hello.txt"), "hello, sandbox\n");
  supervisor->unmount();
}

TEST_F(SupervisorTest, SigkillOfTheWorkerIsObservedTheMountGoesAndReadersGetErrors) {
  // Without restarts (as once the budget is spent; restart_test.cc has the successors).
  SupervisorOptions options = fast_options();
  options.restart_budget = {};
  auto supervisor = Supervisor::spawn(request(), options);
  // Opened before the kill and never read, so the read must reach the (dead) worker.
  const int fd = ::open((tree_->mountpoint() / "big.bin").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  kill_worker(*supervisor);

  EXPECT_TRUE(eventually([&] { return !supervisor->is_alive(); })) << "liveness never flipped";
  EXPECT_TRUE(eventually([&] { return !heddle_mounted(tree_->mountpoint()); }))
      << "the mount outlived its worker";
  auto reader = std::async(std::launch::async, [fd] {
    char buffer[4096];
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    return n < 0 ? errno : 0;
  });
  ASSERT_EQ(reader.wait_for(5s), std::future_status::ready) << "the reader hung";
  EXPECT_NE(reader.get(), 0) << "a read from a dead worker succeeded";
  ::close(fd);

  ASSERT_TRUE(supervisor->exit_status().has_value());
  EXPECT_EQ(supervisor->exit_status()->signal, SIGKILL);
  EXPECT_FALSE(supervisor->unmounted_from_outside()) << "the mount was still there";
  EXPECT_NO_THROW(supervisor->unmount());
}

TEST_F(SupervisorTest, AWorkerIgnoringStopAndSigtermIsKilledAfterTwoGracePeriods) {
  SupervisorOptions options = fast_options();
  options.stop_grace = 300ms;
  options.test_ignore_stop = true;
  auto supervisor = Supervisor::spawn(request(), options);
  const auto started = std::chrono::steady_clock::now();
  supervisor->unmount();
  const auto elapsed = std::chrono::steady_clock::now() - started;
  EXPECT_GE(elapsed, 2 * options.stop_grace);
  EXPECT_LT(elapsed, 2 * options.stop_grace + 2s);
  ASSERT_TRUE(supervisor->exit_status().has_value());
  EXPECT_EQ(supervisor->exit_status()->signal, SIGKILL) << supervisor->exit_status()->describe();
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
}

TEST_F(SupervisorTest, SigtermEndsTheWorkerAlthoughItIsPidOneOfItsNamespace) {
  auto supervisor = Supervisor::spawn(request(), fast_options());
  ASSERT_EQ(::syscall(SYS_pidfd_send_signal, supervisor->worker_pidfd(), SIGTERM, nullptr, 0), 0);
  ASSERT_TRUE(eventually([&] { return !supervisor->is_alive(); }));
  ASSERT_TRUE(supervisor->exit_status().has_value());
  EXPECT_TRUE(supervisor->exit_status()->success()) << supervisor->exit_status()->describe();
  EXPECT_TRUE(eventually([&] { return !heddle_mounted(tree_->mountpoint()); }));
  supervisor->unmount();
}

TEST_F(SupervisorTest, AMountForAnotherUserIsServedAsThatUserAndUsableByThem) {
  HEDDLE_REQUIRE_ROOT();  // only root may mount for someone else
  constexpr uid_t kUser = 23456;  // needs no passwd entry
  MountSpec for_user = request();
  for_user.uid = kUser;
  for_user.gid = kUser;
  auto supervisor = Supervisor::spawn(for_user, fast_options());
  EXPECT_EQ(proc_status_field(supervisor->pid(), "Uid"), "23456\t23456\t23456\t23456");
  const auto top = launcher::top_mount_at(tree_->mountpoint().string());
  ASSERT_TRUE(top.has_value());
  // The user reads through the mount; without allow_other nobody else may, not even root.
  const std::string path = (tree_->mountpoint() / "hello.txt").string();
  // A raw fork, not a helper program: the child itself is the other user reading.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Only raw syscalls here: the watcher thread may hold libc locks at fork.
    if (::setresgid(kUser, kUser, kUser) != 0 || ::setresuid(kUser, kUser, kUser) != 0) _exit(3);
    const int fd = ::open(path.c_str(), O_RDONLY);
    char buffer[32] = {};
    _exit(fd >= 0 && ::read(fd, buffer, sizeof buffer) == 15 ? 0 : 4);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  struct stat st {};
  EXPECT_NE(::stat((tree_->mountpoint() / "hello.txt").c_str(), &st), 0) << "root got in";
  EXPECT_EQ(errno, EACCES);
  supervisor->unmount();
}

TEST_F(SupervisorTest, AWorkerBinaryInADirectoryOnlyRootCanEnterStillRuns) {
  // A build tree under root's 0700 home: the worker's uid could not walk that path itself.
  const fs::path private_dir = tree_->root() / "private";
  fs::create_directory(private_dir);
  fs::permissions(private_dir, fs::perms(0700));
  const fs::path worker = private_dir / "heddle-fuse-worker";
  fs::copy_file(bin_path("heddle-fuse-worker"), worker);
  SupervisorOptions options = fast_options();
  options.worker_binary = worker.string();
  auto supervisor = Supervisor::spawn(request(), options);
  EXPECT_EQ(slurp(tree_->mountpoint() / "hello.txt"), "hello, sandbox\n");
  supervisor->unmount();
}

TEST_F(SupervisorTest, HandshakeTimesOutOnAWorkerThatNeverAnswers) {
  tree_->write("../silent-worker.sh", "#!/bin/sh\nexec sleep 30\n", 0755);
  SupervisorOptions options = fast_options();
  options.worker_binary = (tree_->root() / "silent-worker.sh").string();
  options.handshake_timeout = 500ms;
  const auto started = std::chrono::steady_clock::now();
  try {
    (void)Supervisor::spawn(request(), options);
    FAIL() << "spawn should have timed out";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ETIMEDOUT) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);
  EXPECT_EQ(child_count(), 0);
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
}

TEST_F(SupervisorTest, AMissingWorkerBinaryIsAClearError) {
  SupervisorOptions options = fast_options();
  options.worker_binary = "/nonexistent/heddle-fuse-worker";
  try {
    (void)Supervisor::spawn(request(), options);
    FAIL() << "spawn should have failed";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ENOENT);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/heddle-fuse-worker"), std::string::npos);
  }
}

// Issue 18: root's own 0700 source, which the worker (nobody) may not even open, is served:
// the supervisor's file broker opens the root and each file for it. (Before, the mount failed
// naming the worker's identity, 65534.)
TEST_F(SupervisorTest, ASourceTheWorkerCannotReadIsServedThroughTheFileBroker) {
  HEDDLE_REQUIRE_ROOT();  // without root the worker falls back to the caller, who can read it
  tree_->write("private.txt", "root's\n", 0600);
  fs::permissions(tree_->source(), fs::perms(0700));
  auto supervisor = Supervisor::spawn(request(), fast_options());
  EXPECT_EQ(slurp(tree_->mountpoint() / "private.txt"), "root's\n");
  struct stat st {};
  ASSERT_EQ(::stat((tree_->mountpoint() / "private.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u) << "its real owner, not the overflow id the worker sees";
  supervisor->unmount();
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
}

// Issue 12, item 1: the mount is removed by its identity (mount id and device), wherever its
// directory has moved, and nothing now at its old path is touched (as root, a tmpfs there).
TEST_F(SupervisorTest, UnmountRemovesTheMountWhereItsDirectoryMovedNotWhatIsAtItsOldPath) {
  const fs::path before = tree_->root() / "p";
  const fs::path after = tree_->root() / "q";
  fs::create_directories(before / "mnt");
  MountSpec spec = request();
  spec.mountpoint = (before / "mnt").string();
  auto supervisor = Supervisor::spawn(spec, fast_options());
  ASSERT_TRUE(heddle_mounted(before / "mnt"));
  fs::rename(before, after);  // the mount goes with its directory
  ASSERT_TRUE(heddle_mounted(after / "mnt"));
  fs::create_directories(before / "mnt");
  const bool tmpfs = running_as_root();
  if (tmpfs) {
    ASSERT_EQ(::mount("heddle-old-path", (before / "mnt").c_str(), "tmpfs", MS_NOSUID | MS_NODEV,
                      "size=64k"),
              0)
        << std::strerror(errno);
  }
  supervisor->unmount();
  EXPECT_FALSE(heddle_mounted(after / "mnt")) << "the moved mount was left behind";
  if (tmpfs) {
    const auto top = launcher::top_mount_at((before / "mnt").string());
    EXPECT_TRUE(top && top->fstype == "tmpfs") << "the mount now at the old path was removed";
    ::umount2((before / "mnt").c_str(), MNT_DETACH);
  }
  if (heddle_mounted(after / "mnt")) ::umount2((after / "mnt").c_str(), MNT_DETACH);
}

// Issue 12, item 1: a mountpoint checked for a user and then swapped (its directory renamed
// away, a symlink to a root-owned directory in its place) does not move the mount: it goes
// onto the directory that was checked. Root only: without root, fusermount3 resolves the path
// itself, with the user's own rights.
TEST_F(SupervisorTest, AMountGoesOntoTheCheckedDirectoryNotWhereItsPathLeadsLater) {
  HEDDLE_REQUIRE_ROOT();
  constexpr uid_t kUser = 23456;
  const fs::path parent = tree_->root() / "home";
  const fs::path checked = tree_->root() / "checked";
  const fs::path elsewhere = tree_->root() / "elsewhere";  // root's, as a directory on PATH
  fs::create_directories(parent / "mnt");
  fs::create_directories(elsewhere / "mnt");
  ASSERT_EQ(::chown(parent.c_str(), kUser, kUser), 0);
  ASSERT_EQ(::chown((parent / "mnt").c_str(), kUser, kUser), 0);
  launcher::HeldMountpoint held =
      launcher::hold_mountpoint((parent / "mnt").string(), kUser, kUser);
  EXPECT_EQ(held.path, (parent / "mnt").string());
  fs::rename(parent, checked);
  fs::create_directory_symlink(elsewhere, parent);
  MountSpec spec = request();
  spec.mountpoint = held.path;
  spec.uid = kUser;
  spec.gid = kUser;
  auto supervisor = Supervisor::spawn(spec, fast_options(), std::move(held.fd));
  EXPECT_TRUE(heddle_mounted(checked / "mnt"));
  EXPECT_FALSE(launcher::top_mount_at((elsewhere / "mnt").string()).has_value())
      << "the mount followed the swapped path";
  supervisor->unmount();
  EXPECT_FALSE(heddle_mounted(checked / "mnt"));
  for (const fs::path& path : {checked / "mnt", elsewhere / "mnt"}) {
    if (heddle_mounted(path)) ::umount2(path.c_str(), MNT_DETACH);
  }
}

// What hold_mountpoint refuses when root acts for a user: that user's symlink (root does not
// follow it), a root-owned directory, one the user cannot reach; the user's own is held.
TEST_F(SupervisorTest, HoldingAMountpointForAUserChecksItAsThatUser) {
  HEDDLE_REQUIRE_ROOT();
  constexpr uid_t kUser = 23456;
  const fs::path root = tree_->root();
  fs::create_directories(root / "home" / "mnt");
  fs::create_directories(root / "roots");
  fs::create_directories(root / "private" / "mine");
  fs::permissions(root / "private", fs::perms(0700));
  fs::create_directory_symlink(root / "roots", root / "home" / "link");
  for (const fs::path& path : {root / "home", root / "home" / "mnt", root / "home" / "link",
                               root / "private" / "mine"}) {
    ASSERT_EQ(::lchown(path.c_str(), kUser, kUser), 0) << path;
  }
  fs::create_directory_symlink(root / "roots", root / "rootlink");  // only root can change it
  const auto refusal = [&](const fs::path& path) -> int {
    try {
      (void)launcher::hold_mountpoint(path.string(), kUser, kUser);
    } catch (const Error& e) {
      return e.code();
    }
    return 0;
  };
  EXPECT_EQ(refusal(root / "home" / "link"), EPERM);
  EXPECT_EQ(refusal(root / "rootlink"), EPERM);
  EXPECT_EQ(refusal(root / "roots"), EPERM);
  EXPECT_EQ(refusal(root / "private" / "mine"), EACCES);
  EXPECT_EQ(refusal(root / "home" / "mnt"), 0);
  // Root's own symlink is followed for root's own mounts.
  EXPECT_EQ(launcher::hold_mountpoint((root / "rootlink").string(), 0, 0).path,
            (root / "roots").string());
}

TEST_F(SupervisorTest, FdAndChildCountsAreUnchangedAfterManyFailuresAndCycles) {
  const int fds_before = open_fd_count();
  SupervisorOptions broken = fast_options();
  broken.worker_binary = "/nonexistent/heddle-fuse-worker";
  for (int i = 0; i < 32; ++i) {
    EXPECT_THROW((void)Supervisor::spawn(request(), broken), Error);
  }
  EXPECT_EQ(open_fd_count(), fds_before);
  EXPECT_EQ(child_count(), 0);
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));

  for (int i = 0; i < 32; ++i) {
    auto supervisor = Supervisor::spawn(request(), fast_options());
    supervisor->unmount();
  }
  EXPECT_EQ(open_fd_count(), fds_before);
  EXPECT_EQ(child_count(), 0);
}

}  // namespace
}  // namespace heddle::test
