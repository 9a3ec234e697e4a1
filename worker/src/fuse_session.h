// A libfuse low-level session on a /dev/fuse fd that the supervisor already mounted, served by
// fuse_session_loop_mt on a thread of its own. The worker never mounts or unmounts anything.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "backend.h"
#include "fuse_ops.h"
#include "heddle/unique_fd.h"
#include "in_flight.h"
#include "open_handles.h"
#include "kernel_opens.h"
#include "write_gate.h"

struct fuse_session;
struct fuse_loop_config;

namespace heddle::worker {

class Backend;
class NodeJournal;

// The session's I/O on /dev/fuse goes through fuse_session_custom_io (libfuse 3.14), so that the
// FUSE_INIT exchange can be recorded in the journal (a first worker) and replayed (a successor).
struct FuseIo {
  NodeJournal* journal = nullptr;
  std::atomic<bool> capture_init{false};  // until the first FUSE_INIT has been read
  std::atomic<bool> reply_pending{false};  // its reply is still to be written
  std::atomic<bool> swallow{false};        // replaying: replies go to `swallowed`, not the kernel
  std::mutex mutex;
  std::string init_request;
  std::uint64_t init_unique = 0;
  std::string swallowed;
  int init_write_error = 0;  // errno of writing the FUSE_INIT reply (answer_init)
  InFlight in_flight;        // requests read and not yet answered (the journal's table)
  // A successor whose journal holds no FUSE_INIT: the connection must not be initialized yet,
  // so the first request read must be FUSE_INIT. Anything else means the journal lost the
  // exchange: that request fails (EIO) and the worker exits, as it could serve nothing.
  std::atomic<bool> expect_init{false};
  // Tests: SIGKILL itself once FUSE_INIT is read, before replying: once it is recorded, or
  // (die_unrecorded) before that.
  bool die_at_init = false;
  bool die_unrecorded = false;
};

class FuseSession final : public KernelCache {
 public:
  // Creates the session for `fs` and adopts `fuse_fd` (libfuse closes it with the session).
  // Throws heddle::Error. `debug` turns on libfuse's per-request log. With a `journal`, every
  // reference and handle given to the kernel is written to it first (attach_journal).
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

  // Before start(): from now on every reference and handle is written to `journal` before the
  // kernel has it; `record_init`: so is the FUSE_INIT exchange (a mount's first worker).
  void attach_journal(NodeJournal* journal, bool record_init) noexcept;

  // Takeover (issue 16), before start(): feeds the FUSE_INIT request a predecessor recorded
  // through libfuse's own request processing, so that libfuse's state (got_init, the
  // negotiated connection, its buffer size) is set by its own code, while the reply (which the
  // kernel already has) goes nowhere. Throws heddle::Error for a request that is not a FUSE_INIT
  // this kernel could have sent. Returns false when the reply differs from the recorded one
  // (the binary negotiates otherwise than its predecessor did).
  bool replay_init(std::string_view request, std::string_view recorded_reply);
  // Takeover of a connection whose FUSE_INIT a predecessor read (and recorded) but did not
  // answer, before start(): the request goes through libfuse's processing and its reply to the
  // kernel, which still waits for it. Throws heddle::Error for a bad request, or when the
  // kernel has no such request waiting.
  void answer_init(std::string_view request);
  // A successor whose journal holds no FUSE_INIT (see FuseIo::expect_init), before start().
  void expect_init() noexcept { io_.expect_init = true; }
  // Asks the kernel to queue again every request a dead predecessor had read and not answered
  // (FUSE_NOTIFY_RESEND, Linux 6.9). Returns 0 or the errno of the refusal (EINVAL: the kernel
  // knows no such notification).
  int request_resend() noexcept;
  // Makes the kernel look up again every name it caches (FUSE_NOTIFY_INC_EPOCH, Linux 6.16):
  // for names whose nodes a successor could not restore. Returns 0 or the refusal's errno.
  int forget_cached_names() noexcept;
  // Where RESEND is refused: ends each of `uniques` (requests a predecessor had read and not
  // answered) with `error`, so that no process waits for them until unmount. The supervisor
  // and every worker hold the same /dev/fuse file, whose processing queue still holds them.
  // Returns how many the kernel still had (the rest were answered before the predecessor died).
  std::size_t fail_requests(const std::vector<std::uint64_t>& uniques, int error) noexcept;
  // The in-flight table is this worker's from now on (before start()).
  void clear_in_flight() noexcept { io_.in_flight.clear(); }
  // Tests: this worker SIGKILLs itself once it has read FUSE_INIT, before replying.
  void die_at_init(bool unrecorded) noexcept {
    io_.die_at_init = true;
    io_.die_unrecorded = unrecorded;
  }
  [[nodiscard]] std::uint64_t in_flight_overflows() const noexcept {
    return io_.in_flight.overflows();
  }

  [[nodiscard]] OpenHandles& handles() noexcept { return handles_; }

  // False once the loop has returned (connection unmounted or aborted).
  [[nodiscard]] bool serving() const noexcept { return serving_.load(); }

  // What modifying requests pass (Freeze holds them there).
  [[nodiscard]] WriteGate& gate() noexcept { return gate_; }

  // Tell the kernel to drop what it caches of `name` in `parent` / of `node`'s attributes and
  // pages. Never from a request handler (the kernel may wait for that request): from the IPC
  // thread, holding no backend lock. Returns 0 or an errno (ENOENT: the kernel had nothing).
  int invalidate_entry(std::uint64_t parent, const std::string& name) noexcept override;
  int invalidate_node(std::uint64_t node) noexcept override;

 private:
  void run_loop(fuse_loop_config* config, const std::function<void(bool)>& on_end);
  // Checks a recorded FUSE_INIT request and has libfuse process it; its reply goes to the
  // kernel, or (swallow) nowhere. Returns the reply when swallowed.
  std::string process_init(std::string_view request, bool swallow);

  WriteGate gate_;
  OpenHandles handles_;
  FuseIo io_;
  KernelOpens kernel_opens_;
  SessionContext context_;
  fuse_session* session_ = nullptr;
  std::thread loop_;
  std::atomic<bool> serving_{false};
};

}  // namespace heddle::worker
