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
#include "support/fd_pairs.h"

namespace heddle::ipc {
namespace {

using namespace std::chrono_literals;
using namespace ::heddle::test;  // fd pairs, error_from, open_fd_count

constexpr auto kGuard = 2s;  // every blocking receive in these tests gives up after this

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
  FdPair channel = socket_pair();
  FdPair pipe = pipe_pair();
  send_fds(channel.reader.get(), std::array{pipe.writer.get()}, "mount");
  pipe.writer.reset();  // from now on only the received copy can write into the pipe

  ReceivedFds received = receive_fds(channel.writer.get(), 1, 64, kGuard);
  ASSERT_EQ(received.fds.size(), 1u);
  EXPECT_EQ(received.payload, "mount");
  EXPECT_TRUE(is_cloexec(received.fds[0].get()));
  EXPECT_EQ(echo_through(received.fds[0].get(), pipe.reader.get(), "ping"), "ping");
}

// A bootstrap with or without the file broker's socket; a broker answer with or without an fd.
TEST(FdPassing, ARangeOfFdCountsIsAcceptedAndNothingOutsideIt) {
  FdPair channel = socket_pair();
  FdPair pipe = pipe_pair();
  send_fds(channel.reader.get(), {}, "none");
  EXPECT_EQ(receive_fds_between(channel.writer.get(), 0, 1, 64, kGuard).fds.size(), 0u);
  send_fds(channel.reader.get(), std::array{pipe.writer.get()}, "one");
  EXPECT_EQ(receive_fds_between(channel.writer.get(), 0, 1, 64, kGuard).fds.size(), 1u);
  const int fds_before = open_fd_count();
  send_fds(channel.reader.get(), std::array{pipe.writer.get(), pipe.reader.get()}, "two");
  expect_rejected(
      error_from([&] { (void)receive_fds_between(channel.writer.get(), 0, 1, 64, kGuard); }),
      EPROTO);
  EXPECT_EQ(open_fd_count(), fds_before) << "the extra fds were closed";
  send_fds(channel.reader.get(), {}, "none");
  expect_rejected(
      error_from([&] { (void)receive_fds_between(channel.writer.get(), 2, 3, 64, kGuard); }),
      EPROTO);
}

TEST(FdPassing, SeveralFdsArriveInOrder) {
  FdPair channel = socket_pair();
  std::vector<FdPair> pipes;
  std::vector<int> write_ends;
  for (int i = 0; i < 3; ++i) {
    pipes.push_back(pipe_pair());
    write_ends.push_back(pipes.back().writer.get());
  }
  send_fds(channel.reader.get(), write_ends, "three");
  for (FdPair& pipe : pipes) pipe.writer.reset();

  ReceivedFds received = receive_fds(channel.writer.get(), 3, 64, kGuard);
  ASSERT_EQ(received.fds.size(), 3u);
  EXPECT_EQ(received.payload, "three");
  for (std::size_t i = 0; i < pipes.size(); ++i) {
    EXPECT_TRUE(is_cloexec(received.fds[i].get()));
    const std::string tag = "pipe " + std::to_string(i);
    EXPECT_EQ(echo_through(received.fds[i].get(), pipes[i].reader.get(), tag), tag);
  }
}

TEST(FdPassing, BinaryPayloadRoundTripsOnStreamAndSeqpacket) {
  const std::string payload("\0\x01\xff{\"kind\":\"Stop\"}\n", 19);
  for (const int type : {SOCK_STREAM, SOCK_SEQPACKET}) {
    FdPair channel = socket_pair(type);
    FdPair pipe = pipe_pair();
    send_fds(channel.reader.get(), std::array{pipe.reader.get()}, payload);
    const ReceivedFds received = receive_fds(channel.writer.get(), 1, 256, kGuard);
    EXPECT_EQ(received.payload, payload);
    EXPECT_EQ(received.fds.size(), 1u);
  }
}

TEST(FdPassing, MoreFdsThanExpectedAreRejectedAndClosed) {
  FdPair channel = socket_pair();
  std::array<FdPair, 3> pipes{pipe_pair(), pipe_pair(), pipe_pair()};
  const int before = open_fd_count();
  send_fds(channel.reader.get(),
           std::array{pipes[0].writer.get(), pipes[1].writer.get(), pipes[2].writer.get()}, "x");
  expect_rejected(error_from([&] { (void)receive_fds(channel.writer.get(), 2, 64, kGuard); }),
                  EPROTO);
  EXPECT_EQ(open_fd_count(), before);
}

TEST(FdPassing, FdsBeyondTheControlBufferAreRejectedAndClosed) {
  FdPair channel = socket_pair();
  FdPair pipe = pipe_pair();
  std::vector<UniqueFd> copies;
  std::vector<int> raw;
  for (int i = 0; i < 40; ++i) {
    copies.emplace_back(::fcntl(pipe.writer.get(), F_DUPFD_CLOEXEC, 0));
    ASSERT_TRUE(copies.back().valid());
    raw.push_back(copies.back().get());
  }
  const int before = open_fd_count();
  send_fds(channel.reader.get(), raw, "flood");
  // 1 expected + 16 spare slots: the kernel truncates, and what did fit must still be closed.
  expect_rejected(error_from([&] { (void)receive_fds(channel.writer.get(), 1, 64, kGuard); }),
                  EPROTO);
  EXPECT_EQ(open_fd_count(), before);
}

TEST(FdPassing, TruncatedPayloadIsRejectedAndFdsClosed) {
  FdPair channel = socket_pair(SOCK_SEQPACKET);
  FdPair pipe = pipe_pair();
  const int before = open_fd_count();
  send_fds(channel.reader.get(), std::array{pipe.writer.get()}, std::string(100, 'p'));
  expect_rejected(error_from([&] { (void)receive_fds(channel.writer.get(), 1, 10, kGuard); }),
                  EPROTO);
  EXPECT_EQ(open_fd_count(), before);
}

TEST(FdPassing, NoFdsWhenOneExpectedIsRejected) {
  FdPair channel = socket_pair();
  send_fds(channel.reader.get(), {}, "nothing");
  expect_rejected(error_from([&] { (void)receive_fds(channel.writer.get(), 1, 64, kGuard); }),
                  EPROTO);
}

TEST(FdPassing, PeerClosedIsConnectionReset) {
  FdPair channel = socket_pair();
  channel.reader.reset();
  expect_rejected(error_from([&] { (void)receive_fds(channel.writer.get(), 1, 64, kGuard); }),
                  ECONNRESET);
  expect_rejected(error_from([&] { (void)receive_fds(channel.writer.get(), 1, 64); }), ECONNRESET);
}

TEST(FdPassing, ReceiveTimesOut) {
  FdPair channel = socket_pair();
  const auto start = std::chrono::steady_clock::now();
  expect_rejected(error_from([&] { (void)receive_fds(channel.writer.get(), 1, 64, 200ms); }),
                  ETIMEDOUT);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_GE(elapsed, 190ms);
  EXPECT_LT(elapsed, 1500ms);
}

TEST(FdPassing, BadArgumentsAreEinval) {
  FdPair channel = socket_pair();
  FdPair pipe = pipe_pair();
  expect_rejected(
      error_from([&] { send_fds(channel.reader.get(), std::array{pipe.reader.get()}, ""); }), EINVAL);
  expect_rejected(error_from([&] { (void)receive_fds(channel.writer.get(), 1, 0, kGuard); }),
                  EINVAL);
}

TEST(FdPassing, SendToClosedPeerIsEpipeWithoutSignal) {
  FdPair channel = socket_pair();
  FdPair pipe = pipe_pair();
  channel.writer.reset();
  expect_rejected(
      error_from([&] { send_fds(channel.reader.get(), std::array{pipe.reader.get()}, "x"); }), EPIPE);
}

}  // namespace
}  // namespace heddle::ipc
