#include "git/warn_once.h"

#include <spdlog/spdlog.h>

namespace heddle::worker::git {

void WarnOnce::warn(const OidKey& key, const std::string& message) noexcept {
  try {
    {
      const std::lock_guard lock(mutex_);
      if (saturated_) return;
      if (seen_.size() >= kMaxRemembered) {
        saturated_ = true;
        spdlog::warn("git: too many damaged objects; no further object warnings are logged");
        return;
      }
      if (!seen_.insert(key).second) return;
    }
    spdlog::warn("git: {}", message);
  } catch (...) {
    // Logging must not turn an EIO into a crash.
  }
}

}  // namespace heddle::worker::git
