#include "source_tree.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <memory>
#include <dirent.h>

#include "broker_client.h"
#include "heddle/error.h"

namespace heddle::worker {

SourceTree SourceTree::open(const std::string& dir, std::shared_ptr<BrokerClient> broker) {
  UniqueFd root(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root && errno == EACCES && broker) {
    auto brokered = broker->open(ipc::BrokerOpen::kDirectory, 0, ".");
    if (!brokered.fd) throw Error(describe_open_failure(dir, brokered.error), 0);
    root = std::move(brokered.fd);
  }
  if (!root) throw Error(describe_open_failure(dir, errno), 0);
  struct stat st {};
  if (::fstat(root.get(), &st) != 0) throw Error(describe_open_failure(dir, errno), 0);
  return SourceTree(dir, std::move(root), file_id(st), std::move(broker));
}

OpenResult SourceTree::open_beneath(const std::string& rel, int flags) const {
  OpenResult own = worker::open_beneath(root_.get(), rel, flags);
  if (own.fd || own.error != EACCES || !broker_) return own;
  const auto kind = ipc::broker_kind_for(flags);
  if (!kind) return own;
  // Its refusal is the user's own (EACCES), or what the worker would have met had it been
  // allowed to look (ENOENT, ELOOP for a symlink, EINVAL for a FIFO).
  return broker_->open(*kind, 0, rel);
}

OpenResult open_beneath(int root_fd, const std::string& rel, int flags) {
  struct open_how how {};
  how.flags = static_cast<unsigned long long>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS;
  // EAGAIN: the kernel could not rule out a concurrent rename racing the walk; EINTR: a
  // signal. Both are worth a few retries.
  for (int attempt = 0;; ++attempt) {
    const long fd = ::syscall(SYS_openat2, root_fd, rel.c_str(), &how, sizeof how);
    if (fd >= 0) return {UniqueFd(static_cast<int>(fd)), 0};
    if ((errno == EINTR || errno == EAGAIN) && attempt < 16) continue;
    return {UniqueFd(), errno};
  }
}

void SourceTree::restore_owner(const std::string& rel, struct stat& st) const {
  if (!broker_ || (st.st_uid != kOverflowId && st.st_gid != kOverflowId)) return;
  // When others may read and search all that owner and group may (0644, 0755), the owner
  // changes no access decision of a read-only lower layer: no round trip for the common case.
  const mode_t others = st.st_mode & 05;
  if ((((st.st_mode >> 6) | (st.st_mode >> 3)) & 05 & ~others) == 0) return;
  const FileId id = file_id(st);
  {
    std::lock_guard lock(owners_->mutex);
    const auto known = owners_->by_file.find(id);
    if (known != owners_->by_file.end() && known->second.ctime.tv_sec == st.st_ctim.tv_sec &&
        known->second.ctime.tv_nsec == st.st_ctim.tv_nsec) {
      st.st_uid = known->second.uid;
      st.st_gid = known->second.gid;
      return;
    }
  }
  uid_t uid = 0;
  gid_t gid = 0;
  // On failure the overflow ids stay: the kernel then grants what "others" may, no more.
  if (broker_->owner(0, rel, uid, gid) != 0) return;
  st.st_uid = uid;
  st.st_gid = gid;
  std::lock_guard lock(owners_->mutex);
  if (owners_->by_file.size() >= kMaxKnownOwners) owners_->by_file.clear();
  owners_->by_file[id] = KnownOwner{st.st_ctim, uid, gid};
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

int read_entries(int dir_fd, std::vector<DirEntry>& out) {
  constexpr std::size_t kBufferSize = 64 * 1024;
  const auto buffer = std::make_unique<char[]>(kBufferSize);
  for (;;) {
    const ssize_t n = ::getdents64(dir_fd, buffer.get(), kBufferSize);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return 0;
    for (ssize_t pos = 0; pos < n;) {
      dirent64 entry_header;
      std::memcpy(&entry_header, buffer.get() + pos, offsetof(dirent64, d_name));
      const char* name = buffer.get() + pos + offsetof(dirent64, d_name);
      unsigned char type = entry_header.d_type;
      if (type == DT_UNKNOWN) {
        // Some filesystems do not report types; ask without following a symlink.
        struct stat entry_st {};
        if (::fstatat(dir_fd, name, &entry_st, AT_SYMLINK_NOFOLLOW) == 0) {
          type = static_cast<unsigned char>(IFTODT(entry_st.st_mode));
        }
      }
      out.push_back(DirEntry{name, entry_header.d_ino, type});
      if (entry_header.d_reclen == 0) return EIO;  // never from a sane kernel; avoid spinning
      pos += entry_header.d_reclen;
    }
  }
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
