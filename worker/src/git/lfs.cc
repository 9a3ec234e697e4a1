#include "git/lfs.h"

#include <unistd.h>

#include <cerrno>
#include <vector>

#include "git/repo_file.h"
#include "heddle/sha256.h"

namespace heddle::worker::git {
namespace {

bool is_lower_hex(std::string_view text) {
  for (const char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// Takes "KEY VALUE\n" off the front of `text`.
bool take_line(std::string_view& text, std::string_view key, std::string_view& value) {
  const std::size_t end = text.find('\n');
  if (end == std::string_view::npos) return false;
  const std::string_view line = text.substr(0, end);
  if (line.size() <= key.size() || line.substr(0, key.size()) != key || line[key.size()] != ' ') {
    return false;
  }
  value = line.substr(key.size() + 1);
  text.remove_prefix(end + 1);
  return true;
}

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

std::optional<LfsPointer> parse_lfs_pointer(std::string_view blob) {
  if (blob.size() > kMaxLfsPointerSize) return std::nullopt;
  std::string_view version;
  std::string_view oid;
  std::string_view size;
  if (!take_line(blob, "version", version) ||
      (version != "https://git-lfs.github.com/spec/v1" &&
       version != "https://hawser.github.com/spec/v1") ||
      !take_line(blob, "oid", oid) || !take_line(blob, "size", size) || !blob.empty()) {
    return std::nullopt;
  }
  constexpr std::string_view kSha256 = "sha256:";
  if (oid.substr(0, kSha256.size()) != kSha256) return std::nullopt;
  oid.remove_prefix(kSha256.size());
  if (oid.size() != 64 || !is_lower_hex(oid)) return std::nullopt;
  if (size.empty() || size.size() > 19 || (size.size() > 1 && size[0] == '0')) return std::nullopt;
  LfsPointer pointer;
  pointer.oid = std::string(oid);
  for (const char c : size) {
    if (c < '0' || c > '9') return std::nullopt;
    pointer.size = pointer.size * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return pointer;
}

std::string lfs_object_path(const std::string& common_dir, const std::string& oid) {
  return common_dir + "lfs/objects/" + oid.substr(0, 2) + "/" + oid.substr(2, 2) + "/" + oid;
}

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
