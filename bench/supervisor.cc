// heddle_bench supervisor: the Status round trip beside a socketpair ping-pong of the same bytes;
// spawn beside the worker unsandboxed and bwrap + passthrough_ll; idle memory; 100 mounts.
#include <sys/resource.h>
#include <sys/socket.h>

#include <atomic>
#include <future>

#include "heddle/ipc/fd_passing.h"
#include "heddle/ipc/frame.h"
#include "heddle/ipc/mount_spec.h"
#include "support.h"

namespace heddle::bench {
namespace {

using Samples = std::vector<double>;

// Sends (else receives) exactly `size` bytes; false on EOF or an error.
bool exact(bool send, int fd, char* data, std::size_t size) {
  for (std::size_t done = 0; done < size;) {
    const ssize_t n = send ? ::send(fd, data + done, size - done, MSG_NOSIGNAL)
                           : ::recv(fd, data + done, size - done, 0);
    if (n == 0 || (n < 0 && errno != EINTR)) return false;
    done += static_cast<std::size_t>(std::max<ssize_t>(n, 0));
  }
  return true;
}

std::pair<UniqueFd, UniqueFd> socket_pair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) throw_errno("socketpair");
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// Status through our framing (JSON decode included), on `fd`.
void status_round_trip(int fd, std::chrono::milliseconds timeout) {
  ipc::write_frame(fd, ipc::Status{}, timeout);
  const auto answer = ipc::read_frame(fd, timeout);
  if (!answer || !std::holds_alternative<ipc::StatusOk>(*answer))
    throw Error("Status on fd " + std::to_string(fd) + ": no StatusOk", EPROTO);
}

// Microseconds of `rounds` round trips, each timed.
void timed(const std::function<void()>& trip, int rounds, Samples& out) {
  for (int i = 0; i < rounds; ++i) {
    if ((i & 63) == 0) check_interrupted();
    out.push_back(seconds_of(trip) * 1e6);
  }
}

void run_rtt(const Config& config, const ScratchDir& root, const std::string& source,
             Figures& figures) {
  const int rounds = config.rounds > 0 ? config.rounds : config.pick(10000, 2000), block = 500;
  LiveMount mount(ipc::DirSource{source}, root / "mnt-rtt");
  const std::uint32_t worker = mount->ready().pid;
  const auto status = [&] {
    if (mount->status().pid != worker) throw Error("StatusOk names another pid", EPROTO);
  };
  status();  // idle memory: after mounting and one Status, before any load
  figures.set("worker_idle_rss_kib", kib_of(mount->pid(), "VmRSS"));
  // The bytes on the wire: the Status frame, and the worker's reply as it encodes it.
  std::string request = ipc::encode_frame(ipc::Status{}),
              reply = ipc::encode_frame(mount->status());
  std::ofstream(root / "echo-reply", std::ios::binary) << reply;
  // The limit's peer, `heddle_bench echo` (echo_main below): another process, as the worker is.
  auto [echo, theirs] = socket_pair();
  Daemon echo_process(
      {"/proc/self/exe", "echo", std::to_string(request.size()), root / "echo-reply"}, "",
      theirs.get());
  const auto raw = [&] {
    if (!exact(true, echo.get(), request.data(), request.size()) ||
        !exact(false, echo.get(), reply.data(), reply.size())) {
      throw Error("socketpair echo failed", EPIPE);
    }
  };
  // Our framing code (JSON decode included) against the same dumb echo process.
  const auto timeout = launcher::SupervisorOptions{}.status_timeout;
  const auto framed = [&] { status_round_trip(echo.get(), timeout); };
  const std::pair<std::string, std::function<void()>> paths[] = {
      {"status", status}, {"socketpair", raw}, {"framed", framed}};
  std::array<Samples, 3> samples, scratch;
  for (std::size_t p = 0; p < 3; ++p) timed(paths[p].second, 200, scratch[p]);  // warm-up
  // Interleaved blocks: a burst of background load cannot land on one path only.
  side_by_side((rounds + block - 1) / block, 3, [&](int p, int b) {
    timed(paths[p].second, std::min(block, rounds - b * block), samples[p]);
  });
  for (std::size_t p = 0; p < 3; ++p) {
    const std::string& key = paths[p].first;
    for (const auto& [what, pct] : {std::pair{"p50", 50}, {"p99", 99}, {"max", 100}})
      figures.set(key + "_" + what + "_us", percentile(samples[p], pct));
    // The reference bench's figure: 16 untimed round trips, then the max of 256.
    timed(paths[p].second, 16, scratch[p]);
    scratch[p].clear();
    timed(paths[p].second, 256, scratch[p]);
    figures.set(key + "_ref_max256_us", percentile(scratch[p], 100));
  }
  for (const std::string what : {"p50", "p99", "max", "ref_max256"})
    figures.ratio("ratio_" + what, "status_" + what + "_us", "socketpair_" + what + "_us");
  figures.set("status_rtt_p50_us", figures.median_of("status_p50_us"));
  figures.set("status_rtt_p99_us", figures.median_of("status_p99_us"));
  figures.set("status_rtt_max_us", figures.median_of("status_ref_max256_us"));
  figures.set("status_rtt_p50_ratio_to_socketpair", figures.median_of("ratio_p50"));
  if (!mount->is_alive()) throw Error("the worker died during the bench", 0);
  echo.reset();  // EOF: it exits
  echo_process.wait(5s);
}

// Milliseconds of the first answer through a mount: stat() of its root (FUSE_INIT, GETATTR), a
// readdir. A hung server would block stat() forever: SIGALRM SIGKILLs it after 15 s.
std::atomic<pid_t> g_answering{0};
double first_answer_ms(pid_t server, const std::string& mountpoint) {
  g_answering = server;
  ::signal(SIGALRM, [](int) {
    if (const pid_t pid = g_answering.exchange(0); pid > 0) ::kill(pid, SIGKILL);
  });
  ::alarm(15);
  const auto t0 = Clock::now();
  struct stat st {};
  std::error_code ec;  // an empty root: no entries, no error
  const bool answered = ::stat(mountpoint.c_str(), &st) == 0 && !fs::is_empty(mountpoint, ec);
  const int err = answered ? 0 : ec ? ec.value() : errno;
  const double ms = ms_since(t0);
  ::alarm(0);
  g_answering = 0;
  if (!answered) throw Error("no first answer through " + mountpoint, err);
  return ms;
}

// mount(2) of an open /dev/fuse on `at` (a MountPoint, which unmounts it), as a script would
// (the unsandboxed worker's: fuse.heddle, default_permissions). The device's fd, above 3, so
// that it can become a child's fd 3.
UniqueFd mount_fuse(const std::string& at, const char* type, const char* extra) {
  const UniqueFd raw(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
  UniqueFd device(::fcntl(raw.get(), F_DUPFD_CLOEXEC, 10));
  if (!device) throw_errno("open /dev/fuse");
  const std::string options =
      "fd=" + std::to_string(device.get()) + ",rootmode=40000,user_id=0,group_id=0" + extra;
  if (::mount("heddle-bench", at.c_str(), type, MS_RDONLY | MS_NOSUID | MS_NODEV,
              options.c_str()) != 0) {
    throw_errno("mount fuse at " + at);
  }
  return device;
}

// The three ways to spawn a mount: samples by key; the idle memory in `idle`, unless null.
using Times = std::vector<std::pair<std::string, double>>;

Times spawn_ours(const ScratchDir& root, const std::string& source, Figures*) {
  LiveMount mount(ipc::DirSource{source}, root / "mnt-ours");  // times spawn alone
  const double answer_ms = first_answer_ms(mount->pid(), root / "mnt-ours");
  const double unmount_ms = mount.unmount() * 1e3, spawn_ms = mount.spawn_seconds() * 1e3;
  return {{"spawn", spawn_ms}, {"spawn_answer", spawn_ms + answer_ms}, {"unmount", unmount_ms}};
}

// The same worker without the sandbox: [ipc socket, /dev/fuse fd] on its bootstrap fd 3, as
// the supervisor hands them, then MountReady; stopped with Stop.
Times spawn_unsandboxed(const ScratchDir& root, const std::string& source, Figures* idle) {
  const auto t0 = Clock::now();
  MountPoint mountpoint(root / "mnt-unsandboxed");
  UniqueFd device = mount_fuse(mountpoint.path(), "fuse.heddle", ",default_permissions");
  auto [boot, boot_child] = socket_pair();
  auto [ipc, ipc_child] = socket_pair();
  Daemon worker({own_bin_dir() + "/heddle-fuse-worker", "--bootstrap-fd", "3"}, "",
                boot_child.get());
  ipc::WorkerBootstrap bootstrap{static_cast<std::uint32_t>(worker.pid()),
                                 ipc::MountSpec::directory(source, mountpoint.path())};
  bootstrap.spec.sandbox = ipc::SandboxMode::kNone;
  const std::array<int, 2> fds{ipc_child.get(), device.get()};
  ipc::send_fds(boot.get(), fds, ipc::encode_bootstrap(bootstrap));
  device.reset();  // only the worker holds the connection now
  const auto ready = ipc::read_frame(ipc.get(), 10s);
  if (!ready || !std::holds_alternative<ipc::MountReady>(*ready))
    throw Error("the unsandboxed worker sent no MountReady", EPROTO);
  const double ready_ms = ms_since(t0);
  const double answer_ms = first_answer_ms(worker.pid(), mountpoint.path());
  if (idle != nullptr) {
    status_round_trip(ipc.get(), 5s);
    idle->set("worker_unsandboxed_idle_rss_kib", kib_of(worker.pid(), "VmRSS"));
  }
  ipc::write_frame(ipc.get(), ipc::Stop{}, 1s);
  worker.wait(5s);
  return {{"spawn_unsandboxed", ready_ms}, {"spawn_unsandboxed_answer", ready_ms + answer_ms}};
}

// What a user would script: mount /dev/fuse, bwrap the example server on the fd. Ready = the
// first answer through the mount, which waits for the server's FUSE_INIT reply.
Times spawn_bwrap(const ScratchDir& root, const std::string& source, Figures* idle) {
  const std::string server = own_bin_dir() + "/bench_passthrough_ll", log = root / "bwrap.log";
  MountPoint mountpoint(root / "mnt-bwrap");
  const auto t0 = Clock::now();
  UniqueFd device = mount_fuse(mountpoint.path(), "fuse", "");
  Daemon bwrap({"/usr/bin/bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/usr",
                "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                "--symlink", "usr/bin", "/bin", "--ro-bind", source, source, "--ro-bind", server,
                server, "--proc", "/proc", "--dev", "/dev", server, "-f", "-o",
                "source=" + source, "/dev/fd/3"},
               log, device.get());
  device.reset();  // only the server holds the connection: if it dies, ENOTCONN
  const double started_ms = ms_since(t0);
  const double ms = started_ms + first_answer_ms(bwrap.pid(), mountpoint.path());
  if (idle != nullptr) {  // bwrap, its pid-1 monitor, the server: each the child of the last
    double total = 0, server_kib = 0;
    for (pid_t pid = bwrap.pid(); pid > 0; total += server_kib) {
      server_kib = kib_of(pid, "VmRSS");
      std::ifstream children(format("/proc/%d/task/%d/children", pid, pid));
      if (!(children >> pid)) pid = 0;
    }
    idle->set("bwrap_server_idle_rss_kib", server_kib);
    idle->set("bwrap_composition_idle_rss_kib", total);
  }
  unmount_quietly(mountpoint.path());  // umount(2): the server reads ENODEV and exits
  if (bwrap.wait(15s) != 0)
    throw Error("bwrap + passthrough_ll failed after the unmount (see " + log + ")", 0);
  return {{"spawn_bwrap", ms}};
}

void run_spawn(const Config& config, const ScratchDir& root, const std::string& source,
               Figures& figures) {
  const int warmup = 3;
  std::map<std::string, Samples> samples;
  Times (*const paths[])(const ScratchDir&, const std::string&, Figures*) = {
      spawn_ours, spawn_unsandboxed, spawn_bwrap};
  side_by_side(warmup + config.pick(50, 10), 3, [&](int path, int round) {
    for (const auto& [key, ms] : paths[path](root, source, nullptr))
      if (round >= warmup) samples[key].push_back(ms);
  });
  spawn_unsandboxed(root, source, &figures);  // idle memory, once each
  spawn_bwrap(root, source, &figures);
  for (const auto& [key, s] : samples)
    for (const int p : {50, 99}) figures.set(key + format("_p%d_ms", p), percentile(s, p));
  figures.ratio("spawn_p50_ratio_to_unsandboxed", "spawn_p50_ms", "spawn_unsandboxed_p50_ms");
  for (const char* p : {"p50", "p99"})
    figures.ratio(format("spawn_%s_ratio_to_bwrap_composition", p), format("spawn_%s_ms", p),
                  format("spawn_bwrap_%s_ms", p));
  figures.ratio("spawn_answer_p50_ratio_to_bwrap_composition", "spawn_answer_p50_ms",
                "spawn_bwrap_p50_ms");
}

// Worker restart (issue 16): SIGKILL of the worker -> the first request its successor answers
// (a lookup of a name the kernel has not seen, which only a worker can answer). A new mount
// every 3 kills: the default restart budget.
void run_restart(const Config& config, const ScratchDir& root, const std::string& source,
                 Figures& figures) {
  Samples ms;
  std::optional<LiveMount> mount;
  for (int i = 0; i < config.pick(60, 12); ++i) {
    const std::string at = root / ("mnt-restart-" + std::to_string(i - i % 3));
    if (i % 3 == 0) {
      if (mount) mount->unmount();
      mount.emplace(ipc::DirSource{source}, at);
      // Served once: FUSE_INIT is then behind the first worker, for its successors to replay.
      first_answer_ms((*mount)->pid(), at);
    }
    const std::string probe = at + "/absent-" + std::to_string(i);
    struct stat st {};
    const auto t0 = Clock::now();
    const pid_t killed = (*mount)->pid();
    if (::kill(killed, SIGKILL) != 0) throw_errno("kill the worker");
    if (::stat(probe.c_str(), &st) == 0 || errno != ENOENT)
      throw Error("stat " + probe + " after the worker's SIGKILL", errno);
    ms.push_back(ms_since(t0));
    // The successor answers before the supervisor records its pid (after its MountReady).
    while ((*mount)->pid() == killed && ms_since(t0) < 5000) std::this_thread::sleep_for(1ms);
  }
  if (mount) mount->unmount();
  for (const int p : {50, 99})
    figures.set(format("restart_first_answer_p%d_ms", p), percentile(ms, p));
}

// A background supervisor as a user starts it: `heddle-fuse-launcher mount --json`.
void run_cli(const ScratchDir& root, const std::string& source, Figures& figures) {
  const std::string launcher = own_bin_dir() + "/heddle-fuse-launcher";
  MountPoint mountpoint(root / "mnt-cli");
  const auto json = nlohmann::json::parse(
      run({launcher, "mount", "--dir", source, "--mountpoint", mountpoint.path(), "--json"}));
  const auto unmount = [&] { run({launcher, "unmount", mountpoint.path()}); };
  try {
    run({launcher, "status", mountpoint.path(), "--json"});
    double total = 0;
    for (const auto& [field, key] : {std::pair{"supervisor_pid", "supervisor_idle_rss_kib"},
                                     {"guard_pid", "guard_idle_rss_kib"},
                                     {"pid", "cli_worker_idle_rss_kib"}}) {
      figures.set(key, kib_of(json.at(field).get<pid_t>(), "VmRSS"));
      total += figures.median_of(key);
    }
    figures.set("composition_idle_rss_kib", total);
  } catch (...) {
    unmount();
    throw;
  }
  unmount();
  if (is_mounted(mountpoint.path())) throw Error(mountpoint.path() + " still mounted", EBUSY);
}

// Many mounts at once, spawned from 4 threads of this process.
void run_many(const Config& config, const ScratchDir& root, const std::string& source,
              Figures& figures) {
  rlimit limit{};  // a few fds per mount
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &limit);
  const std::size_t n = config.pick(100, 20);
  std::vector<std::optional<LiveMount>> mounts(n);
  std::atomic<std::size_t> next{0};
  const auto t0 = Clock::now();
  std::vector<std::future<void>> threads;
  for (int t = 0; t < 4; ++t) {
    threads.push_back(std::async(std::launch::async, [&] {
      for (std::size_t i; (i = next++) < n && g_interrupted == 0;)
        mounts[i].emplace(ipc::DirSource{source}, root / ("mnt-" + std::to_string(i)));
    }));
  }
  for (auto& thread : threads) thread.get();  // rethrows a thread's error
  check_interrupted();
  const std::string key = "mounts_100_";  // the keys keep their name whatever n (--quick)
  figures.set(key + "launch_s", seconds_since(t0));
  double sums[4] = {}, ok = 0;  // workers' and guards' VmRSS, then their Pss
  for (auto& mount : mounts) {
    for (const int g : {0, 1}) {
      const pid_t pid = g == 0 ? (*mount)->pid() : (*mount)->guard_pid();
      sums[g] += mib_of(pid, "VmRSS");
      sums[2 + g] += mib_of(pid, "Pss");
    }
    ok += (*mount)->status().pid == (*mount)->ready().pid ? 1 : 0;
  }
  const char* names[] = {"workers_rss_mib", "guards_rss_mib", "workers_pss_mib", "guards_pss_mib"};
  for (int i = 0; i < 4; ++i) figures.set(key + names[i], sums[i]);
  figures.set(key + "status_ok", ok);
  const auto u0 = Clock::now();
  for (auto& mount : mounts) mount->unmount();
  figures.set(key + "unmount_s", seconds_since(u0));
  figures.set(key + "unmounted_clean", mounts_under(root.path()).empty());
}

}  // namespace

