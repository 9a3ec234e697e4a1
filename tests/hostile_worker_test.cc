// Workers that speak garbage on the IPC socket (support/hostile_worker.cc, one misbehaviour per
// executable name): the supervisor must fail with a clear heddle::Error within a bound, kill and
// reap the worker, remove the mount, and leak no fd.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "heddle/error.h"
#include "heddle/launcher/launcher_environment.h"
#include "heddle/launcher/supervisor.h"
#include "support/test_support.h"

namespace heddle::test {
namespace {

using ipc::MountSpec;
using launcher::Supervisor;
using launcher::SupervisorOptions;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kSlack = 2s;  // on top of the timeout a case waits out

// fds of this process open on /dev/fuse: the supervisor hands its only one to the worker.
int fuse_fd_count() {
  int count = 0;
  for (const auto& entry : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (fs::read_symlink(entry.path(), ec) == "/dev/fuse") ++count;
  }
  return count;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class HostileWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HEDDLE_REQUIRE_MOUNT();
    tree_ = std::make_unique<ScratchTree>();
    tree_->write("hello.txt", "hello\n");
    fds_before_ = open_fd_count();
  }
  void TearDown() override {
    if (!tree_) return;
    EXPECT_FALSE(heddle_mounted(tree_->mountpoint())) << "a hostile worker left its mount";
    EXPECT_EQ(child_count(), 0) << "a worker or guard was left behind";
    EXPECT_EQ(open_fd_count(), fds_before_) << "fds leaked";
    EXPECT_EQ(fuse_fd_count(), 0);
  }

  MountSpec request() const {
    return MountSpec::directory(tree_->source().string(), tree_->mountpoint().string());
  }

  // A hard copy named hostile-MODE (the sandbox binds the executable's canonical path, so a
  // symlink would run under the target's name), under the 0755 scratch root so uid 65534 can
  // reach it.
  SupervisorOptions hostile(const std::string& mode) const {
    const fs::path copy = tree_->root() / ("hostile-" + mode);
    fs::copy_file(bin_path("hostile_worker"), copy, fs::copy_options::overwrite_existing);
    fs::permissions(copy, fs::perms(0755));
    SupervisorOptions options = launcher::LauncherEnvironment::read().supervisor_options();
    options.worker_binary = copy.string();
    options.handshake_timeout = 5s;
    options.status_timeout = 300ms;
    options.stop_grace = 300ms;
    return options;
  }

  // The error spawn throws (a failure if it returns), and how long it took.
  struct Failure {
    Error error;
    Clock::duration elapsed;
  };
  Failure spawn_failure(const SupervisorOptions& options) const {
    const auto started = Clock::now();
    auto error = error_from([&] { (void)Supervisor::spawn(request(), options); });
    const auto elapsed = Clock::now() - started;
    if (!error) {
      ADD_FAILURE() << "spawn succeeded with " << options.worker_binary;
      return {Error("spawn succeeded", 0), elapsed};
    }
    return {*error, elapsed};
  }

  // After a failed spawn: nothing of the attempt is left, at once (not eventually).
  void expect_nothing_left() const {
    EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
    EXPECT_EQ(child_count(), 0);
    EXPECT_EQ(open_fd_count(), fds_before_);
  }

  // unmount() of a worker that ignores Stop and SIGTERM: Stop, grace, SIGTERM, grace, SIGKILL.
  static void expect_bounded_unmount(Supervisor& supervisor, const SupervisorOptions& options) {
    const auto started = Clock::now();
    supervisor.unmount();
    EXPECT_LT(Clock::now() - started, 3 * options.stop_grace + kSlack);
    EXPECT_FALSE(supervisor.is_alive());
    ASSERT_TRUE(supervisor.exit_status().has_value());
  }

