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
#include "heddle/ipc/worker_env.h"
#include "heddle/unique_fd.h"
#include "in_flight.h"
#include "node_journal.h"
#include "support/child_process.h"
#include "support/mount_load.h"
#include "support/unsandboxed_worker.h"

namespace heddle::test {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int kFilesPerDir = MountLoad::kFilesPerDir;

void write_file(const fs::path& path, std::string_view content) {
  MountLoad::write_file(path, content);
}

class TakeoverTest : public ::testing::Test {
 public:
  static nlohmann::ordered_json status_of(UnsandboxedWorker& worker);

 protected:
  void SetUp() override {
    if (auto why = worker_tests_unavailable()) GTEST_SKIP() << *why;
    source_ = std::make_unique<TempDir>("heddle-takeover-src");
    overlay_ = std::make_unique<TempDir>("heddle-takeover-overlay");
    MountLoad::populate(src());
    write_file(src() / "a.txt", "the a file\n");
    write_file(src() / "b.txt", "the b file, another\n");
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

  // Kills and replaces the worker `kills` times under load; the takeover times, in order.
  std::vector<std::chrono::microseconds> kill_under_load(int kills) {
    auto worker = start(true);
    if (!worker->ready()) return {};
    MountLoad load(worker->mountpoint(), src());
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

nlohmann::ordered_json TakeoverTest::status_of(UnsandboxedWorker& worker) {
  worker.send(ipc::Status{});
  const auto answer = worker.receive(milliseconds(5'000));
  if (!answer || !std::holds_alternative<ipc::StatusOk>(*answer)) {
    ADD_FAILURE() << "no StatusOk";
    return {};
  }
  return std::get<ipc::StatusOk>(*answer).extra;
}

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

// --- Requests the dead worker held -------------------------------------------------------

struct HeldWrite {
  ssize_t result = 0;
  int error = 0;
  milliseconds answered_after{0};  // from the successor's start
  std::size_t recorded = 0;        // in the journal's in-flight table when the worker died
  nlohmann::ordered_json status;   // the successor's
  std::string content;             // a.txt's, through the mount, afterwards
};

// A write the worker has read and holds (at the write gate a Freeze closed) when it is
// SIGKILLed; the successor starts with the kernel's RESEND or, `without_resend`, as on a
// kernel before Linux 6.9.
// Its own small source: the fixture's big tree, synced by the Freeze, takes seconds to delete.
HeldWrite write_held_across_kill(bool without_resend) {
  HeldWrite out;
  const TempDir src("heddle-held-src");
  const TempDir overlay("heddle-held-overlay");
  write_file(src.path() / "a.txt", "the a file\n");
  WorkerConfig config;
  config.source = src.path();
  config.journal = true;
  config.read_only_mount = false;
  config.overlay_dir = overlay.path();
  if (without_resend) config.extra_env.push_back(std::string(ipc::kNoResendEnv) + "=1");
  auto worker = std::make_unique<UnsandboxedWorker>(std::move(config));
  if (!worker->ready()) {
    ADD_FAILURE() << "the first worker is not ready";
    return out;
  }
  const fs::path file = worker->mountpoint() / "a.txt";
  UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) {
    ADD_FAILURE() << "open " << file << ": " << std::strerror(errno);
    return out;
  }
  worker->send(ipc::Freeze{});
  const auto frozen = worker->receive(milliseconds(5'000));
  EXPECT_TRUE(frozen && std::holds_alternative<ipc::Frozen>(*frozen));

  std::atomic<bool> done{false};
  std::atomic<std::int64_t> done_at{0};
  std::thread writer([&] {
    out.result = ::pwrite(fd.get(), "HELD!", 5, 0);
    out.error = out.result < 0 ? errno : 0;
    done_at = now_ns();
    done = true;
  });
  // Held: the worker has read the WRITE and waits at its gate.
  const auto deadline = Clock::now() + milliseconds(5'000);
  while (TakeoverTest::status_of(*worker).value("writes_held", 0u) == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_FALSE(done.load()) << "the write was not held";
  out.recorded = worker::read_in_flight(worker->journal_fd()).size();

  worker->kill_worker();
  const std::int64_t successor_at = now_ns();
  worker->start_successor();
  EXPECT_TRUE(worker->ready());
  // Bounded: the write ends within 10 s of the successor's start, or the test says it hung.
  const auto wait_until = Clock::now() + milliseconds(10'000);
  while (!done.load() && Clock::now() < wait_until) std::this_thread::sleep_for(milliseconds(1));
  if (!done.load()) {
    ADD_FAILURE() << "the held write hung after the takeover";
    worker.reset();  // drops the connection: the write ends (ENOTCONN)
    writer.join();
    return out;
  }
  writer.join();
  out.answered_after = milliseconds((done_at.load() - successor_at) / 1'000'000);
  out.status = TakeoverTest::status_of(*worker);
  fd.reset();
  out.content = read_file(file);
  return out;
}

// Linux 6.9 and later: the kernel sends the held WRITE again and the successor performs it.
TEST(TakeoverHeldTest, AHeldRequestIsResentToTheSuccessor) {
  if (auto why = worker_tests_unavailable()) GTEST_SKIP() << *why;
  const HeldWrite held = write_held_across_kill(false);
  EXPECT_GE(held.recorded, 1u);
  EXPECT_EQ(held.result, 5) << std::strerror(held.error);
  EXPECT_EQ(held.status.value("resend", false), true) << held.status.dump();
  EXPECT_EQ(held.status.value("failed_requests", 1u), 0u) << held.status.dump();
  EXPECT_EQ(held.content, "HELD! file\n");
}

// Before Linux 6.9 (forced here): the held WRITE fails with EIO at once, rather than waiting
// until unmount, and nothing of it is written.
TEST(TakeoverHeldTest, WithoutResendAHeldRequestFailsWithEio) {
  if (auto why = worker_tests_unavailable()) GTEST_SKIP() << *why;
  const HeldWrite held = write_held_across_kill(true);
  // The held WRITE, and now and then a request the kernel sends beside it, answered at once.
  EXPECT_GE(held.recorded, 1u);
  EXPECT_EQ(held.result, -1);
  EXPECT_EQ(held.error, EIO) << std::strerror(held.error);
  EXPECT_LT(held.answered_after, milliseconds(2'000));
  EXPECT_EQ(held.status.value("resend", true), false) << held.status.dump();
  EXPECT_GE(held.status.value("failed_requests", 0u), 1u) << held.status.dump();
  EXPECT_EQ(held.content, "the a file\n");
  std::printf("without RESEND: the held write failed %lld ms after the successor started\n",
              static_cast<long long>(held.answered_after.count()));
}

// --- A first worker that died before answering FUSE_INIT -----------------------------------

// The first worker dies before it reads FUSE_INIT ("before-init") or once it has read it and
// before it replies ("at-init"); its successor serves the mount, with or without RESEND.
void first_worker_dies_then_successor_serves(const fs::path& src, const std::string& when,
                                             bool without_resend) {
  WorkerConfig config;
  config.source = src;
  config.journal = true;
  config.extra_env.push_back(std::string(ipc::kFirstDiesEnv) + "=" + when);
  if (without_resend) config.extra_env.push_back(std::string(ipc::kNoResendEnv) + "=1");
  UnsandboxedWorker worker(std::move(config));
  // It may have said MountReady before its loop read FUSE_INIT ("at-init"); it is dead soon.
  const auto first = worker.wait_for_exit(milliseconds(5'000));
  ASSERT_TRUE(first.has_value()) << "the first worker did not die";
  EXPECT_TRUE(WIFSIGNALED(*first) && WTERMSIG(*first) == SIGKILL) << "status " << *first;
  const auto journal = worker::NodeJournal::read(worker.journal_fd());
  ASSERT_TRUE(std::holds_alternative<worker::JournalState>(journal));
  EXPECT_EQ(std::get<worker::JournalState>(journal).init_request.empty(), when != "at-init");
  EXPECT_TRUE(std::get<worker::JournalState>(journal).init_reply.empty());

  worker.start_successor();
  ASSERT_TRUE(worker.ready());
  EXPECT_EQ(read_file(worker.mountpoint() / "a.txt"), "the a file\n");
  EXPECT_EQ(read_file(worker.mountpoint() / "b.txt"), "the b file, another\n");
  EXPECT_EQ(TakeoverTest::status_of(worker).value("generation", 0u), 2u);
  // It recorded the exchange: a third generation takes over as from any other worker.
  const auto recorded = worker::NodeJournal::read(worker.journal_fd());
  ASSERT_TRUE(std::holds_alternative<worker::JournalState>(recorded));
  EXPECT_FALSE(std::get<worker::JournalState>(recorded).init_reply.empty());
  UniqueFd fd(::open((worker.mountpoint() / "a.txt").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  worker.kill_worker();
  worker.start_successor();
  ASSERT_TRUE(worker.ready());
  char buffer[64] = {};
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
  ASSERT_EQ(::pread(fd.get(), buffer, sizeof buffer, 0), 11) << std::strerror(errno);
  EXPECT_EQ(TakeoverTest::status_of(worker).value("stale_nodes", 1u), 0u);
}

TEST_F(TakeoverTest, AFirstWorkerKilledBeforeReadingFuseInitIsReplaced) {
  first_worker_dies_then_successor_serves(src(), "before-init", false);
}

TEST_F(TakeoverTest, AFirstWorkerKilledBeforeReadingFuseInitIsReplacedWithoutResend) {
  first_worker_dies_then_successor_serves(src(), "before-init", true);
}

// The kernel still waits for the reply to the FUSE_INIT the dead worker read: the successor
// answers the request recorded in the journal (no RESEND needed, so on any kernel).
TEST_F(TakeoverTest, AFirstWorkerKilledHoldingFuseInitIsReplaced) {
  first_worker_dies_then_successor_serves(src(), "at-init", false);
}

TEST_F(TakeoverTest, AFirstWorkerKilledHoldingFuseInitIsReplacedWithoutResend) {
  first_worker_dies_then_successor_serves(src(), "at-init", true);
}

// Killed between read() returning FUSE_INIT and recording it: only the kernel knows of it, and
// RESEND (Linux 6.9) queues it again on a connection not yet initialized (fuse_resend() moves
// every processing request back, whatever the connection's state). Before 6.9 that mount waits.
TEST_F(TakeoverTest, AFirstWorkerKilledHoldingAnUnrecordedFuseInitIsReplacedByResend) {
  first_worker_dies_then_successor_serves(src(), "at-init-unrecorded", false);
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

// --- Nodes without a name (issue 16, the overlay) ----------------------------------------

// pread of the whole of `fd` (at most 4 KiB), its page cache dropped first: from the worker.
std::string read_fd(int fd) {
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  char buffer[4096];
  const ssize_t n = ::pread(fd, buffer, sizeof buffer, 0);
  if (n < 0) return std::string("error: ") + std::strerror(errno);
  return std::string(buffer, static_cast<std::size_t>(n));
}

// Names in DIR/work/orphans (none when the directory is absent).
std::vector<std::string> orphans_in(const fs::path& overlay) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(overlay / "work" / "orphans", ec)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// A file of the overlay unlinked or renamed over while it is open, and a file of the lower
// layer unlinked while open (a whiteout hides it), stay readable and writable through their
// fds across two takeovers; no node is stale, no handle lost; each hidden file goes with its
// last close.
TEST_F(TakeoverTest, FilesRemovedWhileOpenStayUsableAcrossATakeover) {
  auto worker = start(true);
  ASSERT_TRUE(worker->ready());
  const fs::path mnt = worker->mountpoint();
  write_file(mnt / "doomed.txt", "made in the mount\n");
  write_file(mnt / "target.txt", "the old target\n");
  write_file(mnt / "source.txt", "the new target\n");
  UniqueFd unlinked(::open((mnt / "doomed.txt").c_str(), O_RDWR | O_CLOEXEC));
  UniqueFd replaced(::open((mnt / "target.txt").c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd whited_out(::open((mnt / "a.txt").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(unlinked && replaced && whited_out);
  ASSERT_EQ(::unlink((mnt / "doomed.txt").c_str()), 0);
  ASSERT_EQ(::rename((mnt / "source.txt").c_str(), (mnt / "target.txt").c_str()), 0);
  ASSERT_EQ(::unlink((mnt / "a.txt").c_str()), 0);
  const auto before = status_of(*worker);

  for (std::uint32_t generation = 2; generation <= 3; ++generation) {
    SCOPED_TRACE("generation " + std::to_string(generation));
    worker->kill_worker();
    worker->start_successor();
    ASSERT_TRUE(worker->ready());
    const auto after = status_of(*worker);
    EXPECT_EQ(after.value("stale_nodes", 1u), 0u) << after.dump();
    EXPECT_EQ(after.value("journal_handles", 0u), before.value("journal_handles", 1u))
        << after.dump();
    EXPECT_EQ(read_fd(unlinked.get()), generation == 2 ? "made in the mount\n"
                                                       : "made in the mount\nand more\n");
    EXPECT_EQ(read_fd(replaced.get()), "the old target\n");
    EXPECT_EQ(read_fd(whited_out.get()), "the a file\n");
    struct stat st {};
    ASSERT_EQ(::fstat(unlinked.get(), &st), 0) << std::strerror(errno);
    EXPECT_EQ(st.st_nlink, 0u);
    if (generation == 2) {
      ASSERT_EQ(::pwrite(unlinked.get(), "and more\n", 9, 18), 9) << std::strerror(errno);
    }
    // The names show what the mount says now.
    EXPECT_EQ(read_file(mnt / "target.txt"), "the new target\n");
    EXPECT_FALSE(fs::exists(mnt / "doomed.txt"));
    EXPECT_FALSE(fs::exists(mnt / "a.txt"));
  }
  // Truncated through the fd of a file without a name.
  ASSERT_EQ(::ftruncate(unlinked.get(), 4), 0) << std::strerror(errno);
  {
    struct stat st {};
    ASSERT_EQ(::fstat(unlinked.get(), &st), 0) << std::strerror(errno);
    EXPECT_EQ(st.st_size, 4);
    EXPECT_EQ(st.st_nlink, 0u);
    EXPECT_EQ(read_fd(unlinked.get()), "made");
  }
  EXPECT_FALSE(orphans_in(overlay_->path()).empty());
  unlinked.reset();
  replaced.reset();
  whited_out.reset();
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (!orphans_in(overlay_->path()).empty() && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_EQ(orphans_in(overlay_->path()), std::vector<std::string>{})
      << ::testing::PrintToString(orphans_in(overlay_->path()));
}

// A worker killed while a file it had hidden is still open: the next first worker (a new
// mount of the overlay) removes what is left.
TEST_F(TakeoverTest, AFirstWorkerRemovesHiddenFilesLeftBehind) {
  {
    auto worker = start(true);
    ASSERT_TRUE(worker->ready());
    write_file(worker->mountpoint() / "gone.txt", "gone\n");
    UniqueFd fd(::open((worker->mountpoint() / "gone.txt").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    ASSERT_EQ(::unlink((worker->mountpoint() / "gone.txt").c_str()), 0);
    EXPECT_EQ(orphans_in(overlay_->path()).size(), 1u);
    worker->kill_worker();  // the fd closes without a worker to tell
  }
  EXPECT_EQ(orphans_in(overlay_->path()).size(), 1u);
  auto fresh = start(true);
  ASSERT_TRUE(fresh->ready());
  EXPECT_EQ(orphans_in(overlay_->path()), std::vector<std::string>{});
}

// Hard links of the overlay: a file open by one name whose other name (the one the journal
// last saw) is removed, the same with no fd open, and a file whose open name is removed while
// another name of it is looked up: the successor finds every node the kernel holds under its
// id.
TEST_F(TakeoverTest, HardLinksKeepTheirNodesAcrossATakeover) {
  auto worker = start(true);
  ASSERT_TRUE(worker->ready());
  const fs::path mnt = worker->mountpoint();
  write_file(mnt / "one.txt", "linked\n");
  ASSERT_EQ(::link((mnt / "one.txt").c_str(), (mnt / "two.txt").c_str()), 0);
  UniqueFd by_one(::open((mnt / "one.txt").c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(by_one);
  ASSERT_EQ(::unlink((mnt / "two.txt").c_str()), 0);

  // Not open: the kernel knows the node by its remaining name.
  write_file(mnt / "left.txt", "one name left\n");
  ASSERT_EQ(::link((mnt / "left.txt").c_str(), (mnt / "gone.txt").c_str()), 0);
  struct stat left {};
  ASSERT_EQ(::stat((mnt / "left.txt").c_str(), &left), 0);
  ASSERT_EQ(::unlink((mnt / "gone.txt").c_str()), 0);

  write_file(mnt / "first.txt", "twice named\n");
  ASSERT_EQ(::link((mnt / "first.txt").c_str(), (mnt / "second.txt").c_str()), 0);
  UniqueFd by_first(::open((mnt / "first.txt").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(by_first);
  ASSERT_EQ(::unlink((mnt / "first.txt").c_str()), 0);
  struct stat second {};
  ASSERT_EQ(::stat((mnt / "second.txt").c_str(), &second), 0);
  struct stat first {};
  ASSERT_EQ(::fstat(by_first.get(), &first), 0);
  EXPECT_EQ(first.st_ino, second.st_ino);

  worker->kill_worker();
  worker->start_successor();
  ASSERT_TRUE(worker->ready());
  const auto after = status_of(*worker);
  EXPECT_EQ(after.value("stale_nodes", 1u), 0u) << after.dump();
  EXPECT_EQ(read_fd(by_one.get()), "linked\n");
  ASSERT_EQ(::pwrite(by_one.get(), "LINKED\n", 7, 0), 7) << std::strerror(errno);
  EXPECT_EQ(read_file(mnt / "one.txt"), "LINKED\n");
  EXPECT_EQ(read_fd(by_first.get()), "twice named\n");
  struct stat again {};
  ASSERT_EQ(::stat((mnt / "second.txt").c_str(), &again), 0) << std::strerror(errno);
  EXPECT_EQ(again.st_ino, second.st_ino);
  EXPECT_EQ(again.st_nlink, 1u);
  EXPECT_FALSE(fs::exists(mnt / "two.txt"));
  EXPECT_FALSE(fs::exists(mnt / "first.txt"));
  ASSERT_EQ(::stat((mnt / "left.txt").c_str(), &again), 0) << std::strerror(errno);
  EXPECT_EQ(again.st_ino, left.st_ino);
  EXPECT_EQ(again.st_nlink, 1u);
  EXPECT_EQ(read_file(mnt / "left.txt"), "one name left\n");
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
  enum Outcome {
    kTakesOver,  // a successor still serves
    kRefused,    // it refuses at once, with MountError
    // No FUSE_INIT in it: the successor serves as a first worker would, finds the connection
    // initialized (the first request is not FUSE_INIT), fails that request and exits.
    kCannotServe,
  };
  struct Case {
    std::string what;
    // Damages the journal; `state` is what the first worker left.
    std::function<void(int memfd, const JournalState& state)> damage;
    Outcome outcome;
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
       kCannotServe},
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
       kTakesOver},
      {"a huge lookup count", with({{JournalRecord::kLookup, S_IFREG, 900, 1, 1, ~0ull, "x"}}),
       kTakesOver},
      {"a name with ..", with({{JournalRecord::kLookup, S_IFDIR, 901, 1, 1, 1, ".."}}), kTakesOver},
      {"an absolute path", with({{JournalRecord::kLookup, S_IFREG, 902, 1, 1, 1, "/etc/passwd"}}),
       kTakesOver},
      {"a node id out of range",
       with({{JournalRecord::kLookup, S_IFREG, 1ull << 60, 1, 1, 1, "a.txt"}}), kTakesOver},
      {"the open file's node renamed to another file",
       [](int memfd, const JournalState& state) {
         auto records = records_of(state);
         records.push_back({JournalRecord::kName, 0, node_named(state, "a.txt"), 1, 0, 0,
                            "b.txt"});
         write_image(memfd, worker::journal_image(records, state.init_request, state.init_reply));
       },
       kTakesOver},
      {"a forged FUSE_INIT",
       [](int memfd, const JournalState& state) {
         write_image(memfd, worker::journal_image(records_of(state), "not an init request",
                                                  state.init_reply));
       },
       kRefused},
      {"a FUSE_INIT request without its reply (the kernel answered it long ago)",
       [](int memfd, const JournalState& state) {
         write_image(memfd, worker::journal_image(records_of(state), state.init_request, ""));
       },
       kRefused},
      {"an empty memfd", [](int memfd, const JournalState&) { ASSERT_EQ(::ftruncate(memfd, 0), 0); },
       kCannotServe},
      // The supervisor sizes and seals it: another size is another version's (or a forgery).
      {"a memfd of another size",
       [](int memfd, const JournalState&) { ASSERT_EQ(::ftruncate(memfd, 8192), 0); }, kRefused},
      {"a sealed memfd",
       [](int memfd, const JournalState&) {
         ASSERT_EQ(::fcntl(memfd, F_ADD_SEALS, F_SEAL_WRITE), 0);
       },
       kRefused},
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
    if (c.outcome == kRefused) {
      // Refused whole: the successor says why and exits; it does not crash.
      ASSERT_TRUE(worker->first_message().has_value());
      EXPECT_TRUE(std::holds_alternative<ipc::MountError>(*worker->first_message()));
      const auto status = worker->wait_for_exit(milliseconds(5'000));
      ASSERT_TRUE(status.has_value());
      EXPECT_TRUE(WIFEXITED(*status)) << "status " << *status;
      continue;  // the harness drops the connection
    }
    if (c.outcome == kCannotServe) {
      ASSERT_TRUE(worker->ready());
      // The first request (this stat, or the kernel's own) fails and the successor exits; a
      // request after that waits until the harness drops the connection.
      std::atomic<int> stat_errno{-1};
      std::thread prober([&] {
        struct stat probe {};
        stat_errno = ::stat((mnt / "b.txt").c_str(), &probe) == 0 ? 0 : errno;
      });
      const auto status = worker->wait_for_exit(milliseconds(5'000));
      ASSERT_TRUE(status.has_value()) << "the successor serves an initialized connection";
      EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << "status " << *status;
      worker.reset();
      prober.join();
      EXPECT_NE(stat_errno.load(), 0) << "a successor without FUSE_INIT answered a request";
      continue;
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
