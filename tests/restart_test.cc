// Worker restart under a live mount (issue 16), through the CLI with real mounts and processes:
// a SIGKILLed worker is replaced on the same FUSE connection while a reader streams a file (no
// error, the right bytes, the mount stays, `status` and `list` show generation 2); a worker
// that crashes at once every time spends the restart budget and the mount is removed, the log
// naming the cause; `restart MP` under a reader; a successor runs in exactly the first
// worker's sandbox; a writable mount under the whole load (4 readers, 2 writers, a
// `find` walk) through repeated kills. As root and (user.restart_tests) as heddle-test.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "heddle/launcher/control_socket.h"
#include "support/child_process.h"
#include "support/mount_load.h"
#include "support/test_support.h"

namespace heddle::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

constexpr std::size_t kBigBytes = std::size_t{8} << 20;

bool process_gone(pid_t pid) {
  ::waitpid(pid, nullptr, WNOHANG);
  return ::kill(pid, 0) != 0 && errno == ESRCH;
}

std::string pattern(std::size_t bytes) {
  std::string out(bytes, '\0');
  std::uint32_t x = 2463534242u;
  for (char& c : out) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x);
  }
  return out;
}

// Reads `path` whole, again and again, each pass from the worker (its page cache dropped), and
// compares it with `expected`, until stopped. Counts passes; keeps the first failure.
class Reader {
 public:
  Reader(fs::path path, std::string expected)
      : path_(std::move(path)), expected_(std::move(expected)) {
    thread_ = std::thread([this] { run(); });
  }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;
  ~Reader() { stop(); }

  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  [[nodiscard]] int passes() const { return passes_.load(); }
  [[nodiscard]] std::string failure() const {
    std::lock_guard lock(mutex_);
    return failure_;
  }

