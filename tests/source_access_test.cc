// Issue 12, items 2, 3 (binds) and 8 (launcher): the attacks a user's repository can make on
// the launcher through its sources, performed for real and shown failing. A .git file, a
// commondir, an alternate or a symlink naming root's private files; an alternate naming a
// directory with a socket, or choosing the worker's identity; small repository files that are
// links to /dev/zero or FIFOs. As root mounting for the test user (--uid heddle-test), and as
// heddle-test itself through the staged binaries (the test_user fixture).
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <thread>

#include "heddle/error.h"
#include "heddle/launcher/control_socket.h"
#include "heddle/launcher/source_access.h"
#include "heddle/sandbox/sandboxed_process.h"
#include "support/as_test_user.h"
#include "support/child_process.h"
#include "support/test_support.h"

namespace heddle::test {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

constexpr const char* kSecret = "root's secret\n";

// A repository with one commit on main holding `file` with `content`.
void make_repo(const fs::path& dir, const std::string& file, const std::string& content) {
  run_or_fail({"/usr/bin/git", "init", "-q", "-b", "main", dir.string()});
  std::ofstream(dir / file) << content;
  run_or_fail({"/usr/bin/git", "-C", dir.string(), "add", file});
  run_or_fail({"/usr/bin/git", "-C", dir.string(), "-c", "user.name=t", "-c", "user.email=t@t",
               "commit", "-qm", "one"});
}

class SourceAccessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HEDDLE_REQUIRE_TEST_USER(
        "these cases build root's private files and drop to heddle-test: they need root", uid_,
        gid_);
    tree_ = std::make_unique<ScratchTree>();

    // Root's private files: a repository and a directory under a 0700 directory.
    private_ = tree_->root() / "private";
    fs::create_directory(private_);
    make_repo(private_ / "secret", "secret.txt", kSecret);
    run_or_fail({"/usr/bin/git", "clone", "-q", "--bare", (private_ / "secret").string(),
                 secret_git().string()});
    fs::permissions(private_, fs::perms(0700));

