// The worker protocol's messages and their JSON bodies, byte-compatible with heddle's Rust worker.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace heddle::ipc {

// supervisor -> worker
struct Stop {};
struct Status {};

// worker -> supervisor
struct MountReady {
  std::uint32_t pid = 0;
  std::string mount_path;
};
struct MountError {
  std::string message;
};
struct StatusOk {
  std::uint32_t pid = 0;
  std::string mount_path;
  // Fields beyond the reference's (uptime, source, ...): written after the known ones, in
  // order; on decode, unknown fields land here. Always a JSON object (possibly empty).
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
};
struct Stopping {};

// Capture and follow (issue 15), beyond the reference protocol. Commits are 40 hex digits;
// the codec checks only the JSON types, the worker checks the value.
//
// supervisor -> worker
// Make every acknowledged write durable and hold back every modifying request (they wait, they
// do not fail) until Thaw or Retarget; reads continue. Answered by Frozen.
struct Freeze {};
// Release a Freeze without change (the capture failed). Answered by Thawed.
struct Thaw {};
// Serve `commit` from now on; also releases a Freeze. drop_overlay: the overlay's content is in
// `commit` (after a capture), so it is emptied except for files open for writing and empty
// directories. Otherwise the overlay stays on top (follow). Answered by Retargeted or
// RetargetFailed.
struct Retarget {
  std::string commit;
  bool drop_overlay = false;
};

// worker -> supervisor
struct Frozen {
  std::string commit;  // the commit the mount serves, under the now durable overlay
};
struct Thawed {};
struct Retargeted {
  std::string commit;
  // Paths (relative to the mount root) changed both in the overlay and between the old and the
  // new commit: the overlay's version wins.
  std::vector<std::string> conflicts;
};
// The mount keeps serving the commit it served before.
struct RetargetFailed {
  std::string message;
};

// Control socket only (CLI -> supervisor, issue 15's capture): record the mount as a commit.
// Answered by Captured, or MountError with the reason.
struct Capture {
  std::string message;  // empty: the supervisor's default
  std::string author;   // "Name <email>"; empty: the repository's user.name and user.email
};
struct Captured {
  std::string commit;  // the new commit (the served one when unchanged)
  std::string ref;     // the ref moved
  bool unchanged = false;  // the mount showed its commit: nothing written
  std::vector<std::string> empty_dirs;  // left out of the commit, kept in the overlay
};

// Control socket only (CLI -> supervisor, issue 16's `restart`): replace the worker on the
// same connection. Answered by the successor's StatusOk (as Status is), or MountError.
struct Restart {};

using Message = std::variant<Stop, Status, MountReady, MountError, StatusOk, Stopping, Freeze,
                             Thaw, Retarget, Frozen, Thawed, Retargeted, RetargetFailed,
                             Capture, Captured, Restart>;

// The "kind" tag of a message ("Stop", "MountReady", ...).
[[nodiscard]] std::string_view kind_of(const Message& message);

// Compact JSON exactly as serde_json writes it: "kind" first, then fields in declaration order.
// Throws heddle::Error (EINVAL) if a string is not valid UTF-8.
[[nodiscard]] std::string encode_body(const Message& message);

// Parses a frame body. Accepts field reordering, unknown fields and surrounding whitespace;
// rejects anything else (not JSON, not an object, unknown kind, missing or mistyped field,
// pid outside u32, invalid UTF-8) with heddle::Error (EPROTO) whose text names the problem.
[[nodiscard]] Message decode_body(std::string_view body);

bool operator==(const Stop&, const Stop&);
bool operator==(const Status&, const Status&);
bool operator==(const MountReady&, const MountReady&);
bool operator==(const MountError&, const MountError&);
bool operator==(const StatusOk&, const StatusOk&);
bool operator==(const Stopping&, const Stopping&);
bool operator==(const Freeze&, const Freeze&);
bool operator==(const Thaw&, const Thaw&);
bool operator==(const Retarget&, const Retarget&);
bool operator==(const Frozen&, const Frozen&);
bool operator==(const Thawed&, const Thawed&);
bool operator==(const Retargeted&, const Retargeted&);
bool operator==(const RetargetFailed&, const RetargetFailed&);
bool operator==(const Capture&, const Capture&);
bool operator==(const Captured&, const Captured&);
bool operator==(const Restart&, const Restart&);

}  // namespace heddle::ipc
