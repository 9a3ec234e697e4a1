// SCM_RIGHTS: passing open file descriptors over a Unix socket.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "heddle/ipc/frame.h"
#include "heddle/unique_fd.h"

namespace heddle::ipc {

// Sends `fds` with `payload` (at least one byte; the kernel needs data to carry the fds).
// Throws heddle::Error on failure.
void send_fds(int socket, std::span<const int> fds, std::string_view payload);

struct ReceivedFds {
  std::vector<UniqueFd> fds;
  std::string payload;
};

// Receives one message carrying exactly `expected` fds, with MSG_CMSG_CLOEXEC set on them.
// A truncated control message (MSG_CTRUNC), truncated payload (MSG_TRUNC), or any other fd
// count is an error (EPROTO); every fd that did arrive is closed before throwing.
// EOF before the message is ECONNRESET. `max_payload` bounds the data read.
[[nodiscard]] ReceivedFds receive_fds(int socket, std::size_t expected, std::size_t max_payload,
                                      Timeout timeout = std::nullopt);

// The same, accepting `at_least` to `expected` fds: a bootstrap whose sender may or may not
// pass the file broker's socket, an answer that carries an fd only on success.
[[nodiscard]] ReceivedFds receive_fds_between(int socket, std::size_t at_least,
                                              std::size_t expected, std::size_t max_payload,
                                              Timeout timeout = std::nullopt);

}  // namespace heddle::ipc
