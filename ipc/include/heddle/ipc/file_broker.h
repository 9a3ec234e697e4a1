// The file broker's wire format (issue 18). When the sandboxed worker's own open of a path in
// its source fails with EACCES, it asks the supervisor, which runs with the mount's user's
// authority, to open that path strictly beneath the source and pass the fd back.
//
// Its own SOCK_SEQPACKET socketpair (the third fd of the bootstrap message), so heddle's frames
// on the IPC socket stay as they are. One request per packet, one answer per request:
//   request: [kind: u8][root: u8][path: bytes, no NUL]   at most kMaxBrokerRequest bytes
//   answer:  [errno: u32 LE]  (0: with exactly one fd in SCM_RIGHTS)
//            kOwner: [errno: u32 LE][uid: u32 LE][gid: u32 LE], never an fd
// The path is relative to the source root numbered `root` (0: the --dir source), "." for
// the root itself, else components joined by '/', none empty, "." or "..".
#pragma once

#include <linux/limits.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace heddle::ipc {

// What the fd is for; the supervisor chooses the open flags, never the worker.
enum class BrokerOpen : std::uint8_t {
  kPath = 1,       // O_PATH | O_NOFOLLOW: a lookup's or getattr's fstat, a readlink
  kFile = 2,       // O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, regular files only
  kDirectory = 3,  // O_RDONLY | O_DIRECTORY | O_NOFOLLOW: a listing
  // No fd: the owner and group as the supervisor sees them. The worker's user namespace maps
  // only its own ids, so it sees every other owner (the user's, a group's) as the overflow id
  // 65534, and the kernel's permission check (default_permissions) needs the real ones.
  kOwner = 4,
};

inline constexpr std::size_t kBrokerHeaderBytes = 2;
// PATH_MAX counts the NUL the wire does not carry.
inline constexpr std::size_t kBrokerMaxPath = PATH_MAX - 1;
inline constexpr std::size_t kMaxBrokerRequest = kBrokerHeaderBytes + kBrokerMaxPath;
inline constexpr std::size_t kBrokerAnswerBytes = 4;
inline constexpr std::size_t kBrokerOwnerAnswerBytes = 12;

struct BrokerRequest {
  BrokerOpen kind = BrokerOpen::kPath;
  std::uint8_t root = 0;
  std::string path;
};

// 0 if `path` may be asked for: "." or a/b/c with no empty, "." or ".." component, no NUL,
// not absolute; EINVAL otherwise, ENAMETOOLONG past kBrokerMaxPath bytes.
[[nodiscard]] int check_broker_path(std::string_view path);

// The open(2) flags for `kind` (O_CLOEXEC included).
[[nodiscard]] int broker_open_flags(BrokerOpen kind);

// The kind whose flags a worker-side open with `flags` asks for, if any (reads only).
[[nodiscard]] std::optional<BrokerOpen> broker_kind_for(int flags);

[[nodiscard]] std::string encode_broker_request(const BrokerRequest& request);
// A well-formed request, or the errno to answer with (EINVAL, ENAMETOOLONG).
struct DecodedBrokerRequest {
  BrokerRequest request;
  int error = 0;
};
[[nodiscard]] DecodedBrokerRequest decode_broker_request(std::string_view packet);

struct BrokerAnswer {
  int error = 0;
  bool has_owner = false;  // kOwner's answer
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
};
[[nodiscard]] std::string encode_broker_answer(const BrokerAnswer& answer);
// nullopt for a packet of neither size.
[[nodiscard]] std::optional<BrokerAnswer> decode_broker_answer(std::string_view packet);

}  // namespace heddle::ipc
