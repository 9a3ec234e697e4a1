// HEDDLE_FUSE_LOG, understood the same way by the launcher and the worker (it is passed on).
// Each binary's main reads the variable and hands its value here.
#pragma once

#include <spdlog/cfg/helpers.h>
#include <spdlog/spdlog.h>

#include <string>

namespace heddle {

inline constexpr const char* kLogEnv = "HEDDLE_FUSE_LOG";

// Sets the levels of the registered loggers from `spec`, HEDDLE_FUSE_LOG's value in spdlog's
// syntax: "debug", or per logger, "warn,heddle-fuse-worker=debug". Empty: info. A plain word
// that is no level is warned about and ignored.
inline void apply_log_levels(const std::string& spec) {
  spdlog::set_level(spdlog::level::info);
  if (spec.empty()) return;
  spdlog::cfg::helpers::load_levels(spec);
  const bool plain = spec.find_first_of(",=") == std::string::npos;
  if (plain && spdlog::level::from_str(spec) == spdlog::level::off && spec != "off") {
    spdlog::warn("{}='{}' is not a log level (trace, debug, info, warn, error, critical, off); "
                 "using info",
                 kLogEnv, spec);
  }
}

}  // namespace heddle
