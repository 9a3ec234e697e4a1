// What a repository makes the launcher bind, from layouts made by hand (no git, no mounts):
// which paths, which of them the repository's own files chose, and the files and directories
// a repository can plant to steer the sandbox or stall the launcher, each refused by name.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "heddle/error.h"
#include "heddle/launcher/git_layout.h"

namespace heddle::launcher {
namespace {

namespace fs = std::filesystem;

class GitLayoutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "heddle-git-layout-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    root_ = fs::canonical(pattern);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  static void write(const fs::path& file, const std::string& text) {
    fs::create_directories(file.parent_path());
    std::ofstream(file, std::ios::binary) << text;
  }
  // A git directory as git lays it out: HEAD, refs/, objects/ with pack/ and info/.
  fs::path git_dir(const fs::path& dir) const {
    write(dir / "HEAD", "ref: refs/heads/main\n");
    fs::create_directories(dir / "refs" / "heads");
    fs::create_directories(dir / "objects" / "pack");
    fs::create_directories(dir / "objects" / "info");
    return dir;
  }
  // A work tree with a .git directory.
  fs::path work_tree(const std::string& name) const {
    const fs::path tree = root_ / name;
    git_dir(tree / ".git");
    return tree;
  }

  // The error git_paths_to_bind(repo) throws: its errno, and its text must name `mentions`.
  static void expect_refused(const fs::path& repo, int code, const std::vector<std::string>& mentions) {
    try {
      const auto binds = git_paths_to_bind(repo.string());
      ADD_FAILURE() << repo << ": bound " << binds.size() << " paths instead of refusing";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
      for (const std::string& text : mentions) {
        EXPECT_NE(std::string(e.what()).find(text), std::string::npos)
            << "no \"" << text << "\" in: " << e.what();
      }
    }
  }

  static std::vector<std::string> paths(const std::vector<SourceBind>& binds) {
    std::vector<std::string> out;
    for (const SourceBind& bind : binds) out.push_back(bind.checked.path);
    return out;
  }
  static std::vector<bool> chosen(const std::vector<SourceBind>& binds) {
    std::vector<bool> out;
    for (const SourceBind& bind : binds) out.push_back(bind.chosen_by_repository);
    return out;
  }

  fs::path root_;
};

TEST_F(GitLayoutTest, EachLayoutBindsItsPiecesAndMarksWhatTheRepositoryChose) {
  // A work tree: its own .git directory, which the user named.
  const fs::path plain = work_tree("plain");
  auto binds = git_paths_to_bind(plain.string());
  EXPECT_EQ(paths(binds), std::vector<std::string>{(plain / ".git").string()});
  EXPECT_EQ(chosen(binds), std::vector<bool>{false});
  // The bound object is the one the path names: the sandbox checks it again by these.
  struct stat st {};
  ASSERT_EQ(::stat((plain / ".git").c_str(), &st), 0);
  EXPECT_EQ(binds[0].checked.dev, st.st_dev);
  EXPECT_EQ(binds[0].checked.ino, st.st_ino);
  EXPECT_TRUE(binds[0].checked.directory);

  // A bare repository: itself.
  const fs::path bare = git_dir(root_ / "bare.git");
  EXPECT_EQ(paths(git_paths_to_bind(bare.string())), std::vector<std::string>{bare.string()});

  // A linked work tree: its .git file (the user's), the gitdir and the common dir (chosen).
  const fs::path main_git = git_dir(root_ / "main" / ".git");
  const fs::path wt_git = main_git / "worktrees" / "wt";
  write(wt_git / "HEAD", "ref: refs/heads/wt\n");
  write(wt_git / "commondir", "../..\n");
  const fs::path linked = root_ / "wt";
  write(linked / ".git", "gitdir: " + wt_git.string() + "\n");
  binds = git_paths_to_bind(linked.string());
  EXPECT_EQ(paths(binds), (std::vector<std::string>{(linked / ".git").string(), wt_git.string(),
                                                    main_git.string()}));
  EXPECT_EQ(chosen(binds), (std::vector<bool>{false, true, true}));
  EXPECT_FALSE(binds[0].checked.directory);

  // Alternates, relative and transitive: each an object directory the repository chose.
  const fs::path lender = git_dir(root_ / "lender.git");
  const fs::path grand = git_dir(root_ / "grand.git");
  write(lender / "objects" / "info" / "alternates", (grand / "objects").string() + "\n");
  const fs::path borrower = work_tree("borrower");
  write(borrower / ".git" / "objects" / "info" / "alternates",
        "# a comment\n../../../lender.git/objects\n/no/such/alternate\n");
  binds = git_paths_to_bind(borrower.string());
  EXPECT_EQ(paths(binds), (std::vector<std::string>{(borrower / ".git").string(),
                                                    (lender / "objects").string(),
                                                    (grand / "objects").string()}));
  EXPECT_EQ(chosen(binds), (std::vector<bool>{false, true, true}));

  // Not a repository: the path itself, for the worker to say so.
  fs::create_directory(root_ / "nothing");
  EXPECT_EQ(paths(git_paths_to_bind((root_ / "nothing").string())),
            std::vector<std::string>{(root_ / "nothing").string()});
}

