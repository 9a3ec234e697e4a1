// heddle_bench: the supervisor's Status round trip through a live sandboxed worker, side by side
// with the physical limit of its transport (a raw AF_UNIX socketpair ping-pong with a forked
// echo process carrying the very same bytes); spawn -> MountReady side by side with the same
// worker unsandboxed and with what a user would script instead (bwrap + libfuse's example
// server); idle memory; and 100 concurrent mounts. See bench/README.md for what is measured
// and why.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench_support.h"
#include "heddle/error.h"
#include "heddle/ipc/frame.h"
#include "heddle/ipc/message.h"
#include "heddle/launcher/supervisor.h"
#include "heddle/unique_fd.h"
#include "support/unsandboxed_worker.h"

namespace {

namespace fs = std::filesystem;
using heddle::Error;
using heddle::UniqueFd;
using heddle::throw_errno;
using namespace heddle::bench;  // arguments, interruption, mounts, processes, statistics
using heddle::ipc::MountSpec;
using heddle::launcher::Supervisor;

// The libfuse example server of the bwrap composition, built next to this program.
#ifndef HEDDLE_BENCH_FUSE_SERVER
#error "HEDDLE_BENCH_FUSE_SERVER (the example server's target name) must be defined"
#endif
constexpr const char* kFuseServer = HEDDLE_BENCH_FUSE_SERVER;
// passthrough_ll serves `-o source=DIR`; hello_ll serves one built-in file.
constexpr bool kFuseServerPassthrough = HEDDLE_BENCH_FUSE_SERVER_PASSTHROUGH != 0;
// The fd the example server finds its FUSE connection on (its mountpoint is /dev/fd/3).
constexpr int kServerFuseFd = 3;
// A spawn (or the first answer through a mount) that takes longer has hung.
constexpr std::chrono::seconds kHangLimit{15};

// ---------------------------------------------------------------------------------------------
// Configuration

struct Config {
  int status_warmup = 200;
  int status_rounds = 10000;
  int block = 500;  // rounds per interleaved block (see run_rtt_benches)
  int reference_warmup = 16;
  int reference_rounds = 256;
  int spawn_warmup = 3;
  int spawn_rounds = 50;
  int mounts = 100;
  int mount_threads = 4;
};

Config parse_args(int argc, char** argv) {
  Config config;
  const std::string usage =
      std::string(
          "usage: heddle_bench [--rounds N] [--spawn-rounds N] [--mounts N] [--mount-threads N]\n"
          "  --rounds N         timed Status round trips per path (default 10000, min 10000\n"
          "                     recommended for a meaningful p99)\n"
          "  --spawn-rounds N   timed spawns of each of: ours, the worker unsandboxed, bwrap +\n"
          "                     libfuse's ") +
      kFuseServer +
      ", interleaved (default 50)\n"
      "  --mounts N         concurrent mounts held at once (default 100)\n"
      "  --mount-threads N  threads spawning them (default 4; 1 = one after the other)\n"
      "Must run as root. Set HEDDLE_FUSE_WORKER_BIN to use another worker binary.\n";
  parse_flags(argc, argv, usage,
              {{"--rounds", [&](int v) { config.status_rounds = v; }},
               {"--spawn-rounds", [&](int v) { config.spawn_rounds = v; }},
               {"--mounts", [&](int v) { config.mounts = v; }},
               {"--mount-threads", [&](int v) { config.mount_threads = v; }}});
  return config;
}

// ---------------------------------------------------------------------------------------------
// The source tree

void write_file(const fs::path& path, const std::string& content) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << content;
  if (!out) throw Error("write " + path.string(), EIO);
  fs::permissions(path, fs::perms(0644));
}

void make_source_tree(const fs::path& root) {
  fs::create_directories(root);
  fs::permissions(root, fs::perms(0755));
  write_file(root / "README.txt", "heddle_bench source tree\n");
  write_file(root / "src" / "main.rs", "fn main() {}\n");
  fs::permissions(root / "src", fs::perms(0755));
}

// ---------------------------------------------------------------------------------------------
// The physical limit: a forked echo process on the other end of an AF_UNIX SOCK_STREAM
// socketpair. Setup: u32 request length, u32 reply length, the reply bytes. Then, until EOF:
// read exactly one request, write the reply in one send(). Nothing else, no parsing.

bool read_exact(int fd, char* data, std::size_t size) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t got = ::recv(fd, data + done, size - done, 0);
    if (got > 0) {
      done += static_cast<std::size_t>(got);
    } else if (got == 0) {
      return false;
    } else if (errno != EINTR) {
      return false;
    }
  }
  return true;
}

bool write_exact(int fd, const char* data, std::size_t size) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t sent = ::send(fd, data + done, size - done, MSG_NOSIGNAL);
    if (sent > 0) {
      done += static_cast<std::size_t>(sent);
    } else if (sent < 0 && errno != EINTR) {
      return false;
    }
  }
  return true;
}

