// Workers that speak garbage on the IPC socket (support/hostile_worker.cc, one misbehaviour per
// executable name): the supervisor must fail with a clear heddle::Error within a bound, kill and
// reap the worker, remove the mount, and leak no fd. Through the CLI (HostileOutputTest): what
// such a worker, or a repository, says reaches terminals and logs only escaped.
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <regex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "heddle/error.h"
#include "heddle/ipc/frame.h"
#include "heddle/ipc/journal_size.h"
#include "heddle/launcher/control_socket.h"
#include "heddle/launcher/launcher_environment.h"
#include "heddle/launcher/supervisor.h"
#include "support/child_process.h"
#include "support/test_support.h"

namespace heddle::test {
namespace {

using ipc::MountSpec;
using launcher::Supervisor;
using launcher::SupervisorOptions;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kSlack = 2s;  // on top of the timeout a case waits out

// fds of this process open on /dev/fuse: the supervisor keeps one per mount (for a successor
// worker), and closes it when the mount goes.
int fuse_fd_count() { return open_fd_count("/dev/fuse"); }

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A hard copy of hostile_worker named hostile-MODE (the sandbox binds the executable's
// canonical path, so a symlink would run under the target's name), under the 0755 scratch
// root so uid 65534 can reach it.
std::string hostile_copy(const std::string& mode, const ScratchTree& tree) {
  const fs::path copy = tree.root() / ("hostile-" + mode);
  fs::copy_file(bin_path("hostile_worker"), copy, fs::copy_options::overwrite_existing);
  fs::permissions(copy, fs::perms(0755));
  return copy.string();
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

  SupervisorOptions hostile(const std::string& mode) const {
    SupervisorOptions options = launcher::LauncherEnvironment::read().supervisor_options();
    options.worker_binary = hostile_copy(mode, *tree_);
    options.handshake_timeout = 5s;
    options.status_timeout = 300ms;
    options.stop_grace = 300ms;
    // No successor unless a case asks: each case is about one worker's misbehaviour.
    options.restart_budget = {};
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

  // A worker that exited or was killed: the supervisor's watcher reaps it and removes the
  // mount, and status() says so.
  void expect_ended(Supervisor& supervisor) const {
    EXPECT_TRUE(eventually([&] { return !supervisor.is_alive(); }, 5s));
    EXPECT_TRUE(eventually([&] { return !heddle_mounted(tree_->mountpoint()); }, 5s));
    const auto after = error_from([&] { (void)supervisor.status(); });
    ASSERT_TRUE(after.has_value());
    EXPECT_EQ(after->code(), ESRCH) << after->what();
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
  // The worker attached 35 fds to MountReady, the /dev/fuse fd among them: none may arrive
  // (the one /dev/fuse fd here is the supervisor's own, kept for a successor).
  const int fds_after_spawn = open_fd_count();
  EXPECT_EQ(fuse_fd_count(), 1);
  for (int i = 0; i < 5; ++i) {  // each reply carries them again
    const ipc::StatusOk status = supervisor->status();
    EXPECT_EQ(static_cast<pid_t>(status.pid), supervisor->pid());
  }
  // Not EQ at once: the supervisor's mount watch reads mountinfo on every mount change on the
  // host, on a fresh fd for a moment. A leak would be 35 fds per reply, and stay.
  EXPECT_TRUE(eventually([&] { return open_fd_count() <= fds_after_spawn; }, 2s))
      << open_fd_count() << " fds open, " << fds_after_spawn << " after spawn";
  EXPECT_EQ(fuse_fd_count(), 1);
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
  expect_ended(*supervisor);
  supervisor->unmount();
  // It exited by itself after cutting its reply, or by the supervisor's SIGKILL for it.
  ASSERT_TRUE(supervisor->exit_status().has_value());
}

// The restart path gives a hostile worker nothing but its budget: each successor (the same
// binary, the same sandbox) breaks the protocol again and is killed, and once the budget is
// spent the mount is removed, naming the cause.
TEST_F(HostileWorkerTest, AWorkerBreakingTheProtocolAfterEveryRestartSpendsTheBudget) {
  SupervisorOptions options = hostile("number-path");
  options.restart_budget = {2, std::chrono::seconds(60)};
  auto supervisor = Supervisor::spawn(request(), options);
  std::vector<pid_t> workers = {supervisor->pid()};
  for (int attempt = 0; attempt < 3; ++attempt) {
    ASSERT_TRUE(eventually([&] { return supervisor->is_alive() || !heddle_mounted(tree_->mountpoint()); }, 10s));
    if (!supervisor->is_alive()) break;
    const auto error = error_from([&] { (void)supervisor->status(); });
    ASSERT_TRUE(error.has_value()) << "a StatusOk with a numeric mount_path was accepted";
    EXPECT_EQ(error->code(), EPROTO) << error->what();
    EXPECT_TRUE(eventually([&] { return supervisor->pid() != workers.back() || !heddle_mounted(tree_->mountpoint()); }, 10s));
    if (supervisor->pid() != workers.back()) workers.push_back(supervisor->pid());
  }
  EXPECT_TRUE(eventually([&] { return !heddle_mounted(tree_->mountpoint()); }, 10s));
  EXPECT_EQ(workers.size(), 3u) << "the first worker and two successors";
  const launcher::RestartInfo info = supervisor->restart_info();
  EXPECT_EQ(info.generation, 3u);
  EXPECT_EQ(info.restarts, 2u);
  supervisor->unmount();
  const std::string cause = supervisor->exit_cause();
  EXPECT_TRUE(contains(cause, "worker " + std::to_string(workers.back()) +
                                  " exited (signal 9 (SIGKILL)); the restart budget (2 restarts "
                                  "in 60 s) is spent"))
      << cause;
}

// A reply cut in two by the status timeout: the first call times out having read part of the
// frame, so no frame boundary can be found again. The next call reads from the middle of a
// frame, fails, and the supervisor ends the worker (and so the mount) instead of staying out
// of step for good.
// ---- the file broker (issue 18), asked by a worker in the real sandbox ----------------------

// What a compromised worker gets from the supervisor's broker: the mount's user's 0600 file,
// and for everything outside the source (.., absolute paths, /proc/self, symlinks, NUL, overlong
// paths) a refusal. file_broker_test.cc has the same and more against the broker alone.
TEST_F(HostileWorkerTest, TheFileBrokerGrantsOnlyPathsBeneathTheSource) {
  tree_->write("secret.txt", "the user's own\n", 0600);
  fs::create_directory(tree_->source() / "sub");
  fs::create_directory_symlink("/", tree_->source() / "root-link");
  const Failure failure = spawn_failure(hostile("broker-probe"));
  const std::string what = failure.error.what();
  for (const char* expected :
       {" secret=0", " dotdot=22", " inner-dotdot=22", " absolute=22", " proc-self=22",
        " proc-relative=2", " symlink=40", " nul=22", " long=36"}) {
    EXPECT_TRUE(contains(what, expected)) << expected << " in " << what;
  }
  EXPECT_TRUE(contains(what, " symlink-last=20") || contains(what, " symlink-last=40")) << what;
  expect_nothing_left();
}

// ---- the node journal and child processes (issue 16), tried in the real sandbox -------------

// The journal memfd outlives every worker of the mount: a hostile one must not grow it into
// the host's memory, shrink it under its successor, or lift the seals; it may only write it.
TEST_F(HostileWorkerTest, AWorkerCannotResizeOrResealItsNodeJournal) {
  const Failure failure = spawn_failure(hostile("journal-probe"));
  const std::string what = failure.error.what();
  EXPECT_TRUE(contains(what, "journal: size=" + std::to_string(ipc::kJournalBytes))) << what;
  for (const char* expected : {" grow=1", " shrink=1", " fallocate-past-end=1",
                               " write-past-end=1", " unseal=1"}) {
    EXPECT_TRUE(contains(what, expected)) << expected << " (EPERM) in " << what;
  }
  EXPECT_TRUE(contains(what, " write-inside=0")) << what;
  EXPECT_TRUE(contains(what, " size-after=" + std::to_string(ipc::kJournalBytes))) << what;
  expect_nothing_left();
}

// A child of the worker could outlive it and keep reading /dev/fuse after a successor took
// over (a degraded sandbox has no pid namespace to end it with): the worker can start no
// process, and its threads still start.
TEST_F(HostileWorkerTest, AWorkerCanStartThreadsButNoProcess) {
  const Failure failure = spawn_failure(hostile("process-probe"));
  const std::string what = failure.error.what();
  for (const char* expected : {" fork=1", " vfork=1", " clone=1", " thread=1"}) {
    EXPECT_TRUE(contains(what, expected)) << expected << " in " << what;
  }
  expect_nothing_left();
}

// A worker flooding its broker and reading no answer blocks only that broker: Status and a
// prompt unmount still work, and nothing is left behind.
TEST_F(HostileWorkerTest, AFloodOfBrokerRequestsLeavesStatusAndUnmountWorking) {
  tree_->write("secret.txt", "the user's own\n", 0600);
  SupervisorOptions options = hostile("broker-flood");
  options.stop_grace = 2s;  // it answers Stop: no escalation, however loaded the machine
  options.status_timeout = 2s;
  auto supervisor = Supervisor::spawn(request(), options);
  std::this_thread::sleep_for(300ms);  // the flood fills both directions meanwhile
  for (int i = 0; i < 5; ++i) {
    const ipc::StatusOk status = supervisor->status();
    EXPECT_EQ(static_cast<pid_t>(status.pid), supervisor->pid());
  }
  const auto started = Clock::now();
  supervisor->unmount();
  EXPECT_LT(Clock::now() - started, options.stop_grace) << "it answers Stop";
  ASSERT_TRUE(supervisor->exit_status().has_value());
  EXPECT_TRUE(supervisor->exit_status()->success()) << supervisor->exit_status()->describe();
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
}

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
  expect_ended(*supervisor);
  expect_bounded_unmount(*supervisor, options);
}

// ---- through the CLI: a worker's and a repository's text, escaped --------------------------

using Json = nlohmann::ordered_json;

// What support/hostile_worker.cc's garish text looks like once escaped; the worker's relay
// cuts it in two at its newline (kGarishHead, then a line "worker PID: <0>forged ...").
const std::string kGarishHead = "\\x1b]52;c;aGVkZGxl\\x07\\x1b[31mred\\x1b]0;title\\x07\\rover";
const std::string kGarishEscaped = kGarishHead + "\\n<0>forged emergency\\u{9b}2J\\u{202e}";

// The first byte a terminal or journald could act on, described, or "" if there is none.
// Everything these tests print is ASCII (escaping turns the rest into ASCII), so anything
// but printable ASCII and the line ends is a failure.
std::string unsafe_byte(const std::string& text) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto b = static_cast<unsigned char>(text[i]);
    if ((b < 0x20 && b != '\n') || b >= 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", b);
      return std::string("byte ") + hex + " at " + std::to_string(i) + " in: " + text;
    }
  }
  return "";
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

class HostileOutputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HEDDLE_REQUIRE_MOUNT();
    // Orphaned supervisors become our children: reaped here, never left behind.
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    tree_ = std::make_unique<ScratchTree>();
    tree_->write("a.txt", "alpha\n");
  }
  void TearDown() override {
    if (!tree_) return;
    for (const fs::path& mountpoint : mountpoints_) {
      if (heddle_mounted(mountpoint)) {
        ADD_FAILURE() << "a test left the mount at " << mountpoint;
        (void)launcher({"unmount", mountpoint.string()});
      }
    }
    for (const pid_t pid : supervisors_) {
      if (!eventually([&] { return process_gone(pid); }, 10s)) {
        ADD_FAILURE() << "supervisor " << pid << " outlived its mount";
        ::kill(pid, SIGKILL);
      }
    }
  }

