// Running commands as the unprivileged test user `heddle-test`, which the test_user ctest
// fixture creates (support/test_user.sh), with the binaries it staged under HEDDLE_USER_STAGE.
// Header-only; for suites that run as root and drop to the user per case.
#pragma once

#include <string>
#include <vector>

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

}  // namespace heddle::test
