// The launcher's environment variables, read once in main and passed down as settings: no
// other code of the launcher reads these.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "heddle/launcher/supervisor.h"

namespace heddle::launcher {

struct LauncherEnvironment {
  std::string worker_binary;  // HEDDLE_FUSE_WORKER_BIN, unless it names this program
  std::string guard_binary;   // HEDDLE_FUSE_GUARD_BIN
  std::chrono::milliseconds stop_grace = kDefaultStopGrace;  // HEDDLE_FUSE_WORKER_STOP_GRACE_MS
  bool test_ignore_stop = false;  // HEDDLE_FUSE_WORKER_TEST_IGNORE_STOP set
  // "NAME=value" of the variables the worker reads too (log levels, sanitizers, test hooks).
  std::vector<std::string> worker_env;

  [[nodiscard]] static LauncherEnvironment read();
  // Sets (or replaces) one variable of worker_env: -v/-q override HEDDLE_FUSE_LOG this way.
  void set_worker_variable(const std::string& name, const std::string& value);
  [[nodiscard]] SupervisorOptions supervisor_options() const;
};

}  // namespace heddle::launcher
