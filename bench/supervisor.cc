// heddle_bench supervisor: the Status round trip through a live sandboxed worker beside the
// physical limit of its transport (a socketpair ping-pong with an echo process carrying the same
// bytes); spawn -> MountReady beside the same worker unsandboxed and beside what a user would
// script (bwrap + libfuse's passthrough_ll on a pre-mounted /dev/fd/3); idle memory; 100 mounts.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "heddle/ipc/fd_passing.h"
#include "heddle/ipc/frame.h"
#include "heddle/ipc/mount_spec.h"
#include "heddle/unique_fd.h"
#include "support.h"

namespace heddle::bench {
namespace {

using namespace std::chrono_literals;
using Samples = std::vector<double>;

bool recv_exact(int fd, char* data, std::size_t size) {
  for (std::size_t done = 0; done < size;) {
    const ssize_t n = ::recv(fd, data + done, size - done, 0);
    if (n == 0 || (n < 0 && errno != EINTR)) return false;
    if (n > 0) done += static_cast<std::size_t>(n);
  }
  return true;
}

bool send_exact(int fd, const char* data, std::size_t size) {
  for (std::size_t done = 0; done < size;) {
    const ssize_t n = ::send(fd, data + done, size - done, MSG_NOSIGNAL);
    if (n < 0 && errno != EINTR) return false;
    if (n > 0) done += static_cast<std::size_t>(n);
  }
  return true;
}

std::pair<UniqueFd, UniqueFd> socket_pair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) throw_errno("socketpair");
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// The physical limit's peer: `heddle_bench echo` (echo_main below) on the other end of a
// socketpair. Another process, as the worker is; it runs only recv/send.
class EchoProcess {
 public:
  EchoProcess() {
    auto [ours, theirs] = socket_pair();
    fd_ = std::move(ours);
    process_.emplace(std::vector<std::string>{"/proc/self/exe", "echo"}, "", theirs.get());
  }
  ~EchoProcess() {
    fd_.reset();  // EOF: it exits
    process_->wait(5s);
  }
  void setup(const std::string& request, const std::string& reply) {
    const std::uint32_t sizes[2] = {static_cast<std::uint32_t>(request.size()),
                                    static_cast<std::uint32_t>(reply.size())};
    if (!send_exact(fd_.get(), reinterpret_cast<const char*>(sizes), sizeof sizes) ||
        !send_exact(fd_.get(), reply.data(), reply.size())) {
      throw_errno("send the echo process its setup");
    }
  }
  [[nodiscard]] int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
  std::optional<Daemon> process_;
};

using Trip = std::function<void()>;

// Microseconds of `rounds` round trips, each timed.
void timed(const Trip& trip, int rounds, Samples& out) {
  for (int i = 0; i < rounds; ++i) {
    if ((i & 63) == 0) check_interrupted();
    const auto t0 = Clock::now();
    trip();
    out.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
}

void run_rtt(const Config& config, const std::string& source, const std::string& mountpoint,
             Figures& figures) {
  const int rounds = config.rounds > 0 ? config.rounds : config.pick(10000, 2000), warmup = 200,
            block = 500;
  EchoProcess echo;
  LiveMount mount = LiveMount::directory(source, mountpoint);
  const std::uint32_t worker = mount->ready().pid;
  const Trip status = [&] {
    if (mount->status().pid != worker) throw Error("StatusOk names another pid", EPROTO);
  };
  status();  // idle memory: after mounting and one Status, before any load
  figures.set("worker_idle_rss_kib", static_cast<double>(memory_of(mount->pid()).rss_kib));
  // The bytes on the wire: the Status frame, and the worker's reply as it encodes it.
  const std::string request = ipc::encode_frame(ipc::Status{});
  const std::string reply = ipc::encode_frame(mount->status());
  echo.setup(request, reply);
  std::string buffer(reply.size(), '\0');
  const Trip raw = [&] {
    if (!send_exact(echo.fd(), request.data(), request.size()) ||
        !recv_exact(echo.fd(), buffer.data(), buffer.size())) {
      throw Error("socketpair echo failed", EPIPE);
    }
  };
  // Our framing code (JSON decode included) against the same dumb echo process.
  const Trip framed = [&, timeout = launcher::SupervisorOptions{}.status_timeout] {
    ipc::write_frame(echo.fd(), ipc::Status{}, timeout);
    const auto answer = ipc::read_frame(echo.fd(), timeout);
    if (!answer || !std::holds_alternative<ipc::StatusOk>(*answer))
      throw Error("framed echo: no StatusOk", EPROTO);
  };
  const std::pair<const char*, const Trip*> paths[] = {
      {"status", &status}, {"socketpair", &raw}, {"framed", &framed}};
  std::array<Samples, 3> samples, scratch;
  for (std::size_t p = 0; p < 3; ++p) timed(*paths[p].second, warmup, scratch[p]);
  // Interleaved blocks: a burst of background load cannot land on one path only.
  for (int done = 0; done < rounds; done += block) {
    for (std::size_t p = 0; p < 3; ++p)
      timed(*paths[p].second, std::min(block, rounds - done), samples[p]);
  }
  for (std::size_t p = 0; p < 3; ++p) {
    const std::string key = paths[p].first;
    figures.set(key + "_p50_us", percentile(samples[p], 50));
    figures.set(key + "_p99_us", percentile(samples[p], 99));
    figures.set(key + "_max_us", percentile(samples[p], 100));
    // The reference bench's figure: 16 untimed round trips, then the max of 256.
    scratch[p].clear();
    timed(*paths[p].second, 16, scratch[p]);
    scratch[p].clear();
    timed(*paths[p].second, 256, scratch[p]);
    figures.set(key + "_ref_max256_us", percentile(scratch[p], 100));
  }
  for (const std::string what : {"p50", "p99", "max", "ref_max256"})
    figures.ratio("ratio_" + what, "status_" + what + "_us", "socketpair_" + what + "_us");
  figures.set("status_rtt_p50_us", figures.median_of("status_p50_us"));
  figures.set("status_rtt_p99_us", figures.median_of("status_p99_us"));
  figures.set("status_rtt_max_us", figures.median_of("status_ref_max256_us"));
  figures.set("status_rtt_p50_ratio_to_socketpair", figures.median_of("ratio_p50"));
  if (!mount->is_alive()) throw Error("the worker died during the bench", 0);
}

// SIGKILLs the armed pid unless disarmed within 15 s: a hung server would block stat()
// forever, and killing it fails the request. Started before the timed region.
class Watchdog {
 public:
  ~Watchdog() { thread_.request_stop(); }
  void arm(pid_t pid) { pid_ = pid; }
  void disarm() {
    thread_.request_stop();
    if (thread_.joinable()) thread_.join();
    if (fired_) throw Error("the first answer through a mount hung; killed its server", ETIMEDOUT);
  }

 private:
  std::atomic<pid_t> pid_{-1};
  std::atomic<bool> fired_{false};
  std::jthread thread_{[this](const std::stop_token& stop) {
    std::mutex mutex;
    std::condition_variable_any cv;
    std::unique_lock lock(mutex);
    if (cv.wait_for(lock, stop, 15s, [] { return false; }), stop.stop_requested()) return;
    fired_ = true;
    if (pid_ > 0) ::kill(pid_, SIGKILL);
  }};
};

double ms_since(Clock::time_point t0) { return seconds_since(t0) * 1e3; }

// Milliseconds of the first answer through a mount: stat() of its root (FUSE_INIT, GETATTR)
// and a readdir; its server killed if it hangs.
double timed_answer(Watchdog& watchdog, pid_t server, const std::string& mountpoint) {
  watchdog.arm(server);
  const auto t0 = Clock::now();
  struct stat st {};
  if (::stat(mountpoint.c_str(), &st) != 0) throw_errno("stat " + mountpoint);
  const std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(mountpoint.c_str()), &::closedir);
  if (!dir) throw_errno("opendir " + mountpoint);
  int entries = 0;
  while (::readdir(dir.get()) != nullptr) ++entries;
  if (entries < 3) throw Error("readdir " + mountpoint + ": too few entries", EIO);
  const double ms = ms_since(t0);
  watchdog.disarm();
  return ms;
}

// mount(2) of an open /dev/fuse, as a script would (the unsandboxed worker's: fuse.heddle,
// default_permissions). Its fd is above 3, so that it can become a child's fd 3.
class FuseMount {
 public:
  FuseMount(const std::string& at, const char* type, const char* extra) : at_(at) {
    const UniqueFd raw(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
    device_.reset(::fcntl(raw.get(), F_DUPFD_CLOEXEC, 10));
    if (!device_) throw_errno("open /dev/fuse");
    const std::string options =
        "fd=" + std::to_string(device_.get()) + ",rootmode=40000,user_id=0,group_id=0" + extra;
    if (::mount("heddle-bench", at.c_str(), type, MS_RDONLY | MS_NOSUID | MS_NODEV,
                options.c_str()) != 0) {
      throw_errno("mount fuse at " + at);
    }
  }
  ~FuseMount() { unmount_quietly(at_); }
  UniqueFd device_;

 private:
  std::string at_;
};

// The same worker without the sandbox: [ipc socket, /dev/fuse fd] on its bootstrap fd 3, as
// the supervisor hands them, then MountReady. Stopped with Stop (5 s), then killed.
class Unsandboxed {
 public:
  Unsandboxed(const std::string& source, const std::string& mountpoint)
      : mount_(mountpoint, "fuse.heddle", ",default_permissions") {
    auto [boot_parent, boot_child] = socket_pair();
    UniqueFd ipc_child;
    std::tie(ipc_, ipc_child) = socket_pair();
    worker_.emplace(
        std::vector<std::string>{own_bin_dir() + "/heddle-fuse-worker", "--bootstrap-fd", "3"}, "",
        boot_child.get());
    ipc::WorkerBootstrap bootstrap{static_cast<std::uint32_t>(worker_->pid()),
                                   ipc::MountSpec::directory(source, mountpoint)};
    bootstrap.spec.sandbox = ipc::SandboxMode::kNone;
    const std::array<int, 2> fds{ipc_child.get(), mount_.device_.get()};
    ipc::send_fds(boot_parent.get(), fds, ipc::encode_bootstrap(bootstrap));
    mount_.device_.reset();  // only the worker holds the connection now
    const auto first = ipc::read_frame(ipc_.get(), 10s);
    if (!first || !std::holds_alternative<ipc::MountReady>(*first))
      throw Error("the unsandboxed worker sent no MountReady", EPROTO);
  }
  ~Unsandboxed() {
    try {
      ipc::write_frame(ipc_.get(), ipc::Stop{}, 1s);
    } catch (...) {}
    worker_->wait(5s);
  }
  [[nodiscard]] pid_t pid() const { return worker_->pid(); }
  void status() {
    ipc::write_frame(ipc_.get(), ipc::Status{}, 5s);
    const auto reply = ipc::read_frame(ipc_.get(), 5s);
    if (!reply || !std::holds_alternative<ipc::StatusOk>(*reply))
      throw Error("no StatusOk from the unsandboxed worker", EPROTO);
  }

