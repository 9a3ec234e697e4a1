// Content checks for the overlay's durability tests: SHA-256, deterministic test bytes, and a
// snapshot of a whole tree (every entry's type, permission bits, link count, size, content
// hash and symlink target) that can be compared and diffed. Header-only.
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

namespace heddle::test {

// FIPS 180-4 SHA-256, streaming.
class Sha256 {
 public:
  Sha256() = default;
  void update(const void* data, std::size_t size) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    length_ += size;
    while (size > 0) {
      const std::size_t take = std::min(size, sizeof block_ - used_);
      std::memcpy(block_ + used_, bytes, take);
      used_ += take;
      bytes += take;
      size -= take;
      if (used_ == sizeof block_) {
        compress();
        used_ = 0;
      }
    }
  }
  void update(std::string_view text) { update(text.data(), text.size()); }
  std::string hex() {
    const std::uint64_t bits = length_ * 8;
    const unsigned char pad = 0x80;
    update(&pad, 1);
    const unsigned char zero = 0;
    while (used_ != 56) update(&zero, 1);
    unsigned char be[8];
    for (int i = 0; i < 8; ++i) be[i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
    update(be, 8);
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    for (const std::uint32_t word : state_) {
      for (int shift = 28; shift >= 0; shift -= 4) out.push_back(kDigits[(word >> shift) & 15]);
    }
    return out;
  }

 private:
  static std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void compress() {
    static constexpr std::array<std::uint32_t, 64> k = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2};
    std::uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      w[i] = (std::uint32_t{block_[4 * i]} << 24) | (std::uint32_t{block_[4 * i + 1]} << 16) |
             (std::uint32_t{block_[4 * i + 2]} << 8) | std::uint32_t{block_[4 * i + 3]};
    }
    for (int i = 16; i < 64; ++i) {
      const std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::uint32_t a = state_[0], b = state_[1], c = state_[2], d = state_[3];
    std::uint32_t e = state_[4], f = state_[5], g = state_[6], h = state_[7];
    for (int i = 0; i < 64; ++i) {
      const std::uint32_t t1 =
          h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    state_[0] += a;
    state_[1] += b;
    state_[2] += c;
    state_[3] += d;
    state_[4] += e;
    state_[5] += f;
    state_[6] += g;
    state_[7] += h;
  }

  std::array<std::uint32_t, 8> state_ = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  unsigned char block_[64] = {};
  std::size_t used_ = 0;
  std::uint64_t length_ = 0;
};

inline std::string sha256_hex(std::string_view data) {
  Sha256 sha;
  sha.update(data);
  return sha.hex();
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
    sha.update(buffer.data(), static_cast<std::size_t>(n));
    total += static_cast<std::uint64_t>(n);
  }
  ::close(fd);
  if (size != nullptr) *size = total;
  return sha.hex();
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
