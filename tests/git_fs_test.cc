// GitFs in process: open_git_fs() and the Backend calls, against repositories built with the
// real git CLI (no FUSE here; the mount is tested end to end elsewhere).
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "backend.h"
#include "git/git_fs.h"
#include "git/node_table.h"
#include "heddle/error.h"
#include "heddle/process.h"
#include "heddle/unique_fd.h"

namespace heddle::worker {
namespace {

constexpr std::int64_t kCommitTime = 981173106;  // 2001-02-03T04:05:06Z
constexpr uid_t kOwnerUid = 4321;
constexpr gid_t kOwnerGid = 8765;
constexpr std::uint64_t kBigSize = 64ull << 20;
constexpr std::uint64_t kSmallCache = 8ull << 20;
constexpr std::size_t kChunk = 128 << 10;
constexpr int kManyFiles = 10000;

// --- helpers: processes, files, temp dirs -----------------------------------------------

std::string quote(const std::string& s) {
  std::string out = "'";
  for (const char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// No host or user config, a fixed date, a fixed identity, and no automatic gc (which would
// pack the "loose" repository's 10,000 objects behind our back).
std::string git(const std::string& dir) {
  return "env GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 LC_ALL=C "
         "GIT_AUTHOR_DATE='@981173106 +0000' GIT_COMMITTER_DATE='@981173106 +0000' "
         "git -c user.name=heddle -c user.email=heddle@example.com -c init.defaultBranch=main "
         "-c gc.auto=0 -C " +
         quote(dir) + " ";
}

// Runs a shell command (the git CLI, cp, chmod), bounded; returns its stdout, trimmed.
std::string capture(const std::string& command) {
  const ProcessResult result =
      run_process({"/bin/sh", "-c", command}, {}, std::chrono::seconds(120));
  if (!result.ok()) {
    throw std::runtime_error("command failed (exit " + std::to_string(result.exit_code) +
                             "): " + command + "\n" + result.err);
  }
  std::string out = result.out;
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

void run(const std::string& command) { (void)capture(command); }

void write_file(const std::string& path, std::string_view content, mode_t mode = 0644) {
  const UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) throw std::runtime_error("cannot create " + path + ": " + std::strerror(errno));
  if (::write(fd.get(), content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    throw std::runtime_error("short write to " + path);
  }
  ::fchmod(fd.get(), mode);
}

void make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    throw std::runtime_error("mkdir " + path + ": " + std::strerror(errno));
  }
}

// The loose object file of `oid` (hex) in the work tree repository `repo`.
std::string loose_object(const std::string& repo, const std::string& oid) {
  return repo + "/.git/objects/" + oid.substr(0, 2) + "/" + oid.substr(2);
}

// Text that compresses like source code, generated fast.
void write_big_file(const std::string& path, std::uint64_t size) {
  const UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) throw std::runtime_error("cannot create " + path);
  std::string buffer;
  std::uint64_t x = 88172645463325252ull;
  std::uint64_t line = 0;
  for (std::uint64_t written = 0; written < size;) {
    buffer.clear();
    while (buffer.size() < (1u << 20)) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      char text[96];
      const int n = std::snprintf(text, sizeof text, "%08llu %016llx the quick brown fox %llu\n",
                                  static_cast<unsigned long long>(line++),
                                  static_cast<unsigned long long>(x),
                                  static_cast<unsigned long long>(x % 1000));
      buffer.append(text, static_cast<std::size_t>(n));
    }
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), size - written));
    if (::write(fd.get(), buffer.data(), n) != static_cast<ssize_t>(n)) {
      throw std::runtime_error("short write to " + path);
    }
    written += n;
  }
}

std::string many_name(int i) {
  char name[16];
  std::snprintf(name, sizeof name, "f%05d", i);
  return name;
}

std::string many_content(int i) {
  std::string out;
  for (int k = 0; k <= i % 5; ++k) out += "file " + std::to_string(i) + "\n";
  return out;
}

class TempDir {
 public:
  TempDir() {
    for (const char* base : {"/dev/shm", "/tmp"}) {
      std::string pattern = std::string(base) + "/heddle-git-test.XXXXXX";
      if (::mkdtemp(pattern.data()) != nullptr) {
        path_ = pattern;
        return;
      }
    }
    throw std::runtime_error("mkdtemp failed");
  }
  ~TempDir() {
    std::error_code ec;
    // Unreadable copies made by a test are made readable again first.
    (void)run_process({"/bin/chmod", "-R", "u+rwX", path_}, {}, std::chrono::seconds(60));
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// --- helpers: the backend ----------------------------------------------------------------

std::unique_ptr<Backend> open_fs(const std::string& repo, const std::string& thread,
                                 std::uint64_t cache = 256ull << 20) {
  GitFsOptions options;
  options.repo_root = repo;
  options.thread = thread;
  options.cache_bytes = cache;
  options.owner_uid = kOwnerUid;
  options.owner_gid = kOwnerGid;
  return open_git_fs(options);
}

// The Error's message, or "" if opening succeeded.
std::string open_error(const std::string& repo, const std::string& thread, int* code = nullptr) {
  try {
    (void)open_fs(repo, thread);
  } catch (const Error& e) {
    if (code != nullptr) *code = e.code();
    return e.what();
  }
  return "";
}

nlohmann::ordered_json status_of(const Backend& fs) {
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  fs.add_status(extra);
  return extra;
}

// Follows a '/'-separated path from the root, counting one lookup per component.
int walk_to(Backend& fs, const std::string& path, NodeId& node, struct stat& st) {
  node = kRootNode;
  if (fs.getattr(node, st) != 0) return EIO;
  std::size_t start = 0;
  while (start < path.size()) {
    const std::size_t slash = std::min(path.find('/', start), path.size());
    const int err = fs.lookup(node, path.substr(start, slash - start), node, st);
    if (err != 0) return err;
    start = slash + 1;
  }
  return 0;
}

// Reads [offset, offset + size) through `handle` and compares it with the host file.
::testing::AssertionResult same_range(FileHandle& handle, int host_fd, std::uint64_t offset,
                                      std::size_t size, ReadResult& out, std::string& host) {
  const int err = handle.read(size, static_cast<off_t>(offset), out);
  if (err != 0) return ::testing::AssertionFailure() << "read error " << std::strerror(err);
  if (out.fd >= 0) return ::testing::AssertionFailure() << "unexpected fd answer";
  host.resize(size);
  const ssize_t n = ::pread(host_fd, host.data(), size, static_cast<off_t>(offset));
  if (n < 0) return ::testing::AssertionFailure() << "host pread failed";
  host.resize(static_cast<std::size_t>(n));
  if (out.data != host) {
    return ::testing::AssertionFailure() << "content differs at offset " << offset << " (got "
                                         << out.data.size() << " bytes, want " << n << ")";
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult same_file(Backend& fs, NodeId node, const std::string& host_path,
                                     std::size_t chunk = kChunk) {
  std::unique_ptr<FileHandle> handle;
  if (const int err = fs.open_file(node, handle); err != 0) {
    return ::testing::AssertionFailure() << "open " << host_path << ": " << std::strerror(err);
  }
  const UniqueFd host(::open(host_path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st {};
  ::fstat(host.get(), &st);
  ReadResult out;
  std::string buffer;
  std::uint64_t offset = 0;
  for (;;) {
    auto same = same_range(*handle, host.get(), offset, chunk, out, buffer);
    if (!same) return same << " in " << host_path;
    if (out.data.empty()) break;
    offset += out.data.size();
  }
  if (offset != static_cast<std::uint64_t>(st.st_size)) {
    return ::testing::AssertionFailure() << host_path << ": read " << offset << " bytes";
  }
  return ::testing::AssertionSuccess();
}

// Peak RSS in KiB since the last reset (VmHWM, reset through clear_refs).
std::uint64_t peak_rss_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6));
  }
  struct rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<std::uint64_t>(usage.ru_maxrss);
}

bool reset_peak_rss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  return clear.good();
}

// Captures what the default spdlog logger prints while it lives.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(stream_);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  // Lines that mention `needle`.
  [[nodiscard]] std::size_t count(const std::string& needle) {
    spdlog::default_logger()->flush();
    std::istringstream lines(stream_.str());
    std::size_t n = 0;
    for (std::string line; std::getline(lines, line);) {
      if (line.find(needle) != std::string::npos) ++n;
    }
    return n;
  }
  [[nodiscard]] std::string text() {
    spdlog::default_logger()->flush();
    return stream_.str();
  }