 private:
  FuseMount mount_;
  UniqueFd ipc_;
  std::optional<Daemon> worker_;
};

// One spawn of each path: samples by key (spawn, spawn_answer, unmount...) into `out`, unless
// null (a warm-up); idle memory into `idle`, unless null.
using SpawnSamples = std::map<std::string, Samples>;
using SpawnPath = void (*)(const ScratchDir&, const std::string&, SpawnSamples*, Figures*);

void spawn_ours(const ScratchDir& root, const std::string& source, SpawnSamples* out, Figures*) {
  MountPoint mountpoint(root / "mnt-ours");
  Watchdog watchdog;
  LiveMount mount = LiveMount::directory(source, mountpoint.path());  // times spawn alone
  const double answer_ms = timed_answer(watchdog, mount->pid(), mountpoint.path());
  const double unmount_s = mount.unmount();
  if (out == nullptr) return;
  (*out)["spawn"].push_back(mount.spawn_seconds() * 1e3);
  (*out)["spawn_answer"].push_back(mount.spawn_seconds() * 1e3 + answer_ms);
  (*out)["unmount"].push_back(unmount_s * 1e3);
}

void spawn_unsandboxed(const ScratchDir& root, const std::string& source, SpawnSamples* out,
                       Figures* idle) {
  Watchdog watchdog;
  const auto t0 = Clock::now();
  MountPoint mountpoint(root / "mnt-unsandboxed");
  Unsandboxed worker(source, mountpoint.path());
  const double ready_ms = ms_since(t0);
  const double answer_ms = timed_answer(watchdog, worker.pid(), mountpoint.path());
  if (idle != nullptr) {
    worker.status();
    idle->set("worker_unsandboxed_idle_rss_kib",
              static_cast<double>(memory_of(worker.pid()).rss_kib));
  }
  if (out == nullptr) return;
  (*out)["spawn_unsandboxed"].push_back(ready_ms);
  (*out)["spawn_unsandboxed_answer"].push_back(ready_ms + answer_ms);
}

// What a user would script: mount /dev/fuse, bwrap the example server on the fd. Ready = the
// first answer through the mount, which waits for the server's FUSE_INIT reply.
void spawn_bwrap(const ScratchDir& root, const std::string& source, SpawnSamples* out,
                 Figures* idle) {
  const std::string server = own_bin_dir() + "/bench_passthrough_ll", log = root / "bwrap.log";
  MountPoint mountpoint(root / "mnt-bwrap");
  Watchdog watchdog;
  const auto t0 = Clock::now();
  std::optional<FuseMount> mount(std::in_place, mountpoint.path(), "fuse", "");
  Daemon bwrap({"/usr/bin/bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/usr",
                "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                "--symlink", "usr/bin", "/bin", "--ro-bind", source, source, "--ro-bind", server,
                server, "--proc", "/proc", "--dev", "/dev", server, "-f", "-o",
                "source=" + source, "/dev/fd/3"},
               log, mount->device_.get());
  mount->device_.reset();  // only the server holds the connection: if it dies, ENOTCONN
  const double before_answer = ms_since(t0);
  const double ms = before_answer + timed_answer(watchdog, bwrap.pid(), mountpoint.path());
  if (idle != nullptr) {  // bwrap, its pid-1 monitor, the server (the last descendant)
    std::uint64_t total = 0, server_kib = 0;
    for (const pid_t pid : descendants(bwrap.pid())) total += server_kib = memory_of(pid).rss_kib;
    idle->set("bwrap_server_idle_rss_kib", static_cast<double>(server_kib));
    idle->set("bwrap_composition_idle_rss_kib",
              static_cast<double>(total + memory_of(bwrap.pid()).rss_kib));
  }
  mount.reset();  // umount(2): the server reads ENODEV and exits
  if (bwrap.wait(15s) != 0)
    throw Error("bwrap + passthrough_ll failed after the unmount (see " + log + ")", 0);
  if (out != nullptr) (*out)["spawn_bwrap"].push_back(ms);
}

void run_spawn(const Config& config, const ScratchDir& root, const std::string& source,
               Figures& figures) {
  const int warmup = 3, rounds = config.pick(50, 10);
  SpawnSamples s;
  // Interleaved in a rotated order: background load and ordering effects hit all three alike.
  const SpawnPath paths[] = {spawn_ours, spawn_unsandboxed, spawn_bwrap};
  for (int i = 0; i < warmup + rounds; ++i) {
    for (std::size_t k = 0; k < 3; ++k) {
      check_interrupted();
      paths[(static_cast<std::size_t>(i) + k) % 3](root, source, i >= warmup ? &s : nullptr,
                                                   nullptr);
    }
  }
  spawn_unsandboxed(root, source, nullptr, &figures);  // idle memory, once each
  spawn_bwrap(root, source, nullptr, &figures);
  for (const auto& [key, samples] : s) {
    figures.set(key + "_p50_ms", percentile(samples, 50));
    figures.set(key + "_p99_ms", percentile(samples, 99));
  }
  figures.ratio("spawn_p50_ratio_to_unsandboxed", "spawn_p50_ms", "spawn_unsandboxed_p50_ms");
  figures.ratio("spawn_p50_ratio_to_bwrap_composition", "spawn_p50_ms", "spawn_bwrap_p50_ms");
  figures.ratio("spawn_answer_p50_ratio_to_bwrap_composition", "spawn_answer_p50_ms",
                "spawn_bwrap_p50_ms");
}

// A background supervisor as a user starts it: `heddle-fuse-launcher mount --json`.
void run_cli(const ScratchDir& root, const std::string& source, Figures& figures) {
  const std::string launcher = own_bin_dir() + "/heddle-fuse-launcher";
  MountPoint mountpoint(root / "mnt-cli");
  const auto json = nlohmann::json::parse(
      output_of({launcher, "mount", "--dir", source, "--mountpoint", mountpoint.path(), "--json"}));
  const auto unmount = [&] { (void)output_of({launcher, "unmount", mountpoint.path()}); };
  try {
    (void)output_of({launcher, "status", mountpoint.path(), "--json"});
    double total = 0;
    for (const auto& [field, key] : {std::pair{"supervisor_pid", "supervisor_idle_rss_kib"},
                                     {"guard_pid", "guard_idle_rss_kib"},
                                     {"pid", "cli_worker_idle_rss_kib"}}) {
      const auto kib = static_cast<double>(memory_of(json.at(field).get<pid_t>()).rss_kib);
      figures.set(key, kib);
      total += kib;
    }
    figures.set("composition_idle_rss_kib", total);
  } catch (...) {
    unmount();
    throw;
  }
  unmount();
  if (is_mounted(mountpoint.path()))
    throw Error(mountpoint.path() + " still mounted after unmount", EBUSY);
}

// Many mounts at once, spawned from 4 threads of this process.
void run_many(const Config& config, const ScratchDir& root, const std::string& source,
              Figures& figures) {
  rlimit limit{};  // a few fds per mount
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &limit);
  const std::size_t n = config.pick(100, 20);
  std::vector<std::unique_ptr<MountPoint>> points;  // destroyed after the mounts
  for (std::size_t i = 0; i < n; ++i)
    points.push_back(std::make_unique<MountPoint>(root / ("mnt-many-" + std::to_string(i))));
  std::vector<std::optional<LiveMount>> mounts(n);
  std::atomic<std::size_t> next{0};
  std::vector<std::exception_ptr> errors(4);
  const auto t0 = Clock::now();
  {
    std::vector<std::jthread> threads;
    for (std::size_t t = 0; t < errors.size(); ++t) {
      threads.emplace_back([&, t] {
        try {
          for (std::size_t i; (i = next++) < n && g_interrupted == 0;)
            mounts[i].emplace(LiveMount::directory(source, points[i]->path()));
        } catch (...) {
          errors[t] = std::current_exception();
          next = n;
        }
      });
    }
  }
  for (const auto& error : errors) {
    if (error) std::rethrow_exception(error);
  }
  check_interrupted();
  const std::string key = "mounts_100_";  // the keys keep their name whatever n (--quick)
  figures.set(key + "launch_s", seconds_since(t0));
  double rss[2] = {0, 0}, pss[2] = {0, 0}, ok = 0;
  for (auto& mount : mounts) {
    for (const int g : {0, 1}) {
      const pid_t pid = g == 0 ? (*mount)->pid() : (*mount)->guard_pid();
      rss[g] += static_cast<double>(memory_of(pid).rss_kib) / 1024;
      pss[g] += static_cast<double>(pss_kib_of(pid)) / 1024;
    }
    ok += (*mount)->status().pid == (*mount)->ready().pid ? 1 : 0;
  }
  figures.set(key + "workers_rss_mib", rss[0]);
  figures.set(key + "guards_rss_mib", rss[1]);
  figures.set(key + "workers_pss_mib", pss[0]);
  figures.set(key + "guards_pss_mib", pss[1]);
  figures.set(key + "status_ok", ok);
  const auto u0 = Clock::now();
  for (auto& mount : mounts) mount->unmount();
  figures.set(key + "unmount_s", seconds_since(u0));
  mounts.clear();
  figures.set(key + "unmounted_clean",
              std::none_of(points.begin(), points.end(),
                           [](const auto& p) { return is_mounted(p->path()); }));
}

}  // namespace

