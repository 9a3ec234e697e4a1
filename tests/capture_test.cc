// Capture and follow (issue 15), end to end through the CLI binary, with repositories built by
// the git CLI and compared with what git itself records.
//
// CaptureTree.*   the tree a capture records (the served commit + a real mount's overlay,
//                 written through the mount and read after unmounting) equals the tree
//                 `git commit` records for the same change in a work tree.
// CaptureCli.*    `capture MP` against a live mount: the commit, the ref's compare-and-swap,
//                 the mount switching to the commit with its overlay emptied.
// FollowCli.*     a commit in a work tree moves the ref under a mount: it follows within a
//                 second (open files keep their content); --pin does not.
// Every case runs as root and as the unprivileged heddle-test (user.capture_tests).
#include <fcntl.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "heddle/launcher/capture.h"
#include "heddle/launcher/control_socket.h"
#include "heddle/unique_fd.h"
#include "support/child_process.h"
#include "support/test_support.h"

namespace heddle::test {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

CommandResult launcher(std::vector<std::string> args, std::chrono::milliseconds timeout = 60s) {
  args.insert(args.begin(), bin_path("heddle-fuse-launcher"));
  return run_command(args, timeout);
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

std::string sh(const fs::path& dir, const std::string& script) {
  const CommandResult result = run_command({"/bin/sh", "-ec", "cd \"$0\" && " + script, dir.string()}, 60s);
  EXPECT_EQ(result.exit_code, 0) << script << ": " << result.err;
  return trimmed(result.out);
}

std::string git(const fs::path& repo, std::vector<std::string> args) {
  // safe.directory: root reads a repository it handed to the test user.
  args.insert(args.begin(), {"/usr/bin/git", "-c", "safe.directory=*", "-C", repo.string()});
  const CommandResult result = run_command(args, 60s);
  EXPECT_EQ(result.exit_code, 0) << "git " << args[5] << ": " << result.err;
  return trimmed(result.out);
}

// The content, or "<error>" where it cannot be opened (what a comparison shows).
std::string content_or_error(const fs::path& path) {
  const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return "<" + std::string(std::strerror(errno)) + ">";
  std::string content;
  char buffer[4096];
  for (ssize_t n; (n = ::read(fd.get(), buffer, sizeof buffer)) > 0;) content.append(buffer, n);
  return content;
}

// The change every comparison makes, in a work tree and in a mount alike: a new file, a
// deletion, chmod +x, a symlink, an edit, a renamed directory (in a mount, `mv` of a directory
// with source content copies and deletes: EXDEV), an empty directory, a touched file, and
// .gitattributes conversions (CRLF written where the commit says eol=crlf; an expanded $Id$).
constexpr const char* kChange =
    "printf 'new\\n' > new.txt && rm a.txt && chmod +x bin/tool.sh && "
    "ln -s docs/readme.md link && printf 'more\\n' >> docs/readme.md && mv old renamed && "
    "mkdir -p empty/inner && touch untouched.txt && printf 'x\\r\\ny\\r\\n' > win.bat && "
    "printf 'int x; /* $Id: 0123456789abcdef0123456789abcdef01234567 $ */\\n' > id.c && "
    "mkdir sub && printf 'deep\\n' > sub/deep.txt && rm -r gone";

class CaptureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HEDDLE_REQUIRE_MOUNT();
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    ::umask(022);
    tree_ = std::make_unique<ScratchTree>();
    repo_ = tree_->root() / "repo";
    fs::create_directory(repo_);
    git(repo_, {"init", "-q", "-b", "main"});
    git(repo_, {"config", "user.name", "Repo Owner"});
    git(repo_, {"config", "user.email", "owner@example.com"});
    sh(repo_,
       "printf 'a\\n' > a.txt && mkdir bin docs old gone && printf '#!/bin/sh\\n' > bin/tool.sh && "
       "printf 'readme\\n' > docs/readme.md && printf '1\\n' > old/one && printf '2\\n' > old/two && "
       "printf 'u\\n' > untouched.txt && printf 'g\\n' > gone/g && "
       "printf '*.bat text eol=crlf\\n*.c ident\\n' > .gitattributes && "
       "printf 'x\\ny\\n' > win.bat && printf 'int x; /* $Id$ */\\n' > id.c && "
       "git add -A && git commit -qm base");
    base_ = git(repo_, {"rev-parse", "HEAD"});
  }