    // The user's own directory.
    user_ = tree_->root() / "user";
    fs::create_directory(user_);
    fs::permissions(user_, fs::perms(0755));
  }

  void TearDown() override {
    if (tree_) {
      detach_leftover_mounts(mountpoints_);
      for (const fs::path& mountpoint : mountpoints_) {
        try {
          const std::string log = launcher::supervisor_log_path(dirs_, mountpoint.string());
          std::error_code ec;
          fs::remove(log, ec);
          fs::remove(stage_home() + "/.local/state/heddle-fuse/" + fs::path(log).filename().string(), ec);
        } catch (const std::exception&) {
        }
      }
    }
    end_leftover_processes(pids_);
    tree_.reset();
  }

  fs::path secret_git() const { return private_ / "secret.git"; }

  // Hands `path` (and all below it) to the test user.
  void give_to_user(const fs::path& path) const {
    ASSERT_EQ(::lchown(path.c_str(), uid_, gid_), 0) << path;
    if (fs::is_directory(path) && !fs::is_symlink(path)) {
      for (const auto& entry : fs::recursive_directory_iterator(path)) {
        ASSERT_EQ(::lchown(entry.path().c_str(), uid_, gid_), 0) << entry.path();
      }
    }
  }

  // A fresh empty mountpoint, the test user's (or root's, for root's own mounts).
  std::string new_mountpoint(bool users = true) {
    const fs::path mountpoint = tree_->root() / ("mnt-" + std::to_string(mountpoints_.size()));
    fs::create_directory(mountpoint);
    if (users) give_to_user(mountpoint);
    mountpoints_.push_back(mountpoint);
    return mountpoint.string();
  }

  // `mount ... --json` as root for the test user, or as the test user: the result; a mount that
  // came up anyway is recorded and removed, so an attack that works fails the test cleanly.
  CommandResult mount(std::vector<std::string> args, bool as_the_user) {
    args.insert(args.begin(), "mount");
    args.insert(args.end(), {"--mountpoint", new_mountpoint(), "--json"});
    if (!as_the_user) args.insert(args.end(), {"--uid", kUser});
    const CommandResult result =
        run_command(as_the_user ? user_launcher(args) : root_launcher(args), 30s);
    EXPECT_FALSE(result.timed_out) << "the launcher hung";
    if (result.exit_code == 0) {
      try {
        const Json ready = Json::parse(result.out);
        pids_.push_back(ready.at("supervisor_pid").get<pid_t>());
        pids_.push_back(ready.at("pid").get<pid_t>());
      } catch (const std::exception&) {
      }
      const std::vector<std::string> unmount = {"unmount", mountpoints_.back().string()};
      run_command(as_the_user ? user_launcher(unmount) : root_launcher(unmount), 30s);
    }
    return result;
  }

  // A failed mount: exit 1, one line naming every `mentions` and the errno's name.
  static void expect_refused(const CommandResult& result, const std::string& errno_name,
                             const std::vector<std::string>& mentions) {
    EXPECT_EQ(result.exit_code, 1) << "out: " << result.out << "err: " << result.err;
    EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
    EXPECT_NE(result.err.find("(" + errno_name + ")"), std::string::npos) << result.err;
    for (const std::string& text : mentions) {
      EXPECT_NE(result.err.find(text), std::string::npos) << "no \"" << text << "\" in: " << result.err;
    }
  }

  // The user's repositories, each aiming at root's private files one way. Built as root, then
  // given to the user.
  struct Attacks {
    fs::path dot_git_file;    // a work tree whose .git file names root's repository
    fs::path dir_link;        // a symlink to root's private directory, for --dir
    fs::path repo_link;       // a symlink to root's repository, for --repo-root
    fs::path common_dir;      // a linked work tree whose commondir names root's repository
    fs::path alternate;       // a repository borrowing root's objects through alternates
  };
  Attacks plant_attacks() {
    Attacks a;
    a.dot_git_file = user_ / "wt";
    fs::create_directory(a.dot_git_file);
    std::ofstream(a.dot_git_file / ".git") << "gitdir: " << secret_git().string() << "\n";

    a.dir_link = user_ / "dir-link";
    fs::create_directory_symlink(private_ / "secret", a.dir_link);
    a.repo_link = user_ / "repo-link";
    fs::create_directory_symlink(secret_git(), a.repo_link);

    a.common_dir = user_ / "linked";
    const fs::path gitdir = user_ / "linked-gitdir";
    fs::create_directories(a.common_dir);
    fs::create_directories(gitdir);
    std::ofstream(gitdir / "HEAD") << "ref: refs/heads/main\n";
    std::ofstream(gitdir / "commondir") << secret_git().string() << "\n";
    std::ofstream(a.common_dir / ".git") << "gitdir: " << gitdir.string() << "\n";

    a.alternate = user_ / "borrower";
    make_repo(a.alternate, "mine.txt", "mine\n");
    std::ofstream(a.alternate / ".git" / "objects" / "info" / "alternates")
        << (secret_git() / "objects").string() << "\n";
    give_to_user(user_);
    return a;
  }

  uid_t uid_ = 0;
  gid_t gid_ = 0;
  std::unique_ptr<ScratchTree> tree_;
  fs::path private_;
  fs::path user_;
  std::vector<fs::path> mountpoints_;
  std::vector<pid_t> pids_;
  const launcher::UserDirs dirs_ = launcher::UserDirs::read();
};

