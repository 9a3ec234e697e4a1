// heddle-fuse-worker: receives [ipc socket, /dev/fuse fd, file broker socket] and a
// WorkerBootstrap (what to serve, where) on the bootstrap fd, serves a directory or a git
// thread over that connection (read-only, or writable through an overlay), and answers the
// supervisor's Status/Stop requests.
//
// Exit codes: 0 on Stop, IPC EOF or SIGTERM; 1 on a startup or IPC failure; 2 on a usage error
// (argv, or a bootstrap document that is not a valid one); 3 when the kernel ended the FUSE
// session (the mount was removed from outside, or its connection aborted); 101 when
// HEDDLE_FUSE_WORKER_PANIC_ON_INIT is set.

#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include <spdlog/spdlog.h>

#include "broker_client.h"
#include "confinement_check.h"
#include "fuse_session.h"
#include "heddle/display_text.h"
#include "heddle/error.h"
#include "heddle/ipc/fd_passing.h"
#include "heddle/ipc/frame.h"
#include "heddle/ipc/message.h"
#include "heddle/ipc/mount_spec.h"
#include "heddle/ipc/worker_env.h"
#include "heddle/log_levels.h"
#include "heddle/unique_fd.h"
#include "logging.h"
#include "memory_limit.h"
#include "node_journal.h"
#include "open_source.h"
#include "options.h"
#include "overlay_fs.h"
#include "takeover.h"

namespace heddle::worker {
namespace {

constexpr std::chrono::seconds kBootstrapTimeout{10};
// Writes to the supervisor are small; the deadline only guards against a peer that stopped
// reading.
constexpr std::chrono::seconds kWriteTimeout{5};
constexpr unsigned kMaxIdleThreads = 10;
constexpr int kExitPanic = 101;  // what a Rust panic exits with
constexpr int kExitUsage = 2;
constexpr int kExitSessionEnded = 3;

// The variables the worker reads, read once in main().
struct Environment {
  std::string log_levels;               // HEDDLE_FUSE_LOG
  bool panic_on_init = false;           // HEDDLE_FUSE_WORKER_PANIC_ON_INIT set
  std::chrono::milliseconds hold_ready{0};  // HEDDLE_FUSE_WORKER_TEST_HOLD_READY_MS
  const char* memory_limit_mib = nullptr;   // HEDDLE_FUSE_WORKER_MEMORY_LIMIT_MIB
  bool test_no_resend = false;               // HEDDLE_FUSE_WORKER_TEST_NO_RESEND set
  std::string test_first_dies;               // HEDDLE_FUSE_WORKER_TEST_FIRST_DIES

  static Environment read() {
    Environment env;
    if (const char* levels = std::getenv(kLogEnv)) env.log_levels = levels;
    env.panic_on_init = std::getenv(ipc::kPanicOnInitEnv) != nullptr;
    env.memory_limit_mib = std::getenv(ipc::kMemoryLimitEnv);
    env.test_no_resend = std::getenv(ipc::kNoResendEnv) != nullptr;
    if (const char* dies = std::getenv(ipc::kFirstDiesEnv)) env.test_first_dies = dies;
    if (const char* hold = std::getenv(ipc::kHoldReadyEnv)) {
      env.hold_ready = std::chrono::milliseconds(std::strtoul(hold, nullptr, 10));
    }
    return env;
  }
};

// Ends the process without running static destructors: FUSE threads may still be using them.
[[noreturn]] void exit_now(int code) {
  flush_logs();
  ::_exit(code);
}

extern "C" void exit_on_signal(int /*signo*/) { ::_exit(0); }

// As PID 1 of its pid namespace the worker would ignore SIGTERM by default: handle it
// explicitly (or ignore it, for tests proving that the supervisor escalates to SIGKILL).
void install_signal_handlers(bool ignore_stop) {
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ignore, nullptr);

