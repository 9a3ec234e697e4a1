#include "heddle/launcher/thread_sync.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <functional>

#include "heddle/display_text.h"
#include "heddle/error.h"
#include "heddle/launcher/capture.h"
#include "heddle/launcher/source_access.h"

namespace heddle::launcher {
namespace {

using namespace std::chrono_literals;

// A Freeze makes every acknowledged write durable; a Retarget diffs two trees and may empty
// the overlay. Both touch the disk at length, so they get longer than a Status.
constexpr std::chrono::milliseconds kFreezeTimeout = 60s;
constexpr std::chrono::milliseconds kRetargetTimeout = 60s;
// A burst (a fetch updating many refs, a rebase) is read once it has been quiet this long, or
// at the latest this long after it began.
constexpr std::chrono::milliseconds kBurstLimit = 500ms;
// Changes inotify cannot see (a ref written over NFS) are still noticed, later.
constexpr std::chrono::milliseconds kRescan = 5s;

constexpr std::uint32_t kWatchMask =
    IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CLOSE_WRITE | IN_ONLYDIR;

const ipc::GitSource& git_source(const Supervisor& supervisor) {
  return std::get<ipc::GitSource>(supervisor.spec().source);
}

// Whose identity writes to the repository: the mount's user; for root's own mount of a
// repository that belongs to someone else, its owner, so that root leaves no file of its own
// in a user's repository.
void as_repository_writer(const ipc::MountSpec& spec, const std::string& common_dir,
                          const std::function<void()>& work) {
  struct stat st {};
  if (::geteuid() == 0 && spec.uid == 0 && ::stat(common_dir.c_str(), &st) == 0 && st.st_uid != 0) {
    run_with_identity(file_identity_of(st.st_uid, st.st_gid), work);
    return;
  }
  as_mount_user(spec.uid, spec.gid, work);
}

// The home whose git config applies (the author's name, for one) when root works for another
// user; "" when the process's own $HOME is the right one.
std::string config_home(const ipc::MountSpec& spec) {
  if (::geteuid() != 0 || spec.uid == 0) return "";
  const auto account = account_of(spec.uid);
  return account ? account->home : "";
}

}  // namespace

ThreadSync::ThreadSync(Supervisor& supervisor, bool pin)
    : supervisor_(supervisor), repo_root_(git_source(supervisor).repo_root) {
  const ipc::MountSpec& spec = supervisor.spec();
  const std::string thread = git_source(supervisor).thread;
  std::string unavailable;  // why neither capture nor follow can work, if so
  try {
    if (const std::string home = config_home(spec); !home.empty()) use_git_config_home(home);
    as_mount_user(spec.uid, spec.gid, [&] {
      ref_ = thread_ref(repo_root_, thread);
      common_dir_ = git_common_dir(repo_root_);
    });
    const ipc::StatusOk status = supervisor.status();
    if (const auto it = status.extra.find("commit"); it != status.extra.end() && it->is_string()) {
      served_ = it->get<std::string>();
    }
  } catch (const Error& e) {
    // The mount serves anyway; only capture and follow are off, and status says why.
    ref_.reset();
    unavailable = e.what();
    spdlog::warn("{}: no capture or follow: {}", spec.mountpoint, unavailable);
  }
  struct stat st {};
  if (!unavailable.empty()) {
    follow_ = "no (" + escape_text(unavailable) + ")";
  } else if (!ref_) {
    follow_ = "no (the thread names a revision, not a ref)";
  } else if (served_.empty()) {
    follow_ = "no (the thread names a tree, not a commit)";
  } else if (pin) {
    follow_ = "pinned";
  } else if (::stat((common_dir_ + "reftable").c_str(), &st) == 0) {
    follow_ = "no (the repository keeps its refs in a reftable, which is not supported)";
  } else {
    follow_ = "follows";
  }
  if (follow_ != "follows") {
    spdlog::info("{} is not followed: {}", spec.mountpoint, follow_);
    return;
  }
  inotify_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!inotify_ || !stop_) throw_errno("watch " + *ref_ + " of " + repo_root_);
  add_watches();
  spdlog::info("{} follows {} of {} (now {})", spec.mountpoint, *ref_, repo_root_, served_);
  watcher_ = std::thread([this] { watch(); });
}