  void TearDown() override {
    if (!tree_) return;
    if (heddle_mounted(tree_->mountpoint())) launcher({"unmount", mp()});
    EXPECT_FALSE(heddle_mounted(tree_->mountpoint()));
    tree_.reset();
  }

  std::string mp() const { return tree_->mountpoint().string(); }
  fs::path ov() const { return ov_.empty() ? tree_->root() / "overlay" : ov_; }

  void mount(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"mount", "--repo-root", repo_.string(), "--thread-id", "main",
                                     "--overlay-dir", ov().string(), "--mountpoint", mp()};
    args.insert(args.end(), extra.begin(), extra.end());
    const CommandResult result = launcher(args);
    ASSERT_EQ(result.exit_code, 0) << result.err;
  }

  void unmount() {
    const CommandResult result = launcher({"unmount", mp()});
    ASSERT_EQ(result.exit_code, 0) << result.err;
  }

  // The tree `git commit` records for `change` in a fresh clone at `commit`.
  std::string git_commit_tree(const std::string& change, const std::string& commit) {
    const fs::path work = tree_->root() / ("work-" + std::to_string(works_++));
    git(tree_->root(), {"clone", "-q", repo_.string(), work.string()});
    git(work, {"checkout", "-q", commit});
    sh(work, change);
    std::vector<std::string> add = lfs_clean_config();
    add.insert(add.end(), {"add", "-A"});
    git(work, add);
    git(work, {"-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-qm", "change",
               "--allow-empty"});
    return git(work, {"rev-parse", "HEAD^{tree}"});
  }

  // git's config for filter=lfs when it cleans in a work tree: real git-lfs where it is
  // installed, else a clean filter written from the spec (a pointer passes through, an empty
  // file stays empty, anything else becomes the pointer to its sha256), as git-lfs cleans.
  static std::vector<std::string> lfs_clean_config() {
    if (git_lfs_installed()) {
      return {"-c", "filter.lfs.clean=git-lfs clean -- %f", "-c", "filter.lfs.required=true"};
    }
    return {"-c", R"sh(filter.lfs.clean=f=$(mktemp) && cat > "$f" && )sh"
                  R"sh(if head -n 1 "$f" | grep -qx "version https://git-lfs.github.com/spec/v1"; )sh"
                  R"sh(then cat "$f"; elif [ -s "$f" ]; then )sh"
                  R"sh(printf "version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %s\n" )sh"
                  R"sh("$(sha256sum < "$f" | cut -d " " -f 1)" "$(stat -c %s "$f")"; fi; rm -f "$f")sh",
            "-c", "filter.lfs.required=true"};
  }
  static bool git_lfs_installed() {
    static const bool installed = run_command({"/usr/bin/git", "lfs", "version"}, 30s).exit_code == 0;
    return installed;
  }

  // Commits Git LFS files as `git lfs track '*.bin'` and `git add` would record them: data.bin
  // with its object in .git/lfs/objects (where git-lfs keeps it), missing.bin without.
  void track_lfs() {
    sh(repo_,
       "printf 'large content\\n' > obj && oid=$(sha256sum obj | cut -d' ' -f1) && "
       "mkdir -p .git/lfs/objects/$(echo $oid | cut -c1-2)/$(echo $oid | cut -c3-4) && "
       "mv obj .git/lfs/objects/$(echo $oid | cut -c1-2)/$(echo $oid | cut -c3-4)/$oid && "
       "printf 'version https://git-lfs.github.com/spec/v1\\noid sha256:%s\\nsize 14\\n' $oid "
       "> data.bin && printf 'version https://git-lfs.github.com/spec/v1\\noid sha256:%s\\n"
       "size 5\\n' $(printf 'gone\\n' | sha256sum | cut -d' ' -f1) > missing.bin && "
       "printf '*.bin filter=lfs diff=lfs merge=lfs -text\\n' >> .gitattributes && "
       "git add -A && git commit -qm lfs");
    base_ = git(repo_, {"rev-parse", "HEAD"});
  }

  // A blob's exact bytes.
  std::string blob(const std::string& tree, const std::string& path) const {
    const CommandResult result =
        run_command({"/usr/bin/git", "-c", "safe.directory=*", "-C", repo_.string(), "cat-file",
                     "blob", tree + ":" + path},
                    60s);
    EXPECT_EQ(result.exit_code, 0) << tree << ":" << path << ": " << result.err;
    return result.out;
  }

  // `path` in `tree` is the pointer git-lfs writes for `content` (sha256 by sha256sum), and
  // the object is in the repository's lfs/objects as git-lfs leaves it: `content`, mode 0644
  // (umask 022), owned by `owner`, no temporary file beside it.
  void expect_lfs_object(const std::string& tree, const std::string& path,
                         const std::string& content, uid_t owner) const {
    const fs::path scratch = tree_->root() / "lfs-content";
    std::ofstream(scratch, std::ios::binary) << content;
    const std::string oid = sh(tree_->root(), "sha256sum lfs-content | cut -d' ' -f1");
    fs::remove(scratch);
    ASSERT_EQ(oid.size(), 64u);
    EXPECT_EQ(blob(tree, path), "version https://git-lfs.github.com/spec/v1\noid sha256:" + oid +
                                    "\nsize " + std::to_string(content.size()) + "\n");
    const fs::path dir = repo_ / ".git/lfs/objects" / oid.substr(0, 2) / oid.substr(2, 2);
    struct stat st {};
    ASSERT_EQ(::lstat((dir / oid).c_str(), &st), 0) << path << ": no object " << dir / oid;
    EXPECT_TRUE(S_ISREG(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0644u) << path;
    EXPECT_EQ(st.st_uid, owner) << path;
    EXPECT_EQ(content_or_error(dir / oid), content) << path;
    std::vector<std::string> beside;
    for (const auto& entry : fs::directory_iterator(dir)) beside.push_back(entry.path().filename());
    EXPECT_EQ(beside, std::vector<std::string>{oid}) << "a temporary file was left in " << dir;
    if (git_lfs_installed()) {
      // git-lfs itself smudges the pointer to the content, from the object we stored.
      // safe.directory for git-lfs's own git calls too: root reads a repository of the user's.
      const CommandResult smudged = run_command(
          {"/bin/sh", "-ec",
           "cd \"$0\" && export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory "
           "GIT_CONFIG_VALUE_0='*' && git cat-file blob \"$1\" | git lfs smudge",
           repo_.string(), tree + ":" + path},
          60s);
      EXPECT_EQ(smudged.exit_code, 0) << smudged.err;
      EXPECT_EQ(smudged.out, content) << path;
    }
  }

  Json status() {
    const CommandResult result = launcher({"status", mp(), "--json"});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return Json::parse(result.out, nullptr, false);
  }

  std::unique_ptr<ScratchTree> tree_;
  fs::path repo_;
  std::string base_;
  fs::path ov_;
  int works_ = 0;
};

