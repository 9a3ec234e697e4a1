// A libfuse low-level session on a /dev/fuse fd that the supervisor already mounted, served by
// fuse_session_loop_mt on a thread of its own. The worker never mounts or unmounts anything.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>

#include "fuse_ops.h"
#include "heddle/unique_fd.h"
#include "kernel_opens.h"
#include "write_gate.h"

struct fuse_session;
struct fuse_loop_config;

namespace heddle::worker {

class Backend;

class FuseSession {
 public:
  // Creates the session for `fs` and adopts `fuse_fd` (libfuse closes it with the session).
  // Throws heddle::Error. `debug` turns on libfuse's per-request log.
  FuseSession(UniqueFd fuse_fd, Backend& fs, bool debug);
  FuseSession(const FuseSession&) = delete;
  FuseSession& operator=(const FuseSession&) = delete;
  // A running loop cannot be stopped from here (its threads sit in read(/dev/fuse) until the
  // supervisor unmounts): the worker ends with _exit(), so this only tidies up after a failure
  // before start(), or after the loop has ended.
  ~FuseSession();

  // Starts the multi-threaded loop (clone_fd off, at most `max_idle_threads` idle workers).
  // `on_end`, if given, runs on the loop's thread once the loop has returned: with true when
  // the kernel ended the connection (the mount was removed, or its connection aborted), false
  // on an error.
  void start(unsigned max_idle_threads, std::function<void(bool closed)> on_end = {});

  // False once the loop has returned (connection unmounted or aborted).
  [[nodiscard]] bool serving() const noexcept { return serving_.load(); }

  // What modifying requests pass (Freeze holds them there).
  [[nodiscard]] WriteGate& gate() noexcept { return gate_; }

  // Tell the kernel to drop what it caches of `name` in `parent` / of `node`'s attributes and
  // pages. Never from a request handler (the kernel may wait for that request): from the IPC
  // thread, holding no backend lock. Returns 0 or an errno (ENOENT: the kernel had nothing).
  int invalidate_entry(std::uint64_t parent, const std::string& name) noexcept;
  int invalidate_node(std::uint64_t node) noexcept;

 private:
  void run_loop(fuse_loop_config* config, const std::function<void(bool)>& on_end);

  WriteGate gate_;
  KernelOpens kernel_opens_;
  SessionContext context_;
  fuse_session* session_ = nullptr;
  std::thread loop_;
  std::atomic<bool> serving_{false};
};

}  // namespace heddle::worker
