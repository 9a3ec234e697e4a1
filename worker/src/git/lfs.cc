#include "git/lfs.h"

#include <unistd.h>

#include <cerrno>
#include <vector>

#include "git/repo_file.h"
#include "heddle/sha256.h"

namespace heddle::worker::git {
namespace {

bool hash_matches(int fd, const LfsPointer& pointer) {
  Sha256 hash;
  std::vector<char> buffer(1 << 20);
  std::uint64_t offset = 0;
  for (;;) {
    const ssize_t n = ::pread(fd, buffer.data(), buffer.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) break;
    hash.update(std::string_view(buffer.data(), static_cast<std::size_t>(n)));
    offset += static_cast<std::uint64_t>(n);
  }
  return offset == pointer.size && hash.hex_digest() == pointer.oid;
}

}  // namespace

UniqueFd open_lfs_object(const std::string& common_dir, const LfsPointer& pointer,
                         bool check_hash) {
  RepoFile file = open_repo_file(lfs_object_path(common_dir, pointer.oid), pointer.size);
  if (!file.fd || file.size != pointer.size) return UniqueFd();
  if (check_hash && pointer.size <= kLfsHashCheckLimit && !hash_matches(file.fd.get(), pointer)) {
    return UniqueFd();
  }
  return std::move(file.fd);
}

}  // namespace heddle::worker::git