// heddle_bench echo: after a setup on fd 3 (u32 request size, u32 reply size, the reply), reads
// one request and sends the reply in one send(), until EOF.
int echo_main(int fd) {
  std::vector<char> request(ipc::kMaxFrameBody + 4), reply(ipc::kMaxFrameBody + 4);
  std::uint32_t sizes[2];
  if (!recv_exact(fd, reinterpret_cast<char*>(sizes), sizeof sizes) ||
      sizes[0] > request.size() || sizes[1] > reply.size() ||
      !recv_exact(fd, reply.data(), sizes[1])) {
    return 3;
  }
  while (recv_exact(fd, request.data(), sizes[0])) {
    if (!send_exact(fd, reply.data(), sizes[1])) return 5;
  }
  return 0;  // EOF: the bench is done
}

void supervisor_suite(const Config& config, Figures& figures) {
  ScratchDir root("heddle-bench-");
  const std::string source = root / "src";
  for (const auto& dir : {source, source + "/src"})
    if (::mkdir(dir.c_str(), 0755) != 0) throw_errno("mkdir " + dir);
  std::ofstream(source + "/README.txt") << "heddle_bench source tree\n";
  std::ofstream(source + "/src/main.rs") << "fn main() {}\n";
  std::printf("heddle_bench supervisor: 1/4 Status round trips ...\n");
  {
    MountPoint mountpoint(root / "mnt-rtt");
    run_rtt(config, source, mountpoint.path(), figures);
  }
  std::printf("heddle_bench supervisor: 2/4 spawn -> ready, ours | unsandboxed | bwrap ...\n");
  run_spawn(config, root, source, figures);
  std::printf("heddle_bench supervisor: 3/4 a background supervisor (the CLI) ...\n");
  run_cli(root, source, figures);
  std::printf("heddle_bench supervisor: 4/4 concurrent mounts ...\n");
  run_many(config, root, source, figures);
  if (!mounts_under(root.path()).empty()) throw Error("mounts left under " + root.path(), EBUSY);
}

}  // namespace heddle::bench