 private:
  std::ostringstream stream_;
  std::shared_ptr<spdlog::logger> previous_;
};

// --- resolution and open errors, on a small repository ------------------------------------

class GitFsResolveTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    try {
      dir_ = std::make_unique<TempDir>();
      repo_ = dir_->path() + "/small";
      run(git(dir_->path()) + "init -q small");
      make_dir(repo_ + "/dir");
      write_file(repo_ + "/a.txt", "one\n");
      write_file(repo_ + "/dir/x", "x\n");
      run(git(repo_) + "add -A && " + git(repo_) + "commit -qm one");
      c1_ = capture(git(repo_) + "rev-parse HEAD");
      write_file(repo_ + "/a.txt", "two\n");
      run(git(repo_) + "commit -qam two");
      c2_ = capture(git(repo_) + "rev-parse HEAD");
      tree2_ = capture(git(repo_) + "rev-parse HEAD^{tree}");
      blob_ = capture(git(repo_) + "rev-parse HEAD:a.txt");
      run(git(repo_) + "update-ref refs/heads/topic " + c1_);
      run(git(repo_) + "update-ref refs/heddle/threads/topic " + c2_);
      run(git(repo_) + "update-ref refs/heddle/threads/only " + c1_);
      run(git(repo_) + "tag -a -m v1 v1 " + c1_);
      run(git(repo_) + "update-ref refs/heddle/threads/v1 " + c2_);
      run(git(repo_) + "tag -a -m v2 v2 " + c2_);
      run(git(repo_) + "tag blobtag " + blob_);
      run(git(repo_) + "tag -a -m b blobtag-a " + blob_);
    } catch (const std::exception& e) {
      setup_error_ = e.what();
    }
  }
  static void TearDownTestSuite() { dir_.reset(); }
  void SetUp() override { ASSERT_EQ(setup_error_, ""); }

  static std::string commit_of(const std::string& thread) {
    return status_of(*open_fs(repo_, thread))["commit"].get<std::string>();
  }

  static inline std::unique_ptr<TempDir> dir_;
  static inline std::string repo_, c1_, c2_, tree2_, blob_, setup_error_;
};

TEST_F(GitFsResolveTest, HeadsBeatHeddleThreadsWhichBeatRevisions) {
  EXPECT_EQ(commit_of("main"), c2_);
  EXPECT_EQ(commit_of("topic"), c1_) << "refs/heads/topic must win over refs/heddle/threads/topic";
  EXPECT_EQ(commit_of("only"), c1_) << "refs/heddle/threads/only";
  EXPECT_EQ(commit_of("v1"), c2_) << "refs/heddle/threads/v1 must win over the tag v1";
}

TEST_F(GitFsResolveTest, RevisionsTagsAndIds) {
  EXPECT_EQ(commit_of("v2"), c2_) << "annotated tag, peeled";
  EXPECT_EQ(commit_of(c1_), c1_);
  EXPECT_EQ(commit_of(c1_.substr(0, 9)), c1_) << "abbreviated id";
  EXPECT_EQ(commit_of("main~1"), c1_);
  EXPECT_EQ(commit_of("refs/tags/v1"), c1_);
}

TEST_F(GitFsResolveTest, ATreeIdHasNoCommitAndTimeZero) {
  auto fs = open_fs(repo_, tree2_);
  const auto status = status_of(*fs);
  EXPECT_TRUE(status["commit"].is_null());
  EXPECT_EQ(status["tree"], tree2_);
  struct stat st {};
  ASSERT_EQ(fs->getattr(kRootNode, st), 0);
  EXPECT_EQ(st.st_mtime, 0);

  auto sub = open_fs(repo_, "main:dir");
  NodeId node = 0;
  ASSERT_EQ(sub->lookup(kRootNode, "x", node, st), 0);
  EXPECT_EQ(st.st_size, 2);
}

TEST_F(GitFsResolveTest, CommitTimeIsEveryNodesTime) {
  auto fs = open_fs(repo_, "main");
  struct stat st {};
  ASSERT_EQ(fs->getattr(kRootNode, st), 0);
  EXPECT_EQ(st.st_mtime, kCommitTime);
  EXPECT_EQ(st.st_ctime, kCommitTime);
  EXPECT_EQ(st.st_atime, kCommitTime);
  EXPECT_EQ(st.st_uid, kOwnerUid);
  EXPECT_EQ(st.st_gid, kOwnerGid);
  EXPECT_EQ(st.st_ino, 1u);
}

TEST_F(GitFsResolveTest, UnknownThreadListsHeads) {
  int code = 0;
  const std::string message = open_error(repo_, "nope", &code);
  EXPECT_EQ(code, ENOENT);
  EXPECT_EQ(message.rfind("thread 'nope' not found in " + repo_ +
                              " (tried refs/heads/nope, refs/heddle/threads/nope and revision "
                              "'nope'); existing heads: main, topic",
                          0),
            0u)
      << message;
}

TEST_F(GitFsResolveTest, UnknownThreadListsAtMostTenHeads) {
  TempDir dir;
  const std::string repo = dir.path() + "/r";
  run(git(dir.path()) + "init -q r");
  write_file(repo + "/f", "f\n");
  run(git(repo) + "add f && " + git(repo) + "commit -qm f");
  for (int i = 0; i < 12; ++i) {
    char name[8];
    std::snprintf(name, sizeof name, "h%02d", i);
    run(git(repo) + "branch " + name);
  }
  const std::string message = open_error(repo, "nope");
  EXPECT_NE(message.find("existing heads: h00, h01, h02, h03, h04, h05, h06, h07, h08, h09, ..."),
            std::string::npos)
      << message;

  const std::string empty = dir.path() + "/empty";
  run(git(dir.path()) + "init -q empty");
  EXPECT_NE(open_error(empty, "main").find("existing heads: (no heads)"), std::string::npos)
      << open_error(empty, "main");
}

TEST_F(GitFsResolveTest, ABlobIsRefused) {
  for (const std::string thread : {"blobtag", "blobtag-a", "main:a.txt"}) {
    int code = 0;
    const std::string message = open_error(repo_, thread, &code);
    EXPECT_EQ(message.rfind("thread '" + thread + "' in " + repo_ + " resolves to a blob (" +
                                blob_ + "), not a commit or tree",
                            0),
              0u)
        << message;
    EXPECT_EQ(code, EINVAL);
  }
}

TEST_F(GitFsResolveTest, NotARepository) {
  TempDir dir;
  int code = 0;
  std::string message = open_error(dir.path(), "main", &code);
  EXPECT_EQ(message.rfind(dir.path() + " is not a git repository: ", 0), 0u) << message;
  EXPECT_EQ(code, ENOTDIR);

  message = open_error(dir.path() + "/missing", "main", &code);
  EXPECT_EQ(message.rfind(dir.path() + "/missing is not a git repository: ", 0), 0u) << message;
  EXPECT_EQ(code, ENOENT);

  // A work tree's subdirectory is not searched upwards.
  message = open_error(repo_ + "/dir", "main", &code);
  EXPECT_EQ(message.rfind(repo_ + "/dir is not a git repository: ", 0), 0u) << message;
}

TEST_F(GitFsResolveTest, GitFileAndBareRepositories) {
  TempDir dir;
  const std::string work = dir.path() + "/work";
  run(git(dir.path()) + "init -q --separate-git-dir=" + quote(dir.path() + "/gitdir") + " work");
  write_file(work + "/f", "through a .git file\n");
  run(git(work) + "add f && " + git(work) + "commit -qm f");
  struct stat st {};
  ASSERT_EQ(::lstat((work + "/.git").c_str(), &st), 0);
  ASSERT_TRUE(S_ISREG(st.st_mode));
  auto fs = open_fs(work, "main");
  NodeId node = 0;
  ASSERT_EQ(fs->lookup(kRootNode, "f", node, st), 0);
  EXPECT_TRUE(same_file(*fs, node, work + "/f"));

  run(git(dir.path()) + "clone -q --bare " + quote(repo_) + " bare.git");
  EXPECT_EQ(status_of(*open_fs(dir.path() + "/bare.git", "main"))["commit"], c2_);
}

