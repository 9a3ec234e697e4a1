// The supervisor's file broker (issue 18): opens, with the mount's user's authority, a path the
// sandboxed worker may not open itself, strictly beneath a source root, and passes the fd back.
//
// Why the worker needs it: it runs as a subordinate uid (or as nobody, or without the user's
// supplementary groups) and so is refused a 0600 file, a 0640 file the user reads through a
// group, or anything below a 0700 directory, although the user mounted it. The broker grants
// exactly what the user could open directly, read-only, and never a path outside the source:
//   - the worker names a path relative to a root the supervisor opened (a directory fd), and
//     every request is checked here again (ipc::check_broker_path): no "..", no absolute path,
//     no empty component, no NUL, no more than PATH_MAX;
//   - openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) from that fd:
//     no symlink is followed, not even a trailing one, so /proc/self/... cannot be reached;
//   - the flags are the supervisor's (ipc::broker_open_flags), read-only; a file must be a
//     regular file before it is opened (no FIFO, no device);
//   - it runs on a thread with the mount's user's credentials (as_mount_user): root mounting
//     for a user grants that user's access, not root's.
// One thread per mount serves one request at a time, so a flood costs the supervisor one
// thread's time and a socket buffer, no memory; a worker that stops reading answers blocks
// only its own broker, which stop() (or the worker's exit) ends.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "heddle/unique_fd.h"

namespace heddle::launcher {

struct BrokerStats {
  std::uint64_t granted = 0;
  std::uint64_t refused = 0;
};

class FileBroker {
 public:
  // `roots`: directory fds the worker's root numbers index (opened as the mount's user);
  // `socket`: the supervisor's end of the broker socketpair (SOCK_SEQPACKET). Starts serving.
  FileBroker(std::vector<UniqueFd> roots, UniqueFd socket, uid_t uid, gid_t gid);
  FileBroker(const FileBroker&) = delete;
  FileBroker& operator=(const FileBroker&) = delete;
  ~FileBroker();

  // Ends the service (a blocked receive or send returns) and joins its thread. Idempotent.
  void stop();

  [[nodiscard]] BrokerStats stats() const noexcept {
    return {granted_.load(std::memory_order_relaxed), refused_.load(std::memory_order_relaxed)};
  }

 private:
  void serve();
  // 0 and `fd`, or the errno to answer.
  int open(const std::vector<char>& packet, std::size_t size, UniqueFd& fd) const;

  const std::vector<UniqueFd> roots_;
  UniqueFd socket_;
  const uid_t uid_;
  const gid_t gid_;
  std::atomic<std::uint64_t> granted_{0};
  std::atomic<std::uint64_t> refused_{0};
  std::thread thread_;
};

// A SOCK_SEQPACKET socketpair for the broker: [0] the supervisor's, [1] the worker's.
struct BrokerSockets {
  UniqueFd supervisor;
  UniqueFd worker;
};
[[nodiscard]] BrokerSockets make_broker_sockets();

}  // namespace heddle::launcher
