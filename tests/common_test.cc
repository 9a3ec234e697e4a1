// common/: the Error type, and how helper programs are started (heddle/process.h), down to
// the fds a started fusermount3 sees.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "heddle/error.h"
#include "heddle/launcher/fuse_mount.h"
#include "heddle/process.h"
#include "heddle/unique_fd.h"

namespace heddle {
namespace {

using namespace std::chrono_literals;

TEST(Error, CarriesItsKindAndHintApartFromTheText) {
  const Error plain("open /x", ENOENT);
  EXPECT_EQ(plain.kind(), ErrorKind::kOther);
  EXPECT_EQ(plain.hint(), "");
  EXPECT_STREQ(plain.what(), "open /x: No such file or directory (ENOENT)");
  EXPECT_EQ(plain.message(), plain.what());

  const Error refused(ErrorKind::kConnect, "connect to /run/s", ECONNREFUSED, "start it");
  EXPECT_EQ(refused.kind(), ErrorKind::kConnect);
  EXPECT_EQ(refused.attempt(), "connect to /run/s");
  EXPECT_EQ(refused.code(), ECONNREFUSED);
  EXPECT_EQ(refused.hint(), "start it");
  EXPECT_EQ(refused.message(), "connect to /run/s: Connection refused (ECONNREFUSED)");
  EXPECT_STREQ(refused.what(),
               "connect to /run/s: Connection refused (ECONNREFUSED); hint: start it");
}

TEST(Error, WithHintKeepsTheKindAndAddsToTheHint) {
  const Error clone(ErrorKind::kClone, "clone3 with a user namespace", EPERM);
  const Error once = clone.with_hint("first");
  const Error twice = once.with_hint("second");
  EXPECT_EQ(twice.kind(), ErrorKind::kClone);
  EXPECT_EQ(twice.hint(), "first; second");
  EXPECT_EQ(twice.message(), clone.what());
  EXPECT_STREQ(twice.what(), (clone.message() + "; hint: first; second").c_str());
  EXPECT_STREQ(Error("no errno", 0).what(), "no errno");
}

TEST(Process, CapturesStdoutAndStderrApartAndTheExitCode) {
  const ProcessResult result = run_process({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(result.exit_code, 3);
  EXPECT_FALSE(result.timed_out);
  EXPECT_EQ(result.out, "out\n");
  EXPECT_EQ(result.err, "err\n");
}

TEST(Process, AddedVariablesReplaceOursAndClearEnvLeavesOnlyThem) {
  ASSERT_EQ(::setenv("HEDDLE_PROCESS_TEST", "ours", 1), 0);
  ProcessOptions options;
  options.env = {"HEDDLE_PROCESS_TEST=theirs"};
  const ProcessResult added = run_process({"/usr/bin/env"}, options);
  EXPECT_NE(added.out.find("HEDDLE_PROCESS_TEST=theirs\n"), std::string::npos) << added.out;
  EXPECT_EQ(added.out.find("HEDDLE_PROCESS_TEST=ours"), std::string::npos) << added.out;
  EXPECT_NE(added.out.find("PATH="), std::string::npos) << added.out;
  options.clear_env = true;
  EXPECT_EQ(run_process({"/usr/bin/env"}, options).out, "HEDDLE_PROCESS_TEST=theirs\n");
  ::unsetenv("HEDDLE_PROCESS_TEST");
}

TEST(Process, IsKilledAtItsDeadline) {
  const auto start = std::chrono::steady_clock::now();
  const ProcessResult result = run_process({"/bin/sleep", "30"}, {}, 200ms);
  EXPECT_TRUE(result.timed_out);
  EXPECT_EQ(result.exit_code, -1);
  EXPECT_EQ(result.signal, SIGKILL);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  try {
    (void)run_host_command({"/bin/sleep", "30"}, {}, 200ms);
    ADD_FAILURE() << "no timeout";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ETIMEDOUT);
    EXPECT_STREQ(e.what(),
                 "/bin/sleep did not finish within 200 ms: Connection timed out (ETIMEDOUT)");
  }
}

TEST(Process, AProgramThatCannotStartIsAnError) {
  try {
    (void)run_process({"/nonexistent/helper"});
    ADD_FAILURE() << "started";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ENOENT);
    EXPECT_EQ(e.attempt(), "run /nonexistent/helper");
  }
}

TEST(Process, StartsWithNoSignalBlockedOrIgnored) {
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigset_t old;
  ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, &block, &old), 0);
  const auto previous = ::signal(SIGHUP, SIG_IGN);
  const ProcessResult result =
      run_process({"/bin/grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"});
  ::signal(SIGHUP, previous);
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  EXPECT_EQ(result.out, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}

// The proof that no fd of ours leaks into a helper: a fusermount3 stand-in, started by the
// launcher's own fusermount3 path, lists its fds. Ours are left open without FD_CLOEXEC, below
// and above the _FUSE_COMMFD socket.
TEST(Process, AFusermountStandInSeesOnlyStdioAndItsCommSocket) {
  std::vector<UniqueFd> ours;
  for (int i = 0; i < 6; ++i) ours.emplace_back(::open("/dev/null", O_RDONLY));
  ours[1].reset();  // holes the socketpair fills, so that open fds remain above it
  ours[2].reset();
  const std::string list = ::testing::TempDir() + "heddle-fd-list-" + std::to_string(::getpid());
  ASSERT_EQ(::setenv("HEDDLE_FD_LIST", list.c_str(), 1), 0);
  try {
    (void)launcher::mount_through_helper(HEDDLE_BIN_DIR "/fd_lister", "ro", "/nonexistent");
    ADD_FAILURE() << "the stand-in mounted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fd_lister: not mounting"), std::string::npos) << e.what();
  }
  ::unsetenv("HEDDLE_FD_LIST");
  std::ifstream in(list);
  std::string fd_line;
  std::string commfd;
  ASSERT_TRUE(std::getline(in, fd_line) && std::getline(in, commfd)) << list;
  ::unlink(list.c_str());
  std::set<int> seen;
  std::istringstream fds(fd_line);
  for (int fd; fds >> fd;) seen.insert(fd);
  ASSERT_FALSE(commfd.empty());
  EXPECT_EQ(seen, (std::set<int>{0, 1, 2, std::stoi(commfd)})) << fd_line;
  EXPECT_LT(std::stoi(commfd), ours[5].get()) << "no fd of ours above the socket was tested";
}

}  // namespace
}  // namespace heddle