// Run as uid/gid 65534 in a child, as the sandboxed worker does.
TEST_F(GitFsResolveTest, UnreadableRepositoryNamesTheIdentity) {
  if (::getuid() != 0) GTEST_SKIP() << "needs root to switch to uid 65534";
  TempDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
  const std::string closed = dir.path() + "/closed";
  const std::string no_objects = dir.path() + "/no-objects";
  run("cp -a " + quote(repo_) + " " + quote(closed) + " && cp -a " + quote(repo_) + " " +
      quote(no_objects) + " && chmod -R a+rX " + quote(no_objects) + " && chmod 000 " +
      quote(closed) + " " + quote(no_objects + "/.git/objects"));

  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  // A raw fork, not a helper program: the test subject (open_fs) runs in the child.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    std::string out;
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) _exit(3);
    for (const auto& repo : {closed, no_objects}) {
      try {
        (void)open_fs(repo, "main");
        out += "opened\n";
      } catch (const Error& e) {
        out += std::string(e.what()) + " [" + std::to_string(e.code()) + "]\n";
      } catch (const std::exception& e) {
        out += std::string("other: ") + e.what() + "\n";
      }
    }
    (void)!::write(fds[1], out.data(), out.size());
    _exit(0);
  }
  ::close(fds[1]);
  std::string text;
  char buf[4096];
  ssize_t n = 0;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  for (const auto& repo : {closed, no_objects}) {
    EXPECT_NE(text.find("repository " + repo +
                        " is not readable by the worker's identity (uid 65534, gid 65534): make it "
                        "readable by that user, or mount with --uid/--gid of its owner"),
              std::string::npos)
        << text;
  }
  EXPECT_NE(text.find("[" + std::to_string(EACCES) + "]"), std::string::npos) << text;
}

// --- the big repository: loose, packed and through alternates ----------------------------

class GitFsTreeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    try {
      const auto started = std::chrono::steady_clock::now();
      dir_ = std::make_unique<TempDir>();
      const std::string base = dir_->path();
      loose_ = base + "/loose";
      run(git(base) + "init -q loose");
      const std::string& w = loose_;
      write_file(w + "/README", "a heddle thread\n");
      write_file(w + "/exec.sh", "#!/bin/sh\necho hi\n", 0755);
      write_file(w + "/empty", "");
      write_file(w + "/empty-exec", "", 0755);
      std::string deep = w;
      for (int i = 0; i < 30; ++i) {
        char name[8];
        std::snprintf(name, sizeof name, "/d%02d", i);
        deep += name;
        make_dir(deep);
      }
      write_file(deep + "/leaf.txt", "thirty deep\n");
      make_dir(w + "/many");
      for (int i = 0; i < kManyFiles; ++i) write_file(w + "/many/" + many_name(i), many_content(i));
      make_dir(w + "/links");
      ::symlink("no/such/target", (w + "/links/dangling").c_str());
      ::symlink("../../../../../etc/passwd", (w + "/links/outside").c_str());
      ::symlink("/usr/bin/env", (w + "/links/absolute").c_str());
      ::symlink("../d00", (w + "/links/to-dir").c_str());
      ::symlink("../README", (w + "/links/to-file").c_str());
      make_dir(w + "/names");
      write_file(w + "/names/\xff\xfe.bin", "not utf-8\n");
      write_file(w + "/names/new\nline", "newline\n");
      write_file(w + "/names/" + long_name(), "255 bytes of name\n");
      write_file(w + "/names/sp ace & 'quote'", "shell\n");
      make_dir(w + "/big");
      write_big_file(w + "/big/big64.bin", kBigSize);
      run(git(w) + "add -A && " + git(w) + "commit -qm tree");
      run(git(w) + "update-index --add --cacheinfo 160000," +
          capture(git(w) + "rev-parse HEAD") + ",sub && " + git(w) + "commit -qm submodule");
      big_oid_ = capture(git(w) + "rev-parse HEAD:big/big64.bin");

      packed_ = base + "/packed.git";
      run(git(base) + "clone -q --mirror --no-hardlinks " + quote(loose_) + " packed.git");
      run(git(packed_) + "-c pack.compression=1 repack -adq");
      shared_ = base + "/shared";
      run(git(base) + "clone -q --shared --no-checkout " + quote(loose_) + " shared");

