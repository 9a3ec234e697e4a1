// Nothing lost (issue 14): what a writer was told is written survives every way a writable
// mount can end, and nothing of the lower layer is ever touched. Real processes, real mounts,
// real kills: the launcher's `mount --foreground --json` as our child, its worker and guard
// found from its ready line, SIGKILL sent by pid.
//
//   1. Data acknowledged by close() or fsync() (and the names changed with it: new, copied-up,
//      appended, truncated, deleted, renamed, hard-linked, chmod'ed, symlinked, an opaque
//      directory) is there byte for byte after an unmount and remount, and after SIGKILL of
//      the worker, of the supervisor, of the guard, and of all three at once, for a directory
//      with --overlay and for a git thread. The mount is compared, entry by entry (type,
//      mode, link count, size, SHA-256, symlink target), with a native directory that got
//      the same operations.
//   2. Kills in the middle of writing: during the copy-up of a 64 MiB lower file (the file is
//      then wholly old or wholly new, and no temporary shows), also with the overlay mounted
//      again at once while the old worker may still run; during a rename and RENAME_EXCHANGE
//      storm (every file under exactly one of its names, every swapped pair whole); and with
//      files open for writing (what fsync, fdatasync and msync acknowledged is there).
//   3. A full disk (a tmpfs of 8 MiB under the overlay, as root) gives ENOSPC, never EIO, and
//      corrupts nothing already written.
//   Also: names in the source that look like the overlay's markers (.wh.*) are shown and
//   read like any other.
//   4. After every case the lower layer is unchanged by content: the whole source directory,
//      or the whole repository (work tree and .git: refs, index, objects, packed-refs,
//      config, logs, everything) compared file by file by SHA-256, and `git fsck --full`
//      clean.
//
// Cases named Heavy* move 64 MiB files; sanitizer runs may skip them (-E Heavy).
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <new>
#include <set>

#include <nlohmann/json.hpp>

#include "heddle/launcher/control_socket.h"
#include "support/child_process.h"
#include "support/test_support.h"
#include "support/tree_snapshot.h"

namespace heddle::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

// How long everything may take to settle after a kill or an unmount.
constexpr auto kSettle = 5s;
// A mount (sandbox, worker, handshake) must be ready within this.
constexpr auto kReadyTimeout = 20s;
constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * 1024;
constexpr std::size_t kBigBytes = 64 * kMiB;

long ms_since(Clock::time_point start) {
  return static_cast<long>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
}

// ---- processes -----------------------------------------------------------------------------

// Reaps every exited child (orphans come to us: we are a subreaper); returns how many live
// children are left.
int live_children() {
  int live = 0;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;
    const auto close_paren = stat.rfind(')');
    if (close_paren == std::string::npos) continue;
    std::istringstream rest(stat.substr(close_paren + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid != ::getpid()) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(name));
    if (state == 'Z') {
      ::waitpid(pid, nullptr, WNOHANG);
    } else {
      ++live;
    }
  }
  return live;
}

std::string comm_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/comm");
  std::string comm;
  std::getline(in, comm);
  return comm;
}

// ---- commands ------------------------------------------------------------------------------

std::vector<std::string> launcher_argv(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {bin_path("heddle-fuse-launcher")};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

// git with no user or system configuration, so the host's cannot change what is built.
CommandResult git(const fs::path& repo, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/bin/env", "GIT_CONFIG_GLOBAL=/dev/null",
                                   "GIT_CONFIG_NOSYSTEM=1", "/usr/bin/git", "-C", repo.string(),
                                   "-c", "user.name=t", "-c", "user.email=t@t.invalid"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, 60s);
}

// ---- file operations with their errors recorded ----------------------------------------------

std::string errno_text(int err) { return std::to_string(err) + " (" + std::strerror(err) + ")"; }

bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) {
      errno = EIO;
      return false;
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

bool pwrite_all(int fd, std::string_view bytes, off_t offset) {
  while (!bytes.empty()) {
    const ssize_t n = ::pwrite(fd, bytes.data(), bytes.size(), offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) {
      errno = EIO;
      return false;
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
    offset += n;
  }
  return true;
}

// The same operations, applied to the mount and to a native directory: every call's result
// is checked, and a failure is recorded with the call and errno. Files "kept open" stay open
// (after their data was fsync'd) through whatever ends the mount.
class Ops {
 public:
  explicit Ops(fs::path base) : base_(std::move(base)) {}
  Ops(const Ops&) = delete;
  Ops& operator=(const Ops&) = delete;
  ~Ops() { close_held(); }

  [[nodiscard]] const std::vector<std::string>& failures() const { return failures_; }
  [[nodiscard]] std::string report() const {
    std::string out;
    for (const auto& f : failures_) out += "  " + f + "\n";
    return out;
  }

  // A new file (or truncated), written in 64 KiB writes; fsync'd if asked; closed unless kept.
  void write_file(const std::string& rel, std::string_view content, bool do_fsync = false,
                  bool keep_open = false) {
    const int fd = ::open(path(rel).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (!check(fd >= 0, "open(O_CREAT|O_TRUNC) " + rel)) return;
    bool ok = true;
    for (std::size_t at = 0; ok && at < content.size(); at += 64 * kKiB) {
      ok = check(write_all(fd, content.substr(at, 64 * kKiB)), "write " + rel);
    }
    if (ok && do_fsync) check(::fsync(fd) == 0, "fsync " + rel);
    finish(fd, rel, keep_open);
  }
  // Overwrites `content` at `offset` of an existing file (a lower one is copied up).
  void pwrite_file(const std::string& rel, off_t offset, std::string_view content) {
    const int fd = ::open(path(rel).c_str(), O_WRONLY | O_CLOEXEC);
    if (!check(fd >= 0, "open(O_WRONLY) " + rel)) return;
    check(pwrite_all(fd, content, offset), "pwrite " + rel);
    finish(fd, rel, false);
  }
  void append_file(const std::string& rel, std::string_view content, bool keep_open) {
    const int fd = ::open(path(rel).c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (!check(fd >= 0, "open(O_APPEND) " + rel)) return;
    if (check(write_all(fd, content), "append " + rel)) check(::fsync(fd) == 0, "fsync " + rel);
    finish(fd, rel, keep_open);
  }
  void truncate_file(const std::string& rel, off_t size) {
    const int fd = ::open(path(rel).c_str(), O_WRONLY | O_CLOEXEC);
    if (!check(fd >= 0, "open(O_WRONLY) " + rel)) return;
    if (check(::ftruncate(fd, size) == 0, "ftruncate " + rel)) check(::fsync(fd) == 0, "fsync " + rel);
    finish(fd, rel, false);
  }
  void mkdir(const std::string& rel) { check(::mkdir(path(rel).c_str(), 0755) == 0, "mkdir " + rel); }
  void rmdir(const std::string& rel) { check(::rmdir(path(rel).c_str()) == 0, "rmdir " + rel); }
  void unlink(const std::string& rel) { check(::unlink(path(rel).c_str()) == 0, "unlink " + rel); }
  void rename(const std::string& from, const std::string& to) {
    check(::rename(path(from).c_str(), path(to).c_str()) == 0, "rename " + from + " -> " + to);
  }
  void chmod(const std::string& rel, mode_t mode) {
    check(::chmod(path(rel).c_str(), mode) == 0, "chmod " + rel);
  }
  void symlink(const std::string& target, const std::string& rel) {
    check(::symlink(target.c_str(), path(rel).c_str()) == 0, "symlink " + rel);
  }
  void link(const std::string& from, const std::string& to) {
    check(::link(path(from).c_str(), path(to).c_str()) == 0, "link " + from + " -> " + to);
  }
  // Sets a file's mtime (and atime), then fsyncs it.
  void set_times(const std::string& rel, const timespec& when) {
    const timespec times[2] = {when, when};
    if (!check(::utimensat(AT_FDCWD, path(rel).c_str(), times, 0) == 0, "utimensat " + rel)) return;
    const int fd = ::open(path(rel).c_str(), O_RDONLY | O_CLOEXEC);
    if (!check(fd >= 0, "open(O_RDONLY) " + rel)) return;
    check(::fsync(fd) == 0, "fsync " + rel);
    check(::close(fd) == 0, "close " + rel);
  }
  // fsync of a directory whose names changed: the names are acknowledged too.
  void fsync_dir(const std::string& rel) {
    const int fd = ::open(path(rel).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (!check(fd >= 0, "open dir " + rel)) return;
    check(::fsync(fd) == 0, "fsync dir " + rel);
    check(::close(fd) == 0, "close dir " + rel);
  }
  // Files kept open are closed without looking at the result: their mount may be gone.
  void close_held() {
    for (const int fd : held_) ::close(fd);
    held_.clear();
  }

 private:
  [[nodiscard]] std::string path(const std::string& rel) const {
    return rel.empty() ? base_.string() : (base_ / rel).string();
  }
  bool check(bool ok, const std::string& what) {
    const int err = errno;
    if (!ok) failures_.push_back(what + ": " + errno_text(err));
    return ok;
  }
  void finish(int fd, const std::string& rel, bool keep_open) {
    if (keep_open) {
      held_.push_back(fd);
    } else {
      check(::close(fd) == 0, "close " + rel);
    }
  }

  fs::path base_;
  std::vector<std::string> failures_;
  std::vector<int> held_;
};

// ---- a forked writer, for the kills in the middle of writing -------------------------------

// Progress a forked child shares with the test (MAP_SHARED, so it survives the child).
struct SharedProgress {
  std::atomic<std::uint64_t> counter{0};
  std::atomic<std::uint64_t> acked[4]{};
  std::atomic<int> error{0};
  std::atomic<int> stage{0};
};

class Shared {
 public:
  Shared() {
    void* memory = ::mmap(nullptr, sizeof(SharedProgress), PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) throw std::runtime_error("mmap failed");
    progress_ = new (memory) SharedProgress();
  }
  Shared(const Shared&) = delete;
  Shared& operator=(const Shared&) = delete;
  ~Shared() { ::munmap(progress_, sizeof(SharedProgress)); }
  SharedProgress* operator->() const { return progress_; }

 private:
  SharedProgress* progress_ = nullptr;
};

// Writes a file of a lower layer (or of its mirror).
void put(const fs::path& base, const std::string& rel, std::string_view content,
         unsigned mode = 0644) {
  const fs::path path = base / rel;
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  out.close();
  if (!out) throw std::runtime_error("write " + path.string());
  fs::permissions(path, fs::perms(mode));
}

// ---- the fixture -----------------------------------------------------------------------------

enum class Kind { kDir, kGit };
enum class Fault { kUnmount, kKillWorker, kKillSupervisor, kKillGuard, kKillAll };

std::string fault_name(Fault fault) {
  switch (fault) {
    case Fault::kUnmount: return "unmount";
    case Fault::kKillWorker: return "SIGKILL of the worker";
    case Fault::kKillSupervisor: return "SIGKILL of the supervisor";
    case Fault::kKillGuard: return "SIGKILL of the guard";
    case Fault::kKillAll: return "SIGKILL of worker, supervisor and guard";
  }
  return "?";
}

class OverlayDurability : public ::testing::Test {
 protected:
  void SetUp() override {
    HEDDLE_REQUIRE_MOUNT();
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    ::umask(022);
    std::string pattern = "/tmp/heddle-durability-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
    // The sandboxed worker (nobody, for root's mounts) must reach the source and the overlay.
    fs::permissions(root_, fs::perms(0755));
    mnt_ = root_ / "mnt";
    make_dir(mnt_);
    source_ = root_ / "source";
    repo_ = root_ / "repo";
    mirror_ = root_ / "mirror";
    overlay_ = root_ / "overlay";
  }

  void TearDown() override {
    if (root_.empty()) return;
    for (const pid_t pid : writers_) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    if (supervisor_) {
      kill_if(worker_, "heddle-fuse-wor");
      kill_if(guard_, "heddle-fuse-gua");
      supervisor_.reset();  // SIGKILLs and reaps it if it still runs
    }
    if (!eventually([] { return live_children() == 0; }, kSettle)) {
      ADD_FAILURE() << "processes of ours outlived the test";
    }
    for (int i = 0; i < 8 && heddle_mounted(mnt_); ++i) {
      if (i == 0 && !dead_mount_expected_) ADD_FAILURE() << "a mount was left at " << mnt_;
      remove_mount(mnt_);
    }
    static_cast<void>(launcher::remove_stale_control_socket(
        launcher::control_socket_path(launcher::UserDirs::read(), mnt_.string())));
    std::error_code ec;
    if (!tmpfs_.empty()) {
      if (::umount2(tmpfs_.c_str(), MNT_DETACH) != 0) {
        ADD_FAILURE() << "umount " << tmpfs_ << ": " << std::strerror(errno);
      }
    }
    fs::remove_all(root_, ec);
    if (ec) ADD_FAILURE() << "remove " << root_ << ": " << ec.message();
  }

  static void make_dir(const fs::path& path) {
    fs::create_directories(path);
    fs::permissions(path, fs::perms(0755));
  }

  static void remove_mount(const fs::path& mountpoint) {
    if (running_as_root()) {
      ::umount2(mountpoint.c_str(), MNT_DETACH);
    } else {
      (void)run_command({"/usr/bin/fusermount3", "-u", "-z", mountpoint.string()}, 10s);
    }
  }

  // SIGKILL `pid` only if it still is the process meant (not a recycled pid).
  static void kill_if(pid_t pid, const std::string& comm) {
    if (pid > 0 && comm_of(pid) == comm) ::kill(pid, SIGKILL);
  }

  // ---- the lower layer ----

  [[nodiscard]] fs::path lower_root() const { return kind_ == Kind::kGit ? repo_ : source_; }

  // Builds the lower layer: `populate` writes the tree into the source directory, or into a
  // work tree that is then committed as branch main. With `mirror`, the same tree is written
  // to `mirror_`, where the test applies to a native directory what it applies to the mount.
  // Snapshots the whole lower layer for expect_lower_untouched(). `bare_work_tree` empties a
  // repository's work tree after the commit (the worker reads only objects; this spares
  // hashing a big file twice more).
  void make_lower(Kind kind, const std::function<void(const fs::path&)>& populate,
                  bool mirror = true, bool bare_work_tree = false) {
    kind_ = kind;
    make_dir(lower_root());
    populate(lower_root());
    if (mirror) {
      make_dir(mirror_);
      populate(mirror_);
    }
    if (kind == Kind::kGit) {
      for (const auto& args : std::vector<std::vector<std::string>>{
               {"init", "-q", "-b", "main", "."},
               {"-c", "core.compression=0", "-c", "core.looseCompression=0", "add", "-A"},
               {"commit", "-q", "-m", "lower"}}) {
        const CommandResult result = git(repo_, args);
        ASSERT_EQ(result.exit_code, 0) << "git " << args[0] << ": " << result.err;
      }
      if (bare_work_tree) {
        for (const auto& entry : fs::directory_iterator(repo_)) {
          if (entry.path().filename() != ".git") fs::remove_all(entry.path());
        }
      }
    }
    const CommandResult chmod = run_command({"/bin/chmod", "-R", "a+rX", lower_root().string()});
    ASSERT_EQ(chmod.exit_code, 0) << chmod.err;
    lower_before_ = snapshot_tree(lower_root());
    ASSERT_FALSE(lower_before_.empty());
  }

  // (4) The lower layer is unchanged by content, entry by entry, and a repository is sound.
  void expect_lower_untouched() {
    const TreeSnapshot now = snapshot_tree(lower_root());
    EXPECT_TRUE(now == lower_before_) << "the lower layer " << lower_root() << " changed:\n"
                                      << snapshot_diff(lower_before_, now);
    if (kind_ == Kind::kGit) {
      const CommandResult fsck = git(repo_, {"fsck", "--full", "--strict", "--no-progress"});
      EXPECT_EQ(fsck.exit_code, 0) << fsck.out << fsck.err;
      EXPECT_EQ(fsck.out, "") << "git fsck reported: " << fsck.out << fsck.err;
    }
  }

  // ---- mounts ----

  [[nodiscard]] std::vector<std::string> mount_args() const {
    std::vector<std::string> args = {"mount"};
    if (kind_ == Kind::kGit) {
      args.insert(args.end(), {"--repo-root", repo_.string(), "--thread-id", "main"});
    } else {
      args.insert(args.end(), {"--dir", source_.string(), "--overlay"});
    }
    // Without restarts: a killed worker's mount is removed, and what survives is read after a
    // mount of the same overlay (restart_test.cc covers a worker replaced under the mount).
    args.insert(args.end(), {"--overlay-dir", overlay_.string(), "--mountpoint", mnt_.string(),
                             "--foreground", "--json", "--restart-budget", "0"});
    return args;
  }

  // Mounts (or mounts again: the same overlay directory, so the changes are resumed) and
  // reads the ready line for the pids of the supervisor, worker and guard.
  void mount() {
    ASSERT_FALSE(supervisor_) << "already mounted";
    CommandResult refused;
    ASSERT_TRUE(try_mount(refused)) << "no ready line from `mount` (exit " << refused.exit_code
                                    << "):\n" << refused.err;
  }

  // mount(), which may be refused: then false, with how `mount` exited in `refused`.
  bool try_mount(CommandResult& refused) {
    const auto started = Clock::now();
    supervisor_ = std::make_unique<ChildProcess>(launcher_argv(mount_args()));
    const auto line = supervisor_->read_line(kReadyTimeout);
    if (!line) {
      refused = supervisor_->finish(5s);
      supervisor_.reset();
      return false;
    }
    check_ready(*line, started);
    return true;
  }

  void check_ready(const std::string& line, Clock::time_point started) {
    const Json ready = Json::parse(line, nullptr, false);
    ASSERT_TRUE(ready.is_object() && ready.value("kind", "") == "MountReady") << line;
    worker_ = ready.value("pid", -1);
    guard_ = ready.value("guard_pid", -1);
    ASSERT_EQ(ready.value("supervisor_pid", -1), supervisor_->pid()) << line;
    ASSERT_GT(worker_, 0) << line;
    ASSERT_GT(guard_, 0) << line;
    ASSERT_TRUE(heddle_mounted(mnt_));
    dead_mount_expected_ = false;
    ++mounts_;
    std::printf("[mount] #%d ready after %ld ms (worker %d, supervisor %d, guard %d)\n", mounts_,
                ms_since(started), worker_, supervisor_->pid(), guard_);
    // The worker empties DIR/work when it starts: no temporary of an earlier life is left.
    EXPECT_EQ(work_entries(), std::vector<std::string>{}) << "DIR/work after mount #" << mounts_;
  }

  // Ends the mount by `fault` and checks the aftermath: within kSettle the worker and guard
  // are gone, the supervisor has exited as it should, and the mount is removed (except after
  // SIGKILL of all three: nobody is left to remove it, and the next mount removes the dead one).
  void end_mount(Fault fault) {
    ASSERT_TRUE(supervisor_) << "not mounted";
    const pid_t supervisor = supervisor_->pid();
    const auto started = Clock::now();
    CommandResult unmount;
    switch (fault) {
      case Fault::kUnmount:
        unmount = run_command(launcher_argv({"unmount", mnt_.string()}), 30s);
        EXPECT_EQ(unmount.exit_code, 0) << unmount.out << unmount.err;
        break;
      case Fault::kKillWorker:
        ASSERT_EQ(::kill(worker_, SIGKILL), 0);
        break;
      case Fault::kKillSupervisor:
        ASSERT_EQ(::kill(supervisor, SIGKILL), 0);
        break;
      case Fault::kKillGuard:
        ASSERT_EQ(::kill(guard_, SIGKILL), 0);
        break;
      case Fault::kKillAll:
        ASSERT_EQ(::kill(supervisor, SIGKILL), 0);
        ASSERT_EQ(::kill(worker_, SIGKILL), 0);
        ASSERT_EQ(::kill(guard_, SIGKILL), 0);
        break;
    }
    const CommandResult result = supervisor_->finish(kSettle + 1s);
    EXPECT_FALSE(result.timed_out) << "the supervisor (or a child holding its stderr) was still "
                                      "there after "
                                   << fault_name(fault) << "\n"
                                   << result.err;
    switch (fault) {
      case Fault::kUnmount: EXPECT_EQ(result.exit_code, 0) << result.err; break;
      case Fault::kKillWorker:
      case Fault::kKillGuard: EXPECT_EQ(result.exit_code, 1) << result.err; break;
      case Fault::kKillSupervisor:
      case Fault::kKillAll: EXPECT_EQ(result.exit_code, -1) << result.err; break;
    }
    for (const pid_t pid : {worker_, guard_}) {
      EXPECT_TRUE(eventually([&] { return process_gone(pid); }, kSettle))
          << (pid == worker_ ? "worker " : "guard ") << pid << " outlived the " << fault_name(fault);
    }
    if (fault == Fault::kKillAll) {
      dead_mount_expected_ = true;
    } else {
      EXPECT_TRUE(eventually([&] { return !heddle_mounted(mnt_); }, kSettle))
          << "the mount outlived the " << fault_name(fault);
    }
    supervisor_.reset();
    worker_ = guard_ = -1;
    std::printf("[end] %s: settled after %ld ms\n", fault_name(fault).c_str(), ms_since(started));
    if (HasFailure()) std::printf("[end] supervisor stderr:\n%s", result.err.c_str());
  }

  // Names in DIR/work (copy-ups in progress and other temporaries).
  [[nodiscard]] std::vector<std::string> work_entries() const {
    std::vector<std::string> names;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(overlay_ / "work", ec)) {
      names.push_back(entry.path().filename().string());
    }
    if (ec) names.push_back("<cannot list: " + ec.message() + ">");
    std::sort(names.begin(), names.end());
    return names;
  }

  // A regular file in DIR/work of at least `min_size` bytes: a copy-up under way.
  [[nodiscard]] std::optional<std::uint64_t> temp_in_work(std::uint64_t min_size) const {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(overlay_ / "work", ec)) {
      struct stat st {};
      if (::lstat(entry.path().c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
          static_cast<std::uint64_t>(st.st_size) >= min_size) {
        return static_cast<std::uint64_t>(st.st_size);
      }
    }
    return std::nullopt;
  }

  // The mount and the mirror hold the same tree.
  void expect_mount_matches_mirror(const std::string& when) {
    const TreeSnapshot expected = snapshot_tree(mirror_);
    const TreeSnapshot actual = snapshot_tree(mnt_);
    EXPECT_TRUE(actual == expected) << when << ": the mount differs from what was acknowledged:\n"
                                    << snapshot_diff(expected, actual);
  }

  // Forks a writer running `body` in the child (which _exits with its return value).
  pid_t fork_writer(const std::function<int()>& body) {
    // A raw fork, not a helper program: the writer under test is `body`, in the child.
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      _exit(body());
    }
    writers_.push_back(pid);
    return pid;
  }

  // Waits for a writer to end (after its mount went away it must get an error, not hang).
  void expect_writer_ends(pid_t pid, const std::string& what) {
    int status = 0;
    const bool ended = eventually(
        [&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, kSettle);
    EXPECT_TRUE(ended) << what << ": the writer " << pid << " hung in the mount";
    if (!ended) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    std::erase(writers_, pid);
  }

  fs::path root_, mnt_, source_, repo_, mirror_, overlay_, tmpfs_;
  Kind kind_ = Kind::kDir;
  TreeSnapshot lower_before_;
  std::unique_ptr<ChildProcess> supervisor_;
  pid_t worker_ = -1;
  pid_t guard_ = -1;
  int mounts_ = 0;
  bool dead_mount_expected_ = false;
  std::vector<pid_t> writers_;
};

// ---- 1. acknowledged data survives every end of a mount --------------------------------------

void populate_lower(const fs::path& base) {
  put(base, "lower/edit.txt", pattern_bytes(11, 0, 100 * kKiB));
  std::string log;
  for (int i = 0; i < 100; ++i) log += "lower line " + std::to_string(i) + "\n";
  put(base, "lower/append.log", log);
  put(base, "lower/trunc.bin", pattern_bytes(12, 0, 64 * kKiB));
  put(base, "lower/gone.txt", "delete me\n");
  put(base, "lower/old-name.txt", "moving\n");
  put(base, "lower/script.sh", "#!/bin/sh\necho hi\n", 0755);
  put(base, "lower/keep.txt", "untouched\n");
  fs::create_symlink("keep.txt", base / "lower/link");
  put(base, "deep/a/b/c.txt", "deep\n");
  put(base, "opaque/x.txt", "in the lower dir\n");
  put(base, "opaque/sub/y.txt", "also lower\n");
  put(base, "lower/replaced.txt", "replaced by a file made in the mount\n");
  put(base, "lower/times.txt", "its times change\n");
}

// The times apply_changes() sets.
constexpr timespec kChangedTime = {1000000000, 123456789};

// Every kind of change, each acknowledged: by close(), by fsync() (two files stay open), by
// fsync of the directory where a name changed.
void apply_changes(Ops& ops) {
  ops.write_file("new.txt", "hello, overlay\n");
  ops.mkdir("made");
  ops.mkdir("made/dir");
  ops.write_file("made/dir/x.bin", pattern_bytes(21, 0, 200 * kKiB));
  ops.write_file("big-new.bin", pattern_bytes(22, 0, 3 * kMiB), /*do_fsync=*/true);
  ops.pwrite_file("lower/edit.txt", 50000, pattern_bytes(23, 0, 1000));
  std::string appended;
  for (int i = 0; i < 20; ++i) appended += "appended line " + std::to_string(i) + "\n";
  ops.append_file("lower/append.log", appended, /*keep_open=*/true);
  ops.truncate_file("lower/trunc.bin", 1234);
  ops.unlink("lower/gone.txt");
  ops.fsync_dir("lower");
  ops.rename("lower/old-name.txt", "renamed.txt");
  ops.fsync_dir("lower");
  ops.fsync_dir("");
  ops.chmod("lower/script.sh", 0700);
  ops.symlink("new.txt", "new-link");
  ops.link("new.txt", "made/hard.txt");
  ops.fsync_dir("made");
  ops.write_file("deep/a/b/c.txt", "deeper\n");
  ops.write_file("open-fsynced.log", pattern_bytes(24, 0, 10 * kKiB), /*do_fsync=*/true,
                 /*keep_open=*/true);
  ops.write_file("temp.txt", "gone again\n");
  ops.unlink("temp.txt");
  // A lower directory removed and made again: nothing of the lower one may come back.
  ops.unlink("opaque/sub/y.txt");
  ops.rmdir("opaque/sub");
  ops.unlink("opaque/x.txt");
  ops.rmdir("opaque");
  ops.mkdir("opaque");
  ops.write_file("opaque/z.txt", "a new directory\n");
  ops.link("lower/keep.txt", "keep-link.txt");  // a hard link to a lower file
  ops.write_file("replacement.txt", "made in the mount\n");
  ops.rename("replacement.txt", "lower/replaced.txt");  // over a lower file
  ops.fsync_dir("lower");
  ops.set_times("lower/times.txt", kChangedTime);
  ops.set_times("new.txt", kChangedTime);
  ops.fsync_dir("");
}

// The times set by apply_changes() are kept.
void expect_changed_times(const fs::path& base, const std::string& when) {
  for (const char* rel : {"lower/times.txt", "new.txt"}) {
    struct stat st {};
    ASSERT_EQ(::stat((base / rel).c_str(), &st), 0) << rel << ": " << std::strerror(errno);
    EXPECT_EQ(st.st_mtim.tv_sec, kChangedTime.tv_sec) << when << ": mtime of " << rel;
    EXPECT_EQ(st.st_mtim.tv_nsec, kChangedTime.tv_nsec) << when << ": mtime of " << rel;
  }
}

class NothingLost : public OverlayDurability {
 protected:
  void run(Kind kind, Fault fault) {
    ASSERT_NO_FATAL_FAILURE(make_lower(kind, populate_lower));
    ASSERT_NO_FATAL_FAILURE(mount());
    expect_mount_matches_mirror("the fresh mount");
    {
      Ops native(mirror_);
      apply_changes(native);
      ASSERT_TRUE(native.failures().empty()) << "on the native mirror:\n" << native.report();
    }
    Ops ops(mnt_);
    apply_changes(ops);
    ASSERT_TRUE(ops.failures().empty()) << "through the mount:\n" << ops.report();
    expect_mount_matches_mirror("before the " + fault_name(fault));
    expect_changed_times(mnt_, "before the " + fault_name(fault));

    ASSERT_NO_FATAL_FAILURE(end_mount(fault));
    ops.close_held();
    ASSERT_NO_FATAL_FAILURE(mount());
    expect_mount_matches_mirror("remounted after the " + fault_name(fault));
    expect_changed_times(mnt_, "remounted after the " + fault_name(fault));

    // The overlay resumed is writable, and what is written now survives too.
    {
      Ops native(mirror_);
      native.write_file("resumed.txt", "after the remount\n");
      native.unlink("new-link");
      Ops more(mnt_);
      more.write_file("resumed.txt", "after the remount\n");
      more.unlink("new-link");
      EXPECT_TRUE(more.failures().empty()) << "through the remount:\n" << more.report();
    }
    ASSERT_NO_FATAL_FAILURE(end_mount(Fault::kUnmount));
    ASSERT_NO_FATAL_FAILURE(mount());
    expect_mount_matches_mirror("mounted a third time");
    expect_changed_times(mnt_, "mounted a third time");
    ASSERT_NO_FATAL_FAILURE(end_mount(Fault::kUnmount));
    expect_lower_untouched();
  }
};

TEST_F(NothingLost, DirUnmountAndRemount) { run(Kind::kDir, Fault::kUnmount); }
TEST_F(NothingLost, DirSigkillOfTheWorker) { run(Kind::kDir, Fault::kKillWorker); }
TEST_F(NothingLost, DirSigkillOfTheSupervisor) { run(Kind::kDir, Fault::kKillSupervisor); }
TEST_F(NothingLost, DirSigkillOfTheGuard) { run(Kind::kDir, Fault::kKillGuard); }
TEST_F(NothingLost, DirSigkillOfAllThree) { run(Kind::kDir, Fault::kKillAll); }
TEST_F(NothingLost, GitUnmountAndRemount) { run(Kind::kGit, Fault::kUnmount); }
TEST_F(NothingLost, GitSigkillOfTheWorker) { run(Kind::kGit, Fault::kKillWorker); }
TEST_F(NothingLost, GitSigkillOfTheSupervisor) { run(Kind::kGit, Fault::kKillSupervisor); }
TEST_F(NothingLost, GitSigkillOfTheGuard) { run(Kind::kGit, Fault::kKillGuard); }
TEST_F(NothingLost, GitSigkillOfAllThree) { run(Kind::kGit, Fault::kKillAll); }

// Names in the source that look like the overlay's own markers (.wh.NAME, .wh..wh..opq) are
// data like any other: whatever a listing of the mount shows can be looked up and read with
// the source's bytes, and they hide nothing of the source (NAME and the directory's files
// stay), before and after a remount.
class LowerNames : public OverlayDurability {
 protected:
  void run(Kind kind) {
    ASSERT_NO_FATAL_FAILURE(make_lower(kind, [](const fs::path& base) {
      put(base, "foo", "foo\n");
      put(base, ".wh.foo", "a file of the source named like a whiteout\n");
      put(base, "dir/.wh..wh..opq", "named like an opaque marker\n");
      put(base, "dir/kept.txt", "kept\n");
    }, /*mirror=*/false));
    // The source as the mount should show it (the git work tree less .git).
    TreeSnapshot expected = snapshot_tree(lower_root());
    std::erase_if(expected, [](const auto& entry) { return entry.first.starts_with(".git"); });
    ASSERT_NO_FATAL_FAILURE(mount());
    for (const char* when : {"in the fresh mount", "after a remount"}) {
      SCOPED_TRACE(when);
      const TreeSnapshot shown = snapshot_tree(mnt_);
      EXPECT_TRUE(shown == expected) << "the mount does not show the source as it is:\n"
                                     << snapshot_diff(expected, shown);
      if (std::string(when) == "in the fresh mount") {
        ASSERT_NO_FATAL_FAILURE(end_mount(Fault::kUnmount));
        ASSERT_NO_FATAL_FAILURE(mount());
      }
    }
    ASSERT_NO_FATAL_FAILURE(end_mount(Fault::kUnmount));
    expect_lower_untouched();
  }
};

TEST_F(LowerNames, DirNamesLikeWhiteoutMarkersAreData) { run(Kind::kDir); }
TEST_F(LowerNames, GitNamesLikeWhiteoutMarkersAreData) { run(Kind::kGit); }

// ---- 2. kills in the middle of writing -------------------------------------------------------

class WritePhase : public OverlayDurability {
 protected:
  // (a) A 64 MiB lower file is opened for writing; the kill lands while its copy-up runs
  // (a temporary of over 1 MiB in DIR/work, the writer's open not yet returned). The writer
  // would write one 4 KiB block at 32 MiB and fsync. Afterwards the file is wholly the old
  // content or wholly the new, no temporary shows in the mount or stays in DIR/work, and
  // the same write, done again, lands.
  void copy_up(Kind kind, Fault fault) {
    const std::string old_content = pattern_bytes(31, 0, kBigBytes);
    const std::string block = pattern_bytes(32, 0, 4096);
    constexpr off_t kAt = 32 * kMiB;
    std::string new_content = old_content;
    new_content.replace(kAt, block.size(), block);
    const std::string old_sha = sha256_hex(old_content);
    const std::string new_sha = sha256_hex(new_content);
    const std::string small = "small and untouched\n";
    ASSERT_NO_FATAL_FAILURE(make_lower(kind, [&](const fs::path& base) {
      put(base, "big.bin", old_content);
      put(base, "small.txt", small);
    }, /*mirror=*/false, /*bare_work_tree=*/true));
    ASSERT_NO_FATAL_FAILURE(mount());

    Shared shared;
    const fs::path big = mnt_ / "big.bin";
    const pid_t writer = fork_writer([&]() -> int {
      const int fd = ::open(big.c_str(), O_RDWR | O_CLOEXEC);
      if (fd < 0) {
        shared->error = errno;
        return 1;
      }
      shared->stage = 1;  // opened: the copy-up is over
      if (!pwrite_all(fd, block, kAt)) {
        shared->error = errno;
        return 1;
      }
      shared->stage = 2;
      if (::fsync(fd) != 0) {
        shared->error = errno;
        return 1;
      }
      shared->stage = 3;
      return ::close(fd) == 0 ? 0 : 1;
    });

    // Catch the copy-up in the act.
    const auto started = Clock::now();
    std::optional<std::uint64_t> seen;
    while (ms_since(started) < 20000 && shared->stage == 0 && shared->error == 0) {
      if ((seen = temp_in_work(1 * kMiB))) break;
      ::usleep(100);
    }
    ASSERT_TRUE(seen.has_value())
        << "no copy-up was caught in progress (the writer's open "
        << (shared->stage > 0 ? "returned" : "failed with " + errno_text(shared->error)) << " after "
        << ms_since(started) << " ms first); DIR/work: " << ::testing::PrintToString(work_entries());
    ASSERT_EQ(shared->stage, 0) << "the open returned while the copy-up was caught";
    std::printf("[copy-up] caught at %llu of %zu bytes, %ld ms after the open\n",
                static_cast<unsigned long long>(*seen), kBigBytes, ms_since(started));
    ASSERT_NO_FATAL_FAILURE(end_mount(fault));
    expect_writer_ends(writer, "copy-up");
    std::printf("[copy-up] the writer reached stage %d, error %s\n", shared->stage.load(),
                errno_text(shared->error).c_str());

    ASSERT_NO_FATAL_FAILURE(mount());
    // Exactly the lower names: no temporary, no half file under another name.
    const TreeSnapshot tree = snapshot_tree(mnt_);
    std::set<std::string> names;
    for (const auto& [name, entry] : tree) names.insert(name);
    EXPECT_EQ(names, (std::set<std::string>{"big.bin", "small.txt"})) << ::testing::PrintToString(tree);
    std::uint64_t size = 0;
    const std::string sha = sha256_file(big, &size);
    EXPECT_TRUE(sha == old_sha || sha == new_sha)
        << "big.bin is neither the old nor the new content: " << size << " bytes, sha256 " << sha;
    if (shared->stage >= 3) {
      EXPECT_EQ(sha, new_sha) << "the fsync'd block was lost";
    }
    std::printf("[copy-up] after the remount big.bin is the %s content\n",
                sha == old_sha ? "old" : sha == new_sha ? "new" : "WRONG");
    EXPECT_EQ(slurp(mnt_ / "small.txt"), small);
    // Nothing but whole files in DIR/upper either.
    for (const auto& [name, entry] : snapshot_tree(overlay_ / "upper", {.modes = false})) {
      EXPECT_TRUE(name == "big.bin") << "unexpected in DIR/upper: " << name << " " << entry;
    }

    // The write, done again, lands, and survives an unmount.
    {
      const int fd = ::open(big.c_str(), O_RDWR | O_CLOEXEC);
      ASSERT_GE(fd, 0) << std::strerror(errno);
      EXPECT_TRUE(pwrite_all(fd, block, kAt)) << std::strerror(errno);
      EXPECT_EQ(::fsync(fd), 0) << std::strerror(errno);
      EXPECT_EQ(::close(fd), 0) << std::strerror(errno);
    }
    ASSERT_NO_FATAL_FAILURE(end_mount(Fault::kUnmount));
    ASSERT_NO_FATAL_FAILURE(mount());
    EXPECT_EQ(sha256_file(big), new_sha);
    ASSERT_NO_FATAL_FAILURE(end_mount(Fault::kUnmount));
    expect_lower_untouched();
  }

  // (a') As (a), with only the supervisor SIGKILLed, and the overlay mounted again at once,
  // while the old worker may still be finishing its copy-up: a second worker must never run
  // on the same overlay (the lock outlives the supervisor until its worker has exited). Each
  // refused attempt exits 1 and says why; once one succeeds the old worker is gone, and the
  // file is wholly old or wholly new.
  void remount_at_once(Kind kind) {
    const std::string old_content = pattern_bytes(31, 0, kBigBytes);
    const std::string block = pattern_bytes(32, 0, 4096);
    constexpr off_t kAt = 32 * kMiB;
    std::string new_content = old_content;
    new_content.replace(kAt, block.size(), block);
    ASSERT_NO_FATAL_FAILURE(make_lower(kind, [&](const fs::path& base) {
      put(base, "big.bin", old_content);
    }, /*mirror=*/false, /*bare_work_tree=*/true));
    ASSERT_NO_FATAL_FAILURE(mount());
    Shared shared;
    const fs::path big = mnt_ / "big.bin";
    const pid_t writer = fork_writer([&]() -> int {
      const int fd = ::open(big.c_str(), O_RDWR | O_CLOEXEC);
      if (fd < 0 || !pwrite_all(fd, block, kAt) || ::fsync(fd) != 0) {
        shared->error = errno;
        return 1;
      }
      shared->stage = 3;
      return ::close(fd) == 0 ? 0 : 1;
    });
    const auto started = Clock::now();
    std::optional<std::uint64_t> seen;
    while (ms_since(started) < 20000 && shared->stage == 0 && shared->error == 0) {
      if ((seen = temp_in_work(1 * kMiB))) break;
      ::usleep(100);
    }
    ASSERT_TRUE(seen.has_value()) << "no copy-up was caught in progress";

    const pid_t old_worker = worker_;
    std::unique_ptr<ChildProcess> old_supervisor = std::move(supervisor_);
    old_supervisor->signal(SIGKILL);
    const auto killed = Clock::now();
    int refusals = 0;
    bool old_worker_alive_at_ready = false;
    for (;;) {
      CommandResult refused;
      if (try_mount(refused)) {
        old_worker_alive_at_ready = !process_gone(old_worker);
        break;
      }
      ++refusals;
      EXPECT_EQ(refused.exit_code, 1) << "a refused mount: " << refused.err;
      EXPECT_FALSE(refused.err.empty()) << "a refused mount said nothing";
      if (refusals == 1) std::printf("[race] first refusal: %s", refused.err.c_str());
      ASSERT_LT(ms_since(killed), 15000) << "no mount within 15 s of the kill";
      std::this_thread::sleep_for(20ms);
    }
    ASSERT_FALSE(HasFatalFailure());
    std::printf("[race] mounted again %ld ms after the kill, after %d refusals\n", ms_since(killed),
                refusals);
    EXPECT_FALSE(old_worker_alive_at_ready)
        << "a new worker runs on the overlay while the old worker " << old_worker << " still does";
    const CommandResult old_result = old_supervisor->finish(kSettle);
    EXPECT_EQ(old_result.exit_code, -1);
    expect_writer_ends(writer, "copy-up");
    const std::string sha = sha256_file(big);
    EXPECT_TRUE(sha == sha256_hex(old_content) || sha == sha256_hex(new_content))
        << "big.bin is neither the old nor the new content: sha256 " << sha;
    if (shared->stage >= 3) {
      EXPECT_EQ(sha, sha256_hex(new_content)) << "the fsync'd block was lost";
    }
    std::set<std::string> names;
    for (const auto& [name, entry] : snapshot_tree(mnt_)) names.insert(name);
    EXPECT_EQ(names, std::set<std::string>{"big.bin"});
    ASSERT_NO_FATAL_FAILURE(end_mount(Fault::kUnmount));
    expect_lower_untouched();
  }

  // (b) A writer renames files back and forth as fast as it can: lower files (copied up and
  // whited out on the first rename) and files made in the mount, within one directory and
  // across two, and a directory made in the mount; and swaps pairs with RENAME_EXCHANGE (a
  // lower file with a file made in the mount, and two lower files). The kill lands in the
  // storm. Afterwards every renamed file is under exactly one of its two names with its
  // content, every swapped pair holds its two contents (in either order), and no other name
  // exists.
  void rename_storm(Kind kind, Fault fault) {
    struct Pair {
      std::string a, b, content;
    };
    std::vector<Pair> pairs;
    for (int i = 0; i < 8; ++i) {
      const std::string n = std::to_string(i);
      pairs.push_back({"storm/lower" + n, (i % 2 ? "storm2/lower" : "storm/lower-moved") + n,
                       pattern_bytes(40 + i, 0, 3000 + 100 * i)});
    }
    for (int i = 0; i < 8; ++i) {
      const std::string n = std::to_string(i);
      pairs.push_back({"storm/upper" + n, (i % 2 ? "storm2/upper" : "storm/upper-moved") + n,
                       pattern_bytes(50 + i, 0, 2000 + 100 * i)});
    }
    const std::vector<std::string> dir_files = {"f0", "f1", "f2", "f3"};
    // Swapped pairs: a holds content, b holds other_content (b is made in the mount for the
    // first two, lower for the last).
    struct Swap {
      std::string a, b, content, other_content;
      bool b_lower;
    };
    const std::vector<Swap> swaps = {
        {"xchg/lower0", "xchg/upper0", pattern_bytes(90, 0, 5000), pattern_bytes(91, 0, 7000), false},
        {"xchg/lower1", "xchg2/upper1", pattern_bytes(92, 0, 6000), pattern_bytes(93, 0, 100), false},
        {"xchg/lower2", "xchg/lower3", pattern_bytes(94, 0, 4000), pattern_bytes(95, 0, 9000), true}};
    ASSERT_NO_FATAL_FAILURE(make_lower(kind, [&](const fs::path& base) {
      for (int i = 0; i < 8; ++i) put(base, pairs[i].a, pairs[i].content);
      put(base, "storm2/keep.txt", "keep\n");
      for (const Swap& swap : swaps) {
        put(base, swap.a, swap.content);
        if (swap.b_lower) put(base, swap.b, swap.other_content);
      }
      put(base, "xchg2/keep.txt", "keep\n");
    }, /*mirror=*/false));
    ASSERT_NO_FATAL_FAILURE(mount());
    {
      Ops ops(mnt_);
      for (int i = 8; i < 16; ++i) ops.write_file(pairs[i].a, pairs[i].content, true);
      for (const Swap& swap : swaps) {
        if (!swap.b_lower) ops.write_file(swap.b, swap.other_content, true);
      }
      ops.fsync_dir("xchg");
      ops.fsync_dir("xchg2");
      ops.mkdir("sdir1");
      for (const auto& f : dir_files) ops.write_file("sdir1/" + f, "in the dir: " + f + "\n", true);
      ops.fsync_dir("storm");
      ops.fsync_dir("");
      ASSERT_TRUE(ops.failures().empty()) << ops.report();
    }

    Shared shared;
    const fs::path mnt = mnt_;
    const pid_t writer = fork_writer([&]() -> int {
      std::vector<bool> moved(pairs.size() + 1, false);
      for (;;) {
        for (std::size_t i = 0; i <= pairs.size(); ++i) {
          const std::string a = i < pairs.size() ? pairs[i].a : "sdir1";
          const std::string b = i < pairs.size() ? pairs[i].b : "sdir2";
          const fs::path from = mnt / (moved[i] ? b : a);
          const fs::path to = mnt / (moved[i] ? a : b);
          if (::rename(from.c_str(), to.c_str()) != 0) {
            shared->error = errno;
            return 1;
          }
          moved[i] = !moved[i];
          ++shared->counter;
        }
        for (const Swap& swap : swaps) {
          if (::renameat2(AT_FDCWD, (mnt / swap.a).c_str(), AT_FDCWD, (mnt / swap.b).c_str(),
                          RENAME_EXCHANGE) != 0) {
            shared->error = errno;
            return 1;
          }
          ++shared->counter;
        }
      }
    });
    const auto started = Clock::now();
    EXPECT_TRUE(eventually([&] { return shared->counter >= 2000 || shared->error != 0; }, 20s));
    ASSERT_EQ(shared->error, 0) << "a rename failed before the kill: " << errno_text(shared->error);
    ASSERT_GE(shared->counter, 2000u) << "the storm did not get going";
    const std::uint64_t before = shared->counter;
    std::printf("[storm] %llu renames in %ld ms before the kill\n",
                static_cast<unsigned long long>(before), ms_since(started));
    ASSERT_NO_FATAL_FAILURE(end_mount(fault));
    expect_writer_ends(writer, "rename storm");
    std::printf("[storm] %llu renames in all; the writer ended with %s\n",
                static_cast<unsigned long long>(shared->counter.load()),
                errno_text(shared->error).c_str());

    ASSERT_NO_FATAL_FAILURE(mount());
    std::set<std::string> expected_names = {"storm", "storm2", "storm2/keep.txt", "xchg", "xchg2",
                                            "xchg2/keep.txt"};
    for (const Swap& swap : swaps) {
      expected_names.insert(swap.a);
      expected_names.insert(swap.b);
      const std::string at_a = sha256_hex(slurp(mnt_ / swap.a));
      const std::string at_b = sha256_hex(slurp(mnt_ / swap.b));
      const std::string one = sha256_hex(swap.content);
      const std::string other = sha256_hex(swap.other_content);
      EXPECT_TRUE((at_a == one && at_b == other) || (at_a == other && at_b == one))
          << swap.a << " <-> " << swap.b << " (RENAME_EXCHANGE): the pair no longer holds its two "
          << "contents: " << at_a << " and " << at_b << ", expected " << one << " and " << other;
    }
    for (const Pair& pair : pairs) {
      const bool at_a = ::access((mnt_ / pair.a).c_str(), F_OK) == 0;
      const bool at_b = ::access((mnt_ / pair.b).c_str(), F_OK) == 0;
      EXPECT_NE(at_a, at_b) << pair.a << " <-> " << pair.b << ": "
                            << (at_a ? "under both names" : "under neither name");
      const std::string& name = at_b ? pair.b : pair.a;
      expected_names.insert(name);
      if (at_a || at_b) {
        EXPECT_EQ(sha256_hex(slurp(mnt_ / name)), sha256_hex(pair.content)) << name;
      }
    }
    const bool dir1 = fs::is_directory(mnt_ / "sdir1");
    const bool dir2 = fs::is_directory(mnt_ / "sdir2");
    EXPECT_NE(dir1, dir2) << "sdir1 <-> sdir2: " << (dir1 ? "under both names" : "under neither name");
    const std::string dir = dir2 ? "sdir2" : "sdir1";
    expected_names.insert(dir);
    for (const auto& f : dir_files) {
      expected_names.insert(dir + "/" + f);
      EXPECT_EQ(slurp(mnt_ / dir / f), "in the dir: " + f + "\n") << dir << "/" << f;
    }
    const TreeSnapshot tree = snapshot_tree(mnt_);
    std::set<std::string> names;
    for (const auto& [name, entry] : tree) names.insert(name);
    EXPECT_EQ(names, expected_names) << "the names in the mount after the storm";
    ASSERT_NO_FATAL_FAILURE(end_mount(Fault::kUnmount));
    expect_lower_untouched();
  }

  // (c) A writer holds four files open and writes them in 16 KiB chunks: a new file (fsync),
  // a lower file opened O_APPEND (fdatasync), a lower file overwritten in place from offset 0
  // (fsync), and a lower file mapped MAP_SHARED and written through the mapping (msync
  // MS_SYNC). After each sync it publishes how far the file is acknowledged, and writes
  // another chunk it does not sync before the next round. The kill lands in this.
  // Afterwards each file holds at least what was acknowledged, byte for byte.
  void open_for_writing(Kind kind, Fault fault) {
    std::string lower_log;
    for (int i = 0; i < 50; ++i) lower_log += "lower line " + std::to_string(i) + "\n";
    const std::string lower_rewrite = pattern_bytes(60, 0, 2 * kMiB);
    const std::string lower_mapped = pattern_bytes(61, 0, 4 * kMiB);
    ASSERT_NO_FATAL_FAILURE(make_lower(kind, [&](const fs::path& base) {
      put(base, "w/append.log", lower_log);
      put(base, "w/rewrite.bin", lower_rewrite);
      put(base, "w/mapped.bin", lower_mapped);
    }, /*mirror=*/false));
    ASSERT_NO_FATAL_FAILURE(mount());

    constexpr std::size_t kChunk = 16 * kKiB;
    constexpr std::uint64_t kTarget = 1 * kMiB;  // acknowledged per file before the kill
    Shared shared;
    const fs::path mnt = mnt_;
    const std::size_t mapped_size = lower_mapped.size();
    const pid_t writer = fork_writer([&]() -> int {
      const int fds[4] = {
          ::open((mnt / "w/new.log").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644),
          ::open((mnt / "w/append.log").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC),
          ::open((mnt / "w/rewrite.bin").c_str(), O_RDWR | O_CLOEXEC),
          ::open((mnt / "w/mapped.bin").c_str(), O_RDWR | O_CLOEXEC)};
      for (const int fd : fds) {
        if (fd < 0) {
          shared->error = errno;
          return 1;
        }
      }
      void* map = ::mmap(nullptr, mapped_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[3], 0);
      if (map == MAP_FAILED) {
        shared->error = errno;
        return 1;
      }
      char* const mapped = static_cast<char*>(map);
      shared->stage = 1;
      std::uint64_t written[4] = {0, 0, 0, 0};
      const auto write_chunk = [&](int i) {
        const std::string chunk = pattern_bytes(70 + i, written[i], kChunk);
        bool ok = true;
        if (i == 3) {
          if (written[i] + kChunk > mapped_size) return true;  // the mapping is full
          std::memcpy(mapped + written[i], chunk.data(), kChunk);
        } else if (i == 2) {
          ok = pwrite_all(fds[i], chunk, static_cast<off_t>(written[i]));
        } else {
          ok = write_all(fds[i], chunk);
        }
        if (ok) written[i] += kChunk;
        return ok;
      };
      const auto sync = [&](int i) {
        switch (i) {
          case 1: return ::fdatasync(fds[i]) == 0;
          case 3: return ::msync(mapped, mapped_size, MS_SYNC) == 0;
          default: return ::fsync(fds[i]) == 0;
        }
      };
      for (;;) {
        for (int i = 0; i < 4; ++i) {
          if (!write_chunk(i) || !sync(i)) {
            shared->error = errno;
            return 1;
          }
          shared->acked[i] = written[i];
          if (!write_chunk(i)) {  // in flight, not acknowledged
            shared->error = errno;
            return 1;
          }
        }
        ++shared->counter;
      }
    });
    const auto started = Clock::now();
    const auto all_acked = [&] {
      for (int i = 0; i < 4; ++i) {
        if (shared->acked[i] < kTarget) return false;
      }
      return true;
    };
    EXPECT_TRUE(eventually([&] { return shared->error != 0 || all_acked(); }, 30s));
    ASSERT_EQ(shared->error, 0) << "the writer failed before the kill: " << errno_text(shared->error);
    ASSERT_TRUE(all_acked()) << "the writer was too slow";
    std::printf("[open] %llu rounds in %ld ms before the kill\n",
                static_cast<unsigned long long>(shared->counter.load()), ms_since(started));
    ASSERT_NO_FATAL_FAILURE(end_mount(fault));
    expect_writer_ends(writer, "open for writing");
    // Read after the writer ended: every sync that succeeded, even one after the kill.
    const std::uint64_t acked[4] = {shared->acked[0], shared->acked[1], shared->acked[2],
                                    shared->acked[3]};
    std::printf("[open] acknowledged %llu, %llu, %llu, %llu bytes; the writer ended with %s\n",
                static_cast<unsigned long long>(acked[0]), static_cast<unsigned long long>(acked[1]),
                static_cast<unsigned long long>(acked[2]), static_cast<unsigned long long>(acked[3]),
                errno_text(shared->error).c_str());

    ASSERT_NO_FATAL_FAILURE(mount());
    const std::string new_log = slurp(mnt_ / "w/new.log");
    ASSERT_GE(new_log.size(), acked[0]) << "w/new.log lost fsync'd bytes";
    EXPECT_TRUE(new_log.compare(0, acked[0], pattern_bytes(70, 0, acked[0])) == 0)
        << "w/new.log: the fsync'd bytes differ";
    const std::string append_log = slurp(mnt_ / "w/append.log");
    ASSERT_GE(append_log.size(), lower_log.size() + acked[1])
        << "w/append.log lost fdatasync'd bytes";
    EXPECT_TRUE(append_log.compare(0, lower_log.size(), lower_log) == 0)
        << "w/append.log: the lower content before the appended bytes differs";
    EXPECT_TRUE(append_log.compare(lower_log.size(), acked[1], pattern_bytes(71, 0, acked[1])) == 0)
        << "w/append.log: the fdatasync'd appended bytes differ";
    const std::string rewrite = slurp(mnt_ / "w/rewrite.bin");
    ASSERT_GE(rewrite.size(), std::max<std::uint64_t>(acked[2], lower_rewrite.size()))
        << "w/rewrite.bin shrank";
    EXPECT_TRUE(rewrite.compare(0, acked[2], pattern_bytes(72, 0, acked[2])) == 0)
        << "w/rewrite.bin: the fsync'd bytes differ";
    const std::string mapped = slurp(mnt_ / "w/mapped.bin");
    ASSERT_EQ(mapped.size(), lower_mapped.size()) << "w/mapped.bin changed size";
    EXPECT_TRUE(mapped.compare(0, acked[3], pattern_bytes(73, 0, acked[3])) == 0)
        << "w/mapped.bin: the msync'd bytes differ";
    // Past what the writer ever reached, the copied-up lower content is intact.
    const std::uint64_t reached = std::min<std::uint64_t>(acked[3] + 2 * kChunk, lower_mapped.size());
    EXPECT_TRUE(mapped.compare(reached, std::string::npos, lower_mapped, reached) == 0)
        << "w/mapped.bin: the lower bytes past the writes differ";
    const TreeSnapshot tree = snapshot_tree(mnt_);
    std::set<std::string> names;
    for (const auto& [name, entry] : tree) names.insert(name);
    EXPECT_EQ(names, (std::set<std::string>{"w", "w/new.log", "w/append.log", "w/rewrite.bin",
                                            "w/mapped.bin"}));
    ASSERT_NO_FATAL_FAILURE(end_mount(Fault::kUnmount));
    expect_lower_untouched();
  }
};

// (The supervisor's SIGKILL mid copy-up is in the HeavyRemountAtOnce* cases.)
TEST_F(WritePhase, HeavyCopyUpDirSigkillOfTheWorker) { copy_up(Kind::kDir, Fault::kKillWorker); }
TEST_F(WritePhase, HeavyCopyUpDirSigkillOfAllThree) { copy_up(Kind::kDir, Fault::kKillAll); }
TEST_F(WritePhase, HeavyCopyUpGitSigkillOfTheWorker) { copy_up(Kind::kGit, Fault::kKillWorker); }
TEST_F(WritePhase, HeavyCopyUpGitSigkillOfAllThree) { copy_up(Kind::kGit, Fault::kKillAll); }
TEST_F(WritePhase, HeavyRemountAtOnceAfterSupervisorKillMidCopyUpDir) { remount_at_once(Kind::kDir); }
TEST_F(WritePhase, HeavyRemountAtOnceAfterSupervisorKillMidCopyUpGit) { remount_at_once(Kind::kGit); }
TEST_F(WritePhase, RenameStormDirSigkillOfTheWorker) { rename_storm(Kind::kDir, Fault::kKillWorker); }
TEST_F(WritePhase, RenameStormDirSigkillOfTheSupervisor) { rename_storm(Kind::kDir, Fault::kKillSupervisor); }
TEST_F(WritePhase, RenameStormDirSigkillOfAllThree) { rename_storm(Kind::kDir, Fault::kKillAll); }
TEST_F(WritePhase, RenameStormGitSigkillOfTheWorker) { rename_storm(Kind::kGit, Fault::kKillWorker); }
TEST_F(WritePhase, RenameStormGitSigkillOfTheSupervisor) { rename_storm(Kind::kGit, Fault::kKillSupervisor); }
TEST_F(WritePhase, RenameStormGitSigkillOfAllThree) { rename_storm(Kind::kGit, Fault::kKillAll); }
TEST_F(WritePhase, OpenForWritingDirSigkillOfTheWorker) { open_for_writing(Kind::kDir, Fault::kKillWorker); }
TEST_F(WritePhase, OpenForWritingDirSigkillOfTheSupervisor) { open_for_writing(Kind::kDir, Fault::kKillSupervisor); }
TEST_F(WritePhase, OpenForWritingDirSigkillOfAllThree) { open_for_writing(Kind::kDir, Fault::kKillAll); }
TEST_F(WritePhase, OpenForWritingGitSigkillOfTheWorker) { open_for_writing(Kind::kGit, Fault::kKillWorker); }
TEST_F(WritePhase, OpenForWritingGitSigkillOfTheSupervisor) { open_for_writing(Kind::kGit, Fault::kKillSupervisor); }
TEST_F(WritePhase, OpenForWritingGitSigkillOfAllThree) { open_for_writing(Kind::kGit, Fault::kKillAll); }

// ---- 3. a full disk ------------------------------------------------------------------------

// The first error of a writer that writes until the disk is full, and where it came.
struct FillResult {
  std::uint64_t written = 0;
  int error = 0;
  std::string call;
};

FillResult fill(const fs::path& path, std::uint64_t limit) {
  FillResult result;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return {0, errno, "open"};
  const std::string chunk = pattern_bytes(80, 0, 256 * kKiB);
  while (result.written < limit) {
    if (!write_all(fd, chunk)) {
      result.error = errno;
      result.call = "write";
      break;
    }
    result.written += chunk.size();
  }
  if (result.error == 0 && ::fsync(fd) != 0) {
    result.error = errno;
    result.call = "fsync";
  }
  if (::close(fd) != 0 && result.error == 0) {
    result.error = errno;
    result.call = "close";
  }
  return result;
}

class DiskFull : public OverlayDurability {
 protected:
  // Free bytes on the overlay's filesystem.
  [[nodiscard]] std::uint64_t free_bytes() const {
    struct statvfs vfs {};
    if (::statvfs(tmpfs_.c_str(), &vfs) != 0) return 0;
    return std::uint64_t{vfs.f_bavail} * vfs.f_frsize;
  }
};

// A tmpfs of 8 MiB under the overlay. Written first: a.bin (fsync) and b.bin (close), 1 MiB
// each. Then a copy-up that half fits, a file written until the disk is full, an append to
// b.bin and a small file on the full disk: every failure is ENOSPC (never EIO), a failed
// copy-up leaves the lower file showing and no temporary, and a.bin and b.bin are intact,
// also after room is made and the overlay is mounted again.
TEST_F(DiskFull, EnospcReachesTheWriterAndCorruptsNothing) {
  if (!running_as_root()) GTEST_SKIP() << "needs root to mount a small tmpfs under the overlay";
  tmpfs_ = root_ / "small-fs";
  make_dir(tmpfs_);
  ASSERT_EQ(::mount("tmpfs", tmpfs_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=8m,mode=0755"), 0)
      << std::strerror(errno);
  overlay_ = tmpfs_ / "overlay";
  const std::string lower_big = pattern_bytes(81, 0, 2 * kMiB);
  ASSERT_NO_FATAL_FAILURE(make_lower(Kind::kDir, [&](const fs::path& base) {
    put(base, "lower/big.bin", lower_big);
    put(base, "lower/keep.txt", "keep\n");
  }, /*mirror=*/false));
  ASSERT_NO_FATAL_FAILURE(mount());

  // statfs comes from the upper layer's filesystem: df shows the disk that fills.
  struct statvfs vfs {};
  ASSERT_EQ(::statvfs(mnt_.c_str(), &vfs), 0) << std::strerror(errno);
  EXPECT_EQ(std::uint64_t{vfs.f_blocks} * vfs.f_frsize, 8 * kMiB)
      << "statfs of the mount is not the overlay's 8 MiB filesystem";

  const std::string a = pattern_bytes(82, 0, 1 * kMiB);
  const std::string b = pattern_bytes(83, 0, 1 * kMiB);
  {
    Ops ops(mnt_);
    ops.write_file("a.bin", a, /*do_fsync=*/true);
    ops.write_file("b.bin", b);
    ASSERT_TRUE(ops.failures().empty()) << ops.report();
  }

  // Leave 1 MiB free, then copy up the 2 MiB lower file: it fails half way, with ENOSPC.
  const std::uint64_t leave = free_bytes() - 1 * kMiB;
  {
    Ops ops(mnt_);
    ops.write_file("fill1.bin", pattern_bytes(85, 0, leave / (64 * kKiB) * (64 * kKiB)), true);
    ASSERT_TRUE(ops.failures().empty()) << "filling all but 1 MiB: " << ops.report();
  }
  std::printf("[full] %llu bytes free before the copy-up\n",
              static_cast<unsigned long long>(free_bytes()));
  {
    const int fd = ::open((mnt_ / "lower/big.bin").c_str(), O_RDWR | O_CLOEXEC);
    const int open_error = fd < 0 ? errno : 0;
    if (fd >= 0) ::close(fd);
    EXPECT_EQ(open_error, ENOSPC) << "opening a 2 MiB lower file for writing with 1 MiB free";
  }
  EXPECT_EQ(sha256_file(mnt_ / "lower/big.bin"), sha256_hex(lower_big));
  EXPECT_EQ(work_entries(), std::vector<std::string>{}) << "a failed copy-up left its temporary";

  // Fill it: the writer is told ENOSPC (by write, fsync or close).
  const FillResult filled = fill(mnt_ / "fill2.bin", 64 * kMiB);
  std::printf("[full] fill2.bin: %llu bytes written, then %s: %s\n",
              static_cast<unsigned long long>(filled.written), filled.call.c_str(),
              errno_text(filled.error).c_str());
  EXPECT_EQ(filled.error, ENOSPC) << "the writer of a full disk got " << errno_text(filled.error)
                                  << " from " << filled.call;

  // An append to b.bin and a small new file on the full disk: any error is ENOSPC.
  {
    const int fd = ::open((mnt_ / "b.bin").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    const std::string more = pattern_bytes(86, 0, 512 * kKiB);
    int err = write_all(fd, more) ? 0 : errno;
    if (err == 0 && ::fsync(fd) != 0) err = errno;
    if (::close(fd) != 0 && err == 0) err = errno;
    EXPECT_EQ(err, ENOSPC) << "appending 512 KiB to b.bin on a full disk";
  }
  const FillResult small = fill(mnt_ / "small.bin", 256 * kKiB);
  EXPECT_TRUE(small.error == 0 || small.error == ENOSPC)
      << "small.bin: " << errno_text(small.error) << " from " << small.call;
  EXPECT_EQ(sha256_file(mnt_ / "a.bin"), sha256_hex(a)) << "a.bin on the full disk";
  EXPECT_EQ(slurp(mnt_ / "b.bin").substr(0, b.size()), b) << "b.bin on the full disk";

  // Room again: the mount recovers.
  {
    Ops ops(mnt_);
    for (const char* name : {"fill1.bin", "fill2.bin", "small.bin"}) ops.unlink(name);
    ops.truncate_file("b.bin", static_cast<off_t>(b.size()));
    ops.write_file("after.txt", pattern_bytes(84, 0, 100 * kKiB), /*do_fsync=*/true);
    EXPECT_TRUE(ops.failures().empty()) << ops.report();
  }

  ASSERT_NO_FATAL_FAILURE(end_mount(Fault::kUnmount));
  ASSERT_NO_FATAL_FAILURE(mount());
  EXPECT_EQ(sha256_file(mnt_ / "a.bin"), sha256_hex(a)) << "a.bin (fsync'd before the disk filled)";
  EXPECT_EQ(sha256_file(mnt_ / "b.bin"), sha256_hex(b)) << "b.bin (closed before the disk filled)";
  EXPECT_EQ(sha256_file(mnt_ / "after.txt"), sha256_hex(pattern_bytes(84, 0, 100 * kKiB)));
  EXPECT_EQ(sha256_file(mnt_ / "lower/big.bin"), sha256_hex(lower_big));
  EXPECT_EQ(slurp(mnt_ / "lower/keep.txt"), "keep\n");
  const TreeSnapshot tree = snapshot_tree(mnt_);
  std::set<std::string> names;
  for (const auto& [name, entry] : tree) names.insert(name);
  EXPECT_EQ(names, (std::set<std::string>{"a.bin", "b.bin", "after.txt", "lower", "lower/big.bin",
                                          "lower/keep.txt"}));
  ASSERT_NO_FATAL_FAILURE(end_mount(Fault::kUnmount));
  expect_lower_untouched();
}

// The checksum the whole suite relies on, against FIPS 180-4's examples.
TEST(OverlayDurabilitySupport, Sha256MatchesTheStandardVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // A slice of the pattern is the same bytes as the whole read at that offset.
  EXPECT_EQ(pattern_bytes(7, 1000, 5000), pattern_bytes(7, 0, 6000).substr(1000));
}

}  // namespace
}  // namespace heddle::test
