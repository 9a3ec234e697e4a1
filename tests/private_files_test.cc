// Issue 18, part 1: a user reads, through their own mount, exactly the files they can read
// directly, and nothing more: a 0600 file, a 0640 file readable through a supplementary group,
// a 0700 directory; a file of root's stays unreadable. For --dir (read-only and writable), a
// git thread and sandbox-exec; as the unprivileged heddle-test (whose worker runs as a
// subordinate uid) and as root mounting for heddle-test (whose worker has no supplementary
// group). Real mounts through the real launcher; the test runs as root and drops to the user.
#include <grp.h>
#include <pwd.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "support/as_test_user.h"
#include "support/child_process.h"
#include "support/test_support.h"

namespace heddle::test {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;


// Whose launcher: the user's own, or root's mounting for the user (--uid).
enum class Caller { kUser, kRootForUser };

const char* name_of(Caller caller) {
  return caller == Caller::kUser ? "as heddle-test" : "as root for heddle-test";
}

class PrivateFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HEDDLE_REQUIRE_TEST_USER("these cases build files of root's and of the user's: they need root",
                             uid_, gid_);
    const group* share = ::getgrnam("heddle-test-share");
    ASSERT_NE(share, nullptr) << "heddle-test-share does not exist: run with the test_user fixture";
    share_ = share->gr_gid;
    tree_ = std::make_unique<ScratchTree>();
  }

  void TearDown() override {
    detach_leftover_mounts(mountpoints_);
    end_leftover_processes(pids_);
    tree_.reset();
  }

  void own(const fs::path& path, uid_t uid, gid_t gid, unsigned mode) const {
    ASSERT_EQ(::lchown(path.c_str(), uid, gid), 0) << path;
    fs::permissions(path, fs::perms(mode));
  }
  void file(const fs::path& path, const std::string& content, uid_t uid, gid_t gid,
            unsigned mode) const {
    std::ofstream(path) << content;
    own(path, uid, gid, mode);
  }

  // The matrix in `dir` (which exists): what the user may read, and what only root may.
  void plant_matrix(const fs::path& dir) const {
    file(dir / "open.txt", "open\n", uid_, gid_, 0644);
    file(dir / "private.txt", "private\n", uid_, gid_, 0600);
    file(dir / "group.txt", "group\n", 0, share_, 0640);  // the user reads it as a member
    fs::create_directory(dir / "closed");
    file(dir / "closed" / "inner.txt", "inner\n", uid_, gid_, 0600);
    own(dir / "closed", uid_, gid_, 0700);
    file(dir / "forbidden.txt", "root's\n", 0, 0, 0600);
    fs::create_directory(dir / "forbidden-dir");
    file(dir / "forbidden-dir" / "f.txt", "root's too\n", 0, 0, 0644);
    own(dir / "forbidden-dir", 0, 0, 0700);
  }

  // A directory of the user's, 0755 (so a subordinate worker is chosen for it).
  fs::path user_dir(const std::string& name) const {
    const fs::path dir = tree_->root() / name;
    fs::create_directory(dir);
    own(dir, uid_, gid_, 0755);
    return dir;
  }

  std::string new_mountpoint() {
    const fs::path mountpoint = tree_->root() / ("mnt-" + std::to_string(mountpoints_.size()));
    fs::create_directory(mountpoint);
    own(mountpoint, uid_, gid_, 0755);
    mountpoints_.push_back(mountpoint);
    return mountpoint.string();
  }

  std::vector<std::string> launcher(Caller caller, std::vector<std::string> args) const {
    if (caller == Caller::kRootForUser) {
      if (args.front() == "mount") args.insert(args.end(), {"--uid", kUser});
      return root_launcher(std::move(args));
    }
    return user_launcher(std::move(args));
  }

  // Mounts and returns the worker's pid.
  pid_t mount(Caller caller, std::vector<std::string> args, const std::string& mountpoint) {
    args.insert(args.begin(), "mount");
    args.insert(args.end(), {"--mountpoint", mountpoint, "--json"});
    const CommandResult result = run_command(launcher(caller, args), 30s);
    EXPECT_EQ(result.exit_code, 0) << result.err;
    if (result.exit_code != 0) return -1;
    const Json ready = Json::parse(result.out);
    pids_.push_back(ready.at("supervisor_pid").get<pid_t>());
    pids_.push_back(ready.at("pid").get<pid_t>());
    return pids_.back();
  }

  void unmount(Caller caller, const std::string& mountpoint) const {
    const CommandResult result = run_command(launcher(caller, {"unmount", mountpoint}), 30s);
    EXPECT_EQ(result.exit_code, 0) << result.err;
  }

  static CommandResult user_cat(const std::string& path) {
    return run_command(as_user({"/bin/cat", path}), 10s);
  }

  // The user's view of the matrix under `top`, through a mount or directly.
  void expect_matrix(const std::string& top) const {
    SCOPED_TRACE(top);
    EXPECT_EQ(user_cat(top + "/open.txt").out, "open\n");
    EXPECT_EQ(user_cat(top + "/private.txt").out, "private\n") << "a 0600 file of the user's";
    EXPECT_EQ(user_cat(top + "/group.txt").out, "group\n") << "0640 through heddle-test-share";
    EXPECT_EQ(user_cat(top + "/closed/inner.txt").out, "inner\n") << "inside a 0700 directory";
    EXPECT_EQ(run_command(as_user({"/bin/ls", top + "/closed"}), 10s).out, "inner.txt\n");
    expect_refused(top);
  }

  // What only root may read stays unreadable.
  static void expect_refused(const std::string& top) {
    for (const std::string& path : {top + "/forbidden.txt", top + "/forbidden-dir/f.txt",
                                   top + "/forbidden-dir"}) {
      const bool dir = path.back() == 'r';
      const CommandResult denied =
          run_command(as_user({dir ? "/bin/ls" : "/bin/cat", path}), 10s);
      EXPECT_NE(denied.exit_code, 0) << path << " was read: " << denied.out;
      EXPECT_NE(denied.err.find("Permission denied"), std::string::npos) << denied.err;
      EXPECT_EQ(denied.out, "");
    }
  }

  std::string worker_uid(pid_t worker) const {
    const std::string uid = proc_status_field(worker, "Uid");
    return uid.substr(0, uid.find('\t'));
  }

  // The worker's uid is one that could not open the private files itself: a subordinate
  // uid for the user's own mount, the user's uid without its groups for root's.
  void expect_confined_worker(Caller caller, pid_t worker) const {
    const auto subordinate = [] {
      std::ifstream in("/etc/subuid");
      for (std::string line; std::getline(in, line);) {
        if (line.rfind(std::string(kUser) + ":", 0) == 0) {
          return line.substr(line.find(':') + 1, line.rfind(':') - line.find(':') - 1);
        }
      }
      return std::string();
    }();
    if (caller == Caller::kUser && !subordinate.empty() &&
        ::access("/usr/bin/newuidmap", X_OK) == 0) {
      EXPECT_EQ(worker_uid(worker), subordinate) << "a subordinate worker reads nothing private";
    }
    if (caller == Caller::kRootForUser) {
      EXPECT_EQ(worker_uid(worker), std::to_string(uid_));
      EXPECT_EQ(proc_status_field(worker, "Groups"), "") << "no heddle-test-share";
    }
  }

  uid_t uid_ = 0;
  gid_t gid_ = 0;
  gid_t share_ = 0;
  std::unique_ptr<ScratchTree> tree_;
  std::vector<fs::path> mountpoints_;
  std::vector<pid_t> pids_;
};

