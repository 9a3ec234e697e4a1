// The mountinfo parser on written lines: what it reads from each valid line, and that lines
// it cannot read are skipped rather than misread.
#include "heddle/launcher/mountinfo.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "heddle/error.h"

namespace {

namespace fs = std::filesystem;
using heddle::launcher::MountEntry;
using heddle::launcher::read_mountinfo;

std::vector<MountEntry> parse(const std::string& text) {
  const fs::path path =
      fs::temp_directory_path() / ("heddle-mountinfo-" + std::to_string(::getpid()));
  std::ofstream(path) << text;
  std::vector<MountEntry> entries = read_mountinfo(path.string());
  fs::remove(path);
  return entries;
}

std::string describe(const MountEntry& e) {
  return std::to_string(e.id) + " " + std::to_string(e.parent_id) + " " + std::to_string(e.major) +
         ":" + std::to_string(e.minor) + " [" + e.mount_point + "] [" + e.fstype + "] [" +
         e.source + "]";
}

struct LineCase {
  const char* line;
  const char* expected;  // describe() of the entry, or nullptr if the line is skipped
};

TEST(Mountinfo, ReadsValidLinesAndSkipsTheOthers) {
  const LineCase cases[] = {
      // The kernel documentation's example: one optional field.
      {"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
       "36 35 98:0 [/mnt2] [ext3] [/dev/root]"},
      {"22 1 0:21 / /proc rw,nosuid,nodev,noexec - proc proc rw",
       "22 1 0:21 [/proc] [proc] [proc]"},
      {"80 22 0:45 / /home/a/mnt rw,nosuid,nodev shared:1 master:2 propagate_from:3 - "
       "fuse.heddle heddle rw,user_id=0,group_id=0",
       "80 22 0:45 [/home/a/mnt] [fuse.heddle] [heddle]"},
      // Space, tab, newline and backslash come escaped as \ooo.
      {"81 22 0:46 / /mnt/a\\040b\\011c\\012d\\134e rw - fuse.heddle my\\040src rw",
       "81 22 0:46 [/mnt/a b\tc\nd\\e] [fuse.heddle] [my src]"},
      // Not escapes: kept as they are.
      {"82 22 0:47 / /mnt/\\xyz\\8\\04 rw - tmpfs tmpfs rw",
       "82 22 0:47 [/mnt/\\xyz\\8\\04] [tmpfs] [tmpfs]"},
      {"", nullptr},
      {"garbage", nullptr},
      {"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 ext3 /dev/root rw", nullptr},  // no "-"
      {"36 35 98-0 /mnt1 /mnt2 rw - ext3 /dev/root rw", nullptr},                 // no colon
      {"x 35 98:0 / /mnt2 rw - ext3 /dev/root rw", nullptr},
      {"36 35 a:0 /mnt1 /mnt2 rw - ext3 /dev/root rw", nullptr},  // device not a number
      {"36 35 :0 /mnt1 /mnt2 rw - ext3 /dev/root rw", nullptr},
      {"36 35 98: /mnt1 /mnt2 rw - ext3 /dev/root rw", nullptr},
      {"36 35 98:0 /", nullptr},
  };
  for (const LineCase& c : cases) {
    const std::vector<MountEntry> entries = parse(std::string(c.line) + "\n");
    if (c.expected == nullptr) {
      EXPECT_TRUE(entries.empty()) << c.line << " read as " << describe(entries.front());
    } else {
      EXPECT_EQ(entries.size(), 1u) << c.line;
      if (!entries.empty()) {
        EXPECT_EQ(describe(entries.front()), c.expected) << c.line;
      }
    }
  }
}

TEST(Mountinfo, KeepsTheFilesOrderAcrossSkippedLines) {
  const std::vector<MountEntry> entries =
      parse("1 0 0:1 / / rw - rootfs rootfs rw\nnot a mount\n2 1 0:2 / /mnt rw - tmpfs t rw\n");
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].mount_point, "/");
  EXPECT_EQ(entries[1].mount_point, "/mnt");
}

TEST(Mountinfo, AMissingFileIsAnError) {
  try {
    (void)read_mountinfo("/nonexistent/heddle/mountinfo");
    ADD_FAILURE() << "no error";
  } catch (const heddle::Error& e) {
    EXPECT_EQ(e.code(), ENOENT) << e.what();
  }
}

}  // namespace

namespace {

// A mount is named by its id and its device together: either alone may be another mount's
// once the first is gone (both are handed out lowest-free).
TEST(Mountinfo, FindMountNeedsTheIdAndTheDevice) {
  using heddle::launcher::find_mount;
  using heddle::launcher::MountIdentity;
  const std::vector<MountEntry> mounts = parse(
      "22 1 0:21 / /proc rw - proc proc rw\n"
      "80 22 0:45 / /home/a/mnt rw - fuse.heddle heddle rw\n"
      "81 22 0:46 / /home/a/other rw - fuse.heddle heddle rw\n");
  const auto found = find_mount(MountIdentity{80, 7, 0, 45}, mounts);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->mount_point, "/home/a/mnt");
  EXPECT_FALSE(find_mount(MountIdentity{80, 7, 0, 46}, mounts).has_value()) << "another device";
  EXPECT_FALSE(find_mount(MountIdentity{81, 7, 0, 45}, mounts).has_value()) << "another id";
  EXPECT_FALSE(find_mount(MountIdentity{90, 7, 0, 47}, mounts).has_value()) << "detached";
}

}  // namespace
