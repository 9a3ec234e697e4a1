#include "heddle/ipc/frame.h"

#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <span>
#include <string>

#include "deadline.h"
#include "heddle/error.h"

namespace heddle::ipc {
namespace {

constexpr std::size_t kHeaderSize = 4;
static_assert(kMaxFrameBody <= UINT32_MAX);

std::string encode_length(std::uint32_t length) {
  std::string header(kHeaderSize, '\0');
  for (std::size_t i = 0; i < kHeaderSize; ++i) {
    header[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  }
  return header;
}

std::uint32_t decode_length(std::string_view header) {
  std::uint32_t length = 0;
  for (std::size_t i = 0; i < kHeaderSize; ++i) {
    length |= static_cast<std::uint32_t>(static_cast<unsigned char>(header[i])) << (8 * i);
  }
  return length;
}

void check_body_size(std::size_t size, const char* what) {
  if (size > kMaxFrameBody) {
    throw Error(std::string(what) + ": body of " + std::to_string(size) +
                    " bytes exceeds the limit of " + std::to_string(kMaxFrameBody),
                EMSGSIZE);
  }
}

[[noreturn]] void truncated(const char* what, std::size_t got, std::size_t wanted) {
  throw Error(std::string(what) + ": truncated frame (" + std::to_string(got) + " of " +
                  std::to_string(wanted) + " bytes)",
              EPROTO);
}

// write() on a pipe whose reader is gone raises SIGPIPE; block it for this thread around the
// call and swallow the one we caused, so the caller gets EPIPE instead of dying.
ssize_t write_without_sigpipe(int fd, const char* data, std::size_t size) {
  sigset_t sigpipe;
  sigemptyset(&sigpipe);
  sigaddset(&sigpipe, SIGPIPE);
  sigset_t previous;
  pthread_sigmask(SIG_BLOCK, &sigpipe, &previous);
  sigset_t pending;
  sigpending(&pending);
  const bool already_pending = sigismember(&pending, SIGPIPE) == 1;

  const ssize_t written = ::write(fd, data, size);
  const int saved_errno = errno;
  if (written < 0 && saved_errno == EPIPE && !already_pending) {
    const timespec no_wait{};
    while (sigtimedwait(&sigpipe, nullptr, &no_wait) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  errno = saved_errno;
  return written;
}

// One end of a frame stream: recv/send on a socket, read/write on anything else (a pipe),
// switched on the first ENOTSOCK.
class Stream {
 public:
  explicit Stream(int fd) : fd_(fd) {}

  [[nodiscard]] int fd() const noexcept { return fd_; }
  // Only sockets take MSG_DONTWAIT; on anything else, poll() must come before each call.
  [[nodiscard]] bool is_socket() const noexcept { return is_socket_; }

  // With a deadline the socket calls must not block past it, hence MSG_DONTWAIT: they are
  // tried first and poll() only follows EAGAIN, which saves a syscall when data is there.
  ssize_t receive(char* data, std::size_t size, bool nonblocking) {
    if (is_socket_) {
      const ssize_t got = ::recv(fd_, data, size, nonblocking ? MSG_DONTWAIT : 0);
      if (got >= 0 || errno != ENOTSOCK) return got;
      is_socket_ = false;
      if (nonblocking) return would_block();
    }
    return ::read(fd_, data, size);
  }

  ssize_t transmit(const char* data, std::size_t size, bool nonblocking) {
    if (is_socket_) {
      const int flags = MSG_NOSIGNAL | (nonblocking ? MSG_DONTWAIT : 0);
      const ssize_t sent = ::send(fd_, data, size, flags);
      if (sent >= 0 || errno != ENOTSOCK) return sent;
      is_socket_ = false;
      if (nonblocking) return would_block();
    }
    // A pipe write of at most PIPE_BUF bytes after POLLOUT does not block, so a deadline holds.
    return write_without_sigpipe(fd_, data,
                                 nonblocking ? std::min<std::size_t>(size, PIPE_BUF) : size);
  }

 private:
  static ssize_t would_block() {
    errno = EAGAIN;
    return -1;
  }

  int fd_;
  bool is_socket_ = true;
};

// Reads into `buffer` until it is full or EOF; returns the bytes read.
std::size_t read_fully(Stream& stream, std::span<char> buffer, const detail::Deadline& deadline) {
  std::size_t done = 0;
  bool wait_first = deadline.bounded() && !stream.is_socket();
  while (done < buffer.size()) {
    if (wait_first) deadline.wait(stream.fd(), POLLIN, "read frame");
    const ssize_t got =
        stream.receive(buffer.data() + done, buffer.size() - done, deadline.bounded());
    if (got == 0) break;
    if (got > 0) {
      done += static_cast<std::size_t>(got);
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      wait_first = true;  // a non-blocking fd, or data another reader took after poll()
    } else if (errno != EINTR) {
      throw_errno("read frame");
    }
  }
  return done;
}

void write_fully(Stream& stream, std::string_view data, const detail::Deadline& deadline) {
  bool wait_first = deadline.bounded() && !stream.is_socket();
  while (!data.empty()) {
    if (wait_first) deadline.wait(stream.fd(), POLLOUT, "write frame");
    const ssize_t sent = stream.transmit(data.data(), data.size(), deadline.bounded());
    if (sent > 0) {
      data.remove_prefix(static_cast<std::size_t>(sent));
    } else if (sent == 0) {
      throw Error("write frame: the kernel accepted no bytes", EIO);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      wait_first = true;
    } else if (errno != EINTR) {
      throw_errno("write frame");
    }
  }
}

}  // namespace

std::string encode_frame(const Message& message) {
  const std::string body = encode_body(message);
  check_body_size(body.size(), "encode frame");
  return encode_length(static_cast<std::uint32_t>(body.size())) + body;
}

Message decode_frame(std::string_view bytes) {
  if (bytes.size() < kHeaderSize) truncated("decode frame", bytes.size(), kHeaderSize);
  const std::uint32_t length = decode_length(bytes);
  check_body_size(length, "decode frame");
  const std::string_view body = bytes.substr(kHeaderSize);
  if (body.size() < length) truncated("decode frame", bytes.size(), kHeaderSize + length);
  if (body.size() > length) {
    throw Error(
        "decode frame: " + std::to_string(body.size() - length) + " trailing bytes after the body",
        EPROTO);
  }
  return decode_body(body);
}

void write_frame(int fd, const Message& message, Timeout timeout) {
  const detail::Deadline deadline(timeout);
  const std::string frame = encode_frame(message);
  Stream stream(fd);
  write_fully(stream, frame, deadline);
}

std::optional<Message> read_frame(int fd, Timeout timeout) {
  const detail::Deadline deadline(timeout);
  Stream stream(fd);

  std::array<char, kHeaderSize> header{};
  const std::size_t header_bytes = read_fully(stream, header, deadline);
  if (header_bytes == 0) return std::nullopt;
  if (header_bytes < kHeaderSize) truncated("read frame", header_bytes, kHeaderSize);

  // Checked before allocating: a hostile length must not become a 4 GiB buffer.
  const std::uint32_t length = decode_length({header.data(), header.size()});
  check_body_size(length, "read frame");
  std::string body(length, '\0');
  const std::size_t body_bytes = read_fully(stream, body, deadline);
  if (body_bytes < length) truncated("read frame", kHeaderSize + body_bytes, kHeaderSize + length);
  return decode_body(body);
}

}  // namespace heddle::ipc
