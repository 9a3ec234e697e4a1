// The launcher's side of writable mounts, without mounting: the mount and overlay command
// lines, overlay KEYs, preparing an overlay directory, its lock, and reading its on-disk format
// (whiteouts, opaque markers, the origin xattr) the way `overlay show` does.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cli.h"
#include "heddle/error.h"
#include "heddle/launcher/overlay_dir.h"

namespace {

namespace fs = std::filesystem;
using namespace heddle::launcher;

ParsedCli parse(std::vector<std::string> words) {
  std::vector<char*> argv;
  for (std::string& word : words) argv.push_back(word.data());
  return parse_cli(std::span<char*>(argv.data(), argv.size()));
}

MountArgs parse_mount(std::vector<std::string> words) {
  words.insert(words.begin(), "mount");
  return std::get<MountArgs>(parse(std::move(words)).command);
}

TEST(OverlayCli, ThreadsAreWritableByDefaultAndDirectoriesReadOnly) {
  EXPECT_TRUE(
      parse_mount({"--repo-root", "r", "--thread-id", "t", "--mountpoint", "m"}).writable());
  EXPECT_FALSE(parse_mount({"--repo-root", "r", "--thread-id", "t", "--mountpoint", "m",
                            "--read-only"})
                   .writable());
  EXPECT_FALSE(parse_mount({"--dir", "d", "--mountpoint", "m"}).writable());
  EXPECT_TRUE(parse_mount({"--dir", "d", "--mountpoint", "m", "--overlay"}).writable());
  const MountArgs chosen = parse_mount({"--dir", "d", "--mountpoint", "m", "--overlay-dir", "o"});
  EXPECT_TRUE(chosen.writable());
  EXPECT_EQ(chosen.overlay_dir, "o");
}

TEST(OverlayCli, ReadOnlyExcludesAnOverlay) {
  EXPECT_THROW(parse_mount({"--dir", "d", "--mountpoint", "m", "--read-only", "--overlay"}),
               UsageError);
  EXPECT_THROW(parse_mount({"--repo-root", "r", "--thread-id", "t", "--mountpoint", "m",
                            "--overlay-dir", "o", "--read-only"}),
               UsageError);
  EXPECT_THROW(parse_mount({"--dir", "d", "--mountpoint", "m", "--overlay-dir"}), UsageError);
  EXPECT_THROW(parse_mount({"--dir", "d", "--mountpoint", "m", "--overlay-dir", ""}), UsageError);
}

TEST(OverlayCli, OverlayCommands) {
  const auto overlay = [](std::vector<std::string> words) {
    words.insert(words.begin(), "overlay");
    return std::get<OverlayCommand>(parse(std::move(words)).command);
  };
  EXPECT_EQ(overlay({"list"}).action, OverlayCommand::Action::kList);
  EXPECT_TRUE(overlay({"list", "--json"}).json);
  const OverlayCommand show = overlay({"show", "KEY", "--json"});
  EXPECT_EQ(show.action, OverlayCommand::Action::kShow);
  EXPECT_EQ(show.target, "KEY");
  EXPECT_TRUE(show.json);
  EXPECT_EQ(overlay({"discard", "/mnt/x"}).target, "/mnt/x");
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{}, {"frob"}, {"list", "x"}, {"show"}, {"show", "a", "b"},
        {"discard"}, {"discard", "a", "--json"}, {"show", "--force", "a"}}) {
    std::vector<std::string> words = bad;
    words.insert(words.begin(), "overlay");
    EXPECT_THROW(parse(words), UsageError) << ::testing::PrintToString(bad);
  }
}

TEST(OverlayKey, NamesTheSourceAndThreadAndIsStable) {
  const std::string key = overlay_key({"/home/ana/src/app", "feature/x y"});
  EXPECT_EQ(key.rfind("app-feature_x_y-", 0), 0u) << key;
  EXPECT_EQ(key.size(), std::string("app-feature_x_y-").size() + 16) << key;
  EXPECT_EQ(key, overlay_key({"/home/ana/src/app", "feature/x y"}));
  EXPECT_NE(key, overlay_key({"/home/ana/src/app", "feature/x_y"}));
  EXPECT_NE(key, overlay_key({"/home/bo/src/app", "feature/x y"}));
  const std::string dir_key = overlay_key({"/srv/data", ""});
  EXPECT_EQ(dir_key.rfind("data-", 0), 0u) << dir_key;
  const char* plain = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
  EXPECT_EQ(dir_key.find_first_not_of(plain), std::string::npos);
  EXPECT_EQ(overlay_key({"/", ""}).rfind("root-", 0), 0u);
  // Documented in README.md: FNV-1a 64 of source, NUL, thread.
  EXPECT_EQ(overlay_key({"/r", "t"}), "r-t-" + [] {
    std::uint64_t hash = 0xcbf29ce484222325ULL;
    for (unsigned char c : std::string("/r\0t", 4)) {
      hash ^= c;
      hash *= 0x100000001b3ULL;
    }
    char text[17];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(hash));
    return std::string(text);
  }());
}

class OverlayDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/heddle-overlay-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    root_ = pattern;
    fs::create_directories(root_ + "/src");
    fs::create_directories(root_ + "/mnt");
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  std::string prepare(const std::string& dir) {
    return prepare_overlay_dir({}, dir, {root_ + "/src", ""}, {root_ + "/src", root_ + "/mnt"},
                               ::geteuid() == 0 ? 65534 : ::getuid(),
                               ::geteuid() == 0 ? 65534 : ::getgid());
  }
  static void touch(const std::string& path, const std::string& text = {}) {
    std::ofstream(path) << text;
  }
  static bool mark_origin(const std::string& path) {
    return ::lsetxattr(path.c_str(), kOriginXattr, "lower", 5, 0) == 0;
  }
  std::string root_;
};

