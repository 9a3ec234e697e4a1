// heddle_bench: the supervisor's Status round trip through a live sandboxed worker, side by side
// with the physical limit of its transport (a raw AF_UNIX socketpair ping-pong with a forked
// echo process carrying the very same bytes), plus spawn -> MountReady and unmount latency.
// See bench/README.md for what is measured and why.
#include <sched.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "heddle/error.h"
#include "heddle/ipc/frame.h"
#include "heddle/ipc/message.h"
#include "bench_support.h"
#include "heddle/launcher/supervisor.h"
#include "heddle/unique_fd.h"

namespace {

namespace fs = std::filesystem;
using heddle::Error;
using heddle::UniqueFd;
using heddle::throw_errno;
using namespace heddle::bench;  // arguments, interruption, mount probes
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Configuration

struct Config {
  int status_warmup = 200;
  int status_rounds = 10000;
  int block = 500;  // rounds per interleaved block (see run_rtt_benches)
  int reference_warmup = 16;
  int reference_rounds = 256;
  int spawn_warmup = 3;
  int spawn_rounds = 30;
};

Config parse_args(int argc, char** argv) {
  Config config;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::printf(
          "usage: heddle_bench [--rounds N] [--spawn-rounds N]\n"
          "  --rounds N        timed Status round trips per path (default 10000, min 10000\n"
          "                    recommended for a meaningful p99)\n"
          "  --spawn-rounds N  timed spawn + unmount iterations (default 30)\n"
          "Must run as root. Set HEDDLE_FUSE_WORKER_BIN to use another worker binary.\n");
      std::exit(0);
    }
    if (i + 1 >= argc) throw Error("missing value after " + std::string(arg), EINVAL);
    if (arg == "--rounds") {
      config.status_rounds = parse_positive(argv[i], argv[i + 1]);
    } else if (arg == "--spawn-rounds") {
      config.spawn_rounds = parse_positive(argv[i], argv[i + 1]);
    } else {
      throw Error("unknown argument '" + std::string(arg) + "' (see --help)", EINVAL);
    }
    ++i;
  }
  return config;
}

// ---------------------------------------------------------------------------------------------
// Statistics

struct Stats {
  std::size_t n = 0;
  double p50_us = 0;
  double p99_us = 0;
  double max_us = 0;
  double min_us = 0;
  double mean_us = 0;
};

// Nearest-rank percentile of sorted samples.
std::int64_t percentile(const std::vector<std::int64_t>& sorted, double p) {
  const auto n = sorted.size();
  auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(n)));
  rank = std::clamp<std::size_t>(rank, 1, n);
  return sorted[rank - 1];
}

Stats summarize(std::vector<std::int64_t> ns) {
  if (ns.empty()) throw Error("summarize: no samples", EINVAL);
  std::sort(ns.begin(), ns.end());
  double sum = 0;
  for (const auto v : ns) sum += static_cast<double>(v);
  Stats s;
  s.n = ns.size();
  s.p50_us = static_cast<double>(percentile(ns, 50)) / 1e3;
  s.p99_us = static_cast<double>(percentile(ns, 99)) / 1e3;
  s.max_us = static_cast<double>(ns.back()) / 1e3;
  s.min_us = static_cast<double>(ns.front()) / 1e3;
  s.mean_us = sum / static_cast<double>(ns.size()) / 1e3;
  return s;
}

std::int64_t elapsed_ns(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(to - from).count();
}

// ---------------------------------------------------------------------------------------------
// Mounts and scratch directories

// A mkdtemp() directory under /tmp, mode 0755 (a root mount is served by nobody, who must be
// able to reach it). On destruction: anything still mounted on it is detached (the Supervisor
// should already have unmounted it: this is the last line of defence), then it is removed.
// A mount point is only ever rmdir()ed, never recursively removed, so a mount that somehow
// survived can never be walked into.
class ScratchDir {
 public:
  enum class Kind { kSource, kMountpoint };

  ScratchDir(const char* prefix, Kind kind) : kind_(kind) {
    std::string pattern = std::string("/tmp/") + prefix + "XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) throw_errno("mkdtemp " + pattern);
    path_ = pattern;
    if (::chmod(path_.c_str(), 0755) != 0) {
      const int saved = errno;
      ::rmdir(path_.c_str());
      throw Error("chmod 0755 " + path_, saved);
    }
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir() {
    try {
      for (int i = 0; i < 8 && is_mounted(path_); ++i) {
        std::fprintf(stderr, "heddle_bench: %s still mounted at cleanup, detaching\n",
                     path_.c_str());
        if (::umount2(path_.c_str(), MNT_DETACH) != 0) break;
      }
      if (is_mounted(path_)) {
        std::fprintf(stderr, "heddle_bench: cannot unmount %s; leaving it\n", path_.c_str());
        return;
      }
      std::error_code ec;
      if (kind_ == Kind::kMountpoint) {
        fs::remove(path_, ec);
      } else {
        fs::remove_all(path_, ec);
      }
      if (ec) std::fprintf(stderr, "heddle_bench: remove %s: %s\n", path_.c_str(), ec.message().c_str());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "heddle_bench: cleanup of %s: %s\n", path_.c_str(), e.what());
    }
  }
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
  Kind kind_;
};