using CaptureTree = CaptureTest;

TEST_F(CaptureTree, EqualsTheTreeGitCommitRecordsForTheSameChange) {
  mount({"--pin"});
  sh(mp(), kChange);
  unmount();
  const launcher::CapturedTree captured =
      launcher::build_capture_tree(repo_.string(), base_, ov().string());
  EXPECT_EQ(captured.tree, git_commit_tree(kChange, base_));
  EXPECT_EQ(captured.empty_dirs, (std::vector<std::string>{"empty", "empty/inner"}));
  // The mode git records for the chmod +x, the link, and the converted files' blobs.
  EXPECT_EQ(git(repo_, {"ls-tree", captured.tree, "bin/tool.sh"}).substr(0, 6), "100755");
  EXPECT_EQ(git(repo_, {"ls-tree", captured.tree, "link"}).substr(0, 6), "120000");
  EXPECT_EQ(git(repo_, {"cat-file", "blob", captured.tree + ":win.bat"}), "x\ny");
  EXPECT_EQ(git(repo_, {"cat-file", "blob", captured.tree + ":id.c"}), "int x; /* $Id$ */");
}

TEST_F(CaptureTree, AnUnchangedOrMerelyTouchedMountChangesNoBlob) {
  const std::string base_tree = git(repo_, {"rev-parse", "HEAD^{tree}"});
  EXPECT_EQ(launcher::build_capture_tree(repo_.string(), base_, ov().string()).tree, base_tree);
  mount({"--pin"});
  // Copied up without a change: touched, chmod to the same mode, rewritten with equal bytes.
  sh(mp(), "touch a.txt win.bat id.c && chmod 0644 docs/readme.md && cat untouched.txt > t && "
           "cat t > untouched.txt && rm t && cat win.bat > w && cat w > win.bat && rm w");
  unmount();
  const launcher::CapturedTree captured =
      launcher::build_capture_tree(repo_.string(), base_, ov().string());
  EXPECT_EQ(captured.tree, base_tree);
  EXPECT_TRUE(captured.empty_dirs.empty());
}

