// The git backend end to end: a real repository built with git, mounted through the sandboxed
// worker, compared with `git archive` of the same ref.
#include <sys/stat.h>
#include <unistd.h>

#include <fcntl.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <thread>

#include "heddle/error.h"
#include "heddle/launcher/launcher_environment.h"
#include "heddle/launcher/supervisor.h"
#include "heddle/unique_fd.h"
#include "support/child_process.h"
#include "support/test_support.h"

namespace heddle::test {
namespace {

using ipc::GitSource;
using ipc::MountSpec;
using launcher::Supervisor;
using namespace std::chrono_literals;

constexpr std::uint64_t kSmallCache = 8ull << 20;  // below the 64 MiB blob: it must stream

std::string run_or_fail(const std::vector<std::string>& argv) {
  const CommandResult result = run_command(argv, 120s);
  if (result.exit_code != 0) {
    ADD_FAILURE() << argv[0] << " " << (argv.size() > 1 ? argv[1] : "") << " failed: " << result.err;
  }
  return result.out;
}

std::string git(const fs::path& repo, std::vector<std::string> args) {
  args.insert(args.begin(), {"/usr/bin/git", "-C", repo.string()});
  std::string out = run_or_fail(args);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// What a person compares: type, permission bits, size, link target, and content.
struct NodeFacts {
  char type = '?';
  unsigned mode = 0;
  off_t size = 0;
  std::string target;
  std::string content;
  friend bool operator==(const NodeFacts&, const NodeFacts&) = default;
};

std::map<std::string, NodeFacts> describe_tree(const fs::path& root) {
  std::map<std::string, NodeFacts> tree;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::end(it); ++it) {
    struct stat st {};
    EXPECT_EQ(::lstat(it->path().c_str(), &st), 0) << it->path();
    NodeFacts facts;
    facts.mode = st.st_mode & 07777;
    if (S_ISLNK(st.st_mode)) {
      facts.type = 'l';
      facts.size = st.st_size;
      facts.target = fs::read_symlink(it->path()).string();
    } else if (S_ISDIR(st.st_mode)) {
      facts.type = 'd';
    } else {
      facts.type = '-';
      facts.size = st.st_size;
      facts.content = slurp(it->path());
    }
    tree[it->path().lexically_relative(root).string()] = std::move(facts);
  }
  return tree;
}

class GitMountTest : public ::testing::Test {
 protected:
  // ctest builds the repositories once (the git_repos fixture); run by hand, the first test
  // builds them. The script keeps a finished build.
  static void SetUpTestSuite() {
    if (!cannot_mount_reason().empty() || fs::exists(fs::path(HEDDLE_TEST_REPOS) / "done")) return;
    const CommandResult made = run_command(
        {"/bin/bash", std::string(HEDDLE_TEST_DATA_DIR) + "/make_test_repo.sh", HEDDLE_TEST_REPOS},
        300s);
    ASSERT_EQ(made.exit_code, 0) << made.err;
  }

  void SetUp() override {
    HEDDLE_REQUIRE_MOUNT();
    ASSERT_TRUE(fs::exists(fs::path(HEDDLE_TEST_REPOS) / "done")) << "the test repositories are missing";
    tree_ = std::make_unique<ScratchTree>();
  }
  void TearDown() override {
    if (supervisor_) supervisor_->unmount();
    if (tree_) {
      EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
    }
  }

  static fs::path repo(const char* variant) { return fs::path(HEDDLE_TEST_REPOS) / variant; }

  void mount(const fs::path& repository, const std::string& thread,
             std::uint64_t cache = kSmallCache) {
    launcher::SupervisorOptions options = launcher::LauncherEnvironment::read().supervisor_options();
    options.stop_grace = 1000ms;
    supervisor_ = Supervisor::spawn(
        MountSpec::thread(GitSource{repository.string(), thread, cache},
                             tree_->mountpoint().string()),
        options);
  }

