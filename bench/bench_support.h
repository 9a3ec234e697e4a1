// What both benchmark programs need: argument checks, clean interruption, mount probes.
#pragma once

#include <csignal>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

#include "heddle/error.h"
#include "heddle/launcher/mountinfo.h"

namespace heddle::bench {

inline int parse_positive(const char* flag, const char* value) {
  char* end = nullptr;
  errno = 0;
  const long parsed = std::strtol(value, &end, 10);
  if (errno != 0 || end == value || *end != '\0' || parsed <= 0 || parsed > 100'000'000) {
    throw Error(std::string(flag) + ": expected a positive integer, got '" + value + "'", EINVAL);
  }
  return static_cast<int>(parsed);
}

// SIGINT/SIGTERM/SIGHUP only set a flag, so that the loops throw and every RAII guard
// (supervisors, mounts, scratch directories, child processes) is unwound normally. SIGPIPE is
// ignored: a dead helper process must become an EPIPE we unwind from, not a kill.
inline volatile std::sig_atomic_t g_interrupted = 0;

inline void on_signal(int) { g_interrupted = 1; }

inline void install_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = &on_signal;
  sigemptyset(&action.sa_mask);
  for (const int signo : {SIGINT, SIGTERM, SIGHUP}) {
    if (::sigaction(signo, &action, nullptr) != 0) throw_errno("sigaction");
  }
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  if (::sigaction(SIGPIPE, &ignore, nullptr) != 0) throw_errno("sigaction SIGPIPE");
}

inline void check_interrupted() {
  if (g_interrupted != 0) throw Error("interrupted by a signal", EINTR);
}

// The mount points currently listed in /proc/self/mountinfo.
inline std::vector<std::string> mount_points() {
  std::vector<std::string> out;
  for (const auto& entry : launcher::read_mountinfo()) out.push_back(entry.mount_point);
  return out;
}

inline bool is_mounted(const std::string& path) {
  const auto points = mount_points();
  return std::find(points.begin(), points.end(), path) != points.end();
}

}  // namespace heddle::bench
