// The overlay inside heddle-fuse-worker, through a real FUSE mount made by the unsandboxed
// harness over a directory source: copy-up, whiteouts, opaque directories, renames, hard links,
// attributes, and what lands on disk. Fast enough for every preset, so that ASan and TSan see
// the overlay's code under concurrent requests. The launcher's side (flags, sandbox binds,
// overlay commands) is tested through the CLI elsewhere.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <linux/fs.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "heddle/error.h"
#include "heddle/unique_fd.h"
#include "support/read_file.h"
#include "support/unsandboxed_worker.h"

namespace heddle::test {
namespace {
namespace fs = std::filesystem;

void write_file(const fs::path& path, std::string_view content, mode_t mode = 0644) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) throw_errno("create " + path.string());
  if (::write(fd.get(), content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    throw_errno("write " + path.string());
  }
  if (::fchmod(fd.get(), mode) != 0) throw_errno("fchmod " + path.string());
}

std::set<std::string> names_in(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.insert(entry.path().filename());
  return names;
}

int errno_of(int rc) { return rc == 0 ? 0 : errno; }

mode_t lstat_mode(const fs::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) throw_errno("lstat " + path.string());
  return st.st_mode;
}

class OverlayWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = worker_tests_unavailable()) GTEST_SKIP() << *why;
    source_ = std::make_unique<TempDir>("heddle-overlay-src");
    overlay_ = std::make_unique<TempDir>("heddle-overlay");
    fs::create_directories(src() / "dir" / "sub");
    write_file(src() / "a.txt", "lower a\n");
    write_file(src() / "dir" / "b.txt", "lower b\n");
    write_file(src() / "dir" / "sub" / "c.txt", "lower c\n");
    write_file(src() / "tool.sh", "#!/bin/sh\n", 0755);
    fs::create_symlink("a.txt", src() / "link");
  }

  [[nodiscard]] const fs::path& src() const { return source_->path(); }
  [[nodiscard]] fs::path upper() const { return overlay_->path() / "upper"; }

  std::unique_ptr<UnsandboxedWorker> start() {
    WorkerConfig config;
    config.source = src();
    config.read_only_mount = false;
    config.overlay_dir = overlay_->path();
    auto worker = std::make_unique<UnsandboxedWorker>(std::move(config));
    EXPECT_TRUE(worker->ready());
    return worker;
  }

  // What the source holds, to prove the overlay never writes it.
  std::map<std::string, std::string> snapshot_source() const {
    std::map<std::string, std::string> out;
    for (const auto& entry : fs::recursive_directory_iterator(src())) {
      const auto rel = fs::relative(entry.path(), src()).string();
      if (entry.is_symlink()) {
        out[rel] = "-> " + fs::read_symlink(entry.path()).string();
      } else if (entry.is_regular_file()) {
        out[rel] = read_file(entry.path());
      } else {
        out[rel] = "dir";
      }
    }
    return out;
  }

  std::unique_ptr<TempDir> source_;
  std::unique_ptr<TempDir> overlay_;
};