// Item 2, as root mounting for the user: every path of the user's is followed with the user's
// authority, so none of them reaches root's 0700 directory. Before, each of these mounted
// root's repository (or directory) and served it to the user in full.
TEST_F(SourceAccessTest, RootMountingForAUserFollowsNoneOfItsPathsIntoRootsFiles) {
  const Attacks a = plant_attacks();
  const std::string the_user = "uid " + std::to_string(uid_);
  expect_refused(mount({"--repo-root", a.dot_git_file.string(), "--thread-id", "main"}, false),
                 "EACCES", {secret_git().string(), (a.dot_git_file / ".git").string(), the_user});
  expect_refused(mount({"--dir", a.dir_link.string()}, false), "EACCES",
                 {a.dir_link.string(), the_user});
  expect_refused(mount({"--repo-root", a.repo_link.string(), "--thread-id", "main"}, false),
                 "EACCES", {a.repo_link.string(), the_user});
  expect_refused(mount({"--repo-root", a.common_dir.string(), "--thread-id", "main"}, false),
                 "EACCES", {secret_git().string(), "commondir", the_user});
  expect_refused(mount({"--repo-root", a.alternate.string(), "--thread-id", "main", "--read-only"},
                       false),
                 "EACCES", {(secret_git() / "objects").string(), "alternate", the_user});

  // The user's own repository still mounts for the user, served by a worker with its uid.
  const fs::path own = user_ / "own";
  make_repo(own, "own.txt", "the user's\n");
  give_to_user(own);
  const std::string mountpoint = new_mountpoint();
  const CommandResult ok = run_command(
      root_launcher({"mount", "--repo-root", own.string(), "--thread-id", "main", "--read-only",
                     "--mountpoint", mountpoint, "--uid", kUser, "--json"}),
      30s);
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  const Json ready = Json::parse(ok.out);
  const pid_t worker = ready.at("pid").get<pid_t>();
  pids_.push_back(ready.at("supervisor_pid").get<pid_t>());
  pids_.push_back(worker);
  const std::string id = std::to_string(uid_);
  EXPECT_EQ(proc_status_field(worker, "Uid"), id + "\t" + id + "\t" + id + "\t" + id);
  EXPECT_EQ(run_command(as_user({"/bin/cat", mountpoint + "/own.txt"})).out, "the user's\n");
  EXPECT_EQ(run_command(root_launcher({"unmount", mountpoint}), 30s).exit_code, 0);
  EXPECT_FALSE(heddle_mounted(mountpoint));
}

// Item 2, as the user: the same paths, refused with an error that names them (before, the
// .git file's gitdir was silently dropped and the worker said "not a repository").
TEST_F(SourceAccessTest, TheUsersOwnLauncherNamesThePathItMayNotRead) {
  const Attacks a = plant_attacks();
  const std::string you = "you (uid " + std::to_string(uid_) + ")";
  expect_refused(mount({"--repo-root", a.dot_git_file.string(), "--thread-id", "main"}, true),
                 "EACCES", {secret_git().string(), you});
  expect_refused(mount({"--dir", a.dir_link.string()}, true), "EACCES", {a.dir_link.string(), you});
  expect_refused(mount({"--repo-root", a.common_dir.string(), "--thread-id", "main"}, true),
                 "EACCES", {secret_git().string(), "commondir", you});
  expect_refused(mount({"--repo-root", a.alternate.string(), "--thread-id", "main", "--read-only"},
                       true),
                 "EACCES", {(secret_git() / "objects").string(), you});
}