TEST_F(CaptureTree, EverythingDeletedIsTheEmptyTree) {
  mount({"--pin"});
  sh(mp(), "rm -rf ./* .gitattributes");
  unmount();
  EXPECT_EQ(launcher::build_capture_tree(repo_.string(), base_, ov().string()).tree,
            git(repo_, {"hash-object", "-t", "tree", "/dev/null"}));
}

TEST_F(CaptureTree, AChangedFileBehindAFilterDriverIsRefused) {
  sh(repo_, "printf '*.big filter=crypt\\n' >> .gitattributes && printf 'v1\\n' > data.big && "
            "git add -A && git commit -qm crypt");
  base_ = git(repo_, {"rev-parse", "HEAD"});
  mount({"--pin"});
  sh(mp(), "printf 'v2\\n' > data.big");
  unmount();
  try {
    (void)launcher::build_capture_tree(repo_.string(), base_, ov().string());
    ADD_FAILURE() << "a change behind filter=crypt was captured without its filter";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ENOTSUP) << e.what();
    EXPECT_NE(std::string(e.what()).find("data.big"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("\"crypt\""), std::string::npos) << e.what();
  }
}

// The change Git LFS files get in the LFS cases: an edit, a new file, an empty one, a touched
// pointer whose object is missing (the mount shows the pointer), and a copy of that pointer.
constexpr const char* kLfsChange =
    "printf 'edited content\\n' > data.bin && printf 'brand new\\n' > new.bin && : > empty.bin && "
    "touch missing.bin && cp missing.bin copy.bin";

// A changed filter=lfs file is cleaned as `git add` with git-lfs cleans it: its object stored
// in lfs/objects, its pointer the blob; a pointer passes through; the same tree as git records.
TEST_F(CaptureTree, AChangedLfsFileIsStoredAsGitLfsStoresIt) {
  track_lfs();
  const std::string missing = git(repo_, {"rev-parse", "HEAD:missing.bin"});
  mount({"--pin"});
  sh(mp(), kLfsChange);
  EXPECT_EQ(content_or_error(tree_->mountpoint() / "copy.bin").substr(0, 8), "version ");
  unmount();
  const launcher::CapturedTree captured =
      launcher::build_capture_tree(repo_.string(), base_, ov().string());
  EXPECT_EQ(captured.tree, git_commit_tree(kLfsChange, base_))
      << (git_lfs_installed() ? "git-lfs" : "the spec's clean filter (git-lfs is not installed)");
  expect_lfs_object(captured.tree, "data.bin", "edited content\n", ::geteuid());
  expect_lfs_object(captured.tree, "new.bin", "brand new\n", ::geteuid());
  EXPECT_EQ(blob(captured.tree, "empty.bin"), "");
  EXPECT_EQ(git(repo_, {"rev-parse", captured.tree + ":missing.bin"}), missing);
  EXPECT_EQ(git(repo_, {"rev-parse", captured.tree + ":copy.bin"}), missing);
}

// A file showing what `git lfs smudge` writes for a pointer (its object's content, as the
// worker serves it when the object is in lfs/objects) keeps the pointer blob.
TEST_F(CaptureTree, AnLfsObjectsContentKeepsItsPointer) {
  sh(repo_,
     "printf 'large content\\n' > obj && oid=$(sha256sum obj | cut -d' ' -f1) && "
     "mkdir -p .git/lfs/objects/$(echo $oid | cut -c1-2)/$(echo $oid | cut -c3-4) && "
     "mv obj .git/lfs/objects/$(echo $oid | cut -c1-2)/$(echo $oid | cut -c3-4)/$oid && "
     "printf 'version https://git-lfs.github.com/spec/v1\\noid sha256:%s\\nsize 14\\n' $oid "
     "> data.bin && printf 'data.bin filter=lfs diff=lfs merge=lfs -text\\n' >> .gitattributes && "
     "git add -A && git commit -qm lfs");
  base_ = git(repo_, {"rev-parse", "HEAD"});
  const std::string base_tree = git(repo_, {"rev-parse", "HEAD^{tree}"});
  mount({"--pin"});
  sh(mp(), "printf 'large content\\n' > data.bin");
  unmount();
  EXPECT_EQ(launcher::build_capture_tree(repo_.string(), base_, ov().string()).tree, base_tree);
}

