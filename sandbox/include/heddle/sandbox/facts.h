// What /proc says about a process's confinement, as a test or a person would check it.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>

namespace heddle::sandbox {

struct SandboxFacts {
  std::map<std::string, std::string> status;      // selected /proc/PID/status fields
  std::map<std::string, bool> namespace_differs;  // "user", "mnt", ... vs the caller's
  std::string uid_map;
  std::string gid_map;

  // True when every property the sandbox promises holds (see ARCHITECTURE.md).
  [[nodiscard]] bool confined() const;
  // Human-readable, one fact a line.
  [[nodiscard]] std::string describe() const;
};

// Throws heddle::Error if /proc/PID cannot be read.
[[nodiscard]] SandboxFacts read_facts(pid_t pid);

}  // namespace heddle::sandbox
