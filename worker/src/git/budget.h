// A count with a ceiling, taken in RAII leases: what bounds the memory that open files hold
// (bytes of blobs kept whole, streams with their buffers), which the blob cache's own cap does
// not cover (an open file keeps its blob after the cache evicts it).
#pragma once

#include <atomic>
#include <cstdint>
#include <utility>

namespace heddle::worker::git {

class Budget {
 public:
  class Lease {
   public:
    Lease() = default;
    Lease(Budget* budget, std::uint64_t amount) noexcept : budget_(budget), amount_(amount) {}
    Lease(Lease&& other) noexcept
        : budget_(std::exchange(other.budget_, nullptr)), amount_(other.amount_) {}
    Lease& operator=(Lease&& other) noexcept {
      if (this != &other) {
        release();
        budget_ = std::exchange(other.budget_, nullptr);
        amount_ = other.amount_;
      }
      return *this;
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { release(); }
    [[nodiscard]] explicit operator bool() const noexcept { return budget_ != nullptr; }

   private:
    void release() noexcept {
      if (budget_ != nullptr) budget_->used_.fetch_sub(amount_, std::memory_order_relaxed);
      budget_ = nullptr;
    }
    Budget* budget_ = nullptr;
    std::uint64_t amount_ = 0;
  };

  explicit Budget(std::uint64_t limit) noexcept : limit_(limit) {}
  Budget(const Budget&) = delete;
  Budget& operator=(const Budget&) = delete;

  // A lease of `amount`, or an empty one (false) when that would pass the limit.
  [[nodiscard]] Lease take(std::uint64_t amount) noexcept {
    std::uint64_t now = used_.load(std::memory_order_relaxed);
    do {
      if (amount > limit_ || now > limit_ - amount) {
        refusals_.fetch_add(1, std::memory_order_relaxed);
        return {};
      }
    } while (!used_.compare_exchange_weak(now, now + amount, std::memory_order_relaxed));
    return Lease(this, amount);
  }

  [[nodiscard]] std::uint64_t used() const noexcept { return used_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t limit() const noexcept { return limit_; }
  [[nodiscard]] std::uint64_t refusals() const noexcept {
    return refusals_.load(std::memory_order_relaxed);
  }

 private:
  const std::uint64_t limit_;
  std::atomic<std::uint64_t> used_{0};
  std::atomic<std::uint64_t> refusals_{0};
};

}  // namespace heddle::worker::git
