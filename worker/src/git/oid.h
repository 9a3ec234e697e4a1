// A git object id as a hashable value (git_oid is a C struct with no std::hash).
#pragma once

#include <git2/oid.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace heddle::worker::git {

struct OidKey {
  std::array<unsigned char, GIT_OID_RAWSZ> bytes{};

  OidKey() = default;
  explicit OidKey(const git_oid& oid) { std::memcpy(bytes.data(), oid.id, bytes.size()); }

  [[nodiscard]] git_oid oid() const {
    git_oid out{};
    std::memcpy(out.id, bytes.data(), bytes.size());
    return out;
  }
  friend bool operator==(const OidKey&, const OidKey&) = default;
};

struct OidKeyHash {
  // Object ids are already uniformly distributed: their first bytes are a fine hash.
  std::size_t operator()(const OidKey& key) const noexcept {
    std::uint64_t h = 0;
    std::memcpy(&h, key.bytes.data(), sizeof h);
    return static_cast<std::size_t>(h);
  }
};

[[nodiscard]] inline std::string to_hex(const git_oid& oid) {
  char buf[GIT_OID_HEXSZ + 1] = {};
  git_oid_tostr(buf, sizeof buf, &oid);
  return buf;
}

}  // namespace heddle::worker::git