using CaptureCli = CaptureTest;

TEST_F(CaptureCli, RecordsTheMountAsACommitAndServesIt) {
  mount();
  sh(mp(), kChange);
  const CommandResult result = launcher({"capture", mp(), "-m", "from the mount", "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const Json reply = Json::parse(result.out);
  const std::string commit = reply["commit"];
  EXPECT_EQ(reply["ref"], "refs/heads/main");
  EXPECT_EQ(reply["unchanged"], false);
  EXPECT_EQ(reply["empty_dirs"], Json::array({"empty", "empty/inner"}));
  EXPECT_EQ(git(repo_, {"rev-parse", "refs/heads/main"}), commit);
  EXPECT_EQ(git(repo_, {"rev-parse", commit + "^"}), base_);
  EXPECT_EQ(git(repo_, {"rev-parse", commit + "^{tree}"}), git_commit_tree(kChange, base_));
  EXPECT_EQ(git(repo_, {"log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", commit}),
            "Repo Owner <owner@example.com>|Repo Owner <owner@example.com>|from the mount");
  // The mount serves the commit, its overlay emptied but for the empty directories.
  EXPECT_EQ(status()["commit"], commit);
  EXPECT_EQ(content_or_error(tree_->mountpoint() / "new.txt"), "new\n");
  EXPECT_TRUE(fs::is_directory(tree_->mountpoint() / "empty/inner"));
  const CommandResult shown = launcher({"overlay", "show", ov().string(), "--json"});
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  const Json changes = Json::parse(shown.out);
  EXPECT_EQ(changes["added"], Json::array({"empty", "empty/inner"})) << shown.out;
  EXPECT_TRUE(changes["modified"].empty() && changes["deleted"].empty()) << shown.out;
  // Capturing again records nothing.
  const CommandResult again = launcher({"capture", mp(), "--json"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(Json::parse(again.out)["unchanged"], true);
  EXPECT_EQ(git(repo_, {"rev-parse", "refs/heads/main"}), commit);
}

// Through the supervisor (as the mount's user): the commit has the pointer, the mount then
// serves the object capture stored, and capturing again (the file copied up unchanged) records
// nothing.
TEST_F(CaptureCli, AChangedLfsFileIsCapturedAsAPointerAndServedFromItsObject) {
  track_lfs();
  mount();
  sh(mp(), "printf 'edited content\\n' > data.bin");
  const CommandResult result = launcher({"capture", mp(), "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const std::string commit = Json::parse(result.out)["commit"];
  const std::string tree = git(repo_, {"rev-parse", commit + "^{tree}"});
  EXPECT_EQ(tree, git_commit_tree("printf 'edited content\\n' > data.bin", base_));
  expect_lfs_object(tree, "data.bin", "edited content\n", ::geteuid());
  EXPECT_EQ(status()["commit"], commit);
  EXPECT_EQ(content_or_error(tree_->mountpoint() / "data.bin"), "edited content\n");
  sh(mp(), "cat data.bin > t && cat t > data.bin && rm t");
  const CommandResult again = launcher({"capture", mp(), "--json"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(Json::parse(again.out)["unchanged"], true) << again.out;
  EXPECT_EQ(git(repo_, {"rev-parse", "refs/heads/main"}), commit);
}

TEST_F(CaptureCli, TheAuthorOptionNamesTheAuthorAndTheConfigTheCommitter) {
  mount();
  sh(mp(), "printf 'b\\n' > b.txt");
  const CommandResult result =
      launcher({"capture", mp(), "--author", "A U Thor <author@example.com>", "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const std::string commit = Json::parse(result.out)["commit"];
  EXPECT_EQ(git(repo_, {"log", "-1", "--format=%an <%ae>|%cn <%ce>", commit}),
            "A U Thor <author@example.com>|Repo Owner <owner@example.com>");
  const CommandResult bad = launcher({"capture", mp(), "--author", "nobody"});
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
}

TEST_F(CaptureCli, IsRefusedWhenTheRefMovedAndWritesNothing) {
  mount({"--pin"});
  sh(mp(), "printf 'mine\\n' > mine.txt");
  sh(repo_, "printf 'theirs\\n' > theirs.txt && git add theirs.txt && "
            "git commit -qm theirs");
  const std::string theirs = git(repo_, {"rev-parse", "HEAD"});
  const std::string objects = git(repo_, {"count-objects", "-v"});
  const CommandResult result = launcher({"capture", mp()});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("refs/heads/main moved"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("capture again"), std::string::npos) << result.err;
  EXPECT_EQ(git(repo_, {"rev-parse", "refs/heads/main"}), theirs);
  EXPECT_EQ(git(repo_, {"count-objects", "-v"}), objects);
  // Nothing lost: the mount still shows its change, and takes writes again (thawed).
  EXPECT_EQ(content_or_error(tree_->mountpoint() / "mine.txt"), "mine\n");
  sh(mp(), "printf 'more\\n' >> mine.txt");
  EXPECT_EQ(content_or_error(tree_->mountpoint() / "mine.txt"), "mine\nmore\n");
}

TEST_F(CaptureCli, WithoutAnAuthorTheErrorSaysHowToSetOne) {
  git(repo_, {"config", "--unset", "user.name"});
  git(repo_, {"config", "--unset", "user.email"});
  const fs::path home = tree_->root() / "empty-home";
  fs::create_directory(home);
  // The supervisor reads the global config of the environment it was started in.
  std::vector<std::string> args = {"/usr/bin/env", "HOME=" + home.string(),
                                   "XDG_CONFIG_HOME=" + home.string(),
                                   bin_path("heddle-fuse-launcher"), "mount", "--repo-root",
                                   repo_.string(), "--thread-id", "main", "--overlay-dir",
                                   ov().string(), "--mountpoint", mp()};
  const CommandResult mounted = run_command(args, 60s);
  ASSERT_EQ(mounted.exit_code, 0) << mounted.err;
  sh(mp(), "printf 'b\\n' > b.txt");
  const CommandResult result = launcher({"capture", mp()});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("user.name"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("--author"), std::string::npos) << result.err;
  EXPECT_EQ(git(repo_, {"rev-parse", "refs/heads/main"}), base_);
  EXPECT_EQ(content_or_error(tree_->mountpoint() / "b.txt"), "b\n");
}

TEST_F(CaptureCli, AMountOfACommitIdHasNoRefToMove) {
  const CommandResult mounted =
      launcher({"mount", "--repo-root", repo_.string(), "--thread-id", base_, "--overlay-dir",
                ov().string(), "--mountpoint", mp()});
  ASSERT_EQ(mounted.exit_code, 0) << mounted.err;
  EXPECT_EQ(status()["follow"], "no (the thread names a revision, not a ref)");
  sh(mp(), "printf 'b\\n' > b.txt");
  const CommandResult result = launcher({"capture", mp()});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("cannot be captured: (the thread names a revision"), std::string::npos)
      << result.err;
  EXPECT_EQ(git(repo_, {"rev-parse", "refs/heads/main"}), base_);
}

TEST_F(CaptureCli, RootCapturingAUsersMountWritesAsThatUser) {
  if (!running_as_root()) GTEST_SKIP() << "mounting for another user (--uid) needs root";
  const passwd* pw = ::getpwnam("heddle-test");
  if (pw == nullptr) GTEST_SKIP() << "no user heddle-test (the test_user fixture creates it)";
  const std::string user = std::to_string(pw->pw_uid) + ":" + std::to_string(pw->pw_gid);
  track_lfs();
  constexpr const char* kUserChange =
      "printf 'u\\n' > user.txt && chmod +x a.txt && printf 'edited content\\n' > data.bin";
  // Cloned while the repository is still root's (git refuses to clone one of another user's).
  const std::string expected = git_commit_tree(kUserChange, base_);
  ov_ = tree_->root() / "user-overlays" / "overlay";
  fs::create_directory(ov_.parent_path());
  for (const fs::path& path : {repo_, tree_->mountpoint(), ov_.parent_path()}) {
    ASSERT_EQ(run_command({"/bin/chown", "-R", user, path.string()}, 30s).exit_code, 0);
  }
  mount({"--uid", "heddle-test"});
  // The mount is the user's (no allow_other): the change is made as the user.
  const CommandResult changed = run_command(
      {"/usr/bin/setpriv", "--reuid=heddle-test", "--regid=heddle-test", "--init-groups",
       "/bin/sh", "-ec", std::string("cd \"$0\" && ") + kUserChange, mp()},
      30s);
  ASSERT_EQ(changed.exit_code, 0) << changed.err;
  const CommandResult result = launcher({"capture", mp(), "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const std::string commit = Json::parse(result.out)["commit"];
  EXPECT_EQ(git(repo_, {"rev-parse", "refs/heads/main"}), commit);
  EXPECT_EQ(git(repo_, {"rev-parse", commit + "^{tree}"}), expected);
  // Objects (git's and Git LFS's), the ref, its reflog: all the user's, nothing of root's in
  // their repository (checked before git-lfs, run by root below, writes its own files there).
  EXPECT_EQ(sh(repo_, "find . ! -user heddle-test"), "");
  expect_lfs_object(expected, "data.bin", "edited content\n", pw->pw_uid);
}

using FollowCli = CaptureTest;

TEST_F(FollowCli, FollowsAWorkTreeCommitWithinASecondAndOpenFilesKeepTheirContent) {
  mount();
  EXPECT_EQ(status()["follow"], "follows");
  const UniqueFd held(::open((tree_->mountpoint() / "docs/readme.md").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(held);
  char before[64] = {};
  ASSERT_EQ(::pread(held.get(), before, sizeof before, 0), 7);
  sh(repo_, "printf 'upstream\\n' > docs/readme.md && printf 'n\\n' > upstream.txt && "
            "git add -A && git commit -qm upstream");
  const auto committed = std::chrono::steady_clock::now();
  const std::string upstream = git(repo_, {"rev-parse", "HEAD"});
  const bool followed = eventually(
      [&] { return content_or_error(tree_->mountpoint() / "upstream.txt") == "n\n"; }, 3s);
  const auto took = std::chrono::steady_clock::now() - committed;
  EXPECT_TRUE(followed);
  EXPECT_LE(took, 1s) << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
  EXPECT_EQ(content_or_error(tree_->mountpoint() / "docs/readme.md"), "upstream\n");
  EXPECT_EQ(status()["commit"], upstream);
  // The reader's open file keeps the content it had.
  char buffer[64] = {};
  const ssize_t n = ::pread(held.get(), buffer, sizeof buffer, 0);
  EXPECT_EQ(std::string(buffer, static_cast<std::size_t>(std::max<ssize_t>(n, 0))), "readme\n");
}

TEST_F(FollowCli, OverlayChangesStayOnTopAndConflictsAreListed) {
  mount();
  sh(mp(), "printf 'mine\\n' > a.txt");
  sh(repo_, "printf 'theirs\\n' > a.txt && printf 'v\\n' > untouched.txt && git add -A && "
            "git commit -qm upstream");
  ASSERT_TRUE(eventually(
      [&] { return content_or_error(tree_->mountpoint() / "untouched.txt") == "v\n"; }, 3s));
  EXPECT_EQ(content_or_error(tree_->mountpoint() / "a.txt"), "mine\n");
  EXPECT_EQ(status()["conflicts"], Json::array({"a.txt"}));
}

TEST_F(FollowCli, APinnedMountDoesNotFollow) {
  mount({"--pin"});
  EXPECT_EQ(status()["follow"], "pinned");
  sh(repo_, "printf 'n\\n' > upstream.txt && git add -A && git commit -qm upstream");
  std::this_thread::sleep_for(1500ms);
  EXPECT_FALSE(fs::exists(tree_->mountpoint() / "upstream.txt"));
  EXPECT_EQ(status()["commit"], base_);
}

TEST_F(FollowCli, ACaptureOfThisMountIsNotFollowedAgain) {
  mount();
  sh(mp(), "printf 'b\\n' > b.txt");
  const CommandResult result = launcher({"capture", mp(), "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const std::string commit = Json::parse(result.out)["commit"];
  // A commit from elsewhere is followed (and logged so) within a second: wait as long.
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(status()["commit"], commit);
  const std::string log = content_or_error(launcher::supervisor_log_path(launcher::UserDirs::read(), mp()));
  EXPECT_NE(log.find("captured " + mp() + " as " + commit), std::string::npos) << log;
  EXPECT_EQ(log.find("to " + commit + "; " + mp() + " follows"), std::string::npos) << log;
}

}  // namespace
}  // namespace heddle::test