      expected_ = base + "/expected";
      make_dir(expected_);
      run(git(loose_) + "-c tar.umask=0022 archive main | tar -x --no-same-owner -C " +
          quote(expected_));
      std::fprintf(stderr, "[ setup    ] big repositories built in %lld ms\n",
                   static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                              std::chrono::steady_clock::now() - started)
                                              .count()));
    } catch (const std::exception& e) {
      setup_error_ = e.what();
    }
  }
  static void TearDownTestSuite() { dir_.reset(); }
  void SetUp() override { ASSERT_EQ(setup_error_, ""); }

  static std::string long_name() { return std::string(251, 'n') + ".txt"; }

  struct Counts {
    int files = 0, dirs = 0, links = 0;
  };

  // Compares directory `node` (at `path` below the root) with the extracted archive.
  void compare_dir(Backend& fs, NodeId node, const std::string& path, Counts& counts) {
    DirSnapshot snapshot;
    ASSERT_EQ(fs.read_dir(node, snapshot), 0) << path;
    const std::string host_dir = expected_ + (path.empty() ? "" : "/" + path);
    std::vector<std::string> host_names;
    DIR* d = ::opendir(host_dir.c_str());
    ASSERT_NE(d, nullptr) << host_dir;
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") host_names.push_back(name);
    }
    ::closedir(d);
    std::vector<std::string> names;
    bool dot = false, dotdot = false;
    for (const auto& entry : snapshot.entries) {
      if (entry.name == ".") {
        dot = true;
      } else if (entry.name == "..") {
        dotdot = true;
      } else {
        names.push_back(entry.name);
      }
    }
    EXPECT_TRUE(dot && dotdot) << path;
    std::sort(names.begin(), names.end());
    std::sort(host_names.begin(), host_names.end());
    ASSERT_EQ(names, host_names) << path;

    for (const auto& entry : snapshot.entries) {
      if (entry.name == "." || entry.name == "..") continue;
      const std::string child_path = path.empty() ? entry.name : path + "/" + entry.name;
      const std::string host_path = expected_ + "/" + child_path;
      NodeId child = 0;
      struct stat st {};
      ASSERT_EQ(fs.lookup(node, entry.name, child, st), 0) << child_path;
      struct stat host {};
      ASSERT_EQ(::lstat(host_path.c_str(), &host), 0) << host_path;
      EXPECT_EQ(st.st_mode & S_IFMT, host.st_mode & S_IFMT) << child_path;
      EXPECT_EQ(st.st_ino, entry.ino) << child_path;
      EXPECT_EQ(st.st_mtime, kCommitTime);
      EXPECT_EQ(st.st_uid, kOwnerUid);
      EXPECT_EQ(st.st_gid, kOwnerGid);
      EXPECT_EQ(st.st_blocks, (st.st_size + 511) / 512);
      if (child_path == "sub") {
        EXPECT_EQ(st.st_mode, S_IFDIR | 0755);  // as git archive writes it
        EXPECT_EQ(entry.type, DT_DIR);
      } else {
        EXPECT_EQ(st.st_mode & 07777, host.st_mode & 07777) << child_path;
      }
      if (S_ISDIR(st.st_mode)) {
        ++counts.dirs;
        EXPECT_EQ(entry.type, DT_DIR);
        EXPECT_EQ(st.st_nlink, 2u);
        compare_dir(fs, child, child_path, counts);
      } else if (S_ISLNK(st.st_mode)) {
        ++counts.links;
        EXPECT_EQ(entry.type, DT_LNK);
        std::string target;
        ASSERT_EQ(fs.readlink(child, target), 0);
        char host_target[4096];
        const ssize_t n = ::readlink(host_path.c_str(), host_target, sizeof host_target);
        ASSERT_GT(n, 0);
        EXPECT_EQ(target, std::string(host_target, static_cast<std::size_t>(n)));
        EXPECT_EQ(st.st_size, n);
      } else {
        ++counts.files;
        EXPECT_EQ(entry.type, DT_REG);
        EXPECT_EQ(st.st_size, host.st_size) << child_path;
        EXPECT_TRUE(same_file(fs, child, host_path));
      }
      fs.forget(child, 1);
      if (HasFatalFailure()) return;
    }
  }

  void walk_and_compare(const std::string& repo) {
    const auto started = std::chrono::steady_clock::now();
    auto fs = open_fs(repo, "main", kSmallCache);
    Counts counts;
    compare_dir(*fs, kRootNode, "", counts);
    EXPECT_GE(counts.files, kManyFiles + 10);
    EXPECT_EQ(counts.links, 5);
    EXPECT_GE(counts.dirs, 34);
    EXPECT_EQ(fs->node_count(), 1u) << "every node was forgotten again";

    // The big file, again: random offsets (backwards resumes at a seek point, or the start).
    NodeId node = 0;
    struct stat st {};
    ASSERT_EQ(walk_to(*fs, "big/big64.bin", node, st), 0);
    std::unique_ptr<FileHandle> handle;
    ASSERT_EQ(fs->open_file(node, handle), 0);
    const UniqueFd host(::open((expected_ + "/big/big64.bin").c_str(), O_RDONLY | O_CLOEXEC));
    ReadResult out;
    std::string buffer;
    const std::uint64_t middle = (std::uint64_t{40} << 20) + 12345;
    for (const std::uint64_t offset : std::initializer_list<std::uint64_t>{
             kBigSize - 4096, 1u << 20, middle, 0, middle + 100, kBigSize - 10,
             middle - 5000, 3}) {
      EXPECT_TRUE(same_range(*handle, host.get(), offset, kChunk, out, buffer)) << offset;
    }
    ASSERT_EQ(handle->read(kChunk, static_cast<off_t>(kBigSize), out), 0);
    EXPECT_TRUE(out.data.empty()) << "a read at the end is empty";
    const auto status = status_of(*fs);
    EXPECT_LE(status["cache_bytes"].get<std::uint64_t>(), kSmallCache);
    EXPECT_GE(status["streamed_opens"].get<std::uint64_t>(), 2u);
    EXPECT_EQ(status["whole_reads_of_big_blobs"].get<std::uint64_t>(), 0u);
    std::fprintf(stderr, "[ walk     ] %s: %d files, %d dirs, %d links in %lld ms\n",
                 repo.c_str(), counts.files, counts.dirs, counts.links,
                 static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                            std::chrono::steady_clock::now() - started)
                                            .count()));
  }

  // Reads the 64 MiB file sequentially with an 8 MiB cache: it streams, and the process's
  // peak RSS grows by far less than the file.
  void stream_big_file(const std::string& repo) {
    auto fs = open_fs(repo, "main", kSmallCache);
    NodeId node = 0;
    struct stat st {};
    ASSERT_EQ(walk_to(*fs, "big/big64.bin", node, st), 0);
    ASSERT_EQ(static_cast<std::uint64_t>(st.st_size), kBigSize);
    const auto before = status_of(*fs);
    const UniqueFd host(::open((expected_ + "/big/big64.bin").c_str(), O_RDONLY | O_CLOEXEC));
    ReadResult out;
    std::string buffer;
    buffer.reserve(kChunk);
    out.owned.reserve(kChunk);

    const bool reset = reset_peak_rss();
    const std::uint64_t peak_before = peak_rss_kib();
    std::unique_ptr<FileHandle> handle;
    ASSERT_EQ(fs->open_file(node, handle), 0);
    std::uint64_t offset = 0;
    for (; offset < kBigSize; offset += kChunk) {
      ASSERT_TRUE(same_range(*handle, host.get(), offset, kChunk, out, buffer));
    }
    const std::uint64_t growth_kib = peak_rss_kib() - peak_before;
    handle.reset();

    const auto after = status_of(*fs);
    EXPECT_EQ(after["streamed_opens"].get<std::uint64_t>(),
              before["streamed_opens"].get<std::uint64_t>() + 1);
    EXPECT_EQ(after["whole_reads_of_big_blobs"].get<std::uint64_t>(), 0u);
    EXPECT_LE(after["cache_bytes"].get<std::uint64_t>(), kSmallCache);
    EXPECT_EQ(after["cache_limit"].get<std::uint64_t>(), kSmallCache);
    std::fprintf(stderr, "[ rss      ] %s: peak RSS grew by %llu KiB reading 64 MiB (%s)\n",
                 repo.c_str(), static_cast<unsigned long long>(growth_kib),
                 reset ? "VmHWM reset" : "ru_maxrss, not reset");
    EXPECT_LT(growth_kib, 40u << 10);
  }

  static inline std::unique_ptr<TempDir> dir_;
  static inline std::string loose_, packed_, shared_, expected_, big_oid_, setup_error_;
};

TEST_F(GitFsTreeTest, LooseObjectsMatchGitArchive) {
  // The big blob really is a loose object here.
  struct stat st {};
  ASSERT_EQ(::stat(loose_object(loose_, big_oid_).c_str(), &st), 0);
  walk_and_compare(loose_);
}

TEST_F(GitFsTreeTest, PackedObjectsMatchGitArchive) {
  std::size_t loose_dirs = 0;
  for (const auto& entry : std::filesystem::directory_iterator(packed_ + "/objects")) {
    if (entry.path().filename().string().size() == 2) ++loose_dirs;
  }
  ASSERT_EQ(loose_dirs, 0u) << "repack -ad should leave no loose object";
  walk_and_compare(packed_);
}

TEST_F(GitFsTreeTest, AlternatesMatchGitArchive) {
  ASSERT_TRUE(std::filesystem::exists(shared_ + "/.git/objects/info/alternates"));
  walk_and_compare(shared_);
}

TEST_F(GitFsTreeTest, BigLooseBlobStreamsInBoundedMemory) { stream_big_file(loose_); }
TEST_F(GitFsTreeTest, BigPackedBlobStreamsInBoundedMemory) { stream_big_file(packed_); }

