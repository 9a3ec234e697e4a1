// Worker restart under a live mount (issue 16), the worker's side, through a real FUSE mount made
// by the unsandboxed harness: the harness keeps a copy of the connection and a node journal, as
// the supervisor does, SIGKILLs the worker in the middle of readers, writers and a tree walk, and
// starts a successor on the same connection. Every operation must complete with the right bytes
// and no error. A successor given a damaged journal must refuse it (or mark what it cannot
// trust stale), never crash and never serve what is not beneath its source.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "heddle/error.h"
#include "heddle/ipc/message.h"
#include "heddle/unique_fd.h"
#include "node_journal.h"
#include "support/child_process.h"
#include "support/unsandboxed_worker.h"

namespace heddle::test {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::size_t kBigFile = 4 << 20;
constexpr std::size_t kChunk = 64 << 10;
constexpr int kReaders = 4;
constexpr int kDirs = 20;
constexpr int kFilesPerDir = 50;

// The byte at `offset` of big file `file`: a file's bytes tell where they came from.
char pattern(int file, std::size_t offset) {
  return static_cast<char>((offset * 131 + static_cast<std::size_t>(file) * 7 + offset / 4096) &
                           0xff);
}

void write_file(const fs::path& path, std::string_view content) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) throw_errno("create " + path.string());
  if (::write(fd.get(), content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    throw_errno("write " + path.string());
  }
}

std::string read_file(const fs::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path.string());
  std::string out;
  char buffer[64 * 1024];
  for (ssize_t n; (n = ::read(fd.get(), buffer, sizeof buffer)) != 0;) {
    if (n < 0) throw_errno("read " + path.string());
    out.append(buffer, static_cast<std::size_t>(n));
  }
  return out;
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// What runs against the mount while its worker is killed and replaced: readers of big files
// (their page cache dropped before each read, so that reads reach the worker), writers through
// the overlay with their files open across the kill, a walk of the tree, and a prober whose
// lookups time the takeover.
class Load {
 public:
  Load(fs::path mnt, fs::path src) : mnt_(std::move(mnt)), src_(std::move(src)) {}
  Load(const Load&) = delete;
  Load& operator=(const Load&) = delete;
  ~Load() { join(); }

  void start() {
    // Every thread's counter exists before the first thread runs: threads index rounds_ while
    // later ones are spawned, so it must not grow then.
    rounds_.reserve(kReaders + 4);
    for (int i = 0; i < kReaders; ++i) spawn([this, i] { read_loop(i); });
    spawn([this] { write_loop(0); });
    spawn([this] { write_loop(1); });
    spawn([this] { walk_loop(); });
    spawn([this] { probe_loop(); });
  }

  // Waits until every thread has made `rounds` more rounds (each thread counts its own).
  bool progress(int rounds, milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    const auto target = min_rounds() + rounds;
    while (min_rounds() < target) {
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(milliseconds(2));
    }
    return true;
  }

  void killed() {
    first_served_ = 0;
    killed_at_ = now_ns();
  }
  // Kill to the first request the successor served; nullopt if none yet.
  [[nodiscard]] std::optional<std::chrono::microseconds> takeover_time() const {
    const std::int64_t served = first_served_.load();
    if (served == 0) return std::nullopt;
    return std::chrono::microseconds((served - killed_at_.load()) / 1000);
  }

  // Stops and joins the threads; false if they did not finish within `timeout` (a hang).
  bool stop(milliseconds timeout) {
    stop_ = true;
    std::unique_lock lock(mutex_);
    return done_cv_.wait_for(lock, timeout, [&] { return finished_ == threads_.size(); });
  }
  void join() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

  [[nodiscard]] std::vector<std::string> problems() const {
    const std::lock_guard lock(mutex_);
    return problems_;
  }

  // After stop(): each writer's file holds exactly what was written, through the mount.
  void check_written() {
    for (int w = 0; w < 2; ++w) {
      const std::string got = read_file(mnt_ / writer_name(w));
      if (got != written_[w]) {
        problem("writer " + std::to_string(w) + ": the file holds " + std::to_string(got.size()) +
                " bytes, " + std::to_string(written_[w].size()) + " were written");
      }
    }
  }

