// The launcher's environment variables, read once in main and passed down as settings: no
// other code of the launcher reads these.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "heddle/launcher/supervisor.h"
#include "heddle/launcher/user_dirs.h"

namespace heddle::launcher {

// Days a supervisor log is kept after its mount ended (0: forever).
inline constexpr const char* kLogMaxAgeEnv = "HEDDLE_FUSE_LOG_MAX_AGE_DAYS";
inline constexpr std::chrono::hours kDefaultLogMaxAge{24 * 14};

struct LauncherEnvironment {
  std::string worker_binary;  // HEDDLE_FUSE_WORKER_BIN, unless it names this program
  std::string git_worker_binary;  // HEDDLE_FUSE_WORKER_GIT_BIN, likewise
  std::string guard_binary;   // HEDDLE_FUSE_GUARD_BIN
  std::chrono::milliseconds stop_grace = kDefaultStopGrace;  // HEDDLE_FUSE_WORKER_STOP_GRACE_MS
  bool test_ignore_stop = false;  // HEDDLE_FUSE_WORKER_TEST_IGNORE_STOP set
  // "NAME=value" of the variables the worker reads too (log levels, sanitizers, test hooks).
  std::vector<std::string> worker_env;
  UserDirs dirs;               // where sockets, logs and overlays go
  std::string log_levels;      // HEDDLE_FUSE_LOG, the launcher's own levels
  std::string journal_stream;  // JOURNAL_STREAM: systemd's device:inode of our stderr
  std::chrono::hours log_max_age = kDefaultLogMaxAge;  // HEDDLE_FUSE_LOG_MAX_AGE_DAYS; 0: keep

  [[nodiscard]] static LauncherEnvironment read();
  // Sets (or replaces) one variable of worker_env: -v/-q override HEDDLE_FUSE_LOG this way.
  void set_worker_variable(const std::string& name, const std::string& value);
  [[nodiscard]] SupervisorOptions supervisor_options() const;
};

}  // namespace heddle::launcher
