#include "launch_plan.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>

#include "heddle/error.h"
#include "id_map.h"
#include "seccomp_policy.h"

namespace heddle::sandbox::detail {
namespace fs = std::filesystem;
namespace {

// What exec of a dynamically linked binary needs on a merged-/usr or classic layout.
constexpr const char* kRuntimeRoots[] = {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64",
                                         "/libx32"};

constexpr const char* kLoaderCache = "/etc/ld.so.cache";

int read_last_cap() {
  std::ifstream in("/proc/sys/kernel/cap_last_cap");
  int last = 0;
  if (in >> last && last > 0 && last < 64) return last;
  return 63;  // dropping unknown caps fails with EINVAL, which the child ignores
}

unsigned long clamp_to_hard_limit(int resource, unsigned long wanted) {
  rlimit current{};
  if (::getrlimit(resource, &current) != 0 || current.rlim_max == RLIM_INFINITY) return wanted;
  return std::min<unsigned long>(wanted, current.rlim_max);
}

std::string canonical_or_throw(const std::string& path, const char* role) {
  std::error_code ec;
  fs::path canonical = fs::canonical(path, ec);
  if (ec) throw Error(std::string("sandbox ") + role + " " + path, ec.value());
  return canonical.string();
}

}  // namespace

LaunchPlan::LaunchPlan(const SandboxSpec& spec) : spec_(spec) {
  if (spec.uid == 0 || spec.gid == 0) {
    throw Error("sandbox identity " + std::to_string(spec.uid) + ":" + std::to_string(spec.gid),
                EINVAL, "the sandboxed process never runs as host uid or gid 0");
  }
  if (spec.argv.empty()) throw Error("sandbox argv", EINVAL, "argv needs at least argv[0]");
  executable_ = canonical_or_throw(spec.executable, "executable");
  if (::access(executable_.c_str(), X_OK) != 0) throw_errno("sandbox executable " + executable_);

  add_system_runtime();
  add_bind(executable_);
  for (const std::string& path : spec.readonly_paths) {
    add_bind(canonical_or_throw(path, "path"));
  }
  for (const std::string& path : spec.writable_paths) {
    if (!fs::is_directory(path)) throw Error("sandbox writable path " + path, ENOTDIR);
    add_bind(canonical_or_throw(path, "writable path"), true);
  }
  argv_ = spec.argv;
  env_ = spec.env;
  seccomp_ = compile_seccomp_policy();
  last_cap_ = read_last_cap();
  freeze();
}

void LaunchPlan::add_system_runtime() {
  for (const char* root : kRuntimeRoots) {
    struct stat st {};
    if (::lstat(root, &st) != 0) continue;
    if (S_ISLNK(st.st_mode)) {
      std::error_code ec;
      const fs::path target = fs::read_symlink(root, ec);
      if (ec) throw Error(std::string("read link ") + root, ec.value());
      link_targets_.push_back(target.string());
      link_paths_.emplace_back(root);
    } else if (S_ISDIR(st.st_mode)) {
      add_bind(root);
    }
  }
  // All of /etc the sandbox gets: the dynamic loader's cache (it works without, only slower).
  if (::access(kLoaderCache, R_OK) == 0) add_bind(kLoaderCache);
}

void LaunchPlan::add_bind(const std::string& host_path, bool writable) {
  if (host_path == "/") {
    throw Error("sandbox path /", EINVAL, "binding the whole host root would defeat the sandbox");
  }
  std::error_code ec;
  const bool is_dir = fs::is_directory(host_path, ec);
  bind_paths_.push_back(host_path);
  bind_is_file_.push_back(!is_dir);
  bind_writable_.push_back(writable);
  if (bind_paths_.size() > kMaxBinds) {
    throw Error("sandbox binds", E2BIG, "at most " + std::to_string(kMaxBinds) + " paths");
  }
}

void LaunchPlan::freeze() {
  // Binds go parents first, so a nested bind lands on top of its parent's.
  std::vector<std::size_t> order(bind_paths_.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return bind_paths_[a] < bind_paths_[b]; });

