// Length-prefixed frames: a u32 little-endian body length, then the body (<= 64 KiB).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "heddle/ipc/message.h"

namespace heddle::ipc {

inline constexpr std::size_t kMaxFrameBody = 65536;

// The whole frame (header + body). Throws heddle::Error (EMSGSIZE) for a body over the limit.
[[nodiscard]] std::string encode_frame(const Message& message);

// Parses exactly one whole frame held in `bytes` (header + body, nothing after it).
// Throws heddle::Error: EMSGSIZE for an oversize length (before looking at the body),
// EPROTO for a truncated header/body, trailing bytes, or a bad body.
[[nodiscard]] Message decode_frame(std::string_view bytes);

// No deadline when nullopt.
using Timeout = std::optional<std::chrono::milliseconds>;

// Writes one whole frame to a stream socket or pipe; retries EINTR and short writes; never
// raises SIGPIPE. Throws heddle::Error with the errno (EPIPE when the peer is gone).
void write_frame(int fd, const Message& message, Timeout timeout = std::nullopt);

// Reads one whole frame. Returns nullopt on a clean EOF before the first header byte.
// Throws heddle::Error: ETIMEDOUT when the deadline passes, EPROTO for EOF inside a frame or a
// bad body, EMSGSIZE for an oversize length (the claimed size is never allocated).
[[nodiscard]] std::optional<Message> read_frame(int fd, Timeout timeout = std::nullopt);

}  // namespace heddle::ipc