 private:
  void run() {
    std::string got(expected_.size() + 1, '\0');
    while (!stop_) {
      const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return fail(std::string("open: ") + std::strerror(errno));
      std::size_t done = 0;
      for (;;) {
        const ssize_t n = ::read(fd, got.data() + done, got.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          const int err = errno;
          ::close(fd);
          return fail("read at " + std::to_string(done) + ": " + std::strerror(err));
        }
        if (n == 0) break;
        done += static_cast<std::size_t>(n);
      }
      (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
      ::close(fd);
      if (done != expected_.size() || got.compare(0, done, expected_) != 0) {
        return fail("pass " + std::to_string(passes_.load()) + " read " + std::to_string(done) +
                    " bytes, not the file's " + std::to_string(expected_.size()));
      }
      ++passes_;
    }
  }
  void fail(const std::string& what) {
    std::lock_guard lock(mutex_);
    failure_ = what;
  }

  const fs::path path_;
  const std::string expected_;
  std::atomic<bool> stop_{false};
  std::atomic<int> passes_{0};
  mutable std::mutex mutex_;
  std::string failure_;
  std::thread thread_;
};

class RestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HEDDLE_REQUIRE_MOUNT();
    // Orphaned supervisors and workers become ours to reap.
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    tree_ = std::make_unique<ScratchTree>();
    tree_->write("a.txt", "alpha\n");
    tree_->write("big.bin", big_);
  }

  void TearDown() override {
    if (!tree_) return;
    reader_.reset();
    if (heddle_mounted(tree_->mountpoint())) {
      (void)launcher({"unmount", mp()});
      if (heddle_mounted(tree_->mountpoint())) {
        ADD_FAILURE() << "the mount outlived `unmount`";
        ::umount2(mp().c_str(), MNT_DETACH);
      }
    }
    if (supervisor_ > 0 && !eventually([&] { return process_gone(supervisor_); }, 10s)) {
      ADD_FAILURE() << "supervisor " << supervisor_ << " outlived its mount";
      ::kill(supervisor_, SIGKILL);
    }
  }

  [[nodiscard]] std::string mp() const { return tree_->mountpoint().string(); }

  static CommandResult launcher(const std::vector<std::string>& args,
                                const std::vector<std::string>& env = {},
                                std::chrono::milliseconds timeout = 60s) {
    std::vector<std::string> argv = {"/usr/bin/env"};
    argv.insert(argv.end(), env.begin(), env.end());
    argv.push_back(bin_path("heddle-fuse-launcher"));
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, timeout);
  }

  // A background mount of the scratch source, as --json's ready line says it.
  Json mount(const std::vector<std::string>& extra, const std::vector<std::string>& env = {}) {
    std::vector<std::string> args = {"mount", "--dir", tree_->source().string(), "--mountpoint",
                                     mp(), "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    const CommandResult result = launcher(args, env);
    EXPECT_EQ(result.exit_code, 0) << result.err;
    if (result.exit_code != 0) return Json::object();
    Json ready = Json::parse(result.out);
    supervisor_ = ready.value("supervisor_pid", -1);
    return ready;
  }

  // `status --json`, or null if it fails (a successor still starting).
  Json status() const {
    const CommandResult result = launcher({"status", mp(), "--json"}, {}, 15s);
    if (result.exit_code != 0) return nullptr;
    return Json::parse(result.out);
  }

  // Waits for the successor: `status` answering with `generation`.
  Json await_generation(std::uint64_t generation, std::chrono::milliseconds timeout = 15s) const {
    Json answer;
    eventually(
        [&] {
          answer = status();
          return !answer.is_null() && answer.value("generation", 0u) >= generation;
        },
        timeout);
    return answer;
  }

  std::string log() const { return slurp(launcher::supervisor_log_path(dirs_, mp())); }

  void start_reader() {
    reader_ = std::make_unique<Reader>(tree_->mountpoint() / "big.bin", big_);
    ASSERT_TRUE(eventually([&] { return reader_->passes() >= 2 || !reader_->failure().empty(); },
                           20s));
    ASSERT_EQ(reader_->failure(), "");
  }

  // The reader goes on after a restart: more full passes, and never an error.
  void expect_reader_goes_on() {
    const int before = reader_->passes();
    EXPECT_TRUE(eventually([&] { return reader_->passes() >= before + 3 || !reader_->failure().empty(); },
                           20s))
        << "the reader made " << reader_->passes() - before << " passes after the restart";
    reader_->stop();
    EXPECT_EQ(reader_->failure(), "");
  }

  // The load on a writable mount (--overlay): 4 readers of big files, 2 writers with
  // their files open across every kill, a `find` walk and a prober, while the worker (its pid
  // from `status`) is SIGKILLed `kills` times. Every operation completes with the right bytes
  // and no error, nothing hangs (every wait is bounded), the mount stays, and the generation
  // counts up. Prints the time from each kill to the first request the successor served.
  void kill_writable_under_load(int kills) {
    MountLoad::populate(tree_->source());
    const fs::path overlay = tree_->root() / "overlay";
    const Json ready = mount({"--overlay", "--overlay-dir", overlay.string(), "--restart-budget",
                              std::to_string(kills + 10) + "/3600"});
    ASSERT_TRUE(ready.contains("pid"));
    pid_t worker = ready["pid"].get<pid_t>();
    MountLoad load(tree_->mountpoint(), tree_->source(), MountLoad::Walk::kFind);
    load.start();
    std::vector<long long> served_us;
    std::vector<long long> status_ms;
    bool hung = false;
    for (int k = 0; k < kills && !hung; ++k) {
      if (!load.progress(2, 20s)) {
        ADD_FAILURE() << "no progress before kill " << k;
        hung = true;
        break;
      }
      load.killed();
      const auto killed = Clock::now();
      ASSERT_EQ(::kill(worker, SIGKILL), 0) << "kill " << k;
      const Json after = await_generation(static_cast<std::uint64_t>(k) + 2);
      if (after.is_null() || after.value("generation", 0u) != static_cast<unsigned>(k + 2)) {
        ADD_FAILURE() << "no generation " << k + 2 << " after kill " << k << "\n" << log();
        hung = true;
        break;
      }
      status_ms.push_back(
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed).count());
      EXPECT_NE(after["pid"].get<pid_t>(), worker);
      worker = after["pid"].get<pid_t>();
      EXPECT_TRUE(heddle_mounted(tree_->mountpoint())) << "after kill " << k;
      if (!load.progress(2, 20s)) {
        ADD_FAILURE() << "no progress after kill " << k << " (a request was lost?)";
        hung = true;
        break;
      }
      if (const auto took = load.takeover_time()) served_us.push_back(took->count());
    }
    const Json end = status();
    if (!hung) {
      ASSERT_FALSE(end.is_null()) << log();
      EXPECT_EQ(end["generation"], kills + 1) << end.dump();
      EXPECT_EQ(end["restarts"], kills) << end.dump();
      EXPECT_EQ(end.value("resend", false), true) << end.dump();
      EXPECT_EQ(end.value("stale_nodes", 1u), 0u) << end.dump();
    }
    if (hung || !load.stop(20s)) {
      // Unblock what waits on the connection: with the supervisor and the worker gone, the
      // guard removes the mount and the kernel fails every waiting request.
      ADD_FAILURE() << "the load hung\n" << log();
      ::kill(worker, SIGKILL);
      ::kill(supervisor_, SIGKILL);
      load.join();
    } else {
      load.join();
      load.check_written();
    }
    for (const std::string& problem : load.problems()) ADD_FAILURE() << problem;
    EXPECT_TRUE(heddle_mounted(tree_->mountpoint()));
    const auto quantiles = [](std::vector<long long> v, const char* unit, double scale) {
      if (v.empty()) return std::string("none");
      std::sort(v.begin(), v.end());
      const auto at = [&](double q) {
        const auto i = static_cast<std::size_t>(q * static_cast<double>(v.size()));
        return static_cast<double>(v[std::min(v.size() - 1, i)]) / scale;
      };
      char text[160];
      std::snprintf(text, sizeof text, "p50 %.1f %s, p99 %.1f %s, max %.1f %s", at(0.5), unit,
                    at(0.99), unit, static_cast<double>(v.back()) / scale, unit);
      return std::string(text);
    };
    std::printf("[restart] writable mount under load, %d kills: kill to the first request served "
                "(%zu measured): %s; kill to `status` answering: %s\n",
                kills, served_us.size(), quantiles(served_us, "ms", 1000.0).c_str(),
                quantiles(status_ms, "ms", 1.0).c_str());
  }

  const std::string big_ = pattern(kBigBytes);
  std::unique_ptr<ScratchTree> tree_;
  std::unique_ptr<Reader> reader_;
  pid_t supervisor_ = -1;
  const launcher::UserDirs dirs_ = launcher::UserDirs::read();
};

