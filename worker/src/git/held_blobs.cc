#include "git/held_blobs.h"

#include <cerrno>
#include <utility>

namespace heddle::worker::git {
namespace {

// What a held blob's shared_ptr owns: the bytes and their charge, released together.
struct Held {
  Blob blob;
  Budget::Lease lease;
};

}  // namespace

int HeldBlobs::hold(const OidKey& key, std::uint64_t size, const std::function<int(Blob&)>& load,
                    Blob& out) {
  {
    const std::lock_guard lock(mutex_);
    if (const auto it = live_.find(key); it != live_.end()) {
      if ((out = it->second.lock())) return 0;
    }
  }
  // Charged before loading: a blob over the budget is never read at all.
  Budget::Lease lease = budget_.take(size);
  if (!lease) return ENOMEM;
  Blob blob;
  if (const int err = load(blob); err != 0) return err;
  auto held = std::make_shared<Held>(Held{std::move(blob), std::move(lease)});
  out = Blob(held, held->blob.get());  // aliasing: the bytes keep their charge alive

  const std::lock_guard lock(mutex_);
  auto& slot = live_[key];
  if (const Blob other = slot.lock()) {
    out = other;  // another open loaded it meanwhile: share that copy, drop ours
    return 0;
  }
  slot = out;
  if (++since_sweep_ >= 1024) {  // forget expired entries now and then
    since_sweep_ = 0;
    std::erase_if(live_, [](const auto& entry) { return entry.second.expired(); });
  }
  return 0;
}

}  // namespace heddle::worker::git
