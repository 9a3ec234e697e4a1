#include "served_ino.h"

namespace heddle::worker {

ino_t ServedIno::of(dev_t dev, ino_t ino) {
  if (dev == source_dev_ && ino < kOtherDevice) return ino;  // the common case: no lock
  const std::lock_guard lock(mutex_);
  if (dev != source_dev_ && ino < (ino_t{1} << kInoBits)) {
    auto it = devices_.find(dev);
    if (it == devices_.end() && devices_.size() < (std::size_t{1} << kDeviceBits)) {
      it = devices_.emplace(dev, static_cast<ino_t>(devices_.size())).first;
    }
    if (it != devices_.end()) return kOtherDevice | (it->second << kInoBits) | ino;
  }
  const auto [it, added] = counted_.try_emplace(Key{dev, ino}, kCounted | next_counted_);
  if (added) ++next_counted_;
  return it->second;
}

std::size_t ServedIno::other_devices() const {
  const std::lock_guard lock(mutex_);
  return devices_.size();
}

}  // namespace heddle::worker