  struct sigaction stop {};
  stop.sa_handler = ignore_stop ? SIG_IGN : exit_on_signal;
  ::sigemptyset(&stop.sa_mask);
  ::sigaction(SIGTERM, &stop, nullptr);
  ::sigaction(SIGINT, &stop, nullptr);

  sigset_t unblock;
  ::sigemptyset(&unblock);
  ::sigaddset(&unblock, SIGTERM);
  ::sigaddset(&unblock, SIGINT);
  ::pthread_sigmask(SIG_UNBLOCK, &unblock, nullptr);
}

void send(int ipc_fd, const ipc::Message& message) {
  ipc::write_frame(ipc_fd, message, kWriteTimeout);
}

// Startup failed after the IPC socket arrived: tell the supervisor why, then exit.
[[noreturn]] void fail_mount(int ipc_fd, const std::string& message, int code = 1) {
  spdlog::error("{}", message);
  try {
    // Escaped: a repository's names may hold bytes that are not UTF-8, which JSON cannot carry.
    send(ipc_fd, ipc::MountError{escape_text(message)});
  } catch (const std::exception& e) {
    spdlog::error("cannot report the failure to the supervisor: {}", e.what());
  }
  exit_now(code);
}

struct Bootstrap {
  UniqueFd ipc;
  UniqueFd fuse;
  UniqueFd broker;   // the file broker's socket; absent when the sender offers none
  UniqueFd journal;  // the mount's node journal (a memfd); absent when the sender offers none
  std::string payload;
};

bool is_socket(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

// Takes ownership of `fd` and closes it once the message has arrived. The optional fds after
// the first two are told apart by kind (mount_spec.h): a socket is the broker's, a memfd the
// journal.
Bootstrap receive_bootstrap(int fd) {
  const UniqueFd bootstrap(fd);
  auto received = ipc::receive_fds_between(bootstrap.get(), 2, 4, ipc::kMaxBootstrapBytes,
                                           kBootstrapTimeout);
  Bootstrap out{std::move(received.fds[0]), std::move(received.fds[1]), UniqueFd(), UniqueFd(),
                std::move(received.payload)};
  for (std::size_t i = 2; i < received.fds.size(); ++i) {
    UniqueFd& slot = is_socket(received.fds[i].get()) ? out.broker : out.journal;
    if (slot) throw Error("the bootstrap passes two fds of one kind", EPROTO);
    slot = std::move(received.fds[i]);
  }
  return out;
}

// Capture and follow (issue 15): Freeze, Thaw and Retarget, on the IPC thread. The gate holds
// modifying requests back while the supervisor reads the overlay; kernel notifications go out
// once the gate is open again, since a request waiting at it may hold the very directory lock
// the kernel needs to drop an entry.
class Retargeting {
 public:
  // Paths listed in a Retargeted or in Status, and their bytes (a frame holds 64 KiB); the
  // count in Status is always whole.
  static constexpr std::size_t kMaxListed = 100;
  static constexpr std::size_t kMaxListedBytes = 16 << 10;

  Retargeting(Backend& fs, FuseSession& session, NodeJournal* journal)
      : fs_(fs), session_(session), journal_(journal) {}

  ipc::Message freeze() {
    session_.gate().close();
    if (const int err = fs_.sync_all(); err != 0) {
      session_.gate().open();
      return ipc::RetargetFailed{std::string("freeze: cannot make the overlay durable: ") +
                                 std::strerror(err)};
    }
    return ipc::Frozen{fs_.served_commit().value_or("")};
  }

  ipc::Message thaw() {
    session_.gate().open();
    return ipc::Thawed{};
  }

  ipc::Message retarget(const ipc::Retarget& request) {
    session_.gate().close();
    RetargetOutcome outcome;
    try {
      outcome = fs_.retarget(request.commit, request.drop_overlay);
    } catch (const std::exception& e) {
      session_.gate().open();
      spdlog::warn("{}", e.what());
      // Escaped: the text may quote names that are not UTF-8.
      return ipc::RetargetFailed{escape_text(e.what())};
    }
    session_.gate().open();
    std::size_t dropped = 0;
    for (const KernelNote& note : outcome.notes) {
      // ENOENT: the kernel had nothing cached there.
      const int err = session_.tell(note);
      if (err != 0 && err != ENOENT) ++dropped;
    }
    if (dropped > 0) spdlog::warn("retarget: {} kernel notifications failed", dropped);
    if (request.drop_overlay) conflicts_.clear();
    conflicts_.insert(outcome.conflicts.begin(), outcome.conflicts.end());
    if (journal_ != nullptr) journal_->set_commit(outcome.commit);
    spdlog::info("now serving commit {} ({} notifications, {} conflicts)", outcome.commit,
                 outcome.notes.size(), outcome.conflicts.size());
    return ipc::Retargeted{outcome.commit, listed(outcome.conflicts)};
  }

  void add_status(nlohmann::ordered_json& extra) const {
    extra["conflicts"] = listed(conflicts_);
    extra["conflict_count"] = conflicts_.size();
    extra["frozen"] = session_.gate().closed();
    extra["writes_held"] = session_.gate().waited();
  }

 private:
  // As many as fit, escaped: a name need not be UTF-8, which JSON cannot carry.
  template <typename Paths>
  static std::vector<std::string> listed(const Paths& paths) {
    std::vector<std::string> out;
    std::size_t bytes = 0;
    for (const std::string& path : paths) {
      std::string text = escape_text(path);
      bytes += text.size() + 3;
      if (out.size() == kMaxListed || bytes > kMaxListedBytes) break;
      out.push_back(std::move(text));
    }
    return out;
  }

  Backend& fs_;
  FuseSession& session_;
  NodeJournal* journal_;  // the commit served goes there (a successor serves it too)
  std::set<std::string> conflicts_;  // since the last capture (drop_overlay)
};

// Issue 16: the journal this worker writes, and how its takeover went (a successor's).
struct Restart {
  std::unique_ptr<NodeJournal> journal;
  bool took_over = false;
  bool resend = false;
  bool journal_refused = false;  // every node the kernel holds is stale, names unknown
  std::size_t failed = 0;  // requests of the predecessor ended with EIO (no RESEND)
  RestoreReport restored;

  void add_status(nlohmann::ordered_json& extra) const {
    if (journal) {
      extra["journal_nodes"] = journal->node_count();
      extra["journal_handles"] = journal->handle_count();
    }
    if (took_over) {
      extra["resend"] = resend;
      extra["failed_requests"] = failed;
      extra["restored_nodes"] = restored.nodes;
      extra["stale_nodes"] = restored.stale_nodes;
    }
  }
};

// The kernel keeps names for as long as the entry timeout (minutes on a git thread or a watched
// directory), and opens files itself: a name whose node a successor could not restore would
// answer ESTALE until then. So it looks every name up again (Linux 6.16), or, before that, the
// names the journal recorded. With the loop running: an invalidation waits for the directory's
// lock, which a lookup resent to this worker may hold.
void forget_stale_names(const Restart& restart, FuseSession& session) {
  if (!restart.journal_refused && restart.restored.stale_names.empty()) return;
  if (session.forget_cached_names() == 0) return;
  for (const auto& [parent, name] : restart.restored.stale_names) {
    static_cast<void>(session.invalidate_entry(parent, name));
  }
}

[[noreturn]] void serve_ipc(int ipc_fd, const ipc::WorkerBootstrap& boot, Backend& fs,
                            FuseSession& session, const Restart& restart) {
  const auto started = std::chrono::steady_clock::now();
  Retargeting retargeting(fs, session, restart.journal.get());
  for (;;) {
    std::optional<ipc::Message> message;
    try {
      message = ipc::read_frame(ipc_fd);
    } catch (const std::exception& e) {
      spdlog::error("reading from the supervisor failed: {}", e.what());
      exit_now(1);
    }
    if (!message) {
      spdlog::info("the supervisor closed the IPC socket; exiting");
      exit_now(0);
    }

    try {
      if (std::holds_alternative<ipc::Status>(*message)) {
        ipc::StatusOk ok{boot.host_pid, boot.spec.mountpoint};
        const auto uptime = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - started);
        ok.extra["uptime_ms"] = uptime.count();
        ok.extra["nodes"] = fs.node_count();
        ok.extra["serving"] = session.serving();
        ok.extra["generation"] = boot.generation;
        restart.add_status(ok.extra);
        fs.add_status(ok.extra);
        retargeting.add_status(ok.extra);
        send(ipc_fd, ok);
      } else if (std::holds_alternative<ipc::Freeze>(*message)) {
        send(ipc_fd, retargeting.freeze());
      } else if (std::holds_alternative<ipc::Thaw>(*message)) {
        send(ipc_fd, retargeting.thaw());
      } else if (const auto* retarget = std::get_if<ipc::Retarget>(&*message)) {
        send(ipc_fd, retargeting.retarget(*retarget));
      } else if (std::holds_alternative<ipc::Stop>(*message)) {
        if (boot.test_ignore_stop) {
          spdlog::info("ignoring Stop (test_ignore_stop)");
          continue;
        }
        spdlog::info("Stop received; exiting");
        send(ipc_fd, ipc::Stopping{});
        exit_now(0);
      } else {
        spdlog::warn("ignoring unexpected {} message from the supervisor",
                     ipc::kind_of(*message));
      }
    } catch (const std::exception& e) {
      spdlog::error("answering the supervisor failed: {}", e.what());
      exit_now(1);
    }
  }
}

// Before anything a repository steers is read (see memory_limit.h).
void limit_memory(int ipc_fd, const ipc::MountSpec& spec, const Environment& env) {
  std::uint64_t limit = 0;
  try {
    const auto* git = std::get_if<ipc::GitSource>(&spec.source);
    limit = memory_limit_from_env(env.memory_limit_mib)
                .value_or(default_memory_limit(git != nullptr ? git->cache_bytes : 0));
  } catch (const std::exception& e) {
    fail_mount(ipc_fd, e.what());
  }
  const auto applied = apply_memory_limit(limit);
  if (applied.failed) fail_mount(ipc_fd, "cannot limit the worker's memory: " + applied.note);
  if (applied.bytes == 0) {
    spdlog::info("no memory limit: {}", applied.note);
  } else {
    spdlog::debug("memory limit (RLIMIT_DATA): {} MiB{}", applied.bytes >> 20,
                  applied.note.empty() ? "" : " (" + applied.note + ")");
  }
}

// A `successor` takes a live connection over (issue 16): the overlay keeps the files its
// predecessor hid.
std::unique_ptr<Backend> open_backend(const ipc::MountSpec& spec, UniqueFd broker,
                                      bool successor) {
  auto client = broker ? std::make_shared<BrokerClient>(std::move(broker)) : nullptr;
  auto lower = open_source(spec.source, spec.uid, spec.gid, std::move(client));
  if (!spec.writable()) return lower;
  return std::make_unique<OverlayFs>(std::move(lower), spec.overlay_dir, spec.uid, spec.gid,
                                     successor);
}

// Issue 16. A first worker formats the journal and records FUSE_INIT as it comes. A successor
// reads what its predecessor left (never trusting it), rebuilds the nodes and handles it can
// find again, starts its own journal from them, replays the recorded FUSE_INIT into libfuse
// and asks the kernel to send again what the predecessor had taken; where the kernel cannot,
// it fails those requests. A successor of a worker that died before answering FUSE_INIT
// serves as a first worker does. Throws heddle::Error.
Restart take_over(UniqueFd memfd, const ipc::WorkerBootstrap& boot, const Environment& env,
                  Backend& fs, FuseSession& session) {
  Restart out;
  const auto fresh_journal = [&](UniqueFd fd) {
    JournalState first;
    first.backend = fs.takeover_state();
    first.commit = fs.served_commit().value_or("");
    out.journal = std::make_unique<NodeJournal>(std::move(fd), first);
    session.attach_journal(out.journal.get(), true);
    session.clear_in_flight();
  };
  if (boot.generation == 1) {
    fresh_journal(std::move(memfd));
    if (env.test_first_dies == "before-init") ::kill(::getpid(), SIGKILL);
    if (env.test_first_dies == "at-init") session.die_at_init(false);
    if (env.test_first_dies == "at-init-unrecorded") session.die_at_init(true);
    return out;
  }
  const auto started = std::chrono::steady_clock::now();
  const std::vector<std::uint64_t> in_flight = read_in_flight(memfd.get());
  JournalState previous;
  auto read = NodeJournal::read(memfd.get());
  if (auto* error = std::get_if<JournalError>(&read)) {
    // Escaped: the reason may quote what a hostile predecessor wrote.
    spdlog::error("the node journal is refused ({}): every node the kernel holds is stale",
                  escape_text(error->reason));
    // Its FUSE_INIT and high-water marks, if its header was sound: no nodes, no handles.
    previous = std::move(error->header);
    out.journal_refused = true;
  } else {
    previous = std::get<JournalState>(std::move(read));
  }
  if (previous.init_request.empty()) {
    // No FUSE_INIT was read (or the predecessor died between reading it and recording it):
    // the kernel has queued nothing else, and holds no node. Serve as a first worker; RESEND
    // brings back a FUSE_INIT read and not recorded (Linux 6.9; before, that mount waits).
    fresh_journal(std::move(memfd));
    session.expect_init();
    out.resend = !env.test_no_resend && session.request_resend() == 0;
    spdlog::warn("generation {}: no FUSE_INIT was answered before; serving as a first worker",
                 boot.generation);
    return out;
  }
  if (previous.init_reply.empty()) {
    // Read and recorded, never answered: the kernel still waits for this reply, and nothing
    // else can be queued before it. Answer it now, as the predecessor would have.
    fresh_journal(std::move(memfd));
    session.answer_init(previous.init_request);
    spdlog::warn("generation {}: answered the FUSE_INIT its predecessor had read",
                 boot.generation);
    return out;
  }
  out.restored = restore_journal(fs, session.handles(), previous);
  out.journal = std::make_unique<NodeJournal>(std::move(memfd), out.restored.kept);
  session.attach_journal(out.journal.get(), false);
  if (!session.replay_init(previous.init_request, previous.init_reply)) {
    spdlog::warn("this worker negotiates FUSE_INIT otherwise than its predecessor did; the "
                 "kernel keeps what was agreed first");
  }
  out.took_over = true;
  const int err = env.test_no_resend ? EINVAL : session.request_resend();
  out.resend = err == 0;
  // With RESEND the kernel queues the predecessor's requests again (this worker records them
  // as it reads them); without, they are ended here, before any new request is read.
  if (!out.resend) out.failed = session.fail_requests(in_flight, EIO);
  session.clear_in_flight();
  const auto took = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - started);
  spdlog::info("generation {} took the connection over in {} us: {} nodes and {} handles "
               "restored, {} nodes stale, {} handles lost",
               boot.generation, took.count(), out.restored.nodes, out.restored.handles,
               out.restored.stale_nodes, out.restored.lost_handles);
  if (!out.resend) {
    spdlog::warn("the kernel refused FUSE_NOTIFY_RESEND ({}): the {} requests the previous "
                 "worker had taken failed with EIO (Linux 6.9 or later resends them)",
                 std::strerror(err), out.failed);
  }
  return out;
}

