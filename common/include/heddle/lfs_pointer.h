// Git LFS pointers (https://github.com/git-lfs/git-lfs/blob/main/docs/spec.md), read and
// written as git-lfs does: the worker serves a pointer's object as `git lfs smudge` would, and
// capture writes a pointer as `git lfs clean` would. Header-only: both sides include it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace heddle {

// git-lfs reads no more of a blob to decide whether it is a pointer.
inline constexpr std::uint64_t kMaxLfsPointerSize = 1024;

struct LfsPointer {
  std::string oid;  // 64 lowercase hex digits (sha256)
  std::uint64_t size = 0;
};

namespace lfs_detail {

inline bool is_lower_hex(std::string_view text) {
  for (const char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// Takes "KEY VALUE\n" off the front of `text`.
inline bool take_line(std::string_view& text, std::string_view key, std::string_view& value) {
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

}  // namespace lfs_detail

// The pointer `blob` holds, or nullopt if it is not one git-lfs would smudge without an
// extension program: "version URL\noid sha256:HEX\nsize N\n" exactly (no ext-* lines).
[[nodiscard]] inline std::optional<LfsPointer> parse_lfs_pointer(std::string_view blob) {
  if (blob.size() > kMaxLfsPointerSize) return std::nullopt;
  std::string_view version;
  std::string_view oid;
  std::string_view size;
  if (!lfs_detail::take_line(blob, "version", version) ||
      (version != "https://git-lfs.github.com/spec/v1" &&
       version != "https://hawser.github.com/spec/v1") ||
      !lfs_detail::take_line(blob, "oid", oid) || !lfs_detail::take_line(blob, "size", size) ||
      !blob.empty()) {
    return std::nullopt;
  }
  constexpr std::string_view kSha256 = "sha256:";
  if (oid.substr(0, kSha256.size()) != kSha256) return std::nullopt;
  oid.remove_prefix(kSha256.size());
  if (oid.size() != 64 || !lfs_detail::is_lower_hex(oid)) return std::nullopt;
  if (size.empty() || size.size() > 19 || (size.size() > 1 && size[0] == '0')) return std::nullopt;
  LfsPointer pointer;
  pointer.oid = std::string(oid);
  for (const char c : size) {
    if (c < '0' || c > '9') return std::nullopt;
    pointer.size = pointer.size * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return pointer;
}

// The pointer file git-lfs writes for `pointer`: "version https://git-lfs.github.com/spec/v1\n
// oid sha256:HEX\nsize N\n", and for an empty file nothing (git-lfs records an empty file as
// an empty blob, which smudges to itself).
[[nodiscard]] inline std::string lfs_pointer_text(const LfsPointer& pointer) {
  if (pointer.size == 0) return "";
  return "version https://git-lfs.github.com/spec/v1\noid sha256:" + pointer.oid + "\nsize " +
         std::to_string(pointer.size) + "\n";
}

// <common_dir>lfs/objects/ab/cd/abcd... (common_dir ends with '/', as libgit2 gives it).
[[nodiscard]] inline std::string lfs_object_path(const std::string& common_dir,
                                                 const std::string& oid) {
  return common_dir + "lfs/objects/" + oid.substr(0, 2) + "/" + oid.substr(2, 2) + "/" + oid;
}

}  // namespace heddle