TEST_F(GitFsTreeTest, SpecialEntries) {
  auto fs = open_fs(loose_, "main");
  NodeId node = 0;
  struct stat st {};

  ASSERT_EQ(fs->lookup(kRootNode, "sub", node, st), 0);
  EXPECT_EQ(st.st_mode, S_IFDIR | 0755);  // as git archive writes it
  DirSnapshot snapshot;
  ASSERT_EQ(fs->read_dir(node, snapshot), 0);
  EXPECT_EQ(snapshot.entries.size(), 2u) << "a submodule is an empty directory";
  NodeId inner = 0;
  EXPECT_EQ(fs->lookup(node, "anything", inner, st), ENOENT);

  ASSERT_EQ(fs->lookup(kRootNode, "exec.sh", node, st), 0);
  EXPECT_EQ(st.st_mode, S_IFREG | 0755);
  EXPECT_EQ(fs->lookup(node, "x", inner, st), ENOTDIR);
  EXPECT_EQ(fs->read_dir(node, snapshot), ENOTDIR);
  std::string target;
  EXPECT_EQ(fs->readlink(node, target), EINVAL);
  ASSERT_EQ(fs->lookup(kRootNode, "README", node, st), 0);
  EXPECT_EQ(st.st_mode, S_IFREG | 0644);
  EXPECT_EQ(st.st_size, 16);
  EXPECT_EQ(st.st_blksize, 4096);
  EXPECT_EQ(st.st_blocks, 1);
  ASSERT_EQ(fs->lookup(kRootNode, "empty", node, st), 0);
  EXPECT_EQ(st.st_size, 0);
  std::unique_ptr<FileHandle> handle;
  ASSERT_EQ(fs->open_file(node, handle), 0);
  ReadResult out;
  ASSERT_EQ(handle->read(4096, 0, out), 0);
  EXPECT_TRUE(out.data.empty());

  EXPECT_EQ(fs->lookup(kRootNode, "missing", node, st), ENOENT);
  EXPECT_EQ(fs->lookup(kRootNode, ".", node, st), ENOENT);
  EXPECT_EQ(fs->lookup(kRootNode, "..", node, st), ENOENT);
  NodeId dir = 0;
  ASSERT_EQ(fs->lookup(kRootNode, "d00", dir, st), 0);
  EXPECT_EQ(fs->open_file(dir, handle), EISDIR);

  ASSERT_EQ(walk_to(*fs, "links/absolute", node, st), 0);
  EXPECT_EQ(st.st_mode, S_IFLNK | 0777);
  EXPECT_EQ(st.st_size, 12);
  ASSERT_EQ(fs->readlink(node, target), 0);
  EXPECT_EQ(target, "/usr/bin/env");

  ASSERT_EQ(fs->lookup(kRootNode, "names", dir, st), 0);
  for (const std::string& name :
       {std::string("\xff\xfe.bin"), std::string("new\nline"), long_name()}) {
    ASSERT_EQ(fs->lookup(dir, name, node, st), 0) << name;
    EXPECT_TRUE(same_file(*fs, node, expected_ + "/names/" + name));
  }
  EXPECT_EQ(long_name().size(), 255u);
  ASSERT_EQ(fs->read_dir(dir, snapshot), 0);
  EXPECT_EQ(snapshot.node, dir);
  ASSERT_EQ(snapshot.entries.size(), 6u);
  EXPECT_EQ(snapshot.entries[0].name, ".");
  EXPECT_EQ(snapshot.entries[1].name, "..");
  EXPECT_EQ(snapshot.entries[1].ino, 1u) << "the parent of names/ is the root";

  struct statvfs vfs {};
  ASSERT_EQ(fs->statfs(vfs), 0);
  EXPECT_EQ(vfs.f_bsize, 4096u);
  EXPECT_EQ(vfs.f_namemax, 255u);
  EXPECT_TRUE(vfs.f_flag & ST_RDONLY);
  EXPECT_EQ(vfs.f_files, fs->node_count());

  const auto policy = fs->cache_policy();
  EXPECT_GE(policy.entry_timeout, 3600.0);
  EXPECT_GE(policy.attr_timeout, 3600.0);
  EXPECT_TRUE(policy.keep_cache);

  const auto status = status_of(*fs);
  for (const char* key : {"commit", "tree", "cache_bytes", "cache_limit", "cache_entries",
                          "cache_hits", "cache_misses", "streamed_opens", "nodes"}) {
    EXPECT_TRUE(status.contains(key)) << key;
  }
  EXPECT_EQ(status["commit"].get<std::string>().size(), 40u);
  EXPECT_EQ(status["tree"].get<std::string>().size(), 40u);
  EXPECT_EQ(status["nodes"].get<std::size_t>(), fs->node_count());
  EXPECT_EQ(status["cache_limit"].get<std::uint64_t>(), 256ull << 20);
}

TEST_F(GitFsTreeTest, CacheHitsShareOneBlob) {
  auto fs = open_fs(loose_, "main");
  NodeId node = 0;
  struct stat st {};
  ASSERT_EQ(fs->lookup(kRootNode, "README", node, st), 0);
  std::unique_ptr<FileHandle> a, b;
  ASSERT_EQ(fs->open_file(node, a), 0);
  ASSERT_EQ(fs->open_file(node, b), 0);
  ReadResult ra, rb;
  ASSERT_EQ(a->read(100, 0, ra), 0);
  ASSERT_EQ(b->read(100, 2, rb), 0);
  EXPECT_EQ(ra.data, "a heddle thread\n");
  EXPECT_EQ(rb.data, "heddle thread\n");
  EXPECT_EQ(ra.data.data() + 2, rb.data.data()) << "both views point into one cached copy";
  const auto status = status_of(*fs);
  EXPECT_EQ(status["cache_misses"], 1);
  EXPECT_EQ(status["cache_hits"], 0) << "the second open shares what the first holds";
  EXPECT_EQ(status["cache_entries"], 1);
  EXPECT_EQ(status["cache_bytes"], 16);
  EXPECT_EQ(status["held_bytes"], 16) << "held once, for both handles";
  a.reset();
  b.reset();
  EXPECT_EQ(status_of(*fs)["held_bytes"], 0);
  ASSERT_EQ(fs->open_file(node, a), 0);
  EXPECT_EQ(status_of(*fs)["cache_hits"], 1) << "reopened from the cache";
}

TEST_F(GitFsTreeTest, ForgettingEverythingLeavesTheRoot) {
  auto fs = open_fs(loose_, "main");
  NodeId many = 0;
  struct stat st {};
  ASSERT_EQ(fs->lookup(kRootNode, "many", many, st), 0);
  DirSnapshot snapshot;
  ASSERT_EQ(fs->read_dir(many, snapshot), 0);
  ASSERT_EQ(snapshot.entries.size(), static_cast<std::size_t>(kManyFiles) + 2);
  std::vector<NodeId> nodes;
  for (const auto& entry : snapshot.entries) {
    if (entry.name == "." || entry.name == "..") continue;
    NodeId node = 0;
    ASSERT_EQ(fs->lookup(many, entry.name, node, st), 0);
    nodes.push_back(node);
  }
  EXPECT_EQ(fs->node_count(), static_cast<std::size_t>(kManyFiles) + 2);
  // The same path is the same node while it is remembered.
  NodeId again = 0;
  ASSERT_EQ(fs->lookup(many, many_name(7), again, st), 0);
  EXPECT_EQ(again, nodes[7]);
  fs->forget(again, 1);
  for (const NodeId node : nodes) fs->forget(node, 1);
  EXPECT_EQ(fs->node_count(), 2u);
  fs->forget(many, 1);
  EXPECT_EQ(fs->node_count(), 1u);
  fs->forget(kRootNode, 1000);
  EXPECT_EQ(fs->node_count(), 1u) << "the root is never forgotten";
  ASSERT_EQ(fs->getattr(kRootNode, st), 0);
  EXPECT_EQ(fs->getattr(many, st), ESTALE);
}

TEST_F(GitFsTreeTest, InodeNumbersSurviveForget) {
  auto fs = open_fs(loose_, "main");
  NodeId a = 0, b = 0, c = 0;
  struct stat st {}, first {}, second {};
  ASSERT_EQ(fs->lookup(kRootNode, "d00", a, st), 0);
  ASSERT_EQ(fs->lookup(a, "d01", b, st), 0);
  ASSERT_EQ(fs->lookup(b, "d02", c, first), 0);
  EXPECT_EQ(fs->node_count(), 4u);
  fs->forget(c, 1);
  fs->forget(b, 1);
  fs->forget(a, 1);
  EXPECT_EQ(fs->node_count(), 1u);
  EXPECT_EQ(fs->getattr(c, st), ESTALE);

  NodeId node = 0;
  ASSERT_EQ(walk_to(*fs, "d00/d01/d02", node, second), 0);
  EXPECT_EQ(first.st_ino, second.st_ino);
  EXPECT_NE(first.st_ino, 0u);
  EXPECT_NE(first.st_ino, 1u);
  DirSnapshot snapshot;
  ASSERT_EQ(fs->read_dir(node, snapshot), 0);
  EXPECT_EQ(snapshot.entries[0].ino, first.st_ino) << "'.' of d02";
  ASSERT_EQ(fs->getattr(node, st), 0);
  EXPECT_EQ(st.st_ino, first.st_ino);
}

TEST_F(GitFsTreeTest, SixteenThreadsReadDifferentFiles) {
  auto fs = open_fs(packed_, "main", kSmallCache);
  NodeId many = 0, big = 0;
  struct stat st {};
  ASSERT_EQ(fs->lookup(kRootNode, "many", many, st), 0);
  ASSERT_EQ(walk_to(*fs, "big/big64.bin", big, st), 0);
  std::atomic<int> errors{0}, mismatches{0};
  const std::string host_big = expected_ + "/big/big64.bin";
  const auto started = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      if (t == 15) {  // one thread streams the big blob meanwhile
        if (!same_file(*fs, big, host_big)) ++mismatches;
        return;
      }
      for (int i = t; i < kManyFiles; i += 15) {
        NodeId node = 0;
        struct stat file_st {};
        std::unique_ptr<FileHandle> handle;
        ReadResult out;
        if (fs->lookup(many, many_name(i), node, file_st) != 0 ||
            fs->open_file(node, handle) != 0 || handle->read(4096, 0, out) != 0) {
          ++errors;
          continue;
        }
        if (out.data != many_content(i) ||
            file_st.st_size != static_cast<off_t>(many_content(i).size())) {
          ++mismatches;
        }
        handle.reset();
        fs->forget(node, 1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  std::fprintf(stderr, "[ threads  ] 16 readers took %lld ms\n",
               static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::steady_clock::now() - started)
                                          .count()));
  EXPECT_EQ(errors, 0);
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ(fs->node_count(), 4u);  // root, many, big, big64.bin
}