  // A path inside another bound directory of the same writability is already there (the
  // installed worker in /usr); one of the other kind is bound again on top.
  const auto covered = [&](std::size_t i) {
    const std::string& path = bind_paths_[i];
    for (std::size_t j = 0; j < bind_paths_.size(); ++j) {
      const std::string& other = bind_paths_[j];
      if (path.size() > other.size() && path.compare(0, other.size(), other) == 0 &&
          path[other.size()] == '/' && !bind_is_file_[j] && bind_writable_[j] == bind_writable_[i]) {
        return true;
      }
    }
    return false;
  };
  std::erase_if(order, covered);
  order.erase(std::unique(order.begin(), order.end(),
                          [&](std::size_t a, std::size_t b) { return bind_paths_[a] == bind_paths_[b]; }),
              order.end());

  std::set<std::string> dirs;  // sorted, so every parent precedes its children
  for (std::size_t i : order) {
    fs::path target(bind_paths_[i]);
    for (fs::path dir = bind_is_file_[i] ? target.parent_path() : target;
         dir != dir.root_path(); dir = dir.parent_path()) {
      dirs.insert(dir.string());
    }
  }
  dirs_.assign(dirs.begin(), dirs.end());
  for (const std::string& dir : dirs_) dir_ptrs_.push_back(dir.c_str());

  for (std::size_t i : order) {
    binds_.push_back(ChildBind{bind_paths_[i].c_str(), static_cast<bool>(bind_is_file_[i]),
                               static_cast<bool>(bind_writable_[i])});
  }
  for (std::size_t i = 0; i < link_paths_.size(); ++i) {
    links_.push_back(ChildLink{link_targets_[i].c_str(), link_paths_[i].c_str()});
  }
  for (std::string& arg : argv_) argv_ptrs_.push_back(arg.data());
  argv_ptrs_.push_back(nullptr);
  for (std::string& var : env_) env_ptrs_.push_back(var.data());
  env_ptrs_.push_back(nullptr);
  seccomp_prog_.len = static_cast<unsigned short>(seccomp_.size());
  seccomp_prog_.filter = seccomp_.data();
}

ChildPlan LaunchPlan::child_plan(int sync_fd, int sync_write_fd, int report_fd) const {
  ChildPlan plan;
  plan.sync_fd = sync_fd;
  plan.sync_write_fd = sync_write_fd;
  plan.report_fd = report_fd;
  plan.inherit_fds = spec_.inherit_fds.data();
  plan.inherit_count = spec_.inherit_fds.size();
  plan.output_fd = spec_.output_fd;
  plan.uid = spec_.uid;
  plan.gid = spec_.gid;
  // Root may clear the groups itself, so it leaves setgroups allowed (writing "deny" would
  // freeze root's own groups into the child). An unprivileged parent must deny it.
  // newgidmap leaves setgroups allowed too, as long as the map holds none of our own gids.
  plan.clear_groups = ::geteuid() == 0 || spec_.subordinate_ids;
  plan.namespaces = spec_.user_namespace;
  plan.dirs = dir_ptrs_.data();
  plan.dir_count = dir_ptrs_.size();
  plan.binds = binds_.data();
  plan.bind_count = binds_.size();
  plan.links = links_.data();
  plan.link_count = links_.size();
  plan.mount_proc = spec_.mount_proc;
  plan.hostname = spec_.hostname.c_str();
  plan.hostname_len = spec_.hostname.size();
  plan.last_cap = last_cap_;
  plan.max_open_files = clamp_to_hard_limit(RLIMIT_NOFILE, spec_.max_open_files);
  plan.max_processes = clamp_to_hard_limit(RLIMIT_NPROC, spec_.max_processes);
  plan.seccomp = &seccomp_prog_;
  plan.executable = executable_.c_str();
  plan.argv = argv_ptrs_.data();
  plan.envp = env_ptrs_.data();
  return plan;
}

