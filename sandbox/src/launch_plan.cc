#include "launch_plan.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
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

SetupOp SetupOp::checked_bind(const CheckedPath& checked) {
  SetupOp op = bind(checked.path, !checked.directory, checked.writable);
  op.pin = PinnedObject{::major(checked.dev), ::minor(checked.dev),
                        static_cast<unsigned long long>(checked.ino)};
  return op;
}

std::vector<SetupOp> order_setup_ops(const std::vector<SetupOp>& requested) {
  std::vector<SetupOp> binds;
  std::copy_if(requested.begin(), requested.end(), std::back_inserter(binds),
               [](const SetupOp& op) { return op.kind == OpKind::kBind; });
  // A path inside another bound directory of the same writability is already there (the
  // installed worker in /usr); one of the other kind is bound again on top.
  const auto covered = [&](const SetupOp& op) {
    return std::any_of(binds.begin(), binds.end(), [&](const SetupOp& dir) {
      return !dir.is_file && dir.writable == op.writable && op.path.size() > dir.path.size() &&
             op.path.starts_with(dir.path) && op.path[dir.path.size()] == '/';
    });
  };
  std::vector<SetupOp> kept;
  std::copy_if(binds.begin(), binds.end(), std::back_inserter(kept),
               [&](const SetupOp& op) { return !covered(op); });
  // Parents first, so a nested bind lands on top of its parent's; a path asked twice is
  // bound once, as first asked.
  std::stable_sort(kept.begin(), kept.end(),
                   [](const SetupOp& a, const SetupOp& b) { return a.path < b.path; });
  kept.erase(std::unique(kept.begin(), kept.end(),
                         [](const SetupOp& a, const SetupOp& b) { return a.path == b.path; }),
             kept.end());

  std::set<std::string> dirs;  // sorted, so every parent precedes its children
  for (const SetupOp& op : kept) {
    const fs::path target(op.path);
    for (fs::path dir = op.is_file ? target.parent_path() : target; dir != dir.root_path();
         dir = dir.parent_path()) {
      dirs.insert(dir.string());
    }
  }
  std::vector<SetupOp> ops;
  for (const std::string& dir : dirs) ops.push_back(SetupOp::dir(dir));
  ops.insert(ops.end(), kept.begin(), kept.end());
  for (const OpKind kind : {OpKind::kSymlink, OpKind::kProc}) {
    std::copy_if(requested.begin(), requested.end(), std::back_inserter(ops),
                 [&](const SetupOp& op) { return op.kind == kind; });
  }
  return ops;
}

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
  for (const CheckedPath& checked : spec.checked_paths) {
    // Never resolved again here: the child checks that the path is still the object checked.
    if (checked.path.empty() || checked.path[0] != '/' ||
        fs::path(checked.path).lexically_normal() != fs::path(checked.path)) {
      throw Error("sandbox checked path " + checked.path, EINVAL, "it must be absolute and canonical");
    }
    add_op(SetupOp::checked_bind(checked));
  }
  for (const std::string& path : spec.writable_paths) {
    if (!fs::is_directory(path)) throw Error("sandbox writable path " + path, ENOTDIR);
    add_bind(canonical_or_throw(path, "writable path"), true);
  }
  if (spec.mount_proc) ops_.push_back(SetupOp::proc());
  argv_ = spec.argv;
  env_ = spec.env;
  // Compiled once per process: the allow list takes libseccomp about 0.7 ms, on the path to
  // MountReady of every mount a long-lived launcher (the drop-in mode) spawns.
  if (spec.allow_child_processes) {
    static const std::vector<sock_filter> with_children = compile_seccomp_policy(true);
    seccomp_ = with_children;
  } else {
    static const std::vector<sock_filter> policy = compile_seccomp_policy(false);
    seccomp_ = policy;
  }
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
      ops_.push_back(SetupOp::symlink(target.string(), root));
    } else if (S_ISDIR(st.st_mode)) {
      add_bind(root);
    }
  }
  // All of /etc the sandbox gets: the dynamic loader's cache (it works without, only slower).
  if (::access(kLoaderCache, R_OK) == 0) add_bind(kLoaderCache);
}

void LaunchPlan::add_bind(const std::string& host_path, bool writable) {
  std::error_code ec;
  const bool is_dir = fs::is_directory(host_path, ec);
  add_op(SetupOp::bind(host_path, !is_dir, writable));
}

void LaunchPlan::add_op(SetupOp op) {
  if (op.kind == OpKind::kBind && op.path == "/") {
    throw Error("sandbox path /", EINVAL, "binding the whole host root would defeat the sandbox");
  }
  ops_.push_back(std::move(op));
  const auto binds = std::count_if(ops_.begin(), ops_.end(),
                                   [](const SetupOp& o) { return o.kind == OpKind::kBind; });
  if (static_cast<std::size_t>(binds) > kMaxBinds) {
    throw Error("sandbox binds", E2BIG, "at most " + std::to_string(kMaxBinds) + " paths");
  }
}

void LaunchPlan::freeze() {
  ops_ = order_setup_ops(ops_);
  for (const SetupOp& op : ops_) {
    child_ops_.push_back(ChildOp{op.kind, op.path.c_str(), op.target.c_str(), op.is_file,
                                 op.writable, op.pin.has_value(), op.pin.value_or(PinnedObject{})});
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
  plan.ops = child_ops_.data();
  plan.op_count = child_ops_.size();
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
  const auto op_path = [&](int i) -> std::string {
    return i >= 0 && static_cast<std::size_t>(i) < ops_.size()
               ? ops_[static_cast<std::size_t>(i)].path
               : "?";
  };
  const int err = report.error;
  const bool denied = err == EACCES || err == EPERM;
  std::string what;
  std::string hint;
  const std::string restricted = denied ? userns_restriction_hint() : "";
  switch (static_cast<SetupStage>(report.stage)) {
    case SetupStage::kWaitForParent: what = "sandbox: wait for the supervisor"; break;
    case SetupStage::kNewSession: what = "sandbox: start a new session (setsid)"; break;
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
    case SetupStage::kMakeDir: what = "sandbox: create " + op_path(report.index); break;
    case SetupStage::kCloneTree:
    case SetupStage::kCreateFile:
    case SetupStage::kBind:
      what = "sandbox: bind " + op_path(report.index) + " read-only";
      if (denied) hint = "the launcher itself cannot reach " + op_path(report.index);
      if (err == ESTALE) {
        hint = "it is no longer what was checked (replaced, or a symlink put in its place, since "
               "the launcher opened it); mount again";
      }
      break;
    case SetupStage::kReadOnly:
      what = "sandbox: make " + (report.index < 0 ? std::string("/") : op_path(report.index)) +
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