TEST_F(OverlayWorkerTest, WritingALowerFileCopiesItUpAndLeavesTheSourceAlone) {
  const auto before = snapshot_source();
  {
    auto worker = start();
    const fs::path mnt = worker->mountpoint();
    EXPECT_EQ(read_file(mnt / "a.txt"), "lower a\n");
    UniqueFd fd(::open((mnt / "a.txt").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
    ASSERT_TRUE(fd) << std::strerror(errno);
    ASSERT_EQ(::write(fd.get(), "more\n", 5), 5);
    fd.reset();
    EXPECT_EQ(read_file(mnt / "a.txt"), "lower a\nmore\n");
    write_file(mnt / "dir" / "sub" / "c.txt", "new c\n");
    EXPECT_EQ(read_file(mnt / "dir" / "sub" / "c.txt"), "new c\n");
    // Untouched lower files still read through.
    EXPECT_EQ(read_file(mnt / "dir" / "b.txt"), "lower b\n");
  }
  EXPECT_EQ(snapshot_source(), before);
  EXPECT_EQ(read_file(upper() / "a.txt"), "lower a\nmore\n");
  EXPECT_EQ(read_file(upper() / "dir" / "sub" / "c.txt"), "new c\n");
  EXPECT_FALSE(fs::exists(upper() / "dir" / "b.txt"));
  // Nothing half-made is left behind.
  EXPECT_TRUE(fs::is_empty(overlay_->path() / "work"));
}

TEST_F(OverlayWorkerTest, ChangesSurviveARemount) {
  {
    auto worker = start();
    write_file(worker->mountpoint() / "new.txt", "kept\n");
    ASSERT_EQ(::unlink((worker->mountpoint() / "a.txt").c_str()), 0);
    fs::create_directory(worker->mountpoint() / "made");
  }
  auto worker = start();
  const fs::path mnt = worker->mountpoint();
  EXPECT_EQ(read_file(mnt / "new.txt"), "kept\n");
  EXPECT_FALSE(fs::exists(mnt / "a.txt"));
  EXPECT_TRUE(fs::is_directory(mnt / "made"));
  EXPECT_TRUE(fs::exists(src() / "a.txt"));
}

TEST_F(OverlayWorkerTest, DeletingLowerEntriesLeavesWhiteoutsAndARemadeDirectoryIsOpaque) {
  auto worker = start();
  const fs::path mnt = worker->mountpoint();
  ASSERT_EQ(::unlink((mnt / "dir" / "b.txt").c_str()), 0) << std::strerror(errno);
  EXPECT_EQ(names_in(mnt / "dir"), (std::set<std::string>{"sub"}));
  EXPECT_TRUE(fs::exists(upper() / "dir" / ".wh.b.txt"));
  EXPECT_EQ(errno_of(::rmdir((mnt / "dir" / "sub").c_str())), ENOTEMPTY);
  ASSERT_EQ(::unlink((mnt / "dir" / "sub" / "c.txt").c_str()), 0);
  ASSERT_EQ(::rmdir((mnt / "dir" / "sub").c_str()), 0);
  EXPECT_FALSE(fs::exists(mnt / "dir" / "sub"));
  ASSERT_EQ(::mkdir((mnt / "dir" / "sub").c_str(), 0750), 0);
  EXPECT_TRUE(fs::is_empty(mnt / "dir" / "sub"));  // the lower c.txt does not come back
  EXPECT_TRUE(fs::exists(upper() / "dir" / "sub" / ".wh..wh..opq"));
  EXPECT_EQ(lstat_mode(mnt / "dir" / "sub"), S_IFDIR | 0750);
  // Markers never show, and their names cannot be made.
  EXPECT_EQ(names_in(mnt / "dir"), (std::set<std::string>{"sub"}));
  EXPECT_EQ(errno_of(::mkdir((mnt / ".wh.x").c_str(), 0755)), EINVAL);
}

TEST_F(OverlayWorkerTest, SourceNamesThatLookLikeMarkersAreReadableData) {
  write_file(src() / ".wh.data", "not a whiteout\n");
  auto worker = start();
  const fs::path mnt = worker->mountpoint();
  EXPECT_TRUE(names_in(mnt).contains(".wh.data"));
  EXPECT_EQ(read_file(mnt / ".wh.data"), "not a whiteout\n");
  // In the upper layer the name would mean something else: the entry stays as the source has it.
  EXPECT_EQ(errno_of(::unlink((mnt / ".wh.data").c_str())), EROFS);
  EXPECT_EQ(::open((mnt / ".wh.data").c_str(), O_WRONLY | O_CLOEXEC), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(read_file(mnt / "a.txt"), "lower a\n");  // the name "data" is not deleted
}

TEST_F(OverlayWorkerTest, ACopiedUpFileKeepsItsInodeNumberAcrossARemount) {
  ino_t before = 0;
  {
    auto worker = start();
    struct stat st {};
    ASSERT_EQ(::lstat((worker->mountpoint() / "dir" / "b.txt").c_str(), &st), 0);
    before = st.st_ino;
    write_file(worker->mountpoint() / "dir" / "b.txt", "changed\n");
    ASSERT_EQ(::lstat((worker->mountpoint() / "dir" / "b.txt").c_str(), &st), 0);
    EXPECT_EQ(st.st_ino, before);
  }
  auto worker = start();
  struct stat st {};
  ASSERT_EQ(::lstat((worker->mountpoint() / "dir" / "b.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_ino, before);
  EXPECT_EQ(read_file(worker->mountpoint() / "dir" / "b.txt"), "changed\n");
}

TEST_F(OverlayWorkerTest, AnOpenFileOutlivesItsNames) {
  auto worker = start();
  const fs::path file = worker->mountpoint() / "dir" / "b.txt";
  UniqueFd fd(::open(file.c_str(), O_RDWR | O_APPEND | O_CLOEXEC));
  ASSERT_TRUE(fd);
  ASSERT_EQ(::write(fd.get(), "x", 1), 1);
  ASSERT_EQ(::unlink(file.c_str()), 0);
  struct stat st {};
  ASSERT_EQ(::fstat(fd.get(), &st), 0) << std::strerror(errno);
  EXPECT_EQ(st.st_nlink, 0u);
  EXPECT_EQ(st.st_size, 9);
  // And after a rename replaced it.
  write_file(worker->mountpoint() / "old", "old\n");
  UniqueFd old(::open((worker->mountpoint() / "old").c_str(), O_RDONLY | O_CLOEXEC));
  write_file(worker->mountpoint() / "new", "new\n");
  ASSERT_EQ(::rename((worker->mountpoint() / "new").c_str(), (worker->mountpoint() / "old").c_str()), 0);
  ASSERT_EQ(::fstat(old.get(), &st), 0) << std::strerror(errno);
  EXPECT_EQ(st.st_size, 4);
}

TEST_F(OverlayWorkerTest, ErrorsAreThoseOfAPosixFilesystem) {
  auto worker = start();
  const fs::path mnt = worker->mountpoint();
  EXPECT_EQ(::open((mnt / "a.txt").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644), -1);
  EXPECT_EQ(errno, EEXIST);
  EXPECT_EQ(errno_of(::mkdir((mnt / "dir").c_str(), 0755)), EEXIST);
  EXPECT_EQ(errno_of(::unlink((mnt / "dir").c_str())), EISDIR);
  EXPECT_EQ(errno_of(::rmdir((mnt / "a.txt").c_str())), ENOTDIR);
  EXPECT_EQ(errno_of(::rmdir((mnt / "dir").c_str())), ENOTEMPTY);
  EXPECT_EQ(errno_of(::unlink((mnt / "missing").c_str())), ENOENT);
  EXPECT_EQ(errno_of(::rename((mnt / "a.txt").c_str(), (mnt / "dir").c_str())), EISDIR);
  EXPECT_EQ(errno_of(::rename((mnt / "dir").c_str(), (mnt / "a.txt").c_str())), ENOTDIR);
  EXPECT_EQ(errno_of(::link((mnt / "dir").c_str(), (mnt / "dir2").c_str())), EPERM);
  EXPECT_EQ(errno_of(::mkfifo((mnt / "fifo").c_str(), 0644)), EPERM);
  EXPECT_EQ(errno_of(::setxattr((mnt / "a.txt").c_str(), "user.x", "1", 1, 0)), EOPNOTSUPP);
}

TEST_F(OverlayWorkerTest, RenamesMoveFilesAndUpperDirectoriesAndRefuseLowerDirectoriesWithExdev) {
  auto worker = start();
  const fs::path mnt = worker->mountpoint();
  ASSERT_EQ(::rename((mnt / "a.txt").c_str(), (mnt / "dir" / "moved.txt").c_str()), 0);
  EXPECT_FALSE(fs::exists(mnt / "a.txt"));
  EXPECT_EQ(read_file(mnt / "dir" / "moved.txt"), "lower a\n");
  // Over an existing lower file.
  ASSERT_EQ(::rename((mnt / "dir" / "moved.txt").c_str(), (mnt / "dir" / "b.txt").c_str()), 0);
  EXPECT_EQ(read_file(mnt / "dir" / "b.txt"), "lower a\n");
  EXPECT_EQ(names_in(mnt / "dir"), (std::set<std::string>{"b.txt", "sub"}));
  // A directory with lower content: EXDEV, as overlayfs; nothing moves.
  EXPECT_EQ(errno_of(::rename((mnt / "dir").c_str(), (mnt / "dir2").c_str())), EXDEV);
  EXPECT_TRUE(fs::is_directory(mnt / "dir"));
  // A directory made in the mount moves, with its content, and stays reachable by new paths.
  fs::create_directories(mnt / "new" / "deep");
  write_file(mnt / "new" / "deep" / "f", "f\n");
  ASSERT_EQ(::rename((mnt / "new").c_str(), (mnt / "dir" / "renamed").c_str()), 0);
  EXPECT_EQ(read_file(mnt / "dir" / "renamed" / "deep" / "f"), "f\n");
  write_file(mnt / "dir" / "renamed" / "deep" / "g", "g\n");
  EXPECT_EQ(read_file(upper() / "dir" / "renamed" / "deep" / "g"), "g\n");
  // RENAME_NOREPLACE and RENAME_EXCHANGE.
  write_file(mnt / "x", "x\n");
  write_file(mnt / "y", "y\n");
  EXPECT_EQ(::syscall(SYS_renameat2, AT_FDCWD, (mnt / "x").c_str(), AT_FDCWD, (mnt / "y").c_str(),
                      RENAME_NOREPLACE),
            -1);
  EXPECT_EQ(errno, EEXIST);
  ASSERT_EQ(::syscall(SYS_renameat2, AT_FDCWD, (mnt / "x").c_str(), AT_FDCWD,
                      (mnt / "tool.sh").c_str(), RENAME_EXCHANGE),
            0)
      << std::strerror(errno);
  EXPECT_EQ(read_file(mnt / "x"), "#!/bin/sh\n");
  EXPECT_EQ(read_file(mnt / "tool.sh"), "x\n");
}

TEST_F(OverlayWorkerTest, HardLinksShareAnInodeAndCountTheirNames) {
  auto worker = start();
  const fs::path mnt = worker->mountpoint();
  ASSERT_EQ(::link((mnt / "a.txt").c_str(), (mnt / "dir" / "a-link").c_str()), 0);
  struct stat one {};
  struct stat two {};
  ASSERT_EQ(::lstat((mnt / "a.txt").c_str(), &one), 0);
  ASSERT_EQ(::lstat((mnt / "dir" / "a-link").c_str(), &two), 0);
  EXPECT_EQ(one.st_ino, two.st_ino);
  EXPECT_EQ(one.st_nlink, 2u);
  write_file(mnt / "dir" / "a-link", "through the link\n");
  EXPECT_EQ(read_file(mnt / "a.txt"), "through the link\n");
  ASSERT_EQ(::unlink((mnt / "a.txt").c_str()), 0);
  ASSERT_EQ(::lstat((mnt / "dir" / "a-link").c_str(), &two), 0);
  EXPECT_EQ(two.st_nlink, 1u);
  EXPECT_EQ(read_file(mnt / "dir" / "a-link"), "through the link\n");
}

TEST_F(OverlayWorkerTest, ModesOwnersTimesAndSizesAreKeptAsGiven) {
  auto worker = start();
  const fs::path mnt = worker->mountpoint();
  const fs::path file = mnt / "a.txt";
  ASSERT_EQ(::chmod(file.c_str(), 0), 0);
  EXPECT_EQ(lstat_mode(file), S_IFREG | 0);
  // Root reads it as on any filesystem; the file on disk stays usable by the worker.
  EXPECT_EQ(read_file(file), "lower a\n");
  ASSERT_EQ(::chmod(file.c_str(), 04755), 0);
  EXPECT_EQ(lstat_mode(file), S_IFREG | 04755);
  struct stat disk {};
  ASSERT_EQ(::stat((upper() / "a.txt").c_str(), &disk), 0);
  EXPECT_EQ(disk.st_mode & (S_ISUID | S_ISGID), 0u) << "no setuid bit on the host's disk";
  ASSERT_EQ(::chown(file.c_str(), 1234, 5678), 0);
  struct stat st {};
  ASSERT_EQ(::lstat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  const timespec times[2] = {{1000, 5}, {2000, 7}};
  ASSERT_EQ(::utimensat(AT_FDCWD, file.c_str(), times, 0), 0);
  ASSERT_EQ(::lstat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 2000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 7);
  EXPECT_EQ(st.st_atim.tv_sec, 1000);
  ASSERT_EQ(::truncate(file.c_str(), 3), 0);
  EXPECT_EQ(read_file(file), "low");
  ASSERT_EQ(::truncate(file.c_str(), 10), 0);
  EXPECT_EQ(read_file(file), std::string("low") + std::string(7, '\0'));
  // Copied-up executables stay executable; symlinks keep their targets.
  write_file(mnt / "tool.sh", "#!/bin/sh\necho hi\n", 0755);
  EXPECT_EQ(lstat_mode(mnt / "tool.sh"), S_IFREG | 0755);
  EXPECT_EQ(fs::read_symlink(mnt / "link"), "a.txt");
  ASSERT_EQ(::symlink("dir/b.txt", (mnt / "link2").c_str()), 0);
  EXPECT_EQ(read_file(mnt / "link2"), "lower b\n");
}

TEST_F(OverlayWorkerTest, SharedWritableMmapFallocateAndFsyncReachTheUpperFile) {
  auto worker = start();
  const fs::path mnt = worker->mountpoint();
  const fs::path file = mnt / "mapped";
  UniqueFd fd(::open(file.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd);
  ASSERT_EQ(::fallocate(fd.get(), 0, 0, 8192), 0) << std::strerror(errno);
  struct stat st {};
  ASSERT_EQ(::fstat(fd.get(), &st), 0);
  EXPECT_EQ(st.st_size, 8192);
  void* map = ::mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  ASSERT_NE(map, MAP_FAILED) << std::strerror(errno);
  std::memcpy(static_cast<char*>(map) + 4096, "mapped!", 7);
  ASSERT_EQ(::msync(map, 8192, MS_SYNC), 0);
  ::munmap(map, 8192);
  ASSERT_EQ(::fsync(fd.get()), 0);
  ASSERT_EQ(::fdatasync(fd.get()), 0);
  fd.reset();
  EXPECT_EQ(read_file(upper() / "mapped").substr(4096, 7), "mapped!");
}

TEST_F(OverlayWorkerTest, StatfsDescribesTheOverlaysFilesystem) {
  auto worker = start();
  struct statvfs mounted {};
  struct statvfs disk {};
  ASSERT_EQ(::statvfs(worker->mountpoint().c_str(), &mounted), 0);
  ASSERT_EQ(::statvfs(overlay_->path().c_str(), &disk), 0);
  EXPECT_EQ(mounted.f_blocks, disk.f_blocks);
  EXPECT_EQ(mounted.f_bsize, disk.f_bsize);
}

TEST_F(OverlayWorkerTest, ConcurrentWritersInOneDirectoryLoseNothing) {
  auto worker = start();
  const fs::path mnt = worker->mountpoint();
  constexpr int kThreads = 4;
  constexpr int kFiles = 50;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kFiles; ++i) {
        const std::string name = "t" + std::to_string(t) + "-" + std::to_string(i);
        write_file(mnt / "dir" / name, name);
        if (i % 2 == 0) fs::rename(mnt / "dir" / name, mnt / "dir" / (name + ".r"));
      }
    });
  }
  for (auto& thread : threads) thread.join();
  const auto names = names_in(mnt / "dir");
  EXPECT_EQ(names.size(), static_cast<std::size_t>(kThreads * kFiles + 2));
  EXPECT_EQ(read_file(mnt / "dir" / "t3-1"), "t3-1");
  EXPECT_EQ(read_file(mnt / "dir" / "t2-0.r"), "t2-0");
}

}  // namespace
}  // namespace heddle::test