void LaunchPlan::throw_setup_failure(const SetupReport& report) const {
  const std::string identity =
      "uid " + std::to_string(spec_.uid) + ", gid " + std::to_string(spec_.gid);
  const auto at = [](const std::vector<const char*>& v, int i) -> std::string {
    return i >= 0 && static_cast<std::size_t>(i) < v.size() ? v[static_cast<std::size_t>(i)] : "?";
  };
  const auto bind_source = [&](int i) -> std::string {
    return i >= 0 && static_cast<std::size_t>(i) < binds_.size()
               ? binds_[static_cast<std::size_t>(i)].path
               : "?";
  };
  const int err = report.error;
  const bool denied = err == EACCES || err == EPERM;
  std::string what;
  std::string hint;
  const std::string restricted = denied ? userns_restriction_hint() : "";
  switch (static_cast<SetupStage>(report.stage)) {
    case SetupStage::kWaitForParent: what = "sandbox: wait for the supervisor"; break;
    case SetupStage::kSetGid: what = "sandbox: switch to gid " + std::to_string(spec_.gid); break;
    case SetupStage::kSetUid: what = "sandbox: switch to uid " + std::to_string(spec_.uid); break;
    case SetupStage::kClearGroups:
    case SetupStage::kGroupsRemain:
      what = "sandbox: drop supplementary groups";
      hint = "a group the launcher holds would stay usable in the sandbox; start the launcher "
             "without supplementary groups (e.g. setpriv --clear-groups) or as root";
      break;
    case SetupStage::kStdin: what = "sandbox: open /dev/null for stdin"; break;
    case SetupStage::kArrangeFds: what = "sandbox: place inherited fds"; break;
    case SetupStage::kMakePrivate: what = "sandbox: make the mount namespace private"; break;
    case SetupStage::kStageRoot:
      what = std::string("sandbox: mount a tmpfs root on ") + kStagingDir;
      break;
    case SetupStage::kPivotRoot: what = "sandbox: pivot_root into the minimal root"; break;
    case SetupStage::kMakeDir: what = "sandbox: create " + at(dir_ptrs_, report.index); break;
    case SetupStage::kCloneTree:
    case SetupStage::kCreateFile:
    case SetupStage::kBind:
      what = "sandbox: bind " + bind_source(report.index) + " read-only";
      if (denied) hint = "the launcher itself cannot reach " + bind_source(report.index);
      break;
    case SetupStage::kReadOnly:
      what = "sandbox: make " + (report.index < 0 ? std::string("/") : bind_source(report.index)) +
             " read-only";
      if (err == ENOSYS) hint = "mount_setattr needs Linux >= 5.12";
      break;
    case SetupStage::kSymlink: what = "sandbox: create the runtime links"; break;
    case SetupStage::kMountProc:
      what = "sandbox: mount /proc";
      if (denied) hint = "the host masks /proc (as containers do); run on the host";
      break;
    case SetupStage::kDetachOldRoot: what = "sandbox: detach the host root"; break;
    case SetupStage::kHostname: what = "sandbox: set the hostname"; break;
    case SetupStage::kRlimits:
      what = "sandbox: set resource limit " + std::to_string(report.index);
      if (denied) hint = "a hard limit above the launcher's own cannot be set; lower the spec's";
      break;
    case SetupStage::kDropCaps: what = "sandbox: drop capabilities"; break;
    case SetupStage::kNoNewPrivs: what = "sandbox: set no_new_privs"; break;
    case SetupStage::kSeccomp:
      what = "sandbox: load the seccomp filter";
      if (err == EINVAL) hint = "the kernel lacks seccomp filter support (CONFIG_SECCOMP_FILTER)";
      break;
    case SetupStage::kExec:
      what = "sandbox: execute " + executable_;
      if (err == ENOENT) {
        hint = "its interpreter or libraries are not inside the sandbox (only /usr and the "
               "bound paths are)";
      } else if (denied) {
        hint = "it must be executable by " + identity + " and not on a noexec mount";
      }
      break;
    default: what = "sandbox: setup step " + std::to_string(report.stage); break;
  }
  if (!restricted.empty() && hint.empty()) hint = restricted;
  throw Error(what, err, hint);
}

}  // namespace heddle::sandbox::detail
