// The inode numbers the directory backend shows. The mount has a single st_dev, so a source
// spanning several filesystems (a tmpfs mounted inside it, btrfs subvolumes) would show two
// different files with one st_ino, and tar or cp -a would store the second as a hard link to
// the first. We do cross into submounts (their files are served), and give every distinct
// (st_dev, st_ino) its own number, stable for the mount's life:
//
//   bit 62 clear              a file on the source's own filesystem: its st_ino, unchanged
//   bits 62 = 1, 61 = 0       another filesystem: (device index << 40) | st_ino, where the
//                             device index counts the filesystems met, in order
//   bits 62 = 1, 61 = 1       anything that fits neither (an st_ino >= 2^40 on another
//                             filesystem, >= 2^62 on the source's, or more than 2^21 devices):
//                             a counter, remembered per (st_dev, st_ino)
//
// Bit 63 stays clear: the overlay uses it for its upper layer.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <unordered_map>

namespace heddle::worker {

class ServedIno {
 public:
  static constexpr unsigned kInoBits = 40;     // st_ino kept as is on other filesystems
  static constexpr unsigned kDeviceBits = 21;  // filesystems numbered per mount
  static constexpr ino_t kOtherDevice = ino_t{1} << 62;
  static constexpr ino_t kCounted = kOtherDevice | (ino_t{1} << 61);

  explicit ServedIno(dev_t source_dev) : source_dev_(source_dev) {}

  // The number to show for the file (dev, ino). Thread-safe.
  [[nodiscard]] ino_t of(dev_t dev, ino_t ino);

  // Filesystems other than the source's met so far (for Status).
  [[nodiscard]] std::size_t other_devices() const;

 private:
  struct Key {
    dev_t dev;
    ino_t ino;
    friend bool operator==(const Key&, const Key&) = default;
  };
  struct KeyHash {
    std::size_t operator()(const Key& k) const noexcept {
      return static_cast<std::size_t>(k.ino * 0x9E3779B97F4A7C15ULL ^ k.dev);
    }
  };

  const dev_t source_dev_;
  mutable std::mutex mutex_;
  std::unordered_map<dev_t, ino_t> devices_;           // dev -> index (from 0)
  std::unordered_map<Key, ino_t, KeyHash> counted_;    // never shrinks: numbers stay stable
  ino_t next_counted_ = 0;
};

}  // namespace heddle::worker
