// Pairs of connected fds and error capture, for tests that talk over real sockets and pipes.
#pragma once

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <utility>

#include "heddle/error.h"
#include "heddle/unique_fd.h"

namespace heddle::test {

struct FdPair {
  UniqueFd reader;  // for a socketpair: either end
  UniqueFd writer;
};

inline FdPair socket_pair(int type = SOCK_STREAM) {
  int fds[2];
  if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds) != 0) throw_errno("socketpair");
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

inline FdPair pipe_pair() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// The heddle::Error that `action` throws, or nullopt if it throws nothing.
template <typename F>
std::optional<Error> error_from(F&& action) {
  try {
    std::forward<F>(action)();
  } catch (const Error& error) {
    return error;
  }
  return std::nullopt;
}

inline int open_fd_count() {
  int count = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++count;
  }
  return count - 1;  // the iterator's own fd
}

}  // namespace heddle::test
