// Running commands as the unprivileged test user `heddle-test`, which the test_user ctest
// fixture creates (support/test_user.sh), with the binaries it staged under HEDDLE_USER_STAGE.
// Header-only; for suites that run as root and drop to the user per case.
#pragma once

#include <pwd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "support/child_process.h"
#include "support/test_support.h"

namespace heddle::test {

constexpr const char* kUser = "heddle-test";
constexpr const char* kStage = HEDDLE_USER_STAGE;
constexpr const char* kUserPath = "/usr/bin:/bin";

inline std::string stage_bin(const std::string& name) { return std::string(kStage) + "/bin/" + name; }
inline std::string stage_home() { return std::string(kStage) + "/home"; }

// How a command is started as the test user.
struct AsUser {
  std::string path = kUserPath;
  bool no_new_privs = false;
  std::string extra_group;  // a supplementary group the user does not have, as a gid
};

// argv that runs `command` as heddle-test, as test_user.sh does: no login session (so no
// XDG_RUNTIME_DIR), its own HOME, a cwd it can reach, and the PATH given.
inline std::vector<std::string> as_user(std::vector<std::string> command, const AsUser& how = {}) {
  std::vector<std::string> argv = {"/usr/bin/setpriv", std::string("--reuid=") + kUser,
                                   std::string("--regid=") + kUser};
  if (how.extra_group.empty()) {
    argv.emplace_back("--init-groups");
  } else {
    argv.push_back("--groups=" + how.extra_group);
  }
  if (how.no_new_privs) argv.emplace_back("--no-new-privs");
  argv.insert(argv.end(), {"/usr/bin/env", "-C", stage_home(), "-u", "XDG_RUNTIME_DIR",
                           "HOME=" + stage_home(), "PATH=" + how.path});
  argv.insert(argv.end(), command.begin(), command.end());
  return argv;
}

// The launcher as the test user (the staged copy) or as root (the build tree's).
inline std::vector<std::string> user_launcher(std::vector<std::string> args, const AsUser& how = {}) {
  args.insert(args.begin(), stage_bin("heddle-fuse-launcher"));
  return as_user(std::move(args), how);
}
inline std::vector<std::string> root_launcher(std::vector<std::string> args) {
  args.insert(args.begin(), bin_path("heddle-fuse-launcher"));
  return args;
}

// Runs argv to completion; a failure of the test if it does not exit 0.
inline void run_or_fail(const std::vector<std::string>& argv) {
  const CommandResult result = run_command(argv, std::chrono::seconds(60));
  ASSERT_EQ(result.exit_code, 0) << argv[0] << " " << (argv.size() > 1 ? argv[1] : "") << ": "
                                 << result.err;
}

// The start of SetUp for a suite that prepares files as root and drops to heddle-test per
// case: skips unless root (`why` says what needs it; under CI, which runs these as root, fails),
// needs to be able to mount, and fails unless the test_user fixture created the user (its ids
// go to `uid` and `gid`) and staged the launcher. Makes this process a child subreaper, so that
// the supervisors and workers the case starts are reaped here (process_gone).
#define HEDDLE_REQUIRE_TEST_USER(why, uid, gid)                                               \
  do {                                                                                        \
    if (!::heddle::test::running_as_root()) {                                                 \
      if (std::getenv("CI") != nullptr) FAIL() << "CI runs these as root, not uid " << ::getuid(); \
      GTEST_SKIP() << why;                                                                    \
    }                                                                                         \
    HEDDLE_REQUIRE_MOUNT();                                                                   \
    const passwd* test_user_entry = ::getpwnam(::heddle::test::kUser);                        \
    ASSERT_NE(test_user_entry, nullptr)                                                       \
        << ::heddle::test::kUser << " does not exist: run with the test_user fixture";        \
    (uid) = test_user_entry->pw_uid;                                                          \
    (gid) = test_user_entry->pw_gid;                                                          \
    ASSERT_EQ(::access(::heddle::test::stage_bin("heddle-fuse-launcher").c_str(), X_OK), 0)   \
        << "nothing staged at " << ::heddle::test::kStage << ": run the test_user fixture";    \
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);                                         \
  } while (0)

}  // namespace heddle::test
