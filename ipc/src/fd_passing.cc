#include "heddle/ipc/fd_passing.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "deadline.h"
#include "heddle/error.h"

namespace heddle::ipc {
namespace {

// The kernel's SCM_MAX_FD: more fds in one message fail with EINVAL anyway.
constexpr std::size_t kMaxFdsPerMessage = 253;
// Room for fds beyond the expected count, so a sender passing a few too many gets them
// delivered (and closed by us) instead of silently dropped by MSG_CTRUNC.
constexpr std::size_t kSpareFdSlots = 16;

std::size_t control_bytes(std::size_t fd_count) { return CMSG_SPACE(fd_count * sizeof(int)); }

// Storage for a control message, aligned for cmsghdr (a char buffer would not be).
std::vector<cmsghdr> control_buffer(std::size_t fd_count) {
  const std::size_t bytes = control_bytes(fd_count);
  return std::vector<cmsghdr>((bytes + sizeof(cmsghdr) - 1) / sizeof(cmsghdr));
}

void check_send_arguments(std::span<const int> fds, std::string_view payload) {
  if (payload.empty()) {
    throw Error("send fds: empty payload", EINVAL,
                "pass at least one data byte; the kernel needs data to carry the fds");
  }
  if (fds.size() > kMaxFdsPerMessage) {
    throw Error("send fds: " + std::to_string(fds.size()) + " fds, at most " +
                    std::to_string(kMaxFdsPerMessage) + " fit in one message",
                EINVAL);
  }
}

// Blocks (without a deadline) until the socket can take more data; for non-blocking sockets.
void wait_writable(int socket) { detail::Deadline(std::nullopt).wait(socket, POLLOUT, "send fds"); }

std::size_t sendmsg_retrying(int socket, const msghdr& message) {
  for (;;) {
    const ssize_t sent = ::sendmsg(socket, &message, MSG_NOSIGNAL);
    if (sent >= 0) return static_cast<std::size_t>(sent);
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      wait_writable(socket);
    } else if (errno != EINTR) {
      throw_errno("send fds");
    }
  }
}

// A stream socket may accept only part of the payload; the fds travelled with its first
// byte, the rest follows as plain data.
void send_rest(int socket, std::string_view rest) {
  while (!rest.empty()) {
    const ssize_t sent = ::send(socket, rest.data(), rest.size(), MSG_NOSIGNAL);
    if (sent > 0) {
      rest.remove_prefix(static_cast<std::size_t>(sent));
    } else if (sent == 0) {
      throw Error("send fds payload: the kernel accepted no bytes", EIO);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      wait_writable(socket);
    } else if (errno != EINTR) {
      throw_errno("send fds payload");
    }
  }
}

void check_receive_arguments(std::size_t expected, std::size_t max_payload) {
  if (expected > kMaxFdsPerMessage) {
    throw Error("receive fds: cannot expect " + std::to_string(expected) + " fds in one message",
                EINVAL);
  }
  // recvmsg() into zero bytes would return 0, indistinguishable from EOF.
  if (max_payload == 0) throw Error("receive fds: max_payload must be at least 1", EINVAL);
}

std::size_t recvmsg_retrying(int socket, msghdr& message, std::size_t control_size,
                             const detail::Deadline& deadline) {
  bool wait_first = deadline.bounded();
  for (;;) {
    if (wait_first) deadline.wait(socket, POLLIN, "receive fds");
    message.msg_controllen = control_size;  // recvmsg() overwrites it
    const int flags = MSG_CMSG_CLOEXEC | (deadline.bounded() ? MSG_DONTWAIT : 0);
    const ssize_t got = ::recvmsg(socket, &message, flags);
    if (got >= 0) return static_cast<std::size_t>(got);
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      wait_first = true;
    } else if (errno != EINTR) {
      throw_errno("receive fds");
    }
  }
}