ThreadSync::~ThreadSync() {
  if (watcher_.joinable()) {
    const std::uint64_t one = 1;
    if (::write(stop_.get(), &one, sizeof one) != sizeof one) {
      spdlog::error("stop the follower of {}", supervisor_.spec().mountpoint);
    }
    watcher_.join();
  }
}

// The common directory (packed-refs) and each directory down to the ref's own: a loose ref is
// written as REF.lock and renamed, packed-refs likewise. Directories made later (the first ref
// of refs/heads/a/) are added on the next event.
void ThreadSync::add_watches() {
  std::string dir = common_dir_;
  const std::string& ref = *ref_;
  std::size_t start = 0;
  for (;;) {
    if (::inotify_add_watch(inotify_.get(), dir.c_str(), kWatchMask) < 0) return;
    const std::size_t slash = ref.find('/', start);
    if (slash == std::string::npos) return;
    dir += ref.substr(start, slash - start) + "/";
    start = slash + 1;
  }
}

void ThreadSync::watch() {
  using Clock = std::chrono::steady_clock;
  std::optional<Clock::time_point> burst_start;
  Clock::time_point last_event{};
  Clock::time_point last_scan = Clock::now();
  for (;;) {
    int timeout = static_cast<int>(kRescan.count());
    if (burst_start) {
      const auto due = std::min(last_event + kDebounce, *burst_start + kBurstLimit);
      timeout = static_cast<int>(
          std::max<long long>(0, std::chrono::duration_cast<std::chrono::milliseconds>(
                                     due - Clock::now()).count()));
    }
    pollfd fds[2] = {{inotify_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(fds, 2, timeout) < 0 && errno != EINTR) {
      spdlog::error("follow {}: poll: {}", supervisor_.spec().mountpoint, std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    if (fds[0].revents != 0) {
      alignas(inotify_event) char buffer[16384];
      while (::read(inotify_.get(), buffer, sizeof buffer) > 0) {
      }
      last_event = Clock::now();
      if (!burst_start) burst_start = last_event;
      continue;
    }
    const bool burst_over = burst_start.has_value();
    if (!burst_over && Clock::now() - last_scan < kRescan) continue;
    burst_start.reset();
    last_scan = Clock::now();
    if (burst_over) add_watches();
    if (!supervisor_.is_alive()) return;
    follow_once();
  }
}

void ThreadSync::follow_once() {
  const ipc::MountSpec& spec = supervisor_.spec();
  // Read and acted on under the lock: a capture in progress moves the ref and records its
  // commit as served before anyone compares.
  std::lock_guard lock(mutex_);
  std::optional<std::string> now;
  try {
    as_mount_user(spec.uid, spec.gid, [&] { now = ref_commit(repo_root_, *ref_); });
  } catch (const Error& e) {
    spdlog::warn("follow {}: read {}: {}", spec.mountpoint, *ref_, e.what());
    return;
  }
  if (!now || *now == served_ || *now == failed_target_) return;
  spdlog::info("{} moved from {} to {}; {} follows", *ref_, served_, *now, spec.mountpoint);
  try {
    const ipc::Message reply = supervisor_.exchange(ipc::Retarget{*now, false}, kRetargetTimeout);
    if (const auto* done = std::get_if<ipc::Retargeted>(&reply)) {
      served_ = done->commit;
      conflicts_ = done->conflicts;
      failed_target_.clear();
      if (!conflicts_.empty()) {
        spdlog::warn("{} now serves {}; {} path(s) changed both in the overlay and upstream "
                     "keep the overlay's version", spec.mountpoint, served_, conflicts_.size());
      }
    } else if (const auto* failed = std::get_if<ipc::RetargetFailed>(&reply)) {
      failed_target_ = *now;
      spdlog::warn("{} stays on {}: the worker could not serve {}: {}", spec.mountpoint, served_,
                   *now, escape_text(failed->message));
    } else {
      spdlog::error("follow {}: the worker answered Retarget with {}", spec.mountpoint,
                    ipc::kind_of(reply));
    }
  } catch (const Error& e) {
    spdlog::error("follow {}: {}", spec.mountpoint, e.what());
  }
}

void ThreadSync::thaw() {
  try {
    const ipc::Message reply = supervisor_.exchange(ipc::Thaw{}, kFreezeTimeout);
    if (!std::holds_alternative<ipc::Thawed>(reply)) {
      spdlog::error("the worker answered Thaw with {}", ipc::kind_of(reply));
    }
  } catch (const Error& e) {
    spdlog::error("thaw {}: {}", supervisor_.spec().mountpoint, e.what());
  }
}

ipc::Message ThreadSync::capture(const ipc::Capture& request) {
  const ipc::MountSpec& spec = supervisor_.spec();
  std::lock_guard lock(mutex_);
  if (!spec.writable()) {
    return ipc::MountError{"the mount at " + escape_text(spec.mountpoint) +
                           " is read-only: it has no changes to capture"};
  }
  if (!ref_ || served_.empty()) {
    // follow_ says why: "no (the thread names a revision, not a ref)", or what failed.
    return ipc::MountError{"the mount at " + escape_text(spec.mountpoint) +
                           " cannot be captured: " + follow_.substr(follow_.find('(')) +
                           " (hint: capture moves a thread's ref; mount a branch, refs/heads/T, "
                           "or refs/heddle/threads/T)"};
  }
  ipc::Message frozen_reply;
  try {
    frozen_reply = supervisor_.exchange(ipc::Freeze{}, kFreezeTimeout);
  } catch (const Error& e) {
    return ipc::MountError{escape_text(e.what())};
  }
  const auto* frozen = std::get_if<ipc::Frozen>(&frozen_reply);
  if (frozen == nullptr) {
    std::string why = "it answered " + std::string(ipc::kind_of(frozen_reply));
    if (const auto* error = std::get_if<ipc::MountError>(&frozen_reply)) why = error->message;
    if (const auto* failed = std::get_if<ipc::RetargetFailed>(&frozen_reply)) why = failed->message;
    return ipc::MountError{"the worker did not freeze the mount for the capture: " +
                           escape_text(why) + " (hint: nothing was captured; see the mount's log)"};
  }
  served_ = frozen->commit;
  CaptureRequest capture{repo_root_, *ref_, served_, spec.overlay_dir, request.message,
                         request.author};
  if (capture.message.empty()) capture.message = "Capture of the mount at " + spec.mountpoint;
  CaptureResult result;
  try {
    as_repository_writer(spec, common_dir_, [&] { result = capture_commit(capture); });
  } catch (const Error& e) {
    // Nothing moved: the mount goes on as it was, its changes still in the overlay.
    thaw();
    spdlog::warn("capture of {} failed: {}", spec.mountpoint, e.what());
    return ipc::MountError{escape_text(e.what())};
  }
  const ipc::Captured captured{result.commit, *ref_, result.unchanged, result.empty_dirs};
  if (result.unchanged) {
    thaw();
    return captured;
  }
  spdlog::info("captured {} as {} ({} moved from {})", spec.mountpoint, result.commit, *ref_,
               served_);
  const std::string before = served_;
  served_ = result.commit;  // the follower must not take our own commit for news
  std::string why;
  try {
    const ipc::Message reply =
        supervisor_.exchange(ipc::Retarget{result.commit, true}, kRetargetTimeout);
    if (const auto* done = std::get_if<ipc::Retargeted>(&reply)) {
      served_ = done->commit;
      conflicts_.clear();
      failed_target_.clear();
      return captured;
    }
    const auto* failed = std::get_if<ipc::RetargetFailed>(&reply);
    why = failed != nullptr ? escape_text(failed->message)
                            : "it answered " + std::string(ipc::kind_of(reply));
  } catch (const Error& e) {
    why = escape_text(e.what());
  }
  served_ = before;
  failed_target_ = result.commit;
  thaw();
  return ipc::MountError{"captured as " + result.commit + " and moved " + *ref_ +
                         ", but the mount could not switch to it: " + why +
                         " (hint: its changes are in that commit and still in the overlay; "
                         "unmount, discard the overlay and mount again)"};
}

void ThreadSync::add_status(nlohmann::ordered_json& extra) {
  std::lock_guard lock(mutex_);
  extra["ref"] = ref_ ? nlohmann::ordered_json(*ref_) : nlohmann::ordered_json(nullptr);
  extra["follow"] = follow_;
  if (!served_.empty() && !extra.contains("commit")) extra["commit"] = served_;
  if (!extra.contains("conflicts")) extra["conflicts"] = conflicts_;
}

}  // namespace heddle::launcher