TEST_F(RestartTest, SigkillOfTheWorkerUnderAReaderKeepsTheMount) {
  const Json ready = mount({});
  ASSERT_TRUE(ready.contains("pid"));
  const pid_t first = ready["pid"].get<pid_t>();
  ASSERT_NO_FATAL_FAILURE(start_reader());

  const auto killed = Clock::now();
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  const Json after = await_generation(2);
  ASSERT_FALSE(after.is_null()) << log();
  std::printf("[restart] kill to a successor answering Status: %lld ms\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed)
                      .count()));
  EXPECT_EQ(after["generation"], 2) << after.dump();
  EXPECT_EQ(after["restarts"], 1) << after.dump();
  EXPECT_NE(after["pid"].get<pid_t>(), first);
  EXPECT_NE(after.value("last_restart", "").find("signal 9 (SIGKILL)"), std::string::npos)
      << after.dump();
  EXPECT_TRUE(heddle_mounted(tree_->mountpoint()));
  expect_reader_goes_on();
  EXPECT_EQ(slurp(tree_->mountpoint() / "a.txt"), "alpha\n");

  // `list` shows the same.
  const CommandResult list = launcher({"list", "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  bool found = false;
  for (const Json& entry : Json::parse(list.out)) {
    if (entry.value("mountpoint", "") != mp()) continue;
    found = true;
    EXPECT_EQ(entry["generation"], 2) << entry.dump();
    EXPECT_EQ(entry["restarts"], 1) << entry.dump();
    EXPECT_EQ(entry["worker_pid"], after["pid"]) << entry.dump();
  }
  EXPECT_TRUE(found) << list.out;
  const CommandResult table = launcher({"list"});
  EXPECT_NE(table.out.find("GEN"), std::string::npos) << table.out;
  EXPECT_EQ(launcher({"unmount", mp()}).exit_code, 0);
  EXPECT_NE(log().find("starting worker generation 2 (restart 1 of at most 3 within 300 s)"),
            std::string::npos)
      << log();
}

// A worker that crashes at once every time (after the first) is given up on after the budget:
// no mount is left, and the log names the cause. The successors exec what is at the worker's
// path by then, as after a package upgrade: here a program that exits 1 at once.
TEST_F(RestartTest, ACrashLoopSpendsTheBudgetAndRemovesTheMount) {
  const fs::path bin = tree_->root() / "bin";
  fs::create_directory(bin);
  fs::permissions(bin, fs::perms(0755));
  const fs::path worker_copy = bin / "heddle-fuse-worker";
  fs::copy_file(bin_path("heddle-fuse-worker"), worker_copy);
  const Json ready = mount({"--restart-budget", "2/60"},
                           {std::string("HEDDLE_FUSE_WORKER_BIN=") + worker_copy.string()});
  ASSERT_TRUE(ready.contains("pid"));
  const fs::path crashing = bin / "crashing";
  fs::copy_file("/usr/bin/false", crashing);
  fs::permissions(crashing, fs::perms(0755));
  fs::rename(crashing, worker_copy);

  const auto killed = Clock::now();
  ASSERT_EQ(::kill(ready["pid"].get<pid_t>(), SIGKILL), 0);
  EXPECT_TRUE(eventually([&] { return !heddle_mounted(tree_->mountpoint()); }, 30s))
      << "the mount outlived a spent budget\n"
      << log();
  EXPECT_TRUE(eventually([&] { return process_gone(supervisor_); }, 10s));
  std::printf("[restart] kill to the mount's removal after 2 failed successors: %lld ms\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed)
                      .count()));
  const std::string text = log();
  EXPECT_NE(text.find("starting worker generation 3 (restart 2 of at most 2 within 60 s)"),
            std::string::npos)
      << text;
  // The successor dies before or after it receives its bootstrap: either way its exit is named.
  EXPECT_NE(text.find("(generation 3) failed: worker"), std::string::npos) << text;
  EXPECT_NE(text.find(" exited before MountReady (exit code 1); the restart budget (2 restarts "
                      "in 60 s) is spent; mount removed"),
            std::string::npos)
      << text;
  EXPECT_EQ(launcher({"status", mp()}).exit_code, 1);
}

