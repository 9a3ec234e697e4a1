#include "git/repo_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace heddle::worker::git {

RepoFile open_repo_file(const std::string& path, std::uint64_t max_size) {
  RepoFile out;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd) {
    out.error = errno;
    return out;
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    out.error = errno;
    return out;
  }
  if (!S_ISREG(st.st_mode)) {
    out.error = EINVAL;
    return out;
  }
  if (st.st_size < 0 || static_cast<std::uint64_t>(st.st_size) > max_size) {
    out.error = EFBIG;
    return out;
  }
  out.size = static_cast<std::uint64_t>(st.st_size);
  out.fd = std::move(fd);
  return out;
}

int read_repo_file(const std::string& path, std::uint64_t max_size, std::string& out) {
  const RepoFile file = open_repo_file(path, max_size);
  if (!file.fd) return file.error;
  out.clear();
  char buffer[16 * 1024];
  for (;;) {
    const ssize_t n = ::read(file.fd.get(), buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return 0;
    // The file may grow after fstat: the cap holds for what is read too.
    if (out.size() + static_cast<std::size_t>(n) > max_size) return EFBIG;
    out.append(buffer, static_cast<std::size_t>(n));
  }
}

int check_repo_file(const std::string& path, std::uint64_t max_size) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;  // missing: libgit2 says what it misses
  if (!S_ISREG(st.st_mode)) return EINVAL;
  if (st.st_size < 0 || static_cast<std::uint64_t>(st.st_size) > max_size) return EFBIG;
  return 0;
}

}  // namespace heddle::worker::git
