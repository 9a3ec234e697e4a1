#include "source_tree.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "heddle/error.h"

namespace heddle::worker {

SourceTree SourceTree::open(const std::string& dir) {
  UniqueFd root(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root) throw Error(describe_open_failure(dir, errno), 0);
  struct stat st {};
  if (::fstat(root.get(), &st) != 0) throw Error(describe_open_failure(dir, errno), 0);
  return SourceTree(dir, std::move(root), file_id(st));
}

OpenResult SourceTree::open_beneath(const std::string& rel, int flags) const {
  struct open_how how {};
  how.flags = static_cast<unsigned long long>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS;
  // EAGAIN: the kernel could not rule out a concurrent rename racing the walk; EINTR: a
  // signal. Both are worth a few retries.
  for (int attempt = 0;; ++attempt) {
    const long fd = ::syscall(SYS_openat2, root_.get(), rel.c_str(), &how, sizeof how);
    if (fd >= 0) return {UniqueFd(static_cast<int>(fd)), 0};
    if ((errno == EINTR || errno == EAGAIN) && attempt < 16) continue;
    return {UniqueFd(), errno};
  }
}

std::string describe_open_failure(const std::string& dir, int error) {
  const std::string identity = "(uid " + std::to_string(::geteuid()) + ", gid " +
                               std::to_string(::getegid()) + ")";
  switch (error) {
    case EACCES:
    case EPERM:
      return "source directory " + dir + " is not readable by the worker's identity " +
             identity + ": make it readable by that user, or mount with --uid/--gid of its owner";
    case ENOENT:
      return "source directory " + dir +
             " does not exist (as seen by the worker): check the path, and that every "
             "component of it exists and is a directory";
    case ENOTDIR:
      return "source " + dir +
             " is not a directory (it, or one of its parent components, is a file): pass the "
             "path of a directory";
    case ELOOP:
      return "source directory " + dir +
             " could not be resolved: too many levels of symbolic links; pass the real path";
    default:
      break;
  }
  const char* name = ::strerrorname_np(error);
  return "cannot open source directory " + dir + ": " + std::strerror(error) +
         (name != nullptr ? std::string(" (") + name + ")" : std::string()) + " " + identity;
}

std::string join_path(const std::string& parent, const char* name) {
  if (parent == ".") return name;
  std::string out;
  out.reserve(parent.size() + 1 + std::strlen(name));
  out += parent;
  out += '/';
  out += name;
  return out;
}

}  // namespace heddle::worker
