#include "write_gate.h"

namespace heddle::worker {

void WriteGate::enter() {
  std::unique_lock lock(mutex_);
  if (closed_) {
    ++waited_;
    changed_.wait(lock, [this] { return !closed_; });
  }
  ++inside_;
}

void WriteGate::leave() {
  const std::lock_guard lock(mutex_);
  if (--inside_ == 0) changed_.notify_all();
}

void WriteGate::close() {
  std::unique_lock lock(mutex_);
  closed_ = true;
  changed_.wait(lock, [this] { return inside_ == 0; });
}

void WriteGate::open() {
  {
    const std::lock_guard lock(mutex_);
    closed_ = false;
  }
  changed_.notify_all();
}

bool WriteGate::closed() const {
  const std::lock_guard lock(mutex_);
  return closed_;
}

std::uint64_t WriteGate::waited() const {
  const std::lock_guard lock(mutex_);
  return waited_;
}

}  // namespace heddle::worker