// --restart-budget 0: the first crash ends the mount, as before restarts existed.
TEST_F(RestartTest, BudgetZeroRemovesTheMountAtTheFirstCrash) {
  const Json ready = mount({"--restart-budget", "0"});
  ASSERT_TRUE(ready.contains("pid"));
  const Json before = status();
  ASSERT_FALSE(before.is_null());
  EXPECT_EQ(slurp(tree_->mountpoint() / "a.txt"), "alpha\n");
  EXPECT_EQ(before["generation"], 1);
  EXPECT_EQ(before["restarts"], 0);
  EXPECT_EQ(before["restart_budget"], "0/300");
  ASSERT_EQ(::kill(ready["pid"].get<pid_t>(), SIGKILL), 0);
  EXPECT_TRUE(eventually([&] { return !heddle_mounted(tree_->mountpoint()); }, 10s));
  EXPECT_TRUE(eventually([&] { return process_gone(supervisor_); }, 10s));
  EXPECT_NE(log().find("ended: worker " + std::to_string(ready["pid"].get<pid_t>()) +
                       " exited (signal 9 (SIGKILL)); mount removed"),
            std::string::npos)
      << log();
}

// `restart MP` replaces a healthy worker under a reader: nothing fails, generation 2, and no
// crash is counted.
TEST_F(RestartTest, RestartCommandUnderAReader) {
  const Json ready = mount({});
  ASSERT_TRUE(ready.contains("pid"));
  ASSERT_NO_FATAL_FAILURE(start_reader());
  const auto asked = Clock::now();
  const CommandResult restarted = launcher({"restart", mp(), "--json"});
  std::printf("[restart] `restart` took %lld ms\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - asked)
                      .count()));
  ASSERT_EQ(restarted.exit_code, 0) << restarted.err << log();
  const Json answer = Json::parse(restarted.out);
  EXPECT_EQ(answer["mountpoint"], mp());
  EXPECT_EQ(answer["generation"], 2);
  EXPECT_EQ(answer["restarts"], 0);
  EXPECT_NE(answer["worker_pid"], ready["pid"]);
  EXPECT_TRUE(eventually([&] { return process_gone(ready["pid"].get<pid_t>()); }));
  expect_reader_goes_on();
  const Json after = status();
  ASSERT_FALSE(after.is_null());
  EXPECT_EQ(after["generation"], 2);
  EXPECT_EQ(after["pid"], answer["worker_pid"]);

  const CommandResult text = launcher({"restart", mp()});
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("restarted " + mp() + ": worker pid "), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(", generation 3"), std::string::npos) << text.out;

  // (`restart --all` is not run here: as root it would restart every mount of root's on this
  // machine, other suites' running in parallel among them.)
}