  // `git archive REF | tar -x`, into a fresh directory under the scratch tree.
  fs::path archive(const fs::path& repository, const std::string& ref) {
    const fs::path out = tree_->root() / ("archive-" + std::to_string(archives_++));
    fs::create_directory(out);
    const CommandResult result = run_command(
        {"/bin/sh", "-c",
         // tar.umask=022: git archive writes 0664/0775 by default; git itself means 0644/0755.
         "git -c tar.umask=0022 -C \"$0\" archive --format=tar \"$1\" | tar -x -C \"$2\"",
         repository.string(), ref,
         out.string()},
        120s);
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return out;
  }

  std::string mountpoint() const { return tree_->mountpoint().string(); }

  std::unique_ptr<ScratchTree> tree_;
  std::unique_ptr<Supervisor> supervisor_;
  int archives_ = 0;
};

// Mounted trees must equal git archive for every kind of ref, loose and packed.
class GitArchiveParity : public GitMountTest,
                         public ::testing::WithParamInterface<std::tuple<const char*, const char*>> {};

TEST_P(GitArchiveParity, TheMountedTreeIsByteIdenticalToGitArchive) {
  const auto [variant, ref_kind] = GetParam();
  const fs::path repository = repo(variant);
  std::string thread = ref_kind;
  std::string archive_ref = ref_kind;
  // A heddle thread comes before any other revision: "v1" is a thread that shadows the tag.
  if (thread == "feature" || thread == "v1") archive_ref = "refs/heddle/threads/" + thread;
  if (thread == "abbrev") thread = archive_ref = git(repository, {"rev-parse", "--short=8", "dev"});
  mount(repository, thread);
  const auto expected = describe_tree(archive(repository, archive_ref));
  const auto actual = describe_tree(tree_->mountpoint());
  ASSERT_GT(expected.size(), 10'000u);
  EXPECT_EQ(actual.size(), expected.size());
  for (const auto& [path, facts] : expected) {
    const auto it = actual.find(path);
    if (it == actual.end()) {
      ADD_FAILURE() << "missing in the mount: " << path;
      continue;
    }
    EXPECT_EQ(it->second.type, facts.type) << path;
    EXPECT_EQ(it->second.mode, facts.mode) << path;
    EXPECT_EQ(it->second.size, facts.size) << path;
    EXPECT_EQ(it->second.target, facts.target) << path;
    EXPECT_TRUE(it->second.content == facts.content) << "content differs: " << path;
  }
}

INSTANTIATE_TEST_SUITE_P(
    RefsAndStorage, GitArchiveParity,
    ::testing::Combine(::testing::Values("loose", "packed"),
                       ::testing::Values("main", "dev", "feature", "v1", "refs/tags/v1",
                                         "abbrev")));

TEST_F(GitMountTest, FindAndStatAgreeWithLsTree) {
  mount(repo("packed"), "main");
  const std::string listing =
      git(repo("packed"), {"ls-tree", "-r", "-l", "-z", "--full-tree", "main"});
  std::size_t entries = 0;
  for (std::size_t start = 0; start < listing.size();) {
    const std::size_t end = listing.find('\0', start);
    const std::string line = listing.substr(start, end - start);
    start = end == std::string::npos ? listing.size() : end + 1;
    // "<mode> <type> <oid> <size>\t<path>"
    const auto tab = line.find('\t');
    std::istringstream fields(line.substr(0, tab));
    std::string mode, type, oid, size;
    fields >> mode >> type >> oid >> size;
    const fs::path path = tree_->mountpoint() / line.substr(tab + 1);
    struct stat st {};
    ASSERT_EQ(::lstat(path.c_str(), &st), 0) << path;
    ++entries;
    if (mode == "160000") {
      EXPECT_TRUE(S_ISDIR(st.st_mode)) << path;
      EXPECT_TRUE(fs::is_empty(path)) << path;
      continue;
    }
    EXPECT_EQ(std::to_string(st.st_size), size) << path;
    if (mode == "120000") {
      EXPECT_TRUE(S_ISLNK(st.st_mode)) << path;
    } else {
      EXPECT_TRUE(S_ISREG(st.st_mode)) << path;
      EXPECT_EQ(st.st_mode & 0777, mode == "100755" ? 0755u : 0644u) << path;
    }
    // Every node carries the commit's time.
    EXPECT_EQ(st.st_mtime, 1714979289) << path;
  }
  EXPECT_GT(entries, 10'000u);
}

TEST_F(GitMountTest, StatusNamesTheCommitAndTheCache) {
  mount(repo("loose"), "main");
  const ipc::StatusOk status = supervisor_->status();
  EXPECT_EQ(status.extra.at("commit"), git(repo("loose"), {"rev-parse", "main"}));
  EXPECT_TRUE(status.extra.contains("cache_bytes")) << status.extra.dump();
  EXPECT_EQ(status.extra.at("cache_limit"), kSmallCache);
  // The supervisor passes on only fields it knows (worker_status.cc): every counter the git
  // worker reports must be among them, or it is dropped here.
  for (const char* key : {"nodes", "cache_hits", "streamed_opens", "hidden_names",
                          "inode_collisions", "open_streams", "held_bytes", "held_limit",
                          "opens_refused_for_memory"}) {
    EXPECT_TRUE(status.extra.contains(key)) << key << " missing from " << status.extra.dump();
  }
}

// The other half of SupervisorTest.ADirectoryWorkerMapsNoLibgit2: a thread's worker is the
// git program, and a maps check sees libgit2 where it is.
TEST_F(GitMountTest, AThreadsWorkerIsTheGitProgram) {
  mount(repo("loose"), "main");
  const auto files = mapped_files(supervisor_->pid());
  if (!files) GTEST_SKIP() << "only root may read a worker's maps (it is not dumpable)";
  ASSERT_FALSE(files->empty());
  EXPECT_EQ(fs::path(files->front()).filename(), "heddle-fuse-worker-git");
  EXPECT_TRUE(std::any_of(files->begin(), files->end(), [](const std::string& file) {
    return file.find("libgit2") != std::string::npos;
  }));
}

TEST_F(GitMountTest, TheWorkerSeesTheGitDirButNotTheWorkTree) {
  mount(repo("loose"), "main");
  const fs::path root = "/proc/" + std::to_string(supervisor_->pid()) + "/root";
  EXPECT_TRUE(fs::exists(root / repo("loose").relative_path() / ".git" / "HEAD"));
  EXPECT_FALSE(fs::exists(root / repo("loose").relative_path() / "run.sh"))
      << "the checked-out work tree is visible to the worker";
  EXPECT_FALSE(fs::exists(root / repo("packed").relative_path()));
}

// A bare clone borrowing objects through alternates, and a linked work tree of it (a .git
// file, a common dir): the sandbox must bind each piece libgit2 reads, and only those.
TEST_F(GitMountTest, BareAlternatesAndLinkedWorkTreesAllMount) {
  const fs::path bare = tree_->root() / "shared.git";
  const fs::path linked = tree_->root() / "linked";
  run_or_fail({"/usr/bin/git", "clone", "-q", "--bare", "--shared", repo("packed").string(),
               bare.string()});
  run_or_fail({"/usr/bin/git", "-C", bare.string(), "-c", "gc.auto=0", "worktree", "add", "-q",
               "--no-checkout", linked.string(), "v1"});
  ASSERT_TRUE(fs::is_regular_file(linked / ".git"));

  mount(bare, "dev");
  EXPECT_EQ(describe_tree(tree_->mountpoint()), describe_tree(archive(repo("packed"), "dev")));
  supervisor_->unmount();

  mount(linked, "main");
  EXPECT_EQ(slurp(tree_->mountpoint() / "sibling.txt"), "a sibling that stays readable\n");
}

TEST_F(GitMountTest, ARepositoryTheWorkerCannotReadIsNamedWithItsIdentity) {
  HEDDLE_REQUIRE_ROOT();  // without root the worker falls back to the caller, who can read it
  const fs::path bare = tree_->root() / "private.git";
  run_or_fail({"/usr/bin/git", "clone", "-q", "--bare", "--shared", repo("packed").string(),
               bare.string()});
  fs::permissions(bare, fs::perms(0700));
  try {
    mount(bare, "main");
    FAIL() << "mounted a repository nobody may read";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("not readable"), std::string::npos) << message;
    EXPECT_NE(message.find("65534"), std::string::npos) << message;
  }
}

TEST_F(GitMountTest, WritesAreRefused) {
  mount(repo("packed"), "main");
  const fs::path file = tree_->mountpoint() / "sibling.txt";
  EXPECT_LT(::open(file.c_str(), O_WRONLY), 0);
  EXPECT_EQ(errno, EROFS);
  EXPECT_NE(::mkdir((tree_->mountpoint() / "new").c_str(), 0755), 0);
  EXPECT_EQ(errno, EROFS);
  EXPECT_NE(::unlink(file.c_str()), 0);
  EXPECT_EQ(errno, EROFS);
}

TEST_F(GitMountTest, UnknownThreadNamesTheRepositoryAndItsHeads) {
  try {
    mount(repo("loose"), "no-such-thread");
    FAIL() << "mounted an unknown thread";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("no-such-thread"), std::string::npos) << message;
    EXPECT_NE(message.find(repo("loose").string()), std::string::npos) << message;
    EXPECT_NE(message.find("main"), std::string::npos) << message;
    EXPECT_NE(message.find("dev"), std::string::npos) << message;
  }
  EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
}

TEST_F(GitMountTest, ANonRepositoryIsAPreciseError) {
  const fs::path plain = tree_->source();
  try {
    mount(plain, "main");
    FAIL() << "mounted a plain directory as a repository";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(plain.string()), std::string::npos) << message;
    EXPECT_NE(message.find("not a git repository"), std::string::npos) << message;
  }
}

TEST_F(GitMountTest, ABlobRefIsAPreciseError) {
  try {
    mount(repo("loose"), "main:sibling.txt");
    FAIL() << "mounted a blob";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blob"), std::string::npos) << e.what();
  }
}

TEST_F(GitMountTest, ACorruptObjectFailsOnlyItsFile) {
  // A private copy: the corruption must not leak into the other tests' repository.
  const fs::path copy = tree_->root() / "corrupt";
  fs::copy(repo("loose"), copy, fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  const std::string oid = git(copy, {"rev-parse", "main:corrupt_me.txt"});
  const fs::path object = copy / ".git" / "objects" / oid.substr(0, 2) / oid.substr(2);
  fs::permissions(object, fs::perms(0644));
  std::ofstream(object, std::ios::binary | std::ios::trunc) << "this is not zlib";
  mount(copy, "main");

  const int fd = ::open((tree_->mountpoint() / "corrupt_me.txt").c_str(), O_RDONLY);
  char buffer[64];
  const bool failed = fd < 0 || ::read(fd, buffer, sizeof buffer) < 0;
  const int err = errno;
  if (fd >= 0) ::close(fd);
  EXPECT_TRUE(failed) << "a corrupt object was served";
  EXPECT_EQ(err, EIO);
  EXPECT_EQ(slurp(tree_->mountpoint() / "sibling.txt"), "a sibling that stays readable\n");
  EXPECT_NO_THROW((void)supervisor_->status());
}

TEST_F(GitMountTest, ForgottenNodesLeaveTheInodeTable) {
  HEDDLE_REQUIRE_ROOT();  // only root may drop the kernel's caches
  mount(repo("packed"), "main");
  std::size_t seen = 0;
  for (const auto& entry : fs::directory_iterator(tree_->mountpoint() / "many")) {
    struct stat st {};
    ASSERT_EQ(::lstat(entry.path().c_str(), &st), 0);
    ++seen;
  }
  ASSERT_EQ(seen, 10'000u);
  const auto nodes = [&] { return supervisor_->status().extra.at("nodes").get<std::size_t>(); };
  EXPECT_GE(nodes(), 10'000u);
  // Dropping the dentry and inode caches makes the kernel forget what it looked up.
  std::ofstream("/proc/sys/vm/drop_caches") << "2\n";
  EXPECT_TRUE(eventually([&] { return nodes() < 1'000; }, 10s)) << "nodes: " << nodes();
}

TEST_F(GitMountTest, SixteenParallelReadersGetTheRightBytes) {
  mount(repo("packed"), "main");
  std::atomic<int> mismatches{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 16; ++t) {
    readers.emplace_back([&, t] {
      for (int round = 0; round < 40; ++round) {
        const int n = 1 + (t * 613 + round * 97) % 10'000;
        const std::string name = "many/f" + std::to_string(n);
        if (slurp(tree_->mountpoint() / name) != "file " + std::to_string(n) + "\n") ++mismatches;
      }
    });
  }
  for (auto& reader : readers) reader.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// The kernel opens a git mount's files itself (no OPEN round trip): reads then name only the
// node, and the worker keeps a few handles by node. Reopened files, files whose pages were
// dropped after their handle was evicted, and a streamed blob read at two places at once
// through two fds (one stream per node) must all give the right bytes.
TEST_F(GitMountTest, ReopenedFilesAndDroppedPagesAndTwoReadersOfABigBlobGetTheRightBytes) {
  mount(repo("packed"), "main");  // the 64 MiB blob streams (kSmallCache)
  const fs::path big = tree_->mountpoint() / "big64.bin";
  const fs::path reference = repo("packed") / "big64.bin";  // the work tree's copy
  const UniqueFd want(::open(reference.c_str(), O_RDONLY | O_CLOEXEC));
  const UniqueFd a(::open(big.c_str(), O_RDONLY | O_CLOEXEC));
  const UniqueFd b(::open(big.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(want && a && b) << std::strerror(errno);
  constexpr std::size_t kChunk = 2 << 20;
  const auto same_at = [&](int fd, off_t offset) {
    std::string got(kChunk, '\0'), expected(kChunk, '\0');
    const ssize_t n = ::pread(fd, got.data(), kChunk, offset);
    const ssize_t m = ::pread(want.get(), expected.data(), kChunk, offset);
    return n == static_cast<ssize_t>(kChunk) && m == n && got == expected;
  };
  for (off_t i = 0; i < 4; ++i) {  // a: [0, 8 MiB), b: [8 MiB, 16 MiB), interleaved
    EXPECT_TRUE(same_at(a.get(), i * static_cast<off_t>(kChunk))) << "a, chunk " << i;
    EXPECT_TRUE(same_at(b.get(), (i + 4) * static_cast<off_t>(kChunk))) << "b, chunk " << i;
  }
  // More files than the worker keeps handles for, each through several opens.
  for (int round = 0; round < 3; ++round) {
    for (int n = 1; n <= 100; ++n) {
      const std::string name = "many/f" + std::to_string(n);
      ASSERT_EQ(slurp(tree_->mountpoint() / name), "file " + std::to_string(n) + "\n") << name;
    }
  }
  // Pages dropped: the kernel reads again, by node, through a handle opened anew.
  ASSERT_EQ(::posix_fadvise(a.get(), 0, 0, POSIX_FADV_DONTNEED), 0);
  EXPECT_TRUE(same_at(a.get(), 5 << 20));
  EXPECT_TRUE(same_at(b.get(), 1 << 20));
  const fs::path small = tree_->mountpoint() / "many" / "f1";
  const UniqueFd s(::open(small.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(s);
  ASSERT_EQ(::posix_fadvise(s.get(), 0, 0, POSIX_FADV_DONTNEED), 0);
  char buffer[16] = {};
  EXPECT_EQ(::pread(s.get(), buffer, sizeof buffer, 0), 7);
  EXPECT_EQ(std::string(buffer, 7), "file 1\n");
  // Directories are opened by the kernel too: listings stay complete.
  std::size_t listed = 0;
  for (const auto& entry : fs::directory_iterator(tree_->mountpoint() / "many")) {
    static_cast<void>(entry);
    ++listed;
  }
  EXPECT_EQ(listed, 10'000u);
}

}  // namespace
}  // namespace heddle::test