std::uint32_t load_u32(const char* p) {
  std::uint32_t v = 0;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// The child: only recv/send/_exit, on buffers allocated before fork().
[[noreturn]] void echo_child(int fd, std::vector<char>& request, std::vector<char>& reply) {
  std::array<char, 8> setup{};
  if (!read_exact(fd, setup.data(), setup.size())) ::_exit(0);
  const std::uint32_t request_size = load_u32(setup.data());
  const std::uint32_t reply_size = load_u32(setup.data() + 4);
  if (request_size > request.size() || reply_size > reply.size()) ::_exit(3);
  if (!read_exact(fd, reply.data(), reply_size)) ::_exit(4);
  for (;;) {
    if (!read_exact(fd, request.data(), request_size)) ::_exit(0);  // EOF: the parent is done
    if (!write_exact(fd, reply.data(), reply_size)) ::_exit(5);
  }
}

class EchoProcess {
 public:
  // Forked before any thread exists (before the Supervisor is spawned).
  EchoProcess() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) throw_errno("socketpair");
    UniqueFd parent(fds[0]);
    UniqueFd child(fds[1]);
    std::vector<char> request(heddle::ipc::kMaxFrameBody + 4);
    std::vector<char> reply(heddle::ipc::kMaxFrameBody + 4);
    const pid_t parent_pid = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) throw_errno("fork the echo process");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent_pid) ::_exit(6);
      parent.reset();
      echo_child(child.get(), request, reply);
    }
    fd_ = std::move(parent);
  }
  EchoProcess(const EchoProcess&) = delete;
  EchoProcess& operator=(const EchoProcess&) = delete;
  ~EchoProcess() {
    if (pid_ > 0) {
      try {
        (void)finish();
      } catch (...) {
      }
    }
  }

  void setup(const std::string& request, const std::string& reply) {
    std::array<char, 8> header{};
    const auto request_size = static_cast<std::uint32_t>(request.size());
    const auto reply_size = static_cast<std::uint32_t>(reply.size());
    std::memcpy(header.data(), &request_size, 4);
    std::memcpy(header.data() + 4, &reply_size, 4);
    if (!write_exact(fd_.get(), header.data(), header.size()) ||
        !write_exact(fd_.get(), reply.data(), reply.size())) {
      throw_errno("send the echo process its setup");
    }
  }

  [[nodiscard]] int fd() const { return fd_.get(); }

  // Closes our end (the child sees EOF) and reaps it; returns its exit status. After a short
  // grace it is killed, so that nothing survives an error.
  int finish() {
    fd_.reset();
    const pid_t pid = std::exchange(pid_, -1);
    int status = 0;
    for (int i = 0; i < 200; ++i) {
      const pid_t got = ::waitpid(pid, &status, WNOHANG);
      if (got == pid) return status;
      if (got < 0 && errno != EINTR) throw_errno("waitpid the echo process");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    throw Error("the echo process did not exit on EOF; killed it", ETIMEDOUT);
  }

 private:
  pid_t pid_ = -1;
  UniqueFd fd_;
};

// ---------------------------------------------------------------------------------------------
// The three round-trip paths, each one call = one timed round trip.

using RoundTrip = std::function<void()>;

// ours: Supervisor::status() through the live sandboxed worker.
RoundTrip status_path(heddle::launcher::Supervisor& supervisor, std::uint32_t worker_pid) {
  return [&supervisor, worker_pid] {
    const auto reply = supervisor.status();
    if (reply.pid != worker_pid) {
      throw Error("StatusOk names pid " + std::to_string(reply.pid) + ", expected " +
                      std::to_string(worker_pid),
                  EPROTO);
    }
  };
}

// the physical limit: the same bytes, raw send()/recv() only.
RoundTrip raw_path(int fd, const std::string& request, std::size_t reply_size,
                   std::vector<char>& buffer) {
  buffer.resize(reply_size);
  return [fd, &request, reply_size, &buffer] {
    if (!write_exact(fd, request.data(), request.size())) throw_errno("socketpair send");
    if (!read_exact(fd, buffer.data(), reply_size)) throw Error("socketpair recv: EOF", EPIPE);
  };
}

// decomposition: our framing code (write_frame/read_frame with the same timeout as status(),
// JSON decode included) against the same dumb echo process.
RoundTrip framed_path(int fd, std::chrono::milliseconds timeout) {
  return [fd, timeout] {
    heddle::ipc::write_frame(fd, heddle::ipc::Status{}, timeout);
    const auto reply = heddle::ipc::read_frame(fd, timeout);
    if (!reply || !std::holds_alternative<heddle::ipc::StatusOk>(*reply)) {
      throw Error("framed echo: expected StatusOk", EPROTO);
    }
  };
}

void warm(const RoundTrip& trip, int rounds) {
  for (int i = 0; i < rounds; ++i) {
    check_interrupted();
    trip();
  }
}

void timed(const RoundTrip& trip, int rounds, std::vector<std::int64_t>& out) {
  for (int i = 0; i < rounds; ++i) {
    if ((i & 63) == 0) check_interrupted();
    const auto t0 = Clock::now();
    trip();
    const auto t1 = Clock::now();
    out.push_back(elapsed_ns(t0, t1));
  }
}

// The reference bench's figure: `warmup` untimed rounds, then the max of `rounds`.
double reference_max_us(const RoundTrip& trip, int warmup, int rounds) {
  warm(trip, warmup);
  std::vector<std::int64_t> samples;
  samples.reserve(static_cast<std::size_t>(rounds));
  timed(trip, rounds, samples);
  return summarize(std::move(samples)).max_us;
}

struct RttResults {
  Stats status;
  Stats raw;
  Stats framed;
  double status_ref_max_us = 0;
  double raw_ref_max_us = 0;
  double framed_ref_max_us = 0;
  std::size_t request_bytes = 0;
  std::size_t reply_bytes = 0;
  std::string reply_body;
  Memory worker_idle;  // the sandboxed worker after mounting and one Status
  Memory guard_idle;   // the mount guard the supervisor started
};

