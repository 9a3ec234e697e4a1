// Where a user's files go, from the XDG base-directory variables. Read once in each binary's
// main (UserDirs::read) and passed to whatever derives a path from them, so that every path
// the launcher uses follows from settings its caller can see (and a test can set).
#pragma once

#include <string>

namespace heddle::launcher {

struct UserDirs {
  std::string xdg_runtime_dir;  // XDG_RUNTIME_DIR; empty if unset
  std::string xdg_state_home;   // XDG_STATE_HOME; empty if unset
  std::string home;             // HOME; empty if unset

  [[nodiscard]] static UserDirs read();
};

}  // namespace heddle::launcher