 private:
  static std::string writer_name(int w) {
    return w == 0 ? "new-file.bin" : "lower-file.bin";
  }

  void spawn(std::function<void()> body) {
    rounds_.push_back(std::make_unique<std::atomic<std::uint64_t>>(0));
    threads_.emplace_back([this, body = std::move(body)] {
      try {
        body();
      } catch (const std::exception& e) {
        problem(e.what());
      }
      const std::lock_guard lock(mutex_);
      ++finished_;
      done_cv_.notify_all();
    });
  }

  std::uint64_t min_rounds() const {
    std::uint64_t least = ~std::uint64_t{0};
    for (const auto& r : rounds_) least = std::min(least, r->load());
    return least;
  }
  std::atomic<std::uint64_t>& my_rounds(std::size_t index) { return *rounds_[index]; }

  void problem(const std::string& what) {
    const std::lock_guard lock(mutex_);
    if (problems_.size() < 20) problems_.push_back(what);
  }

  void read_loop(int file) {
    const fs::path path = mnt_ / ("big-" + std::to_string(file) + ".bin");
    // One fd kept open across every kill, and fresh opens beside it.
    UniqueFd kept(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!kept) return problem("open " + path.string() + ": " + std::strerror(errno));
    std::mt19937_64 random(static_cast<std::uint64_t>(file));
    std::vector<char> buffer(kChunk);
    while (!stop_) {
      const bool fresh = random() % 4 == 0;
      UniqueFd opened;
      if (fresh) {
        opened = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!opened) return problem("reopen " + path.string() + ": " + std::strerror(errno));
      }
      const int fd = fresh ? opened.get() : kept.get();
      ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
      const std::size_t offset = (random() % (kBigFile / kChunk)) * kChunk;
      const ssize_t n = ::pread(fd, buffer.data(), kChunk, static_cast<off_t>(offset));
      if (n != static_cast<ssize_t>(kChunk)) {
        return problem("read " + path.string() + ": " + (n < 0 ? std::strerror(errno) : "short"));
      }
      for (std::size_t i = 0; i < kChunk; ++i) {
        if (buffer[i] != pattern(file, offset + i)) {
          return problem("wrong byte in " + path.string() + " at " + std::to_string(offset + i));
        }
      }
      ++my_rounds(static_cast<std::size_t>(file));
    }
  }

  // Writer 0 creates a file; writer 1 rewrites a lower file (a copy-up) in place. Both keep
  // their fd open across every kill, and fsync now and then.
  void write_loop(int w) {
    const fs::path path = mnt_ / writer_name(w);
    UniqueFd fd(::open(path.c_str(), (w == 0 ? O_CREAT | O_TRUNC : 0) | O_RDWR | O_CLOEXEC, 0644));
    if (!fd) return problem("open for writing " + path.string() + ": " + std::strerror(errno));
    std::string& mine = written_[w];
    if (w == 1) mine = read_file(src_ / writer_name(w));
    std::size_t round = 0;
    while (!stop_) {
      const std::string block(4096, static_cast<char>('a' + (round % 26)));
      const std::size_t offset = w == 0 ? mine.size() : (round * 4096) % mine.size();
      const ssize_t n = ::pwrite(fd.get(), block.data(), block.size(), static_cast<off_t>(offset));
      if (n != static_cast<ssize_t>(block.size())) {
        return problem("write " + path.string() + ": " + (n < 0 ? std::strerror(errno) : "short"));
      }
      if (offset + block.size() > mine.size()) mine.resize(offset + block.size());
      mine.replace(offset, block.size(), block);
      if (round % 16 == 0 && ::fsync(fd.get()) != 0) {
        return problem("fsync " + path.string() + ": " + std::strerror(errno));
      }
      // Read back through the same fd: what was acknowledged is there.
      std::string back(block.size(), '\0');
      if (::pread(fd.get(), back.data(), back.size(), static_cast<off_t>(offset)) !=
              static_cast<ssize_t>(back.size()) ||
          back != block) {
        return problem("read back " + path.string() + " at " + std::to_string(offset));
      }
      ++round;
      ++my_rounds(static_cast<std::size_t>(kReaders + w));
      if (w == 0 && mine.size() > (8 << 20)) break;  // bounded, even in the heavy test
    }
    // A finished writer still counts rounds, so that progress() does not wait for it.
    while (!stop_) {
      ++my_rounds(static_cast<std::size_t>(kReaders + w));
      std::this_thread::sleep_for(milliseconds(1));
    }
  }

  void walk_loop() {
    const std::size_t expected = kDirs * (kFilesPerDir + 1);
    while (!stop_) {
      std::size_t seen = 0;
      std::error_code ec;
      for (fs::recursive_directory_iterator it(mnt_ / "tree", ec), end; !ec && it != end;
           it.increment(ec)) {
        struct stat st {};
        if (::lstat(it->path().c_str(), &st) != 0) {
          return problem("lstat " + it->path().string() + ": " + std::strerror(errno));
        }
        ++seen;
      }
      if (ec) return problem("walk: " + ec.message());
      if (seen != expected) {
        return problem("walk saw " + std::to_string(seen) + " of " + std::to_string(expected));
      }
      ++my_rounds(kReaders + 2);
    }
  }

  // Lookups of names that do not exist, each new: every one is a request to the worker.
  void probe_loop() {
    std::uint64_t i = 0;
    while (!stop_) {
      const std::int64_t started = now_ns();
      const fs::path path = mnt_ / ("probe-" + std::to_string(i++));
      if (::access(path.c_str(), F_OK) == 0 || errno != ENOENT) {
        return problem("probe " + path.string() + ": " + std::strerror(errno));
      }
      const std::int64_t killed = killed_at_.load();
      std::int64_t none = 0;
      if (killed != 0 && started >= killed) first_served_.compare_exchange_strong(none, now_ns());
      ++my_rounds(kReaders + 3);
    }
  }

  const fs::path mnt_;
  const fs::path src_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  std::vector<std::unique_ptr<std::atomic<std::uint64_t>>> rounds_;
  std::string written_[2];
  std::atomic<std::int64_t> killed_at_{0};
  std::atomic<std::int64_t> first_served_{0};
  mutable std::mutex mutex_;
  std::condition_variable done_cv_;
  std::size_t finished_ = 0;
  std::vector<std::string> problems_;
};

class TakeoverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = worker_tests_unavailable()) GTEST_SKIP() << *why;
    source_ = std::make_unique<TempDir>("heddle-takeover-src");
    overlay_ = std::make_unique<TempDir>("heddle-takeover-overlay");
    for (int f = 0; f < kReaders; ++f) {
      std::string content(kBigFile, '\0');
      for (std::size_t i = 0; i < kBigFile; ++i) content[i] = pattern(f, i);
      write_file(src() / ("big-" + std::to_string(f) + ".bin"), content);
    }
    write_file(src() / "lower-file.bin", std::string(64 << 10, 'L'));
    write_file(src() / "a.txt", "the a file\n");
    write_file(src() / "b.txt", "the b file, another\n");
    for (int d = 0; d < kDirs; ++d) {
      const fs::path dir = src() / "tree" / ("d" + std::to_string(d));
      fs::create_directories(dir);
      for (int f = 0; f < kFilesPerDir; ++f) write_file(dir / ("f" + std::to_string(f)), "x");
    }
  }

  [[nodiscard]] const fs::path& src() const { return source_->path(); }

  std::unique_ptr<UnsandboxedWorker> start(bool writable) {
    WorkerConfig config;
    config.source = src();
    config.journal = true;
    if (writable) {
      config.read_only_mount = false;
      config.overlay_dir = overlay_->path();
    }
    auto worker = std::make_unique<UnsandboxedWorker>(std::move(config));
    EXPECT_TRUE(worker->ready());
    return worker;
  }

  static nlohmann::ordered_json status_of(UnsandboxedWorker& worker) {
    worker.send(ipc::Status{});
    const auto answer = worker.receive(milliseconds(5'000));
    if (!answer || !std::holds_alternative<ipc::StatusOk>(*answer)) {
      ADD_FAILURE() << "no StatusOk";
      return {};
    }
    return std::get<ipc::StatusOk>(*answer).extra;
  }

  // Kills and replaces the worker `kills` times under load; the takeover times, in order.
  std::vector<std::chrono::microseconds> kill_under_load(int kills) {
    auto worker = start(true);
    if (!worker->ready()) return {};
    Load load(worker->mountpoint(), src());
    load.start();
    std::vector<std::chrono::microseconds> times;
    bool hung = false;
    for (int k = 0; k < kills && !hung; ++k) {
      if (!load.progress(2, milliseconds(20'000))) {
        ADD_FAILURE() << "no progress before kill " << k;
        hung = true;
        break;
      }
      load.killed();
      worker->kill_worker();
      worker->start_successor();
      EXPECT_TRUE(worker->ready()) << "generation " << worker->generation();
      if (!load.progress(2, milliseconds(20'000))) {
        ADD_FAILURE() << "no progress after kill " << k << " (a request was lost)";
        hung = true;
        break;
      }
      if (const auto took = load.takeover_time()) times.push_back(*took);
    }
    const auto status = status_of(*worker);
    EXPECT_EQ(status.value("generation", 0u), static_cast<unsigned>(kills + 1));
    EXPECT_EQ(status.value("resend", false), true) << status.dump();
    EXPECT_EQ(status.value("stale_nodes", 1u), 0u) << status.dump();
    if (hung || !load.stop(milliseconds(20'000))) {
      // Unblock what waits on the connection before joining.
      worker->kill_worker();
      worker.reset();
      load.join();
      ADD_FAILURE() << "the load hung";
    } else {
      load.join();
      load.check_written();
    }
    for (const std::string& problem : load.problems()) ADD_FAILURE() << problem;
    return times;
  }

  static void report(std::vector<std::chrono::microseconds> times) {
    if (times.empty()) return;
    std::sort(times.begin(), times.end());
    const auto at = [&](double q) {
      return times[std::min(times.size() - 1, static_cast<std::size_t>(q * times.size()))];
    };
    std::printf("takeover (kill to first request served), %zu kills: p50 %.2f ms, p99 %.2f ms, "
                "max %.2f ms\n",
                times.size(), at(0.5).count() / 1000.0, at(0.99).count() / 1000.0,
                times.back().count() / 1000.0);
  }

  std::unique_ptr<TempDir> source_;
  std::unique_ptr<TempDir> overlay_;
};

TEST_F(TakeoverTest, ReadersWritersAndAWalkSurviveAKilledWorker) {
  const auto times = kill_under_load(3);
  EXPECT_EQ(times.size(), 3u);
  report(times);
}

TEST_F(TakeoverTest, HeavyAHundredKillsUnderLoad) {
  const auto times = kill_under_load(100);
  EXPECT_GE(times.size(), 95u);
  report(times);
}

// A successor on a read-only mount keeps the nodes and handles: an fd open across the kill
// reads on, and a directory handle lists on.
TEST_F(TakeoverTest, OpenFilesAndDirectoriesCarryOver) {
  auto worker = start(false);
  ASSERT_TRUE(worker->ready());
  const fs::path mnt = worker->mountpoint();
  // The kernel opens a read-only mount's files itself: the first close sends a FLUSH, which
  // a live worker refuses for good. Made here, not by the harness's spawn of the successor
  // (its exec closes our fds of the mount while no worker is there to answer).
  ASSERT_EQ(read_file(mnt / "a.txt"), "the a file\n");
  UniqueFd file(::open((mnt / "a.txt").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(file);
  DIR* dir = ::opendir((mnt / "tree" / "d3").c_str());
  ASSERT_NE(dir, nullptr);
  const auto before = status_of(*worker);
  EXPECT_EQ(before.value("generation", 0u), 1u);

  worker->kill_worker();
  worker->start_successor();
  ASSERT_TRUE(worker->ready());
  const auto after = status_of(*worker);
  EXPECT_EQ(after.value("generation", 0u), 2u);
  EXPECT_EQ(after.value("stale_nodes", 1u), 0u) << after.dump();
  EXPECT_EQ(after.value("journal_handles", 0u), before.value("journal_handles", 1u));

  char buffer[64] = {};
  ::posix_fadvise(file.get(), 0, 0, POSIX_FADV_DONTNEED);
  ASSERT_EQ(::pread(file.get(), buffer, sizeof buffer, 0), 11) << std::strerror(errno);
  EXPECT_EQ(std::string(buffer, 11), "the a file\n");
  std::size_t names = 0;
  while (const dirent* entry = ::readdir(dir)) names += entry->d_name[0] != '.';
  ::closedir(dir);
  EXPECT_EQ(names, static_cast<std::size_t>(kFilesPerDir));
  // And a third generation from the second's journal.
  worker->kill_worker();
  worker->start_successor();
  ASSERT_TRUE(worker->ready());
  ASSERT_EQ(::pread(file.get(), buffer, sizeof buffer, 0), 11) << std::strerror(errno);
  EXPECT_EQ(status_of(*worker).value("generation", 0u), 3u);
}

// The journal's cost: a cold walk of 50k entries (every lookup and readdirplus entry is
// journalled) and reads of small files (opens and releases), without and with the journal. The
// journal must hold every node the walk gave the kernel.
TEST_F(TakeoverTest, HeavyJournalCostOnAWalkAndSmallReads) {
  constexpr int kWalkDirs = 50;
  constexpr int kWalkFiles = 1000;
  std::error_code ec;
  const bool shm = fs::is_directory("/dev/shm", ec);
  TempDir tree("heddle-journal-cost", shm ? fs::path("/dev/shm") : fs::path());
  for (int d = 0; d < kWalkDirs; ++d) {
    const fs::path dir = tree.path() / ("d" + std::to_string(d));
    fs::create_directory(dir);
    for (int f = 0; f < kWalkFiles; ++f) write_file(dir / std::to_string(f), "small file\n");
  }
  auto seconds = [](auto body) {
    const auto start = Clock::now();
    body();
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  double best_walk[2] = {1e9, 1e9};
  double best_read[2] = {1e9, 1e9};
  for (int round = 0; round < 2; ++round) {
    for (int journal = 0; journal < 2; ++journal) {
      WorkerConfig config;
      config.source = tree.path();
      config.journal = journal == 1;
      UnsandboxedWorker worker(std::move(config));
      ASSERT_TRUE(worker.ready());
      std::size_t seen = 0;
      best_walk[journal] = std::min(best_walk[journal], seconds([&] {
        for (fs::recursive_directory_iterator it(worker.mountpoint()), end; it != end; ++it) {
          struct stat st {};
          ASSERT_EQ(::lstat(it->path().c_str(), &st), 0);
          ++seen;
        }
      }));
      EXPECT_EQ(seen, static_cast<std::size_t>(kWalkDirs * (kWalkFiles + 1)));
      best_read[journal] = std::min(best_read[journal], seconds([&] {
        for (int f = 0; f < 5000; ++f) {
          const fs::path path = worker.mountpoint() / ("d" + std::to_string(f % kWalkDirs)) /
                                std::to_string(f / kWalkDirs);
          ASSERT_EQ(read_file(path), "small file\n");
        }
      }));
      if (journal == 1) {
        EXPECT_GE(status_of(worker).value("journal_nodes", 0u),
                  static_cast<unsigned>(kWalkDirs * (kWalkFiles + 1)));
      }
    }
  }
  std::printf("journal cost: walk of %d entries %.3f s without, %.3f s with (%+.1f%%); 5000 "
              "small reads %.3f s without, %.3f s with (%+.1f%%)\n",
              kWalkDirs * (kWalkFiles + 1), best_walk[0], best_walk[1],
              100 * (best_walk[1] / best_walk[0] - 1), best_read[0], best_read[1],
              100 * (best_read[1] / best_read[0] - 1));
}

// A git thread: the successor shows the same inode numbers (the key is journalled) and serves
// the commit its predecessor served, though the ref has moved on since: an fd open across the
// kill reads the bytes it read before.
TEST_F(TakeoverTest, AGitThreadComesBackWholeAtTheCommitItServed) {
  TempDir repo("heddle-takeover-repo");
  auto git = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"/usr/bin/git", "-C", repo.path().string(), "-c", "user.name=T",
                               "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"});
    const CommandResult result = run_command(args, std::chrono::seconds(60));
    ASSERT_EQ(result.exit_code, 0) << result.err;
  };
  git({"init", "-q", "-b", "main"});
  fs::create_directories(repo.path() / "dir");
  write_file(repo.path() / "dir" / "file.txt", "first version\n");
  git({"add", "-A"});
  git({"commit", "-q", "-m", "first"});

  WorkerConfig config;
  config.source = repo.path();
  config.git_thread = "main";
  config.journal = true;
  UnsandboxedWorker worker(std::move(config));
  ASSERT_TRUE(worker.ready());
  const fs::path file = worker.mountpoint() / "dir" / "file.txt";
  UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  struct stat before {};
  ASSERT_EQ(::fstat(fd.get(), &before), 0);
  // A kernel-opened file's first close asks the worker to FLUSH (it answers ENOSYS, once for
  // the connection). Let that happen now: git below forks while no worker runs, and the fork's
  // close of its copy of `fd` would wait for a worker that starts only after git returns.
  ::close(::dup(fd.get()));

  // The ref moves on while the worker is dead.
  worker.kill_worker();
  write_file(repo.path() / "dir" / "file.txt", "second, longer version\n");
  git({"commit", "-q", "-a", "-m", "second"});
  worker.start_successor();
  ASSERT_TRUE(worker.ready());
  const auto status = status_of(worker);
  EXPECT_EQ(status.value("stale_nodes", 1u), 0u) << status.dump();
  EXPECT_EQ(status.value("restored_nodes", 0u), 2u) << status.dump();

  char buffer[64] = {};
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
  ASSERT_EQ(::pread(fd.get(), buffer, sizeof buffer, 0), 14) << std::strerror(errno);
  EXPECT_EQ(std::string(buffer, 14), "first version\n");
  struct stat after {};
  ASSERT_EQ(::stat(file.c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
}

// --- A damaged journal -------------------------------------------------------------------

using worker::JournalRecord;
using worker::JournalState;

std::vector<JournalRecord> records_of(const JournalState& state) {
  std::vector<JournalRecord> out;
  for (const auto& [id, node] : state.nodes) {
    out.push_back({JournalRecord::kLookup, node.type, id, node.parent != 0 ? node.parent : 1,
                   node.ino, node.nlookup, node.parent != 0 ? node.name : "-"});
    if (node.parent == 0) out.push_back({JournalRecord::kName, 0, id, 0, 0, 0, ""});
  }
  for (const auto& [fh, handle] : state.handles) {
    out.push_back({JournalRecord::kOpen, static_cast<std::uint32_t>(handle.flags), fh,
                   handle.node, handle.dir ? 1u : 0u, 0, ""});
  }
  return out;
}

JournalState current(int memfd) {
  auto read = worker::NodeJournal::read(memfd);
  EXPECT_TRUE(std::holds_alternative<JournalState>(read));
  return std::holds_alternative<JournalState>(read) ? std::get<JournalState>(read)
                                                    : JournalState{};
}

void write_image(int memfd, const std::vector<std::byte>& image) {
  ASSERT_EQ(::pwrite(memfd, image.data(), image.size(), 0), static_cast<ssize_t>(image.size()));
}

worker::NodeId node_named(const JournalState& state, std::string_view name) {
  for (const auto& [id, node] : state.nodes) {
    if (node.name == name) return id;
  }
  return 0;
}

TEST_F(TakeoverTest, ADamagedJournalIsRefusedOrItsNodesAreStaleNeverServedWrong) {
  struct Case {
    std::string what;
    // Damages the journal; `state` is what the first worker left.
    std::function<void(int memfd, const JournalState& state)> damage;
    bool takes_over;  // a successor still serves (else: it refuses, with MountError)
  };
  auto with = [](std::vector<JournalRecord> extra) {
    return [extra](int memfd, const JournalState& state) {
      auto records = records_of(state);
      records.insert(records.end(), extra.begin(), extra.end());
      write_image(memfd, worker::journal_image(records, state.init_request, state.init_reply));
    };
  };
  const std::vector<Case> cases = {
      {"random bytes over everything",
       [](int memfd, const JournalState&) {
         std::mt19937_64 random(7);
         std::vector<std::byte> junk(worker::kJournalHeaderBytes + 65536);
         for (auto& b : junk) b = static_cast<std::byte>(random());
         write_image(memfd, junk);
       },
       false},
      {"random bytes over the log",
       [](int memfd, const JournalState& state) {
         auto image = worker::journal_image(records_of(state), state.init_request,
                                            state.init_reply);
         std::mt19937_64 random(8);
         for (std::size_t i = worker::kJournalHeaderBytes; i < image.size(); ++i) {
           image[i] = static_cast<std::byte>(random());
         }
         write_image(memfd, image);
       },
       true},
      {"a huge lookup count", with({{JournalRecord::kLookup, S_IFREG, 900, 1, 1, ~0ull, "x"}}),
       true},
      {"a name with ..", with({{JournalRecord::kLookup, S_IFDIR, 901, 1, 1, 1, ".."}}), true},
      {"an absolute path", with({{JournalRecord::kLookup, S_IFREG, 902, 1, 1, 1, "/etc/passwd"}}),
       true},
      {"a node id out of range",
       with({{JournalRecord::kLookup, S_IFREG, 1ull << 60, 1, 1, 1, "a.txt"}}), true},
      {"the open file's node renamed to another file",
       [](int memfd, const JournalState& state) {
         auto records = records_of(state);
         records.push_back({JournalRecord::kName, 0, node_named(state, "a.txt"), 1, 0, 0,
                            "b.txt"});
         write_image(memfd, worker::journal_image(records, state.init_request, state.init_reply));
       },
       true},
      {"a forged FUSE_INIT",
       [](int memfd, const JournalState& state) {
         write_image(memfd, worker::journal_image(records_of(state), "not an init request",
                                                  state.init_reply));
       },
       false},
      {"an empty memfd", [](int memfd, const JournalState&) { ASSERT_EQ(::ftruncate(memfd, 0), 0); },
       false},
      {"a memfd of another size",
       [](int memfd, const JournalState&) { ASSERT_EQ(::ftruncate(memfd, 8192), 0); }, false},
      {"a sealed memfd",
       [](int memfd, const JournalState&) {
         ASSERT_EQ(::fcntl(memfd, F_ADD_SEALS, F_SEAL_WRITE), 0);
       },
       false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    auto worker = start(false);
    ASSERT_TRUE(worker->ready());
    const fs::path mnt = worker->mountpoint();
    // A first close while a worker answers its FLUSH (see OpenFilesAndDirectoriesCarryOver).
    ASSERT_EQ(read_file(mnt / "a.txt"), "the a file\n");
    UniqueFd file(::open((mnt / "a.txt").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(file);
    struct stat st {};
    ASSERT_EQ(::stat((mnt / "tree" / "d1" / "f1").c_str(), &st), 0);
    worker->kill_worker();
    const JournalState state = current(worker->journal_fd());
    ASSERT_NE(node_named(state, "a.txt"), 0u);
    c.damage(worker->journal_fd(), state);
    worker->start_successor();
    if (!c.takes_over) {
      // Refused whole: the successor says why and exits; it does not crash.
      ASSERT_TRUE(worker->first_message().has_value());
      EXPECT_TRUE(std::holds_alternative<ipc::MountError>(*worker->first_message()));
      const auto status = worker->wait_for_exit(milliseconds(5'000));
      ASSERT_TRUE(status.has_value());
      EXPECT_TRUE(WIFEXITED(*status)) << "status " << *status;
      continue;  // the harness drops the connection
    }
    ASSERT_TRUE(worker->ready());
    // The fd open across the kill reads a.txt's bytes or fails; never another file's.
    char buffer[64] = {};
    ::posix_fadvise(file.get(), 0, 0, POSIX_FADV_DONTNEED);
    const ssize_t n = ::pread(file.get(), buffer, sizeof buffer, 0);
    if (n >= 0) {
      EXPECT_EQ(std::string(buffer, static_cast<std::size_t>(n)), "the a file\n");
    } else {
      EXPECT_TRUE(errno == EBADF || errno == ESTALE || errno == EIO) << std::strerror(errno);
    }
    // Names are found again from the root; nothing outside the source shows.
    EXPECT_EQ(read_file(mnt / "b.txt"), "the b file, another\n");
    EXPECT_EQ(read_file(mnt / "a.txt"), "the a file\n");
    EXPECT_EQ(::stat((mnt / "tree" / "d1" / "f1").c_str(), &st), 0) << std::strerror(errno);
    EXPECT_NE(::access((mnt / "passwd").c_str(), F_OK), 0);
    EXPECT_EQ(worker->wait_for_exit(milliseconds(0)), std::nullopt) << "the successor died";
  }
}

}  // namespace
}  // namespace heddle::test