TEST_F(PrivateFilesTest, ADirectoryMountServesExactlyWhatTheUserCanRead) {
  for (const Caller caller : {Caller::kUser, Caller::kRootForUser}) {
    SCOPED_TRACE(name_of(caller));
    const fs::path source = user_dir(caller == Caller::kUser ? "proj-u" : "proj-r");
    plant_matrix(source);
    expect_matrix(source.string());  // the user, directly: the reference
    const std::string mountpoint = new_mountpoint();
    const pid_t worker = mount(caller, {"--dir", source.string()}, mountpoint);
    ASSERT_GT(worker, 0);
    expect_confined_worker(caller, worker);
    expect_matrix(mountpoint);
    // Listings, attributes and a file whose directory is 0700 all come through.
    const CommandResult listing =
        run_command(as_user({"/usr/bin/find", mountpoint, "-path", "*/forbidden-dir", "-prune",
                             "-o", "-type", "f", "-print"}), 10s);
    EXPECT_NE(listing.out.find("closed/inner.txt"), std::string::npos) << listing.out;
    // A file made private after the mount is refused to the worker, and granted to the user.
    run_or_fail({"/bin/chmod", "0600", (source / "open.txt").string()});
    EXPECT_TRUE(eventually([&] { return user_cat(mountpoint + "/open.txt").out == "open\n"; }));
    // A file given away after the mount is the user's no longer: the worker's memory of its
    // owner goes with the change (its ctime), so the user loses it as directly.
    ASSERT_EQ(user_cat(mountpoint + "/private.txt").out, "private\n");
    ASSERT_EQ(::chown((source / "private.txt").c_str(), 0, 0), 0);
    EXPECT_TRUE(eventually([&] {
      return user_cat(mountpoint + "/private.txt").err.find("Permission denied") !=
             std::string::npos;
    }));
    unmount(caller, mountpoint);
  }
}

