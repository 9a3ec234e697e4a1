// Listing a directory open at an fd, for the launcher's walks of a repository (git_layout.cc)
// and of an overlay's upper/ (capture.cc). Header-only.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "heddle/error.h"

namespace heddle::launcher {

// Calls visit(name, type) for each entry of the directory open at `dir_fd` (the fd is not
// consumed), without "." and "..". `type` is S_IFDIR, S_IFREG, ...: from readdir, or from
// fstatat where the file system does not say. Throws heddle::Error naming `what`.
template <typename Visit>
void for_each_entry(int dir_fd, const std::string& what, Visit&& visit) {
  const int copy = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (copy < 0) throw_errno("list " + what);
  DIR* dir = ::fdopendir(copy);
  if (dir == nullptr) {
    ::close(copy);
    throw_errno("list " + what);
  }
  const std::unique_ptr<DIR, int (*)(DIR*)> owner(dir, ::closedir);
  while (const dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    mode_t type = DTTOIF(entry->d_type);
    if (entry->d_type == DT_UNKNOWN) {
      struct stat st {};
      if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        throw_errno("stat " + name + " in " + what);
      }
      type = st.st_mode & S_IFMT;
    }
    visit(name, type);
  }
}

// The names in the directory open at `dir_fd`, sorted.
inline std::vector<std::string> sorted_entry_names(int dir_fd, const std::string& what) {
  std::vector<std::string> names;
  for_each_entry(dir_fd, what, [&](const std::string& name, mode_t) { names.push_back(name); });
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace heddle::launcher