RttResults run_rtt_benches(const Config& config, EchoProcess& echo, const std::string& source,
                           const std::string& mountpoint) {
  RttResults results;
  LiveMount mount(MountSpec::directory(source, mountpoint));
  const std::uint32_t worker_pid = mount->ready().pid;
  const heddle::launcher::SupervisorOptions defaults;

  const RoundTrip status = status_path(*mount, worker_pid);
  // Idle memory: right after mounting and one Status, before any load.
  status();
  results.worker_idle = memory_of(mount->pid());
  results.guard_idle = memory_of(mount->guard_pid());
  warm(status, config.status_warmup);

  // The bytes on the wire: the encoded Status frame, and the real reply re-encoded (the
  // encoder is the worker's too, so the size is the size the worker sent).
  const heddle::ipc::StatusOk real_reply = mount->status();
  const std::string request = heddle::ipc::encode_frame(heddle::ipc::Status{});
  const std::string reply = heddle::ipc::encode_frame(real_reply);
  results.request_bytes = request.size();
  results.reply_bytes = reply.size();
  results.reply_body = reply.substr(4);
  echo.setup(request, reply);

  std::vector<char> buffer;
  const RoundTrip raw = raw_path(echo.fd(), request, reply.size(), buffer);
  const RoundTrip framed = framed_path(echo.fd(), defaults.status_timeout);
  warm(raw, config.status_warmup);
  warm(framed, config.status_warmup);

  // Interleaved blocks, so that both sides see the same noise from the 2 shared cores (a
  // burst of background load cannot land on one path only). Nothing is pinned.
  std::vector<std::int64_t> status_ns, raw_ns, framed_ns;
  for (auto* v : {&status_ns, &raw_ns, &framed_ns}) {
    v->reserve(static_cast<std::size_t>(config.status_rounds));
  }
  for (int done = 0; done < config.status_rounds; done += config.block) {
    const int n = std::min(config.block, config.status_rounds - done);
    timed(status, n, status_ns);
    timed(raw, n, raw_ns);
    timed(framed, n, framed_ns);
  }
  results.status = summarize(std::move(status_ns));
  results.raw = summarize(std::move(raw_ns));
  results.framed = summarize(std::move(framed_ns));

  results.status_ref_max_us = reference_max_us(status, config.reference_warmup, config.reference_rounds);
  results.raw_ref_max_us = reference_max_us(raw, config.reference_warmup, config.reference_rounds);
  results.framed_ref_max_us =
      reference_max_us(framed, config.reference_warmup, config.reference_rounds);

  if (!mount->is_alive()) throw Error("the worker died during the bench", 0);
  return results;  // ~LiveMount unmounts
}

// ---------------------------------------------------------------------------------------------
// Spawn -> ready, three ways, interleaved: ours (Supervisor::spawn: mount, guard, sandboxed
// worker, MountReady), the same worker unsandboxed (mount, fork/exec, MountReady), and the
// composition a user would script (mount, bwrap, libfuse's example server, first answer).