// Root's own mount of root's 0700 directory: the worker is nobody, the broker root.
TEST_F(PrivateFilesTest, RootsOwnMountOfAPrivateDirectory) {
  const fs::path source = tree_->root() / "roots";
  fs::create_directory(source);
  file(source / "secret.txt", "root only\n", 0, 0, 0600);
  own(source, 0, 0, 0700);
  const fs::path mountpoint = tree_->root() / "mnt-root";
  fs::create_directory(mountpoint);
  mountpoints_.push_back(mountpoint);
  const CommandResult mounted = run_command(
      root_launcher({"mount", "--dir", source.string(), "--mountpoint", mountpoint.string(),
                     "--json"}), 30s);
  ASSERT_EQ(mounted.exit_code, 0) << mounted.err;
  const Json ready = Json::parse(mounted.out);
  pids_.push_back(ready.at("supervisor_pid").get<pid_t>());
  pids_.push_back(ready.at("pid").get<pid_t>());
  EXPECT_EQ(worker_uid(pids_.back()), "65534");
  EXPECT_EQ(slurp(mountpoint / "secret.txt"), "root only\n");
  EXPECT_EQ(run_command(root_launcher({"unmount", mountpoint.string()}), 30s).exit_code, 0);
}

// A writable mount: the lower layer's private files come through the broker, and what the
// worker writes into the overlay is the user's to read, list and remove without root.
TEST_F(PrivateFilesTest, AWritableMountsOverlayIsTheUsersOwn) {
  for (const Caller caller : {Caller::kUser, Caller::kRootForUser}) {
    SCOPED_TRACE(name_of(caller));
    const std::string tag = caller == Caller::kUser ? "u" : "r";
    const fs::path source = user_dir("proj-w" + tag);
    plant_matrix(source);
    const fs::path overlay = user_dir("overlay-" + tag) / "ov";
    const std::string mountpoint = new_mountpoint();
    const pid_t worker =
        mount(caller, {"--dir", source.string(), "--overlay-dir", overlay.string()}, mountpoint);
    ASSERT_GT(worker, 0);
    expect_matrix(mountpoint);
    const CommandResult wrote = run_command(
        as_user({"/bin/sh", "-c",
                 "set -e; echo more >> \"$1/private.txt\"; "
                 "echo new > \"$1/closed/new.txt\"; mkdir \"$1/made\"; echo x > \"$1/made/x\"",
                 "sh", mountpoint}), 10s);
    EXPECT_EQ(wrote.exit_code, 0) << wrote.err;
    EXPECT_EQ(user_cat(mountpoint + "/private.txt").out, "private\nmore\n");
    expect_refused(mountpoint);
    unmount(caller, mountpoint);
    EXPECT_EQ(user_cat(source / "private.txt").out, "private\n") << "the source is untouched";

    // Every file on disk is the user's; the user reads, lists and removes them, no root.
    for (const auto& entry : fs::recursive_directory_iterator(overlay)) {
      struct stat st {};
      ASSERT_EQ(::lstat(entry.path().c_str(), &st), 0);
      EXPECT_EQ(st.st_uid, uid_) << entry.path();
    }
    const CommandResult listed = run_command(as_user({"/bin/ls", "-R", overlay.string()}), 10s);
    EXPECT_EQ(listed.exit_code, 0) << listed.err;
    const CommandResult read = run_command(
        as_user({"/bin/cat", (overlay / "upper" / "private.txt").string(),
                 (overlay / "upper" / "closed" / "new.txt").string()}), 10s);
    EXPECT_EQ(read.out, "private\nmore\nnew\n") << read.err;
    const CommandResult removed =
        run_command(as_user({"/bin/rm", "-rf", overlay.string()}), 10s);
    EXPECT_EQ(removed.exit_code, 0) << removed.err;
    EXPECT_FALSE(fs::exists(overlay));
  }
}