void write_file(const fs::path& path, const std::string& content) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << content;
  if (!out) throw Error("write " + path.string(), EIO);
  fs::permissions(path, fs::perms(0644));
}

void make_source_tree(const fs::path& root) {
  write_file(root / "README.txt", "heddle_bench source tree\n");
  write_file(root / "src" / "main.rs", "fn main() {}\n");
  fs::permissions(root / "src", fs::perms(0755));
}

// Owns a Supervisor; unmounts on destruction (Supervisor's destructor does too, but only logs
// failures; this reports them). Declared after the ScratchDirs it uses, so it goes first.
class LiveMount {
 public:
  LiveMount(const std::string& source, const std::string& mountpoint) {
    supervisor_ = heddle::launcher::Supervisor::spawn(
        heddle::launcher::MountRequest::directory(source, mountpoint));
  }
  LiveMount(const LiveMount&) = delete;
  LiveMount& operator=(const LiveMount&) = delete;
  ~LiveMount() {
    try {
      if (supervisor_) supervisor_->unmount();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "heddle_bench: unmount: %s\n", e.what());
    }
  }
  heddle::launcher::Supervisor& operator*() { return *supervisor_; }
  heddle::launcher::Supervisor* operator->() { return supervisor_.get(); }

 private:
  std::unique_ptr<heddle::launcher::Supervisor> supervisor_;
};

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
};

RttResults run_rtt_benches(const Config& config, EchoProcess& echo, const std::string& source,
                           const std::string& mountpoint) {
  RttResults results;
  LiveMount mount(source, mountpoint);
  if (!is_mounted(mountpoint)) throw Error("spawn returned but " + mountpoint + " is not mounted", 0);
  const std::uint32_t worker_pid = mount->ready().pid;
  const heddle::launcher::SupervisorOptions defaults;

  const RoundTrip status = status_path(*mount, worker_pid);
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
// Spawn -> MountReady, and unmount, on fresh mount points.

struct SpawnResults {
  Stats spawn;
  Stats unmount;
};

SpawnResults run_spawn_bench(const Config& config, const std::string& source) {
  std::vector<std::int64_t> spawn_ns, unmount_ns;
  for (int i = 0; i < config.spawn_warmup + config.spawn_rounds; ++i) {
    check_interrupted();
    ScratchDir mountpoint("heddle-bench-mnt-", ScratchDir::Kind::kMountpoint);
    const auto t0 = Clock::now();
    auto supervisor = heddle::launcher::Supervisor::spawn(
        heddle::launcher::MountRequest::directory(source, mountpoint.path()));
    const auto t1 = Clock::now();
    // (~Supervisor unmounts if anything below throws, before ~ScratchDir runs.)
    if (!is_mounted(mountpoint.path())) {
      throw Error("spawn returned but " + mountpoint.path() + " is not mounted", 0);
    }
    const auto t2 = Clock::now();
    supervisor->unmount();
    const auto t3 = Clock::now();
    if (is_mounted(mountpoint.path())) {
      throw Error("unmount returned but " + mountpoint.path() + " is still mounted", 0);
    }
    supervisor.reset();
    if (i >= config.spawn_warmup) {
      spawn_ns.push_back(elapsed_ns(t0, t1));
      unmount_ns.push_back(elapsed_ns(t2, t3));
    }
  }
  return SpawnResults{summarize(std::move(spawn_ns)), summarize(std::move(unmount_ns))};
}

// ---------------------------------------------------------------------------------------------
// Report

std::string kernel_release() {
  utsname u{};
  if (::uname(&u) != 0) throw_errno("uname");
  return u.release;
}

int allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return -1;
  return CPU_COUNT(&set);
}

void row(const char* metric, double ours, double limit) {
  std::printf("| %-36s | %10.1f | %14.1f | %8.2fx |\n", metric, ours, limit, ours / limit);
}

void row_no_limit(const char* metric, double ours) {
  std::printf("| %-36s | %10.1f | %14s | %9s |\n", metric, ours, "-", "-");
}

void result_line(const char* key, double value) { std::printf("RESULT %s %.3f\n", key, value); }

