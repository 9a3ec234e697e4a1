#include "source_watch.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <tuple>
#include <utility>

#include <spdlog/spdlog.h>

#include "heddle/error.h"

namespace heddle::worker {
namespace {

using Clock = std::chrono::steady_clock;

// Names coming and going, and the content, attributes and moves of the directory and its
// entries. IN_EXCL_UNLINK: nothing about an entry once it is unlinked.
constexpr std::uint32_t kMask = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_MODIFY |
                                IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR |
                                IN_EXCL_UNLINK;

// A node the kernel had no inode for may be on its way there (the reply to its first lookup
// is being read while the change is): told again after these delays.
constexpr std::chrono::milliseconds kRetryDelays[] = {std::chrono::milliseconds(10),
                                                      std::chrono::milliseconds(100),
                                                      std::chrono::milliseconds(1000)};

// Filesystems where a change made by another machine, or behind a FUSE server, reaches no
// inotify watch here (statfs f_type; <linux/magic.h> of Debian 12 lacks some).
const char* unwatched_filesystem(long type) {
  switch (static_cast<unsigned long>(type) & 0xffffffffUL) {
    case 0x6969UL: return "NFS";
    case 0x517bUL: return "SMB";
    case 0xff534d42UL: return "CIFS";
    case 0xfe534d42UL: return "SMB2";
    case 0x65735546UL: return "a FUSE filesystem";
    case 0x00c36400UL: return "CephFS";
    case 0x01021997UL: return "9P";
    case 0x5346414fUL:
    case 0x6b414653UL: return "AFS";
    case 0x73757245UL: return "Coda";
    case 0x01161970UL: return "GFS2";
    case 0x7461636fUL: return "OCFS2";
    case 0x0bd00bd0UL: return "Lustre";
    default: return nullptr;
  }
}

// Why a watch could not be added: the word Status shows, and the log's sentence.
std::pair<const char*, std::string> why_unwatchable(int err) {
  switch (err) {
    case ENOSPC:
      return {"off_watch_limit",
              "the user's inotify watch limit is reached (sysctl fs.inotify.max_user_watches)"};
    case EACCES:
      return {"off_unreadable_dir", "a directory the worker's identity may not read (opened "
                                    "through the file broker) cannot be watched"};
    case ENOENT:
      return {"off_no_proc", "no /proc in the worker's sandbox to name a directory by its fd"};
    default:
      return {"off_error", std::string("inotify_add_watch: ") + std::strerror(err)};
  }
}

}  // namespace

SourceWatch::SourceWatch(KernelCache& cache, ChildNode child_node, Everything everything)
    : cache_(cache), child_node_(std::move(child_node)), everything_(std::move(everything)) {
  inotify_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!inotify_) throw_errno("inotify_init1");
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) throw_errno("pipe2");
  stop_read_.reset(pipe_fds[0]);
  stop_write_.reset(pipe_fds[1]);
  thread_ = std::thread([this] { run(); });
}

SourceWatch::~SourceWatch() {
  const char stop = 1;
  if (::write(stop_write_.get(), &stop, 1) != 1) spdlog::error("cannot stop the source watch");
  thread_.join();
}

SourceWatch::Watched SourceWatch::watch(NodeId node, int fd) {
  const std::lock_guard lock(mutex_);
  if (!active_) return Watched::kNo;
  if (by_node_.contains(node)) return Watched::kAlready;
  struct statfs fs {};
  if (::fstatfs(fd, &fs) != 0) {
    stop_watching("off_error", std::string("fstatfs: ") + std::strerror(errno));
    return Watched::kNo;
  }
  if (const char* kind = unwatched_filesystem(fs.f_type)) {
    stop_watching("off_remote_fs", std::string("the source has directories on ") + kind +
                  ", whose changes made elsewhere inotify does not report");
    return Watched::kNo;
  }
  // inotify takes a path: the fd's own, which names the very directory found.
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  const int wd = ::inotify_add_watch(inotify_.get(), path.c_str(), kMask);
  if (wd < 0) {
    const auto [code, why] = why_unwatchable(errno);
    stop_watching(code, why);
    return Watched::kNo;
  }
  // The same directory under a node the kernel is forgetting: the watch is the new node's.
  if (const auto it = by_wd_.find(wd); it != by_wd_.end()) by_node_.erase(it->second);
  by_wd_[wd] = node;
  by_node_[node] = wd;
  return Watched::kNow;
}

void SourceWatch::unwatch(NodeId node) noexcept {
  const std::lock_guard lock(mutex_);
  const auto it = by_node_.find(node);
  if (it == by_node_.end()) return;
  const int wd = it->second;
  by_node_.erase(it);
  by_wd_.erase(wd);
  static_cast<void>(::inotify_rm_watch(inotify_.get(), wd));
}

