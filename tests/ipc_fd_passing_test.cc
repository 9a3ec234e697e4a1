// SCM_RIGHTS over real Unix sockets: what arrives works, is close-on-exec, and nothing leaks
// when the message is wrong.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "heddle/error.h"
#include "heddle/ipc/fd_passing.h"
#include "heddle/unique_fd.h"

namespace heddle::ipc {
namespace {

using namespace std::chrono_literals;

constexpr auto kGuard = 2s;  // every blocking receive in these tests gives up after this

template <typename F>
std::optional<Error> error_from(F&& action) {
  try {
    std::forward<F>(action)();
  } catch (const Error& error) {
    return error;
  }
  return std::nullopt;
}

struct Pair {
  UniqueFd first;   // reader end for pipes
  UniqueFd second;  // writer end for pipes
};

Pair socket_pair(int type = SOCK_STREAM) {
  int fds[2];
  if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds) != 0) throw_errno("socketpair");
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

Pair make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

std::size_t open_fd_count() {
  std::size_t count = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++count;
  }
  return count;
}

bool is_cloexec(int fd) { return (::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0; }

// Writes `text` through `writer` (a received pipe end) and reads it back from `reader`.
std::string echo_through(int writer, int reader, const std::string& text) {
  if (::write(writer, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    throw_errno("write to received fd");
  }
  std::string got(text.size(), '\0');
  if (::read(reader, got.data(), got.size()) != static_cast<ssize_t>(got.size())) {
    throw_errno("read from pipe");
  }
  return got;
}

void expect_rejected(const std::optional<Error>& error, int code) {
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code(), code) << error->what();
}

TEST(FdPassing, SingleFdArrivesWorkingAndCloseOnExec) {
  Pair channel = socket_pair();
  Pair pipe = make_pipe();
  send_fds(channel.first.get(), std::array{pipe.second.get()}, "mount");
  pipe.second.reset();  // from now on only the received copy can write into the pipe

  ReceivedFds received = receive_fds(channel.second.get(), 1, 64, kGuard);
  ASSERT_EQ(received.fds.size(), 1u);
  EXPECT_EQ(received.payload, "mount");
  EXPECT_TRUE(is_cloexec(received.fds[0].get()));
  EXPECT_EQ(echo_through(received.fds[0].get(), pipe.first.get(), "ping"), "ping");
}

TEST(FdPassing, SeveralFdsArriveInOrder) {
  Pair channel = socket_pair();
  std::vector<Pair> pipes;
  std::vector<int> write_ends;
  for (int i = 0; i < 3; ++i) {
    pipes.push_back(make_pipe());
    write_ends.push_back(pipes.back().second.get());
  }
  send_fds(channel.first.get(), write_ends, "three");
  for (Pair& pipe : pipes) pipe.second.reset();

  ReceivedFds received = receive_fds(channel.second.get(), 3, 64, kGuard);
  ASSERT_EQ(received.fds.size(), 3u);
  EXPECT_EQ(received.payload, "three");
  for (std::size_t i = 0; i < pipes.size(); ++i) {
    EXPECT_TRUE(is_cloexec(received.fds[i].get()));
    const std::string tag = "pipe " + std::to_string(i);
    EXPECT_EQ(echo_through(received.fds[i].get(), pipes[i].first.get(), tag), tag);
  }
}

TEST(FdPassing, BinaryPayloadRoundTripsOnStreamAndSeqpacket) {
  const std::string payload("\0\x01\xff{\"kind\":\"Stop\"}\n", 19);
  for (const int type : {SOCK_STREAM, SOCK_SEQPACKET}) {
    Pair channel = socket_pair(type);
    Pair pipe = make_pipe();
    send_fds(channel.first.get(), std::array{pipe.first.get()}, payload);
    const ReceivedFds received = receive_fds(channel.second.get(), 1, 256, kGuard);
    EXPECT_EQ(received.payload, payload);
    EXPECT_EQ(received.fds.size(), 1u);
  }
}

TEST(FdPassing, MoreFdsThanExpectedAreRejectedAndClosed) {
  Pair channel = socket_pair();
  std::array<Pair, 3> pipes{make_pipe(), make_pipe(), make_pipe()};
  const std::size_t before = open_fd_count();
  send_fds(channel.first.get(),
           std::array{pipes[0].second.get(), pipes[1].second.get(), pipes[2].second.get()}, "x");
  expect_rejected(error_from([&] { (void)receive_fds(channel.second.get(), 2, 64, kGuard); }),
                  EPROTO);
  EXPECT_EQ(open_fd_count(), before);
}

TEST(FdPassing, FdsBeyondTheControlBufferAreRejectedAndClosed) {
  Pair channel = socket_pair();
  Pair pipe = make_pipe();
  std::vector<UniqueFd> copies;
  std::vector<int> raw;
  for (int i = 0; i < 40; ++i) {
    copies.emplace_back(::fcntl(pipe.second.get(), F_DUPFD_CLOEXEC, 0));
    ASSERT_TRUE(copies.back().valid());
    raw.push_back(copies.back().get());
  }
  const std::size_t before = open_fd_count();
  send_fds(channel.first.get(), raw, "flood");
  // 1 expected + 16 spare slots: the kernel truncates, and what did fit must still be closed.
  expect_rejected(error_from([&] { (void)receive_fds(channel.second.get(), 1, 64, kGuard); }),
                  EPROTO);
  EXPECT_EQ(open_fd_count(), before);
}

TEST(FdPassing, TruncatedPayloadIsRejectedAndFdsClosed) {
  Pair channel = socket_pair(SOCK_SEQPACKET);
  Pair pipe = make_pipe();
  const std::size_t before = open_fd_count();
  send_fds(channel.first.get(), std::array{pipe.second.get()}, std::string(100, 'p'));
  expect_rejected(error_from([&] { (void)receive_fds(channel.second.get(), 1, 10, kGuard); }),
                  EPROTO);
  EXPECT_EQ(open_fd_count(), before);
}

TEST(FdPassing, NoFdsWhenOneExpectedIsRejected) {
  Pair channel = socket_pair();
  send_fds(channel.first.get(), {}, "nothing");
  expect_rejected(error_from([&] { (void)receive_fds(channel.second.get(), 1, 64, kGuard); }),
                  EPROTO);
}

TEST(FdPassing, PeerClosedIsConnectionReset) {
  Pair channel = socket_pair();
  channel.first.reset();
  expect_rejected(error_from([&] { (void)receive_fds(channel.second.get(), 1, 64, kGuard); }),
                  ECONNRESET);
  expect_rejected(error_from([&] { (void)receive_fds(channel.second.get(), 1, 64); }), ECONNRESET);
}

TEST(FdPassing, ReceiveTimesOut) {
  Pair channel = socket_pair();
  const auto start = std::chrono::steady_clock::now();
  expect_rejected(error_from([&] { (void)receive_fds(channel.second.get(), 1, 64, 200ms); }),
                  ETIMEDOUT);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_GE(elapsed, 190ms);
  EXPECT_LT(elapsed, 1500ms);
}

TEST(FdPassing, BadArgumentsAreEinval) {
  Pair channel = socket_pair();
  Pair pipe = make_pipe();
  expect_rejected(
      error_from([&] { send_fds(channel.first.get(), std::array{pipe.first.get()}, ""); }), EINVAL);
  expect_rejected(error_from([&] { (void)receive_fds(channel.second.get(), 1, 0, kGuard); }),
                  EINVAL);
}

TEST(FdPassing, SendToClosedPeerIsEpipeWithoutSignal) {
  Pair channel = socket_pair();
  Pair pipe = make_pipe();
  channel.second.reset();
  expect_rejected(
      error_from([&] { send_fds(channel.first.get(), std::array{pipe.first.get()}, "x"); }), EPIPE);
}

}  // namespace
}  // namespace heddle::ipc
