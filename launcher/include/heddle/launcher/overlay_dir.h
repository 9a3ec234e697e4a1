// The overlay directory of a writable mount (issue 14): where it is, who owns it, the lock that
// keeps two mounts out of it, and what its on-disk format says changed. The worker writes
// DIR/upper and DIR/work; the launcher writes DIR/source.json and DIR/lock, and only reads the
// rest. The format is described in README.md ("Writable mounts").
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "heddle/launcher/user_dirs.h"
#include "heddle/unique_fd.h"

namespace heddle::launcher {

inline constexpr const char* kOverlaySourceFile = "source.json";
inline constexpr const char* kOverlayLockFile = "lock";
inline constexpr const char* kOverlayUpperDir = "upper";
inline constexpr const char* kWhiteoutPrefix = ".wh.";
inline constexpr const char* kOpaqueMarker = ".wh..wh..opq";
inline constexpr const char* kOriginXattr = "user.heddle.origin";
inline constexpr const char* kAttrXattr = "user.heddle.attr";

// `inner` is `outer` or below it (both canonical).
[[nodiscard]] bool path_within(const std::string& inner, const std::string& outer);

// What an overlay holds the changes of: a directory, or a thread of a repository.
struct OverlaySource {
  std::string source;  // canonical --dir, or canonical --repo-root
  std::string thread;  // empty for a directory
  [[nodiscard]] bool git() const { return !thread.empty(); }
  friend bool operator==(const OverlaySource&, const OverlaySource&) = default;
};

// "<basename>[-<thread>]-<16 hex>": readable, and unique per source and thread.
[[nodiscard]] std::string overlay_key(const OverlaySource& source);

// The default overlays directory, not created: $XDG_STATE_HOME/heddle-fuse/overlays (default
// ~/.local/state/..., HOME from the password database if unset), for root
// /var/lib/heddle-fuse/overlays.
[[nodiscard]] std::string overlays_root(const UserDirs& dirs);

// Makes `requested` (or, if empty, overlays_root()/KEY) ready for a worker running as
// `owner_uid`:`owner_gid`, and returns it canonical. Creates missing parents 0700 (only those
// of the default directory), the directory itself 0700 owned by the worker (root chowns it),
// and source.json. Refuses a directory that overlaps `forbidden` (the source, the repository,
// the mountpoint), one that is neither empty nor an overlay, and an overlay of another source.
[[nodiscard]] std::string prepare_overlay_dir(const UserDirs& dirs, const std::string& requested,
                                              const OverlaySource& source,
                                              const std::vector<std::string>& forbidden,
                                              uid_t owner_uid, gid_t owner_gid);

// DIR/source.json, if it is there and readable.
[[nodiscard]] std::optional<OverlaySource> read_overlay_source(const std::string& dir);

// An exclusive flock on DIR/lock, which names the mountpoint that holds it. Released when the
// last fd of it closes: ours, and the worker's copy (it inherits fd() so the lock outlives a
// SIGKILLed supervisor until the worker has exited too).
class OverlayLock {
 public:
  // Throws heddle::Error EBUSY naming the mount that holds it.
  [[nodiscard]] static OverlayLock acquire(const std::string& dir, const std::string& mountpoint);
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }

 private:
  explicit OverlayLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

// The mountpoint whose mount holds DIR's lock now, or nullopt if none does.
[[nodiscard]] std::optional<std::string> overlay_holder(const std::string& dir);
// The mountpoint recorded in DIR/lock by the last mount that used it (empty if none).
[[nodiscard]] std::string overlay_last_mountpoint(const std::string& dir);

struct OverlayUsage {
  std::uint64_t bytes = 0;  // sizes of the regular files in DIR/upper, each inode once
  std::uint64_t files = 0;  // entries in DIR/upper but directories, whiteouts and markers
};
[[nodiscard]] OverlayUsage overlay_usage(const std::string& dir);

// What DIR/upper says changed, paths relative to the mount's root, sorted.
struct OverlayChanges {
  std::vector<std::string> added;     // made in the mount (no origin marker)
  std::vector<std::string> modified;  // copied up from the lower layer (origin marker)
  std::vector<std::string> deleted;   // a whiteout hides the lower entry
  std::vector<std::string> replaced;  // opaque directories: nothing of the lower one shows
};
[[nodiscard]] OverlayChanges overlay_changes(const std::string& dir);

// Removes DIR entirely. Refuses (EBUSY) while a mount holds its lock.
void discard_overlay(const std::string& dir);

// After a failed mount: removes DIR if it is in overlays_root(), unused and holds no change,
// so a mistyped thread leaves nothing behind. Never throws.
void forget_unused_overlay(const UserDirs& dirs, const std::string& dir) noexcept;

}  // namespace heddle::launcher
