#include "heddle/launcher/worker_identity.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "heddle/error.h"
#include "heddle/process.h"
#include "heddle/launcher/source_access.h"

namespace heddle::launcher {
namespace fs = std::filesystem;
namespace {

constexpr uid_t kNobody = 65534;

// Can a uid that is neither owner nor in any group reach and read `path`?
bool readable_by_others(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return false;
  const mode_t needed = S_ISDIR(st.st_mode) ? (S_IROTH | S_IXOTH) : S_IROTH;
  if ((st.st_mode & needed) != needed) return false;
  for (fs::path dir = path.parent_path(); !dir.empty(); dir = dir.parent_path()) {
    if (::stat(dir.c_str(), &st) != 0 || (st.st_mode & S_IXOTH) == 0) return false;
    if (dir == dir.root_path()) break;
  }
  return true;
}

// A repository's files are opened by libgit2 inside the worker, which cannot ask the file
// broker: a subordinate worker must be able to read every one. `path` and everything below it
// (not following symlinks) readable by others? The first that is not in `blocker`. A tree of
// more than kMaxCheckedEntries counts as not, for a walk at mount time must stay short (git
// keeps loose objects to some thousands; gc packs the rest).
constexpr std::size_t kMaxCheckedEntries = 50000;

bool tree_readable_by_others(const fs::path& path, std::string& blocker) {
  if (!readable_by_others(path)) {
    blocker = path.string();
    return false;
  }
  std::error_code ec;
  fs::recursive_directory_iterator it(path, fs::directory_options::none, ec);
  std::size_t seen = 0;
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (++seen > kMaxCheckedEntries) {
      blocker = path.string() + " (more than " + std::to_string(kMaxCheckedEntries) +
                " entries to check)";
      return false;
    }
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) break;
    if (S_ISLNK(st.st_mode)) continue;
    const mode_t needed = S_ISDIR(st.st_mode) ? (S_IROTH | S_IXOTH) : S_IROTH;
    if ((st.st_mode & needed) != needed) {
      blocker = it->path().string();
      return false;
    }
  }
  if (ec) {
    blocker = path.string() + " (" + ec.message() + ")";
    return false;
  }
  return true;
}

bool readable_by_others(const fs::path& path, bool whole_tree, std::string& blocker) {
  if (whole_tree) return tree_readable_by_others(path, blocker);
  blocker = path.string();
  return readable_by_others(path);
}

}  // namespace

std::optional<unsigned> subordinate_id_start(const std::string& file, uid_t user) {
  std::string name;
  if (const auto account = account_of(user)) name = account->name;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    const auto first = line.find(':');
    const auto second = line.find(':', first == std::string::npos ? first : first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string owner = line.substr(0, first);
    if (owner != name && owner != std::to_string(user)) continue;
    try {
      const unsigned long start = std::stoul(line.substr(first + 1, second - first - 1));
      const unsigned long count = std::stoul(line.substr(second + 1));
      if (count >= 1 && start > 0 && start < 0xfffffffeUL) return static_cast<unsigned>(start);
    } catch (const std::exception&) {
    }
  }
  return std::nullopt;
}

WorkerIdentity choose_worker_identity(uid_t mount_uid, gid_t mount_gid,
                                      const std::vector<std::string>& named_paths,
                                      bool allow_subordinate, bool writable, bool whole_tree) {
  if (::geteuid() == 0) {
    return WorkerIdentity{mount_uid == 0 ? kNobody : mount_uid,
                          mount_gid == 0 ? kNobody : mount_gid, false, ""};
  }
  WorkerIdentity self{::getuid(), ::getgid(), false, ""};
  if (!allow_subordinate) return self;
  const auto uid = subordinate_id_start("/etc/subuid", ::getuid());
  const auto gid = subordinate_id_start("/etc/subgid", ::getuid());
  if (!uid || !gid || find_on_path("newuidmap").empty() || find_on_path("newgidmap").empty()) {
    return self;
  }
  if (writable) {
    self.why = "the worker runs as your own uid, not a subordinate one: the mount is writable, "
               "and the files it writes in the overlay must be yours to keep or remove";
    return self;
  }
  for (const std::string& path : named_paths) {
    if (std::string blocker; !readable_by_others(path, whole_tree, blocker)) {
      self.why = "the worker runs as your own uid: " + blocker +
                 " is not readable by others, so a subordinate uid could not serve it";
      return self;
    }
  }
  return WorkerIdentity{*uid, *gid, true,
                        "the worker runs as subordinate uid " + std::to_string(*uid) +
                            " from /etc/subuid"};
}

void require_readable_by_worker(const WorkerIdentity& worker,
                                const std::vector<std::string>& chosen_paths, bool whole_tree) {
  if (!worker.subordinate) return;  // the caller itself, who opened every one of them
  for (const std::string& path : chosen_paths) {
    std::string blocker;
    if (readable_by_others(path, whole_tree, blocker)) continue;
    throw Error(blocker + ", named by the repository's files, is not readable by others, and the "
                       "worker runs as subordinate uid " + std::to_string(worker.uid),
                EACCES,
                "a repository's gitdir, commondir or alternates never change the worker's "
                "identity: make the path readable by others (chmod o+rX), or make the "
                "repository itself private to you");
  }
}

}  // namespace heddle::launcher