  // The launcher with `worker` as its worker (empty: ours) and logs under the scratch tree.
  std::vector<std::string> argv(const std::string& worker, std::vector<std::string> args) const {
    std::vector<std::string> full = {"/usr/bin/env", "XDG_STATE_HOME=" + state().string()};
    if (!worker.empty()) full.push_back(std::string(launcher::kWorkerBinaryEnv) + "=" + worker);
    full.push_back(bin_path("heddle-fuse-launcher"));
    full.insert(full.end(), args.begin(), args.end());
    return full;
  }
  CommandResult launcher(std::vector<std::string> args, const std::string& worker = "") const {
    return run_command(argv(worker, std::move(args)), 30s);
  }

  fs::path state() const { return tree_->root() / "state"; }
  // Where a background supervisor for `mountpoint` logs (root: /var/log/heddle-fuse).
  fs::path log_of(const fs::path& mountpoint) const {
    const fs::path dir =
        running_as_root() ? fs::path("/var/log/heddle-fuse") : state() / "heddle-fuse";
    return dir / fs::path(launcher::supervisor_log_path(dirs_, mountpoint.string())).filename();
  }

  // Mounts `source` at `mountpoint` in the background with `--json`; the ready line.
  Json mount_json(const std::string& worker, const ScratchTree& tree) {
    mountpoints_.push_back(tree.mountpoint());
    // Without restarts: a hostile worker killed for breaking the protocol ends its mount here
    // (AWorkerBreakingTheProtocolAfterEveryRestartSpendsTheBudget has the restarts).
    const CommandResult result = launcher({"mount", "--dir", tree.source().string(),
                                           "--mountpoint", tree.mountpoint().string(), "--json",
                                           "--restart-budget", "0"},
                                          worker);
    EXPECT_EQ(result.exit_code, 0) << result.err;
    EXPECT_EQ(unsafe_byte(result.out), "");
    Json ready = Json::parse(result.out);
    supervisors_.push_back(ready.value("supervisor_pid", -1));
    return ready;
  }

