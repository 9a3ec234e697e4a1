// SHA-256 (FIPS 180-4), for checking that a Git LFS object is the one its pointer names. Small
// and streaming; no dependency beyond the standard library.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace heddle::worker::git {

class Sha256 {
 public:
  Sha256() noexcept;
  void update(std::string_view data) noexcept;
  // Lowercase hex of the digest; the object is spent afterwards.
  [[nodiscard]] std::string hex_digest() noexcept;

 private:
  void block(const unsigned char* p) noexcept;

  std::array<std::uint32_t, 8> h_;
  std::array<unsigned char, 64> buffer_{};
  std::size_t used_ = 0;
  std::uint64_t length_ = 0;  // bytes
};

}  // namespace heddle::worker::git
