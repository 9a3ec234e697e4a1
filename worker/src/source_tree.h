// The served directory: one O_DIRECTORY fd, and path resolution strictly beneath it.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include <vector>

#include "backend.h"
#include "heddle/unique_fd.h"

namespace heddle::worker {

// A file's identity in the source: (st_dev, st_ino), plus the file type so that an inode number
// recycled by the source filesystem for a file of another type never aliases an old node.
// Hardlinks share one identity; a replaced file gets a new one.
struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
  mode_t type = 0;  // st_mode & S_IFMT
  friend bool operator==(const FileId&, const FileId&) = default;
};

[[nodiscard]] inline FileId file_id(const struct stat& st) {
  return {st.st_dev, st.st_ino, st.st_mode & S_IFMT};
}

struct FileIdHash {
  std::size_t operator()(const FileId& id) const noexcept {
    const auto mixed = static_cast<unsigned long long>(id.ino) * 0x9E3779B97F4A7C15ULL ^
                       static_cast<unsigned long long>(id.dev) ^ id.type;
    return std::hash<unsigned long long>{}(mixed);
  }
};

// An fd, or the errno that prevented it.
struct OpenResult {
  UniqueFd fd;
  int error = 0;
};

// openat2(root_fd, rel, flags | O_CLOEXEC) with RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS |
// RESOLVE_NO_SYMLINKS: no symlink is ever followed (a symlink in the middle is ELOOP; a
// trailing one is ELOOP too unless flags has O_PATH|O_NOFOLLOW, which opens the link itself).
// `rel` is "." for the root, else "a/b" with no "." or ".." components.
[[nodiscard]] OpenResult open_beneath(int root_fd, const std::string& rel, int flags);

class BrokerClient;

// What stat() shows inside a user namespace for an id it does not map (the kernel's default
// /proc/sys/kernel/overflowuid and overflowgid).
inline constexpr unsigned kOverflowId = 65534;

class SourceTree {
 public:
  // Opens `dir` (O_RDONLY|O_DIRECTORY), through `broker` if the worker may not. Throws
  // heddle::Error whose text is the actionable message for the supervisor (see
  // describe_open_failure).
  [[nodiscard]] static SourceTree open(const std::string& dir,
                                       std::shared_ptr<BrokerClient> broker = nullptr);

  // A read-only open the worker's own identity is refused (EACCES) goes to the supervisor's
  // file broker, which opens the same path with the mount's user's authority (issue 18): the
  // fd is used like the worker's own.
  [[nodiscard]] OpenResult open_beneath(const std::string& rel, int flags) const;

  // The worker's user namespace maps only its own ids: the owner or group of anything else
  // (the user's files when it is a subordinate uid, a group's) reads as the overflow id. The
  // FUSE kernel checks permissions (default_permissions) against what we report, so such an
  // id is replaced by the real one, from the file broker. `st` is `rel`'s.
  void restore_owner(const std::string& rel, struct stat& st) const;

  [[nodiscard]] int root_fd() const noexcept { return root_.get(); }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  [[nodiscard]] FileId root_id() const noexcept { return root_id_; }

 private:
  SourceTree(std::string path, UniqueFd root, FileId root_id,
             std::shared_ptr<BrokerClient> broker)
      : path_(std::move(path)),
        root_(std::move(root)),
        root_id_(root_id),
        broker_(std::move(broker)) {}

  std::string path_;
  UniqueFd root_;
  FileId root_id_;
  std::shared_ptr<BrokerClient> broker_;  // null: no broker (tests' unsandboxed workers)

  // restore_owner's answers, so that a walk asks once per file: valid while the file's ctime
  // (which every chown and chmod moves) is the one seen then.
  struct KnownOwner {
    struct timespec ctime {};
    uid_t uid = 0;
    gid_t gid = 0;
  };
  struct KnownOwners {
    std::mutex mutex;
    std::unordered_map<FileId, KnownOwner, FileIdHash> by_file;
  };
  static constexpr std::size_t kMaxKnownOwners = 1 << 17;
  std::unique_ptr<KnownOwners> owners_ = std::make_unique<KnownOwners>();
};

// The supervisor-facing explanation of why `dir` could not be opened with errno `error`,
// naming the path and, for permission problems, the worker's uid/gid and what to change.
[[nodiscard]] std::string describe_open_failure(const std::string& dir, int error);

// Appends every entry of the open directory `dir_fd` (including "." and ".."), with types
// found by lstat where the filesystem reports none. 0 or an errno.
[[nodiscard]] int read_entries(int dir_fd, std::vector<DirEntry>& out);

// "a/b" + "c" -> "a/b/c"; "." + "c" -> "c".
[[nodiscard]] std::string join_path(const std::string& parent, const char* name);

}  // namespace heddle::worker