// heddle_bench echo SIZE FILE: on fd 3, answers each SIZE-byte request with FILE in one send().
int echo_main(std::size_t size, const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  std::string request(size, '\0'), reply{std::istreambuf_iterator<char>(in), {}};
  while (exact(false, 3, request.data(), size))
    if (!exact(true, 3, reply.data(), reply.size())) return 5;
  return 0;  // EOF: the bench is done
}

void supervisor_suite(const Config& config, Figures& figures) {
  ScratchDir root("heddle-bench-");
  const std::string source = root / "src";
  std::filesystem::create_directories(source + "/src");
  std::ofstream(source + "/README.txt") << "heddle_bench source tree\n";
  std::ofstream(source + "/src/main.rs") << "fn main() {}\n";
  std::printf("heddle_bench supervisor: 1/4 Status round trips ...\n");
  run_rtt(config, root, source, figures);
  std::printf("heddle_bench supervisor: 2/4 spawn -> ready, ours | unsandboxed | bwrap ...\n");
  run_spawn(config, root, source, figures);
  std::printf("heddle_bench supervisor: 2/4 worker SIGKILL -> its successor's first answer ...\n");
  run_restart(config, root, source, figures);
  std::printf("heddle_bench supervisor: 3/4 a background supervisor (the CLI) ...\n");
  run_cli(root, source, figures);
  std::printf("heddle_bench supervisor: 4/4 concurrent mounts ...\n");
  run_many(config, root, source, figures);
  if (!mounts_under(root.path()).empty()) throw Error("mounts left under " + root.path(), EBUSY);
}