TEST_F(OverlayDirTest, PrepareMakesAPrivateDirectoryWithItsSource) {
  const std::string dir = prepare(root_ + "/ov");
  EXPECT_EQ(dir, root_ + "/ov");
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  if (::geteuid() == 0) {
    EXPECT_EQ(st.st_uid, 65534u);
  }
  const auto source = read_overlay_source(dir);
  ASSERT_TRUE(source);
  EXPECT_EQ(source->source, root_ + "/src");
  EXPECT_FALSE(source->git());
  // Again: the same overlay resumes.
  EXPECT_EQ(prepare(root_ + "/ov/"), dir);
}

TEST_F(OverlayDirTest, PrepareRefusesOverlapsStrangersAndOtherSources) {
  for (const std::string& bad : {root_ + "/src/ov", root_ + "/mnt/ov", root_, root_ + "/src"}) {
    try {
      (void)prepare(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const heddle::Error& e) {
      EXPECT_EQ(e.code(), EINVAL) << e.what();
    }
  }
  fs::create_directories(root_ + "/busy");
  touch(root_ + "/busy/notes.txt");
  try {
    (void)prepare(root_ + "/busy");
    ADD_FAILURE() << "took over a directory with other files";
  } catch (const heddle::Error& e) {
    EXPECT_EQ(e.code(), ENOTEMPTY) << e.what();
  }
  const std::string dir = prepare(root_ + "/ov");
  try {
    (void)prepare_overlay_dir({}, dir, {root_ + "/src", "main"}, {}, ::getuid(), ::getgid());
    ADD_FAILURE() << "reused another source's overlay";
  } catch (const heddle::Error& e) {
    EXPECT_EQ(e.code(), EEXIST) << e.what();
  }
}

TEST_F(OverlayDirTest, TheLockNamesItsMountAndKeepsOthersOut) {
  const std::string dir = prepare(root_ + "/ov");
  EXPECT_FALSE(overlay_holder(dir));
  {
    const OverlayLock lock = OverlayLock::acquire(dir, "/mnt/first");
    EXPECT_EQ(overlay_holder(dir), "/mnt/first");
    try {
      (void)OverlayLock::acquire(dir, "/mnt/second");
      ADD_FAILURE() << "two mounts of one overlay";
    } catch (const heddle::Error& e) {
      EXPECT_EQ(e.code(), EBUSY);
      EXPECT_NE(e.attempt().find("/mnt/first"), std::string::npos) << e.what();
    }
    try {
      discard_overlay(dir);
      ADD_FAILURE() << "discarded an overlay in use";
    } catch (const heddle::Error& e) {
      EXPECT_EQ(e.code(), EBUSY) << e.what();
    }
  }
  EXPECT_FALSE(overlay_holder(dir));
  EXPECT_EQ(overlay_last_mountpoint(dir), "/mnt/first");
  discard_overlay(dir);
  EXPECT_FALSE(fs::exists(dir));
}

TEST_F(OverlayDirTest, DiscardRefusesWhatIsNotAnOverlay) {
  touch(root_ + "/src/file");
  EXPECT_THROW(discard_overlay(root_ + "/src"), heddle::Error);
  EXPECT_TRUE(fs::exists(root_ + "/src/file"));
}

TEST_F(OverlayDirTest, ChangesAndUsageFollowTheOnDiskFormat) {
  const std::string dir = prepare(root_ + "/ov");
  const std::string upper = dir + "/upper";
  fs::create_directories(upper + "/sub/new");
  fs::create_directories(upper + "/again");
  fs::create_directories(upper + "/chmodded");
  touch(upper + "/added.txt", "12345");
  touch(upper + "/sub/changed.txt", "abc");
  touch(upper + "/sub/new/inner", "x");
  touch(upper + "/.wh.gone.txt");
  touch(upper + "/sub/.wh.old");
  touch(upper + "/.wh.back");  // stale: back exists again
  touch(upper + "/back", "b");
  touch(upper + "/again/.wh..wh..opq");
  touch(upper + "/again/fresh", "f");
  fs::create_hard_link(upper + "/added.txt", upper + "/added-link");
  fs::create_symlink("target", upper + "/link");
  if (!mark_origin(upper + "/sub") || !mark_origin(upper + "/sub/changed.txt") ||
      !mark_origin(upper + "/chmodded")) {
    GTEST_SKIP() << "no user xattrs on " << upper;
  }
  const OverlayChanges changes = overlay_changes(dir);
  EXPECT_EQ(changes.added, (std::vector<std::string>{"added-link", "added.txt", "again/fresh",
                                                     "back", "link", "sub/new", "sub/new/inner"}));
  EXPECT_EQ(changes.modified, (std::vector<std::string>{"chmodded", "sub/changed.txt"}));
  EXPECT_EQ(changes.deleted, (std::vector<std::string>{"gone.txt", "sub/old"}));
  EXPECT_EQ(changes.replaced, (std::vector<std::string>{"again"}));

  const OverlayUsage usage = overlay_usage(dir);
  // added.txt (once for its two names), changed.txt, inner, back, fresh.
  EXPECT_EQ(usage.bytes, 5u + 3 + 1 + 1 + 1);
  // The regular files and the symlink, by name; not the whiteouts or the opaque marker.
  EXPECT_EQ(usage.files, 7u);

  discard_overlay(dir);
  EXPECT_FALSE(fs::exists(dir));
}

}  // namespace
