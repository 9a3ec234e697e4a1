// What a sandboxed process is allowed to see and be.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace heddle::sandbox {

// The profile the package installs for Ubuntu's AppArmor restriction of user namespaces.
inline constexpr const char* kAppArmorProfile = "/etc/apparmor.d/heddle-fuse-launcher";

// A host path its caller checked (opened with the authority it should have), and the object
// (device and inode) the path named then. The sandbox binds it only if the path still names
// that object when the bind is cloned, so a path changed since the check (a symlink put in
// place of a directory, say) is refused instead of followed with the sandbox's authority.
struct CheckedPath {
  std::string path;  // absolute and canonical; never resolved again by the parent
  dev_t dev = 0;
  ino_t ino = 0;
  bool directory = true;
  bool writable = false;  // bound read-write (a writable mount's overlay directory)
  friend bool operator==(const CheckedPath&, const CheckedPath&) = default;
};

struct SandboxSpec {
  // Absolute host path; it is bound read-only at the same path inside.
  std::string executable;
  std::vector<std::string> argv;
  // "NAME=value" entries; nothing of the caller's environment leaks in unless listed here.
  std::vector<std::string> env;
  // Host files or directories bound read-only at the same path inside. The system runtime
  // (/usr and the merged-/usr links) is added by the sandbox itself.
  std::vector<std::string> readonly_paths;
  // Bound like readonly_paths (read-write if `writable`), each only while it is still the
  // object checked.
  std::vector<CheckedPath> checked_paths;
  // Host directories bound read-write (still nosuid, nodev and noexec) at the same path: a
  // writable mount's overlay. Nothing else the sandbox shows is writable.
  std::vector<std::string> writable_paths;
  // Host identity of the process. Never 0: launch() refuses it.
  uid_t uid = 65534;
  gid_t gid = 65534;
  // Map uid and gid with newuidmap/newgidmap, from the caller's /etc/subuid and /etc/subgid
  // ranges, instead of writing the maps directly (which an unprivileged caller may do only
  // for its own uid and gid).
  bool subordinate_ids = false;
  // Strict (true): user, mount, pid, ipc, net, uts and cgroup namespaces and a minimal root.
  // Degraded (false), for hosts without user namespaces: no namespaces and the host's
  // filesystem view, but still the identity switch, zero capabilities, no_new_privs, seccomp
  // and closed fds.
  bool user_namespace = true;
  // Placed at fds 3, 4, ... in this order; every other fd above 2 is closed at exec.
  std::vector<int> inherit_fds;
  // Becomes the process's stdout and stderr (a pipe its supervisor logs from); -1 keeps the
  // caller's. stdin is always /dev/null.
  int output_fd = -1;
  std::string hostname = "heddle-sandbox";
  // Let the process start processes (fork, vfork, clone without CLONE_THREAD). Off for the
  // worker and what `sandbox-exec` runs: a worker's child could outlive it and keep reading
  // /dev/fuse after a successor took over, with no pid namespace to end it in a degraded
  // sandbox. Threads always start.
  bool allow_child_processes = false;
  // Mount a /proc of the sandbox's own pid namespace (sanitizer runtimes need /proc/self/maps).
  bool mount_proc = true;
  // Resource limits, soft and hard. Threads count against RLIMIT_NPROC (per user, within
  // the sandbox's user namespace); no core dumps, which could hold file contents.
  unsigned long max_open_files = 4096;
  unsigned long max_processes = 256;
  // How long the child may take from clone to execve before it is killed.
  std::chrono::milliseconds setup_timeout{10000};
};

}  // namespace heddle::sandbox