[[noreturn]] void run(const Options& options, const Environment& env) {
  // execve made us dumpable again: no core dump of served file contents, and no ptrace or
  // /proc/PID/mem from anything but root over this user namespace.
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    spdlog::error("prctl(PR_SET_DUMPABLE, 0): {}", std::strerror(errno));
    exit_now(1);
  }

  Bootstrap bootstrap;
  try {
    bootstrap = receive_bootstrap(options.bootstrap_fd);
  } catch (const std::exception& e) {
    spdlog::error("bootstrap on fd {} failed: {}", options.bootstrap_fd, e.what());
    exit_now(1);
  }
  const int ipc_fd = bootstrap.ipc.get();
  ipc::WorkerBootstrap boot;
  try {
    boot = ipc::decode_bootstrap(bootstrap.payload);
  } catch (const std::exception& e) {
    // What to serve is this worker's command line, in effect: a bad one is a usage error.
    fail_mount(ipc_fd, e.what(), kExitUsage);
  }
  const ipc::MountSpec& spec = boot.spec;
  install_signal_handlers(boot.test_ignore_stop);
  if (spec.sandbox != ipc::SandboxMode::kNone) {
    if (const auto problem = confinement_problem(spec.degraded())) fail_mount(ipc_fd, *problem);
  }

  limit_memory(ipc_fd, spec, env);
  std::unique_ptr<Backend> fs;
  try {
    fs = open_backend(spec, std::move(bootstrap.broker), boot.generation > 1);
  } catch (const std::exception& e) {
    fail_mount(ipc_fd, e.what());
  }

  if (env.panic_on_init) {
    flush_logs();
    std::fputs("heddle-fuse-worker: panic injected by HEDDLE_FUSE_WORKER_PANIC_ON_INIT\n", stderr);
    exit_now(kExitPanic);
  }

  if (boot.generation > 1 && !bootstrap.journal) {
    fail_mount(ipc_fd, "worker generation " + std::to_string(boot.generation) +
                           " was given no node journal: it cannot take the connection over");
  }

  // All live until _exit(): the FUSE threads use them.
  std::optional<FuseSession> session;
  Restart restart;
  try {
    session.emplace(std::move(bootstrap.fuse), *fs, trace_logging());
    if (bootstrap.journal) restart = take_over(std::move(bootstrap.journal), boot, env, *fs, *session);
    // With its session over a worker has nothing left to serve: it ends, and its supervisor
    // (which sees whether the mount is gone) ends the rest.
    session->start(kMaxIdleThreads, [](bool closed) {
      if (closed) spdlog::info("the FUSE session is over; exiting");
      exit_now(closed ? kExitSessionEnded : 1);
    });
  } catch (const std::exception& e) {
    fail_mount(ipc_fd, std::string("cannot serve the FUSE connection: ") + e.what());
  }
  if (restart.took_over) forget_stale_names(restart, *session);

  // Tests only: a window before MountReady in which to kill things (the fault matrix).
  if (env.hold_ready.count() > 0) std::this_thread::sleep_for(env.hold_ready);
  try {
    send(ipc_fd, ipc::MountReady{boot.host_pid, spec.mountpoint});
  } catch (const std::exception& e) {
    spdlog::error("cannot send MountReady: {}", e.what());
    exit_now(1);
  }
  spdlog::info("serving {} {} at {} (host pid {})", describe_source(spec.source),
               spec.writable() ? "writable, overlay " + spec.overlay_dir : "read-only",
               spec.mountpoint, boot.host_pid);
  serve_ipc(ipc_fd, boot, *fs, *session, restart);
}

}  // namespace
}  // namespace heddle::worker

int main(int argc, char** argv) {
  using namespace heddle::worker;
  const Environment env = Environment::read();
  init_logging(env.log_levels);
  const std::span<const char* const> args(argv + 1,
                                          static_cast<std::size_t>(argc > 0 ? argc - 1 : 0));
  const ParsedArgs parsed = parse_args(args);
  if (std::holds_alternative<HelpRequested>(parsed)) {
    // `doctor` runs this inside the sandbox, where LeakSanitizer's exit-time check (which
    // needs ptrace) cannot run: leave as the serving path does, without atexit handlers.
    std::cout << usage_text() << std::flush;
    exit_now(0);
  }
  if (const auto* error = std::get_if<UsageError>(&parsed)) {
    std::cerr << "heddle-fuse-worker: " << error->message << " (see --help)\n";
    return 2;
  }
  run(std::get<Options>(parsed), env);
}