// SIGKILLs `pid` (a process this bench started, directly or through a Supervisor) unless
// disarmed within kHangLimit: a mount whose server hangs would block stat() forever, and
// killing the server is what makes the kernel fail the pending request. Started before the
// timed region, so its thread costs nothing inside it.
class Watchdog {
 public:
  explicit Watchdog(std::string what) : what_(std::move(what)) {
    thread_ = std::thread([this] {
      std::unique_lock lock(mutex_);
      if (cv_.wait_for(lock, kHangLimit, [this] { return done_; })) return;
      fired_ = true;
      std::fprintf(stderr, "%s: %s hung for %lld s; killing pid %d\n", g_program, what_.c_str(),
                   static_cast<long long>(kHangLimit.count()), static_cast<int>(pid_));
      if (pid_ > 0) ::kill(pid_, SIGKILL);
    });
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  ~Watchdog() { disarm(); }
  void arm(pid_t pid) {
    const std::lock_guard lock(mutex_);
    pid_ = pid;
  }
  // Returns true if it fired.
  bool disarm() {
    {
      const std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    return fired_;
  }

 private:
  std::string what_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  bool fired_ = false;
  pid_t pid_ = -1;
  std::thread thread_;
};

// The first answer through a mount: stat() of its root (FUSE_INIT, then GETATTR) and a full
// readdir (OPENDIR, READDIR, RELEASEDIR). Returns the number of entries.
int first_answer(const std::string& mountpoint) {
  struct stat st {};
  if (::stat(mountpoint.c_str(), &st) != 0) throw_errno("stat " + mountpoint);
  if (!S_ISDIR(st.st_mode)) throw Error(mountpoint + " is not a directory through the mount", EIO);
  DIR* dir = ::opendir(mountpoint.c_str());
  if (dir == nullptr) throw_errno("opendir " + mountpoint);
  int entries = 0;
  errno = 0;
  while (::readdir(dir) != nullptr) ++entries;
  const int saved = errno;
  ::closedir(dir);
  if (saved != 0) throw Error("readdir " + mountpoint, saved);
  if (entries < 3) throw Error("readdir " + mountpoint + ": only " + std::to_string(entries) + " entries", EIO);
  return entries;
}

// One mount made by us: mount(2) of an open /dev/fuse, as a script would (type fuse, ro,
// nosuid, nodev). Unmounted on destruction if still there (lazily if busy).
class ScriptedMount {
 public:
  explicit ScriptedMount(const std::string& mountpoint) : mountpoint_(mountpoint) {
    device_.reset(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
    if (!device_) throw_errno("open /dev/fuse");
    const std::string options = "fd=" + std::to_string(device_.get()) +
                                ",rootmode=40000,user_id=0,group_id=0";
    if (::mount("heddle-bench-bwrap", mountpoint.c_str(), "fuse", MS_RDONLY | MS_NOSUID | MS_NODEV,
                options.c_str()) != 0) {
      throw_errno("mount fuse at " + mountpoint);
    }
    mounted_ = true;
  }
  ScriptedMount(const ScriptedMount&) = delete;
  ScriptedMount& operator=(const ScriptedMount&) = delete;
  ~ScriptedMount() {
    if (mounted_ && ::umount2(mountpoint_.c_str(), 0) != 0) ::umount2(mountpoint_.c_str(), MNT_DETACH);
  }
  [[nodiscard]] int device() const { return device_.get(); }
  void close_device() { device_.reset(); }
  // umount(2): the kernel ends the connection, the server reads ENODEV and exits.
  void unmount() {
    if (!mounted_) return;
    if (::umount2(mountpoint_.c_str(), 0) != 0) throw_errno("umount " + mountpoint_);
    mounted_ = false;
  }

 private:
  std::string mountpoint_;
  UniqueFd device_;
  bool mounted_ = false;
};

// bwrap running the example server on an inherited FUSE fd. SIGKILLed and reaped on
// destruction if still running (--die-with-parent takes the server along).
class BwrapServer {
 public:
  BwrapServer(const std::string& server, const std::string& source, int fuse_fd,
              const std::string& log_path) {
    std::vector<std::string> args = {
        "/usr/bin/bwrap", "--unshare-all", "--die-with-parent",
        "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
        "--ro-bind", source, source, "--ro-bind", server, server,
        "--proc", "/proc", "--dev", "/dev",
        server, "-f"};
    if (kFuseServerPassthrough) {
      args.emplace_back("-o");
      args.emplace_back("source=" + source);
    }
    args.emplace_back("/dev/fd/" + std::to_string(kServerFuseFd));
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // The server's stderr (libfuse's messages): shown only if it fails.
    const UniqueFd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!log) throw_errno("open " + log_path);
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) throw_errno("fork bwrap");
    if (pid_ == 0) {
      // Only async-signal-safe calls from here on.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(126);
      if (::dup2(log.get(), STDERR_FILENO) < 0) ::_exit(126);
      // dup2 onto itself would keep O_CLOEXEC: clear it instead.
      if (fuse_fd == kServerFuseFd) {
        if (::fcntl(fuse_fd, F_SETFD, 0) != 0) ::_exit(126);
      } else if (::dup2(fuse_fd, kServerFuseFd) < 0) {
        ::_exit(126);
      }
      ::close_range(kServerFuseFd + 1, ~0U, 0);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  BwrapServer(const BwrapServer&) = delete;
  BwrapServer& operator=(const BwrapServer&) = delete;
  ~BwrapServer() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  [[nodiscard]] pid_t pid() const { return pid_; }
  // Waits for bwrap to exit (after the unmount); SIGKILL after kHangLimit. Its wait status.
  int wait() {
    const auto deadline = Clock::now() + kHangLimit;
    int status = 0;
    for (;;) {
      const pid_t got = ::waitpid(pid_, &status, WNOHANG);
      if (got == pid_) break;
      if (got < 0 && errno != EINTR) throw_errno("waitpid bwrap");
      if (Clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        pid_ = -1;
        throw Error("bwrap did not exit after the unmount; killed it", ETIMEDOUT);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

// The processes of the bwrap composition (bwrap, its pid-1 monitor, the server) and their
// total VmRSS; the server is the last descendant.
struct TreeMemory {
  std::uint64_t total_kib = 0;
  std::uint64_t server_kib = 0;
  int processes = 0;
};

TreeMemory tree_memory(pid_t root) {
  TreeMemory m;
  std::vector<pid_t> pids = {root};
  const auto below = descendants(root);
  pids.insert(pids.end(), below.begin(), below.end());
  for (const pid_t pid : pids) {
    const auto rss = memory_of(pid).rss_kib;
    m.total_kib += rss;
    m.server_kib = rss;
    ++m.processes;
  }
  return m;
}

struct SpawnResults {
  Stats ours, ours_answer, unmount;          // ours: to MountReady, to the first answer
  Stats unsandboxed, unsandboxed_answer;     // the same worker, fork/exec'd by us
  Stats bwrap;                               // bwrap composition: to the first answer
  Memory unsandboxed_idle;                   // the unsandboxed worker after one Status
  TreeMemory bwrap_idle;                     // the composition after its first answer
};

struct SpawnSamples {
  std::vector<std::int64_t> ours, ours_answer, unmount, unsandboxed, unsandboxed_answer, bwrap;
};

void spawn_ours(const ScratchDir& root, const std::string& source, bool keep, SpawnSamples& out) {
  MountPoint mountpoint(root / "mnt-ours");
  Watchdog watchdog("spawn (ours)");
  // LiveMount times Supervisor::spawn alone, not its own mountinfo check after it.
  LiveMount mount(MountSpec::directory(source, mountpoint.path()));
  watchdog.arm(mount->pid());
  const auto a0 = Clock::now();
  (void)first_answer(mountpoint.path());
  const auto a1 = Clock::now();
  if (watchdog.disarm()) throw Error("the first answer through our mount hung", ETIMEDOUT);
  const auto u0 = Clock::now();
  (*mount).unmount();
  const auto u1 = Clock::now();
  mount.unmount();  // checks that the mount is gone
  if (!keep) return;
  const auto spawn_ns = static_cast<std::int64_t>(mount.spawn_seconds() * 1e9);
  out.ours.push_back(spawn_ns);
  out.ours_answer.push_back(spawn_ns + elapsed_ns(a0, a1));
  out.unmount.push_back(elapsed_ns(u0, u1));
}

// The same worker without any sandbox: tests/support's harness mounts, fork/execs it with
// [ipc socket, /dev/fuse fd] on its bootstrap fd and reads MountReady. Its mount point (and
// the temp dir around it) is made inside the timed region: mkdtemp + mkdir, a few µs.
void spawn_unsandboxed(const std::string& source, bool keep, SpawnSamples& out,
                       Memory* idle = nullptr) {
  heddle::test::WorkerConfig worker_config;
  worker_config.source = source;
  Watchdog watchdog("spawn (unsandboxed)");
  const auto t0 = Clock::now();
  heddle::test::UnsandboxedWorker worker(worker_config);
  const auto t1 = Clock::now();
  if (!worker.ready()) throw Error("the unsandboxed worker did not send MountReady", EPROTO);
  watchdog.arm(worker.pid());
  const auto a0 = Clock::now();
  (void)first_answer(worker.mountpoint().string());
  const auto a1 = Clock::now();
  if (watchdog.disarm()) throw Error("the first answer through the unsandboxed mount hung", ETIMEDOUT);
  if (idle != nullptr) {
    worker.send(heddle::ipc::Status{});
    const auto reply = worker.receive(std::chrono::seconds(5));
    if (!reply || !std::holds_alternative<heddle::ipc::StatusOk>(*reply)) {
      throw Error("the unsandboxed worker did not answer Status", EPROTO);
    }
    *idle = memory_of(worker.pid());
  }
  if (!keep) return;  // ~UnsandboxedWorker: Stop, wait, detach the mount, remove its dirs
  out.unsandboxed.push_back(elapsed_ns(t0, t1));
  out.unsandboxed_answer.push_back(elapsed_ns(t0, t1) + elapsed_ns(a0, a1));
}

// What a user would script: open /dev/fuse, mount it, bwrap the example server on the fd.
// Ready = the first answer through the mount (stat + readdir), which waits for the server's
// FUSE_INIT reply.
void spawn_bwrap(const ScratchDir& root, const std::string& source, const std::string& server,
                 bool keep, SpawnSamples& out, TreeMemory* idle = nullptr) {
  MountPoint mountpoint(root / "mnt-bwrap");
  const std::string log = root / "bwrap-server.log";
  Watchdog watchdog("spawn (bwrap composition)");
  std::optional<BwrapServer> bwrap;
  const auto t0 = Clock::now();
  ScriptedMount mount(mountpoint.path());
  bwrap.emplace(server, source, mount.device(), log);
  mount.close_device();  // only the server holds the connection now: if it dies, ENOTCONN
  watchdog.arm(bwrap->pid());
  try {
    (void)first_answer(mountpoint.path());
  } catch (const Error& e) {
    throw Error(e.attempt() + " (bwrap + " + kFuseServer + " said: " + read_text(log) + ")",
                e.code());
  }
  const auto t1 = Clock::now();
  if (watchdog.disarm()) throw Error("the bwrap composition hung: " + read_text(log), ETIMEDOUT);
  if (idle != nullptr) *idle = tree_memory(bwrap->pid());
  mount.unmount();
  const int status = bwrap->wait();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw Error("bwrap + " + std::string(kFuseServer) + " exited with wait status " +
                    std::to_string(status) + " after the unmount: " + read_text(log),
                0);
  }
  if (is_mounted(mountpoint.path())) throw Error(mountpoint.path() + " still mounted", EBUSY);
  if (keep) out.bwrap.push_back(elapsed_ns(t0, t1));
}

SpawnResults run_spawn_bench(const Config& config, const ScratchDir& root,
                             const std::string& source) {
  const std::string server = own_bin_dir() + "/" + kFuseServer;
  if (::access(server.c_str(), X_OK) != 0) throw_errno("the example server " + server);
  if (::access("/usr/bin/bwrap", X_OK) != 0) throw_errno("/usr/bin/bwrap");
  SpawnSamples samples;
  // Interleaved, each iteration in a rotated order, so that background load and any
  // ordering effect (a warm page cache for whoever goes second) hit all three alike.
  const std::array<std::function<void(bool)>, 3> paths = {
      [&](bool keep) { spawn_ours(root, source, keep, samples); },
      [&](bool keep) { spawn_unsandboxed(source, keep, samples); },
      [&](bool keep) { spawn_bwrap(root, source, server, keep, samples); },
  };
  for (int i = 0; i < config.spawn_warmup + config.spawn_rounds; ++i) {
    for (int k = 0; k < 3; ++k) {
      check_interrupted();
      paths[static_cast<std::size_t>((i + k) % 3)](i >= config.spawn_warmup);
    }
  }
  SpawnResults r;
  // Idle memory of the alternatives, measured once each after the timed loop.
  spawn_unsandboxed(source, false, samples, &r.unsandboxed_idle);
  spawn_bwrap(root, source, server, false, samples, &r.bwrap_idle);
  r.ours = summarize(std::move(samples.ours));
  r.ours_answer = summarize(std::move(samples.ours_answer));
  r.unmount = summarize(std::move(samples.unmount));
  r.unsandboxed = summarize(std::move(samples.unsandboxed));
  r.unsandboxed_answer = summarize(std::move(samples.unsandboxed_answer));
  r.bwrap = summarize(std::move(samples.bwrap));
  return r;
}

// ---------------------------------------------------------------------------------------------
// A real background supervisor: `heddle-fuse-launcher mount --json`, as a user runs it.

// The CLI mount; `heddle-fuse-launcher unmount MP` on destruction if still mounted.
class CliMount {
 public:
  CliMount(std::string launcher, const std::string& source, std::string mountpoint)
      : launcher_(std::move(launcher)), mountpoint_(std::move(mountpoint)) {
    std::string out;
    CommandOptions options;
    options.capture_stdout = &out;
    run_command({launcher_, "mount", "--dir", source, "--mountpoint", mountpoint_, "--json"}, options);
    mounted_ = true;
    const auto json = nlohmann::json::parse(out);
    worker_pid = json.at("pid").get<pid_t>();
    supervisor_pid = json.at("supervisor_pid").get<pid_t>();
    guard_pid = json.at("guard_pid").get<pid_t>();
  }
  CliMount(const CliMount&) = delete;
  CliMount& operator=(const CliMount&) = delete;
  ~CliMount() {
    try {
      unmount();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: %s unmount %s: %s\n", g_program, launcher_.c_str(),
                   mountpoint_.c_str(), e.what());
    }
  }
  void status() const {
    std::string out;
    CommandOptions options;
    options.capture_stdout = &out;
    run_command({launcher_, "status", mountpoint_, "--json"}, options);
  }
  void unmount() {
    if (!mounted_) return;
    mounted_ = false;
    std::string out;  // "unmounted MP": not for the report
    CommandOptions options;
    options.capture_stdout = &out;
    run_command({launcher_, "unmount", mountpoint_}, options);
    if (is_mounted(mountpoint_)) throw Error(mountpoint_ + " still mounted after unmount", EBUSY);
  }

  pid_t worker_pid = -1;
  pid_t supervisor_pid = -1;
  pid_t guard_pid = -1;

 private:
  std::string launcher_;
  std::string mountpoint_;
  bool mounted_ = false;
};

struct CliResults {
  Memory supervisor, guard, worker;
};

CliResults run_cli_bench(const ScratchDir& root, const std::string& source) {
  MountPoint mountpoint(root / "mnt-cli");
  CliMount mount(own_bin_dir() + "/heddle-fuse-launcher", source, mountpoint.path());
  mount.status();
  CliResults r;
  r.supervisor = memory_of(mount.supervisor_pid);
  r.guard = memory_of(mount.guard_pid);
  r.worker = memory_of(mount.worker_pid);
  mount.unmount();
  return r;
}

// ---------------------------------------------------------------------------------------------
// Many mounts at once, in this process.

struct ManyResults {
  int mounts = 0;
  int threads = 0;
  double launch_s = 0;
  double unmount_s = 0;
  double workers_rss_mib = 0;
  double guards_rss_mib = 0;
  double workers_pss_mib = 0;  // what they use together: shared pages counted once
  double guards_pss_mib = 0;
  int status_ok = 0;
  bool unmounted_clean = false;
};

// May the bench hold a few fds per mount: the soft RLIMIT_NOFILE goes up to the hard limit.
void raise_fd_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) throw_errno("getrlimit RLIMIT_NOFILE");
  if (limit.rlim_cur == limit.rlim_max) return;
  limit.rlim_cur = limit.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) throw_errno("setrlimit RLIMIT_NOFILE");
}

ManyResults run_many_mounts(const Config& config, const ScratchDir& root, const std::string& source) {
  raise_fd_limit();
  ManyResults r;
  r.mounts = config.mounts;
  r.threads = std::min(config.mount_threads, config.mounts);
  const auto n = static_cast<std::size_t>(config.mounts);
  // Declared before the mounts: destroyed after them.
  std::vector<std::unique_ptr<MountPoint>> points;
  for (std::size_t i = 0; i < n; ++i) {
    points.push_back(std::make_unique<MountPoint>(root / ("mnt-many-" + std::to_string(i))));
  }
  std::vector<std::optional<LiveMount>> mounts(n);
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(r.threads));
  const auto t0 = Clock::now();
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < r.threads; ++t) {
      threads.emplace_back([&, t] {
        try {
          while (!failed && g_interrupted == 0) {
            const std::size_t i = next++;
            if (i >= n) break;
            mounts[i].emplace(MountSpec::directory(source, points[i]->path()));
          }
        } catch (...) {
          errors[static_cast<std::size_t>(t)] = std::current_exception();
          failed = true;
        }
      });
    }
    for (auto& thread : threads) thread.join();
  }
  const auto t1 = Clock::now();
  for (const auto& error : errors) {
    if (error) std::rethrow_exception(error);
  }
  check_interrupted();
  r.launch_s = seconds_between(t0, t1);
  std::uint64_t workers_kib = 0, guards_kib = 0, workers_pss_kib = 0, guards_pss_kib = 0;
  for (auto& mount : mounts) {
    workers_kib += memory_of((*mount)->pid()).rss_kib;
    guards_kib += memory_of((*mount)->guard_pid()).rss_kib;
    workers_pss_kib += pss_kib_of((*mount)->pid());
    guards_pss_kib += pss_kib_of((*mount)->guard_pid());
  }
  r.workers_rss_mib = static_cast<double>(workers_kib) / 1024.0;
  r.guards_rss_mib = static_cast<double>(guards_kib) / 1024.0;
  r.workers_pss_mib = static_cast<double>(workers_pss_kib) / 1024.0;
  r.guards_pss_mib = static_cast<double>(guards_pss_kib) / 1024.0;
  for (auto& mount : mounts) {
    const auto reply = (*mount)->status();
    if (reply.pid == (*mount)->ready().pid) ++r.status_ok;
  }
  const auto u0 = Clock::now();
  for (auto& mount : mounts) mount->unmount();
  r.unmount_s = seconds_between(u0, Clock::now());
  mounts.clear();
  r.unmounted_clean = std::none_of(points.begin(), points.end(), [](const auto& point) {
    return is_mounted(point->path());
  });
  return r;
}

