// HEDDLE_FUSE_LOG, read the same way by the launcher and the worker (it is passed on).
#pragma once

#include <spdlog/cfg/helpers.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <string_view>

namespace heddle {

inline constexpr const char* kLogEnv = "HEDDLE_FUSE_LOG";

// Sets the levels of the registered loggers from HEDDLE_FUSE_LOG in spdlog's syntax: "debug",
// or per logger, "warn,heddle-fuse-worker=debug". Unset: info. A plain word that is no level
// is warned about and ignored.
inline void apply_log_levels_from_env() {
  spdlog::set_level(spdlog::level::info);
  const char* spec = std::getenv(kLogEnv);
  if (spec == nullptr || *spec == '\0') return;
  spdlog::cfg::helpers::load_levels(spec);
  const std::string_view text(spec);
  const bool plain = text.find_first_of(",=") == std::string_view::npos;
  if (plain && spdlog::level::from_str(spec) == spdlog::level::off && text != "off") {
    spdlog::warn("{}='{}' is not a log level (trace, debug, info, warn, error, critical, off); "
                 "using info",
                 kLogEnv, spec);
  }
}

}  // namespace heddle
