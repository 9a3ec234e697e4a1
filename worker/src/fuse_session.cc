#include "fuse_session.h"

#include <fuse_lowlevel.h>
#include <linux/fuse.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "backend.h"
#include "fuse_ops.h"
#include "heddle/error.h"
#include "logging.h"
#include "node_journal.h"

namespace heddle::worker {

namespace {
// Threads the loop may start. Modifying requests wait at a closed gate (a capture) holding a
// thread each: room for many of them while reads are still served.
constexpr unsigned kMaxThreads = 32;

// FUSE_NOTIFY_RESEND (Linux 6.9, protocol 7.40): Debian 12's <linux/fuse.h> predates it.
constexpr std::int32_t kNotifyResend = 7;
// FUSE_NOTIFY_INC_EPOCH (Linux 6.16, protocol 7.44): likewise.
constexpr std::int32_t kNotifyIncEpoch = 8;

// A message that is only its header, straight to the kernel (no libfuse request exists for
// it): a notification (`error` its code, `unique` 0), or an error reply (`error` a negative
// errno). Returns 0 or why the kernel refused it.
int write_header(int fd, std::int32_t error, std::uint64_t unique) noexcept {
  fuse_out_header out{};
  out.len = sizeof out;
  out.error = error;
  out.unique = unique;
  const ssize_t n = ::write(fd, &out, sizeof out);
  return n == static_cast<ssize_t>(sizeof out) ? 0 : (n < 0 ? errno : EIO);
}

FuseIo& io_of(void* userdata) { return *static_cast<SessionContext*>(userdata)->io; }

// The kernel fails a request with EIO, for good, when copying it into our buffer faults and the
// worker is killed meanwhile (fuse_dev_do_read): a restart could not resend it. So each loop
// thread's buffer is made resident once, before its first read. Only WRITE carries more than a
// page, so only a writable mount needs it (1 MiB per loop thread).
void make_resident(void* buf, std::size_t len) {
  thread_local void* resident = nullptr;
  if (buf == resident) return;
  std::memset(buf, 0, len);
  resident = buf;
}

ssize_t io_read(int fd, void* buf, std::size_t len, void* userdata) {
  if (static_cast<SessionContext*>(userdata)->fs.writable()) make_resident(buf, len);
  const ssize_t n = ::read(fd, buf, len);
  if (n < static_cast<ssize_t>(sizeof(fuse_in_header))) return n;
  FuseIo& io = io_of(userdata);
  fuse_in_header in{};
  std::memcpy(&in, buf, sizeof in);
  if (tracked_request(in.opcode, in.unique)) io.in_flight.add(in.unique);
  if (io.expect_init.load()) {
    if (in.opcode != FUSE_INIT) {
      // The kernel queues nothing else before FUSE_INIT is answered: this connection was
      // initialized, and the journal that said otherwise cannot be used.
      static_cast<void>(write_header(fd, -EIO, in.unique));
      spdlog::error("the node journal holds no FUSE_INIT, but the connection was initialized "
                    "(opcode {} arrived first): this worker cannot serve it",
                    in.opcode);
      flush_logs();
      ::_exit(1);
    }
    io.expect_init = false;
  }
  if (io.die_unrecorded && in.opcode == FUSE_INIT) ::kill(::getpid(), SIGKILL);
  if (io.capture_init.load() && in.opcode == FUSE_INIT &&
      static_cast<std::size_t>(n) <= kMaxInitBytes) {
    const std::lock_guard lock(io.mutex);
    io.init_request.assign(static_cast<const char*>(buf), static_cast<std::size_t>(n));
    io.init_unique = in.unique;
    io.capture_init = false;
    io.reply_pending = true;
    // The request alone first: a successor of a worker killed before it replied answers it
    // (the kernel still waits for that reply, and queues nothing else until then).
    if (io.journal != nullptr) io.journal->set_init(io.init_request, {});
    if (io.die_at_init) ::kill(::getpid(), SIGKILL);
  }
  return n;
}

std::string gather(const iovec* iov, int count) {
  std::string out;
  for (int i = 0; i < count; ++i) out.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
  return out;
}

ssize_t io_writev(int fd, iovec* iov, int count, void* userdata) {
  FuseIo& io = io_of(userdata);
  if (io.swallow.load()) {
    const std::lock_guard lock(io.mutex);
    io.swallowed = gather(iov, count);
    return static_cast<ssize_t>(io.swallowed.size());
  }
  fuse_out_header out{};
  if (count > 0 && iov[0].iov_len >= sizeof out) std::memcpy(&out, iov[0].iov_base, sizeof out);
  bool init_reply = false;
  if (io.reply_pending.load() && out.unique != 0) {
    const std::lock_guard lock(io.mutex);
    if (io.reply_pending.load() && out.unique == io.init_unique) {
      // In the journal before the kernel has it: a successor must know what was agreed.
      const std::string reply = gather(iov, count);
      if (io.journal != nullptr && reply.size() <= kMaxInitBytes) {
        io.journal->set_init(io.init_request, reply);
      }
      io.reply_pending = false;
      init_reply = true;
    }
  }
  const ssize_t n = ::writev(fd, iov, count);
  if (init_reply) io.init_write_error = n < 0 ? errno : 0;
  // Only once the kernel has the reply: a worker killed before leaves the request recorded.
  if (out.unique != 0) io.in_flight.remove(out.unique);
  return n;
}

ssize_t io_splice_receive(int fdin, off_t* offin, int fdout, off_t* offout, std::size_t len,
                          unsigned int flags, void* /*userdata*/) {
  return ::splice(fdin, offin, fdout, offout, len, flags);
}

ssize_t io_splice_send(int fdin, off_t* offin, int fdout, off_t* offout, std::size_t len,
                       unsigned int flags, void* /*userdata*/) {
  return ::splice(fdin, offin, fdout, offout, len, flags);
}

}  // namespace

FuseSession::FuseSession(UniqueFd fuse_fd, Backend& fs, bool debug)
    : context_{fs, gate_, handles_, kernel_opens_, nullptr, &io_} {
  std::vector<std::string> arg_storage{"heddle-fuse-worker"};
  if (debug) arg_storage.emplace_back("-d");
  std::vector<char*> argv;
  for (auto& arg : arg_storage) argv.push_back(arg.data());
  fuse_args args{static_cast<int>(argv.size()), argv.data(), 0};

  const fuse_lowlevel_ops& ops = backend_operations();
  session_ = fuse_session_new(&args, &ops, sizeof ops, &context_);
  fuse_opt_free_args(&args);
  if (session_ == nullptr) throw Error("fuse_session_new failed (see libfuse's message above)", 0);

  // libfuse adopts the fd as is (nothing is mounted), with our I/O on it: plain read and
  // writev, recording FUSE_INIT on the way, and splice both ways as libfuse's own would.
  fuse_custom_io io{};
  io.read = io_read;
  io.writev = io_writev;
  io.splice_receive = io_splice_receive;
  io.splice_send = io_splice_send;
  if (fuse_session_custom_io(session_, &io, fuse_fd.get()) != 0) {
    fuse_session_destroy(session_);
    session_ = nullptr;
    throw Error("cannot adopt the FUSE connection fd " + std::to_string(fuse_fd.get()), 0);
  }
  static_cast<void>(fuse_fd.release());  // the session owns it now
  fs.attach_kernel_cache(this);
}

FuseSession::~FuseSession() {
  if (loop_.joinable()) {
    if (serving_.load()) {
      // Leak the session: its threads still use it until the process exits.
      loop_.detach();
      return;
    }
    loop_.join();
  }
  context_.fs.attach_kernel_cache(nullptr);
  // Never fuse_session_unmount(): the supervisor owns the mount.
  if (session_ != nullptr) fuse_session_destroy(session_);
}

void FuseSession::start(unsigned max_idle_threads, std::function<void(bool closed)> on_end) {
  fuse_loop_config* config = fuse_loop_cfg_create();
  if (config == nullptr) throw Error("fuse_loop_cfg_create failed", ENOMEM);
  // No cloned fds: a clone has a processing queue of its own, which the kernel ends
  // (ECONNABORTED) when the dead worker's clone is released. On the one file the supervisor
  // also holds, a dead worker's requests stay queued for its successor to resend or fail.
  fuse_loop_cfg_set_clone_fd(config, 0);
  fuse_loop_cfg_set_idle_threads(config, max_idle_threads);
  fuse_loop_cfg_set_max_threads(config, kMaxThreads);

  serving_ = true;
  try {
    loop_ = std::thread(
        [this, config, on_end = std::move(on_end)] { run_loop(config, on_end); });
  } catch (...) {
    serving_ = false;
    fuse_loop_cfg_destroy(config);
    throw;
  }
}

void FuseSession::attach_journal(NodeJournal* journal, bool record_init) noexcept {
  context_.journal = journal;
  io_.journal = journal;
  io_.capture_init = record_init;
  io_.in_flight.attach(journal != nullptr ? journal->in_flight_slots() : nullptr);
}

std::string FuseSession::process_init(std::string_view request, bool swallow) {
  // What do_init() reads: a header and a fuse_init_in, of at least the 7.6 size (flags).
  constexpr std::size_t kMinInit = sizeof(fuse_in_header) + 4 * sizeof(std::uint32_t);
  if (request.size() < kMinInit || request.size() > kMaxInitBytes) {
    throw Error("the journal's FUSE_INIT request has a bad size", EPROTO);
  }
  fuse_in_header in{};
  std::memcpy(&in, request.data(), sizeof in);
  fuse_init_in init{};
  std::memcpy(&init, request.data() + sizeof in,
              std::min(sizeof init, request.size() - sizeof in));
  if (in.opcode != FUSE_INIT || in.len != request.size() || init.major != 7) {
    throw Error("the journal's FUSE_INIT request is not one the kernel sends", EPROTO);
  }
  // Room for a whole fuse_init_in, zeroed past what was recorded: libfuse reads it all.
  std::vector<char> buffer(std::max(request.size(), sizeof in + sizeof init), 0);
  std::memcpy(buffer.data(), request.data(), request.size());
  fuse_buf buf{};
  buf.mem = buffer.data();
  buf.size = request.size();
  io_.capture_init = false;
  if (!swallow) {
    // Recorded on the way out by io_writev, as a first worker's is.
    const std::lock_guard lock(io_.mutex);
    io_.init_request.assign(request);
    io_.init_unique = in.unique;
    io_.init_write_error = 0;
    io_.reply_pending = true;
  }
  io_.swallow = swallow;
  fuse_session_process_buf(session_, &buf);
  io_.swallow = false;
  const std::lock_guard lock(io_.mutex);
  return swallow ? io_.swallowed : std::string();
}

bool FuseSession::replay_init(std::string_view request, std::string_view recorded_reply) {
  const std::string reply = process_init(request, true);
  fuse_out_header out{};
  if (reply.size() >= sizeof out) std::memcpy(&out, reply.data(), sizeof out);
  if (reply.size() < sizeof out || out.error != 0) {
    throw Error("libfuse refused the recorded FUSE_INIT", EPROTO);
  }
  // This worker keeps journalling the exchange its predecessor made.
  if (context_.journal != nullptr) context_.journal->set_init(request, recorded_reply);
  return reply == recorded_reply;
}

void FuseSession::answer_init(std::string_view request) {
  static_cast<void>(process_init(request, false));
  bool answered = false;
  int err = 0;
  {
    const std::lock_guard lock(io_.mutex);
    answered = !io_.reply_pending.load();
    err = io_.init_write_error;
    io_.reply_pending = false;
  }
  if (!answered) throw Error("libfuse did not answer the recorded FUSE_INIT", EPROTO);
  // ENOENT: the kernel waits for no such request (it was answered, or the journal lies).
  if (err != 0) throw Error("the kernel refused the answer to the recorded FUSE_INIT", err);
}

int FuseSession::request_resend() noexcept {
  return write_header(fuse_session_fd(session_), kNotifyResend, 0);
}

int FuseSession::forget_cached_names() noexcept {
  return write_header(fuse_session_fd(session_), kNotifyIncEpoch, 0);
}

std::size_t FuseSession::fail_requests(const std::vector<std::uint64_t>& uniques,
                                       int error) noexcept {
  std::size_t failed = 0;
  for (const std::uint64_t unique : uniques) {
    // ENOENT: not in the processing queue (answered before the predecessor died).
    if (write_header(fuse_session_fd(session_), -error, unique) == 0) ++failed;
  }
  return failed;
}

int FuseSession::invalidate_entry(std::uint64_t parent, const std::string& name) noexcept {
  // libfuse sends the terminating NUL too.
  const int rc = fuse_lowlevel_notify_inval_entry(session_, parent, name.c_str(), name.size());
  return rc < 0 ? -rc : 0;
}

int FuseSession::invalidate_node(std::uint64_t node) noexcept {
  // Offset 0, length 0: the attributes and every cached page (a directory's listing too).
  const int rc = fuse_lowlevel_notify_inval_inode(session_, node, 0, 0);
  return rc < 0 ? -rc : 0;
}

void FuseSession::run_loop(fuse_loop_config* config, const std::function<void(bool)>& on_end) {
  const int rc = fuse_session_loop_mt(session_, config);
  fuse_loop_cfg_destroy(config);
  serving_ = false;
  if (rc == 0) {
    spdlog::info("FUSE connection closed (unmounted or aborted); no longer serving");
  } else {
    spdlog::error("FUSE session loop ended with {}", rc);
  }
  if (on_end) on_end(rc == 0);
}

}  // namespace heddle::worker
