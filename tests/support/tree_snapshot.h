// Content checks for the overlay's durability tests: SHA-256 of bytes and files, deterministic
// test bytes, and a snapshot of a whole tree (every entry's type, permission bits, link count,
// size, content hash and symlink target) that can be compared and diffed. Header-only.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "heddle/sha256.h"

namespace heddle::test {

inline std::string sha256_hex(std::string_view data) {
  Sha256 sha;
  sha.update(data);
  return sha.hex_digest();
}

// The SHA-256 of a file's content, read with plain read(2) calls (through a mount: so every
// byte comes from the worker), or "error: ..." naming the failed call.
inline std::string sha256_file(const std::filesystem::path& path, std::uint64_t* size = nullptr) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return std::string("error: open: ") + std::strerror(errno);
  Sha256 sha;
  std::vector<char> buffer(std::size_t{1} << 20);
  std::uint64_t total = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return std::string("error: read: ") + std::strerror(err);
    }
    if (n == 0) break;
    sha.update(std::string_view(buffer.data(), static_cast<std::size_t>(n)));
    total += static_cast<std::uint64_t>(n);
  }
  ::close(fd);
  if (size != nullptr) *size = total;
  return sha.hex_digest();
}

// Deterministic bytes: byte `offset` of stream `seed` is the same whatever slice is asked for,
// so a prefix, a chunk or a whole file can be checked against the same generator.
inline std::string pattern_bytes(std::uint64_t seed, std::uint64_t offset, std::size_t size) {
  std::string out(size, '\0');
  std::uint64_t word_index = ~std::uint64_t{0};
  std::uint64_t word = 0;
  for (std::size_t i = 0; i < size; ++i) {
    const std::uint64_t at = offset + i;
    if ((at >> 3) != word_index) {
      word_index = at >> 3;
      std::uint64_t z = (seed * 0x9e3779b97f4a7c15ULL) ^ (word_index * 0xbf58476d1ce4e5b9ULL);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      word = z ^ (z >> 31);
    }
    out[i] = static_cast<char>(word >> (8 * (at & 7)));
  }
  return out;
}

// A tree, entry by entry: relative path -> "TYPE key=value ...". Modes are the permission
// bits; link counts are for regular files only (directory link counts differ between
// filesystems for reasons that are not ours to test). Symlinks are never followed.
using TreeSnapshot = std::map<std::string, std::string>;

struct SnapshotOptions {
  bool modes = true;
  bool link_counts = true;
};

inline void snapshot_into(const std::filesystem::path& root, const std::string& relative,
                          const SnapshotOptions& options, TreeSnapshot& out) {
  const std::filesystem::path dir = relative.empty() ? root : root / relative;
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec) {
    out[relative + "/"] = "error: list: " + ec.message();
    return;
  }
  std::vector<std::string> names;
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    names.push_back(it->path().filename().string());
  }
  if (ec) out[relative + "/"] = "error: list: " + ec.message();
  for (const std::string& name : names) {
    const std::string rel = relative.empty() ? name : relative + "/" + name;
    const std::filesystem::path path = root / rel;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
      out[rel] = std::string("error: lstat: ") + std::strerror(errno);
      continue;
    }
    char mode[16];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    std::string entry;
    if (S_ISREG(st.st_mode)) {
      std::uint64_t read_size = 0;
      const std::string sha = sha256_file(path, &read_size);
      entry = "file";
      if (options.modes) entry += std::string(" mode=") + mode;
      if (options.link_counts) entry += " nlink=" + std::to_string(st.st_nlink);
      entry += " size=" + std::to_string(st.st_size);
      if (read_size != static_cast<std::uint64_t>(st.st_size)) {
        entry += " read=" + std::to_string(read_size);
      }
      entry += " sha256=" + sha;
    } else if (S_ISDIR(st.st_mode)) {
      entry = "dir";
      if (options.modes) entry += std::string(" mode=") + mode;
      out[rel] = entry;
      snapshot_into(root, rel, options, out);
      continue;
    } else if (S_ISLNK(st.st_mode)) {
      std::string target(4096, '\0');
      const ssize_t n = ::readlink(path.c_str(), target.data(), target.size());
      entry = n < 0 ? std::string("link error: ") + std::strerror(errno)
                    : "link -> " + target.substr(0, static_cast<std::size_t>(n));
    } else {
      entry = "other type=" + std::to_string(st.st_mode & S_IFMT);
    }
    out[rel] = entry;
  }
}

inline TreeSnapshot snapshot_tree(const std::filesystem::path& root, const SnapshotOptions& options = {}) {
  TreeSnapshot out;
  snapshot_into(root, "", options, out);
  return out;
}

// What differs, one line per path ("" when nothing does), at most `limit` lines.
inline std::string snapshot_diff(const TreeSnapshot& expected, const TreeSnapshot& actual,
                                 std::size_t limit = 40) {
  std::string out;
  std::size_t lines = 0;
  const auto note = [&](const std::string& line) {
    if (lines++ < limit) out += line + "\n";
  };
  for (const auto& [path, entry] : expected) {
    const auto it = actual.find(path);
    if (it == actual.end()) {
      note("  missing   " + path + ": " + entry);
    } else if (it->second != entry) {
      note("  differs   " + path + ": expected " + entry + ", got " + it->second);
    }
  }
  for (const auto& [path, entry] : actual) {
    if (!expected.contains(path)) note("  unexpected " + path + ": " + entry);
  }
  if (lines > limit) out += "  ... and " + std::to_string(lines - limit) + " more\n";
  return out;
}

}  // namespace heddle::test
