// Shared test helpers: scratch trees, /proc probes and bounded waits. Header-only.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "heddle/launcher/mountinfo.h"
#include "support/fd_pairs.h"
#include "support/read_file.h"

namespace heddle::test {

namespace fs = std::filesystem;

// A mkdtemp directory holding `source/` and `mnt/`, reachable by any worker uid.
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

// Has `pid` exited for good? Reaps it if it is our child: a test that is a child subreaper
// (PR_SET_CHILD_SUBREAPER) gets orphaned supervisors, workers and guards as children. Not for
// a child whose exit status someone else reaps (a ChildProcess's).
inline bool process_gone(pid_t pid) {
  if (pid <= 0) return true;
  ::waitpid(pid, nullptr, WNOHANG);
  return ::kill(pid, 0) != 0 && errno == ESRCH;
}

// Kills `pid` only while it is provably ours: our unreaped child (waitpid says "still
// running"), so the number cannot have been recycled.
inline void kill_if_our_child(pid_t pid) {
  if (pid > 0 && ::waitpid(pid, nullptr, WNOHANG) == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
}

// For TearDown: a mount a case left at one of `mountpoints` is a failure, and is detached.
inline void detach_leftover_mounts(const std::vector<fs::path>& mountpoints) {
  for (const fs::path& mountpoint : mountpoints) {
    if (heddle_mounted(mountpoint)) {
      ADD_FAILURE() << "test left a mount at " << mountpoint << "; cleaning up";
      ::umount2(mountpoint.c_str(), MNT_DETACH);
    }
  }
}

// For TearDown of a child subreaper: each of `pids` (a supervisor before its worker, which is
// ours once the supervisor is gone) that outlives its case by 5 s is a failure, and is killed
// while it is provably our child; then whatever else was reparented to us is reaped.
inline void end_leftover_processes(const std::vector<pid_t>& pids) {
  for (const pid_t pid : pids) {
    if (!eventually([&] { return process_gone(pid); }, std::chrono::seconds(5))) {
      ADD_FAILURE() << "process " << pid << " outlived its test; killing it";
      kill_if_our_child(pid);
      EXPECT_TRUE(eventually([&] { return process_gone(pid); }, std::chrono::seconds(5)))
          << "pid " << pid;
    }
  }
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {
  }
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

// The files PID has mapped (/proc/PID/maps' paths, once each, in order), or nullopt when we
// may not read them: a worker is not dumpable, so only root reads its maps.
inline std::optional<std::vector<std::string>> mapped_files(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/maps");
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  std::vector<std::string> files;
  do {
    const auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    std::string file = line.substr(slash);
    if (files.empty() || files.back() != file) files.push_back(std::move(file));
  } while (std::getline(in, line));
  return files;
}

// Our binaries: beside the test binary in the build tree, or where test_user.sh staged them.
inline std::string bin_path(const std::string& name) {
  const char* staged = std::getenv("HEDDLE_TEST_BIN_DIR");
  return std::string(staged != nullptr ? staged : HEDDLE_BIN_DIR) + "/" + name;
}

// Why this process cannot mount, or "" if it can: root needs /dev/fuse; anyone else also
// needs read-write access to it and the setuid fusermount3, as on a stock distribution.
inline std::string cannot_mount_reason() {
  if (::access("/dev/fuse", F_OK) != 0) return "this host has no /dev/fuse";
  if (::geteuid() == 0) return "";
  if (::access("/dev/fuse", R_OK | W_OK) != 0) return "/dev/fuse is not read-writable by us";
  struct stat st {};
  if (::stat("/usr/bin/fusermount3", &st) != 0 || (st.st_mode & S_ISUID) == 0) {
    return "there is no setuid /usr/bin/fusermount3";
  }
  return "";
}

inline bool running_as_root() { return ::geteuid() == 0; }

// The start of this user's range in /etc/subuid or /etc/subgid when newuidmap and
// newgidmap are installed (read here independently of the launcher), else nullopt.
inline std::optional<unsigned> subordinate_start(const char* file) {
  if (::access("/usr/bin/newuidmap", X_OK) != 0 || ::access("/usr/bin/newgidmap", X_OK) != 0) {
    return std::nullopt;
  }
  const passwd* pw = ::getpwuid(::getuid());
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string owner, start;
    std::getline(fields, owner, ':');
    std::getline(fields, start, ':');
    if (owner == std::to_string(::getuid()) || (pw != nullptr && owner == pw->pw_name)) {
      return static_cast<unsigned>(std::stoul(start));
    }
  }
  return std::nullopt;
}

// The ids a sandboxed worker serving a world-readable tree should get: nobody for root, a
// subordinate id where granted, else the caller's own.
inline uid_t expected_worker_uid() {
  if (running_as_root()) return 65534;
  return subordinate_start("/etc/subuid").value_or(::getuid());
}
inline gid_t expected_worker_gid() {
  if (running_as_root()) return 65534;
  return subordinate_start("/etc/subgid").value_or(::getgid());
}

// Skips (saying why) when the host lacks what the test needs; under CI the core suite must
// run, so there it fails instead.
#define HEDDLE_REQUIRE_MOUNT()                                                                \
  do {                                                                                        \
    if (const std::string why = ::heddle::test::cannot_mount_reason(); !why.empty()) {        \
      if (std::getenv("CI") != nullptr) FAIL() << "CI must be able to mount: " << why;        \
      GTEST_SKIP() << "cannot mount: " << why;                                                \
    }                                                                                         \
  } while (0)

// For the few cases that are about root itself (mounting for another user, say).
#define HEDDLE_REQUIRE_ROOT()                                                                 \
  do {                                                                                        \
    HEDDLE_REQUIRE_MOUNT();                                                                   \
    if (!::heddle::test::running_as_root()) GTEST_SKIP() << "this case is about root";        \
  } while (0)

}  // namespace heddle::test