// Takes ownership of every fd in every SCM_RIGHTS header. `out` has capacity reserved for
// all fds the control buffer can hold, so nothing here allocates or throws.
void adopt_fds(msghdr& message, std::vector<UniqueFd>& out) {
  for (cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr;
       header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    if (header->cmsg_len < CMSG_LEN(0)) continue;
    const std::size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* data = CMSG_DATA(header);
    for (std::size_t i = 0; i < count; ++i) {
      int fd = -1;
      std::memcpy(&fd, data + i * sizeof(int), sizeof(int));
      out.emplace_back(fd);
    }
  }
}

// Throws for anything but a whole message with `at_least` to `expected` fds; the caller
// already owns the fds, so throwing closes them.
void check_received(const msghdr& message, std::size_t payload_bytes, std::size_t fd_count,
                    std::size_t at_least, std::size_t expected) {
  if (payload_bytes == 0) throw Error("receive fds: the peer closed the socket", ECONNRESET);
  if ((message.msg_flags & MSG_CTRUNC) != 0) {
    throw Error("receive fds: control data truncated; the peer sent more than " +
                    std::to_string(expected + kSpareFdSlots) + " fds",
                EPROTO);
  }
  if ((message.msg_flags & MSG_TRUNC) != 0) {
    throw Error("receive fds: message larger than the " + std::to_string(message.msg_iov->iov_len) +
                    "-byte payload buffer",
                EPROTO);
  }
  if (fd_count < at_least || fd_count > expected) {
    throw Error("receive fds: expected " +
                    (at_least == expected ? "" : std::to_string(at_least) + " to ") +
                    std::to_string(expected) + " fds, got " + std::to_string(fd_count),
                EPROTO);
  }
}

}  // namespace

void send_fds(int socket, std::span<const int> fds, std::string_view payload) {
  check_send_arguments(fds, payload);
  // sendmsg() only reads through iov_base; the cast is the API's, not a write.
  iovec data{.iov_base = const_cast<char*>(payload.data()), .iov_len = payload.size()};
  msghdr message{};
  message.msg_iov = &data;
  message.msg_iovlen = 1;

  std::vector<cmsghdr> control;
  if (!fds.empty()) {
    control = control_buffer(fds.size());
    message.msg_control = control.data();
    message.msg_controllen = control_bytes(fds.size());
    cmsghdr* header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
    std::memcpy(CMSG_DATA(header), fds.data(), fds.size() * sizeof(int));
  }

  const std::size_t sent = sendmsg_retrying(socket, message);
  send_rest(socket, payload.substr(sent));
}

ReceivedFds receive_fds(int socket, std::size_t expected, std::size_t max_payload,
                        Timeout timeout) {
  return receive_fds_between(socket, expected, expected, max_payload, timeout);
}

ReceivedFds receive_fds_between(int socket, std::size_t at_least, std::size_t expected,
                                std::size_t max_payload, Timeout timeout) {
  check_receive_arguments(expected, max_payload);
  if (at_least > expected) throw Error("receive fds: at_least > expected", EINVAL);
  const detail::Deadline deadline(timeout);

  ReceivedFds received;
  received.payload.resize(max_payload);
  iovec data{.iov_base = received.payload.data(), .iov_len = received.payload.size()};
  const std::size_t slots = expected + kSpareFdSlots;
  std::vector<cmsghdr> control = control_buffer(slots);
  msghdr message{};
  message.msg_iov = &data;
  message.msg_iovlen = 1;
  message.msg_control = control.data();

  // CMSG_SPACE padding may fit a slot or two more than `slots`; reserve for those too.
  received.fds.reserve(control_bytes(slots) / sizeof(int));
  const std::size_t got = recvmsg_retrying(socket, message, control_bytes(slots), deadline);
  adopt_fds(message, received.fds);
  check_received(message, got, received.fds.size(), at_least, expected);
  received.payload.resize(got);
  return received;
}

}  // namespace heddle::ipc
