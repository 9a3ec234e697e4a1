// Writable mounts (issue 14) end to end, through the CLI binary as a user runs it:
// `heddle-fuse-launcher mount --dir SRC --overlay --overlay-dir OV --mountpoint MP` (or a git
// thread with `--repo-root R --thread-id T --overlay-dir OV`), then `unmount MP`.
//
// OverlayPosix.*     POSIX conformance of each operation on a mount with one owner: errno of
//                    each error case, link counts, times, sizes, and the overlay's on-disk
//                    format (copy-up, whiteouts, opaque directories) as the contract fixes it.
//                    Cheap: every preset runs them.
// OverlayPrograms.*  Real programs (git, make, tar, cp -a, python3 -m compileall, sqlite3 in
//                    WAL mode) inside a mount, each compared with the same run on a native
//                    directory. Heavy: the sanitizer presets may skip them by this prefix.
//
// Every case: the source (the lower layer) is byte-for-byte, mode and time unchanged at the end;
// no mount and no process of ours is left (the test is a child subreaper, so the background
// supervisor, worker and guard come to us to be reaped); a watchdog SIGKILLs the worker if a
// case hangs, so a hung FUSE request fails the case instead of the whole run.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <linux/falloc.h>
#include <linux/fs.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/child_process.h"
#include "support/test_support.h"

namespace heddle::test {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

// ---- small helpers ------------------------------------------------------------------------------

std::string errno_name(int error) {
  if (error == 0) return "0";
  const char* name = ::strerrorname_np(error);
  return name != nullptr ? name : std::to_string(error);
}

// `call` must fail with exactly `expected` (as Linux gives it on a native filesystem).
#define EXPECT_ERRNO(call, expected)                                                          \
  do {                                                                                        \
    errno = 0;                                                                                \
    const long result_ = static_cast<long>(call);                                             \
    const int errno_ = errno;                                                                 \
    EXPECT_EQ(result_, -1) << #call << " succeeded, expected " << errno_name(expected);       \
    if (result_ == -1) {                                                                      \
      EXPECT_EQ(errno_name(errno_), errno_name(expected)) << #call;                           \
    }                                                                                         \
  } while (0)

#define EXPECT_OK(call)                                                                       \
  do {                                                                                        \
    errno = 0;                                                                                \
    const long result_ = static_cast<long>(call);                                             \
    const int errno_ = errno;                                                                 \
    EXPECT_NE(result_, -1) << #call << " failed: " << errno_name(errno_);                     \
  } while (0)

#define ASSERT_OK(call)                                                                       \
  do {                                                                                        \
    errno = 0;                                                                                \
    const long result_ = static_cast<long>(call);                                             \
    const int errno_ = errno;                                                                 \
    ASSERT_NE(result_, -1) << #call << " failed: " << errno_name(errno_);                     \
  } while (0)

int renameat2(const std::string& from, const std::string& to, unsigned flags) {
  return static_cast<int>(
      ::syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags));
}

// The whole file, or nullopt (errno kept) if it cannot be opened or read.
std::optional<std::string> read_all(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  std::string content;
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::nullopt;
    }
    if (n == 0) return content;
    content.append(buffer, static_cast<std::size_t>(n));
  }
}

std::string read_or_error(const std::string& path) {
  const auto content = read_all(path);
  return content ? *content : "<" + errno_name(errno) + ">";
}

// Creates (or truncates) `path` with `content` through write(2); false with errno on failure.
bool write_all(const std::string& path, const std::string& content, mode_t mode = 0644,
               int flags = O_WRONLY | O_CREAT | O_TRUNC) {
  UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC, mode));
  if (!fd) return false;
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return ::close(fd.release()) == 0;
}

// Names in a directory, sorted, without "." and ".."; duplicates kept so that they show.
std::vector<std::string> list_dir(const std::string& path) {
  std::vector<std::string> names;
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return {"<" + errno_name(errno) + ">"};
  while (const dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

struct stat stat_of(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    ADD_FAILURE() << "lstat " << path << ": " << errno_name(errno);
  }
  return st;
}

// The inode number as the filesystem answers now, past the kernel's attribute cache.
ino_t fresh_ino(const std::string& path) {
  struct statx stx {};
  const int flags = AT_SYMLINK_NOFOLLOW | AT_STATX_FORCE_SYNC;
  if (::statx(AT_FDCWD, path.c_str(), flags, STATX_INO, &stx) != 0) {
    ADD_FAILURE() << "statx " << path << ": " << errno_name(errno);
  }
  return stx.stx_ino;
}

std::int64_t ns_of(const timespec& ts) {
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

bool set_times(const fs::path& path, time_t seconds, long nanoseconds) {
  const timespec times[2] = {{seconds, nanoseconds}, {seconds, nanoseconds}};
  return ::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW) == 0;
}

// A deterministic pseudo-random byte string.
std::string pattern(std::size_t size, std::uint32_t seed) {
  std::string out(size, '\0');
  std::uint32_t state = seed * 2654435761u + 1;
  for (char& c : out) {
    state = state * 1664525u + 1013904223u;
    c = static_cast<char>(state >> 24);
  }
  return out;
}

std::string xattr_of(const fs::path& path, const char* name) {
  char value[256];
  const ssize_t n = ::lgetxattr(path.c_str(), name, value, sizeof value);
  if (n < 0) return "<" + errno_name(errno) + ">";
  return std::string(value, static_cast<std::size_t>(n));
}

// ---- trees, described as a person compares them -------------------------------------------------

struct Node {
  char type = '?';
  unsigned mode = 0;
  off_t size = 0;
  std::string target;
  std::string content;
  std::int64_t mtime_ns = 0;  // -1 when not compared
  nlink_t nlink = 0;          // 0 for directories (their link counts are not compared)
  std::string hard_link_of;   // the first path (sorted) sharing this inode, if not this one
  uid_t uid = 0;
  gid_t gid = 0;
  friend bool operator==(const Node&, const Node&) = default;
};

struct DescribeOptions {
  bool file_times = true;
  bool dir_times = true;
  bool ids = true;
};

using Tree = std::map<std::string, Node>;

Tree describe(const fs::path& root, const DescribeOptions& options = {}) {
  Tree tree;
  std::map<std::pair<dev_t, ino_t>, std::string> first_of_inode;
  std::vector<fs::path> paths;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    paths.push_back(it->path());
  }
  EXPECT_FALSE(ec) << "walking " << root << ": " << ec.message();
  std::sort(paths.begin(), paths.end());
  for (const fs::path& path : paths) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
      ADD_FAILURE() << "lstat " << path << ": " << errno_name(errno);
      continue;
    }
    const std::string relative = path.lexically_relative(root).string();
    Node node;
    node.mode = st.st_mode & 07777;
    node.mtime_ns = ns_of(st.st_mtim);
    if (options.ids) {
      node.uid = st.st_uid;
      node.gid = st.st_gid;
    }
    if (S_ISLNK(st.st_mode)) {
      node.type = 'l';
      node.size = st.st_size;
      node.target = fs::read_symlink(path, ec).string();
      node.nlink = st.st_nlink;
      if (!options.file_times) node.mtime_ns = -1;
    } else if (S_ISDIR(st.st_mode)) {
      node.type = 'd';
      if (!options.dir_times) node.mtime_ns = -1;
    } else {
      node.type = S_ISREG(st.st_mode) ? '-' : 'o';
      node.size = st.st_size;
      node.content = read_or_error(path);
      node.nlink = st.st_nlink;
      if (!options.file_times) node.mtime_ns = -1;
      const auto [it, inserted] = first_of_inode.try_emplace({st.st_dev, st.st_ino}, relative);
      if (!inserted) node.hard_link_of = it->second;
    }
    tree[relative] = std::move(node);
  }
  return tree;
}

std::string show(const Node& node) {
  std::ostringstream out;
  out << node.type << " " << std::oct << node.mode << std::dec << " size " << node.size
      << " mtime " << node.mtime_ns << " nlink " << node.nlink << " ids " << node.uid << ":"
      << node.gid;
  if (!node.target.empty()) out << " -> " << node.target;
  if (!node.hard_link_of.empty()) out << " link of " << node.hard_link_of;
  if (node.type == '-') {
    out << " content "
        << (node.content.size() <= 40 ? "\"" + node.content + "\""
                                      : std::to_string(node.content.size()) + " bytes");
  }
  return out.str();
}

// Reports the first differences only: a 10,000-entry tree must not flood the log.
void expect_same_tree(const Tree& expected, const Tree& actual, const std::string& what) {
  int reported = 0;
  const auto report = [&](const std::string& line) {
    if (++reported <= 20) ADD_FAILURE() << what << ": " << line;
  };
  for (const auto& [path, node] : expected) {
    const auto it = actual.find(path);
    if (it == actual.end()) {
      report("missing " + path + " (" + show(node) + ")");
    } else if (!(it->second == node)) {
      report(path + ": expected " + show(node) + ", got " + show(it->second));
    }
  }
  for (const auto& [path, node] : actual) {
    if (!expected.contains(path)) report("unexpected " + path + " (" + show(node) + ")");
  }
  if (reported > 20) ADD_FAILURE() << what << ": " << reported - 20 << " more differences";
}

// ---- the launcher -------------------------------------------------------------------------------

CommandResult launcher(std::vector<std::string> args, std::chrono::milliseconds timeout = 30s) {
  args.insert(args.begin(), bin_path("heddle-fuse-launcher"));
  return run_command(args, timeout);
}

// Why the binaries cannot run these tests, or "" when they support writable mounts.
std::string overlay_support_missing() {
  static const std::string missing = [] {
    const CommandResult worker = run_command({bin_path("heddle-fuse-worker"), "--help"}, 10s);
    // What to serve comes in the bootstrap document; --help describes its overlay_dir.
    if ((worker.out + worker.err).find("overlay") == std::string::npos) {
      return std::string("heddle-fuse-worker --help does not mention an overlay");
    }
    const CommandResult cli = launcher({"--help"}, 10s);
    if ((cli.out + cli.err).find("--overlay-dir") == std::string::npos) {
      return std::string("heddle-fuse-launcher --help does not mention --overlay-dir");
    }
    return std::string();
  }();
  return missing;
}

// A thread that SIGKILLs the worker if the case is still running after `limit`: the kernel
// then aborts the FUSE connection, every blocked syscall of the test returns ENOTCONN, and the
// case fails instead of hanging until ctest kills it (and leaves its mount behind). The
// supervisor removes the mount of a dead worker. A case still stuck 20 s later is stuck on
// something else: the binary aborts, so that ctest reports it at once.
class Watchdog {
 public:
  Watchdog(std::chrono::seconds limit, std::atomic<pid_t>& worker) {
    thread_ = std::thread([this, limit, &worker] {
      std::unique_lock lock(mutex_);
      if (cv_.wait_for(lock, limit, [this] { return done_; })) return;
      ADD_FAILURE() << "the case ran longer than " << limit.count()
                    << " s: SIGKILLing the worker " << worker.load();
      if (worker.load() > 0) ::kill(worker.load(), SIGKILL);
      if (cv_.wait_for(lock, 20s, [this] { return done_; })) return;
      std::cerr << "the case is still stuck 20 s after its worker was killed: aborting\n";
      std::abort();
    });
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  ~Watchdog() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

// ---- the fixture --------------------------------------------------------------------------------

constexpr time_t kLowerTime = 1'600'000'000;  // 2020-09-13, with nanoseconds below

class OverlayTest : public ::testing::Test {
 protected:
  virtual std::chrono::seconds time_limit() const { return 50s; }
  virtual void populate_lower() {}

  void SetUp() override {
    HEDDLE_REQUIRE_MOUNT();
    if (const std::string missing = overlay_support_missing(); !missing.empty()) {
      FAIL() << "writable mounts are not supported by these binaries: " << missing;
    }
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    ::umask(022);
    tree_ = std::make_unique<ScratchTree>();
    fs::create_directory(home());
    populate_lower();
    snapshot_source();
    mount_args_ = {"--dir", tree_->source().string(), "--overlay", "--overlay-dir", ov().string()};
    watchdog_ = std::make_unique<Watchdog>(time_limit(), worker_);
  }

  void TearDown() override {
    if (!tree_) return;
    unmount_for_teardown();
    watchdog_.reset();
    EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
    // The lower layer is never written, by any path.
    if (!source_before_.empty()) {
      expect_same_tree(source_before_, describe(tree_->source()), "the source changed");
    }
    // As root the overlay belongs to the worker's uid; removing it is still ours to do.
    tree_.reset();
  }

  void snapshot_source() { source_before_ = describe(tree_->source()); }

  // `dir/name` inside the mount, in the overlay's upper layer, in the source.
  std::string m(const std::string& relative = "") const {
    return relative.empty() ? mp() : (tree_->mountpoint() / relative).string();
  }
  fs::path upper(const std::string& relative = "") const {
    return relative.empty() ? ov() / "upper" : ov() / "upper" / relative;
  }
  fs::path src(const std::string& relative) const { return tree_->source() / relative; }
  std::string mp() const { return tree_->mountpoint().string(); }
  fs::path ov() const { return tree_->root() / "overlay"; }
  fs::path home() const { return tree_->root() / "home"; }

  void mount() {
    std::vector<std::string> args = {"mount"};
    args.insert(args.end(), mount_args_.begin(), mount_args_.end());
    args.insert(args.end(), {"--mountpoint", mp(), "--json"});
    const CommandResult result = launcher(args, 30s);
    ASSERT_EQ(result.exit_code, 0) << "mount failed: " << result.err;
    const Json ready = Json::parse(result.out, nullptr, false);
    ASSERT_FALSE(ready.is_discarded()) << result.out;
    supervisor_ = ready.value("supervisor_pid", -1);
    worker_ = ready.value("pid", -1);
    guard_ = ready.value("guard_pid", -1);
    ASSERT_TRUE(heddle_mounted(tree_->mountpoint()));
  }

  void unmount() {
    const CommandResult result = launcher({"unmount", mp()}, 30s);
    EXPECT_EQ(result.exit_code, 0) << "unmount failed: " << result.err;
    EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
    EXPECT_TRUE(eventually([&] { return process_gone(supervisor_); }, 10s))
        << "supervisor " << supervisor_ << " outlived its mount";
    EXPECT_TRUE(eventually([&] { return process_gone(worker_); }, 10s))
        << "worker " << worker_ << " outlived its mount";
    EXPECT_TRUE(eventually([&] { return process_gone(guard_); }, 10s))
        << "guard " << guard_ << " outlived its mount";
    supervisor_ = worker_ = guard_ = -1;
  }

  void remount() {
    unmount();
    ASSERT_NO_FATAL_FAILURE(mount());
  }

  void unmount_for_teardown() {
    if (supervisor_ > 0 || heddle_mounted(tree_->mountpoint())) {
      if (heddle_mounted(tree_->mountpoint())) {
        (void)launcher({"unmount", mp()}, 30s);
      }
      if (heddle_mounted(tree_->mountpoint())) {
        ADD_FAILURE() << "unmount left the mount; detaching it";
        if (running_as_root()) {
          ::umount2(mp().c_str(), MNT_DETACH);
        } else {
          (void)run_command({"/usr/bin/fusermount3", "-u", "-z", mp()}, 10s);
        }
      }
      for (const pid_t pid : {supervisor_.load(), worker_.load(), guard_.load()}) {
        if (!eventually([&] { return process_gone(pid); }, 10s)) {
          ADD_FAILURE() << "process " << pid << " outlived the mount; killing it";
          ::kill(pid, SIGKILL);
          eventually([&] { return process_gone(pid); }, 5s);
        }
      }
      supervisor_ = worker_ = guard_ = -1;
    }
  }

  // Runs a shell script with a clean, fixed environment (no user configuration) in `cwd`.
  CommandResult sh(const fs::path& cwd, const std::string& script,
                   std::chrono::milliseconds timeout = 60s) {
    return run_command({"/usr/bin/env", "-i", "-C", cwd.string(), "PATH=/usr/bin:/bin",
                        "HOME=" + home().string(), "LC_ALL=C", "TZ=UTC", "GIT_CONFIG_NOSYSTEM=1",
                        "GIT_CONFIG_GLOBAL=/dev/null", "GIT_AUTHOR_NAME=Test",
                        "GIT_AUTHOR_EMAIL=test@example.invalid", "GIT_COMMITTER_NAME=Test",
                        "GIT_COMMITTER_EMAIL=test@example.invalid",
                        "GIT_AUTHOR_DATE=2024-05-06T07:08:09Z",
                        "GIT_COMMITTER_DATE=2024-05-06T07:08:09Z", "/bin/sh", "-c",
                        "set -e\n" + script},
                       timeout);
  }

  std::unique_ptr<ScratchTree> tree_;
  std::vector<std::string> mount_args_;
  Tree source_before_;
  std::atomic<pid_t> supervisor_{-1};
  std::atomic<pid_t> worker_{-1};
  std::atomic<pid_t> guard_{-1};
  std::unique_ptr<Watchdog> watchdog_;
};

// Writes `content` at `path` with `mode` and the fixed lower time (plus `ns`).
void put(const fs::path& path, const std::string& content, unsigned mode = 0644, long ns = 0) {
  fs::create_directories(path.parent_path());
  ASSERT_TRUE(write_all(path.string(), content, 0600)) << path << ": " << errno_name(errno);
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
  ASSERT_TRUE(set_times(path, kLowerTime, ns));
}

// Gives every directory under (and including) `root` the fixed lower time, deepest first.
void settle_dir_times(const fs::path& root) {
  std::vector<fs::path> dirs = {root};
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_directory() && !entry.is_symlink()) dirs.push_back(entry.path());
  }
  std::sort(dirs.rbegin(), dirs.rend());
  for (const fs::path& dir : dirs) ASSERT_TRUE(set_times(dir, kLowerTime, 500));
}