TEST_F(GitFsTreeTest, ConcurrentReadsOnOneStreamedHandle) {
  auto fs = open_fs(loose_, "main", kSmallCache);
  NodeId node = 0;
  struct stat st {};
  ASSERT_EQ(walk_to(*fs, "big/big64.bin", node, st), 0);
  std::unique_ptr<FileHandle> handle;
  ASSERT_EQ(fs->open_file(node, handle), 0);
  const UniqueFd host(::open((expected_ + "/big/big64.bin").c_str(), O_RDONLY | O_CLOEXEC));
  // Like readahead: chunks handed out in order, answered in whatever order threads get to them.
  std::atomic<std::uint64_t> next{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      ReadResult out;
      std::string buffer;
      for (std::uint64_t k; (k = next++) < 128;) {
        if (!same_range(*handle, host.get(), k * kChunk, kChunk, out, buffer)) ++failures;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures, 0);
}

// --- damaged objects -----------------------------------------------------------------------

TEST(GitFsDamageTest, ACorruptObjectIsEioForThatFileOnly) {
  TempDir dir;
  const std::string repo = dir.path() + "/r";
  run(git(dir.path()) + "init -q r");
  write_file(repo + "/bad.txt", "this blob will be damaged\n");
  write_file(repo + "/good.txt", "this one stays readable\n");
  write_file(repo + "/gone.txt", "this one will be missing\n");
  run(git(repo) + "add -A && " + git(repo) + "commit -qm t");
  const std::string bad = capture(git(repo) + "rev-parse HEAD:bad.txt");
  const std::string gone = capture(git(repo) + "rev-parse HEAD:gone.txt");
  ::chmod(loose_object(repo, bad).c_str(), 0644);
  write_file(loose_object(repo, bad), "garbage, not zlib at all");
  ASSERT_EQ(::unlink(loose_object(repo, gone).c_str()), 0);

  LogCapture log;
  auto fs = open_fs(repo, "main");
  for (const char* name : {"bad.txt", "gone.txt"}) {
    NodeId node = 0;
    struct stat st {};
    ASSERT_EQ(fs->lookup(kRootNode, name, node, st), 0) << "still listed: " << name;
    std::unique_ptr<FileHandle> handle;
    EXPECT_EQ(fs->open_file(node, handle), EIO) << name;
    EXPECT_EQ(fs->open_file(node, handle), EIO) << name;
  }
  NodeId node = 0;
  struct stat st {};
  ASSERT_EQ(fs->lookup(kRootNode, "good.txt", node, st), 0);
  std::unique_ptr<FileHandle> handle;
  ASSERT_EQ(fs->open_file(node, handle), 0);
  ReadResult out;
  ASSERT_EQ(handle->read(4096, 0, out), 0);
  EXPECT_EQ(out.data, "this one stays readable\n");
  EXPECT_EQ(log.count(bad), 1u) << log.text();
  EXPECT_EQ(log.count(gone), 1u) << log.text();
}

TEST(GitFsDamageTest, ACorruptStreamedBlobIsEio) {
  TempDir dir;
  const std::string repo = dir.path() + "/r";
  run(git(dir.path()) + "init -q r");
  write_big_file(repo + "/big.bin", 4u << 20);
  run(git(repo) + "add -A && " + git(repo) + "commit -qm t");
  const std::string oid = capture(git(repo) + "rev-parse HEAD:big.bin");
  const std::string path = loose_object(repo, oid);
  // Keep the zlib header (so the size is readable) and damage the middle.
  {
    ::chmod(path.c_str(), 0644);
    const UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    const std::string junk(4096, '\x5a');
    ASSERT_EQ(::pwrite(fd.get(), junk.data(), junk.size(), 200000), 4096);
  }
  LogCapture log;
  auto fs = open_fs(repo, "main", 1u << 20);
  NodeId node = 0;
  struct stat st {};
  ASSERT_EQ(fs->lookup(kRootNode, "big.bin", node, st), 0);
  EXPECT_EQ(st.st_size, 4 << 20);
  std::unique_ptr<FileHandle> handle;
  ASSERT_EQ(fs->open_file(node, handle), 0);
  ReadResult out;
  int err = 0;
  for (std::uint64_t offset = 0; offset < (4u << 20) && err == 0; offset += kChunk) {
    err = handle->read(kChunk, static_cast<off_t>(offset), out);
  }
  EXPECT_EQ(err, EIO);
  EXPECT_EQ(handle->read(kChunk, 0, out), 0) << "the start is still readable";
  EXPECT_EQ(log.count(oid), 1u) << log.text();
}

// Incompressible data is stored, not compressed: a changed byte still inflates, and only the
// stream's adler32 (checked by us, not zlib) shows the damage, at the blob's last read.
TEST(GitFsDamageTest, AChangedByteInStoredDataIsEioAtTheEnd) {
  for (const bool packed : {false, true}) {
    SCOPED_TRACE(packed ? "packed" : "loose");
    TempDir dir;
    const std::string repo = dir.path() + "/r";
    run(git(dir.path()) + "init -q r");
    {
      std::mt19937_64 random(packed ? 2 : 1);
      std::string bytes(4u << 20, '\0');
      for (std::size_t i = 0; i < bytes.size(); i += 8) {
        const std::uint64_t word = random();
        std::memcpy(bytes.data() + i, &word, 8);
      }
      write_file(repo + "/random.bin", bytes);
    }
    run(git(repo) + "add -A && " + git(repo) + "commit -qm t");
    if (packed) run(git(repo) + "repack -adq");
    const std::string oid = capture(git(repo) + "rev-parse HEAD:random.bin");
    const std::string damaged =
        packed ? capture("ls " + repo + "/.git/objects/pack/*.pack") : loose_object(repo, oid);
    {
      ::chmod(damaged.c_str(), 0644);
      const UniqueFd fd(::open(damaged.c_str(), O_RDWR | O_CLOEXEC));
      char byte = 0;
      ASSERT_EQ(::pread(fd.get(), &byte, 1, 2'000'000), 1);
      byte = static_cast<char>(byte ^ 0x01);
      ASSERT_EQ(::pwrite(fd.get(), &byte, 1, 2'000'000), 1);
    }
    LogCapture log;
    auto fs = open_fs(repo, "main", 1u << 20);
    NodeId node = 0;
    struct stat st {};
    ASSERT_EQ(fs->lookup(kRootNode, "random.bin", node, st), 0);
    std::unique_ptr<FileHandle> handle;
    ASSERT_EQ(fs->open_file(node, handle), 0);
    ReadResult out;
    const std::uint64_t last = (4u << 20) - kChunk;
    for (std::uint64_t offset = 0; offset < last; offset += kChunk) {
      ASSERT_EQ(handle->read(kChunk, static_cast<off_t>(offset), out), 0)
          << "stored data inflates, damaged or not (offset " << offset << ")";
    }
    EXPECT_EQ(handle->read(kChunk, static_cast<off_t>(last), out), EIO);
    EXPECT_EQ(log.count(oid), 1u) << log.text();
  }
}

TEST(GitFsDamageTest, ABigDeltaIsReadWholeWithOneWarning) {
  TempDir dir;
  const std::string repo = dir.path() + "/r";
  run(git(dir.path()) + "init -q r");
  write_big_file(repo + "/big.bin", 4u << 20);
  run(git(repo) + "add -A && " + git(repo) + "commit -qm one");
  {
    const UniqueFd fd(::open((repo + "/big.bin").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
    ASSERT_EQ(::write(fd.get(), "more\n", 5), 5);
  }
  run(git(repo) + "commit -qam two && " + git(repo) + "repack -adfq --window=10 --depth=10");
  const std::string oid_one = capture(git(repo) + "rev-parse HEAD~1:big.bin");
  const std::string oid_two = capture(git(repo) + "rev-parse HEAD:big.bin");
  const std::string verify =
      capture(git(repo) + "verify-pack -v " + quote(repo) + "/.git/objects/pack/*.idx");

  LogCapture log;
  std::uint64_t whole_reads = 0;
  int round = 0;
  for (const std::string thread : {"main~1", "main"}) {
    auto fs = open_fs(repo, thread, 1u << 20);
    NodeId node = 0;
    struct stat st {};
    ASSERT_EQ(fs->lookup(kRootNode, "big.bin", node, st), 0);
    const std::string host = dir.path() + "/expected-" + std::to_string(round++);
    run(git(repo) + "cat-file blob " + thread + ":big.bin > " + quote(host));
    EXPECT_TRUE(same_file(*fs, node, host)) << thread;
    whole_reads += status_of(*fs)["whole_reads_of_big_blobs"].get<std::uint64_t>();
  }
  // git stores one of the two versions as a delta of the other; the other streams.
  EXPECT_EQ(whole_reads, 1u) << verify << log.text();
  EXPECT_EQ(log.count("cannot be streamed (stored as a delta"), 1u) << log.text();
  EXPECT_EQ(log.count(oid_one) + log.count(oid_two), 1u) << log.text();
}

// --- hostile repositories -----------------------------------------------------------------

// A repository whose main is a commit of the tree `mktree_input` (git mktree's format) builds.
std::string crafted_repo(const TempDir& dir, const std::string& mktree_input) {
  const std::string repo = dir.path() + "/r";
  run(git(dir.path()) + "init -q r");
  write_file(dir.path() + "/tree.txt", mktree_input);
  const std::string tree = capture(git(repo) + "mktree --missing < " + quote(dir.path() + "/tree.txt"));
  const std::string commit = capture(git(repo) + "commit-tree -m t " + tree);
  run(git(repo) + "update-ref refs/heads/main " + commit);
  return repo;
}

std::string blob_of(const TempDir& dir, const std::string& content) {
  const std::string file = dir.path() + "/blob-input";
  write_file(file, content);
  return capture(git(dir.path() + "/r") + "hash-object -w " + quote(file));
}

// Names over NAME_MAX and paths of PATH_MAX or more: never listed (programs' buffers are sized
// for them), counted once per directory in Status, and ENAMETOOLONG when looked up.
TEST(GitFsHostileTest, OverlongNamesAndPathsAreHiddenAndCounted) {
  TempDir dir;
  run(git(dir.path()) + "init -q r");
  const std::string blob = blob_of(dir, "hidden\n");
  const std::string long_name(300, 'x');
  // A chain of 200-byte directory names: the 21st level passes PATH_MAX.
  const std::string level(200, 'd');
  std::string deep = capture("printf '100644 blob " + blob + "\\tleaf\\n' | " + git(dir.path() + "/r") + "mktree");
  for (int i = 0; i < 21; ++i) {
    deep = capture("printf '040000 tree " + deep + "\\t" + level + "\\n' | " + git(dir.path() + "/r") + "mktree");
  }
  const std::string repo = crafted_repo(dir, "100644 blob " + blob + "\tok.txt\n100644 blob " + blob +
                                                 "\t" + long_name + "\n040000 tree " + deep + "\tdeep\n");
  auto fs = open_fs(repo, "main");
  DirSnapshot snapshot;
  for (int twice = 0; twice < 2; ++twice) ASSERT_EQ(fs->read_dir(kRootNode, snapshot), 0);
  std::vector<std::string> names;
  for (const auto& entry : snapshot.entries) names.push_back(entry.name);
  EXPECT_EQ(names, (std::vector<std::string>{".", "..", "deep", "ok.txt"}));
  EXPECT_EQ(status_of(*fs)["hidden_names"], 1) << "counted once, however often listed";
  NodeId node = 0;
  struct stat st {};
  EXPECT_EQ(fs->lookup(kRootNode, long_name, node, st), ENAMETOOLONG);

  // Down the chain until the path would pass PATH_MAX.
  NodeId at = 0;
  ASSERT_EQ(fs->lookup(kRootNode, "deep", at, st), 0);
  std::size_t path_length = 4;
  int depth = 0;
  while (path_length + 1 + level.size() < PATH_MAX) {
    ASSERT_EQ(fs->lookup(at, level, at, st), 0) << depth;
    path_length += 1 + level.size();
    ++depth;
  }
  EXPECT_EQ(fs->lookup(at, level, node, st), ENAMETOOLONG);
  ASSERT_EQ(fs->read_dir(at, snapshot), 0);
  EXPECT_EQ(snapshot.entries.size(), 2u) << "only . and ..";
  EXPECT_EQ(status_of(*fs)["hidden_names"], 2);
}

// Inode numbers are a keyed hash: another mount of the same tree numbers it differently, so
// no repository can be built to make two of its paths collide.
TEST(GitFsHostileTest, InodeNumbersAreKeyedPerMount) {
  TempDir dir;
  run(git(dir.path()) + "init -q r");
  const std::string blob = blob_of(dir, "x\n");
  std::string input;
  for (int i = 0; i < 64; ++i) input += "100644 blob " + blob + "\tf" + std::to_string(i) + "\n";
  const std::string repo = crafted_repo(dir, input);
  auto one = open_fs(repo, "main");
  auto two = open_fs(repo, "main");
  int same = 0;
  for (int i = 0; i < 64; ++i) {
    NodeId a = 0, b = 0;
    struct stat sa {}, sb {};
    ASSERT_EQ(one->lookup(kRootNode, "f" + std::to_string(i), a, sa), 0);
    ASSERT_EQ(two->lookup(kRootNode, "f" + std::to_string(i), b, sb), 0);
    EXPECT_LT(sa.st_ino, ino_t{1} << 63) << "bit 63 is the overlay's";
    if (sa.st_ino == sb.st_ino) ++same;
  }
  EXPECT_EQ(same, 0);
}

// Collisions, forced with a 5-bit hash: every live node has its own number, the first path
// keeps its number, and every number stays what it was for the table's life.
TEST(GitFsHostileTest, CollidingInodeNumbersAreResolvedAndStayStable) {
  git::NodeInfo root;
  git::NodeTable table(root, git::InoHasher(git::InoHasher::Key{1, 2}, 5));
  std::vector<std::pair<NodeId, ino_t>> live;
  std::map<std::string, ino_t> seen;
  for (int i = 0; i < 24; ++i) {  // 30 numbers (2..31) for 24 paths: collisions certain
    git::NodeInfo info;
    info.path = "p" + std::to_string(i);
    std::shared_ptr<const git::NodeInfo> out;
    const NodeId id = table.acquire(info, out);
    live.emplace_back(id, out->ino);
    seen[info.path] = out->ino;
    EXPECT_EQ(table.ino_of(info.path), out->ino);
  }
  std::set<ino_t> distinct;
  for (const auto& [id, ino] : live) distinct.insert(ino);
  EXPECT_EQ(distinct.size(), live.size());
  EXPECT_GT(table.collisions(), 0u);
  for (const auto& [id, ino] : live) table.forget(id, 1);  // all forgotten, then in reverse
  for (int i = 23; i >= 0; --i) {
    git::NodeInfo info;
    info.path = "p" + std::to_string(i);
    std::shared_ptr<const git::NodeInfo> out;
    (void)table.acquire(info, out);
    EXPECT_EQ(out->ino, seen[info.path]) << info.path;
  }
}

TEST(GitFsHostileTest, AHugeSymlinkTargetIsNotRead) {
  TempDir dir;
  run(git(dir.path()) + "init -q r");
  const std::string huge = blob_of(dir, std::string(1 << 20, 'a'));
  const std::string fine = blob_of(dir, "target");
  const std::string repo = crafted_repo(dir, "120000 blob " + huge + "\thuge\n120000 blob " +
                                                 fine + "\tfine\n");
  auto fs = open_fs(repo, "main");
  NodeId node = 0;
  struct stat st {};
  std::string target;
  ASSERT_EQ(fs->lookup(kRootNode, "huge", node, st), 0);
  EXPECT_EQ(fs->readlink(node, target), ENAMETOOLONG);
  EXPECT_EQ(status_of(*fs)["cache_misses"], 0) << "not even read";
  ASSERT_EQ(fs->lookup(kRootNode, "fine", node, st), 0);
  ASSERT_EQ(fs->readlink(node, target), 0);
  EXPECT_EQ(target, "target");
}

// Open files cannot hold more than the budget: past it, opens stream (bounded buffers); and
// at most 64 streams are open at once.
TEST(GitFsHostileTest, OpenFilesHoldBoundedMemory) {
  TempDir dir;
  run(git(dir.path()) + "init -q r");
  std::string input;
  std::vector<std::string> contents;
  for (int i = 0; i < 6; ++i) {
    contents.push_back(std::string(800 << 10, static_cast<char>('a' + i)));
    input += "100644 blob " + blob_of(dir, contents.back()) + "\tf" + std::to_string(i) + "\n";
  }
  const std::string big = blob_of(dir, std::string(3 << 20, 'z'));
  input += "100644 blob " + big + "\tbig\n";
  const std::string repo = crafted_repo(dir, input);
  GitFsOptions options;
  options.repo_root = repo;
  options.thread = "main";
  options.cache_bytes = 1 << 20;
  options.held_bytes = 2 << 20;
  auto fs = open_git_fs(options);

  std::vector<std::unique_ptr<FileHandle>> handles;
  for (int i = 0; i < 6; ++i) {
    NodeId node = 0;
    struct stat st {};
    ASSERT_EQ(fs->lookup(kRootNode, "f" + std::to_string(i), node, st), 0);
    handles.emplace_back();
    ASSERT_EQ(fs->open_file(node, handles.back()), 0) << i;
  }
  auto status = status_of(*fs);
  EXPECT_LE(status["held_bytes"].get<std::uint64_t>(), 2u << 20);
  EXPECT_EQ(status["open_streams"], 4) << "two held whole, four streamed";
  for (int i = 0; i < 6; ++i) {
    ReadResult out;
    ASSERT_EQ(handles[i]->read(contents[i].size(), 0, out), 0);
    EXPECT_TRUE(out.data == contents[i]) << i;
  }
  handles.clear();
  EXPECT_EQ(status_of(*fs)["held_bytes"], 0);
  EXPECT_EQ(status_of(*fs)["open_streams"], 0);

  NodeId node = 0;
  struct stat st {};
  ASSERT_EQ(fs->lookup(kRootNode, "big", node, st), 0);
  int refused = 0;
  for (int i = 0; i < 70; ++i) {
    std::unique_ptr<FileHandle> handle;
    const int err = fs->open_file(node, handle);
    if (err == 0) {
      handles.push_back(std::move(handle));
    } else {
      EXPECT_EQ(err, EMFILE);
      ++refused;
    }
  }
  EXPECT_EQ(handles.size(), 64u);
  EXPECT_EQ(refused, 6);
}

// Files the worker (or libgit2) reads whole or maps: a FIFO must not hang the mount, a link
// to /dev/zero must not be read without end.
TEST(GitFsHostileTest, SpecialFilesInTheRepositoryAreRefused) {
  for (const std::string kind : {"fifo", "dev-zero"}) {
    SCOPED_TRACE(kind);
    TempDir dir;
    const std::string repo = dir.path() + "/r";
    run(git(dir.path()) + "init -q r");
    write_file(repo + "/a.txt", "a\n");
    run(git(repo) + "add -A && " + git(repo) + "commit -qm t");
    const std::string packed = repo + "/.git/packed-refs";
    ::unlink(packed.c_str());
    if (kind == "fifo") {
      ASSERT_EQ(::mkfifo(packed.c_str(), 0644), 0);
    } else {
      ASSERT_EQ(::symlink("/dev/zero", packed.c_str()), 0);
    }
    int code = 0;
    const std::string message = open_error(repo, "main", &code);
    EXPECT_NE(message.find("packed-refs is not a regular file"), std::string::npos) << message;
    EXPECT_EQ(code, EINVAL);
  }

  // A loose object that is a FIFO: EIO for that file, instead of libgit2 blocking on it.
  {
    TempDir dir;
    const std::string repo = dir.path() + "/r";
    run(git(dir.path()) + "init -q r");
    write_file(repo + "/a.txt", "a\n");
    write_file(repo + "/b.txt", "b\n");
    run(git(repo) + "add -A && " + git(repo) + "commit -qm t");
    const std::string oid = capture(git(repo) + "rev-parse HEAD:a.txt");
    const std::string object = loose_object(repo, oid);
    ASSERT_EQ(::unlink(object.c_str()), 0);
    ASSERT_EQ(::mkfifo(object.c_str(), 0644), 0);
    LogCapture log;
    auto fs = open_fs(repo, "main");
    NodeId node = 0;
    struct stat st {};
    ASSERT_EQ(fs->lookup(kRootNode, "a.txt", node, st), 0);
    std::unique_ptr<FileHandle> handle;
    EXPECT_EQ(fs->open_file(node, handle), EIO);
    EXPECT_EQ(log.count(oid), 1u) << log.text();
    ASSERT_EQ(fs->lookup(kRootNode, "b.txt", node, st), 0);
    EXPECT_EQ(fs->open_file(node, handle), 0);
  }

  // A FIFO posing as a pack index: skipped without blocking, big blobs still stream.
  TempDir dir;
  const std::string repo = dir.path() + "/r";
  run(git(dir.path()) + "init -q r");
  write_big_file(repo + "/big.bin", 2u << 20);
  run(git(repo) + "add -A && " + git(repo) + "commit -qm t && " + git(repo) + "gc -q");
  ASSERT_EQ(::mkfifo((repo + "/.git/objects/pack/pack-fifo.idx").c_str(), 0644), 0);
  ASSERT_EQ(::symlink("/dev/zero", (repo + "/.git/objects/pack/pack-zero.idx").c_str()), 0);
  auto fs = open_fs(repo, "main", 1 << 20);
  NodeId node = 0;
  struct stat st {};
  ASSERT_EQ(fs->lookup(kRootNode, "big.bin", node, st), 0);
  EXPECT_TRUE(same_file(*fs, node, repo + "/big.bin"));
  EXPECT_EQ(status_of(*fs)["streamed_opens"], 1);
}

// --- laziness ------------------------------------------------------------------------------

TEST(GitFsLazyTest, OpeningAHugeTreeReadsNothing) {
  TempDir dir;
  const std::string repo = dir.path() + "/huge.git";
  run(git(dir.path()) + "init -q --bare huge.git");
  constexpr int kDirs = 100, kFiles = 1000;
  {
    std::ofstream stream(dir.path() + "/import");
    stream << "blob\nmark :1\ndata 6\nhello\n"
           << "commit refs/heads/main\ncommitter T <t@example.com> 981173106 +0000\ndata 4\n"
              "huge\n";
    char line[64];
    for (int d = 0; d < kDirs; ++d) {
      for (int f = 0; f < kFiles; ++f) {
        std::snprintf(line, sizeof line, "M 100644 :1 d%03d/f%04d\n", d, f);
        stream << line;
      }
    }
    stream << "\n";
  }
  run(git(repo) + "fast-import --quiet < " + quote(dir.path() + "/import"));

  const auto started = std::chrono::steady_clock::now();
  auto fs = open_fs(repo, "main");
  const auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - started);
  std::fprintf(stderr, "[ lazy     ] open_git_fs on %d files took %lld us\n", kDirs * kFiles,
               static_cast<long long>(elapsed.count()));
  EXPECT_LT(elapsed.count(), 100000);
  auto status = status_of(*fs);
  EXPECT_EQ(status["cache_misses"], 0);
  EXPECT_EQ(status["cache_entries"], 0);
  EXPECT_EQ(status["nodes"], 1);

  NodeId node = 0;
  struct stat st {};
  ASSERT_EQ(walk_to(*fs, "d099/f0999", node, st), 0);
  EXPECT_EQ(st.st_size, 6);
  EXPECT_EQ(status_of(*fs)["cache_misses"], 0) << "attributes need no blob";
}

}  // namespace
}  // namespace heddle::worker
