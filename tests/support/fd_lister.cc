// A fusermount3 stand-in: writes the fds it was started with, and its _FUSE_COMMFD, to the file
// $HEDDLE_FD_LIST, then fails as a helper that could not mount would.
#include <dirent.h>

#include <cstdio>
#include <cstdlib>
#include <string>

int main() {
  const char* list = std::getenv("HEDDLE_FD_LIST");
  const char* commfd = std::getenv("_FUSE_COMMFD");
  DIR* dir = ::opendir("/proc/self/fd");
  if (list == nullptr || dir == nullptr) return 2;
  std::string fds;
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] == '.' || std::atoi(entry->d_name) == ::dirfd(dir)) continue;
    fds += std::string(entry->d_name) + " ";
  }
  ::closedir(dir);
  FILE* out = std::fopen(list, "w");
  if (out == nullptr) return 2;
  std::fprintf(out, "%s\n%s\n", fds.c_str(), commfd != nullptr ? commfd : "");
  std::fclose(out);
  std::fputs("fd_lister: not mounting\n", stderr);
  return 1;
}