  std::unique_ptr<ScratchTree> tree_;
  int fds_before_ = 0;
};

// ---- before MountReady: spawn must throw -----------------------------------------------------

TEST_F(HostileWorkerTest, AnOversizeFirstFrameFailsSpawnAtOnceWithEmsgsize) {
  const SupervisorOptions options = hostile("oversize");
  const Failure failure = spawn_failure(options);
  const std::string what = failure.error.what();
  EXPECT_EQ(failure.error.code(), EMSGSIZE) << what;
  EXPECT_TRUE(contains(what, "bad handshake from the worker")) << what;
  EXPECT_TRUE(contains(what, "4294967295")) << what;
  EXPECT_TRUE(contains(what, "exceeds the limit of 65536")) << what;
  // Refused on the header: neither the 4 GiB body nor the handshake timeout was waited for.
  EXPECT_LT(failure.elapsed, options.handshake_timeout) << what;
  expect_nothing_left();
}

TEST_F(HostileWorkerTest, ATruncatedFrameFollowedBySilenceTimesOutTheHandshake) {
  SupervisorOptions options = hostile("truncated");
  options.handshake_timeout = 1s;
  const Failure failure = spawn_failure(options);
  const std::string what = failure.error.what();
  EXPECT_EQ(failure.error.code(), ETIMEDOUT) << what;
  EXPECT_TRUE(contains(what, "sent no MountReady within 1000 ms")) << what;
  EXPECT_GE(failure.elapsed, options.handshake_timeout);
  EXPECT_LT(failure.elapsed, options.handshake_timeout + kSlack);
  expect_nothing_left();
}

TEST_F(HostileWorkerTest, AnUnknownKindFailsSpawnWithEproto) {
  const SupervisorOptions options = hostile("unknown-kind");
  const Failure failure = spawn_failure(options);
  const std::string what = failure.error.what();
  EXPECT_EQ(failure.error.code(), EPROTO) << what;
  EXPECT_TRUE(contains(what, "bad handshake from the worker")) << what;
  EXPECT_TRUE(contains(what, "unknown kind \"Explode\"")) << what;
  EXPECT_LT(failure.elapsed, options.handshake_timeout) << what;
  expect_nothing_left();
}

TEST_F(HostileWorkerTest, StatusOkBeforeMountReadyFailsSpawnWithEproto) {
  const SupervisorOptions options = hostile("status-first");
  const Failure failure = spawn_failure(options);
  const std::string what = failure.error.what();
  EXPECT_EQ(failure.error.code(), EPROTO) << what;
  EXPECT_TRUE(contains(what, "worker sent StatusOk before MountReady")) << what;
  EXPECT_LT(failure.elapsed, options.handshake_timeout) << what;
  expect_nothing_left();
}

TEST_F(HostileWorkerTest, ClosingTheSocketMidFrameFailsSpawnWithEproto) {
  const SupervisorOptions options = hostile("close-mid-frame");
  const Failure failure = spawn_failure(options);
  const std::string what = failure.error.what();
  EXPECT_EQ(failure.error.code(), EPROTO) << what;
  EXPECT_TRUE(contains(what, "bad handshake from the worker")) << what;
  EXPECT_TRUE(contains(what, "truncated frame (14 of 104 bytes)")) << what;
  EXPECT_LT(failure.elapsed, options.handshake_timeout) << what;
  expect_nothing_left();
}

// ---- after MountReady: status() must throw, unmount must still end everything -------------

TEST_F(HostileWorkerTest, AWorkerThatNeverAnswersStatusTimesOutAndIsKilledOnUnmount) {
  const SupervisorOptions options = hostile("silent");
  auto supervisor = Supervisor::spawn(request(), options);
  EXPECT_TRUE(heddle_mounted(tree_->mountpoint()));
  for (int i = 0; i < 2; ++i) {  // the second also waits out the first's missing reply
    const auto started = Clock::now();
    const auto error = error_from([&] { (void)supervisor->status(); });
    const auto elapsed = Clock::now() - started;
    ASSERT_TRUE(error.has_value()) << "a silent worker answered";
    EXPECT_EQ(error->code(), ETIMEDOUT) << error->what();
    EXPECT_TRUE(contains(error->what(), "no reply within 300 ms")) << error->what();
    EXPECT_GE(elapsed, options.status_timeout);
    EXPECT_LT(elapsed, 2 * options.status_timeout + kSlack);
  }
  EXPECT_TRUE(supervisor->is_alive());
  expect_bounded_unmount(*supervisor, options);
  EXPECT_EQ(supervisor->exit_status()->signal, SIGKILL) << supervisor->exit_status()->describe();
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
}

TEST_F(HostileWorkerTest, AFloodOfRepliesToOneStatusIsReadOneFrameAtATime) {
  const SupervisorOptions options = hostile("flood-reply");
  auto supervisor = Supervisor::spawn(request(), options);
  // No request ids in the protocol: the surplus replies answer later requests. What matters
  // is that each call reads one bounded frame, returns promptly and stays in step.
  for (int i = 0; i < 5; ++i) {
    const auto started = Clock::now();
    const ipc::StatusOk status = supervisor->status();
    EXPECT_LT(Clock::now() - started, options.status_timeout + kSlack);
    EXPECT_EQ(static_cast<pid_t>(status.pid), supervisor->pid());
    EXPECT_EQ(status.mount_path, tree_->mountpoint().string());
  }
  expect_bounded_unmount(*supervisor, options);
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
}

TEST_F(HostileWorkerTest, UnsolicitedFramesMakeStatusFailWithEproto) {
  const SupervisorOptions options = hostile("unsolicited");
  auto supervisor = Supervisor::spawn(request(), options);
  const auto started = Clock::now();
  const auto error = error_from([&] { (void)supervisor->status(); });
  EXPECT_LT(Clock::now() - started, options.status_timeout + kSlack);
  ASSERT_TRUE(error.has_value()) << "status() took an unsolicited frame for its reply";
  EXPECT_EQ(error->code(), EPROTO) << error->what();
  EXPECT_TRUE(contains(error->what(), "expected StatusOk, got Stopping")) << error->what();
  expect_bounded_unmount(*supervisor, options);
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
}

TEST_F(HostileWorkerTest, FdsPassedOnTheIpcSocketAreDroppedNotLeaked) {
  SupervisorOptions options = hostile("extra-fds");
  options.stop_grace = 2s;  // it answers Stop: no escalation, however loaded the machine
  auto supervisor = Supervisor::spawn(request(), options);
  // The worker attached 35 fds to MountReady, the /dev/fuse fd among them: none may arrive.
  const int fds_after_spawn = open_fd_count();
  EXPECT_EQ(fuse_fd_count(), 0);
  for (int i = 0; i < 5; ++i) {  // each reply carries them again
    const ipc::StatusOk status = supervisor->status();
    EXPECT_EQ(static_cast<pid_t>(status.pid), supervisor->pid());
  }
  EXPECT_EQ(open_fd_count(), fds_after_spawn);
  EXPECT_EQ(fuse_fd_count(), 0);
  const auto started = Clock::now();
  supervisor->unmount();
  EXPECT_LT(Clock::now() - started, options.stop_grace) << "it answers Stop";
  ASSERT_TRUE(supervisor->exit_status().has_value());
  EXPECT_TRUE(supervisor->exit_status()->success()) << supervisor->exit_status()->describe();
  // Had the supervisor kept the /dev/fuse fd, the connection would outlive the worker.
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
}

TEST_F(HostileWorkerTest, ClosingTheSocketMidReplyFailsStatusAndTheMountGoes) {
  const SupervisorOptions options = hostile("close-mid-reply");
  auto supervisor = Supervisor::spawn(request(), options);
  const auto started = Clock::now();
  const auto error = error_from([&] { (void)supervisor->status(); });
  EXPECT_LT(Clock::now() - started, options.status_timeout + kSlack);
  ASSERT_TRUE(error.has_value()) << "a cut-off reply was accepted";
  EXPECT_EQ(error->code(), EPROTO) << error->what();
  EXPECT_TRUE(contains(error->what(), "truncated frame (14 of 104 bytes)")) << error->what();
  // The worker exited after cutting its reply: the watcher reaps it and removes the mount.
  EXPECT_TRUE(eventually([&] { return !supervisor->is_alive(); }, 5s));
  EXPECT_TRUE(eventually([&] { return !heddle_mounted(tree_->mountpoint()); }, 5s));
  const auto after = error_from([&] { (void)supervisor->status(); });
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->code(), ESRCH) << after->what();
  supervisor->unmount();
  // It exited by itself after cutting its reply, or by the supervisor's SIGKILL for it.
  ASSERT_TRUE(supervisor->exit_status().has_value());
}

