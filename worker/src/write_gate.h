// Holds back modifying requests while a capture reads the overlay (Freeze .. Thaw/Retarget).
// FUSE request threads pass through enter()/leave() around every modifying operation; the IPC
// thread closes the gate and waits for those already inside to finish, so that every write the
// kernel has acknowledged is in the overlay before it is synced and captured. Requests that
// arrive while the gate is closed wait; they do not fail. Reads never pass through the gate.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace heddle::worker {

class WriteGate {
 public:
  // A modifying request, for its whole duration; with no gate (null), nothing.
  class Pass {
   public:
    explicit Pass(WriteGate* gate) : gate_(gate) {
      if (gate_ != nullptr) gate_->enter();
    }
    Pass(const Pass&) = delete;
    Pass& operator=(const Pass&) = delete;
    ~Pass() {
      if (gate_ != nullptr) gate_->leave();
    }

   private:
    WriteGate* gate_;
  };

  // Closes the gate (if open) and returns once no modifying request is inside.
  void close();
  // Opens the gate; waiting requests go on.
  void open();
  [[nodiscard]] bool closed() const;
  // Requests that waited at the closed gate, since the start (Status).
  [[nodiscard]] std::uint64_t waited() const;

 private:
  void enter();
  void leave();

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool closed_ = false;
  std::uint64_t inside_ = 0;
  std::uint64_t waited_ = 0;
};

}  // namespace heddle::worker