// ---------------------------------------------------------------------------------------------
// Report

void row(const char* metric, double ours, double limit) {
  std::printf("| %-40s | %10.1f | %14.1f | %8.2fx |\n", metric, ours, limit, ours / limit);
}

void row_no_limit(const char* metric, double ours) {
  std::printf("| %-40s | %10.1f | %14s | %9s |\n", metric, ours, "-", "-");
}

void table_header(const char* metric, const char* limit) {
  std::printf("| %-40s | %10s | %14s | %9s |\n", metric, "ours", limit, "ratio");
  std::printf("|%s|%s|%s|%s|\n", std::string(42, '-').c_str(),
              std::string(11, '-').append(":").c_str(), std::string(15, '-').append(":").c_str(),
              std::string(10, '-').append(":").c_str());
}

void report(const Config& config, const RttResults& rtt, const SpawnResults& sp,
            const CliResults& cli, const ManyResults& many) {
  std::printf("\n## heddle_bench\n\n");
  std::printf("- nproc: %ld, affinity: CPU %s (children inherit it)\n",
              ::sysconf(_SC_NPROCESSORS_ONLN), allowed_cpus().c_str());
  std::printf("- kernel: %s\n", kernel_release().c_str());
  std::printf("- Status RTT: %d warm-up + %d timed rounds per path, interleaved in blocks of %d\n",
              config.status_warmup, config.status_rounds, config.block);
  std::printf("- wire: request %zu bytes (Status frame), reply %zu bytes (StatusOk frame: %s)\n",
              rtt.request_bytes, rtt.reply_bytes, rtt.reply_body.c_str());
  std::printf("- spawn: %d warm-up + %d timed iterations of each path, interleaved (rotated "
              "order), fresh mount point each; bwrap composition = /usr/bin/bwrap --unshare-all "
              "+ libfuse 3.14's example %s on /dev/fd/%d\n",
              config.spawn_warmup, config.spawn_rounds, kFuseServer, kServerFuseFd);
  std::printf("- %d concurrent mounts: Supervisor::spawn from %d thread%s in this process\n\n",
              many.mounts, many.threads, many.threads == 1 ? "" : "s");

  table_header("Status round trip (us)", "physical limit");
  row("Status RTT p50", rtt.status.p50_us, rtt.raw.p50_us);
  row("Status RTT p99", rtt.status.p99_us, rtt.raw.p99_us);
  row("Status RTT max", rtt.status.max_us, rtt.raw.max_us);
  row("Status RTT mean", rtt.status.mean_us, rtt.raw.mean_us);
  row("ref-style: max of 256 after 16 warm", rtt.status_ref_max_us, rtt.raw_ref_max_us);
  std::printf("\n");
  table_header("spawn -> ready (ms)", "alternative");
  row("p50 vs unsandboxed worker (MountReady)", sp.ours.p50_us / 1e3, sp.unsandboxed.p50_us / 1e3);
  row("p99 vs unsandboxed worker (MountReady)", sp.ours.p99_us / 1e3, sp.unsandboxed.p99_us / 1e3);
  row("p50 vs bwrap composition", sp.ours.p50_us / 1e3, sp.bwrap.p50_us / 1e3);
  row("p99 vs bwrap composition", sp.ours.p99_us / 1e3, sp.bwrap.p99_us / 1e3);
  row("to first answer p50 vs bwrap", sp.ours_answer.p50_us / 1e3, sp.bwrap.p50_us / 1e3);
  row("to first answer p99 vs bwrap", sp.ours_answer.p99_us / 1e3, sp.bwrap.p99_us / 1e3);
  row("to first answer p50 vs unsandboxed", sp.ours_answer.p50_us / 1e3,
      sp.unsandboxed_answer.p50_us / 1e3);
  row_no_limit("unmount p50", sp.unmount.p50_us / 1e3);
  row_no_limit("unmount p99", sp.unmount.p99_us / 1e3);
  std::printf("\n");
  const double ours_total_kib = static_cast<double>(cli.supervisor.rss_kib + cli.guard.rss_kib +
                                                    cli.worker.rss_kib);
  table_header("idle memory, VmRSS (KiB)", "alternative");
  row("worker vs unsandboxed worker", static_cast<double>(rtt.worker_idle.rss_kib),
      static_cast<double>(sp.unsandboxed_idle.rss_kib));
  row("worker vs bwrap's example server", static_cast<double>(rtt.worker_idle.rss_kib),
      static_cast<double>(sp.bwrap_idle.server_kib));
  row("CLI: supervisor+guard+worker vs bwrap all", ours_total_kib,
      static_cast<double>(sp.bwrap_idle.total_kib));
  row_no_limit("CLI background supervisor", static_cast<double>(cli.supervisor.rss_kib));
  row_no_limit("CLI mount guard", static_cast<double>(cli.guard.rss_kib));
  row_no_limit("CLI worker", static_cast<double>(cli.worker.rss_kib));
  row_no_limit("in-process supervisor's mount guard", static_cast<double>(rtt.guard_idle.rss_kib));

  std::printf("\nSpawn (ms, p50 / p99): ours to MountReady %.2f / %.2f, to the first answer "
              "%.2f / %.2f; unsandboxed worker to MountReady %.2f / %.2f, to the first answer "
              "%.2f / %.2f; bwrap + %s to the first answer %.2f / %.2f\n",
              sp.ours.p50_us / 1e3, sp.ours.p99_us / 1e3, sp.ours_answer.p50_us / 1e3,
              sp.ours_answer.p99_us / 1e3, sp.unsandboxed.p50_us / 1e3,
              sp.unsandboxed.p99_us / 1e3, sp.unsandboxed_answer.p50_us / 1e3,
              sp.unsandboxed_answer.p99_us / 1e3, kFuseServer, sp.bwrap.p50_us / 1e3,
              sp.bwrap.p99_us / 1e3);
  std::printf("The bwrap composition has %d processes (bwrap, its pid-1 monitor, the server).\n",
              sp.bwrap_idle.processes);
  std::printf("%d mounts: all MountReady after %.2f s (%d thread%s); workers' VmRSS %.1f MiB in "
              "total (%.0f KiB each), Pss %.1f MiB (%.0f KiB each); guards' VmRSS %.1f MiB, Pss "
              "%.1f MiB; %d/%d answered Status; unmounted in %.2f s; %s\n",
              many.mounts, many.launch_s, many.threads, many.threads == 1 ? "" : "s",
              many.workers_rss_mib, many.workers_rss_mib * 1024.0 / many.mounts,
              many.workers_pss_mib, many.workers_pss_mib * 1024.0 / many.mounts,
              many.guards_rss_mib, many.guards_pss_mib, many.status_ok, many.mounts,
              many.unmount_s, many.unmounted_clean ? "no mount left" : "MOUNTS LEFT");
  std::printf("Decomposition (p50 / p99 us): raw socketpair %.1f / %.1f; same echo through "
              "ipc::write_frame/read_frame %.1f / %.1f; live worker via Supervisor::status() "
              "%.1f / %.1f\n\n",
              rtt.raw.p50_us, rtt.raw.p99_us, rtt.framed.p50_us, rtt.framed.p99_us,
              rtt.status.p50_us, rtt.status.p99_us);

  // Machine-readable, for bench/run's medians across runs.
  result_line("status_rtt_p50_us", rtt.status.p50_us);
  result_line("status_rtt_p99_us", rtt.status.p99_us);
  result_line("status_rtt_p50_ratio_to_socketpair", rtt.status.p50_us / rtt.raw.p50_us);
  result_line("status_rtt_max_us", rtt.status_ref_max_us);  // reference style: 16 + max of 256
  result_line("status_p50_us", rtt.status.p50_us);
  result_line("status_p99_us", rtt.status.p99_us);
  result_line("status_max_us", rtt.status.max_us);
  result_line("status_ref_max256_us", rtt.status_ref_max_us);
  result_line("socketpair_p50_us", rtt.raw.p50_us);
  result_line("socketpair_p99_us", rtt.raw.p99_us);
  result_line("socketpair_max_us", rtt.raw.max_us);
  result_line("socketpair_ref_max256_us", rtt.raw_ref_max_us);
  result_line("framed_p50_us", rtt.framed.p50_us);
  result_line("framed_p99_us", rtt.framed.p99_us);
  result_line("framed_max_us", rtt.framed.max_us);
  result_line("framed_ref_max256_us", rtt.framed_ref_max_us);
  result_line("ratio_p50", rtt.status.p50_us / rtt.raw.p50_us);
  result_line("ratio_p99", rtt.status.p99_us / rtt.raw.p99_us);
  result_line("ratio_max", rtt.status.max_us / rtt.raw.max_us);
  result_line("ratio_ref_max256", rtt.status_ref_max_us / rtt.raw_ref_max_us);
  result_line("spawn_p50_ms", sp.ours.p50_us / 1e3);
  result_line("spawn_p99_ms", sp.ours.p99_us / 1e3);
  result_line("spawn_unsandboxed_p50_ms", sp.unsandboxed.p50_us / 1e3);
  result_line("spawn_unsandboxed_p99_ms", sp.unsandboxed.p99_us / 1e3);
  result_line("spawn_p50_ratio_to_unsandboxed", sp.ours.p50_us / sp.unsandboxed.p50_us);
  result_line("spawn_bwrap_p50_ms", sp.bwrap.p50_us / 1e3);
  result_line("spawn_bwrap_p99_ms", sp.bwrap.p99_us / 1e3);
  result_line("spawn_p50_ratio_to_bwrap_composition", sp.ours.p50_us / sp.bwrap.p50_us);
  result_line("spawn_answer_p50_ms", sp.ours_answer.p50_us / 1e3);
  result_line("spawn_answer_p99_ms", sp.ours_answer.p99_us / 1e3);
  result_line("spawn_unsandboxed_answer_p50_ms", sp.unsandboxed_answer.p50_us / 1e3);
  result_line("spawn_answer_p50_ratio_to_bwrap_composition", sp.ours_answer.p50_us / sp.bwrap.p50_us);
  result_line("unmount_p50_ms", sp.unmount.p50_us / 1e3);
  result_line("unmount_p99_ms", sp.unmount.p99_us / 1e3);
  result_line("worker_idle_rss_kib", static_cast<double>(rtt.worker_idle.rss_kib));
  result_line("worker_unsandboxed_idle_rss_kib", static_cast<double>(sp.unsandboxed_idle.rss_kib));
  result_line("bwrap_server_idle_rss_kib", static_cast<double>(sp.bwrap_idle.server_kib));
  result_line("bwrap_composition_idle_rss_kib", static_cast<double>(sp.bwrap_idle.total_kib));
  result_line("supervisor_idle_rss_kib", static_cast<double>(cli.supervisor.rss_kib));
  result_line("guard_idle_rss_kib", static_cast<double>(cli.guard.rss_kib));
  result_line("cli_worker_idle_rss_kib", static_cast<double>(cli.worker.rss_kib));
  result_line("composition_idle_rss_kib", ours_total_kib);
  const std::string many_key = "mounts_" + std::to_string(many.mounts) + "_";
  result_line((many_key + "launch_s").c_str(), many.launch_s);
  result_line((many_key + "workers_rss_mib").c_str(), many.workers_rss_mib);
  result_line((many_key + "guards_rss_mib").c_str(), many.guards_rss_mib);
  result_line((many_key + "workers_pss_mib").c_str(), many.workers_pss_mib);
  result_line((many_key + "guards_pss_mib").c_str(), many.guards_pss_mib);
  result_line((many_key + "status_ok").c_str(), many.status_ok);
  result_line((many_key + "unmount_s").c_str(), many.unmount_s);
  result_line((many_key + "unmounted_clean").c_str(), many.unmounted_clean ? 1 : 0);
}

