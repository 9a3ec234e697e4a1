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

// This process's open fds (from /proc/self/fd); with `target`, only those open on it.
inline int open_fd_count(const std::filesystem::path& target = {}) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (target.empty() || std::filesystem::read_symlink(entry.path(), ec) == target) ++count;
  }
  return target.empty() ? count - 1 : count;  // not the iterator's own fd
}

}  // namespace heddle::test
