// `doctor`: every precondition of a mount on this host, each ok or failed with its fix.
#include <fcntl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "heddle/error.h"
#include "heddle/launcher/control_socket.h"
#include "heddle/launcher/host_checks.h"
#include "heddle/launcher/worker_identity.h"
#include "heddle/sandbox/sandboxed_process.h"

namespace heddle::launcher {
namespace {

enum class Outcome { kOk, kWarn, kFail };

struct CheckResult {
  std::string name;
  Outcome outcome = Outcome::kOk;
  std::string detail;
  int error = 0;
  std::string fix;
};

// Runs `check`; it returns the detail of a pass or throws the Error of a failure. A failed
// advisory check is a warning: mounts still work, some options do not.
CheckResult run_check(const std::string& name, bool blocking,
                      const std::function<std::string()>& check) {
  CheckResult result;
  result.name = name;
  try {
    result.detail = check();
  } catch (const Error& e) {
    result.outcome = blocking ? Outcome::kFail : Outcome::kWarn;
    result.detail = e.message();  // the hint is printed on its own line
    result.error = e.code();
    result.fix = e.hint();
  } catch (const std::exception& e) {
    result.outcome = blocking ? Outcome::kFail : Outcome::kWarn;
    result.detail = e.what();
  }
  return result;
}

// The whole sandbox, for real: the worker binary is launched in it with --help and must
// exit 0. This is the check that sees clone3, user namespaces, id maps, LSM restrictions,
// mount_setattr and seccomp as the worker will.
std::string probe_sandbox(const std::string& worker_binary) {
  sandbox::SandboxSpec spec;
  spec.executable = resolve_worker_binary(worker_binary);
  spec.argv = {spec.executable, "--help"};
  const WorkerIdentity identity = choose_worker_identity(::getuid(), ::getgid(), {}, true);
  spec.uid = identity.uid;
  spec.gid = identity.gid;
  spec.subordinate_ids = identity.subordinate;
  spec.hostname = "heddle-doctor";
  // The probe's help text must not reach our stdout (--json); fds 0-2 pass into the sandbox.
  std::fflush(stdout);
  const UniqueFd saved(::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3));
  const UniqueFd null(::open("/dev/null", O_WRONLY | O_CLOEXEC));
  if (!saved || !null || ::dup2(null.get(), STDOUT_FILENO) < 0) throw_errno("silence stdout");
  std::optional<sandbox::SandboxedProcess> launched;
  try {
    launched.emplace(sandbox::SandboxedProcess::launch(spec));
  } catch (...) {
    ::dup2(saved.get(), STDOUT_FILENO);
    throw;
  }
  ::dup2(saved.get(), STDOUT_FILENO);
  sandbox::SandboxedProcess& process = *launched;
  if (!process.wait_for_exit(std::chrono::seconds(5))) {
    throw Error("the sandboxed worker probe did not exit within 5 s", ETIMEDOUT);
  }
  const sandbox::ExitStatus status = process.reap();
  if (!status.success()) {
    throw Error("the sandboxed worker probe failed (" + status.describe() + ")", 0,
                "run `HEDDLE_FUSE_LOG=debug heddle-fuse-launcher demo` to see the worker's errors");
  }
  return "user, mount, pid, ipc, net, uts and cgroup namespaces; worker ran as uid " +
         std::to_string(identity.uid) + (identity.subordinate ? " (from /etc/subuid)" : "");
}

std::string check_userns_sysctls() {
  const std::string debian = read_sysctl("/proc/sys/kernel/unprivileged_userns_clone");
  if (debian == "0" && ::geteuid() != 0) {
    throw Error("kernel.unprivileged_userns_clone is 0", EPERM,
                "sysctl -w kernel.unprivileged_userns_clone=1 (persist it in /etc/sysctl.d/), or "
                "mount with --sandbox=degraded");
  }
  const std::string limit = read_sysctl("/proc/sys/user/max_user_namespaces");
  if (limit == "0") {
    throw Error("user.max_user_namespaces is 0", ENOSPC,
                "sysctl -w user.max_user_namespaces=15000 (persist it in /etc/sysctl.d/), or "
                "mount with --sandbox=degraded");
  }
  std::string detail = "user.max_user_namespaces=" + (limit.empty() ? "?" : limit);
  if (!debian.empty()) detail += ", kernel.unprivileged_userns_clone=" + debian;
  const std::string apparmor = read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
  if (!apparmor.empty()) detail += ", kernel.apparmor_restrict_unprivileged_userns=" + apparmor;
  return detail;
}

std::string check_mount_method() {
  if (can_mount_directly()) return "root in the initial user namespace: mount(2) directly";
  return require_fusermount() + " is setuid root";
}

std::string check_allow_other() {
  if (::geteuid() == 0) return "root may use --allow-other";
  require_user_allow_other();
  return std::string("user_allow_other is in ") + kFuseConf;
}

std::string check_runtime_dir(const UserDirs& dirs) {
  const std::string dir = runtime_dir(dirs);
  if (::access(dir.c_str(), W_OK | X_OK) != 0 && errno != ENOENT) {
    throw_errno("use " + dir, "it holds the control sockets; it must be writable by you");
  }
  return dir;
}

// Worker restart under a live mount (issue 16): the successor asks the kernel to send again
// the requests its predecessor had taken (FUSE_NOTIFY_RESEND, Linux 6.9). Without it restart
// still works, but those requests fail with EIO (the successor ends them from the journal's
// in-flight table) instead of being served again.
std::string check_restart() {
  utsname name{};
  if (::uname(&name) != 0) throw_errno("uname");
  unsigned major = 0;
  unsigned minor = 0;
  if (std::sscanf(name.release, "%u.%u", &major, &minor) != 2) {
    throw Error(std::string("cannot read the kernel version from \"") + name.release + "\"", 0);
  }
  if (major < 6 || (major == 6 && minor < 9)) {
    throw Error(std::string("degraded: Linux ") + name.release +
                    " lacks FUSE_NOTIFY_RESEND (6.9): after a worker crash or `restart`, the "
                    "requests the old worker had taken and not answered fail with EIO (the "
                    "callers see an I/O error; everything else carries on)",
                0, "a kernel of 6.9 or later makes worker restarts invisible to readers");
  }
  return std::string("full: Linux ") + name.release +
         " resends the requests a dead worker had taken (FUSE_NOTIFY_RESEND)";
}

const char* label(Outcome outcome) {
  switch (outcome) {
    case Outcome::kOk: return "ok";
    case Outcome::kWarn: return "warn";
    case Outcome::kFail: return "fail";
  }
  return "?";
}

}  // namespace

