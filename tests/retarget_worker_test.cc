// Capture and follow inside heddle-fuse-worker (issue 15): Freeze, Thaw and Retarget through a
// real FUSE mount of a real repository built with the git CLI, by the unsandboxed harness (the
// launcher's side, which sends these, is tested with the capture command).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "heddle/error.h"
#include "heddle/unique_fd.h"
#include "support/child_process.h"
#include "support/read_file.h"
#include "support/unsandboxed_worker.h"

namespace heddle::test {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr auto kReply = 10s;

std::string git(const fs::path& repo, std::vector<std::string> args) {
  args.insert(args.begin(), {"/usr/bin/git", "-C", repo.string(), "-c", "user.name=Test",
                             "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"});
  const CommandResult result = run_command(args, 60s);
  if (result.exit_code != 0) {
    throw Error("git " + args[9] + " failed: " + result.err, 0);
  }
  std::string out = result.out;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

void write_file(const fs::path& path, std::string_view content) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) throw_errno("create " + path.string());
  if (::write(fd.get(), content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    throw_errno("write " + path.string());
  }
}

std::string read_fd(int fd) {
  std::string out;
  char buffer[4096];
  for (off_t at = 0;;) {
    const ssize_t n = ::pread(fd, buffer, sizeof buffer, at);
    if (n < 0) throw_errno("pread");
    if (n == 0) return out;
    out.append(buffer, static_cast<std::size_t>(n));
    at += n;
  }
}

std::set<std::string> names_in(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.insert(entry.path().filename());
  return names;
}

int stat_errno(const fs::path& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 ? 0 : errno;
}

template <typename T>
T expect_reply(UnsandboxedWorker& worker) {
  const auto reply = worker.receive(kReply);
  if (!reply) throw Error("the worker closed the IPC socket", 0);
  if (const auto* failed = std::get_if<ipc::RetargetFailed>(&*reply)) {
    throw Error("RetargetFailed: " + failed->message, 0);
  }
  if (!std::holds_alternative<T>(*reply)) {
    throw Error("unexpected reply " + std::string(ipc::kind_of(*reply)), 0);
  }
  return std::get<T>(*reply);
}

nlohmann::ordered_json status_of(UnsandboxedWorker& worker) {
  worker.send(ipc::Status{});
  return expect_reply<ipc::StatusOk>(worker).extra;
}

// A repository with two commits: `first` on main (what the mount resolves) and `second` on
// the branch next, which changes, removes and adds names at the top and in dir/.
class RetargetWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = worker_tests_unavailable()) GTEST_SKIP() << *why;
    repo_ = std::make_unique<TempDir>("heddle-retarget-repo");
    overlay_ = std::make_unique<TempDir>("heddle-retarget-overlay");
    const fs::path& r = repo();
    git(r, {"init", "-q", "-b", "main"});
    fs::create_directories(r / "dir");
    write_file(r / "keep.txt", "unchanged\n");
    write_file(r / "change.txt", "old\n");
    write_file(r / "gone.txt", "going\n");
    write_file(r / "dir" / "a.txt", "a\n");
    git(r, {"add", "-A"});
    git(r, {"commit", "-q", "-m", "first"});
    first_ = git(r, {"rev-parse", "HEAD"});
    git(r, {"checkout", "-q", "-b", "next"});
    write_file(r / "change.txt", "new content, longer\n");
    fs::remove(r / "gone.txt");
    write_file(r / "added.txt", "added\n");
    write_file(r / "dir" / "b.txt", "b\n");
    git(r, {"add", "-A"});
    git(r, {"commit", "-q", "-m", "second"});
    second_ = git(r, {"rev-parse", "HEAD"});
    git(r, {"checkout", "-q", "main"});
  }

  [[nodiscard]] const fs::path& repo() const { return repo_->path(); }
  [[nodiscard]] fs::path upper() const { return overlay_->path() / "upper"; }

  std::unique_ptr<UnsandboxedWorker> start(bool writable) {
    WorkerConfig config;
    config.source = repo();
    config.git_thread = "main";
    if (writable) {
      config.read_only_mount = false;
      config.overlay_dir = overlay_->path();
    }
    auto worker = std::make_unique<UnsandboxedWorker>(std::move(config));
    EXPECT_TRUE(worker->ready());
    return worker;
  }

  // A commit made from `first` in the work tree by `change` (a capture's stand-in).
  std::string commit_on_first(const std::string& branch, const std::function<void()>& change) {
    git(repo(), {"checkout", "-q", "-b", branch, first_});
    change();
    git(repo(), {"add", "-A"});
    git(repo(), {"commit", "-q", "-m", branch});
    const std::string id = git(repo(), {"rev-parse", "HEAD"});
    git(repo(), {"checkout", "-q", "main"});
    return id;
  }

  std::unique_ptr<TempDir> repo_;
  std::unique_ptr<TempDir> overlay_;
  std::string first_;
  std::string second_;
};