// Item 3 of issue 12: an alternate binds only a git object directory, and nothing of a
// directory whose top holds a socket, a FIFO or a device, which a sandboxed worker could use.
TEST_F(GitLayoutTest, AnAlternateMustBeAGitObjectDirectory) {
  const fs::path repo = work_tree("repo");
  const fs::path alternates = repo / ".git" / "objects" / "info" / "alternates";

  // Any directory at all (a home, a runtime directory): no pack/, no fan-out directory.
  const fs::path home = root_ / "home";
  write(home / ".profile", "x\n");
  write(alternates, home.string() + "\n");
  expect_refused(repo, ENOTDIR, {home.string(), "not a git object directory", alternates.string()});

  // An object directory with a listening Unix socket at its top.
  const fs::path sockets = root_ / "sockets";
  fs::create_directories(sockets / "pack");
  fs::create_directories(sockets / "ab");
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const std::string socket_path = (sockets / "agent.sock").string();
  ASSERT_LT(socket_path.size(), sizeof address.sun_path);
  socket_path.copy(address.sun_path, socket_path.size());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  write(alternates, sockets.string() + "\n");
  expect_refused(repo, EINVAL, {sockets.string(), "a socket", "agent.sock"});
  ::close(fd);
  fs::remove(socket_path);

  // A FIFO there instead.
  ASSERT_EQ(::mkfifo((sockets / "pipe").c_str(), 0600), 0);
  expect_refused(repo, EINVAL, {sockets.string(), "a FIFO", "pipe"});
  fs::remove(sockets / "pipe");

  // With only directories and files it binds.
  EXPECT_EQ(paths(git_paths_to_bind(repo.string())).back(), sockets.string());

  // A gitdir or a common dir that is not a git directory is refused the same way.
  const fs::path linked = root_ / "linked";
  write(linked / ".git", "gitdir: " + home.string() + "\n");
  expect_refused(linked, ENOTDIR, {home.string(), "not a git directory", "HEAD"});
  const fs::path gitdir = root_ / "gitdir";
  write(gitdir / "HEAD", "ref: refs/heads/main\n");
  write(gitdir / "commondir", home.string() + "\n");
  write(linked / ".git", "gitdir: " + gitdir.string() + "\n");
  expect_refused(linked, ENOTDIR, {home.string(), "not a git directory", "objects/"});
}

// Item 8 of issue 12: a repository's small files are read bounded, as regular files only, never
// through a symlink, and never blocking: each such file fails the whole call, at once.
TEST_F(GitLayoutTest, SmallRepositoryFilesThatAreNotSmallRegularFilesAreRefused) {
  const fs::path repo = work_tree("repo");
  const fs::path alternates = repo / ".git" / "objects" / "info" / "alternates";
  fs::create_directories(alternates.parent_path());

  // A symlink to /dev/zero (which grew the launcher to 529 MB before).
  fs::create_symlink("/dev/zero", alternates);
  expect_refused(repo, ELOOP, {alternates.string(), "symlink"});
  fs::remove(alternates);

  // A FIFO nobody writes (which would block the launcher): refused, and at once.
  ASSERT_EQ(::mkfifo(alternates.c_str(), 0644), 0);
  const auto start = std::chrono::steady_clock::now();
  expect_refused(repo, EINVAL, {alternates.string(), "a FIFO", "not a regular file"});
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  fs::remove(alternates);

  // One byte more than the cap.
  write(alternates, std::string(kMaxRepositoryFileBytes + 1, '#'));
  expect_refused(repo, EFBIG, {alternates.string(), std::to_string(kMaxRepositoryFileBytes + 1)});
  // At the cap it is read (comments only: no alternate).
  write(alternates, std::string(kMaxRepositoryFileBytes, '#'));
  EXPECT_EQ(git_paths_to_bind(repo.string()).size(), 1u);

  // The .git file as a FIFO, and a commondir that is a link to /dev/zero.
  const fs::path fifo_repo = root_ / "fifo";
  fs::create_directory(fifo_repo);
  ASSERT_EQ(::mkfifo((fifo_repo / ".git").c_str(), 0644), 0);
  expect_refused(fifo_repo, EINVAL, {(fifo_repo / ".git").string(), "a FIFO"});
  const fs::path gitdir = git_dir(root_ / "gitdir");
  fs::create_symlink("/dev/zero", gitdir / "commondir");
  const fs::path linked = root_ / "linked";
  write(linked / ".git", "gitdir: " + gitdir.string() + "\n");
  expect_refused(linked, ELOOP, {(gitdir / "commondir").string(), "symlink"});

  // A .git file that names nothing git would read.
  write(linked / ".git", "not a gitdir line\n");
  expect_refused(linked, EINVAL, {(linked / ".git").string(), "gitdir: "});
  write(linked / ".git", "gitdir: " + (root_ / "gone").string() + "\n");
  expect_refused(linked, ENOENT, {(root_ / "gone").string()});
}

}  // namespace
}  // namespace heddle::launcher