TEST_F(RestartTest, RestartErrorsAreClear) {
  const CommandResult none = launcher({"restart", mp()});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("no heddle mount supervisor for " + mp()), std::string::npos) << none.err;
  EXPECT_EQ(launcher({"restart"}).exit_code, 2);
  EXPECT_EQ(launcher({"restart", mp(), "--bogus"}).exit_code, 2);
  for (const char* bad : {"x", "3/0", "3/", "-1", "3/300/1"}) {
    const CommandResult result = launcher(
        {"mount", "--dir", tree_->source().string(), "--mountpoint", mp(), "--restart-budget", bad});
    EXPECT_EQ(result.exit_code, 2) << bad;
    EXPECT_NE(result.err.find("--restart-budget"), std::string::npos) << result.err;
  }
}

// A successor runs in exactly the first worker's sandbox: the same identity, no capabilities,
// no_new_privs, seccomp, and namespaces of its own. (A hostile worker gains nothing by dying.)
TEST_F(RestartTest, TheSuccessorGetsTheSameSandbox) {
  const Json ready = mount({});
  ASSERT_TRUE(ready.contains("pid"));
  const pid_t first = ready["pid"].get<pid_t>();
  const std::vector<std::string> fields = {"Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff",
                                           "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"};
  std::vector<std::string> facts;
  for (const std::string& field : fields) facts.push_back(proc_status_field(first, field));
  // Served once, so FUSE_INIT is behind the first worker (a successor replays it).
  EXPECT_EQ(slurp(tree_->mountpoint() / "a.txt"), "alpha\n");
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  const Json after = await_generation(2);
  ASSERT_FALSE(after.is_null()) << log();
  const pid_t second = after["pid"].get<pid_t>();
  for (std::size_t i = 0; i < fields.size(); ++i) {
    EXPECT_EQ(proc_status_field(second, fields[i]), facts[i]) << fields[i];
  }
  EXPECT_EQ(proc_status_field(second, "CapEff"), "0000000000000000");
  EXPECT_EQ(proc_status_field(second, "NoNewPrivs"), "1");
  EXPECT_EQ(proc_status_field(second, "Seccomp"), "2");
  for (const char* ns : {"user", "mnt", "pid", "net", "ipc"}) {
    std::error_code ec;
    const fs::path theirs = fs::read_symlink("/proc/" + std::to_string(second) + "/ns/" + ns, ec);
    // A non-dumpable worker's links are root's to read (and its user namespace's owner's).
    if (ec && !running_as_root()) continue;
    ASSERT_FALSE(ec) << ns << ": " << ec.message();
    EXPECT_NE(theirs, fs::read_symlink(std::string("/proc/self/ns/") + ns)) << ns;
  }
}

// 100 SIGKILLs of the worker under a reader: every one replaced, the reader never fails. Prints
// the time from each kill to a successor answering Status.
TEST_F(RestartTest, HeavyHundredKillsUnderAReader) {
  const Json ready = mount({"--restart-budget", "1000/3600"});
  ASSERT_TRUE(ready.contains("pid"));
  ASSERT_NO_FATAL_FAILURE(start_reader());
  pid_t worker = ready["pid"].get<pid_t>();
  std::vector<long long> ms;
  for (int i = 0; i < 100; ++i) {
    const auto killed = Clock::now();
    ASSERT_EQ(::kill(worker, SIGKILL), 0) << "kill " << i;
    const Json after = await_generation(static_cast<std::uint64_t>(i) + 2);
    ASSERT_FALSE(after.is_null()) << "kill " << i << "\n" << log();
    ms.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed).count());
    worker = after["pid"].get<pid_t>();
    ASSERT_EQ(reader_->failure(), "") << "after kill " << i;
    // Some reading by the successor before the next kill.
    const int passes = reader_->passes();
    ASSERT_TRUE(eventually([&] { return reader_->passes() > passes || !reader_->failure().empty(); },
                           20s));
  }
  expect_reader_goes_on();
  std::sort(ms.begin(), ms.end());
  std::printf("[restart] kill to a successor answering Status, 100 kills: p50 %lld ms, p99 %lld ms\n",
              ms[49], ms[98]);
}

TEST_F(RestartTest, AWritableMountUnderReadersWritersAndFindSurvivesTenKills) {
  kill_writable_under_load(10);
}

TEST_F(RestartTest, HeavyAWritableMountUnderReadersWritersAndFindSurvivesAHundredKills) {
  kill_writable_under_load(100);
}

}  // namespace
}  // namespace heddle::test
