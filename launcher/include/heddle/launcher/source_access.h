// Whose authority resolves a mount's sources: the mount's user's, never root's on its behalf.
// Root mounting for another user (--uid/--gid) would otherwise follow that user's symlinks,
// .git file, commondir and alternates into directories only root may read, and serve them.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "heddle/sandbox/sandbox_spec.h"
#include "heddle/unique_fd.h"

namespace heddle::launcher {

// A file identity: what the kernel checks a path lookup and an open against.
struct FileIdentity {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary, as login would give them (getgrouplist)
  // "uid 1001, gid 1001"
  [[nodiscard]] std::string describe() const;
};

// The password database's entry for `uid`, through getpwuid_r: the supervisor has threads (the
// file broker, the watcher), and getpwuid's result lives in one buffer for the whole process.
struct Account {
  std::string name;
  std::string home;
  gid_t gid = 0;
};
[[nodiscard]] std::optional<Account> account_of(uid_t uid);

// `uid` with primary group `gid` and the supplementary groups its name has in the group
// database (only `gid` if the uid has no name).
[[nodiscard]] FileIdentity file_identity_of(uid_t uid, gid_t gid);

// Runs `work` with the file authority of the mount's user (`uid`, `gid`) and returns what it
// returns or rethrows what it throws. A caller that is not root already is that user (the
// kernel checks its every lookup), and root's own mounts are root's: both run `work` here.
// Root mounting for another uid runs it on a short-lived thread whose credentials are that
// user's (uid, gid and supplementary groups, no capability).
//
// A thread, not a helper process: credentials are per thread in the kernel, so raw setgroups/
// setresgid/setresuid calls (glibc's wrappers would switch every thread of the process) give
// that one thread the user's whole identity, every fd it opens is ours to use afterwards, and
// nothing is forked from a process that may have threads. setfsuid alone would not do: it
// leaves capabilities such as CAP_SYS_PTRACE, which opens /proc/PID/root of any process.
void as_mount_user(uid_t uid, gid_t gid, const std::function<void()>& work);

// The same for an explicit identity: always on its own thread. For tests and as_mount_user.
void run_with_identity(const FileIdentity& who, const std::function<void()>& work);

// Whose identity as_mount_user(uid, gid, ...) uses, for messages: "uid 1001, gid 1001 (the
// mount's user)", or "you" for a caller that resolves as itself.
[[nodiscard]] std::string mount_user_label(uid_t uid, gid_t gid);

// A source path open for reading, and the object it was.
struct OpenSource {
  sandbox::CheckedPath checked;
  UniqueFd fd;
};

// Opens `path` (canonical) for reading as the calling thread, never following a symlink as its
// last component: a directory with O_DIRECTORY, a regular file without blocking; anything else
// is refused unopened. So the thread needs search permission on every directory above it and
// read permission on it. `what` names it in errors ("alternate /srv/x.git/objects (named by
// ...)"). The CheckedPath is for the sandbox to check again when it binds it.
[[nodiscard]] OpenSource open_source_path(const std::string& path, const std::string& what);

// A path the sandbox binds for a source, opened (and so checked) with the authority of the
// thread that resolved it: see as_mount_user.
struct SourceBind {
  sandbox::CheckedPath checked;
  // Named by the repository's own files (a .git file's gitdir, a commondir, an alternate),
  // not by the user: such a path never decides the worker's identity (worker_identity.h).
  bool chosen_by_repository = false;
};

// "a FIFO", "a socket", ...: what a path is, for messages.
[[nodiscard]] std::string file_type_name(mode_t mode);

}  // namespace heddle::launcher