void report(const Config& config, const RttResults& rtt, const SpawnResults& sp) {
  std::printf("\n## heddle_bench\n\n");
  std::printf("- nproc: %ld (affinity allows %d; nothing pinned)\n", ::sysconf(_SC_NPROCESSORS_ONLN),
              allowed_cpus());
  std::printf("- kernel: %s\n", kernel_release().c_str());
  std::printf("- Status RTT: %d warm-up + %d timed rounds per path, interleaved in blocks of %d\n",
              config.status_warmup, config.status_rounds, config.block);
  std::printf("- wire: request %zu bytes (Status frame), reply %zu bytes (StatusOk frame: %s)\n",
              rtt.request_bytes, rtt.reply_bytes, rtt.reply_body.c_str());
  std::printf("- spawn/unmount: %d warm-up + %d timed iterations, fresh mount point each\n\n",
              config.spawn_warmup, config.spawn_rounds);

  std::printf("| %-36s | %10s | %14s | %9s |\n", "metric (us)", "ours", "physical limit",
              "ratio");
  std::printf("|%s|%s|%s|%s|\n", std::string(38, '-').c_str(), std::string(11, '-').append(":").c_str(),
              std::string(15, '-').append(":").c_str(), std::string(10, '-').append(":").c_str());
  row("Status RTT p50", rtt.status.p50_us, rtt.raw.p50_us);
  row("Status RTT p99", rtt.status.p99_us, rtt.raw.p99_us);
  row("Status RTT max", rtt.status.max_us, rtt.raw.max_us);
  row("Status RTT mean", rtt.status.mean_us, rtt.raw.mean_us);
  row("ref-style: max of 256 after 16 warm", rtt.status_ref_max_us, rtt.raw_ref_max_us);
  row_no_limit("spawn -> MountReady p50", sp.spawn.p50_us);
  row_no_limit("spawn -> MountReady p99", sp.spawn.p99_us);
  row_no_limit("unmount p50", sp.unmount.p50_us);
  row_no_limit("unmount p99", sp.unmount.p99_us);

  std::printf("\nMedians: Status RTT %.1f us vs socketpair %.1f us (%.2fx); "
              "spawn -> MountReady %.2f ms; unmount %.2f ms\n",
              rtt.status.p50_us, rtt.raw.p50_us, rtt.status.p50_us / rtt.raw.p50_us,
              sp.spawn.p50_us / 1e3, sp.unmount.p50_us / 1e3);
  std::printf("Decomposition (p50 / p99 us): raw socketpair %.1f / %.1f; same echo through "
              "ipc::write_frame/read_frame %.1f / %.1f; live worker via Supervisor::status() "
              "%.1f / %.1f\n\n",
              rtt.raw.p50_us, rtt.raw.p99_us, rtt.framed.p50_us, rtt.framed.p99_us,
              rtt.status.p50_us, rtt.status.p99_us);

  // Machine-readable, for bench/run's medians across runs.
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
  result_line("spawn_p50_ms", sp.spawn.p50_us / 1e3);
  result_line("spawn_p99_ms", sp.spawn.p99_us / 1e3);
  result_line("unmount_p50_ms", sp.unmount.p50_us / 1e3);
  result_line("unmount_p99_ms", sp.unmount.p99_us / 1e3);
}

int run(const Config& config) {
  if (::geteuid() != 0) throw Error("heddle_bench must run as root (it mounts FUSE)", EPERM);
  // The worker logs at info to stderr by default: one spawn would print several lines, 33
  // of them drown the report. The caller's HEDDLE_FUSE_LOG wins.
  ::setenv("HEDDLE_FUSE_LOG", "warn", /*overwrite=*/0);
  spdlog::set_level(spdlog::level::warn);

  // Fork the echo process first, while this process has a single thread and no mount fds.
  EchoProcess echo;

  // Order matters for unwinding: supervisors are inside the calls below and are gone before
  // these directories are destroyed.
  ScratchDir source("heddle-bench-src-", ScratchDir::Kind::kSource);
  make_source_tree(source.path());
  RttResults rtt;
  {
    ScratchDir mountpoint("heddle-bench-mnt-", ScratchDir::Kind::kMountpoint);
    rtt = run_rtt_benches(config, echo, source.path(), mountpoint.path());
    if (is_mounted(mountpoint.path())) throw Error(mountpoint.path() + " still mounted", EBUSY);
  }
  const int echo_status = echo.finish();
  if (!WIFEXITED(echo_status) || WEXITSTATUS(echo_status) != 0) {
    throw Error("the echo process failed (wait status " + std::to_string(echo_status) + ")", 0);
  }

  const SpawnResults spawn = run_spawn_bench(config, source.path());
  report(config, rtt, spawn);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    install_signal_handlers();
    return run(parse_args(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "heddle_bench: FAILED: %s\n", e.what());
    return 1;
  }
}