int run(const Config& config) {
  if (::geteuid() != 0) throw Error("heddle_bench must run as root (it mounts FUSE)", EPERM);
  // The worker logs at info to stderr by default: one spawn would print several lines, 33
  // of them drown the report. The caller's HEDDLE_FUSE_LOG wins.
  ::setenv("HEDDLE_FUSE_LOG", "warn", /*overwrite=*/0);
  spdlog::set_level(spdlog::level::warn);
  const auto started = Clock::now();

  // Fork the echo process first, while this process has a single thread and no mount fds.
  EchoProcess echo;

  // Destroyed last: every mount point, mount and supervisor below is gone before it.
  ScratchDir root("heddle-bench-");
  const std::string source = root / "src";
  make_source_tree(source);
  std::printf("heddle_bench: 1/4 Status round trips ...\n");
  RttResults rtt;
  {
    MountPoint mountpoint(root / "mnt-rtt");
    rtt = run_rtt_benches(config, echo, source, mountpoint.path());
    if (is_mounted(mountpoint.path())) throw Error(mountpoint.path() + " still mounted", EBUSY);
  }
  const int echo_status = echo.finish();
  if (!WIFEXITED(echo_status) || WEXITSTATUS(echo_status) != 0) {
    throw Error("the echo process failed (wait status " + std::to_string(echo_status) + ")", 0);
  }

  std::printf("heddle_bench: 2/4 spawn -> ready, ours | unsandboxed | bwrap ...\n");
  const SpawnResults spawn = run_spawn_bench(config, root, source);
  std::printf("heddle_bench: 3/4 a background supervisor (heddle-fuse-launcher mount) ...\n");
  const CliResults cli = run_cli_bench(root, source);
  std::printf("heddle_bench: 4/4 %d concurrent mounts ...\n", config.mounts);
  const ManyResults many = run_many_mounts(config, root, source);
  if (!mounts_under(root.path()).empty()) throw Error("mounts left under " + root.path(), EBUSY);

  report(config, rtt, spawn, cli, many);
  std::printf("heddle_bench: done in %.1f s\n", seconds_between(started, Clock::now()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return bench_main("heddle_bench", [&] { return run(parse_args(argc, argv)); });
}
