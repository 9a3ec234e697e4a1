#include "git/pack_index.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cstring>

#include "git/repo_file.h"
#include "heddle/unique_fd.h"

namespace heddle::worker::git {
namespace {

// Layout (gitformat-pack(5)): magic ff 74 4f 63, version 2, 256 big-endian fan-out counts,
// N sorted 20-byte names, N crc32s, N 4-byte offsets (MSB set: index into the 8-byte table),
// the 8-byte offsets, then the pack's and the index's checksums.
constexpr unsigned char kMagic[4] = {0xff, 0x74, 0x4f, 0x63};
constexpr std::size_t kHeader = 8;
constexpr std::size_t kFanout = 256 * 4;
constexpr std::size_t kTrailer = 2 * GIT_OID_RAWSZ;
// Mapped, not read: the cap only keeps out nonsense (2^31 objects take about 60 GiB).
constexpr std::uint64_t kMaxIndexBytes = 64ull << 30;

std::uint32_t be32(const unsigned char* p) noexcept {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

std::uint64_t be64(const unsigned char* p) noexcept {
  return (std::uint64_t{be32(p)} << 32) | be32(p + 4);
}

}  // namespace

std::unique_ptr<PackIndex> PackIndex::open(const std::string& idx_path) {
  const RepoFile file = open_repo_file(idx_path, kMaxIndexBytes);
  if (!file.fd) return nullptr;
  const UniqueFd& fd = file.fd;
  const auto size = static_cast<std::size_t>(file.size);
  if (size < kHeader + kFanout + kTrailer) return nullptr;
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (map == MAP_FAILED) return nullptr;
  const auto* bytes = static_cast<const unsigned char*>(map);
  const auto reject = [&]() -> std::unique_ptr<PackIndex> {
    ::munmap(map, size);
    return nullptr;
  };
  if (std::memcmp(bytes, kMagic, sizeof kMagic) != 0 || be32(bytes + 4) != 2) return reject();
  const std::uint32_t count = be32(bytes + kHeader + 255 * 4);
  const std::size_t fixed = kHeader + kFanout + std::size_t{count} * (GIT_OID_RAWSZ + 4 + 4);
  if (size < fixed + kTrailer || (size - fixed - kTrailer) % 8 != 0) return reject();
  for (int i = 1; i < 256; ++i) {  // the fan-out must not decrease
    if (be32(bytes + kHeader + 4 * i) < be32(bytes + kHeader + 4 * (i - 1))) return reject();
  }

  std::string pack = idx_path;
  pack.replace(pack.size() - 4, 4, ".pack");  // callers pass "*.idx"
  try {
    return std::unique_ptr<PackIndex>(new PackIndex(bytes, size, count, std::move(pack)));
  } catch (...) {
    ::munmap(map, size);
    throw;
  }
}

PackIndex::~PackIndex() { ::munmap(const_cast<unsigned char*>(map_), size_); }

std::optional<std::uint64_t> PackIndex::find(const git_oid& oid) const noexcept {
  const unsigned char* fanout = map_ + kHeader;
  const unsigned first = oid.id[0];
  std::uint32_t lo = first == 0 ? 0 : be32(fanout + 4 * (first - 1));
  std::uint32_t hi = be32(fanout + 4 * first);
  const unsigned char* names = fanout + kFanout;
  while (lo < hi) {
    const std::uint32_t mid = lo + (hi - lo) / 2;
    const int cmp = std::memcmp(names + std::size_t{mid} * GIT_OID_RAWSZ, oid.id, GIT_OID_RAWSZ);
    if (cmp == 0) {
      const unsigned char* offsets = names + std::size_t{count_} * (GIT_OID_RAWSZ + 4);
      const std::uint32_t small = be32(offsets + std::size_t{mid} * 4);
      if ((small & 0x80000000u) == 0) return small;
      const unsigned char* large = offsets + std::size_t{count_} * 4;
      const std::size_t index = small & 0x7fffffffu;
      if (large + (index + 1) * 8 > map_ + size_ - kTrailer) return std::nullopt;  // damaged
      return be64(large + index * 8);
    }
    if (cmp < 0) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return std::nullopt;
}

}  // namespace heddle::worker::git