// A git thread serves blobs, readable whatever the work tree's modes were: the mode bits in
// git are 0644/0755. What matters is that the repository itself, private or with private
// files inside a readable .git, is read with the user's authority.
TEST_F(PrivateFilesTest, AGitThreadOfAPrivateRepositoryServesEveryFile) {
  for (const Caller caller : {Caller::kUser, Caller::kRootForUser}) {
    for (const bool private_top : {true, false}) {
      SCOPED_TRACE(std::string(name_of(caller)) +
                   (private_top ? ", repository 0700" : ", readable .git, 0600 objects"));
      // Built by root (git refuses a repository of another user's), then given to the user.
      const fs::path repo = tree_->root() / (std::string("repo-") +
                                             (caller == Caller::kUser ? "u" : "r") +
                                             (private_top ? "p" : "o"));
      fs::create_directory(repo);
      run_or_fail({"/usr/bin/git", "init", "-q", "-b", "main", repo.string()});
      plant_matrix(repo);
      run_or_fail({"/usr/bin/git", "-C", repo.string(), "add", "open.txt", "private.txt",
                   "group.txt", "closed/inner.txt"});
      run_or_fail({"/usr/bin/git", "-C", repo.string(), "-c", "user.name=t", "-c",
                   "user.email=t@t", "commit", "-qm", "matrix"});
      run_or_fail({"/bin/chown", "-R", std::to_string(uid_) + ":" + std::to_string(gid_),
                   (repo / ".git").string()});
      own(repo, uid_, gid_, 0755);
      if (private_top) {
        run_or_fail({"/bin/chmod", "-R", "go-rwx", (repo / ".git").string()});
      } else {
        run_or_fail({"/bin/chmod", "-R", "go-rwx", (repo / ".git" / "objects").string(),
                     (repo / ".git" / "refs").string()});
      }
      const std::string mountpoint = new_mountpoint();
      const pid_t worker = mount(
          caller, {"--repo-root", repo.string(), "--thread-id", "main", "--read-only"},
          mountpoint);
      ASSERT_GT(worker, 0);
      EXPECT_EQ(user_cat(mountpoint + "/open.txt").out, "open\n");
      EXPECT_EQ(user_cat(mountpoint + "/private.txt").out, "private\n");
      EXPECT_EQ(user_cat(mountpoint + "/group.txt").out, "group\n");
      EXPECT_EQ(user_cat(mountpoint + "/closed/inner.txt").out, "inner\n");
      unmount(caller, mountpoint);
    }
  }
}

// sandbox-exec runs a command in the worker's sandbox, without the broker: it shows that the
// sandbox itself grants nothing private (a subordinate uid reads only what others may), and
// so that the broker, which answers only the worker, is the one way in.
TEST_F(PrivateFilesTest, SandboxExecGrantsNothingPrivateByItself) {
  if (::access("/usr/bin/newuidmap", X_OK) != 0) {
    GTEST_SKIP() << "newuidmap is not installed (package uidmap): the user's own uid is used";
  }
  const fs::path source = user_dir("proj-x");
  plant_matrix(source);
  const auto exec = [&](const std::string& path) {
    return run_command(user_launcher({"sandbox-exec", "--dir", source.string(), "--",
                                      "/bin/cat", (source / path).string()}), 30s);
  };
  EXPECT_EQ(exec("open.txt").out, "open\n");
  for (const std::string path : {"private.txt", "group.txt", "closed/inner.txt", "forbidden.txt",
                                 "forbidden-dir/f.txt"}) {
    const CommandResult result = exec(path);
    EXPECT_NE(result.exit_code, 0) << path << ": " << result.out;
    EXPECT_NE(result.err.find("Permission denied"), std::string::npos) << path << ": " << result.err;
  }
}

}  // namespace
}  // namespace heddle::test
