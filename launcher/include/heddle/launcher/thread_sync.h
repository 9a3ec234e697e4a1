// A thread mount kept in step with its ref (issue 15): `capture` records the mount as a commit
// and moves the ref; the follower watches the ref and retargets the worker when it moves.
// Both run under one lock, so a capture never triggers a follow of its own commit.
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "heddle/ipc/message.h"
#include "heddle/launcher/supervisor.h"
#include "heddle/unique_fd.h"

namespace heddle::launcher {

class ThreadSync {
 public:
  // For a git mount: finds the ref the thread names (refs/heads/T, else refs/heddle/threads/T)
  // and the commit the worker serves, and unless `pin`, starts following the ref.
  ThreadSync(Supervisor& supervisor, bool pin);
  ThreadSync(const ThreadSync&) = delete;
  ThreadSync& operator=(const ThreadSync&) = delete;
  ~ThreadSync();

  // Freeze, build and write the commit, move the ref (compare-and-swap), Retarget with the
  // overlay dropped; Thaw on any failure before the ref moved. Captured or MountError.
  [[nodiscard]] ipc::Message capture(const ipc::Capture& request);
  // "ref", "follow", and "conflicts" of the last follow when the worker does not say.
  void add_status(nlohmann::ordered_json& extra);

  // How long after the first change of a burst the ref is read again.
  static constexpr std::chrono::milliseconds kDebounce{100};

 private:
  void watch();
  void add_watches();
  void follow_once();
  void thaw();

  Supervisor& supervisor_;
  std::string repo_root_;
  std::optional<std::string> ref_;  // nullopt: a revision is served, nothing to follow or move
  std::string common_dir_;
  std::string follow_;  // "follows", "pinned", or why not

  std::mutex mutex_;  // one capture or retarget at a time, and what they change below
  std::string served_;
  std::vector<std::string> conflicts_;
  std::string failed_target_;  // the commit a Retarget last failed for: not retried

  UniqueFd inotify_;
  UniqueFd stop_;  // eventfd
  std::thread watcher_;
};

}  // namespace heddle::launcher