void SourceWatch::add_status(nlohmann::ordered_json& extra) const {
  const std::lock_guard lock(mutex_);
  extra["source_watch"] = active_ ? "inotify" : stopped_code_;
  extra["watched_dirs"] = by_node_.size();
  extra["watch_notifications"] = notes_sent_.load();
  extra["watch_overflows"] = overflows_.load();
}

void SourceWatch::stop_watching(const char* code, const std::string& why) {
  if (!active_) return;
  active_ = false;
  stopped_code_ = code;
  // The watches made so far stay: what the kernel was told to keep long is still looked after.
  spdlog::warn("source watch off: {}; names and attributes are cached for 1 s from now on", why);
}

void SourceWatch::run() {
  for (;;) {
    int timeout = -1;
    if (!retries_.empty()) {
      const auto earlier = [](const Note& a, const Note& b) { return a.due < b.due; };
      const auto first = std::min_element(retries_.begin(), retries_.end(), earlier);
      const auto wait =
          std::chrono::duration_cast<std::chrono::milliseconds>(first->due - Clock::now());
      timeout = static_cast<int>(std::max<long long>(0, wait.count()));
    }
    pollfd fds[2] = {{inotify_.get(), POLLIN, 0}, {stop_read_.get(), POLLIN, 0}};
    if (::poll(fds, 2, timeout) < 0 && errno != EINTR) {
      const std::lock_guard lock(mutex_);
      stop_watching("off_error", std::string("poll: ") + std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    std::vector<Note> notes;
    if ((fds[0].revents & POLLIN) != 0) read_events(notes);
    const auto now = Clock::now();
    const auto due = std::partition(retries_.begin(), retries_.end(),
                                    [&](const Note& note) { return note.due > now; });
    notes.insert(notes.end(), std::make_move_iterator(due),
                 std::make_move_iterator(retries_.end()));
    retries_.erase(due, retries_.end());
    send(notes);
  }
}

void SourceWatch::read_events(std::vector<Note>& notes) {
  alignas(inotify_event) char buffer[64 * 1024];
  for (;;) {
    const ssize_t n = ::read(inotify_.get(), buffer, sizeof buffer);
    if (n <= 0) return;  // EAGAIN: all read
    for (ssize_t pos = 0; pos + static_cast<ssize_t>(sizeof(inotify_event)) <= n;) {
      inotify_event event{};
      std::memcpy(&event, buffer + pos, sizeof event);
      const char* name = buffer + pos + sizeof event;
      const std::string entry(name, ::strnlen(name, event.len));
      pos += static_cast<ssize_t>(sizeof event + event.len);
      if ((event.mask & IN_Q_OVERFLOW) != 0) {
        // Which changes were lost is unknown (a checkout of a big tree, sysctl
        // fs.inotify.max_queued_events): the kernel drops all it caches of the mount.
        overflows_.fetch_add(1);
        spdlog::warn("source watch: events were lost (the inotify queue overflowed); the "
                     "kernel drops every cached name and attribute of the mount");
        for (KernelNote& note : everything_()) {
          notes.push_back(Note{std::move(note)});
        }
        continue;
      }
      NodeId dir = 0;
      {
        const std::lock_guard lock(mutex_);
        const auto it = by_wd_.find(event.wd);
        if (it == by_wd_.end()) continue;  // forgotten meanwhile
        dir = it->second;
        if ((event.mask & IN_IGNORED) != 0) {  // the directory is gone
          by_node_.erase(dir);
          by_wd_.erase(it);
          continue;
        }
      }
      if ((event.mask & (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO)) != 0) {
        notes.push_back(Note{{dir, entry}});     // the name
        notes.push_back(Note{{0, {}, dir}});     // the directory's listing, mtime and nlink
      } else if (!entry.empty()) {
        // An entry's content or attributes: the node the kernel holds for it, if any.
        const NodeId node = child_node_(dir, entry);
        if (node != 0) notes.push_back(Note{{0, {}, node}});
      } else {
        notes.push_back(Note{{0, {}, dir}});  // the directory's own attributes, or its move
      }
    }
  }
}

void SourceWatch::send(std::vector<Note>& notes) {
  const auto key = [](const Note& note) {
    return std::tie(note.what.parent, note.what.name, note.what.node);
  };
  std::sort(notes.begin(), notes.end(),
            [&](const Note& a, const Note& b) { return key(a) < key(b); });
  notes.erase(std::unique(notes.begin(), notes.end(),
                          [&](const Note& a, const Note& b) { return key(a) == key(b); }),
              notes.end());
  for (Note& note : notes) {
    const int err = cache_.tell(note.what);
    notes_sent_.fetch_add(1);
    if (err == ENOENT && note.what.parent == 0 &&
        static_cast<std::size_t>(note.tries) < std::size(kRetryDelays)) {
      note.due = Clock::now() + kRetryDelays[note.tries++];
      retries_.push_back(std::move(note));
    }
  }
}

}  // namespace heddle::worker
