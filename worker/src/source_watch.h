// Watches the directories of a directory source that the kernel holds (inotify), so that the
// kernel may keep their names and attributes long (DirFs::cache_policy), and tells the kernel
// what changed in them, from a thread of its own. Watching stops for good (the caller goes back
// to short timeouts) when a watch cannot be added (the user's watch limit, a directory the
// worker may not read, no /proc), and on a filesystem whose changes made elsewhere inotify does
// not see (network and FUSE filesystems). When events were lost (the queue overflowed), the
// kernel is told to drop everything it caches of the mount.
#pragma once

#include <sys/inotify.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend.h"
#include "heddle/unique_fd.h"

namespace heddle::worker {

class SourceWatch {
 public:
  // The node the kernel holds for `name` in directory `dir` (found as it is now), or 0.
  using ChildNode = std::function<NodeId(NodeId dir, const std::string& name)>;
  // Everything the kernel may cache: each node's entry (parent and name) and the node itself.
  using Everything = std::function<std::vector<KernelNote>()>;

  // Starts the thread. Throws heddle::Error when inotify cannot be used at all.
  SourceWatch(KernelCache& cache, ChildNode child_node, Everything everything);
  SourceWatch(const SourceWatch&) = delete;
  SourceWatch& operator=(const SourceWatch&) = delete;
  ~SourceWatch();

  // Until watching stops: every directory the kernel holds is watched.
  [[nodiscard]] bool active() const noexcept { return active_.load(); }

  enum class Watched { kNo, kAlready, kNow };
  // Watches directory `node`, open as `fd` (O_PATH will do), before the kernel hears of it.
  // kNow: added just now (what was read of it before may predate the watch); kNo: watching
  // has stopped (or stops now: see the class comment).
  [[nodiscard]] Watched watch(NodeId node, int fd);
  // The kernel forgot `node` (any node; only directories are watched).
  void unwatch(NodeId node) noexcept;

  void add_status(nlohmann::ordered_json& extra) const;

 private:
  // A kernel notification to send.
  struct Note {
    KernelNote what;
    int tries = 0;
    std::chrono::steady_clock::time_point due{};
  };

  // With mutex_ held. `code`: what Status shows (off_...), `why` what the log says.
  void stop_watching(const char* code, const std::string& why);
  void run();
  void read_events(std::vector<Note>& notes);
  void send(std::vector<Note>& notes);

  KernelCache& cache_;
  const ChildNode child_node_;
  const Everything everything_;
  UniqueFd inotify_;
  UniqueFd stop_read_, stop_write_;
  std::atomic<bool> active_{true};
  mutable std::mutex mutex_;
  const char* stopped_code_ = "";
  std::unordered_map<int, NodeId> by_wd_;
  std::unordered_map<NodeId, int> by_node_;
  std::vector<Note> retries_;  // the thread's own
  std::atomic<std::uint64_t> notes_sent_{0};
  std::atomic<std::uint64_t> overflows_{0};
  std::thread thread_;
};

}  // namespace heddle::worker