  std::string mp() const { return tree_->mountpoint().string(); }

  std::unique_ptr<ScratchTree> tree_;
  std::vector<fs::path> mountpoints_;
  std::vector<pid_t> supervisors_;
  const launcher::UserDirs dirs_ = launcher::UserDirs::read();
};

// The garish worker's false pid and mount_path are replaced, its unknown and mistyped fields
// dropped, and its text (replies, stderr) reaches mount, status, list and the log only
// escaped: no escape sequence, carriage return or line of its own.
TEST_F(HostileOutputTest, AGarishWorkerIsShownOnlyEscapedAndOnlyWhatTheSupervisorKnows) {
  const std::string worker = hostile_copy("garish", *tree_);
  fs::remove(log_of(tree_->mountpoint()));
  mountpoints_.push_back(tree_->mountpoint());
  const CommandResult mounted =
      launcher({"mount", "--dir", tree_->source().string(), "--mountpoint", mp()}, worker);
  ASSERT_EQ(mounted.exit_code, 0) << mounted.err;
  EXPECT_EQ(unsafe_byte(mounted.out), "");
  std::smatch match;
  ASSERT_TRUE(std::regex_search(mounted.out, match,
                                std::regex("worker pid ([0-9]+), supervisor pid ([0-9]+)")))
      << mounted.out;
  const pid_t worker_pid = std::stoi(match[1]);
  supervisors_.push_back(std::stoi(match[2]));
  // The pid is the worker's, not the 1 it claimed; the path the mountpoint, not its text.
  EXPECT_EQ(slurp("/proc/" + std::to_string(worker_pid) + "/comm"), "hostile-garish\n");
  EXPECT_NE(mounted.out.find(" at " + mp() + " read-only"), std::string::npos) << mounted.out;

  const CommandResult status = launcher({"status", mp()});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_EQ(unsafe_byte(status.out), "");
  EXPECT_NE(status.out.find("mount:    " + mp() + "\n"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("worker:   pid " + std::to_string(worker_pid)), std::string::npos);
  EXPECT_NE(status.out.find("nodes: 7\n"), std::string::npos) << status.out;
  EXPECT_EQ(status.out.find("bogus"), std::string::npos) << status.out;

  const CommandResult status_json = launcher({"status", mp(), "--json"});
  ASSERT_EQ(status_json.exit_code, 0) << status_json.err;
  EXPECT_EQ(unsafe_byte(status_json.out), "");
  const Json reply = Json::parse(status_json.out);
  EXPECT_EQ(reply["kind"], "StatusOk");
  EXPECT_EQ(reply["pid"], worker_pid);
  EXPECT_EQ(reply["mount_path"], mp());
  EXPECT_EQ(reply["nodes"], 7);                  // known, well typed: kept
  EXPECT_EQ(reply["source"], tree_->source().string());  // the supervisor's, not the 9 sent
  EXPECT_TRUE(reply["uptime_ms"].is_number_unsigned()) << status_json.out;
  EXPECT_TRUE(reply["supervisor_pid"].is_number_unsigned()) << status_json.out;
  for (const char* dropped : {"thread", "overlay_bytes", "serving", "commit"}) {
    EXPECT_FALSE(reply.contains(dropped)) << dropped << " in " << status_json.out;
  }
  for (const auto& [key, value] : reply.items()) EXPECT_EQ(key.find("bogus"), std::string::npos);

  // A number where `list` prints a string broke it for every mount; now it never arrives.
  const CommandResult listed = launcher({"list"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_EQ(unsafe_byte(listed.out), "");
  EXPECT_NE(listed.out.find(mp()), std::string::npos) << listed.out;
  const CommandResult listed_json = launcher({"list", "--json"});
  ASSERT_EQ(listed_json.exit_code, 0) << listed_json.err;
  EXPECT_EQ(unsafe_byte(listed_json.out), "");
  bool found = false;
  for (const Json& entry : Json::parse(listed_json.out)) {
    if (entry.value("mountpoint", "") != mp()) continue;
    found = true;
    EXPECT_EQ(entry["worker_pid"], worker_pid);
    EXPECT_TRUE(entry["thread"].is_null());
    EXPECT_FALSE(entry.contains("overlay_bytes"));
  }
  EXPECT_TRUE(found) << listed_json.out;

  const CommandResult unmounted = launcher({"unmount", mp()});
  EXPECT_EQ(unmounted.exit_code, 0) << unmounted.err;
  EXPECT_EQ(unsafe_byte(unmounted.out), "");
  ASSERT_TRUE(eventually([&] { return process_gone(supervisors_.back()); }, 10s));

  // Every line of the log is one of ours (it starts with our timestamp), and holds the
  // worker's text only escaped: its stderr lines, and the fields the supervisor refused.
  const std::string log = slurp(log_of(tree_->mountpoint()));
  EXPECT_EQ(unsafe_byte(log), "");
  for (const std::string& line : lines_of(log)) {
    EXPECT_EQ(line.rfind("[20", 0), 0u) << "a line not of ours: " << line;
  }
  const std::string relayed = "worker " + std::to_string(worker_pid) + ": ";
  EXPECT_NE(log.find(relayed + kGarishHead + "\n"), std::string::npos) << log;
  EXPECT_NE(log.find(relayed + "<0>forged emergency\\u{9b}2J\\u{202e}\n"), std::string::npos)
      << log;
  EXPECT_NE(log.find("\"/" + kGarishHead + "\\n<0>forged emergency"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("\\x9b31m\\xff\\xfe\\x1b[2J\\r<0>forged"), std::string::npos) << log;
  EXPECT_NE(log.find("'s MountReady: pid 1 is not the worker's"), std::string::npos) << log;
  EXPECT_NE(log.find("'s StatusOk: unknown field \"bogus\\x1b]52;c;"), std::string::npos) << log;
  EXPECT_NE(log.find("field \"uptime_ms\" is not an unsigned integer"), std::string::npos) << log;

  // The --json ready line too is built from what the supervisor knows.
  const Json ready = mount_json(worker, *tree_);
  EXPECT_EQ(ready["mount_path"], mp());
  EXPECT_EQ(slurp("/proc/" + std::to_string(ready["pid"].get<pid_t>()) + "/comm"),
            "hostile-garish\n");
  EXPECT_EQ(launcher({"unmount", mp()}).exit_code, 0);
}

// Under systemd, stderr is the journal, where a line starting "<0>" is an emergency. Neither
// the worker's stderr nor its replies can start one (or put a control byte in any).
TEST_F(HostileOutputTest, UnderJournaldAWorkerForgesNoLine) {
  const std::string worker = hostile_copy("garish", *tree_);
  mountpoints_.push_back(tree_->mountpoint());
  std::vector<std::string> args = argv(worker, {"mount", "--foreground", "--dir",
                                                tree_->source().string(), "--mountpoint", mp()});
  args.insert(args.begin(), {"/bin/sh", "-c",
                             "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec \"$0\" \"$@\""});
  ChildProcess foreground(args);
  const auto ready = foreground.read_line(20s);
  ASSERT_TRUE(ready.has_value());
  EXPECT_EQ(unsafe_byte(*ready), "");
  EXPECT_EQ(launcher({"status", mp()}).exit_code, 0);  // the supervisor logs what it refused
  foreground.signal(SIGTERM);
  const CommandResult result = foreground.finish(20s);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(unsafe_byte(result.err), "");
  const std::regex priority("<[1-7]>.*");
  for (const std::string& line : lines_of(result.err)) {
    EXPECT_TRUE(std::regex_match(line, priority)) << "a line without a priority of ours: " << line;
  }
  EXPECT_NE(result.err.find("<3>worker "), std::string::npos) << result.err;
  EXPECT_NE(result.err.find(kGarishHead), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("<4>worker "), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("unknown field"), std::string::npos) << result.err;
}

// A MountError full of escape sequences is one visible line on stderr, in the background as
// in the foreground under journald.
TEST_F(HostileOutputTest, AGarishMountErrorIsOneEscapedLine) {
  const std::string worker = hostile_copy("mount-error", *tree_);
  mountpoints_.push_back(tree_->mountpoint());
  const CommandResult background =
      launcher({"mount", "--dir", tree_->source().string(), "--mountpoint", mp()}, worker);
  EXPECT_EQ(background.exit_code, 1);
  EXPECT_EQ(unsafe_byte(background.err), "");
  EXPECT_EQ(std::count(background.err.begin(), background.err.end(), '\n'), 1) << background.err;
  EXPECT_NE(background.err.find("it failed" + kGarishEscaped), std::string::npos)
      << background.err;

  std::vector<std::string> args = argv(worker, {"mount", "--foreground", "--dir",
                                                tree_->source().string(), "--mountpoint", mp()});
  args.insert(args.begin(), {"/bin/sh", "-c",
                             "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec \"$0\" \"$@\""});
  const CommandResult foreground = run_command(args, 30s);
  EXPECT_EQ(foreground.exit_code, 1);
  EXPECT_EQ(unsafe_byte(foreground.err), "");
  for (const std::string& line : lines_of(foreground.err)) {
    EXPECT_NE(line.rfind("<0>", 0), 0u) << "a forged emergency line: " << line;
  }
  EXPECT_NE(foreground.err.find(kGarishEscaped), std::string::npos) << foreground.err;
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
}

// Branch names a repository chose, quoted by the worker's "no such thread" error: C1 CSI and
// an RLO (valid UTF-8), a raw 0x9b (not UTF-8), and an escape sequence in packed-refs.
TEST_F(HostileOutputTest, ARepositorysBranchNamesReachTheTerminalOnlyEscaped) {
  const std::string script =
      "set -e; cd \"$0\"; export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1;"
      "g='git -c user.name=t -c user.email=t@t.invalid';"
      "$g init -q -b main .; $g add -A; $g commit -q -m one;"
      "$g update-ref \"refs/heads/c1$(printf '\\302\\233')2J$(printf '\\342\\200\\256')x\" HEAD;"
      "$g update-ref \"refs/heads/raw$(printf '\\233')31m\" HEAD;"
      "printf '%s refs/heads/esc\\033]52;c;aGk=\\007\\n' $($g rev-parse HEAD) >>.git/packed-refs";
  const CommandResult made = run_command({"/bin/sh", "-c", script, tree_->source().string()});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  mountpoints_.push_back(tree_->mountpoint());
  const CommandResult result = launcher({"mount", "--repo-root", tree_->source().string(),
                                         "--thread-id", "nope", "--mountpoint", mp()});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(unsafe_byte(result.err), "");
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
  EXPECT_NE(result.err.find("existing heads: "), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("c1\\u{9b}2J\\u{202e}x"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("raw\\x9b31m"), std::string::npos) << result.err;
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
}

// A supervisor whose reply has the wrong types (an old or broken one; ours no longer passes a
// worker's on) costs `list` its own row, never the others'. Played here by a socket of the
// test's; beside it, a real mount and one whose worker breaks the protocol.
TEST_F(HostileOutputTest, ListReportsBrokenEntriesAndShowsTheOthers) {
  ScratchTree broken;
  broken.write("b.txt", "beta\n");
  const Json good = mount_json("", *tree_);
  const Json bad = mount_json(hostile_copy("number-path", broken), broken);

  const std::string fake =
      launcher::runtime_dir(dirs_) + "/zz-hostile-" + std::to_string(::getpid()) + ".sock";
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof address.sun_path, "%s", fake.c_str());
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(listener.get(), 4), 0);
  const std::string body =
      R"({"kind":"StatusOk","pid":1,"mount_path":"/fake\u001b[2J","thread":5,)"
      R"("overlay_bytes":"lots","supervisor_pid":"me"})";
  std::thread server([&] {
    for (int served = 0; served < 2; ++served) {
      pollfd ready{listener.get(), POLLIN, 0};
      if (::poll(&ready, 1, 20000) != 1) return;
      const UniqueFd peer(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
      try {
        (void)ipc::read_frame(peer.get(), 5s);
      } catch (const std::exception&) {
      }
      std::string frame(4, '\0');
      for (int i = 0; i < 4; ++i) frame[i] = static_cast<char>((body.size() >> (8 * i)) & 0xff);
      frame += body;
      (void)!::send(peer.get(), frame.data(), frame.size(), MSG_NOSIGNAL);
    }
  });

  const CommandResult listed = launcher({"list", "--json"});
  const CommandResult table = launcher({"list"});
  server.join();
  ::unlink(fake.c_str());
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_EQ(unsafe_byte(listed.out), "");
  bool saw_good = false, saw_bad = false, saw_fake = false;
  for (const Json& entry : Json::parse(listed.out)) {
    if (entry.value("mountpoint", "") == mp()) {
      saw_good = true;
      EXPECT_EQ(entry["worker_pid"], good["pid"]);
    }
    const std::string error = entry.value("error", "");
    if (error.find(broken.mountpoint().string()) != std::string::npos) {
      saw_bad = true;
      EXPECT_NE(error.find("\"mount_path\" is a number"), std::string::npos) << error;
    }
    if (entry.value("socket", "") == fake) {
      saw_fake = true;
      EXPECT_NE(error.find("\"thread\" is a number, expected a string"), std::string::npos)
          << error;
    }
  }
  EXPECT_TRUE(saw_good && saw_bad && saw_fake) << listed.out;

  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_EQ(unsafe_byte(table.out), "");
  EXPECT_NE(table.out.find(mp()), std::string::npos) << table.out;
  EXPECT_NE(table.out.find(fake + " (not answering: the Status reply's \"thread\" is a number"),
            std::string::npos)
      << table.out;

  // The worker that broke the protocol was killed, and its mount went with it.
  EXPECT_TRUE(eventually([&] { return !heddle_mounted(broken.mountpoint()); }, 10s));
  EXPECT_TRUE(eventually([&] { return process_gone(bad["supervisor_pid"].get<pid_t>()); }, 10s));
  EXPECT_EQ(launcher({"unmount", mp()}).exit_code, 0);
}

}  // namespace
}  // namespace heddle::test