// Item 1, the overlay: root mounting for the user finds, checks and makes the user's overlay
// directory as the user. An --overlay-dir that is the user's symlink to an empty directory of
// root's was handed to the user (chowned) before; now it is refused and left as it was. The
// user's own overlay directory still works, and everything in it is the user's, made by the
// user (root chowns nothing).
TEST_F(SourceAccessTest, RootMakesTheUsersOverlayAsTheUserAndNeverHandsOverRootsDirectory) {
  const fs::path source = user_ / "src";
  fs::create_directory(source);
  std::ofstream(source / "a.txt") << "a\n";
  give_to_user(source);
  const fs::path home = user_ / "home";
  fs::create_directory(home);
  give_to_user(home);

  const fs::path roots = tree_->root() / "roots-empty";
  fs::create_directory(roots);
  fs::permissions(roots, fs::perms(0755));
  const fs::path link = home / "overlay";
  fs::create_directory_symlink(roots, link);
  give_to_user(link);
  expect_refused(mount({"--dir", source.string(), "--overlay-dir", link.string()},
                       false),
                 "EPERM", {roots.string(), "uid " + std::to_string(uid_)});
  struct stat st {};
  ASSERT_EQ(::stat(roots.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, 0u);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  EXPECT_TRUE(fs::is_empty(roots)) << "something was made in root's directory";

  const fs::path overlay = home / "overlay-own";
  const std::string mountpoint = new_mountpoint();
  const CommandResult ok = run_command(
      root_launcher({"mount", "--dir", source.string(), "--overlay-dir",
                     overlay.string(), "--mountpoint", mountpoint, "--uid", kUser, "--json"}),
      30s);
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  const Json ready = Json::parse(ok.out);
  pids_.push_back(ready.at("supervisor_pid").get<pid_t>());
  pids_.push_back(ready.at("pid").get<pid_t>());
  EXPECT_EQ(run_command(as_user({"/bin/sh", "-c", "echo b > " + mountpoint + "/b.txt"})).exit_code,
            0);
  EXPECT_EQ(run_command(root_launcher({"unmount", mountpoint}), 30s).exit_code, 0);
  EXPECT_FALSE(heddle_mounted(mountpoint));
  for (const fs::path& path : {overlay, overlay / "source.json", overlay / "lock",
                               overlay / "upper", overlay / "upper" / "b.txt"}) {
    ASSERT_EQ(::lstat(path.c_str(), &st), 0) << path;
    EXPECT_EQ(st.st_uid, uid_) << path;
    EXPECT_EQ(st.st_gid, gid_) << path;
  }
  ASSERT_EQ(::lstat(overlay.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
}

// Item 3: an alternate binds only a git object directory. A directory holding a listening
// socket (a service's runtime directory) is refused, as root mounting its own repository and
// as the user; so is any directory that is no object store.
TEST_F(SourceAccessTest, AnAlternateMustBeAGitObjectDirectoryWithoutSockets) {
  for (const bool as_the_user : {false, true}) {
    SCOPED_TRACE(as_the_user ? "as the user" : "as root");
    const fs::path base = user_ / (as_the_user ? "u" : "r");
    const fs::path repo = base / "repo";
    make_repo(repo, "f.txt", "f\n");
    // A socket in what otherwise looks like an object store.
    const fs::path service = base / "service";
    fs::create_directories(service / "pack");
    const fs::path socket_path = service / "S.agent";
    const UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(listener);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    ASSERT_LT(socket_path.string().size(), sizeof address.sun_path);
    socket_path.string().copy(address.sun_path, socket_path.string().size());
    ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    ASSERT_EQ(::listen(listener.get(), 1), 0);
    const fs::path alternates = repo / ".git" / "objects" / "info" / "alternates";
    std::ofstream(alternates) << service.string() << "\n";
    if (as_the_user) give_to_user(base);
    // Root's own mount (no --uid) for the root case.
    const auto attempt = [&] {
      const std::string mountpoint = new_mountpoint(as_the_user);
      const std::vector<std::string> args = {"mount", "--repo-root", repo.string(), "--thread-id",
                                             "main", "--read-only", "--mountpoint", mountpoint};
      const auto launcher = [&](std::vector<std::string> a) {
        return as_the_user ? user_launcher(std::move(a)) : root_launcher(std::move(a));
      };
      const CommandResult result = run_command(launcher(args), 30s);
      EXPECT_FALSE(result.timed_out);
      if (result.exit_code == 0) run_command(launcher({"unmount", mountpoint}), 30s);
      return result;
    };
    expect_refused(attempt(), "EINVAL", {service.string(), "a socket", "S.agent", "alternate"});

    // A directory that is no object store at all.
    std::ofstream(alternates) << base.string() << "\n";
    expect_refused(attempt(), "ENOTDIR", {base.string(), "not a git object directory"});
  }
}

// Item 3: an alternate does not choose who serves the repository. A world-readable repository
// borrowing objects from the user's 0700 directory used to flip its worker from the
// subordinate uid to the user's own; now the mount is refused, naming the alternate.
TEST_F(SourceAccessTest, ARepositoryDoesNotChooseTheWorkersIdentity) {
  if (::access("/usr/bin/newuidmap", X_OK) != 0 || ::access("/usr/bin/newgidmap", X_OK) != 0) {
    GTEST_SKIP() << "newuidmap/newgidmap are not installed (package uidmap): no subordinate ids";
  }
  const fs::path hidden = user_ / "hidden";
  const fs::path shown = user_ / "shown";
  fs::create_directory(hidden);
  fs::create_directory(shown);
  make_repo(hidden / "lender", "lent.txt", "lent\n");
  make_repo(shown / "open-lender", "lent.txt", "lent openly\n");
  const fs::path borrower = shown / "borrower";
  run_or_fail({"/usr/bin/git", "clone", "-q", "--shared", (hidden / "lender").string(),
               borrower.string()});
  const fs::path open_borrower = shown / "open-borrower";
  run_or_fail({"/usr/bin/git", "clone", "-q", "--shared", (shown / "open-lender").string(),
               open_borrower.string()});
  run_or_fail({"/bin/chmod", "-R", "a+rX", user_.string()});
  fs::permissions(hidden, fs::perms(0700));
  give_to_user(user_);

  expect_refused(mount({"--repo-root", borrower.string(), "--thread-id", "main", "--read-only"}, true),
                 "EACCES", {(hidden / "lender" / ".git" / "objects").string(), "subordinate uid",
                            "not readable by others"});

  // The same with a readable lender: served by the subordinate uid.
  const std::string mountpoint = new_mountpoint();
  const CommandResult ok = run_command(
      user_launcher({"mount", "--repo-root", open_borrower.string(), "--thread-id", "main",
                     "--read-only", "--mountpoint", mountpoint, "--json"}),
      30s);
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  const Json ready = Json::parse(ok.out);
  const pid_t worker = ready.at("pid").get<pid_t>();
  pids_.push_back(ready.at("supervisor_pid").get<pid_t>());
  pids_.push_back(worker);
  EXPECT_NE(proc_status_field(worker, "Uid").substr(0, std::to_string(uid_).size() + 1),
            std::to_string(uid_) + "\t")
      << "the worker runs as the user, not a subordinate uid";
  EXPECT_EQ(run_command(as_user({"/bin/cat", mountpoint + "/lent.txt"})).out, "lent openly\n");
  EXPECT_EQ(run_command(user_launcher({"unmount", mountpoint}), 30s).exit_code, 0);
}

// Item 8: a repository's small files are read bounded, as regular files, never through a link
// and never blocking. Before, an alternates file linked to /dev/zero grew the launcher to
// hundreds of MB and the mount went ahead, and a FIFO hung it.
TEST_F(SourceAccessTest, SmallRepositoryFilesCannotGrowOrStallTheLauncher) {
  for (const bool as_the_user : {false, true}) {
    SCOPED_TRACE(as_the_user ? "as the user" : "as root for the user");
    const fs::path base = user_ / (as_the_user ? "u" : "r");
    const fs::path repo = base / "repo";
    make_repo(repo, "f.txt", "f\n");
    const fs::path alternates = repo / ".git" / "objects" / "info" / "alternates";
    const fs::path fifo_tree = base / "fifo-tree";
    fs::create_directories(fifo_tree);
    ASSERT_EQ(::mkfifo((fifo_tree / ".git").c_str(), 0644), 0);
    give_to_user(base);
    const std::vector<std::string> thread = {"--repo-root", repo.string(), "--thread-id", "main",
                                             "--read-only"};

    ASSERT_EQ(::symlink("/dev/zero", alternates.c_str()), 0);
    const auto start = std::chrono::steady_clock::now();
    expect_refused(mount(thread, as_the_user), "ELOOP", {alternates.string(), "symlink"});
    fs::remove(alternates);

    ASSERT_EQ(::mkfifo(alternates.c_str(), 0644), 0);
    expect_refused(mount(thread, as_the_user), "EINVAL", {alternates.string(), "a FIFO"});
    fs::remove(alternates);

    std::ofstream(alternates) << std::string(100 * 1024, '#');
    expect_refused(mount(thread, as_the_user), "EFBIG", {alternates.string()});
    fs::remove(alternates);

    expect_refused(mount({"--repo-root", fifo_tree.string(), "--thread-id", "main"}, as_the_user),
                   "EINVAL", {(fifo_tree / ".git").string(), "a FIFO"});
    EXPECT_LT(std::chrono::steady_clock::now() - start, 20s);
  }
}

// The sandbox's half of item 2: it binds a checked path only while the path still names the
// object the launcher opened as the user. A directory swapped for a symlink into root's
// private files in between is refused (ESTALE), not followed with root's authority.
TEST_F(SourceAccessTest, TheSandboxBindsACheckedPathOnlyWhileItIsTheObjectChecked) {
  const fs::path source = user_ / "source";
  fs::create_directory(source);
  std::ofstream(source / "secret.txt") << "the user's own\n";
  fs::permissions(source / "secret.txt", fs::perms(0644));
  struct stat st {};
  ASSERT_EQ(::stat(source.c_str(), &st), 0);

  const auto cat = [&]() -> std::pair<int, std::string> {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return {-1, ""};
    UniqueFd read_end(fds[0]);
    UniqueFd write_end(fds[1]);
    sandbox::SandboxSpec spec;
    spec.executable = "/bin/cat";
    spec.argv = {"cat", (source / "secret.txt").string()};
    spec.checked_paths = {{source.string(), st.st_dev, st.st_ino, true}};
    spec.output_fd = write_end.get();
    try {
      auto process = sandbox::SandboxedProcess::launch(spec);
      write_end.reset();
      std::string out;
      char buffer[256];
      for (ssize_t n; (n = ::read(read_end.get(), buffer, sizeof buffer)) > 0;) out.append(buffer, n);
      return {process.reap().code, out};
    } catch (const Error& e) {
      return {-e.code(), e.what()};
    }
  };
  EXPECT_EQ(cat(), std::make_pair(0, std::string("the user's own\n")));

  // Swapped: the same path is now a link into root's private directory.
  fs::rename(source, user_ / "source-moved");
  fs::create_directory_symlink(private_ / "secret", source);
  std::ofstream(private_ / "secret" / "secret.txt") << kSecret;
  const auto [code, text] = cat();
  EXPECT_EQ(code, -ESTALE) << text;
  EXPECT_EQ(text.find(kSecret), std::string::npos);
  EXPECT_NE(text.find("no longer what was checked"), std::string::npos) << text;

  // A directory put in its place is another object too.
  fs::remove(source);
  fs::create_directory(source);
  EXPECT_EQ(cat().first, -ESTALE);
}

// The identity the launcher resolves with: on its own thread, the user's uid, gid and groups
// and none of root's capabilities; the rest of the process stays root and dumpable.
TEST_F(SourceAccessTest, TheUsersIdentityHoldsOnlyOnItsOwnThread) {
  const launcher::FileIdentity user = launcher::file_identity_of(uid_, gid_);
  EXPECT_EQ(user.uid, uid_);
  EXPECT_NE(std::find(user.groups.begin(), user.groups.end(), gid_), user.groups.end());
  const std::thread::id caller = std::this_thread::get_id();
  bool ran = false;
  launcher::as_mount_user(uid_, gid_, [&] {
    ran = true;
    EXPECT_NE(std::this_thread::get_id(), caller);
    EXPECT_EQ(::geteuid(), uid_);
    EXPECT_EQ(::getegid(), gid_);
    std::vector<gid_t> groups(static_cast<std::size_t>(::getgroups(0, nullptr)));
    ASSERT_EQ(::getgroups(static_cast<int>(groups.size()), groups.data()),
              static_cast<int>(groups.size()));
    std::sort(groups.begin(), groups.end());
    std::vector<gid_t> expected = user.groups;
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(groups, expected);
    // No CAP_DAC_OVERRIDE, no CAP_DAC_READ_SEARCH, no CAP_SYS_PTRACE (/proc/1/root).
    EXPECT_NE(::access(private_.c_str(), X_OK), 0);
    EXPECT_EQ(errno, EACCES);
    EXPECT_LT(::open("/proc/1/root/etc/hostname", O_RDONLY | O_CLOEXEC), 0);
  });
  EXPECT_TRUE(ran);
  EXPECT_EQ(::geteuid(), 0u);
  EXPECT_EQ(::access((private_ / "secret").c_str(), R_OK), 0);
  EXPECT_EQ(::prctl(PR_GET_DUMPABLE), 1);

  // What the work throws reaches the caller; root's own mounts resolve on the calling thread.
  EXPECT_THROW(launcher::as_mount_user(uid_, gid_, [] { throw Error("inside", EIO); }), Error);
  launcher::as_mount_user(0, 0, [&] { EXPECT_EQ(std::this_thread::get_id(), caller); });
}

}  // namespace
}  // namespace heddle::test
