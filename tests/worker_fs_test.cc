// heddle-fuse-worker's filesystem and protocol behaviour, driven through a real FUSE mount
// created by the unsandboxed harness (the sandbox itself is the launcher's, tested elsewhere).

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "heddle/error.h"
#include "heddle/ipc/message.h"
#include "heddle/process.h"
#include "heddle/unique_fd.h"
#include "support/read_file.h"
#include "support/unsandboxed_worker.h"

namespace heddle::test {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// --- helpers -------------------------------------------------------------------------------

void write_file(const fs::path& path, std::string_view content, mode_t mode = 0644) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) throw_errno("create " + path.string());
  for (std::size_t done = 0; done < content.size();) {
    const ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0) throw_errno("write " + path.string());
    done += static_cast<std::size_t>(n);
  }
  if (::fchmod(fd.get(), mode) != 0) throw_errno("fchmod " + path.string());  // beat the umask
}

struct stat lstat_or_throw(const fs::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) throw_errno("lstat " + path.string());
  return st;
}

std::string link_target(const fs::path& path) {
  std::string target(4096, '\0');
  const ssize_t n = ::readlink(path.c_str(), target.data(), target.size());
  if (n < 0) throw_errno("readlink " + path.string());
  target.resize(static_cast<std::size_t>(n));
  return target;
}

// relative path -> file type (symlinks not followed), for the whole tree.
std::map<std::string, fs::file_type> listing(const fs::path& root) {
  std::map<std::string, fs::file_type> out;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    out[entry.path().lexically_relative(root).string()] = entry.symlink_status().type();
  }
  return out;
}

// name -> d_type of one directory, as readdir(3) reports it.
std::map<std::string, unsigned char> dirent_types(const fs::path& dir) {
  std::map<std::string, unsigned char> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) throw_errno("opendir " + dir.string());
  while (const dirent* entry = ::readdir(d)) out[entry->d_name] = entry->d_type;
  ::closedir(d);
  return out;
}

std::string pattern_bytes(std::size_t size) {
  std::string out(size, '\0');
  for (std::size_t i = 0; i < size; ++i) {
    out[i] = static_cast<char>((i * 131 + (i >> 12) + 7) & 0xff);
  }
  return out;
}

// errno of a call expected to fail, or 0 if it succeeded.
template <typename Call>
int failure_errno(Call&& call) {
  errno = 0;
  return call() < 0 ? errno : 0;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("signal ") + ::strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

::testing::AssertionResult exited_with(const std::optional<int>& status, int code) {
  if (!status) return ::testing::AssertionFailure() << "the worker is still running";
  if (WIFEXITED(*status) && WEXITSTATUS(*status) == code) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected exit " << code << ", got " << describe_status(*status);
}

// --- fixture -------------------------------------------------------------------------------

class WorkerFsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = worker_tests_unavailable()) GTEST_SKIP() << *why;
    source_ = std::make_unique<TempDir>("heddle-worker-src");
  }

  [[nodiscard]] const fs::path& src() const { return source_->path(); }

  // Starts a worker on src() and checks that it reported MountReady.
  std::unique_ptr<UnsandboxedWorker> start(WorkerConfig config = {}) {
    config.source = src();
    auto worker = std::make_unique<UnsandboxedWorker>(std::move(config));
    EXPECT_TRUE(worker->ready()) << "first message: "
                                 << (worker->first_message()
                                         ? std::string(ipc::kind_of(*worker->first_message()))
                                         : std::string("EOF"));
    if (worker->ready()) {
      const auto& ready = std::get<ipc::MountReady>(*worker->first_message());
      EXPECT_EQ(ready.pid, static_cast<std::uint32_t>(worker->pid()));
      EXPECT_EQ(ready.mount_path, worker->mountpoint().string());
    }
    return worker;
  }

  std::unique_ptr<TempDir> source_;
};

// --- contents ------------------------------------------------------------------------------