// heddle_bench unprivileged: the CLI's mount and unmount as root and as heddle-test (setuid
// fusermount3, newuidmap/newgidmap) side by side; the file broker; the setuid helpers alone.
void unprivileged_suite(const Config& config, Figures& f) {
  const int rounds = config.rounds_or(20);
  ScratchDir root("heddle-bench-user-");
  const std::string stage = root / "stage", bin = own_bin_dir(), source = root / "src";
  const std::string user_sh = HEDDLE_SOURCE_DIR "/tests/support/test_user.sh";
  run({"bash", user_sh, "setup", stage, bin + "/heddle-fuse-launcher", bin + "/heddle-fuse-worker",
       bin + "/heddle-fuse-guard"});
  struct Cleanup {  // restores /dev/fuse's mode
    std::vector<std::string> argv;
    ~Cleanup() { run_process(argv); }
  } cleanup{{"/bin/bash", user_sh, "cleanup", stage}};
  std::filesystem::create_directory(source);
  write_file(source + "/file.txt", "hello\n");
  const MountPoint points[] = {MountPoint(root / "mnt-root"), MountPoint(root / "mnt-user")};
  const std::string user_launcher = stage + "/bin/heddle-fuse-launcher";
  run({"chown", "heddle-test:heddle-test", points[1].path()});
  // Microseconds of argv, run as heddle-test if `user`; a failure is an error unless `floor`.
  const auto timed_us = [&](bool user, std::vector<std::string> argv, bool floor = false) {
    if (user) {
      argv.insert(argv.begin(), {find_on_path("setpriv"), "--reuid=heddle-test",
                                 "--regid=heddle-test", "--init-groups", "/usr/bin/env", "-u",
                                 "XDG_RUNTIME_DIR", "HOME=" + stage + "/home"});
    }
    // The floor's bare helpers fail (usage): not an error.
    return seconds_of([&] { floor ? (void)run_process(argv) : (void)run(argv); }) * 1e6;
  };
  side_by_side(2 * rounds, 2, [&](int user, int) {
    const std::string who = user ? "user" : "root", mountpoint = points[user].path();
    const std::string launcher = user ? user_launcher : bin + "/heddle-fuse-launcher";
    f.add("mount_us_" + who,
          timed_us(user, {launcher, "mount", "--dir", source, "--mountpoint", mountpoint}));
    if (!is_mounted(mountpoint)) throw Error(who + ": no mount at " + mountpoint, 0);
    f.add("unmount_us_" + who, timed_us(user, {launcher, "unmount", mountpoint}));
  });
  f.ratio("mount_ratio_user_to_root", "mount_us_user", "mount_us_root");
  f.ratio("unmount_ratio_user_to_root", "unmount_us_user", "unmount_us_root");
  // The file broker's cost: the user's `find -exec cat` over its own tree of 0600 files (which
  // the subordinate-uid worker asks the supervisor for) against the same tree in 0644.
  for (const std::string mode : {"0644", "0600"}) {
    make_tree(root / ("tree-" + mode), 20, config.pick(100, 10));
    run({"find", root / ("tree-" + mode), "-type", "f", "-exec", "chmod", mode, "{}", "+"});
    run({"chown", "-R", "heddle-test:heddle-test", root / ("tree-" + mode)});
  }
  side_by_side(rounds, 2, [&](int t, int) {
    const std::string mode = t ? "0600" : "0644", mountpoint = points[1].path();
    timed_us(true, {user_launcher, "mount", "--dir", root / ("tree-" + mode), "--mountpoint",
                    mountpoint});
    f.add("broker_find_cat_us_" + mode,
          timed_us(true, {"find", mountpoint, "-type", "f", "-exec", "cat", "{}", "+"}));
    timed_us(true, {user_launcher, "unmount", mountpoint});
  });
  f.ratio("broker_find_cat_ratio_0600_to_0644", "broker_find_cat_us_0600",
          "broker_find_cat_us_0644");
  // setpriv's own cost (true), then the user's setuid helpers alone.
  for (auto argv : {std::vector<std::string>{"true"}, {"fusermount3", "-V"}, {"newuidmap"}}) {
    const std::string helper = argv[0];
    argv[0] = find_on_path(helper);
    for (int i = 0; i < rounds && !argv[0].empty(); ++i)
      f.add("floor_setpriv_" + helper + "_us", timed_us(true, argv, true));
  }
}

}  // namespace heddle::bench
