#include "heddle/launcher/worker_identity.h"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "heddle/error.h"
#include "heddle/process.h"

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

}  // namespace

std::optional<unsigned> subordinate_id_start(const std::string& file, uid_t user) {
  std::string name;
  if (const passwd* pw = ::getpwuid(user)) name = pw->pw_name;
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
                                      bool allow_subordinate, bool writable) {
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
    if (!readable_by_others(path)) {
      self.why = "the worker runs as your own uid: " + path +
                 " is not readable by others, so a subordinate uid could not serve it";
      return self;
    }
  }
  return WorkerIdentity{*uid, *gid, true,
                        "the worker runs as subordinate uid " + std::to_string(*uid) +
                            " from /etc/subuid"};
}

void require_readable_by_worker(const WorkerIdentity& worker,
                                const std::vector<std::string>& chosen_paths) {
  if (!worker.subordinate) return;  // the caller itself, who opened every one of them
  for (const std::string& path : chosen_paths) {
    if (readable_by_others(path)) continue;
    throw Error(path + ", named by the repository's files, is not readable by others, and the "
                       "worker runs as subordinate uid " + std::to_string(worker.uid),
                EACCES,
                "a repository's gitdir, commondir or alternates never change the worker's "
                "identity: make the path readable by others (chmod o+rX), or make the "
                "repository itself private to you");
  }
}

}  // namespace heddle::launcher