// A reply cut in two by the status timeout: the first call times out having read part of the
// frame, so no frame boundary can be found again. The next call reads from the middle of a
// frame, fails, and the supervisor ends the worker (and so the mount) instead of staying out
// of step for good.
TEST_F(HostileWorkerTest, AReplySplitAcrossTheStatusTimeoutEndsTheWorker) {
  const SupervisorOptions options = hostile("split-reply");
  auto supervisor = Supervisor::spawn(request(), options);
  const auto first = error_from([&] { (void)supervisor->status(); });
  ASSERT_TRUE(first.has_value()) << "the split reply arrived within the timeout";
  EXPECT_EQ(first->code(), ETIMEDOUT) << first->what();
  std::this_thread::sleep_for(700ms);  // the rest of the reply has arrived by now
  const auto started = Clock::now();
  const auto second = error_from([&] { (void)supervisor->status(); });
  EXPECT_LT(Clock::now() - started, 2 * options.status_timeout + kSlack);
  ASSERT_TRUE(second.has_value()) << "a frame read from its middle was accepted";
  EXPECT_TRUE(second->code() == EMSGSIZE || second->code() == EPROTO) << second->what();
  EXPECT_TRUE(contains(second->what(), "broke the IPC protocol and was killed")) << second->what();
  EXPECT_TRUE(eventually([&] { return !supervisor->is_alive(); }, 5s));
  EXPECT_TRUE(eventually([&] { return !heddle_mounted(tree_->mountpoint()); }, 5s));
  const auto after = error_from([&] { (void)supervisor->status(); });
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->code(), ESRCH) << after->what();
  expect_bounded_unmount(*supervisor, options);
}

}  // namespace
}  // namespace heddle::test
