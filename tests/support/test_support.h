// Shared test helpers: scratch trees, /proc probes and bounded waits. Header-only.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "heddle/launcher/mountinfo.h"
#include "support/fd_pairs.h"

namespace heddle::test {

namespace fs = std::filesystem;

// A mkdtemp directory holding `source/` and `mnt/`, reachable by the worker's uid 65534.
class ScratchTree {
 public:
  ScratchTree() {
    std::string pattern = "/tmp/heddle-test-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    root_ = pattern;
    fs::permissions(root_, fs::perms(0755));
    fs::create_directory(source());
    fs::create_directory(mountpoint());
    fs::permissions(source(), fs::perms(0755));
  }
  ScratchTree(const ScratchTree&) = delete;
  ScratchTree& operator=(const ScratchTree&) = delete;
  ~ScratchTree() {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  [[nodiscard]] fs::path root() const { return root_; }
  [[nodiscard]] fs::path source() const { return root_ / "source"; }
  [[nodiscard]] fs::path mountpoint() const { return root_ / "mnt"; }

  void write(const std::string& relative, const std::string& content, unsigned mode = 0644) const {
    const fs::path path = source() / relative;
    fs::create_directories(path.parent_path());
    for (fs::path dir = path.parent_path(); dir != source(); dir = dir.parent_path()) {
      fs::permissions(dir, fs::perms(0755));
    }
    std::ofstream(path, std::ios::binary) << content;
    fs::permissions(path, fs::perms(mode));
  }

 private:
  fs::path root_;
};

inline std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Is there a FUSE mount of ours on top of `mountpoint`? (Reads mountinfo only.)
inline bool heddle_mounted(const fs::path& mountpoint) {
  const auto top = launcher::top_mount_at(mountpoint.string());
  return top && top->fstype == launcher::kFuseType;
}

// Polls `condition` every 10 ms until it holds or `timeout` passes.
inline bool eventually(const std::function<bool()>& condition,
                       std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return condition();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

// Live (or zombie) children of this process, from /proc/*/stat.
inline int child_count() {
  const pid_t self = ::getpid();
  int count = 0;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    std::getline(in, stat);
    const auto close_paren = stat.rfind(')');
    if (close_paren == std::string::npos) continue;
    std::istringstream rest(stat.substr(close_paren + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == self) ++count;
  }
  return count;
}

// A /proc/PID/status field, trimmed ("" if absent).
inline std::string proc_status_field(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ":", 0) == 0) {
      std::string value = line.substr(key.size() + 1);
      value.erase(0, value.find_first_not_of(" \t"));
      return value;
    }
  }
  return "";
}

inline std::string bin_path(const std::string& name) { return std::string(HEDDLE_BIN_DIR) + "/" + name; }

inline bool running_as_root_with_fuse() { return ::geteuid() == 0 && ::access("/dev/fuse", F_OK) == 0; }

// Skips (saying why) when the host lacks what the test needs; under CI the core suite must
// run, so there it fails instead.
#define HEDDLE_REQUIRE_ROOT_AND_FUSE()                                                        \
  do {                                                                                        \
    if (!::heddle::test::running_as_root_with_fuse()) {                                       \
      if (std::getenv("CI") != nullptr) FAIL() << "CI must run this as root with /dev/fuse";  \
      GTEST_SKIP() << "needs root and /dev/fuse: this host has euid " << ::geteuid()          \
                   << (::access("/dev/fuse", F_OK) == 0 ? "" : " and no /dev/fuse");          \
    }                                                                                         \
  } while (0)

}  // namespace heddle::test
