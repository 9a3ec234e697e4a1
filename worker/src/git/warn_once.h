// A damaged or missing object is logged once, not on every access to it.
#pragma once

#include <cstddef>
#include <mutex>
#include <string>
#include <unordered_set>

#include "git/oid.h"

namespace heddle::worker::git {

class WarnOnce {
 public:
  // Logs `message` as a warning the first time it is called for `key`.
  void warn(const OidKey& key, const std::string& message) noexcept;

 private:
  static constexpr std::size_t kMaxRemembered = 4096;  // then one last note, and silence

  std::mutex mutex_;
  std::unordered_set<OidKey, OidKeyHash> seen_;
  bool saturated_ = false;
};

}  // namespace heddle::worker::git
