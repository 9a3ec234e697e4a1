#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "heddle/error.h"
#include "heddle/launcher/mount_guard.h"
#include "heddle/launcher/supervisor.h"

namespace heddle::launcher {
namespace fs = std::filesystem;

namespace {

bool is_running_executable(const char* path) {
  struct stat ours {};
  struct stat theirs {};
  return ::stat("/proc/self/exe", &ours) == 0 && ::stat(path, &theirs) == 0 &&
         ours.st_dev == theirs.st_dev && ours.st_ino == theirs.st_ino;
}

// `env`, else `name` beside the running executable, else in ../libexec/heddle-fuse/. heddle
// points HEDDLE_FUSE_WORKER_BIN at us to find its worker: that names no worker of ours.
std::string resolve_helper_binary(const char* name, const char* env) {
  if (const char* override_path = std::getenv(env);
      override_path && *override_path && !is_running_executable(override_path)) {
    if (::access(override_path, X_OK) != 0) {
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

}  // namespace

std::string resolve_worker_binary() { return resolve_helper_binary("heddle-fuse-worker", kWorkerBinaryEnv); }

std::string resolve_guard_binary() { return resolve_helper_binary("heddle-fuse-guard", kGuardBinaryEnv); }

std::chrono::milliseconds stop_grace_from_env() {
  const char* value = std::getenv(kStopGraceEnv);
  if (value == nullptr || *value == '\0') return kDefaultStopGrace;
  char* end = nullptr;
  const unsigned long long ms = std::strtoull(value, &end, 10);
  if (*end != '\0') return kDefaultStopGrace;
  return std::chrono::milliseconds(ms);
}

}  // namespace heddle::launcher
