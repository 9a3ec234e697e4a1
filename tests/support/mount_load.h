// The load issue 16 asks a worker restart to survive, run against a writable mount: 4 readers
// of big files (their page cache dropped before each read, so that reads reach the worker), 2
// writers through the overlay with their files open across every kill, a walk of a tree, and a
// prober whose lookups time the takeover (kill to the first request the successor served).
// Every thread checks what it gets; a thread that fails stops and keeps its first problem.
// Used by the unsandboxed harness (takeover_worker_test.cc) and through the CLI
// (restart_test.cc).
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "heddle/error.h"
#include "heddle/unique_fd.h"
#include "support/child_process.h"
#include "support/read_file.h"

namespace heddle::test {

// Steady-clock nanoseconds, comparable across threads (kill and first-answer times).
inline std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

class MountLoad {
 public:
  static constexpr std::size_t kBigFile = 4 << 20;
  static constexpr std::size_t kChunk = 64 << 10;
  static constexpr int kReaders = 4;
  static constexpr int kDirs = 20;
  static constexpr int kFilesPerDir = 50;

  // How the tree is walked: in this process, or by /usr/bin/find (a process per walk, whose
  // output is counted), bounded by a timeout.
  enum class Walk { kInProcess, kFind };

  using Clock = std::chrono::steady_clock;
  using milliseconds = std::chrono::milliseconds;

  // The byte at `offset` of big file `file`: a file's bytes tell where they came from.
  static char pattern(int file, std::size_t offset) {
    return static_cast<char>((offset * 131 + static_cast<std::size_t>(file) * 7 + offset / 4096) &
                             0xff);
  }

  static void write_file(const std::filesystem::path& path, std::string_view content) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd) throw_errno("create " + path.string());
    if (::write(fd.get(), content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
      throw_errno("write " + path.string());
    }
  }

  // Writes what the load reads into the source `src`: big-N.bin, lower-file.bin and tree/.
  // Directories are 0755 and files 0644, so that a sandboxed worker reads them.
  static void populate(const std::filesystem::path& src) {
    namespace fs = std::filesystem;
    for (int f = 0; f < kReaders; ++f) {
      std::string content(kBigFile, '\0');
      for (std::size_t i = 0; i < kBigFile; ++i) content[i] = pattern(f, i);
      write_file(src / ("big-" + std::to_string(f) + ".bin"), content);
    }
    write_file(src / "lower-file.bin", std::string(64 << 10, 'L'));
    for (int d = 0; d < kDirs; ++d) {
      const fs::path dir = src / "tree" / ("d" + std::to_string(d));
      fs::create_directories(dir);
      for (int f = 0; f < kFilesPerDir; ++f) write_file(dir / ("f" + std::to_string(f)), "x");
    }
    for (const auto& entry : fs::recursive_directory_iterator(src)) {
      fs::permissions(entry.path(), entry.is_directory() ? fs::perms(0755) : fs::perms(0644));
    }
  }

  MountLoad(std::filesystem::path mnt, std::filesystem::path src, Walk walk = Walk::kInProcess)
      : mnt_(std::move(mnt)), src_(std::move(src)), walk_(walk) {}
  MountLoad(const MountLoad&) = delete;
  MountLoad& operator=(const MountLoad&) = delete;
  ~MountLoad() { join(); }

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
      if (Clock::now() > deadline || !problems().empty()) return false;
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

  // Stops the threads; false if they did not finish within `timeout` (a hang).
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

  // Rounds of the slowest thread (a walk, a write, a read or a probe each count one).
  std::uint64_t min_rounds() const {
    std::uint64_t least = ~std::uint64_t{0};
    for (const auto& r : rounds_) least = std::min(least, r->load());
    return least;
  }

 private:
  static std::string writer_name(int w) { return w == 0 ? "new-file.bin" : "lower-file.bin"; }

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

  std::atomic<std::uint64_t>& my_rounds(std::size_t index) { return *rounds_[index]; }

  void problem(const std::string& what) {
    const std::lock_guard lock(mutex_);
    if (problems_.size() < 20) problems_.push_back(what);
  }

  void read_loop(int file) {
    const std::filesystem::path path = mnt_ / ("big-" + std::to_string(file) + ".bin");
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
  // their fd open across every kill, read back each block, and fsync now and then.
  void write_loop(int w) {
    const std::filesystem::path path = mnt_ / writer_name(w);
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
      if (walk_ == Walk::kFind) {
        const CommandResult found =
            run_command({"/usr/bin/find", (mnt_ / "tree").string(), "-mindepth", "1"},
                        std::chrono::seconds(30));
        if (found.exit_code != 0) {
          return problem("find exited " + std::to_string(found.exit_code) + ": " + found.err);
        }
        seen = static_cast<std::size_t>(std::count(found.out.begin(), found.out.end(), '\n'));
      } else {
        std::error_code ec;
        for (std::filesystem::recursive_directory_iterator it(mnt_ / "tree", ec), end;
             !ec && it != end; it.increment(ec)) {
          struct stat st {};
          if (::lstat(it->path().c_str(), &st) != 0) {
            return problem("lstat " + it->path().string() + ": " + std::strerror(errno));
          }
          ++seen;
        }
        if (ec) return problem("walk: " + ec.message());
      }
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
      const std::filesystem::path path = mnt_ / ("probe-" + std::to_string(i++));
      if (::access(path.c_str(), F_OK) == 0 || errno != ENOENT) {
        return problem("probe " + path.string() + ": " + std::strerror(errno));
      }
      const std::int64_t killed = killed_at_.load();
      std::int64_t none = 0;
      if (killed != 0 && started >= killed) first_served_.compare_exchange_strong(none, now_ns());
      ++my_rounds(kReaders + 3);
    }
  }

  const std::filesystem::path mnt_;
  const std::filesystem::path src_;
  const Walk walk_;
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

}  // namespace heddle::test
