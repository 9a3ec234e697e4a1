// The launcher's settings from its environment, read once (LauncherEnvironment::read), and
// where the worker and guard binaries are found.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string_view>

#include "heddle/error.h"
#include "heddle/ipc/worker_env.h"
#include "heddle/launcher/launcher_environment.h"
#include "heddle/launcher/mount_guard.h"
#include "heddle/launcher/source_kinds.h"
#include "heddle/launcher/supervisor.h"
#include "heddle/log_levels.h"

namespace heddle::launcher {
namespace fs = std::filesystem;

namespace {

constexpr const char* kPassedEnv[] = {kLogEnv,        ipc::kPanicOnInitEnv, ipc::kHoldReadyEnv,
                                      ipc::kMemoryLimitEnv,
                                      "ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS",
                                      "LSAN_OPTIONS"};

bool is_running_executable(const char* path) {
  struct stat ours {};
  struct stat theirs {};
  return ::stat("/proc/self/exe", &ours) == 0 && ::stat(path, &theirs) == 0 &&
         ours.st_dev == theirs.st_dev && ours.st_ino == theirs.st_ino;
}

// `name`'s value, or empty if unset.
std::string variable(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

// `env`'s value, or empty. heddle points HEDDLE_FUSE_WORKER_BIN at us to find its worker:
// that names no worker of ours.
std::string helper_override(const char* env) {
  std::string path = variable(env);
  return !path.empty() && !is_running_executable(path.c_str()) ? path : "";
}

// `override_path` (from `env`), else `name` beside the running executable, else in
// ../libexec/heddle-fuse/.
std::string resolve_helper_binary(const char* name, const std::string& override_path,
                                  const char* env) {
  if (!override_path.empty()) {
    if (::access(override_path.c_str(), X_OK) != 0) {
      throw_errno(std::string(name) + " " + override_path + " (from " + env + ")",
                  std::string("point it at an executable ") + name + ", or unset it");
    }
    return override_path;
  }
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) throw Error("locate the running executable", ec.value());
  const fs::path candidates[] = {
      self.parent_path() / name,
      self.parent_path().parent_path() / "libexec" / "heddle-fuse" / name,
  };
  for (const fs::path& candidate : candidates) {
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  throw Error(std::string(name) + " not found next to " + self.string() + " (looked at " +
                  candidates[0].string() + " and " + candidates[1].string() + ")",
              ENOENT, std::string("reinstall heddle-fuse-launcher or set ") + env);
}

std::chrono::milliseconds parse_stop_grace(const char* value) {
  if (value == nullptr || *value == '\0') return kDefaultStopGrace;
  char* end = nullptr;
  const unsigned long long ms = std::strtoull(value, &end, 10);
  if (*end != '\0') return kDefaultStopGrace;
  return std::chrono::milliseconds(ms);
}

std::chrono::hours parse_log_max_age(const std::string& value) {
  if (value.empty()) return kDefaultLogMaxAge;
  char* end = nullptr;
  const unsigned long long days = std::strtoull(value.c_str(), &end, 10);
  if (*end != '\0' || days > 36500) return kDefaultLogMaxAge;
  return std::chrono::hours(24 * days);
}

}  // namespace

std::string resolve_worker_binary(const std::string& override_path) {
  return resolve_helper_binary("heddle-fuse-worker", override_path, kWorkerBinaryEnv);
}

std::string resolve_worker_binary_for(const ipc::Source& source, const SupervisorOptions& options) {
  const char* program = worker_program(source);
  if (std::string_view(program) == "heddle-fuse-worker") {
    return resolve_worker_binary(options.worker_binary);
  }
  const bool one_for_all = options.git_worker_binary.empty() && !options.worker_binary.empty();
  return one_for_all ? resolve_worker_binary(options.worker_binary)
                     : resolve_helper_binary(program, options.git_worker_binary, kGitWorkerBinaryEnv);
}

std::string resolve_guard_binary(const std::string& override_path) {
  return resolve_helper_binary("heddle-fuse-guard", override_path, kGuardBinaryEnv);
}

LauncherEnvironment LauncherEnvironment::read() {
  LauncherEnvironment env;
  env.worker_binary = helper_override(kWorkerBinaryEnv);
  env.git_worker_binary = helper_override(kGitWorkerBinaryEnv);
  env.guard_binary = helper_override(kGuardBinaryEnv);
  env.stop_grace = parse_stop_grace(std::getenv(kStopGraceEnv));
  env.test_ignore_stop = std::getenv(kIgnoreStopEnv) != nullptr;
  for (const char* name : kPassedEnv) {
    if (const char* value = std::getenv(name)) env.worker_env.push_back(std::string(name) + "=" + value);
  }
  env.dirs = UserDirs::read();
  env.log_levels = variable(kLogEnv);
  env.journal_stream = variable("JOURNAL_STREAM");
  env.log_max_age = parse_log_max_age(variable(kLogMaxAgeEnv));
  return env;
}

UserDirs UserDirs::read() {
  return {variable("XDG_RUNTIME_DIR"), variable("XDG_STATE_HOME"), variable("HOME")};
}

void LauncherEnvironment::set_worker_variable(const std::string& name, const std::string& value) {
  const std::string prefix = name + "=";
  std::erase_if(worker_env, [&](const std::string& entry) { return entry.starts_with(prefix); });
  worker_env.push_back(prefix + value);
}

SupervisorOptions LauncherEnvironment::supervisor_options() const {
  SupervisorOptions options;
  options.worker_binary = worker_binary;
  options.git_worker_binary = git_worker_binary;
  options.guard_binary = guard_binary;
  options.stop_grace = stop_grace;
  options.test_ignore_stop = test_ignore_stop;
  options.worker_env = worker_env;
  options.restart_budget = kDefaultRestartBudget;
  return options;
}

}  // namespace heddle::launcher