int doctor_command(bool json, const LauncherEnvironment& env) {
  std::vector<CheckResult> results;
  results.push_back(run_check("fuse device", true, [] {
    require_fuse_device();
    return std::string(kFuseDevice) + " is readable and writable";
  }));
  results.push_back(run_check("no_new_privs", ::geteuid() != 0, [] {
    require_setuid_possible();
    return std::string("not set: setuid helpers work");
  }));
  results.push_back(run_check("mount method", true, check_mount_method));
  results.push_back(run_check("user namespaces", true, check_userns_sysctls));
  results.push_back(run_check("worker binary", true,
                              [&] { return resolve_worker_binary(env.worker_binary); }));
  results.push_back(run_check("sandbox probe", true,
                              [&] { return probe_sandbox(env.worker_binary); }));
  results.push_back(run_check("allow_other", false, check_allow_other));
  results.push_back(run_check("worker restart", false, check_restart));
  results.push_back(
      run_check("runtime directory", true, [&] { return check_runtime_dir(env.dirs); }));

  bool ok = true;
  for (const CheckResult& result : results) ok = ok && result.outcome != Outcome::kFail;
  if (json) {
    nlohmann::ordered_json out;
    out["ok"] = ok;
    out["checks"] = nlohmann::ordered_json::array();
    for (const CheckResult& result : results) {
      nlohmann::ordered_json check;
      check["name"] = result.name;
      check["status"] = label(result.outcome);
      check["detail"] = result.detail;
      if (result.error != 0) {
        const char* name = ::strerrorname_np(result.error);
        check["errno"] = name != nullptr ? name : std::to_string(result.error);
      }
      if (!result.fix.empty()) check["fix"] = result.fix;
      out["checks"].push_back(check);
    }
    std::cout << out.dump(2) << "\n";
  } else {
    for (const CheckResult& result : results) {
      std::cout << label(result.outcome) << (result.outcome == Outcome::kOk ? "    " : "  ")
                << result.name << ": " << result.detail << "\n";
      if (!result.fix.empty()) std::cout << "      fix: " << result.fix << "\n";
    }
    std::cout << (ok ? "a mount should work here\n" : "a mount would fail here\n");
  }
  return ok ? 0 : 1;
}

}  // namespace heddle::launcher