TEST_F(RetargetWorkerTest, OpenFilesKeepWorkingAndNewNamesShowAtOnce) {
  auto worker = start(false);
  const fs::path mp = worker->mountpoint();
  // Cached by the kernel for good (entry and attribute timeouts of a day).
  ASSERT_EQ(names_in(mp), (std::set<std::string>{"change.txt", "dir", "gone.txt", "keep.txt"}));
  ASSERT_EQ(names_in(mp / "dir"), (std::set<std::string>{"a.txt"}));
  const UniqueFd keep(::open((mp / "keep.txt").c_str(), O_RDONLY | O_CLOEXEC));
  const UniqueFd change(::open((mp / "change.txt").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(keep && change);
  ASSERT_EQ(read_fd(keep.get()), "unchanged\n");
  ASSERT_EQ(read_fd(change.get()), "old\n");
  struct stat keep_before {};
  struct stat change_before {};
  ASSERT_EQ(::stat((mp / "keep.txt").c_str(), &keep_before), 0);
  ASSERT_EQ(::stat((mp / "change.txt").c_str(), &change_before), 0);
  EXPECT_EQ(status_of(*worker)["commit"], first_);

  worker->send(ipc::Retarget{second_, false});
  const auto done = expect_reply<ipc::Retargeted>(*worker);
  EXPECT_EQ(done.commit, second_);
  EXPECT_TRUE(done.conflicts.empty());

  // At once, not after a timeout: the kernel was told.
  EXPECT_EQ(names_in(mp), (std::set<std::string>{"added.txt", "change.txt", "dir", "keep.txt"}));
  EXPECT_EQ(names_in(mp / "dir"), (std::set<std::string>{"a.txt", "b.txt"}));
  EXPECT_EQ(stat_errno(mp / "gone.txt"), ENOENT);
  EXPECT_EQ(read_file(mp / "added.txt"), "added\n");
  // Open files keep their content; a new open sees the new one, and stat its size.
  EXPECT_EQ(read_fd(keep.get()), "unchanged\n");
  EXPECT_EQ(read_fd(change.get()), "old\n");
  EXPECT_EQ(read_file(mp / "change.txt"), "new content, longer\n");
  struct stat keep_after {};
  struct stat change_after {};
  ASSERT_EQ(::stat((mp / "keep.txt").c_str(), &keep_after), 0);
  ASSERT_EQ(::stat((mp / "change.txt").c_str(), &change_after), 0);
  EXPECT_EQ(change_after.st_size, 20);
  // The fd opened before still describes what it reads.
  struct stat change_open {};
  ASSERT_EQ(::fstat(change.get(), &change_open), 0);
  EXPECT_EQ(change_open.st_size, 4);
  // Inode numbers come from paths: the same before and after, changed content or not.
  EXPECT_EQ(keep_after.st_ino, keep_before.st_ino);
  EXPECT_EQ(change_after.st_ino, change_before.st_ino);
  const auto status = status_of(*worker);
  EXPECT_EQ(status["commit"], second_);
  EXPECT_EQ(status["retargets"], 1u);

  // And back: what went comes again.
  worker->send(ipc::Retarget{first_, false});
  EXPECT_EQ(expect_reply<ipc::Retargeted>(*worker).commit, first_);
  EXPECT_EQ(names_in(mp), (std::set<std::string>{"change.txt", "dir", "gone.txt", "keep.txt"}));
  EXPECT_EQ(read_file(mp / "change.txt"), "old\n");
  EXPECT_EQ(read_file(mp / "gone.txt"), "going\n");
}

TEST_F(RetargetWorkerTest, AnUnreadableCommitFailsAndTheMountKeepsItsCommit) {
  auto worker = start(false);
  const fs::path mp = worker->mountpoint();
  ASSERT_EQ(read_file(mp / "change.txt"), "old\n");
  for (const std::string& bad : {std::string(40, 'f'), std::string("main"), std::string()}) {
    worker->send(ipc::Retarget{bad, false});
    const auto reply = worker->receive(kReply);
    ASSERT_TRUE(reply.has_value());
    const auto* failed = std::get_if<ipc::RetargetFailed>(&*reply);
    ASSERT_NE(failed, nullptr) << ipc::kind_of(*reply);
    EXPECT_NE(failed->message.find("retarget"), std::string::npos) << failed->message;
  }
  EXPECT_EQ(status_of(*worker)["commit"], first_);
  EXPECT_EQ(read_file(mp / "change.txt"), "old\n");
  EXPECT_EQ(names_in(mp), (std::set<std::string>{"change.txt", "dir", "gone.txt", "keep.txt"}));
}

TEST_F(RetargetWorkerTest, FreezeHoldsWritersBackUntilThawAndLosesNothing) {
  auto worker = start(true);
  const fs::path mp = worker->mountpoint();
  const UniqueFd file(::open((mp / "w.txt").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(file);
  ASSERT_EQ(::pwrite(file.get(), "before;", 7, 0), 7);

  worker->send(ipc::Freeze{});
  EXPECT_EQ(expect_reply<ipc::Frozen>(*worker).commit, first_);
  // Acknowledged before the freeze: in the upper layer now.
  EXPECT_EQ(read_file(upper() / "w.txt"), "before;");

  std::atomic<int> finished{0};
  std::thread writer([&] {
    if (::pwrite(file.get(), "after;", 6, 7) == 6) finished.fetch_add(1);
    write_file(mp / "new.txt", "new\n");
    finished.fetch_add(1);
  });
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(finished.load(), 0) << "a write went through a frozen mount";
  // Reads go on.
  EXPECT_EQ(read_file(mp / "keep.txt"), "unchanged\n");
  EXPECT_EQ(read_file(upper() / "w.txt"), "before;");
  const auto status = status_of(*worker);
  EXPECT_EQ(status["frozen"], true);
  EXPECT_GE(status["writes_held"].get<std::uint64_t>(), 1u);

  worker->send(ipc::Thaw{});
  expect_reply<ipc::Thawed>(*worker);
  writer.join();
  EXPECT_EQ(finished.load(), 2);
  EXPECT_EQ(read_file(mp / "w.txt"), "before;after;");
  EXPECT_EQ(read_file(mp / "new.txt"), "new\n");
  EXPECT_EQ(status_of(*worker)["frozen"], false);
}

TEST_F(RetargetWorkerTest, AfterACaptureTheOverlayEmptiesButKeepsFilesOpenForWriting) {
  auto worker = start(true);
  const fs::path mp = worker->mountpoint();
  const UniqueFd notes(::open((mp / "notes.txt").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(notes);
  ASSERT_EQ(::pwrite(notes.get(), "captured\n", 9, 0), 9);
  write_file(mp / "change.txt", "edited\n");
  write_file(mp / "dir" / "a.txt", "a edited\n");
  ASSERT_EQ(::unlink((mp / "gone.txt").c_str()), 0);
  ASSERT_EQ(::mkdir((mp / "empty").c_str(), 0755), 0);
  const UniqueFd reader(::open((mp / "change.txt").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(reader);
  // What the supervisor's capture would write: the mount's content as a commit.
  const std::string captured = commit_on_first("captured", [&] {
    write_file(repo() / "notes.txt", "captured\n");
    write_file(repo() / "change.txt", "edited\n");
    write_file(repo() / "dir" / "a.txt", "a edited\n");
    fs::remove(repo() / "gone.txt");
  });

  worker->send(ipc::Freeze{});
  EXPECT_EQ(expect_reply<ipc::Frozen>(*worker).commit, first_);
  worker->send(ipc::Retarget{captured, true});
  const auto done = expect_reply<ipc::Retargeted>(*worker);
  EXPECT_EQ(done.commit, captured);
  EXPECT_TRUE(done.conflicts.empty());

  // The overlay holds only what must stay: the file open for writing, the empty directory.
  std::set<std::string> left;
  for (auto it = fs::recursive_directory_iterator(upper()); it != fs::end(it); ++it) {
    left.insert(fs::relative(it->path(), upper()).string());
  }
  EXPECT_EQ(left, (std::set<std::string>{"empty", "notes.txt"}));
  // The mount shows the same as before.
  EXPECT_EQ(names_in(mp),
            (std::set<std::string>{"change.txt", "dir", "empty", "keep.txt", "notes.txt"}));
  EXPECT_EQ(read_file(mp / "change.txt"), "edited\n");
  EXPECT_EQ(read_file(mp / "dir" / "a.txt"), "a edited\n");
  EXPECT_EQ(stat_errno(mp / "gone.txt"), ENOENT);
  EXPECT_EQ(read_fd(reader.get()), "edited\n");
  // Writes through the fd kept open go on, and nothing is lost.
  ASSERT_EQ(::pwrite(notes.get(), "more\n", 5, 9), 5);
  EXPECT_EQ(read_file(mp / "notes.txt"), "captured\nmore\n");
  // A changed file is written to the overlay again, as any lower file.
  write_file(mp / "change.txt", "again\n");
  EXPECT_EQ(read_file(upper() / "change.txt"), "again\n");
  EXPECT_EQ(read_file(mp / "change.txt"), "again\n");
  const auto status = status_of(*worker);
  EXPECT_EQ(status["commit"], captured);
  EXPECT_EQ(status["conflict_count"], 0u);
}

TEST_F(RetargetWorkerTest, FollowingKeepsTheOverlayOnTopAndListsConflicts) {
  auto worker = start(true);
  const fs::path mp = worker->mountpoint();
  write_file(mp / "change.txt", "mine\n");
  write_file(mp / "dir" / "own.txt", "own\n");
  ASSERT_EQ(names_in(mp / "dir"), (std::set<std::string>{"a.txt", "own.txt"}));
  // Deleted on both sides: the same result, no conflict.
  ASSERT_EQ(::unlink((mp / "gone.txt").c_str()), 0);

  worker->send(ipc::Retarget{second_, false});
  const auto done = expect_reply<ipc::Retargeted>(*worker);
  EXPECT_EQ(done.commit, second_);
  EXPECT_EQ(done.conflicts, std::vector<std::string>{"change.txt"});

  EXPECT_EQ(read_file(mp / "change.txt"), "mine\n");  // the overlay wins
  EXPECT_EQ(names_in(mp), (std::set<std::string>{"added.txt", "change.txt", "dir", "keep.txt"}));
  EXPECT_EQ(names_in(mp / "dir"), (std::set<std::string>{"a.txt", "b.txt", "own.txt"}));
  EXPECT_EQ(read_file(mp / "dir" / "b.txt"), "b\n");
  EXPECT_EQ(stat_errno(mp / "gone.txt"), ENOENT);
  const auto status = status_of(*worker);
  EXPECT_EQ(status["commit"], second_);
  EXPECT_EQ(status["conflict_count"], 1u);
  EXPECT_EQ(status["conflicts"], nlohmann::ordered_json::array({"change.txt"}));
}

TEST_F(RetargetWorkerTest, ReadersRacingRetargetsSeeOneCommitOrTheOther) {
  auto worker = start(true);
  const fs::path mp = worker->mountpoint();
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        try {
          const std::string keep = read_file(mp / "keep.txt");
          if (keep != "unchanged\n") bad.fetch_add(1);
          const std::string change = read_file(mp / "change.txt");
          if (change != "old\n" && change != "new content, longer\n") bad.fetch_add(1);
          const auto names = names_in(mp / "dir");
          if (!names.contains("a.txt")) bad.fetch_add(1);
        } catch (const Error& e) {
          // A name listed a moment ago may be gone by the time it is opened: nothing else.
          if (e.code() != ENOENT) bad.fetch_add(1);
        } catch (const fs::filesystem_error& e) {
          if (e.code().value() != ENOENT) bad.fetch_add(1);
        }
      }
    });
  }
  for (int i = 0; i < 20; ++i) {
    worker->send(ipc::Retarget{i % 2 == 0 ? second_ : first_, false});
    (void)expect_reply<ipc::Retargeted>(*worker);
    write_file(mp / "scratch.txt", std::to_string(i));  // a writer, through the gate
  }
  stop = true;
  for (auto& reader : readers) reader.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(status_of(*worker)["retargets"], 20u);
  EXPECT_EQ(read_file(mp / "change.txt"), "old\n");
  EXPECT_EQ(read_file(mp / "scratch.txt"), "19");
}

}  // namespace
}  // namespace heddle::test