// ---- OverlayPosix: one operation at a time ----------------------------------------------------

const std::string kBig = pattern(3 << 20, 7);  // a lower file above any small buffer

class OverlayPosix : public OverlayTest {
 protected:
  void populate_lower() override {
    const fs::path s = tree_->source();
    put(s / "lower.txt", "lower content\n");
    put(s / "dir" / "a.txt", "a\n");
    put(s / "dir" / "b.txt", "b\n");
    put(s / "dir" / "sub" / "c.txt", "c\n");
    put(s / "tool.sh", "#!/bin/sh\necho hi\n", 0755);
    put(s / "ro.txt", "read only\n", 0444);
    put(s / "big.bin", kBig, 0644, 123456789);
    put(s / "deep" / "x" / "y" / "z.txt", "zzz\n");
    put(s / "deep" / "x" / "w.txt", "www\n");
    fs::create_directory(s / "emptydir");
    fs::create_symlink("lower.txt", s / "link");
    ASSERT_TRUE(set_times(s / "link", kLowerTime, 0));
    settle_dir_times(s);
  }
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(OverlayTest::SetUp());
    if (IsSkipped()) return;
    ASSERT_NO_FATAL_FAILURE(mount());
  }
};

TEST_F(OverlayPosix, CreateWithExclTruncAndAppend) {
  const int fd = ::open(m("new.txt").c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0640);
  ASSERT_GE(fd, 0) << errno_name(errno);
  EXPECT_EQ(::write(fd, "hello", 5), 5);
  EXPECT_EQ(::close(fd), 0);
  struct stat st = stat_of(m("new.txt"));
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_size, 5);
  EXPECT_EQ(st.st_nlink, 1u);
  EXPECT_EQ(st.st_uid, ::getuid());
  EXPECT_EQ(st.st_gid, ::getgid());
  EXPECT_EQ(read_or_error(m("new.txt")), "hello");
  EXPECT_EQ(list_dir(m("")),
            (std::vector<std::string>{"big.bin", "deep", "dir", "emptydir", "link", "lower.txt",
                                      "new.txt", "ro.txt", "tool.sh"}));

  // access(W_OK) answers for the mount, not for the read-only lower layer.
  EXPECT_OK(::access(m("lower.txt").c_str(), W_OK));
  EXPECT_OK(::access(m("dir").c_str(), W_OK | X_OK));
  if (running_as_root()) {
    EXPECT_OK(::access(m("ro.txt").c_str(), W_OK));
  } else {
    EXPECT_ERRNO(::access(m("ro.txt").c_str(), W_OK), EACCES);
  }
  // O_EXCL: on a file of either layer, on a directory, and on a symlink (never followed).
  EXPECT_ERRNO(::open(m("new.txt").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600), EEXIST);
  EXPECT_ERRNO(::open(m("lower.txt").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600), EEXIST);
  EXPECT_ERRNO(::open(m("dir").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600), EEXIST);
  EXPECT_ERRNO(::open(m("link").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600), EEXIST);
  // Plain error cases.
  EXPECT_ERRNO(::open(m("missing").c_str(), O_RDONLY), ENOENT);
  EXPECT_ERRNO(::open(m("nodir/x").c_str(), O_CREAT | O_WRONLY, 0644), ENOENT);
  EXPECT_ERRNO(::open(m("lower.txt/x").c_str(), O_CREAT | O_WRONLY, 0644), ENOTDIR);
  EXPECT_ERRNO(::open(m("dir").c_str(), O_WRONLY), EISDIR);
  EXPECT_ERRNO(::open(m("link").c_str(), O_RDONLY | O_NOFOLLOW), ELOOP);

  // O_TRUNC, on a new file and on a lower one (copy-up of nothing: it ends empty).
  UniqueFd trunc(::open(m("new.txt").c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  ASSERT_TRUE(trunc) << errno_name(errno);
  EXPECT_EQ(stat_of(m("new.txt")).st_size, 0);
  EXPECT_EQ(::write(trunc.get(), "xy", 2), 2);
  trunc.reset();
  EXPECT_EQ(read_or_error(m("new.txt")), "xy");
  UniqueFd lower_trunc(::open(m("lower.txt").c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  ASSERT_TRUE(lower_trunc) << errno_name(errno);
  lower_trunc.reset();
  EXPECT_EQ(stat_of(m("lower.txt")).st_size, 0);
  EXPECT_EQ(read_or_error(m("lower.txt")), "");
  EXPECT_EQ(read_or_error(src("lower.txt")), "lower content\n");

  // O_APPEND: every write lands at the end, whatever the offset and whichever fd.
  UniqueFd append1(::open(m("log").c_str(), O_CREAT | O_WRONLY | O_APPEND | O_CLOEXEC, 0644));
  UniqueFd append2(::open(m("log").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  ASSERT_TRUE(append1 && append2) << errno_name(errno);
  EXPECT_EQ(::write(append1.get(), "abc", 3), 3);
  EXPECT_EQ(::lseek(append1.get(), 0, SEEK_SET), 0);
  EXPECT_EQ(::write(append1.get(), "def", 3), 3);
  EXPECT_EQ(::write(append2.get(), "ghi", 3), 3);
  EXPECT_EQ(::write(append1.get(), "jkl", 3), 3);
  EXPECT_EQ(::lseek(append1.get(), 0, SEEK_CUR), 12);
  EXPECT_EQ(read_or_error(m("log")), "abcdefghijkl");
  EXPECT_EQ(stat_of(m("log")).st_size, 12);
  // On a lower file: copied up, then appended.
  EXPECT_TRUE(write_all(m("dir/a.txt"), "more\n", 0644, O_WRONLY | O_APPEND)) << errno_name(errno);
  EXPECT_EQ(read_or_error(m("dir/a.txt")), "a\nmore\n");
  EXPECT_EQ(read_or_error(src("dir/a.txt")), "a\n");
}

TEST_F(OverlayPosix, WritesReadBackAtEveryOffset) {
  const std::string data = pattern(1'500'000, 3);
  UniqueFd fd(::open(m("data.bin").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd) << errno_name(errno);
  // Odd-sized chunks, so that no write lines up with a page or a FUSE buffer.
  for (std::size_t done = 0; done < data.size();) {
    const std::size_t chunk = std::min<std::size_t>(4093 + done % 70'001, data.size() - done);
    ASSERT_EQ(::write(fd.get(), data.data() + done, chunk), static_cast<ssize_t>(chunk));
    done += chunk;
  }
  for (const off_t offset : {0L, 1L, 4095L, 4096L, 65535L, 131073L, 1'499'990L}) {
    char buffer[10] = {};
    ASSERT_EQ(::pread(fd.get(), buffer, 10, offset), 10) << offset;
    EXPECT_EQ(std::string(buffer, 10), data.substr(static_cast<std::size_t>(offset), 10)) << offset;
  }
  // Overwrite in the middle, and write past the end: the gap reads as zeros.
  ASSERT_EQ(::pwrite(fd.get(), "MIDDLE", 6, 700'000), 6);
  ASSERT_EQ(::pwrite(fd.get(), "TAIL", 4, 2'000'000), 4);
  char at_end[8];
  EXPECT_EQ(::pread(fd.get(), at_end, sizeof at_end, 2'000'000), 4);
  fd.reset();
  std::string expected = data;
  expected.replace(700'000, 6, "MIDDLE");
  expected.resize(2'000'000, '\0');
  expected += "TAIL";
  EXPECT_EQ(stat_of(m("data.bin")).st_size, 2'000'004);
  EXPECT_TRUE(read_or_error(m("data.bin")) == expected) << "content differs after close";
  // Writes to a lower file: its head, its middle, its tail.
  UniqueFd big(::open(m("big.bin").c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(big) << errno_name(errno);
  ASSERT_EQ(::pwrite(big.get(), "HEAD", 4, 0), 4);
  ASSERT_EQ(::pwrite(big.get(), "BODY", 4, 1 << 20), 4);
  ASSERT_EQ(::pwrite(big.get(), "END", 3, (3 << 20) - 3), 3);
  big.reset();
  std::string big_expected = kBig;
  big_expected.replace(0, 4, "HEAD");
  big_expected.replace(1 << 20, 4, "BODY");
  big_expected.replace((3 << 20) - 3, 3, "END");
  EXPECT_TRUE(read_or_error(m("big.bin")) == big_expected) << "the copied-up file differs";
  EXPECT_TRUE(slurp(upper("big.bin")) == big_expected) << "the upper file differs";
  EXPECT_TRUE(slurp(src("big.bin")) == kBig) << "the source file changed";
  // And after a remount, from the disk.
  ASSERT_NO_FATAL_FAILURE(remount());
  EXPECT_TRUE(read_or_error(m("data.bin")) == expected) << "content differs after a remount";
  EXPECT_TRUE(read_or_error(m("big.bin")) == big_expected) << "copied-up differs after a remount";
}

TEST_F(OverlayPosix, MkdirRmdirAndUnlinkErrors) {
  ASSERT_OK(::mkdir(m("d").c_str(), 0750));
  EXPECT_EQ(stat_of(m("d")).st_mode, S_IFDIR | 0750u);
  EXPECT_EQ(stat_of(m("d")).st_uid, ::getuid());
  EXPECT_EQ(list_dir(m("d")), std::vector<std::string>{});
  EXPECT_ERRNO(::mkdir(m("d").c_str(), 0755), EEXIST);
  EXPECT_ERRNO(::mkdir(m("dir").c_str(), 0755), EEXIST);
  EXPECT_ERRNO(::mkdir(m("lower.txt").c_str(), 0755), EEXIST);
  EXPECT_ERRNO(::mkdir(m("link").c_str(), 0755), EEXIST);
  EXPECT_ERRNO(::mkdir(m("lower.txt/x").c_str(), 0755), ENOTDIR);
  EXPECT_ERRNO(::mkdir(m("nodir/x").c_str(), 0755), ENOENT);
  ASSERT_OK(::mkdir(m("d/e").c_str(), 0755));
  ASSERT_TRUE(write_all(m("d/e/f"), "f"));
  ASSERT_OK(::mkdir(m("dir/new").c_str(), 0755));  // inside a lower directory

  EXPECT_ERRNO(::rmdir(m("d").c_str()), ENOTEMPTY);
  EXPECT_ERRNO(::rmdir(m("d/e").c_str()), ENOTEMPTY);
  EXPECT_ERRNO(::rmdir(m("dir").c_str()), ENOTEMPTY);       // lower children
  EXPECT_ERRNO(::rmdir(m("dir/sub").c_str()), ENOTEMPTY);   // lower child only
  EXPECT_ERRNO(::rmdir(m("lower.txt").c_str()), ENOTDIR);
  EXPECT_ERRNO(::rmdir(m("d/e/f").c_str()), ENOTDIR);
  EXPECT_ERRNO(::rmdir(m("link").c_str()), ENOTDIR);
  EXPECT_ERRNO(::rmdir(m("missing").c_str()), ENOENT);
  EXPECT_ERRNO(::rmdir(m("dir/.").c_str()), EINVAL);

  EXPECT_ERRNO(::unlink(m("d").c_str()), EISDIR);
  EXPECT_ERRNO(::unlink(m("dir").c_str()), EISDIR);
  EXPECT_ERRNO(::unlink(m("missing").c_str()), ENOENT);
  EXPECT_ERRNO(::unlink(m("lower.txt/x").c_str()), ENOTDIR);

  EXPECT_OK(::unlink(m("d/e/f").c_str()));
  EXPECT_ERRNO(::access(m("d/e/f").c_str(), F_OK), ENOENT);
  EXPECT_OK(::rmdir(m("d/e").c_str()));
  EXPECT_OK(::rmdir(m("d").c_str()));
  EXPECT_ERRNO(::access(m("d").c_str(), F_OK), ENOENT);
  EXPECT_OK(::rmdir(m("dir/new").c_str()));
  EXPECT_OK(::rmdir(m("emptydir").c_str()));  // a lower empty directory
  EXPECT_ERRNO(::access(m("emptydir").c_str(), F_OK), ENOENT);
  EXPECT_TRUE(fs::is_directory(src("emptydir")));

  // A lower directory is empty once its lower children are deleted in the mount.
  EXPECT_OK(::unlink(m("dir/sub/c.txt").c_str()));
  EXPECT_EQ(list_dir(m("dir/sub")), std::vector<std::string>{});
  EXPECT_OK(::rmdir(m("dir/sub").c_str()));
  EXPECT_EQ(list_dir(m("dir")), (std::vector<std::string>{"a.txt", "b.txt"}));
  // A directory made over a lower one that has children only in the lower layer: it has an
  // upper copy (a child made and removed) but rmdir must still see the lower child.
  ASSERT_TRUE(write_all(m("deep/x/y/tmp"), "t"));
  EXPECT_OK(::unlink(m("deep/x/y/tmp").c_str()));
  EXPECT_ERRNO(::rmdir(m("deep/x/y").c_str()), ENOTEMPTY);
  EXPECT_EQ(list_dir(m("deep/x/y")), std::vector<std::string>{"z.txt"});

  ASSERT_NO_FATAL_FAILURE(remount());
  EXPECT_ERRNO(::access(m("d").c_str(), F_OK), ENOENT);
  EXPECT_ERRNO(::access(m("emptydir").c_str(), F_OK), ENOENT);
  EXPECT_ERRNO(::access(m("dir/sub").c_str(), F_OK), ENOENT);
  EXPECT_EQ(list_dir(m("dir")), (std::vector<std::string>{"a.txt", "b.txt"}));
  EXPECT_EQ(list_dir(m("deep/x/y")), std::vector<std::string>{"z.txt"});
}

TEST_F(OverlayPosix, RenameFilesAndDirectoriesAcrossDirectories) {
  ASSERT_OK(::mkdir(m("x").c_str(), 0755));
  ASSERT_OK(::mkdir(m("y").c_str(), 0755));
  ASSERT_TRUE(write_all(m("x/f1"), "one"));
  const ino_t ino = stat_of(m("x/f1")).st_ino;
  EXPECT_OK(::rename(m("x/f1").c_str(), m("y/f1").c_str()));
  EXPECT_ERRNO(::access(m("x/f1").c_str(), F_OK), ENOENT);
  EXPECT_EQ(read_or_error(m("y/f1")), "one");
  EXPECT_EQ(stat_of(m("y/f1")).st_ino, ino) << "rename must keep the inode";
  // Over an existing file: the target is replaced.
  ASSERT_TRUE(write_all(m("y/f2"), "two"));
  EXPECT_OK(::rename(m("y/f1").c_str(), m("y/f2").c_str()));
  EXPECT_EQ(read_or_error(m("y/f2")), "one");
  EXPECT_EQ(list_dir(m("y")), std::vector<std::string>{"f2"});
  EXPECT_OK(::rename(m("y/f2").c_str(), m("y/f2").c_str()));  // onto itself: nothing happens
  EXPECT_EQ(read_or_error(m("y/f2")), "one");

  // Directories: to a new name in another directory, over an empty directory.
  ASSERT_OK(::mkdir(m("x/d").c_str(), 0755));
  ASSERT_TRUE(write_all(m("x/d/inner"), "inner"));
  EXPECT_OK(::rename(m("x/d").c_str(), m("y/d").c_str()));
  EXPECT_EQ(read_or_error(m("y/d/inner")), "inner");
  ASSERT_OK(::mkdir(m("x/empty").c_str(), 0755));
  EXPECT_OK(::rename(m("y/d").c_str(), m("x/empty").c_str()));
  EXPECT_EQ(read_or_error(m("x/empty/inner")), "inner");
  EXPECT_ERRNO(::access(m("y/d").c_str(), F_OK), ENOENT);

  // Errors.
  ASSERT_OK(::mkdir(m("full").c_str(), 0755));
  ASSERT_TRUE(write_all(m("full/f"), "f"));
  EXPECT_ERRNO(::rename(m("x/empty").c_str(), m("full").c_str()), ENOTEMPTY);
  EXPECT_ERRNO(::rename(m("x/empty").c_str(), m("dir").c_str()), ENOTEMPTY);  // lower children
  EXPECT_ERRNO(::rename(m("y/f2").c_str(), m("full").c_str()), EISDIR);
  EXPECT_ERRNO(::rename(m("full").c_str(), m("y/f2").c_str()), ENOTDIR);
  EXPECT_ERRNO(::rename(m("full").c_str(), m("full/sub").c_str()), EINVAL);
  EXPECT_ERRNO(::rename(m("missing").c_str(), m("y/g").c_str()), ENOENT);
  EXPECT_ERRNO(::rename(m("y/f2").c_str(), m("nodir/g").c_str()), ENOENT);
  EXPECT_EQ(read_or_error(m("full/f")), "f");
  EXPECT_EQ(read_or_error(m("y/f2")), "one");

  // Lower files: moved (copy-up), a new file over a lower one, a lower file over a lower one.
  EXPECT_OK(::rename(m("lower.txt").c_str(), m("x/moved.txt").c_str()));
  EXPECT_EQ(read_or_error(m("x/moved.txt")), "lower content\n");
  EXPECT_ERRNO(::access(m("lower.txt").c_str(), F_OK), ENOENT);
  ASSERT_TRUE(write_all(m("n.txt"), "new"));
  EXPECT_OK(::rename(m("n.txt").c_str(), m("dir/a.txt").c_str()));
  EXPECT_EQ(read_or_error(m("dir/a.txt")), "new");
  EXPECT_OK(::rename(m("dir/b.txt").c_str(), m("tool.sh").c_str()));
  EXPECT_EQ(read_or_error(m("tool.sh")), "b\n");
  EXPECT_EQ(stat_of(m("tool.sh")).st_mode & 07777, 0644u) << "the moved file keeps its own mode";
  EXPECT_OK(::rename(m("link").c_str(), m("y/link").c_str()));  // a lower symlink
  EXPECT_EQ(fs::read_symlink(m("y/link")).string(), "lower.txt");
  // A lower file over an empty new directory's name is refused, and nothing moves.
  EXPECT_ERRNO(::rename(m("ro.txt").c_str(), m("x/empty").c_str()), EISDIR);
  EXPECT_EQ(read_or_error(m("ro.txt")), "read only\n");

  // A directory over a lower directory that is empty in the mount (its children deleted):
  // allowed, and none of the old children come back.
  ASSERT_OK(::unlink(m("deep/x/w.txt").c_str()));
  ASSERT_OK(::unlink(m("deep/x/y/z.txt").c_str()));
  ASSERT_OK(::rmdir(m("deep/x/y").c_str()));
  ASSERT_OK(::mkdir(m("newd").c_str(), 0700));
  ASSERT_TRUE(write_all(m("newd/n"), "n"));
  EXPECT_OK(::rename(m("newd").c_str(), m("deep/x").c_str()));
  EXPECT_EQ(list_dir(m("deep/x")), std::vector<std::string>{"n"});
  EXPECT_EQ(stat_of(m("deep/x")).st_mode, S_IFDIR | 0700u);

  const auto expect_state = [&] {
    EXPECT_EQ(list_dir(m("")), (std::vector<std::string>{"big.bin", "deep", "dir", "emptydir",
                                                         "full", "ro.txt", "tool.sh", "x", "y"}));
    EXPECT_EQ(list_dir(m("deep/x")), std::vector<std::string>{"n"});
    EXPECT_EQ(read_or_error(m("deep/x/n")), "n");
    EXPECT_EQ(list_dir(m("x")), (std::vector<std::string>{"empty", "moved.txt"}));
    EXPECT_EQ(list_dir(m("y")), (std::vector<std::string>{"f2", "link"}));
    EXPECT_EQ(list_dir(m("dir")), (std::vector<std::string>{"a.txt", "sub"}));
    EXPECT_EQ(read_or_error(m("x/empty/inner")), "inner");
    EXPECT_EQ(read_or_error(m("x/moved.txt")), "lower content\n");
    EXPECT_EQ(read_or_error(m("dir/a.txt")), "new");
    EXPECT_EQ(read_or_error(m("tool.sh")), "b\n");
    EXPECT_EQ(read_or_error(m("y/f2")), "one");
  };
  expect_state();
  ASSERT_NO_FATAL_FAILURE(remount());
  expect_state();
}

TEST_F(OverlayPosix, RenameNoreplaceAndExchange) {
  ASSERT_TRUE(write_all(m("a"), "A"));
  ASSERT_TRUE(write_all(m("b"), "B"));
  EXPECT_ERRNO(renameat2(m("a"), m("b"), RENAME_NOREPLACE), EEXIST);
  EXPECT_ERRNO(renameat2(m("a"), m("lower.txt"), RENAME_NOREPLACE), EEXIST);
  EXPECT_ERRNO(renameat2(m("a"), m("dir"), RENAME_NOREPLACE), EEXIST);
  EXPECT_EQ(read_or_error(m("a")), "A");
  EXPECT_EQ(read_or_error(m("b")), "B");
  EXPECT_OK(renameat2(m("a"), m("c"), RENAME_NOREPLACE));
  EXPECT_EQ(read_or_error(m("c")), "A");
  EXPECT_ERRNO(::access(m("a").c_str(), F_OK), ENOENT);
  EXPECT_OK(renameat2(m("ro.txt"), m("dir/ro2.txt"), RENAME_NOREPLACE));  // a lower file
  EXPECT_EQ(read_or_error(m("dir/ro2.txt")), "read only\n");
  EXPECT_ERRNO(::access(m("ro.txt").c_str(), F_OK), ENOENT);

  // Exchange two new files, then a new file and a lower one across directories.
  EXPECT_OK(renameat2(m("b"), m("c"), RENAME_EXCHANGE));
  EXPECT_EQ(read_or_error(m("b")), "A");
  EXPECT_EQ(read_or_error(m("c")), "B");
  EXPECT_OK(renameat2(m("c"), m("dir/a.txt"), RENAME_EXCHANGE));
  EXPECT_EQ(read_or_error(m("c")), "a\n");
  EXPECT_EQ(read_or_error(m("dir/a.txt")), "B");
  // A file and a directory: each takes the other's place, children follow the directory.
  ASSERT_OK(::mkdir(m("p").c_str(), 0755));
  ASSERT_TRUE(write_all(m("p/child"), "child"));
  EXPECT_OK(renameat2(m("b"), m("p"), RENAME_EXCHANGE));
  EXPECT_TRUE(S_ISREG(stat_of(m("p")).st_mode));
  EXPECT_EQ(read_or_error(m("p")), "A");
  EXPECT_EQ(read_or_error(m("b/child")), "child");
  // Two lower files.
  EXPECT_OK(renameat2(m("lower.txt"), m("tool.sh"), RENAME_EXCHANGE));
  EXPECT_EQ(read_or_error(m("lower.txt")), "#!/bin/sh\necho hi\n");
  EXPECT_EQ(stat_of(m("lower.txt")).st_mode & 0777, 0755u);
  EXPECT_EQ(read_or_error(m("tool.sh")), "lower content\n");
  // Errors.
  EXPECT_ERRNO(renameat2(m("c"), m("missing"), RENAME_EXCHANGE), ENOENT);
  EXPECT_ERRNO(renameat2(m("missing"), m("c"), RENAME_EXCHANGE), ENOENT);
  EXPECT_ERRNO(renameat2(m("c"), m("b"), RENAME_EXCHANGE | RENAME_NOREPLACE), EINVAL);
  EXPECT_EQ(read_or_error(m("c")), "a\n");

  const auto expect_state = [&] {
    EXPECT_EQ(list_dir(m("")), (std::vector<std::string>{"b", "big.bin", "c", "deep", "dir",
                                                         "emptydir", "link", "lower.txt", "p",
                                                         "tool.sh"}));
    EXPECT_EQ(list_dir(m("dir")), (std::vector<std::string>{"a.txt", "b.txt", "ro2.txt", "sub"}));
    EXPECT_EQ(read_or_error(m("b/child")), "child");
    EXPECT_EQ(read_or_error(m("p")), "A");
    EXPECT_EQ(read_or_error(m("c")), "a\n");
    EXPECT_EQ(read_or_error(m("dir/a.txt")), "B");
    EXPECT_EQ(read_or_error(m("lower.txt")), "#!/bin/sh\necho hi\n");
    EXPECT_EQ(read_or_error(m("tool.sh")), "lower content\n");
    EXPECT_EQ(read_or_error(m("link")), "#!/bin/sh\necho hi\n");
  };
  expect_state();
  ASSERT_NO_FATAL_FAILURE(remount());
  expect_state();
}

// A directory of the lower layer may answer EXDEV (as overlayfs does), but nothing may be lost:
// it is either moved whole or left whole. A directory made in the mount always moves.
TEST_F(OverlayPosix, RenameOfALowerDirectoryMovesItWholeOrAnswersExdev) {
  ASSERT_TRUE(write_all(m("deep/x/y/z.txt"), "changed\n"));  // partly copied up
  ASSERT_TRUE(write_all(m("deep/x/added.txt"), "added\n"));
  ASSERT_OK(::unlink(m("deep/x/w.txt").c_str()));
  errno = 0;
  const int moved = ::rename(m("deep").c_str(), m("moved").c_str());
  const int error = errno;
  const std::map<std::string, std::string> expected = {
      {"x/y/z.txt", "changed\n"}, {"x/added.txt", "added\n"}};
  const auto expect_whole_at = [&](const std::string& at, const std::string& gone) {
    for (const auto& [path, content] : expected) {
      EXPECT_EQ(read_or_error(m(at + "/" + path)), content);
    }
    EXPECT_EQ(list_dir(m(at + "/x")), (std::vector<std::string>{"added.txt", "y"}));
    EXPECT_ERRNO(::access(m(gone).c_str(), F_OK), ENOENT);
  };
  if (moved == 0) {
    expect_whole_at("moved", "deep");
  } else {
    EXPECT_EQ(errno_name(error), errno_name(EXDEV)) << "only EXDEV may refuse the rename";
    std::cout << "[ note ] rename of a lower directory answers EXDEV\n";
    expect_whole_at("deep", "moved");
  }
  // mv falls back to copying on EXDEV: either way the user's move works.
  const CommandResult mv = sh(tree_->mountpoint(), "mv \"$PWD/dir\" \"$PWD/dir2\"");
  EXPECT_EQ(mv.exit_code, 0) << mv.err;
  EXPECT_EQ(read_or_error(m("dir2/sub/c.txt")), "c\n");
  EXPECT_EQ(list_dir(m("dir2")), (std::vector<std::string>{"a.txt", "b.txt", "sub"}));
  EXPECT_ERRNO(::access(m("dir").c_str(), F_OK), ENOENT);
  // A directory made in the mount, with a tree below it: must simply move.
  ASSERT_OK(::mkdir(m("fresh").c_str(), 0755));
  ASSERT_OK(::mkdir(m("fresh/in").c_str(), 0755));
  ASSERT_TRUE(write_all(m("fresh/in/f"), "f"));
  EXPECT_OK(::rename(m("fresh").c_str(), m("dir2/fresh").c_str()));
  EXPECT_EQ(read_or_error(m("dir2/fresh/in/f")), "f");

  ASSERT_NO_FATAL_FAILURE(remount());
  expect_whole_at(moved == 0 ? "moved" : "deep", moved == 0 ? "deep" : "moved");
  EXPECT_EQ(read_or_error(m("dir2/sub/c.txt")), "c\n");
  EXPECT_EQ(read_or_error(m("dir2/fresh/in/f")), "f");
  EXPECT_ERRNO(::access(m("dir").c_str(), F_OK), ENOENT);
}

TEST_F(OverlayPosix, HardLinksShareAnInodeAndCountTheirNames) {
  ASSERT_TRUE(write_all(m("f"), "data"));
  ASSERT_OK(::link(m("f").c_str(), m("g").c_str()));
  ASSERT_OK(::mkdir(m("sub").c_str(), 0755));
  ASSERT_OK(::link(m("f").c_str(), m("sub/h").c_str()));
  struct stat f = stat_of(m("f"));
  struct stat g = stat_of(m("g"));
  struct stat h = stat_of(m("sub/h"));
  EXPECT_EQ(f.st_nlink, 3u);
  EXPECT_EQ(g.st_nlink, 3u);
  EXPECT_EQ(h.st_nlink, 3u);
  EXPECT_EQ(f.st_ino, g.st_ino);
  EXPECT_EQ(f.st_ino, h.st_ino);
  // One file: a write through one name shows through the others, and so does chmod.
  ASSERT_TRUE(write_all(m("g"), "through g", 0644, O_WRONLY | O_TRUNC));
  EXPECT_EQ(read_or_error(m("f")), "through g");
  EXPECT_EQ(read_or_error(m("sub/h")), "through g");
  ASSERT_OK(::chmod(m("sub/h").c_str(), 0600));
  EXPECT_EQ(stat_of(m("f")).st_mode & 07777, 0600u);
  // Errors.
  EXPECT_ERRNO(::link(m("f").c_str(), m("g").c_str()), EEXIST);
  EXPECT_ERRNO(::link(m("f").c_str(), m("lower.txt").c_str()), EEXIST);
  EXPECT_ERRNO(::link(m("dir").c_str(), m("dirlink").c_str()), EPERM);
  EXPECT_ERRNO(::link(m("missing").c_str(), m("x").c_str()), ENOENT);
  // rename between two names of one inode does nothing.
  EXPECT_OK(::rename(m("f").c_str(), m("g").c_str()));
  EXPECT_EQ(stat_of(m("f")).st_nlink, 3u);
  EXPECT_EQ(stat_of(m("g")).st_nlink, 3u);
  // Unlink one: the others keep the data, with a lower count.
  EXPECT_OK(::unlink(m("f").c_str()));
  EXPECT_ERRNO(::access(m("f").c_str(), F_OK), ENOENT);
  EXPECT_EQ(stat_of(m("g")).st_nlink, 2u);
  EXPECT_EQ(stat_of(m("sub/h")).st_nlink, 2u);
  EXPECT_EQ(read_or_error(m("sub/h")), "through g");
  // A link to a lower file: copied up once, both names one inode; the source keeps one name.
  ASSERT_OK(::link(m("dir/a.txt").c_str(), m("a-link").c_str()));
  EXPECT_EQ(stat_of(m("dir/a.txt")).st_nlink, 2u);
  EXPECT_EQ(stat_of(m("a-link")).st_nlink, 2u);
  EXPECT_EQ(stat_of(m("dir/a.txt")).st_ino, stat_of(m("a-link")).st_ino);
  ASSERT_TRUE(write_all(m("a-link"), "linked\n", 0644, O_WRONLY | O_APPEND));
  EXPECT_EQ(read_or_error(m("dir/a.txt")), "a\nlinked\n");
  EXPECT_EQ(stat_of(src("dir/a.txt").string()).st_nlink, 1u);
  // Renaming a linked name keeps the link.
  EXPECT_OK(::rename(m("g").c_str(), m("dir/g2").c_str()));

  const auto expect_state = [&] {
    const struct stat g2 = stat_of(m("dir/g2"));
    const struct stat h2 = stat_of(m("sub/h"));
    EXPECT_EQ(g2.st_nlink, 2u);
    EXPECT_EQ(h2.st_nlink, 2u);
    EXPECT_EQ(g2.st_ino, h2.st_ino);
    EXPECT_EQ(read_or_error(m("dir/g2")), "through g");
    const struct stat a = stat_of(m("dir/a.txt"));
    const struct stat a_link = stat_of(m("a-link"));
    EXPECT_EQ(a.st_nlink, 2u);
    EXPECT_EQ(a.st_ino, a_link.st_ino);
    EXPECT_EQ(read_or_error(m("a-link")), "a\nlinked\n");
  };
  expect_state();
  ASSERT_NO_FATAL_FAILURE(remount());
  expect_state();
  // Hard links are stored as themselves in the upper layer.
  struct stat u1 {};
  struct stat u2 {};
  ASSERT_EQ(::lstat(upper("dir/g2").c_str(), &u1), 0);
  ASSERT_EQ(::lstat(upper("sub/h").c_str(), &u2), 0);
  EXPECT_EQ(u1.st_ino, u2.st_ino);
}

TEST_F(OverlayPosix, SymlinksKeepTheirTargets) {
  ASSERT_OK(::symlink("lower.txt", m("s1").c_str()));
  struct stat st = stat_of(m("s1"));
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(st.st_size, 9);
  EXPECT_EQ(st.st_uid, ::getuid());
  EXPECT_EQ(fs::read_symlink(m("s1")).string(), "lower.txt");
  EXPECT_EQ(read_or_error(m("s1")), "lower content\n");
  struct stat followed {};
  ASSERT_EQ(::stat(m("s1").c_str(), &followed), 0);
  EXPECT_TRUE(S_ISREG(followed.st_mode));
  EXPECT_EQ(followed.st_size, 14);
  // Dangling, absolute, long, and byte-exact targets.
  ASSERT_OK(::symlink("no/such/thing", m("dangling").c_str()));
  EXPECT_ERRNO(::open(m("dangling").c_str(), O_RDONLY), ENOENT);
  const std::string absolute = m("dir/a.txt");
  ASSERT_OK(::symlink(absolute.c_str(), m("abs").c_str()));
  EXPECT_EQ(read_or_error(m("abs")), "a\n");
  const std::string long_target = std::string(2000, 'x') + "/" + std::string(1000, 'y');
  ASSERT_OK(::symlink(long_target.c_str(), m("long").c_str()));
  const std::string odd_target = "a b\tc\\d\n\xff";
  ASSERT_OK(::symlink(odd_target.c_str(), m("dir/odd").c_str()));
  // Errors.
  EXPECT_ERRNO(::symlink("t", m("s1").c_str()), EEXIST);
  EXPECT_ERRNO(::symlink("t", m("lower.txt").c_str()), EEXIST);
  EXPECT_ERRNO(::symlink("t", m("nodir/s").c_str()), ENOENT);
  char buffer[16];
  EXPECT_ERRNO(::readlink(m("lower.txt").c_str(), buffer, sizeof buffer), EINVAL);
  // A write through a symlink writes its target (here a lower file: copied up).
  ASSERT_TRUE(write_all(m("link"), "via link\n", 0644, O_WRONLY | O_TRUNC));
  EXPECT_EQ(read_or_error(m("lower.txt")), "via link\n");
  EXPECT_TRUE(S_ISLNK(stat_of(m("link")).st_mode));
  // Unlinking a symlink removes the link, not its target.
  EXPECT_OK(::unlink(m("s1").c_str()));
  EXPECT_EQ(read_or_error(m("lower.txt")), "via link\n");

  const auto expect_state = [&] {
    EXPECT_ERRNO(::lstat(m("s1").c_str(), &st), ENOENT);
    EXPECT_EQ(fs::read_symlink(m("dangling")).string(), "no/such/thing");
    EXPECT_EQ(fs::read_symlink(m("abs")).string(), absolute);
    EXPECT_EQ(fs::read_symlink(m("long")).string(), long_target);
    EXPECT_EQ(stat_of(m("long")).st_size, static_cast<off_t>(long_target.size()));
    EXPECT_EQ(fs::read_symlink(m("dir/odd")).string(), odd_target);
    EXPECT_EQ(fs::read_symlink(m("link")).string(), "lower.txt");
  };
  expect_state();
  ASSERT_NO_FATAL_FAILURE(remount());
  expect_state();
  EXPECT_EQ(fs::read_symlink(upper("long")).string(), long_target);
}

TEST_F(OverlayPosix, ChmodKeepsModesAsGiven) {
  ASSERT_TRUE(write_all(m("f"), "secret"));
  ASSERT_OK(::mkdir(m("d").c_str(), 0755));
  const std::vector<unsigned> file_modes = {0000, 0444, 0600, 0640, 0755, 0711, 0777, 04755, 02755,
                                            01644, 06750};
  for (const unsigned mode : file_modes) {
    ASSERT_OK(::chmod(m("f").c_str(), mode));
    EXPECT_EQ(stat_of(m("f")).st_mode, S_IFREG | mode) << std::oct << mode;
  }
  for (const unsigned mode : {0700u, 0500u, 01777u, 02775u, 0000u, 0755u}) {
    ASSERT_OK(::chmod(m("d").c_str(), mode));
    EXPECT_EQ(stat_of(m("d")).st_mode, S_IFDIR | mode) << std::oct << mode;
  }
  UniqueFd fd(::open(m("f").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd) << errno_name(errno);
  EXPECT_OK(::fchmod(fd.get(), 0640));
  EXPECT_EQ(stat_of(m("f")).st_mode & 07777, 0640u);
  fd.reset();

  // 0000 and 0444: the kernel checks them (default_permissions); root passes, others do not.
  ASSERT_TRUE(write_all(m("none"), "nobody reads me"));
  ASSERT_OK(::chmod(m("none").c_str(), 0000));
  ASSERT_TRUE(write_all(m("ro"), "read only"));
  ASSERT_OK(::chmod(m("ro").c_str(), 0444));
  if (running_as_root()) {
    EXPECT_EQ(read_or_error(m("none")), "nobody reads me");
    EXPECT_TRUE(write_all(m("ro"), "root writes", 0644, O_WRONLY | O_TRUNC)) << errno_name(errno);
    EXPECT_EQ(read_or_error(m("ro")), "root writes");
  } else {
    EXPECT_ERRNO(::open(m("none").c_str(), O_RDONLY), EACCES);
    EXPECT_ERRNO(::open(m("ro").c_str(), O_WRONLY), EACCES);
    EXPECT_EQ(read_or_error(m("ro")), "read only");
  }
  EXPECT_EQ(stat_of(m("none")).st_mode & 07777, 0000u);
  // The worker can still use what it stores (owner rw on disk), whatever the mount shows.
  EXPECT_EQ(stat_of(upper("none")).st_mode & 0600, 0600u);

  // A lower file: the mount shows the new mode, the source keeps its own.
  ASSERT_OK(::chmod(m("ro.txt").c_str(), 0600));
  EXPECT_EQ(stat_of(m("ro.txt")).st_mode & 07777, 0600u);
  EXPECT_TRUE(write_all(m("ro.txt"), "now writable\n", 0644, O_WRONLY | O_TRUNC))
      << errno_name(errno);
  ASSERT_OK(::chmod(m("tool.sh").c_str(), 0700));
  ASSERT_OK(::chmod(m("dir").c_str(), 0711));  // a lower directory
  EXPECT_EQ(stat_of(src("ro.txt")).st_mode & 07777, 0444u);
  EXPECT_EQ(stat_of(src("dir")).st_mode & 07777, 0755u);
  // A symlink's target changes, not the link.
  ASSERT_OK(::chmod(m("link").c_str(), 0640));
  EXPECT_EQ(stat_of(m("lower.txt")).st_mode & 07777, 0640u);

  const auto expect_state = [&] {
    EXPECT_EQ(stat_of(m("f")).st_mode, S_IFREG | 0640u);
    EXPECT_EQ(stat_of(m("d")).st_mode, S_IFDIR | 0755u);
    EXPECT_EQ(stat_of(m("none")).st_mode, S_IFREG | 0000u);
    EXPECT_EQ(stat_of(m("ro")).st_mode, S_IFREG | 0444u);
    EXPECT_EQ(stat_of(m("ro.txt")).st_mode, S_IFREG | 0600u);
    EXPECT_EQ(stat_of(m("tool.sh")).st_mode, S_IFREG | 0700u);
    EXPECT_EQ(stat_of(m("dir")).st_mode, S_IFDIR | 0711u);
    EXPECT_EQ(stat_of(m("lower.txt")).st_mode, S_IFREG | 0640u);
    EXPECT_EQ(read_or_error(m("ro.txt")), "now writable\n");
    EXPECT_EQ(read_or_error(m("dir/a.txt")), "a\n");
  };
  expect_state();
  ASSERT_NO_FATAL_FAILURE(remount());
  expect_state();
  // Set-id bits survive a remount too (they are kept aside, never on disk).
  ASSERT_OK(::chmod(m("f").c_str(), 04755));
  ASSERT_OK(::chmod(m("d").c_str(), 02770));
  ASSERT_NO_FATAL_FAILURE(remount());
  EXPECT_EQ(stat_of(m("f")).st_mode, S_IFREG | 04755u);
  EXPECT_EQ(stat_of(m("d")).st_mode, S_IFDIR | 02770u);
  EXPECT_EQ(stat_of(upper("f")).st_mode & (S_ISUID | S_ISGID), 0u) << "set-id bits on disk";
}

TEST_F(OverlayPosix, TruncateAndFtruncateGrowAndShrink) {
  ASSERT_TRUE(write_all(m("f"), "0123456789"));
  ASSERT_OK(::truncate(m("f").c_str(), 4));
  EXPECT_EQ(stat_of(m("f")).st_size, 4);
  EXPECT_EQ(read_or_error(m("f")), "0123");
  ASSERT_OK(::truncate(m("f").c_str(), (1 << 20) + 3));
  EXPECT_EQ(stat_of(m("f")).st_size, (1 << 20) + 3);
  EXPECT_TRUE(read_or_error(m("f")) == "0123" + std::string((1 << 20) - 1, '\0'));
  UniqueFd fd(::open(m("f").c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(fd) << errno_name(errno);
  ASSERT_OK(::ftruncate(fd.get(), 2));
  struct stat st {};
  ASSERT_EQ(::fstat(fd.get(), &st), 0);
  EXPECT_EQ(st.st_size, 2);
  ASSERT_EQ(::pwrite(fd.get(), "Z", 1, 10), 1);
  ASSERT_OK(::ftruncate(fd.get(), 12));
  char buffer[32];
  EXPECT_EQ(::pread(fd.get(), buffer, sizeof buffer, 0), 12);
  EXPECT_EQ(std::string(buffer, 12), std::string("01") + std::string(8, '\0') + "Z" + '\0');
  fd.reset();
  // Errors.
  UniqueFd read_only(::open(m("f").c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_ERRNO(::ftruncate(read_only.get(), 0), EINVAL);
  EXPECT_ERRNO(::truncate(m("dir").c_str(), 0), EISDIR);
  EXPECT_ERRNO(::truncate(m("f").c_str(), -1), EINVAL);
  EXPECT_ERRNO(::truncate(m("missing").c_str(), 0), ENOENT);
  // Lower files: shrunk and grown, the source untouched.
  ASSERT_OK(::truncate(m("big.bin").c_str(), 1000));
  EXPECT_EQ(stat_of(m("big.bin")).st_size, 1000);
  EXPECT_TRUE(read_or_error(m("big.bin")) == kBig.substr(0, 1000));
  ASSERT_OK(::truncate(m("dir/b.txt").c_str(), 100'000));
  EXPECT_TRUE(read_or_error(m("dir/b.txt")) == "b\n" + std::string(100'000 - 2, '\0'));
  EXPECT_EQ(stat_of(src("big.bin")).st_size, 3 << 20);

  ASSERT_NO_FATAL_FAILURE(remount());
  EXPECT_EQ(stat_of(m("f")).st_size, 12);
  EXPECT_EQ(stat_of(m("big.bin")).st_size, 1000);
  EXPECT_EQ(stat_of(m("dir/b.txt")).st_size, 100'000);
  EXPECT_TRUE(read_or_error(m("big.bin")) == kBig.substr(0, 1000));
}

TEST_F(OverlayPosix, UtimensatKeepsTimesToTheNanosecond) {
  ASSERT_TRUE(write_all(m("f"), "f"));
  ASSERT_OK(::mkdir(m("d").c_str(), 0755));
  ASSERT_OK(::symlink("f", m("s").c_str()));
  const timespec times[2] = {{1'000'000'000, 123'456'789}, {1'200'000'000, 987'654'321}};
  ASSERT_OK(::utimensat(AT_FDCWD, m("f").c_str(), times, 0));
  ASSERT_OK(::utimensat(AT_FDCWD, m("d").c_str(), times, 0));
  ASSERT_OK(::utimensat(AT_FDCWD, m("dir/a.txt").c_str(), times, 0));  // lower file
  ASSERT_OK(::utimensat(AT_FDCWD, m("deep").c_str(), times, 0));       // lower directory
  const timespec link_times[2] = {{1'100'000'000, 1}, {1'300'000'000, 999'999'999}};
  ASSERT_OK(::utimensat(AT_FDCWD, m("s").c_str(), link_times, AT_SYMLINK_NOFOLLOW));
  ASSERT_OK(::utimensat(AT_FDCWD, m("link").c_str(), link_times, AT_SYMLINK_NOFOLLOW));  // lower
  // UTIME_OMIT keeps one, UTIME_NOW sets the other; futimens on an fd.
  ASSERT_TRUE(write_all(m("g"), "g"));
  const timespec set_mtime[2] = {{0, UTIME_OMIT}, {1'234'567'890, 5}};
  ASSERT_OK(::utimensat(AT_FDCWD, m("g").c_str(), set_mtime, 0));
  const std::int64_t g_atime = ns_of(stat_of(m("g")).st_atim);
  const time_t before = ::time(nullptr);
  UniqueFd fd(::open(m("h").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd);
  const timespec now_and_fixed[2] = {{0, UTIME_NOW}, {1'111'111'111, 222'222'222}};
  ASSERT_OK(::futimens(fd.get(), now_and_fixed));
  fd.reset();

  const auto expect_state = [&] {
    for (const char* path : {"f", "d", "dir/a.txt", "deep"}) {
      const struct stat st = stat_of(m(path));
      EXPECT_EQ(ns_of(st.st_atim), 1'000'000'000'123'456'789) << path;
      EXPECT_EQ(ns_of(st.st_mtim), 1'200'000'000'987'654'321) << path;
    }
    for (const char* path : {"s", "link"}) {
      const struct stat s = stat_of(m(path));
      EXPECT_EQ(ns_of(s.st_mtim), 1'300'000'000'999'999'999) << path;
      EXPECT_EQ(ns_of(s.st_atim), 1'100'000'000'000'000'001) << path;
    }
    // (No readlink here: it would move atime, under relatime, as on any filesystem.)
    EXPECT_EQ(stat_of(m("lower.txt")).st_mtim.tv_sec, kLowerTime) << "the link's target moved";
    EXPECT_EQ(ns_of(stat_of(m("f")).st_mtim), 1'200'000'000'987'654'321) << "the link's target";
    EXPECT_EQ(ns_of(stat_of(m("g")).st_mtim), 1'234'567'890'000'000'005);
    EXPECT_EQ(ns_of(stat_of(m("g")).st_atim), g_atime);
    const struct stat h = stat_of(m("h"));
    EXPECT_EQ(ns_of(h.st_mtim), 1'111'111'111'222'222'222);
    EXPECT_GE(h.st_atim.tv_sec, before - 1);
    EXPECT_LE(h.st_atim.tv_sec, ::time(nullptr) + 1);
  };
  expect_state();
  EXPECT_EQ(stat_of(src("dir/a.txt")).st_mtim.tv_sec, kLowerTime);
  ASSERT_NO_FATAL_FAILURE(remount());
  expect_state();
  EXPECT_EQ(fs::read_symlink(m("link")).string(), "lower.txt");
  // A write moves mtime (and ctime) to now.
  const time_t write_time = ::time(nullptr);
  ASSERT_TRUE(write_all(m("f"), "more", 0644, O_WRONLY | O_APPEND));
  const struct stat after = stat_of(m("f"));
  EXPECT_GE(after.st_mtim.tv_sec, write_time - 1);
  EXPECT_GE(after.st_ctim.tv_sec, write_time - 1);
  // Errors.
  EXPECT_ERRNO(::utimensat(AT_FDCWD, m("missing").c_str(), times, 0), ENOENT);
  const timespec bad[2] = {{0, 1'000'000'000}, {0, 0}};
  EXPECT_ERRNO(::utimensat(AT_FDCWD, m("f").c_str(), bad, 0), EINVAL);
}

// fallocate answers as the overlay's own filesystem does, mode by mode.
TEST_F(OverlayPosix, FallocateAllocatesAndPunchesLikeTheDisk) {
  const fs::path native = tree_->root() / "native-probe";
  ASSERT_TRUE(write_all(native.string(), pattern(65536, 1)));
  ASSERT_TRUE(write_all(m("f"), pattern(65536, 1)));
  UniqueFd native_fd(::open(native.c_str(), O_RDWR | O_CLOEXEC));
  UniqueFd fd(::open(m("f").c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(native_fd && fd);

  ASSERT_OK(::fallocate(fd.get(), 0, 0, 1 << 20));
  struct stat st {};
  ASSERT_EQ(::fstat(fd.get(), &st), 0);
  EXPECT_EQ(st.st_size, 1 << 20);
  EXPECT_GE(st.st_blocks * 512, 1 << 20);
  char tail[16];
  ASSERT_EQ(::pread(fd.get(), tail, sizeof tail, (1 << 20) - 16), 16);
  EXPECT_EQ(std::string(tail, 16), std::string(16, '\0'));
  ASSERT_OK(::fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20));
  ASSERT_EQ(::fstat(fd.get(), &st), 0);
  EXPECT_EQ(st.st_size, 1 << 20);

  for (const int mode : {FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE}) {
    errno = 0;
    const int native_result = ::fallocate(native_fd.get(), mode, 4096, 8192);
    const int native_errno = errno;
    errno = 0;
    const int result = ::fallocate(fd.get(), mode, 4096, 8192);
    const int error = errno;
    EXPECT_EQ(result, native_result) << "mode " << mode << ": " << errno_name(error);
    if (result != 0) {
      EXPECT_EQ(errno_name(error), errno_name(native_errno)) << "mode " << mode;
      continue;
    }
    char hole[8192];
    ASSERT_EQ(::pread(fd.get(), hole, sizeof hole, 4096), 8192);
    EXPECT_EQ(std::string(hole, sizeof hole), std::string(8192, '\0')) << "mode " << mode;
    char around[2];
    ASSERT_EQ(::pread(fd.get(), around, 1, 4095), 1);
    ASSERT_EQ(::pread(fd.get(), around + 1, 1, 12288), 1);
    const std::string original = pattern(65536, 1);
    EXPECT_EQ(around[0], original[4095]);
    EXPECT_EQ(around[1], original[12288]);
  }
  ASSERT_EQ(::fstat(fd.get(), &st), 0);
  EXPECT_EQ(st.st_size, 1 << 20);
  fd.reset();
  // Errors, as the VFS gives them.
  UniqueFd read_only(::open(m("f").c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_ERRNO(::fallocate(read_only.get(), 0, 0, 10), EBADF);
  EXPECT_ERRNO(::fallocate(read_only.get(), 0, 0, 0), EINVAL);
  // A lower file: copied up, extended.
  UniqueFd lower(::open(m("dir/b.txt").c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(lower);
  ASSERT_OK(::fallocate(lower.get(), 0, 0, 10'000));
  lower.reset();
  EXPECT_EQ(stat_of(m("dir/b.txt")).st_size, 10'000);
  EXPECT_TRUE(read_or_error(m("dir/b.txt")) == "b\n" + std::string(9998, '\0'));
  ASSERT_NO_FATAL_FAILURE(remount());
  EXPECT_EQ(stat_of(m("f")).st_size, 1 << 20);
  EXPECT_EQ(stat_of(m("dir/b.txt")).st_size, 10'000);
}

TEST_F(OverlayPosix, SharedWritableMmapReachesTheDisk) {
  constexpr std::size_t kSize = 256 * 1024;
  const std::string data = pattern(kSize, 11);
  {
    UniqueFd fd(::open(m("mapped").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd) << errno_name(errno);
    ASSERT_OK(::ftruncate(fd.get(), kSize));
    void* map = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    ASSERT_NE(map, MAP_FAILED) << errno_name(errno);
    std::memcpy(map, data.data(), kSize);
    EXPECT_OK(::msync(map, kSize, MS_SYNC));
    // Coherent with read(2) and write(2) on the same file while mapped.
    char check[8];
    ASSERT_EQ(::pread(fd.get(), check, 8, 4096), 8);
    EXPECT_EQ(std::string(check, 8), data.substr(4096, 8));
    ASSERT_EQ(::pwrite(fd.get(), "WRITTEN!", 8, 8192), 8);
    EXPECT_EQ(std::string(static_cast<char*>(map) + 8192, 8), "WRITTEN!");
    EXPECT_OK(::munmap(map, kSize));
  }
  std::string expected = data;
  expected.replace(8192, 8, "WRITTEN!");
  EXPECT_TRUE(read_or_error(m("mapped")) == expected) << "read after munmap differs";
  // A lower file written through a mapping: copied up, the source untouched.
  {
    UniqueFd fd(::open(m("big.bin").c_str(), O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(fd) << errno_name(errno);
    void* map = ::mmap(nullptr, 65536, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 1 << 20);
    ASSERT_NE(map, MAP_FAILED) << errno_name(errno);
    EXPECT_EQ(std::memcmp(map, kBig.data() + (1 << 20), 65536), 0)
        << "the mapping shows other data";
    std::memcpy(static_cast<char*>(map) + 100, "MAPPED", 6);
    EXPECT_OK(::msync(map, 65536, MS_SYNC));
    EXPECT_OK(::munmap(map, 65536));
  }
  std::string big_expected = kBig;
  big_expected.replace((1 << 20) + 100, 6, "MAPPED");
  EXPECT_TRUE(read_or_error(m("big.bin")) == big_expected);
  EXPECT_TRUE(slurp(upper("big.bin")) == big_expected) << "msync did not reach the upper file";
  ASSERT_NO_FATAL_FAILURE(remount());
  EXPECT_TRUE(read_or_error(m("mapped")) == expected) << "mapped data lost by a remount";
  EXPECT_TRUE(read_or_error(m("big.bin")) == big_expected) << "mapped data lost by a remount";
}

TEST_F(OverlayPosix, FsyncAndFdatasyncReachTheUpperLayer) {
  UniqueFd fd(::open(m("durable").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd);
  ASSERT_EQ(::write(fd.get(), "durable", 7), 7);
  EXPECT_OK(::fsync(fd.get()));
  EXPECT_EQ(slurp(upper("durable")), "durable") << "fsync returned before the upper file had it";
  ASSERT_EQ(::write(fd.get(), "+more", 5), 5);
  EXPECT_OK(::fdatasync(fd.get()));
  EXPECT_EQ(slurp(upper("durable")), "durable+more");
  EXPECT_OK(::syncfs(fd.get()));
  fd.reset();
  // A lower file, fsynced through a new fd: the copy-up is there.
  UniqueFd lower(::open(m("dir/a.txt").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  ASSERT_TRUE(lower);
  ASSERT_EQ(::write(lower.get(), "synced\n", 7), 7);
  EXPECT_OK(::fsync(lower.get()));
  EXPECT_EQ(slurp(upper("dir/a.txt")), "a\nsynced\n");
  EXPECT_EQ(xattr_of(upper("dir/a.txt"), "user.heddle.origin"), "lower");
  lower.reset();
  // Directories: fsync on a directory fd, after a rename in it.
  ASSERT_OK(::rename(m("durable").c_str(), m("dir/renamed").c_str()));
  UniqueFd dir(::open(m("dir").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(dir);
  EXPECT_OK(::fsync(dir.get()));
  EXPECT_OK(::fdatasync(dir.get()));
  EXPECT_EQ(slurp(upper("dir/renamed")), "durable+more");
  EXPECT_FALSE(fs::exists(upper("durable")));
}

TEST_F(OverlayPosix, FlockAndPosixLocksConflictAsTheKernelProvides) {
  ASSERT_TRUE(write_all(m("locked"), std::string(1000, 'l')));
  UniqueFd fd1(::open(m("locked").c_str(), O_RDWR | O_CLOEXEC));
  UniqueFd fd2(::open(m("locked").c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(fd1 && fd2);
  // flock: per open file description.
  ASSERT_OK(::flock(fd1.get(), LOCK_EX));
  EXPECT_ERRNO(::flock(fd2.get(), LOCK_EX | LOCK_NB), EWOULDBLOCK);
  EXPECT_ERRNO(::flock(fd2.get(), LOCK_SH | LOCK_NB), EWOULDBLOCK);
  ASSERT_OK(::flock(fd1.get(), LOCK_UN));
  EXPECT_OK(::flock(fd2.get(), LOCK_SH | LOCK_NB));
  EXPECT_OK(::flock(fd1.get(), LOCK_SH | LOCK_NB));
  EXPECT_ERRNO(::flock(fd1.get(), LOCK_EX | LOCK_NB), EWOULDBLOCK);
  ASSERT_OK(::flock(fd1.get(), LOCK_UN));
  ASSERT_OK(::flock(fd2.get(), LOCK_UN));
  // Open file description locks conflict between two fds of one process.
  struct flock ofd {};
  ofd.l_type = F_WRLCK;
  ofd.l_whence = SEEK_SET;
  ofd.l_start = 0;
  ofd.l_len = 100;
  ASSERT_OK(::fcntl(fd1.get(), F_OFD_SETLK, &ofd));
  EXPECT_ERRNO(::fcntl(fd2.get(), F_OFD_SETLK, &ofd), EAGAIN);
  ofd.l_type = F_UNLCK;
  ASSERT_OK(::fcntl(fd1.get(), F_OFD_SETLK, &ofd));

  // POSIX locks between two processes.
  int ready[2];
  int release[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(release, O_CLOEXEC), 0);
  const std::string path = m("locked");
  // A raw fork, not a helper program: the child is the second lock owner under test.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ready[0]);
    ::close(release[1]);  // else the parent's close could never end the read below
    const int fd = ::open(path.c_str(), O_RDWR);
    struct flock lock {};
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    lock.l_start = 0;
    lock.l_len = 100;
    const char status = (fd >= 0 && ::fcntl(fd, F_SETLK, &lock) == 0) ? 'y' : 'n';
    (void)!::write(ready[1], &status, 1);
    char byte;
    (void)!::read(release[0], &byte, 1);
    _exit(0);
  }
  ::close(ready[1]);
  ::close(release[0]);
  char status = 0;
  ASSERT_EQ(::read(ready[0], &status, 1), 1);
  EXPECT_EQ(status, 'y') << "the child could not take its lock";
  struct flock want {};
  want.l_type = F_WRLCK;
  want.l_whence = SEEK_SET;
  want.l_start = 50;
  want.l_len = 10;
  EXPECT_ERRNO(::fcntl(fd1.get(), F_SETLK, &want), EAGAIN);
  want.l_type = F_RDLCK;
  EXPECT_ERRNO(::fcntl(fd1.get(), F_SETLK, &want), EAGAIN);
  struct flock probe = want;
  probe.l_type = F_WRLCK;
  ASSERT_OK(::fcntl(fd1.get(), F_GETLK, &probe));
  EXPECT_EQ(probe.l_type, F_WRLCK);
  EXPECT_EQ(probe.l_pid, child);
  EXPECT_EQ(probe.l_start, 0);
  EXPECT_EQ(probe.l_len, 100);
  struct flock elsewhere = want;
  elsewhere.l_type = F_WRLCK;
  elsewhere.l_start = 200;
  EXPECT_OK(::fcntl(fd1.get(), F_SETLK, &elsewhere));
  ::close(release[1]);  // the child exits, and its lock goes with it
  int wait_status = 0;
  ASSERT_EQ(::waitpid(child, &wait_status, 0), child);
  EXPECT_TRUE(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0) << wait_status;
  ::close(ready[0]);
  want.l_type = F_WRLCK;
  EXPECT_OK(::fcntl(fd1.get(), F_SETLK, &want));
  // F_SETLKW on a free range returns at once.
  want.l_start = 500;
  EXPECT_OK(::fcntl(fd1.get(), F_SETLKW, &want));
}

TEST_F(OverlayPosix, StatfsComesFromTheOverlaysFilesystem) {
  struct statvfs mounted {};
  struct statvfs disk {};
  ASSERT_OK(::statvfs(m("").c_str(), &mounted));
  ASSERT_OK(::statvfs(ov().c_str(), &disk));
  EXPECT_EQ(mounted.f_bsize, disk.f_bsize);
  EXPECT_EQ(mounted.f_frsize, disk.f_frsize);
  EXPECT_EQ(mounted.f_blocks, disk.f_blocks);
  EXPECT_EQ(mounted.f_files, disk.f_files);
  // Free space moves with other writers on this disk: close, not equal.
  const auto free_bytes = [](const struct statvfs& st) {
    return static_cast<double>(st.f_bavail) * static_cast<double>(st.f_frsize);
  };
  EXPECT_NEAR(free_bytes(mounted), free_bytes(disk), 256.0 * 1024 * 1024);
  struct statvfs lower_dir {};
  ASSERT_OK(::statvfs(m("dir/sub").c_str(), &lower_dir));
  EXPECT_EQ(lower_dir.f_blocks, disk.f_blocks);
  EXPECT_EQ(mounted.f_flag & ST_RDONLY, 0u) << "a writable mount reports itself read-only";
}

TEST_F(OverlayPosix, XattrsAreUnsupportedAndSpecialFilesRefused) {
  ASSERT_TRUE(write_all(m("f"), "f"));
  EXPECT_ERRNO(::setxattr(m("f").c_str(), "user.test", "v", 1, 0), EOPNOTSUPP);
  EXPECT_ERRNO(::setxattr(m("dir").c_str(), "user.test", "v", 1, 0), EOPNOTSUPP);
  EXPECT_ERRNO(::setxattr(m("lower.txt").c_str(), "user.test", "v", 1, 0), EOPNOTSUPP);
  // The overlay's own markers never show through the mount.
  ASSERT_TRUE(write_all(m("dir/a.txt"), "changed", 0644, O_WRONLY | O_TRUNC));
  ASSERT_OK(::chmod(m("dir/a.txt").c_str(), 04600));
  EXPECT_EQ(xattr_of(upper("dir/a.txt"), "user.heddle.origin"), "lower");
  for (const char* name : {"user.heddle.origin", "user.heddle.attr"}) {
    char value[64];
    errno = 0;
    EXPECT_EQ(::getxattr(m("dir/a.txt").c_str(), name, value, sizeof value), -1) << name;
    EXPECT_TRUE(errno == ENODATA || errno == EOPNOTSUPP) << name << ": " << errno_name(errno);
  }
  char names[1024];
  errno = 0;
  const ssize_t listed = ::listxattr(m("dir/a.txt").c_str(), names, sizeof names);
  if (listed < 0) {
    EXPECT_EQ(errno_name(errno), errno_name(EOPNOTSUPP));
  } else {
    EXPECT_EQ(std::string(names, static_cast<std::size_t>(listed)).find("heddle"),
              std::string::npos);
  }
  // FIFOs and sockets are refused (EPERM, documented), and leave nothing behind.
  EXPECT_ERRNO(::mkfifo(m("fifo").c_str(), 0644), EPERM);
  EXPECT_ERRNO(::mknod(m("sock").c_str(), S_IFSOCK | 0644, 0), EPERM);
  EXPECT_ERRNO(::access(m("fifo").c_str(), F_OK), ENOENT);
  EXPECT_ERRNO(::access(m("sock").c_str(), F_OK), ENOENT);
  EXPECT_FALSE(fs::exists(upper("fifo")));
  // mknod of a regular file is a create.
  ASSERT_OK(::mknod(m("plain").c_str(), S_IFREG | 0640, 0));
  EXPECT_EQ(stat_of(m("plain")).st_mode, S_IFREG | 0640u);
  EXPECT_EQ(stat_of(m("plain")).st_size, 0);
}

// A copy-up changes where the bytes live, not which file it is: a reader that opened it before
// sees the writes made after, and its inode number stays (st_dev and st_ino name a file for as
// long as it exists; tar, find, rsync and git rely on it), as on a native filesystem.
TEST_F(OverlayPosix, ACopiedUpFileStaysTheSameFile) {
  UniqueFd early_reader(::open(m("lower.txt").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(early_reader);
  char early[14];
  ASSERT_EQ(::pread(early_reader.get(), early, sizeof early, 0), 14);
  const ino_t before = fresh_ino(m("lower.txt"));
  const ino_t dir_before = fresh_ino(m("deep/x/y"));
  ASSERT_TRUE(write_all(m("lower.txt"), "LOWER", 0644, O_WRONLY));
  ASSERT_TRUE(write_all(m("deep/x/y/z.txt"), "z", 0644, O_WRONLY | O_APPEND));  // copies up y
  ASSERT_EQ(::pread(early_reader.get(), early, sizeof early, 0), 14);
  EXPECT_EQ(std::string(early, sizeof early), "LOWER content\n")
      << "an fd opened before the copy-up still reads the lower file";
  EXPECT_EQ(fresh_ino(m("lower.txt")), before)
      << "the file's inode number changed with its copy-up";
  EXPECT_EQ(fresh_ino(m("deep/x/y")), dir_before)
      << "the directory's inode number changed with its copy-up";
  EXPECT_EQ(stat_of(m("lower.txt")).st_ino, before);
}

TEST_F(OverlayPosix, CopyUpLeavesTheSourceAndFillsTheUpperLayer) {
  const struct stat lower_before = stat_of(m("lower.txt"));
  EXPECT_EQ(lower_before.st_uid, ::getuid()) << "every node shows the mount's owner";
  EXPECT_EQ(lower_before.st_gid, ::getgid());
  EXPECT_EQ(ns_of(lower_before.st_mtim), ns_of(stat_of(src("lower.txt")).st_mtim));
  UniqueFd fd(::open(m("lower.txt").c_str(), O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(fd) << errno_name(errno);
  ASSERT_EQ(::pwrite(fd.get(), "CONTENT", 7, 6), 7);
  fd.reset();
  EXPECT_EQ(read_or_error(m("lower.txt")), "lower CONTENT\n");
  EXPECT_EQ(slurp(upper("lower.txt")), "lower CONTENT\n");
  EXPECT_EQ(xattr_of(upper("lower.txt"), "user.heddle.origin"), "lower");
  EXPECT_EQ(read_or_error(src("lower.txt")), "lower content\n");
  // A deep lower file: its parents are copied up as directories, with their modes.
  ASSERT_TRUE(write_all(m("deep/x/y/z.txt"), "new z\n", 0644, O_WRONLY | O_TRUNC));
  EXPECT_TRUE(fs::is_directory(upper("deep/x/y")));
  EXPECT_EQ(slurp(upper("deep/x/y/z.txt")), "new z\n");
  EXPECT_EQ(list_dir(m("deep/x")), (std::vector<std::string>{"w.txt", "y"}));
  EXPECT_EQ(read_or_error(m("deep/x/w.txt")), "www\n");
  // A metadata change alone copies up too, and keeps the content.
  ASSERT_OK(::chmod(m("tool.sh").c_str(), 0750));
  EXPECT_EQ(slurp(upper("tool.sh")), "#!/bin/sh\necho hi\n");
  EXPECT_EQ(read_or_error(m("tool.sh")), "#!/bin/sh\necho hi\n");
  // A file made in the mount carries no origin marker.
  ASSERT_TRUE(write_all(m("dir/new.txt"), "new"));
  EXPECT_EQ(xattr_of(upper("dir/new.txt"), "user.heddle.origin"), "<ENODATA>");
  // Reading never copies up.
  EXPECT_EQ(read_or_error(m("dir/b.txt")), "b\n");
  EXPECT_FALSE(fs::exists(upper("dir/b.txt")));
  EXPECT_FALSE(fs::exists(upper("big.bin")));
  // The source is byte-identical (the fixture checks every byte, mode and time at the end).
  EXPECT_EQ(read_or_error(src("deep/x/y/z.txt")), "zzz\n");
  EXPECT_EQ(stat_of(src("tool.sh")).st_mode & 07777, 0755u);
}

TEST_F(OverlayPosix, WhiteoutsHideLowerEntriesAndOpaqueDirectoriesReplaceThem) {
  ASSERT_OK(::unlink(m("dir/a.txt").c_str()));
  EXPECT_ERRNO(::access(m("dir/a.txt").c_str(), F_OK), ENOENT);
  EXPECT_EQ(list_dir(m("dir")), (std::vector<std::string>{"b.txt", "sub"}));
  EXPECT_TRUE(fs::exists(src("dir/a.txt")));
  struct stat whiteout {};
  ASSERT_EQ(::lstat(upper("dir/.wh.a.txt").c_str(), &whiteout), 0) << "no whiteout on disk";
  EXPECT_TRUE(S_ISREG(whiteout.st_mode));
  EXPECT_EQ(whiteout.st_size, 0);
  // The whiteout itself is invisible: by name, and in listings.
  EXPECT_ERRNO(::access(m("dir/.wh.a.txt").c_str(), F_OK), ENOENT);
  // Deleting a lower symlink, and a new file made in place of a deleted one.
  ASSERT_OK(::unlink(m("link").c_str()));
  EXPECT_ERRNO(::access(m("link").c_str(), F_OK), ENOENT);
  ASSERT_TRUE(write_all(m("dir/a.txt"), "again\n", 0600, O_WRONLY | O_CREAT | O_EXCL));
  EXPECT_EQ(read_or_error(m("dir/a.txt")), "again\n");
  EXPECT_EQ(stat_of(m("dir/a.txt")).st_mode & 07777, 0600u);

  // rmdir of a lower directory once empty in the mount, then mkdir: opaque, nothing old shows.
  ASSERT_OK(::unlink(m("dir/sub/c.txt").c_str()));
  ASSERT_OK(::rmdir(m("dir/sub").c_str()));
  ASSERT_OK(::mkdir(m("dir/sub").c_str(), 0700));
  EXPECT_EQ(list_dir(m("dir/sub")), std::vector<std::string>{});
  EXPECT_ERRNO(::access(m("dir/sub/c.txt").c_str(), F_OK), ENOENT);
  EXPECT_TRUE(fs::exists(upper("dir/sub/.wh..wh..opq")));
  EXPECT_EQ(stat_of(m("dir/sub")).st_mode, S_IFDIR | 0700u);
  ASSERT_TRUE(write_all(m("dir/sub/d.txt"), "d\n"));
  // The same with a whole tree: rm -r of a lower tree, then a new directory of that name.
  const CommandResult removed = sh(tree_->mountpoint(), "rm -r deep");
  ASSERT_EQ(removed.exit_code, 0) << removed.err;
  ASSERT_OK(::mkdir(m("deep").c_str(), 0755));
  ASSERT_OK(::mkdir(m("deep/x").c_str(), 0755));
  EXPECT_EQ(list_dir(m("deep")), std::vector<std::string>{"x"});
  EXPECT_EQ(list_dir(m("deep/x")), std::vector<std::string>{});
  EXPECT_ERRNO(::access(m("deep/x/w.txt").c_str(), F_OK), ENOENT);
  EXPECT_ERRNO(::access(m("deep/x/y").c_str(), F_OK), ENOENT);

  // A deleted lower file replaced by a directory, a deleted lower directory by a file.
  ASSERT_OK(::unlink(m("ro.txt").c_str()));
  ASSERT_OK(::mkdir(m("ro.txt").c_str(), 0755));
  ASSERT_TRUE(write_all(m("ro.txt/inner"), "inner"));
  ASSERT_OK(::rmdir(m("emptydir").c_str()));
  ASSERT_TRUE(write_all(m("emptydir"), "now a file"));

  const auto expect_state = [&] {
    EXPECT_EQ(list_dir(m("")), (std::vector<std::string>{"big.bin", "deep", "dir", "emptydir",
                                                         "lower.txt", "ro.txt", "tool.sh"}));
    EXPECT_TRUE(S_ISDIR(stat_of(m("ro.txt")).st_mode));
    EXPECT_EQ(list_dir(m("ro.txt")), std::vector<std::string>{"inner"});
    EXPECT_TRUE(S_ISREG(stat_of(m("emptydir")).st_mode));
    EXPECT_EQ(read_or_error(m("emptydir")), "now a file");
    EXPECT_EQ(list_dir(m("dir")), (std::vector<std::string>{"a.txt", "b.txt", "sub"}));
    EXPECT_EQ(list_dir(m("dir/sub")), std::vector<std::string>{"d.txt"});
    EXPECT_EQ(list_dir(m("deep")), std::vector<std::string>{"x"});
    EXPECT_EQ(list_dir(m("deep/x")), std::vector<std::string>{});
    EXPECT_EQ(read_or_error(m("dir/a.txt")), "again\n");
    EXPECT_EQ(read_or_error(m("dir/sub/d.txt")), "d\n");
  };
  expect_state();
  ASSERT_NO_FATAL_FAILURE(remount());
  expect_state();
  // All of it still in the source.
  EXPECT_EQ(read_or_error(src("dir/sub/c.txt")), "c\n");
  EXPECT_EQ(read_or_error(src("deep/x/y/z.txt")), "zzz\n");
}

TEST_F(OverlayPosix, NamesStartingWithTheWhiteoutPrefixAreRefused) {
  ASSERT_TRUE(write_all(m("f"), "f"));
  EXPECT_ERRNO(::open(m(".wh.x").c_str(), O_CREAT | O_WRONLY, 0644), EINVAL);
  EXPECT_ERRNO(::mknod(m(".wh.n").c_str(), S_IFREG | 0644, 0), EINVAL);
  EXPECT_ERRNO(::mkdir(m(".wh.d").c_str(), 0755), EINVAL);
  EXPECT_ERRNO(::symlink("f", m(".wh.s").c_str()), EINVAL);
  EXPECT_ERRNO(::link(m("f").c_str(), m(".wh.l").c_str()), EINVAL);
  EXPECT_ERRNO(::rename(m("f").c_str(), m(".wh.r").c_str()), EINVAL);
  EXPECT_ERRNO(::rename(m("f").c_str(), m("dir/.wh..wh..opq").c_str()), EINVAL);
  EXPECT_ERRNO(::open(m("dir/.wh..wh..opq").c_str(), O_CREAT | O_WRONLY, 0644), EINVAL);
  EXPECT_ERRNO(::open(m("dir/.wh.b.txt").c_str(), O_CREAT | O_WRONLY, 0644), EINVAL);
  // Nothing changed: f is there, b.txt is still visible, no such names on disk.
  EXPECT_EQ(read_or_error(m("f")), "f");
  EXPECT_EQ(read_or_error(m("dir/b.txt")), "b\n");
  EXPECT_EQ(list_dir(upper("")), std::vector<std::string>{"f"});
  EXPECT_FALSE(fs::exists(upper("dir")));
  // Similar names that are not the prefix are fine.
  EXPECT_TRUE(write_all(m(".wh"), "1"));
  EXPECT_TRUE(write_all(m("x.wh.y"), "2"));
  EXPECT_TRUE(write_all(m(".whx"), "3"));
  EXPECT_EQ(list_dir(m("")), (std::vector<std::string>{".wh", ".whx", "big.bin", "deep", "dir",
                                                       "emptydir", "f", "link", "lower.txt",
                                                       "ro.txt", "tool.sh", "x.wh.y"}));
}

TEST_F(OverlayPosix, AnOpenUnlinkedFileStaysUsable) {
  UniqueFd fd(::open(m("tmp").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600));
  ASSERT_TRUE(fd);
  ASSERT_EQ(::write(fd.get(), "before", 6), 6);
  ASSERT_OK(::unlink(m("tmp").c_str()));
  EXPECT_ERRNO(::access(m("tmp").c_str(), F_OK), ENOENT);
  ASSERT_EQ(::write(fd.get(), "+after", 6), 6);
  char buffer[16];
  EXPECT_EQ(::pread(fd.get(), buffer, sizeof buffer, 0), 12);
  EXPECT_EQ(std::string(buffer, 12), "before+after");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    ADD_FAILURE() << "fstat of an open, unlinked file: " << errno_name(errno);
  } else {
    EXPECT_EQ(st.st_nlink, 0u);
    EXPECT_EQ(st.st_size, 12);
  }
  // Still writable to its end, and truncatable, through the fd.
  EXPECT_OK(::ftruncate(fd.get(), 6));
  EXPECT_EQ(::pread(fd.get(), buffer, sizeof buffer, 0), 6);
  // A lower file opened, then deleted.
  UniqueFd lower(::open(m("dir/b.txt").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(lower);
  ASSERT_OK(::unlink(m("dir/b.txt").c_str()));
  EXPECT_EQ(::pread(lower.get(), buffer, sizeof buffer, 0), 2);
  fd.reset();
  lower.reset();
  // No trace in listings (no .fuse_hidden files either).
  EXPECT_EQ(list_dir(m("")), (std::vector<std::string>{"big.bin", "deep", "dir", "emptydir", "link",
                                                       "lower.txt", "ro.txt", "tool.sh"}));
  EXPECT_EQ(list_dir(m("dir")), (std::vector<std::string>{"a.txt", "sub"}));
}

// A directory of both layers: each name once, through getdents batches, after creations and
// deletions on both sides.
TEST_F(OverlayPosix, AMergedDirectoryListsEachNameOnce) {
  ASSERT_NO_FATAL_FAILURE(unmount());
  std::set<std::string> expected;
  for (int i = 0; i < 600; ++i) {
    const std::string name = "lower-entry-with-a-longish-name-" + std::to_string(i);
    put(src("many") / name, std::to_string(i));
    expected.insert(name);
  }
  snapshot_source();
  ASSERT_NO_FATAL_FAILURE(mount());
  for (int i = 0; i < 600; i += 3) {
    const std::string name = "lower-entry-with-a-longish-name-" + std::to_string(i);
    ASSERT_OK(::unlink(m("many/" + name).c_str()));
    expected.erase(name);
  }
  for (int i = 0; i < 300; ++i) {
    const std::string name = "upper-entry-" + std::to_string(i);
    ASSERT_TRUE(write_all(m("many/" + name), "u"));
    expected.insert(name);
  }
  // Deleted, then made again: listed once.
  ASSERT_TRUE(write_all(m("many/lower-entry-with-a-longish-name-3"), "again"));
  expected.insert("lower-entry-with-a-longish-name-3");
  const std::vector<std::string> want(expected.begin(), expected.end());
  EXPECT_EQ(list_dir(m("many")), want);
  // d_type, where given, is right for either layer (find and tar trust it).
  ASSERT_OK(::symlink("x", m("new-link").c_str()));
  ASSERT_OK(::mkdir(m("new-dir").c_str(), 0755));
  const std::map<std::string, unsigned char> types = {
      {"dir", DT_DIR},      {"link", DT_LNK},    {"lower.txt", DT_REG}, {"many", DT_DIR},
      {"new-link", DT_LNK}, {"new-dir", DT_DIR}, {"big.bin", DT_REG}};
  DIR* root = ::opendir(m("").c_str());
  ASSERT_NE(root, nullptr);
  while (const dirent* entry = ::readdir(root)) {
    const auto it = types.find(entry->d_name);
    if (it == types.end() || entry->d_type == DT_UNKNOWN) continue;
    EXPECT_EQ(static_cast<int>(entry->d_type), static_cast<int>(it->second)) << entry->d_name;
  }
  ::closedir(root);
  // Entry by entry with a tiny buffer: telldir/seekdir positions must hold across batches.
  DIR* dir = ::opendir(m("many").c_str());
  ASSERT_NE(dir, nullptr);
  std::vector<std::string> first_half;
  long middle = 0;
  while (const dirent* entry = ::readdir(dir)) {
    if (std::string(entry->d_name) == "." || std::string(entry->d_name) == "..") continue;
    first_half.push_back(entry->d_name);
    if (first_half.size() == want.size() / 2) {
      middle = ::telldir(dir);
      break;
    }
  }
  std::vector<std::string> rest;
  ::seekdir(dir, middle);
  while (const dirent* entry = ::readdir(dir)) {
    if (std::string(entry->d_name) != "." && std::string(entry->d_name) != "..") {
      rest.push_back(entry->d_name);
    }
  }
  ::closedir(dir);
  std::vector<std::string> all = first_half;
  all.insert(all.end(), rest.begin(), rest.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, want) << "telldir/seekdir lost or repeated entries";
  ASSERT_NO_FATAL_FAILURE(remount());
  EXPECT_EQ(list_dir(m("many")), want);
  EXPECT_EQ(read_or_error(m("many/lower-entry-with-a-longish-name-3")), "again");
  EXPECT_EQ(read_or_error(m("many/lower-entry-with-a-longish-name-4")), "4");
}

// A listing is read at the first readdir of an open, not at opendir (a warm opendir then
// reads nothing while the kernel keeps the listing): as on a disk, a name made between the two
// is listed, and the listing the kernel kept from before is not served again.
TEST_F(OverlayPosix, AListingIsReadAtTheFirstReaddirNotAtOpendir) {
  EXPECT_EQ(list_dir(m("dir")), (std::vector<std::string>{"a.txt", "b.txt", "sub"}));
  DIR* dir = ::opendir(m("dir").c_str());
  ASSERT_NE(dir, nullptr);
  ASSERT_TRUE(write_all(m("dir/made-after-opendir.txt"), "new"));
  ASSERT_OK(::unlink(m("dir/a.txt").c_str()));
  std::vector<std::string> names;
  while (const dirent* entry = ::readdir(dir)) {
    if (std::string(entry->d_name) != "." && std::string(entry->d_name) != "..") {
      names.push_back(entry->d_name);
    }
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"b.txt", "made-after-opendir.txt", "sub"}));
}

// A directory's mtime and ctime move when an entry is made, removed or renamed in it, whether
// the directory comes from the lower layer or not.
TEST_F(OverlayPosix, DirectoryTimesMoveWithTheirEntries) {
  const auto recent = [](const std::string& path) {
    const struct stat st = stat_of(path);
    const time_t now = ::time(nullptr);
    return st.st_mtim.tv_sec >= now - 5 && st.st_ctim.tv_sec >= now - 5;
  };
  EXPECT_EQ(stat_of(m("dir")).st_mtim.tv_sec, kLowerTime);
  ASSERT_TRUE(write_all(m("dir/created"), "c"));
  EXPECT_TRUE(recent(m("dir"))) << "create in a lower directory";
  EXPECT_EQ(stat_of(m("deep/x")).st_mtim.tv_sec, kLowerTime);
  ASSERT_OK(::unlink(m("deep/x/w.txt").c_str()));
  EXPECT_TRUE(recent(m("deep/x"))) << "unlink in a lower directory";
  EXPECT_EQ(stat_of(m("dir/sub")).st_mtim.tv_sec, kLowerTime);
  ASSERT_OK(::rename(m("dir/sub/c.txt").c_str(), m("dir/sub/c2.txt").c_str()));
  EXPECT_TRUE(recent(m("dir/sub"))) << "rename in a lower directory";
  ASSERT_OK(::mkdir(m("d").c_str(), 0755));
  const timespec old_times[2] = {{1'000'000'000, 0}, {1'000'000'000, 0}};
  ASSERT_OK(::utimensat(AT_FDCWD, m("d").c_str(), old_times, 0));
  ASSERT_OK(::symlink("t", m("d/s").c_str()));
  EXPECT_TRUE(recent(m("d"))) << "symlink in a new directory";
  ASSERT_OK(::utimensat(AT_FDCWD, m("d").c_str(), old_times, 0));
  ASSERT_OK(::rename(m("dir/created").c_str(), m("d/moved").c_str()));
  EXPECT_TRUE(recent(m("d"))) << "rename into a directory";
  // A file's ctime moves with chmod, and its mtime does not.
  const struct stat before = stat_of(m("tool.sh"));
  ASSERT_OK(::chmod(m("tool.sh").c_str(), 0700));
  const struct stat after = stat_of(m("tool.sh"));
  EXPECT_EQ(ns_of(after.st_mtim), ns_of(before.st_mtim));
  EXPECT_GE(after.st_ctim.tv_sec, ::time(nullptr) - 5);
}

// Everything at once, then a remount: the mount shows the same tree, to the nanosecond; a
// fresh overlay on the same source shows the untouched source.
TEST_F(OverlayPosix, ChangesPersistAcrossARemountAndStayInTheirOverlay) {
  ASSERT_TRUE(write_all(m("dir/a.txt"), "modified\n", 0644, O_WRONLY | O_TRUNC));
  ASSERT_OK(::mkdir(m("new").c_str(), 0750));
  ASSERT_TRUE(write_all(m("new/file"), pattern(100'000, 5), 0640));
  ASSERT_OK(::link(m("new/file").c_str(), m("new/hard").c_str()));
  ASSERT_OK(::symlink("../lower.txt", m("new/sym").c_str()));
  ASSERT_OK(::unlink(m("dir/b.txt").c_str()));
  ASSERT_OK(::rename(m("tool.sh").c_str(), m("new/tool.sh").c_str()));
  ASSERT_OK(::chmod(m("ro.txt").c_str(), 0640));
  ASSERT_OK(::truncate(m("big.bin").c_str(), 5000));
  ASSERT_OK(::rmdir(m("emptydir").c_str()));
  const timespec times[2] = {{1'500'000'000, 1}, {1'500'000'000, 2}};
  ASSERT_OK(::utimensat(AT_FDCWD, m("new/file").c_str(), times, 0));
  const Tree before = describe(tree_->mountpoint());
  ASSERT_NO_FATAL_FAILURE(remount());
  expect_same_tree(before, describe(tree_->mountpoint()), "after a remount");

  // The same source with a fresh overlay: none of the changes.
  ASSERT_NO_FATAL_FAILURE(unmount());
  mount_args_.back() = (tree_->root() / "overlay2").string();
  ASSERT_NO_FATAL_FAILURE(mount());
  expect_same_tree(source_before_, describe(tree_->mountpoint()), "a fresh overlay");
  ASSERT_NO_FATAL_FAILURE(unmount());
  // And back to the first: all of them.
  mount_args_.back() = ov().string();
  ASSERT_NO_FATAL_FAILURE(mount());
  expect_same_tree(before, describe(tree_->mountpoint()), "after mounting the first overlay again");
}

TEST_F(OverlayPosix, ADirectoryMountWithoutOverlayStaysReadOnly) {
  ASSERT_NO_FATAL_FAILURE(unmount());
  mount_args_ = {"--dir", tree_->source().string()};
  ASSERT_NO_FATAL_FAILURE(mount());
  EXPECT_ERRNO(::open(m("new").c_str(), O_CREAT | O_WRONLY, 0644), EROFS);
  EXPECT_ERRNO(::open(m("lower.txt").c_str(), O_WRONLY), EROFS);
  EXPECT_ERRNO(::mkdir(m("d").c_str(), 0755), EROFS);
  EXPECT_ERRNO(::unlink(m("lower.txt").c_str()), EROFS);
  EXPECT_EQ(read_or_error(m("lower.txt")), "lower content\n");
}

// A git thread: writable through its overlay; the repository (objects, refs, index, work
// tree) is never written, checked by content, and git fsck stays clean.
TEST_F(OverlayPosix, AGitThreadIsWritableAndItsRepositoryUntouched) {
  ASSERT_NO_FATAL_FAILURE(unmount());
  const fs::path repo = tree_->source();
  const CommandResult made = sh(repo,
                                "git init -q -b main .\n"
                                "git add -A\n"
                                "git commit -q -m lower\n"
                                "git branch feature\n");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  snapshot_source();
  // Its own overlay: the first one holds the changes of the directory mount.
  mount_args_ = {"--repo-root", repo.string(), "--thread-id", "feature", "--overlay-dir",
                 (tree_->root() / "thread-overlay").string()};
  ASSERT_NO_FATAL_FAILURE(mount());
  EXPECT_EQ(read_or_error(m("dir/a.txt")), "a\n");
  EXPECT_ERRNO(::access(m(".git").c_str(), F_OK), ENOENT);
  ASSERT_TRUE(write_all(m("dir/a.txt"), "thread edit\n", 0644, O_WRONLY | O_APPEND));
  ASSERT_TRUE(write_all(m("added.txt"), "added\n"));
  ASSERT_OK(::unlink(m("dir/b.txt").c_str()));
  ASSERT_OK(::chmod(m("lower.txt").c_str(), 0600));
  ASSERT_OK(::link(m("added.txt").c_str(), m("added-link").c_str()));
  ASSERT_OK(::rename(m("ro.txt").c_str(), m("dir/ro.txt").c_str()));
  ASSERT_OK(::mkdir(m("newdir").c_str(), 0755));
  ASSERT_OK(::truncate(m("big.bin").c_str(), 10));
  const Tree before = describe(tree_->mountpoint());
  EXPECT_EQ(before.at("dir/a.txt").content, "a\nthread edit\n");
  EXPECT_EQ(before.at("added.txt").hard_link_of, "added-link");  // "-" sorts before "."
  ASSERT_NO_FATAL_FAILURE(remount());
  expect_same_tree(before, describe(tree_->mountpoint()), "the thread after a remount");
  ASSERT_NO_FATAL_FAILURE(unmount());

  // --read-only gives the thread as committed, read-only.
  mount_args_ = {"--repo-root", repo.string(), "--thread-id", "feature", "--read-only"};
  ASSERT_NO_FATAL_FAILURE(mount());
  EXPECT_EQ(read_or_error(m("dir/a.txt")), "a\n");
  EXPECT_ERRNO(::open(m("new").c_str(), O_CREAT | O_WRONLY, 0644), EROFS);
  ASSERT_NO_FATAL_FAILURE(unmount());

  expect_same_tree(source_before_, describe(repo), "the repository changed");
  // GIT_OPTIONAL_LOCKS=0: status must not refresh the index (the fixture checks the source).
  const CommandResult checked = sh(repo,
                                   "export GIT_OPTIONAL_LOCKS=0\n"
                                   "git fsck --strict --no-progress\n"
                                   "git status --porcelain\n"
                                   "git rev-parse main feature\n");
  EXPECT_EQ(checked.exit_code, 0) << checked.err;
  const CommandResult heads = sh(repo, "git rev-parse main");
  EXPECT_EQ(checked.out, heads.out + heads.out) << "status shows changes, or a ref moved";
}

// ---- OverlayPrograms: real programs, compared with a native run ------------------------------

class OverlayPrograms : public OverlayTest {
 protected:
  // Generous: a loaded 2-core machine is slow at 10,000 files (ctest's TIMEOUT here is 240 s).
  std::chrono::seconds time_limit() const override { return 180s; }
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(OverlayTest::SetUp());
    if (IsSkipped()) return;
    fs::create_directory(native());
  }
  // Where the same run happens on the native filesystem.
  fs::path native() const { return tree_->root() / "native"; }

  // Runs `script` in `relative` of the mount and of the native directory; both must succeed
  // with the same output. Returns the mount's result.
  CommandResult same_in_both(const std::string& relative, const std::string& script,
                             std::chrono::milliseconds timeout = 60s) {
    const CommandResult in_native = sh(native() / relative, script, timeout);
    const CommandResult in_mount = sh(tree_->mountpoint() / relative, script, timeout);
    EXPECT_EQ(in_native.exit_code, 0) << "native run failed: " << in_native.err;
    EXPECT_EQ(in_mount.exit_code, 0) << "run in the mount failed: " << in_mount.err;
    EXPECT_EQ(in_mount.out, in_native.out) << "stdout differs";
    EXPECT_EQ(in_mount.err, in_native.err) << "stderr differs";
    return in_mount;
  }

  // A tool the case needs, or a skip naming it (they are in scripts/setup's test packages).
  static bool have(const char* tool) {
    return ::access((std::string("/usr/bin/") + tool).c_str(), X_OK) == 0 ||
           ::access((std::string("/bin/") + tool).c_str(), X_OK) == 0;
  }
};

#define REQUIRE_TOOLS(...)                                                                    \
  do {                                                                                        \
    for (const char* tool : {__VA_ARGS__}) {                                                  \
      if (!have(tool)) GTEST_SKIP() << tool << " is not installed (scripts/setup test adds it)"; \
    }                                                                                         \
  } while (0)

// The same files, with the same times, under the source (the lower layer) and the native dir.
template <typename Writer>
void in_lower_and_native(const fs::path& source, const fs::path& native, Writer write) {
  write(source);
  write(native);
  settle_dir_times(source);
  settle_dir_times(native);
}

void write_git_project(const fs::path& root) {
  for (int i = 0; i < 40; ++i) {
    put(root / "proj" / "src" / ("file" + std::to_string(i) + ".txt"),
        "file " + std::to_string(i) + "\n" + pattern(static_cast<std::size_t>(i) * 97, i));
  }
  put(root / "proj" / "README", "a project\n");
  put(root / "proj" / "run.sh", "#!/bin/sh\necho run\n", 0755);
  fs::create_symlink("src/file1.txt", root / "proj" / "link.txt");
}

TEST_F(OverlayPrograms, GitInitAddCommitOfANewRepository) {
  REQUIRE_TOOLS("git");
  in_lower_and_native(tree_->source(), native(), write_git_project);
  snapshot_source();
  ASSERT_NO_FATAL_FAILURE(mount());
  // Fixed identity and dates: identical trees give identical commit ids.
  const CommandResult result = same_in_both("proj",
                                            "git init -q -b main\n"
                                            "git add -A\n"
                                            "git commit -q -m first\n"
                                            "git rev-parse HEAD\n"
                                            "echo appended >> src/file3.txt\n"
                                            "git rm -q src/file4.txt\n"
                                            "git mv src/file5.txt moved5.txt\n"
                                            "chmod +x src/file6.txt\n"
                                            "mkdir docs && echo doc > docs/doc.txt\n"
                                            "git add -A\n"
                                            "git commit -q -m second\n"
                                            "git repack -adq\n"
                                            "git prune-packed\n"
                                            "git gc -q\n"
                                            "git rev-parse HEAD HEAD^{tree}\n"
                                            "git ls-files -s\n"
                                            "git log --format='%H %T %s'\n"
                                            "git status --porcelain\n"
                                            "git fsck --strict --no-progress --no-dangling\n"
                                            "git count-objects -v | grep -v size\n"
                                            "git config core.filemode\n",
                                            90s);
  EXPECT_NE(result.out.find("100755"), std::string::npos) << "no executable file in the index";
  EXPECT_NE(result.out.find("\ntrue\n"), std::string::npos) << "git found no file modes";
  ASSERT_NO_FATAL_FAILURE(remount());
  const CommandResult again = sh(tree_->mountpoint() / "proj",
                                 "git fsck --strict --no-progress\n"
                                 "git status --porcelain\n"
                                 "git rev-parse HEAD\n");
  EXPECT_EQ(again.exit_code, 0) << again.err;
  const CommandResult native_head = sh(native() / "proj", "git rev-parse HEAD");
  EXPECT_EQ(again.out, native_head.out) << "after a remount";
}

void write_c_project(const fs::path& root) {
  const fs::path dir = root / "cproj";
  constexpr int kUnits = 16;
  std::string header = "#pragma once\n";
  std::string objects;
  std::string calls;
  for (int i = 0; i < kUnits; ++i) {
    const std::string n = std::to_string(i);
    header += "long w" + n + "(long);\n";
    put(dir / ("w" + n + ".c"),
        "#include \"widgets.h\"\nlong w" + n + "(long x) { return x * " + n + " + " +
            std::to_string(i * i) + "; }\n");
    objects += " w" + n + ".o";
    calls += "  total += w" + n + "(" + n + ");\n";
  }
  put(dir / "widgets.h", header);
  put(dir / "main.c",
      "#include <stdio.h>\n#include \"widgets.h\"\nint main(void) {\n  long total = 0;\n" + calls +
          "  printf(\"total %ld\\n\", total);\n  return 0;\n}\n");
  put(dir / "Makefile",
      "CC = cc\nCFLAGS = -O2 -Wall\nOBJS =" + objects +
          "\n"
          "all: prog\n"
          "prog: main.o libwidgets.a\n\t$(CC) -o $@ main.o libwidgets.a\n"
          "libwidgets.a: $(OBJS)\n\trm -f $@\n\tar rcs $@ $(OBJS)\n"
          "%.o: %.c widgets.h\n\t$(CC) $(CFLAGS) -c -o $@ $<\n"
          "install: prog\n\tmkdir -p inst/bin\n\tcp prog inst/bin/prog\n"
          "\tln -f inst/bin/prog inst/bin/prog-link\n"
          "clean:\n\trm -f *.o libwidgets.a prog\n"
          ".PHONY: all install clean\n");
}

TEST_F(OverlayPrograms, MakeBuildsObjectsAnArchiveAndHardLinks) {
  REQUIRE_TOOLS("make", "cc", "ar");
  in_lower_and_native(tree_->source(), native(), write_c_project);
  snapshot_source();
  ASSERT_NO_FATAL_FAILURE(mount());
  const CommandResult result = same_in_both(
      "cproj",
      "make -j2 all >/dev/null\n"
      "make -q all && echo up to date\n"
      "./prog\n"
      "ar t libwidgets.a\n"
      "make install\n"
      "stat -c '%h %s %a %n' inst/bin/prog inst/bin/prog-link\n"
      "test \"$(stat -c %i inst/bin/prog)\" = \"$(stat -c %i inst/bin/prog-link)\"\n"
      "echo one inode\n"
      "inst/bin/prog-link\n"
      "sha256sum *.o libwidgets.a prog inst/bin/*\n"
      // A changed source rebuilds exactly what depends on it.
      "touch w3.c\n"
      "make all\n"
      "make -q all && echo up to date again\n"
      "make clean && make -j2 >/dev/null && ./prog\n",
      90s);
  EXPECT_NE(result.out.find("up to date\n"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("2 "), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("one inode"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("cc -O2 -Wall -c -o w3.o w3.c\n"), std::string::npos) << result.out;
  ASSERT_NO_FATAL_FAILURE(remount());
  const CommandResult again = sh(tree_->mountpoint() / "cproj",
                                 "make -q all && echo up to date\n"
                                 "stat -c %h inst/bin/prog-link\n"
                                 "./prog\n");
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out, "up to date\n2\ntotal 2480\n");
}

// 10,000 files in 100 directories, with symlinks, hard links, modes and times.
void write_many_files(const fs::path& root) {
  for (int d = 0; d < 100; ++d) {
    const fs::path dir = root / ("d" + std::to_string(d));
    fs::create_directories(dir);
    for (int f = 0; f < 98; ++f) {
      const int i = d * 100 + f;
      const fs::path path = dir / ("f" + std::to_string(f));
      const std::string content = pattern(static_cast<std::size_t>(i % 37) * 53, i);
      ASSERT_TRUE(write_all(path.string(), content, 0600));
      ASSERT_EQ(::chmod(path.c_str(), i % 7 == 0 ? 0755 : i % 5 == 0 ? 0600 : 0644), 0);
      ASSERT_TRUE(set_times(path, kLowerTime + i, 0));
    }
    fs::create_symlink("f0", dir / "sym");
    ASSERT_TRUE(set_times(dir / "sym", kLowerTime, 0));
    fs::create_hard_link(dir / "f1", dir / "hard");
  }
  settle_dir_times(root);
}

TEST_F(OverlayPrograms, TarExtractsTenThousandFilesAndArchivesThemBack) {
  REQUIRE_TOOLS("tar");
  const fs::path generated = tree_->root() / "generated";
  ASSERT_NO_FATAL_FAILURE(write_many_files(generated));
  const fs::path archive = tree_->root() / "files.tar";
  const CommandResult created = sh(generated, "tar -cf " + archive.string() +
                                                  " --sort=name --format=gnu .\n"
                                                  "tar -tf " + archive.string() + " | wc -l");
  ASSERT_EQ(created.exit_code, 0) << created.err;
  ASSERT_EQ(created.out, "10101\n");  // ".", 100 dirs, 10,000 files and links
  ASSERT_NO_FATAL_FAILURE(mount());
  // Extract, then archive back deterministically: names, types, modes, owners, times, link
  // targets, hard links and contents all land in the bytes of the second archive.
  const std::string script = "mkdir x\n"
                             "tar -xf " + archive.string() + " -C x\n"
                             "tar -cf ../back.tar --sort=name --format=gnu -C x .\n";
  const CommandResult in_native = sh(native(), script, 60s);
  EXPECT_EQ(in_native.exit_code, 0) << in_native.err;
  fs::create_directory(tree_->root() / "mount-side");
  const CommandResult in_mount =
      sh(tree_->mountpoint(),
         "mkdir x\n"
         "tar -xf " + archive.string() + " -C x\n"
         "tar -cf " + (tree_->root() / "mount-side" / "back.tar").string() +
             " --sort=name --format=gnu -C x .\n",
         80s);
  EXPECT_EQ(in_mount.exit_code, 0) << in_mount.err;
  EXPECT_EQ(in_mount.out, in_native.out);
  EXPECT_EQ(in_mount.err, in_native.err);
  const std::string native_back = slurp(tree_->root() / "back.tar");
  EXPECT_GT(native_back.size(), 1'000'000u);
  EXPECT_TRUE(slurp(tree_->root() / "mount-side" / "back.tar") == native_back)
      << "tar -c of the mount differs from tar -c of the native extraction";
  EXPECT_TRUE(slurp(archive) == native_back) << "(the native round trip itself differs)";
  struct stat hard {};
  ASSERT_EQ(::lstat(m("x/d5/hard").c_str(), &hard), 0);
  EXPECT_EQ(hard.st_nlink, 2u);
  EXPECT_EQ(hard.st_ino, stat_of(m("x/d5/f1")).st_ino);
}

// A tree with every kind of node for cp -a.
void write_copy_tree(const fs::path& root) {
  for (int i = 0; i < 200; ++i) {
    const fs::path path = root / ("d" + std::to_string(i % 10)) / ("f" + std::to_string(i));
    const unsigned modes[] = {0644, 0600, 0755, 0444, 0640};
    put(path, pattern(static_cast<std::size_t>(i) * 31, i), modes[i % 5], i * 1'000'003);
  }
  put(root / "empty", "");
  put(root / "large.bin", pattern(3 << 20, 99), 0644, 42);
  for (int i = 0; i < 5; ++i) {
    fs::create_hard_link(root / "d1" / ("f" + std::to_string(10 * i + 1)),
                         root / ("hard" + std::to_string(i)));
  }
  fs::create_symlink("d2/f2", root / "rel-link");
  fs::create_symlink("/nonexistent/target", root / "dangling-link");
  fs::create_directories(root / "emptydir");
  fs::create_directories(root / "private");
  put(root / "private" / "inside", "inside\n");
  settle_dir_times(root);
  ASSERT_EQ(::chmod((root / "private").c_str(), 0700), 0);
  ASSERT_TRUE(set_times(root / "private", kLowerTime + 7, 77));
}

TEST_F(OverlayPrograms, CpArchiveRoundTripKeepsEverything) {
  REQUIRE_TOOLS("cp");
  const fs::path original = tree_->root() / "original";
  ASSERT_NO_FATAL_FAILURE(write_copy_tree(original));
  ASSERT_NO_FATAL_FAILURE(mount());
  const Tree expected = describe(original);
  const CommandResult to_native = sh(tree_->root(), "cp -a original native/copy");
  const CommandResult to_mount = sh(tree_->root(), "cp -a original mnt/copy");
  EXPECT_EQ(to_native.exit_code, 0) << to_native.err;
  EXPECT_EQ(to_mount.exit_code, 0) << to_mount.err;
  EXPECT_EQ(to_mount.err, to_native.err);
  expect_same_tree(expected, describe(native() / "copy"), "cp -a to a native directory");
  expect_same_tree(expected, describe(tree_->mountpoint() / "copy"), "cp -a into the mount");
  const CommandResult back = sh(tree_->root(), "cp -a mnt/copy back");
  EXPECT_EQ(back.exit_code, 0) << back.err;
  expect_same_tree(expected, describe(tree_->root() / "back"), "cp -a out of the mount");
  // Within the mount (copy_file_range or its fallback, on one filesystem).
  const CommandResult within = sh(tree_->root(), "cp -a mnt/copy mnt/copy2");
  EXPECT_EQ(within.exit_code, 0) << within.err;
  expect_same_tree(expected, describe(tree_->mountpoint() / "copy2"), "cp -a within the mount");
  ASSERT_NO_FATAL_FAILURE(remount());
  expect_same_tree(expected, describe(tree_->mountpoint() / "copy"), "the copy after a remount");
}

void write_python_package(const fs::path& root) {
  const fs::path pkg = root / "py" / "pkg";
  put(pkg / "__init__.py", "VERSION = 3\n");
  for (int i = 0; i < 40; ++i) {
    const std::string n = std::to_string(i);
    put(pkg / ("mod" + n + ".py"),
        "import math\n\n\ndef f():\n    return sum(math.isqrt(k) for k in range(" + n +
            " * 100))\n\n\nclass C" + n + ":\n    value = " + n + "\n");
  }
  put(pkg / "sub" / "__init__.py", "");
  put(pkg / "sub" / "deep.py", "from pkg import mod7\n\nVALUE = mod7.f() + 1\n");
}

TEST_F(OverlayPrograms, PythonCompileallWritesTheSameBytecode) {
  REQUIRE_TOOLS("python3");
  in_lower_and_native(tree_->source(), native(), write_python_package);
  snapshot_source();
  ASSERT_NO_FATAL_FAILURE(mount());
  const CommandResult result =
      same_in_both("py",
                   "python3 -m compileall -q pkg\n"
                   "find pkg -name '*.pyc' | sort | xargs sha256sum\n"
                   "python3 -m compileall pkg\n"  // nothing to redo
                   "python3 -c 'import os, pkg.sub.deep as d, pkg.mod39 as m; "
                   "print(d.VALUE, m.f(), os.path.relpath(m.__cached__))'\n",
                   60s);
  EXPECT_NE(result.out.find("pkg/sub/__pycache__/deep.cpython-"), std::string::npos) << result.out;
  EXPECT_EQ(result.out.find("Compiling"), std::string::npos) << "a second run recompiled";
  EXPECT_TRUE(fs::exists(upper("py/pkg/__pycache__")));
}

TEST_F(OverlayPrograms, SqliteInWalModeUnderConcurrentWriters) {
  REQUIRE_TOOLS("sqlite3");
  ASSERT_NO_FATAL_FAILURE(mount());
  fs::create_directory(tree_->mountpoint() / "db");
  fs::create_directory(native() / "db");
  // Three writers at once, each its own process and 150 transactions; a reader meanwhile.
  const std::string script =
      "sqlite3 test.db 'PRAGMA journal_mode=WAL;"
      " CREATE TABLE t(id INTEGER PRIMARY KEY, w INT, v TEXT);'\n"
      "writer() {\n"
      "  i=0; while [ $i -lt 150 ]; do\n"
      "    i=$((i+1)); echo \"INSERT INTO t(w, v) VALUES($1, '$1-$i');\"\n"
      "  done |\n"
      "    sqlite3 -cmd '.timeout 30000' test.db\n"
      "}\n"
      "writer 1 & p1=$!; writer 2 & p2=$!; writer 3 & p3=$!\n"
      "sqlite3 -cmd '.timeout 30000' test.db 'SELECT count(*) >= 0 FROM t;' >/dev/null\n"
      "wait $p1; wait $p2; wait $p3\n"
      "sqlite3 -cmd '.timeout 30000' test.db 'SELECT count(*), count(DISTINCT v) FROM t;"
      " SELECT w, count(*) FROM t GROUP BY w; PRAGMA integrity_check; PRAGMA journal_mode;'\n"
      "sqlite3 test.db 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null\n"
      "sqlite3 test.db 'PRAGMA integrity_check; SELECT count(*) FROM t;'\n";
  const CommandResult result = same_in_both("db", script, 80s);
  EXPECT_EQ(result.out, "wal\n450|450\n1|150\n2|150\n3|150\nok\nwal\nok\n450\n");
  ASSERT_NO_FATAL_FAILURE(remount());
  const CommandResult again =
      sh(tree_->mountpoint() / "db",
         "sqlite3 test.db 'PRAGMA integrity_check; SELECT count(*) FROM t;'");
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out, "ok\n450\n");
}

}  // namespace
}  // namespace heddle::test
