// The worker protocol's messages and their JSON bodies, byte-compatible with heddle's Rust worker.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

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

using Message = std::variant<Stop, Status, MountReady, MountError, StatusOk, Stopping>;

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

}  // namespace heddle::ipc