TEST_F(WorkerFsTest, ContentsSizesAndListingsMatchTheSource) {
  const std::string big = pattern_bytes(5 * 1024 * 1024);
  write_file(src() / "hello.txt", "hello, heddle\n");
  write_file(src() / "empty", "");
  write_file(src() / "big.bin", big);
  write_file(src() / "name with spaces & \xc3\xbcnicode.txt", "unicode\n");
  fs::create_directories(src() / "sub" / "nested" / "deeper");
  write_file(src() / "sub" / "other.txt", "other\n");
  write_file(src() / "sub" / "nested" / "deeper" / "deep.txt", std::string(10000, 'd'));
  fs::create_directory(src() / "emptydir");
  ASSERT_EQ(::link((src() / "hello.txt").c_str(), (src() / "hello.hardlink").c_str()), 0);
  ASSERT_EQ(::mkfifo((src() / "fifo").c_str(), 0644), 0);

  const auto worker = start();
  ASSERT_TRUE(worker->ready());
  const fs::path mp = worker->mountpoint();

  const auto expected = listing(src());
  EXPECT_EQ(listing(mp), expected);
  EXPECT_EQ(dirent_types(mp), dirent_types(src()));
  EXPECT_EQ(dirent_types(mp / "sub"), dirent_types(src() / "sub"));

  for (const auto& [rel, type] : expected) {
    SCOPED_TRACE(rel);
    const struct stat want = lstat_or_throw(src() / rel);
    const struct stat got = lstat_or_throw(mp / rel);
    EXPECT_EQ(got.st_ino, want.st_ino) << "st_ino is the source's";
    EXPECT_EQ(got.st_mode, want.st_mode);
    EXPECT_EQ(got.st_nlink, want.st_nlink);
    if (type == fs::file_type::regular) {
      EXPECT_EQ(got.st_size, want.st_size);
      EXPECT_EQ(read_file(mp / rel), read_file(src() / rel));
    }
  }

  EXPECT_EQ(lstat_or_throw(mp / "empty").st_size, 0);
  EXPECT_EQ(read_file(mp / "empty"), "");
  EXPECT_EQ(lstat_or_throw(mp / "big.bin").st_size, static_cast<off_t>(big.size()));
  EXPECT_TRUE(read_file(mp / "big.bin") == big) << "5 MiB pattern differs";

  // Random access in the big file, including across the end.
  UniqueFd fd(::open((mp / "big.bin").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  for (const std::size_t off : {std::size_t{0}, std::size_t{4095}, std::size_t{1 << 20} + 17,
                                big.size() - 100}) {
    std::string chunk(4096, '\0');
    const ssize_t n = ::pread(fd.get(), chunk.data(), chunk.size(), static_cast<off_t>(off));
    ASSERT_GE(n, 0) << std::strerror(errno);
    chunk.resize(static_cast<std::size_t>(n));
    EXPECT_EQ(chunk, big.substr(off, 4096)) << "at offset " << off;
  }

  // Hardlinks share one node: same st_ino, nlink 2.
  const struct stat a = lstat_or_throw(mp / "hello.txt");
  const struct stat b = lstat_or_throw(mp / "hello.hardlink");
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_nlink, 2U);

  struct statvfs vfs {};
  ASSERT_EQ(::statvfs(mp.c_str(), &vfs), 0) << std::strerror(errno);
  EXPECT_GT(vfs.f_bsize, 0U);
}

TEST_F(WorkerFsTest, ModesAndOwnersArePreserved) {
  write_file(src() / "rw-r--r--", "a\n", 0644);
  write_file(src() / "rwxr-xr-x", "#!/bin/sh\n", 0755);
  write_file(src() / "rw-------", "secret\n", 0600);
  ASSERT_EQ(::chown((src() / "rw-------").c_str(), 0, 0), 0);
  fs::create_directory(src() / "private-dir");
  ASSERT_EQ(::chmod((src() / "private-dir").c_str(), 0700), 0);
  write_file(src() / "private-dir" / "inside", "inside\n", 0640);

  const auto worker = start();
  ASSERT_TRUE(worker->ready());
  const fs::path mp = worker->mountpoint();

  for (const char* name : {"rw-r--r--", "rwxr-xr-x", "rw-------", "private-dir",
                           "private-dir/inside"}) {
    SCOPED_TRACE(name);
    const struct stat want = lstat_or_throw(src() / name);
    const struct stat got = lstat_or_throw(mp / name);
    EXPECT_EQ(got.st_mode, want.st_mode);
    EXPECT_EQ(got.st_uid, want.st_uid);
    EXPECT_EQ(got.st_gid, want.st_gid);
  }
  EXPECT_EQ(lstat_or_throw(mp / "rw-------").st_mode & 07777, 0600U);
  EXPECT_EQ(lstat_or_throw(mp / "rwxr-xr-x").st_mode & 07777, 0755U);
  EXPECT_EQ(read_file(mp / "rw-------"), "secret\n") << "root reads a 0600 root-owned file";
  EXPECT_EQ(read_file(mp / "private-dir" / "inside"), "inside\n");
  EXPECT_EQ(::access((mp / "rwxr-xr-x").c_str(), X_OK), 0);
}

// --- symlinks ------------------------------------------------------------------------------

TEST_F(WorkerFsTest, SymlinksAreShownAsSymlinksWithTheirTargets) {
  write_file(src() / "target.txt", "target\n");
  fs::create_directory(src() / "sub");
  write_file(src() / "sub" / "inner.txt", "inner\n");
  const std::map<std::string, std::string> links{
      {"relative", "target.txt"},
      {"absolute-inside", (src() / "target.txt").string()},
      {"dangling", "no/such/file"},
      {"to-etc", "/etc"},
      {"upwards", "../../../.."},
      {"dirlink", "sub"},
      {"sub/back", "../target.txt"},
  };
  for (const auto& [name, target] : links) {
    ASSERT_EQ(::symlink(target.c_str(), (src() / name).c_str()), 0) << name;
  }

  const auto worker = start();
  ASSERT_TRUE(worker->ready());
  const fs::path mp = worker->mountpoint();

  for (const auto& [name, target] : links) {
    SCOPED_TRACE(name);
    const struct stat st = lstat_or_throw(mp / name);
    EXPECT_TRUE(S_ISLNK(st.st_mode));
    EXPECT_EQ(st.st_size, static_cast<off_t>(target.size()));
    EXPECT_EQ(link_target(mp / name), target) << "the stored target bytes, verbatim";
  }
  const auto types = dirent_types(mp);
  for (const char* name : {"relative", "absolute-inside", "dangling", "to-etc", "upwards"}) {
    EXPECT_EQ(types.at(name), DT_LNK) << name;
  }
  // The view lists exactly the source's names: nothing of /etc shows up anywhere.
  EXPECT_EQ(listing(mp), listing(src()));

  // Links inside the tree work as links do (the kernel follows them in the mount).
  EXPECT_EQ(read_file(mp / "relative"), "target\n");
  EXPECT_EQ(read_file(mp / "dirlink" / "inner.txt"), "inner\n");
  EXPECT_EQ(read_file(mp / "sub" / "back"), "target\n");
  struct stat st {};
  EXPECT_EQ(failure_errno([&] { return ::stat((mp / "dangling").c_str(), &st); }), ENOENT);
  EXPECT_EQ(failure_errno([&] { return ::stat((mp / "to-etc" / "heddle-no-such-entry").c_str(),
                                              &st); }),
            ENOENT);
}

// The worker itself never follows a symlink. To observe that, the kernel must ask it to
// resolve a name *under* a node that has become a symlink in the source: look a directory up
// (the kernel caches the dentry for the 1 s entry timeout), swap it for a symlink to /etc in
// the source, and look up a name that exists in /etc through the cached directory. The worker
// resolves "dir/passwd" with RESOLVE_NO_SYMLINKS and must answer ELOOP, never /etc/passwd.
// (A symlink that is a symlink when the kernel looks it up is followed by the kernel in the
// caller's own namespace, as in any filesystem; that is not the worker resolving anything.)
TEST_F(WorkerFsTest, ASymlinkSwappedInUnderACachedDirectoryIsNotFollowed) {
  const std::string probe = "passwd";
  if (::access(("/etc/" + probe).c_str(), F_OK) != 0) GTEST_SKIP() << "no /etc/passwd";
  for (const std::string& target : std::vector<std::string>{"/etc", "../../../../../../etc"}) {
    SCOPED_TRACE(target);
    fs::create_directory(src() / "swap");
    write_file(src() / "swap" / "unrelated", "x\n");
    const auto worker = start();
    ASSERT_TRUE(worker->ready());
    const fs::path mp = worker->mountpoint();

    // The directory's node stays the kernel's (an fd holds it) however soon the worker tells
    // the kernel that the name changed: a lookup beneath it names that node.
    const UniqueFd dir(::open((mp / "swap").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(dir) << std::strerror(errno);
    fs::rename(src() / "swap", src() / "swap.orig");
    ASSERT_EQ(::symlink(target.c_str(), (src() / "swap").c_str()), 0);
    struct stat st {};
    const int err = failure_errno(
        [&] { return ::fstatat(dir.get(), probe.c_str(), &st, AT_SYMLINK_NOFOLLOW); });
    // ELOOP from the lookup's resolution, or ESTALE when the kernel, told of the move, first
    // asks for the directory's attributes again and the worker finds a symlink at its path.
    EXPECT_TRUE(err == ELOOP || err == ESTALE)
        << "lookup under the swapped directory must not be resolved through the symlink: "
        << (err == 0 ? "it was" : std::strerror(err));
    fs::remove(src() / "swap");
    fs::remove_all(src() / "swap.orig");
  }
}

// --- a source that changes -------------------------------------------------------------------

// The worker's Status fields (extra), or an empty object when it did not answer.
nlohmann::ordered_json status_of(UnsandboxedWorker& worker) {
  worker.send(ipc::Status{});
  const auto reply = worker.receive(milliseconds(5'000));
  if (!reply || !std::holds_alternative<ipc::StatusOk>(*reply)) {
    return nlohmann::ordered_json::object();
  }
  return std::get<ipc::StatusOk>(*reply).extra;
}

// Polls `seen` every 5 ms for up to `limit`: how long it took, or nullopt.
std::optional<milliseconds> time_until(const std::function<bool()>& seen,
                                       milliseconds limit = milliseconds(5'000)) {
  const auto start = Clock::now();
  for (;;) {
    if (seen()) return std::chrono::duration_cast<milliseconds>(Clock::now() - start);
    if (Clock::now() - start > limit) return std::nullopt;
    std::this_thread::sleep_for(milliseconds(5));
  }
}

bool names(const fs::path& dir, const std::string& name) {
  return dirent_types(dir).contains(name);
}

mode_t mode_of(const fs::path& path) { return lstat_or_throw(path).st_mode & 07777; }

// Content read through the mount, or the error.
std::string content_or_error(const fs::path& path) {
  try {
    return read_file(path);
  } catch (const std::exception& e) {
    return e.what();
  }
}

// A bind mount of `from` at a fresh directory, gone with the object.
class BindMount {
 public:
  explicit BindMount(const fs::path& from) : at_("heddle-worker-bind") {
    mounted_ = ::mount(from.c_str(), at_.path().c_str(), nullptr, MS_BIND, nullptr) == 0;
  }
  ~BindMount() {
    if (mounted_) ::umount2(at_.path().c_str(), MNT_DETACH);
  }
  BindMount(const BindMount&) = delete;
  BindMount& operator=(const BindMount&) = delete;
  [[nodiscard]] bool mounted() const { return mounted_; }
  [[nodiscard]] const fs::path& path() const { return at_.path(); }

 private:
  TempDir at_;
  bool mounted_ = false;
};

// Names and attributes are kept for 10 minutes on a watched mount: each change below shows
// within the 5 s waited only because the worker told the kernel of it.
TEST_F(WorkerFsTest, ChangesInTheSourceShowThroughAWatchedMountAtOnce) {
  fs::create_directory(src() / "sub");
  write_file(src() / "file.txt", "one\n");
  write_file(src() / "sub" / "moved.txt", "moved\n");
  write_file(src() / "sub" / "gone.txt", "gone\n");
  const auto worker = start();
  ASSERT_TRUE(worker->ready());
  const fs::path mp = worker->mountpoint();
  // Everything below is in the kernel's caches first.
  ASSERT_EQ(read_file(mp / "file.txt"), "one\n");
  ASSERT_TRUE(names(mp, "sub"));
  ASSERT_TRUE(names(mp / "sub", "gone.txt"));
  ASSERT_EQ(mode_of(mp / "file.txt"), 0644U);
  ASSERT_EQ(read_file(mp / "sub" / "moved.txt"), "moved\n");
  const auto status = status_of(*worker);
  ASSERT_EQ(status.value("source_watch", ""), "inotify") << status.dump();
  EXPECT_GE(status.value("watched_dirs", 0U), 2U) << status.dump();
  const UniqueFd open_before(::open((mp / "file.txt").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(open_before);

  const auto expect_seen = [&](const std::string& what, const std::function<bool()>& seen) {
    const auto took = time_until(seen);
    EXPECT_TRUE(took.has_value()) << what << ": not seen through the mount within 5 s";
    if (took) std::cout << "[ watched  ] " << what << ": " << took->count() << " ms" << std::endl;
  };

  {
    const UniqueFd fd(::open((src() / "file.txt").c_str(), O_WRONLY | O_CLOEXEC));  // in place
    ASSERT_TRUE(fd);
    ASSERT_EQ(::pwrite(fd.get(), "TWO, longer\n", 12, 0), 12);
  }
  expect_seen("a write in place",
              [&] { return content_or_error(mp / "file.txt") == "TWO, longer\n"; });
  expect_seen("a write in place, through a file opened before", [&] {
    char buffer[64];
    return ::pread(open_before.get(), buffer, sizeof buffer, 0) == 12 &&
           std::string_view(buffer, 12) == "TWO, longer\n";
  });
  write_file(src() / "sub" / "new.txt", "new\n");
  expect_seen("a create", [&] {
    return names(mp / "sub", "new.txt") && content_or_error(mp / "sub" / "new.txt") == "new\n";
  });
  fs::remove(src() / "sub" / "gone.txt");
  expect_seen("an unlink", [&] {
    return !names(mp / "sub", "gone.txt") && ::access((mp / "sub" / "gone.txt").c_str(), F_OK) != 0;
  });
  fs::rename(src() / "sub" / "moved.txt", src() / "moved.txt");
  expect_seen("a rename", [&] {
    return !names(mp / "sub", "moved.txt") && content_or_error(mp / "moved.txt") == "moved\n";
  });
  fs::permissions(src() / "file.txt", fs::perms(0600));
  expect_seen("a chmod", [&] { return mode_of(mp / "file.txt") == 0600U; });
  fs::create_directory(src() / "sub" / "made");
  expect_seen("a mkdir", [&] {
    return names(mp / "sub", "made") && S_ISDIR(lstat_or_throw(mp / "sub" / "made").st_mode);
  });
  write_file(src() / "replacement", "replaced\n");
  fs::rename(src() / "replacement", src() / "file.txt");
  expect_seen("a file replaced by a rename", [&] {
    return content_or_error(mp / "file.txt") == "replaced\n";
  });
  // inotify watches inodes: a change through another mount of the source is seen as well.
  const BindMount other(src());
  if (other.mounted()) {
    write_file(other.path() / "sub" / "made" / "elsewhere.txt", "elsewhere\n");
    expect_seen("a create through another mount of the source", [&] {
      return content_or_error(mp / "sub" / "made" / "elsewhere.txt") == "elsewhere\n";
    });
  }
  EXPECT_GT(status_of(*worker).value("watch_notifications", 0U), 0U);
}

// A FUSE filesystem's changes made behind it reach no inotify watch: such a source is not
// watched, Status says so, and names and attributes live 1 s as before.
TEST_F(WorkerFsTest, AFuseSourceIsNotWatchedAndItsChangesShowWithinASecond) {
  write_file(src() / "file.txt", "one\n");
  const auto below = start();
  ASSERT_TRUE(below->ready());
  WorkerConfig config;
  config.source = below->mountpoint();
  const auto above = std::make_unique<UnsandboxedWorker>(std::move(config));
  ASSERT_TRUE(above->ready());
  const fs::path mp = above->mountpoint();
  ASSERT_EQ(read_file(mp / "file.txt"), "one\n");
  const auto status = status_of(*above);
  EXPECT_EQ(status.value("source_watch", ""), "off_remote_fs") << status.dump();
  EXPECT_EQ(status_of(*below).value("source_watch", ""), "inotify");

  fs::permissions(src() / "file.txt", fs::perms(0600));
  const auto took = time_until([&] { return mode_of(mp / "file.txt") == 0600U; });
  ASSERT_TRUE(took.has_value()) << "a chmod in the source never showed";
  EXPECT_LT(took->count(), 3'000) << "the 1 s attribute timeout, plus scheduling";
}

// --- read-only -----------------------------------------------------------------------------

void expect_writes_fail_with_erofs(const fs::path& mp) {
  const auto file = (mp / "file.txt").string();
  const auto dir = (mp / "dir").string();
  const auto fresh = (mp / "fresh").string();
  const std::vector<std::pair<std::string, std::function<int()>>> writes{
      {"open O_WRONLY", [&] { return UniqueFd(::open(file.c_str(), O_WRONLY)).valid() ? 0 : -1; }},
      {"open O_RDWR", [&] { return UniqueFd(::open(file.c_str(), O_RDWR)).valid() ? 0 : -1; }},
      {"open O_RDONLY|O_TRUNC",
       [&] { return UniqueFd(::open(file.c_str(), O_RDONLY | O_TRUNC)).valid() ? 0 : -1; }},
      {"open O_WRONLY|O_APPEND",
       [&] { return UniqueFd(::open(file.c_str(), O_WRONLY | O_APPEND)).valid() ? 0 : -1; }},
      {"creat", [&] { return UniqueFd(::creat(fresh.c_str(), 0644)).valid() ? 0 : -1; }},
      {"mkdir", [&] { return ::mkdir(fresh.c_str(), 0755); }},
      {"mknod fifo", [&] { return ::mkfifo(fresh.c_str(), 0644); }},
      {"unlink", [&] { return ::unlink(file.c_str()); }},
      {"rmdir", [&] { return ::rmdir(dir.c_str()); }},
      {"rename", [&] { return ::rename(file.c_str(), fresh.c_str()); }},
      {"chmod", [&] { return ::chmod(file.c_str(), 0600); }},
      {"chown", [&] { return ::chown(file.c_str(), 1, 1); }},
      {"truncate", [&] { return ::truncate(file.c_str(), 0); }},
      {"utimes", [&] { return ::utimes(file.c_str(), nullptr); }},
      {"symlink", [&] { return ::symlink("file.txt", fresh.c_str()); }},
      {"link", [&] { return ::link(file.c_str(), fresh.c_str()); }},
      {"setxattr", [&] { return ::setxattr(file.c_str(), "user.heddle", "1", 1, 0); }},
      {"removexattr", [&] { return ::removexattr(file.c_str(), "user.heddle"); }},
  };
  for (const auto& [what, call] : writes) {
    const int err = failure_errno(call);
    EXPECT_EQ(err, EROFS) << what << ": " << (err == 0 ? "succeeded" : std::strerror(err));
  }
}

void make_write_target_tree(const fs::path& src) {
  write_file(src / "file.txt", "unchanged\n");
  fs::create_directory(src / "dir");
}

void expect_source_unchanged(const fs::path& src) {
  EXPECT_EQ(read_file(src / "file.txt"), "unchanged\n");
  EXPECT_EQ(lstat_or_throw(src / "file.txt").st_mode & 07777, 0644U);
  EXPECT_EQ(listing(src).size(), 2U);
}

TEST_F(WorkerFsTest, WritesFailWithErofsOnAReadOnlyMount) {
  make_write_target_tree(src());
  const auto worker = start();
  ASSERT_TRUE(worker->ready());
  expect_writes_fail_with_erofs(worker->mountpoint());
  expect_source_unchanged(src());
}

// Without MS_RDONLY the kernel forwards every write: the worker itself must refuse them.
TEST_F(WorkerFsTest, TheWorkerItselfRefusesWritesWithErofs) {
  make_write_target_tree(src());
  WorkerConfig config;
  config.read_only_mount = false;
  const auto worker = start(std::move(config));
  ASSERT_TRUE(worker->ready());
  expect_writes_fail_with_erofs(worker->mountpoint());
  expect_source_unchanged(src());
  EXPECT_EQ(read_file(worker->mountpoint() / "file.txt"), "unchanged\n");
}

// --- inode numbers across filesystems ------------------------------------------------------

// A tmpfs mounted at `at` for the test's duration (detached on destruction).
class TmpfsMount {
 public:
  explicit TmpfsMount(const fs::path& at) : path_(at) {
    if (::mount("heddle-test", at.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0) {
      throw_errno("mount tmpfs on " + at.string());
    }
  }
  TmpfsMount(const TmpfsMount&) = delete;
  TmpfsMount& operator=(const TmpfsMount&) = delete;
  ~TmpfsMount() { ::umount2(path_.c_str(), MNT_DETACH); }

 private:
  fs::path path_;
};

// The mount has one st_dev: two files of two filesystems under the source that share an inode
// number must not share one through the mount, or tar stores the second as a hard link to
// the first and extracting it loses its content.
TEST_F(WorkerFsTest, FilesOfTwoFilesystemsWithOneInodeNumberStayDistinct) {
  // Two fresh tmpfs number their inodes alike: the source itself, and one inside it.
  const TmpfsMount outer(src());
  ASSERT_EQ(::mkdir((src() / "sub").c_str(), 0755), 0);
  const TmpfsMount inner(src() / "sub");
  write_file(src() / "a", "outside\n");
  ASSERT_EQ(::link((src() / "a").c_str(), (src() / "a.link").c_str()), 0);  // nlink 2: tar
  const ino_t target = lstat_or_throw(src() / "a").st_ino;                   // tracks it
  std::optional<std::string> twin;
  for (int i = 0; i < 64 && !twin; ++i) {
    const std::string name = "b" + std::to_string(i);
    write_file(src() / "sub" / name, "inside " + name + "\n");
    if (lstat_or_throw(src() / "sub" / name).st_ino == target) twin = name;
  }
  if (!twin) GTEST_SKIP() << "this kernel's tmpfs numbers inodes differently: no twin found";
  ASSERT_EQ(::link((src() / "sub" / *twin).c_str(), (src() / "sub" / "twin.link").c_str()), 0);
  ASSERT_NE(lstat_or_throw(src() / "a").st_dev, lstat_or_throw(src() / "sub" / *twin).st_dev);

  const TempDir out("heddle-worker-untar");
  {
    const auto worker = start();
    ASSERT_TRUE(worker->ready());
    const fs::path mp = worker->mountpoint();
    const struct stat outside = lstat_or_throw(mp / "a");
    const struct stat inside = lstat_or_throw(mp / "sub" / *twin);
    EXPECT_EQ(outside.st_ino, target) << "the source filesystem's numbers are kept";
    EXPECT_NE(inside.st_ino, outside.st_ino);
    EXPECT_EQ(lstat_or_throw(mp / "sub" / "twin.link").st_ino, inside.st_ino) << "hard links";
    EXPECT_EQ(lstat_or_throw(mp / "sub" / *twin).st_ino, inside.st_ino) << "stable";
    // readdir agrees with stat.
    std::optional<ino_t> listed;
    DIR* d = ::opendir((mp / "sub").c_str());
    ASSERT_NE(d, nullptr);
    while (const dirent* entry = ::readdir(d)) {
      if (entry->d_name == *twin) listed = entry->d_ino;
    }
    ::closedir(d);
    EXPECT_EQ(listed, inside.st_ino);

    const auto tar = run_process(
        {"/bin/sh", "-c",
         "tar -C '" + mp.string() + "' -cf - . | tar -C '" + out.path().string() + "' -xf -"},
        {}, std::chrono::seconds(60));
    ASSERT_TRUE(tar.ok()) << tar.err;
  }
  EXPECT_EQ(read_file(out.path() / "a"), "outside\n");
  EXPECT_EQ(read_file(out.path() / "sub" / *twin), "inside " + *twin + "\n");
  EXPECT_EQ(read_file(out.path() / "sub" / "twin.link"), "inside " + *twin + "\n");
}

// --- memory limit ---------------------------------------------------------------------------

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

// The soft "Max data size" of a process, as /proc/PID/limits shows it ("unlimited" or bytes).
std::string data_limit_of(pid_t pid) {
  std::istringstream limits(read_file("/proc/" + std::to_string(pid) + "/limits"));
  std::string line;
  while (std::getline(limits, line)) {
    if (line.rfind("Max data size", 0) != 0) continue;
    std::istringstream fields(line.substr(std::string("Max data size").size()));
    std::string soft;
    fields >> soft;
    return soft;
  }
  return "";
}

// A crafted source must not make the worker take the host's memory: it serves under
// RLIMIT_DATA (2 GiB for a directory), which HEDDLE_FUSE_WORKER_MEMORY_LIMIT_MIB overrides.
TEST_F(WorkerFsTest, TheWorkerServesUnderAMemoryLimit) {
  if (kSanitized) GTEST_SKIP() << "sanitizer builds run without the limit (shadow memory)";
  write_file(src() / "f", "x\n");
  const std::pair<std::vector<std::string>, std::string> cases[] = {
      {{}, std::to_string(2ull << 30)},
      {{"HEDDLE_FUSE_WORKER_MEMORY_LIMIT_MIB=512"}, std::to_string(512ull << 20)},
      {{"HEDDLE_FUSE_WORKER_MEMORY_LIMIT_MIB=0"}, "unlimited"},
  };
  for (const auto& [env, expected] : cases) {
    SCOPED_TRACE(expected);
    WorkerConfig config;
    config.extra_env = env;
    const auto worker = start(std::move(config));
    ASSERT_TRUE(worker->ready());
    EXPECT_EQ(data_limit_of(worker->pid()), expected);
    EXPECT_EQ(read_file(worker->mountpoint() / "f"), "x\n");
  }
  WorkerConfig bad;
  bad.extra_env = {"HEDDLE_FUSE_WORKER_MEMORY_LIMIT_MIB=lots"};
  bad.source = src();
  UnsandboxedWorker worker(std::move(bad));
  ASSERT_TRUE(worker.first_message());
  const auto* error = std::get_if<ipc::MountError>(&*worker.first_message());
  ASSERT_NE(error, nullptr);
  EXPECT_NE(error->message.find("HEDDLE_FUSE_WORKER_MEMORY_LIMIT_MIB"), std::string::npos);
}

// --- protocol ------------------------------------------------------------------------------

TEST_F(WorkerFsTest, StatusIsAnsweredAndStopEndsTheWorkerCleanly) {
  write_file(src() / "f", "f\n");
  const auto worker = start();
  ASSERT_TRUE(worker->ready());

  worker->send(ipc::Status{});
  const auto reply = worker->receive(milliseconds(5'000));
  ASSERT_TRUE(reply.has_value());
  const auto* ok = std::get_if<ipc::StatusOk>(&*reply);
  ASSERT_NE(ok, nullptr) << "got " << ipc::kind_of(*reply);
  EXPECT_EQ(ok->pid, static_cast<std::uint32_t>(worker->pid()));
  EXPECT_EQ(ok->mount_path, worker->mountpoint().string());
  EXPECT_TRUE(ok->extra.contains("uptime_ms"));
  EXPECT_EQ(ok->extra.value("source", std::string()), src().string());

  worker->send(ipc::Stop{});
  const auto stopping = worker->receive(milliseconds(5'000));
  ASSERT_TRUE(stopping.has_value());
  EXPECT_TRUE(std::holds_alternative<ipc::Stopping>(*stopping)) << ipc::kind_of(*stopping);
  EXPECT_TRUE(exited_with(worker->wait_for_exit(milliseconds(5'000)), 0));
}

TEST_F(WorkerFsTest, EndOfTheIpcSocketEndsTheWorkerCleanly) {
  const auto worker = start();
  ASSERT_TRUE(worker->ready());
  worker->close_ipc();
  EXPECT_TRUE(exited_with(worker->wait_for_exit(milliseconds(5'000)), 0));
}

TEST_F(WorkerFsTest, SigtermEndsTheWorkerCleanly) {
  const auto worker = start();
  ASSERT_TRUE(worker->ready());
  ASSERT_EQ(::kill(worker->pid(), SIGTERM), 0);
  EXPECT_TRUE(exited_with(worker->wait_for_exit(milliseconds(5'000)), 0));
}

TEST_F(WorkerFsTest, AMalformedFrameEndsTheWorkerWithStatus1) {
  const auto worker = start();
  ASSERT_TRUE(worker->ready());
  const std::string body = "{\"kind\":\"Nonsense\"}";
  std::string frame(4, '\0');
  for (int i = 0; i < 4; ++i) frame[i] = static_cast<char>((body.size() >> (8 * i)) & 0xff);
  frame += body;
  ASSERT_EQ(::write(worker->ipc_fd(), frame.data(), frame.size()),
            static_cast<ssize_t>(frame.size()));
  EXPECT_TRUE(exited_with(worker->wait_for_exit(milliseconds(5'000)), 1));
}

TEST_F(WorkerFsTest, TestIgnoreStopIgnoresStopAndSigterm) {
  WorkerConfig config;
  config.test_ignore_stop = true;
  const auto worker = start(std::move(config));
  ASSERT_TRUE(worker->ready());

  worker->send(ipc::Stop{});
  ASSERT_EQ(::kill(worker->pid(), SIGTERM), 0);
  EXPECT_FALSE(worker->wait_for_exit(milliseconds(500)).has_value()) << "should still run";
  // Still serving the protocol, and nothing was sent in answer to Stop.
  worker->send(ipc::Status{});
  const auto reply = worker->receive(milliseconds(5'000));
  ASSERT_TRUE(reply.has_value());
  EXPECT_TRUE(std::holds_alternative<ipc::StatusOk>(*reply)) << ipc::kind_of(*reply);

  ASSERT_EQ(::kill(worker->pid(), SIGKILL), 0);
  const auto status = worker->wait_for_exit(milliseconds(5'000));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << describe_status(*status);
}

TEST_F(WorkerFsTest, PanicOnInitExitsWith101BeforeMountReady) {
  WorkerConfig config;
  config.extra_env = {"HEDDLE_FUSE_WORKER_PANIC_ON_INIT=1"};
  config.source = src();
  UnsandboxedWorker worker(std::move(config));
  EXPECT_FALSE(worker.first_message().has_value())
      << "expected EOF, got " << ipc::kind_of(*worker.first_message());
  EXPECT_TRUE(exited_with(worker.wait_for_exit(milliseconds(5'000)), 101));
}

TEST_F(WorkerFsTest, AMissingSourceIsReportedAsMountErrorNamingThePath) {
  WorkerConfig config;
  config.source = src() / "does-not-exist";
  UnsandboxedWorker worker(config);
  ASSERT_TRUE(worker.first_message().has_value()) << "expected MountError, got EOF";
  const auto* error = std::get_if<ipc::MountError>(&*worker.first_message());
  ASSERT_NE(error, nullptr) << "got " << ipc::kind_of(*worker.first_message());
  EXPECT_NE(error->message.find(config.source.string()), std::string::npos) << error->message;
  EXPECT_NE(error->message.find("does not exist"), std::string::npos) << error->message;
  EXPECT_TRUE(exited_with(worker.wait_for_exit(milliseconds(5'000)), 1));
}

TEST_F(WorkerFsTest, ASourceThatIsAFileIsReportedAsMountError) {
  write_file(src() / "plain-file", "x");
  WorkerConfig config;
  config.source = src() / "plain-file";
  UnsandboxedWorker worker(config);
  ASSERT_TRUE(worker.first_message().has_value());
  const auto* error = std::get_if<ipc::MountError>(&*worker.first_message());
  ASSERT_NE(error, nullptr) << "got " << ipc::kind_of(*worker.first_message());
  EXPECT_NE(error->message.find(config.source.string()), std::string::npos) << error->message;
  EXPECT_NE(error->message.find("not a directory"), std::string::npos) << error->message;
  EXPECT_TRUE(exited_with(worker.wait_for_exit(milliseconds(5'000)), 1));
}

TEST_F(WorkerFsTest, ExpectSandboxRefusesToServeWithCapabilities) {
  WorkerConfig config;
  config.source = src();
  config.expect_sandbox = true;  // this harness runs the worker as root, caps and all
  UnsandboxedWorker worker(config);
  ASSERT_TRUE(worker.first_message().has_value()) << "expected MountError, got EOF";
  const auto* error = std::get_if<ipc::MountError>(&*worker.first_message());
  ASSERT_NE(error, nullptr) << "got " << ipc::kind_of(*worker.first_message());
  EXPECT_NE(error->message.find("capabilities"), std::string::npos) << error->message;
  EXPECT_TRUE(exited_with(worker.wait_for_exit(milliseconds(5'000)), 1));
}

// What to serve is the worker's command line in effect: a bootstrap document it cannot take
// is a MountError naming the problem, and exit 2 as for a usage error.
TEST_F(WorkerFsTest, ABadBootstrapDocumentIsAMountErrorAndExit2) {
  const std::pair<std::string, std::string> cases[] = {
      {"not json", "not JSON"},
      {R"({"host_pid":7,"test_ignore_stop":false})", "lacks \"spec\""},
      {R"({"host_pid":7,"test_ignore_stop":false,"generation":1,"spec":{"source":{"kind":"nfs",)"
       R"("dir":"/x"},)"
       R"("mountpoint":"/m","uid":0,"gid":0,"allow_other":false,"sandbox":"none","overlay_dir":""}})",
       "unknown source kind \"nfs\""},
  };
  for (const auto& [payload, expected] : cases) {
    WorkerConfig config;
    config.source = src();
    config.bootstrap_payload = payload;
    UnsandboxedWorker worker(config);
    ASSERT_TRUE(worker.first_message().has_value()) << payload;
    const auto* error = std::get_if<ipc::MountError>(&*worker.first_message());
    ASSERT_NE(error, nullptr) << "got " << ipc::kind_of(*worker.first_message());
    EXPECT_NE(error->message.find(expected), std::string::npos) << error->message;
    EXPECT_TRUE(exited_with(worker.wait_for_exit(milliseconds(5'000)), 2)) << payload;
  }
}

// --- scale ---------------------------------------------------------------------------------

// A worker holding an fd per inode dies with EMFILE long before 100k files under the machine's
// RLIMIT_NOFILE; this one holds only the fds of currently open files and directories.
TEST_F(WorkerFsTest, WalkingAHundredThousandFilesKeepsTheWorkerFdCountSmall) {
  constexpr int kDirs = 100;
  constexpr int kFilesPerDir = 1000;
  // On tmpfs when there is one: creating 100k inodes on a busy disk can take a minute.
  std::error_code ec;
  if (fs::is_directory("/dev/shm", ec)) source_ = std::make_unique<TempDir>("heddle-worker-src", "/dev/shm");
  const auto build_start = Clock::now();
  for (int d = 0; d < kDirs; ++d) {
    const fs::path dir = src() / ("d" + std::to_string(d));
    ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
    const UniqueFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(dir_fd);
    for (int f = 0; f < kFilesPerDir; ++f) {
      const std::string name = "f" + std::to_string(f);
      const UniqueFd fd(::openat(dir_fd.get(), name.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
      ASSERT_TRUE(fd) << std::strerror(errno);
    }
  }
  const auto built = Clock::now();

  const auto worker = start();
  ASSERT_TRUE(worker->ready());
  const fs::path mp = worker->mountpoint();
  const int fds_at_start = worker->count_fds();
  ASSERT_GT(fds_at_start, 0) << "cannot read /proc/" << worker->pid() << "/fd";

  std::atomic<bool> walking{true};
  std::atomic<int> max_fds{fds_at_start};
  std::atomic<int> samples{0};
  std::thread sampler([&] {
    while (walking.load()) {
      const int n = worker->count_fds();
      int seen = max_fds.load();
      while (n > seen && !max_fds.compare_exchange_weak(seen, n)) {
      }
      samples.fetch_add(1);
      std::this_thread::sleep_for(milliseconds(2));
    }
  });

  const auto walk_start = Clock::now();
  std::size_t entries = 0;
  std::size_t dirs = 0;
  std::size_t lstat_failures = 0;
  try {
    for (const auto& entry : fs::recursive_directory_iterator(mp)) {
      struct stat st {};
      if (::lstat(entry.path().c_str(), &st) != 0) ++lstat_failures;
      if (S_ISDIR(st.st_mode)) ++dirs;
      ++entries;
    }
  } catch (...) {
    walking = false;
    sampler.join();
    throw;
  }
  const auto walk_end = Clock::now();
  walking = false;
  sampler.join();
  const int fds_after = worker->count_fds();

  worker->send(ipc::Status{});
  const auto status = worker->receive(milliseconds(5'000));

  const auto ms = [](auto d) {
    return std::chrono::duration_cast<milliseconds>(d).count();
  };
  std::cout << "[ scale    ] built 100k files in " << ms(built - build_start) << " ms; walked "
            << entries << " entries (lstat each) in " << ms(walk_end - walk_start)
            << " ms; worker fds: start " << fds_at_start << ", max " << max_fds.load()
            << " over " << samples.load() << " samples, after " << fds_after;
  if (status && std::holds_alternative<ipc::StatusOk>(*status)) {
    std::cout << "; worker nodes " << std::get<ipc::StatusOk>(*status).extra.value("nodes", 0);
  }
  std::cout << std::endl;

  EXPECT_EQ(lstat_failures, 0U);
  EXPECT_EQ(dirs, static_cast<std::size_t>(kDirs));
  EXPECT_EQ(entries, static_cast<std::size_t>(kDirs * kFilesPerDir + kDirs));
  EXPECT_GT(samples.load(), 0);
  EXPECT_LT(max_fds.load(), 64);
  EXPECT_LT(fds_after, 64);
}

// --- command line (no mount needed) --------------------------------------------------------

// Its exit code, or -1 if it was killed or outlived 10 s.
int run_worker(const std::vector<std::string>& args) {
  std::vector<std::string> all{HEDDLE_BIN_DIR "/heddle-fuse-worker"};
  all.insert(all.end(), args.begin(), args.end());
  return run_process(all, {}, std::chrono::seconds(10)).exit_code;
}

TEST(WorkerCommandLine, UsageErrorsExitWith2AndHelpWith0) {
  EXPECT_EQ(run_worker({"--help"}), 0);
  EXPECT_EQ(run_worker({"--bogus"}), 2);
  EXPECT_EQ(run_worker({}), 2);
  EXPECT_EQ(run_worker({"--bootstrap-fd"}), 2);
  EXPECT_EQ(run_worker({"--bootstrap-fd", "z"}), 2);
  EXPECT_EQ(run_worker({"--bootstrap-fd", "3", "--bootstrap-fd=3"}), 2);
  // What to serve never comes as flags.
  EXPECT_EQ(run_worker({"--dir", "/x", "--mountpoint", "/y", "--bootstrap-fd", "3"}), 2);
  // A bootstrap fd that is not open: logged, exit 1.
  EXPECT_EQ(run_worker({"--bootstrap-fd", "999"}), 1);
  EXPECT_EQ(run_worker({"--bootstrap-fd=999"}), 1);
}

}  // namespace
}  // namespace heddle::test
