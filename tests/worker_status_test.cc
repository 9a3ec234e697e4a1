// What the supervisor takes from a worker's MountReady and StatusOk (worker_status.h).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "heddle/launcher/worker_status.h"

namespace heddle::launcher {
namespace {

using Json = nlohmann::ordered_json;

constexpr pid_t kWorker = 4242;
const std::string kMountpoint = "/home/ana/mnt";

bool mentions(const WorkerReplyCheck& check, const std::string& part) {
  for (const std::string& problem : check.problems) {
    if (problem.find(part) != std::string::npos) return true;
  }
  return false;
}

TEST(WorkerStatus, AnHonestReplyPassesUnchangedAndSilently) {
  ipc::StatusOk honest{kWorker, kMountpoint};
  honest.extra = Json{{"uptime_ms", 12u}, {"nodes", 3u}, {"serving", true},
                      {"commit", std::string(40, 'a')}, {"tree", std::string(64, '0')},
                      {"cache_bytes", 1u}, {"cache_limit", 2u}, {"cache_entries", 3u},
                      {"cache_hits", 4u}, {"cache_misses", 5u}, {"streamed_opens", 6u},
                      {"whole_reads_of_big_blobs", 7u}, {"repositories_open", 8u}};
  WorkerReplyCheck check;
  EXPECT_EQ(checked_status(honest, kWorker, kMountpoint, check), honest);
  EXPECT_TRUE(check.problems.empty());

  ipc::StatusOk null_commit{kWorker, kMountpoint};
  null_commit.extra = Json{{"commit", nullptr}};
  EXPECT_EQ(checked_status(null_commit, kWorker, kMountpoint, check), null_commit);
  EXPECT_EQ(checked_mount_ready({kWorker, kMountpoint}, kWorker, kMountpoint, check),
            (ipc::MountReady{kWorker, kMountpoint}));
  EXPECT_TRUE(check.problems.empty());
}

TEST(WorkerStatus, PidAndMountPathAreTheSupervisorsWhateverTheWorkerSays) {
  WorkerReplyCheck check;
  const ipc::MountReady ready =
      checked_mount_ready({1, "/etc\x1b]52;c;aGk=\x07\n<0>x"}, kWorker, kMountpoint, check);
  EXPECT_EQ(ready, (ipc::MountReady{kWorker, kMountpoint}));
  ASSERT_EQ(check.problems.size(), 2u);
  EXPECT_TRUE(mentions(check, "pid 1 is not the worker's (4242)"));
  // Quoted escaped: the problem is one line whatever the worker sent.
  EXPECT_TRUE(mentions(check, "\"/etc\\x1b]52;c;aGk=\\x07\\n<0>x\" is not the mountpoint"));

  check = {};
  const ipc::StatusOk status = checked_status({7, "/elsewhere"}, kWorker, kMountpoint, check);
  EXPECT_EQ(status.pid, static_cast<std::uint32_t>(kWorker));
  EXPECT_EQ(status.mount_path, kMountpoint);
  EXPECT_EQ(check.problems.size(), 2u);
}

TEST(WorkerStatus, UnknownFieldsAndWrongTypesAreDroppedWithAProblemEach) {
  ipc::StatusOk hostile{kWorker, kMountpoint};
  hostile.extra = Json{{"nodes", 7u},
                       {"uptime_ms", "soon"},
                       {"serving", 1},
                       {"cache_hits", -1},
                       {"cache_bytes", 1.5},
                       {"commit", "\x1b[2J"},
                       {"tree", std::string(40, 'A')},  // upper case is no id of ours
                       {"bogus\x1b[31m", "x"},
                       {"source", 9},          // the supervisor's own fields: dropped quietly
                       {"thread", 5},
                       {"overlay_bytes", "lots"},
                       {"supervisor_pid", "me"}};
  WorkerReplyCheck check;
  const ipc::StatusOk out = checked_status(hostile, kWorker, kMountpoint, check);
  EXPECT_EQ(out.extra, (Json{{"nodes", 7u}})) << out.extra.dump();
  EXPECT_EQ(check.problems.size(), 7u);
  EXPECT_TRUE(mentions(check, "field \"uptime_ms\" is not an unsigned integer (a string)"));
  EXPECT_TRUE(mentions(check, "field \"serving\" is not a bool"));
  EXPECT_TRUE(mentions(check, "field \"commit\" is not an object id or null"));
  EXPECT_TRUE(mentions(check, "unknown field \"bogus\\x1b[31m\""));
  EXPECT_FALSE(mentions(check, "source"));
  EXPECT_FALSE(mentions(check, "thread"));
}

// A directory mount's watch state is one word of a few: shown as is, so nothing else may pass.
TEST(WorkerStatus, TheSourceWatchIsAWordAndNothingElse) {
  ipc::StatusOk watched{kWorker, kMountpoint};
  watched.extra = Json{{"source_watch", "off_watch_limit"}, {"watched_dirs", 3u},
                       {"watch_notifications", 9u}};
  WorkerReplyCheck check;
  EXPECT_EQ(checked_status(watched, kWorker, kMountpoint, check), watched);
  EXPECT_TRUE(check.problems.empty());
  for (const std::string& text :
       std::vector<std::string>{"", "Inotify", "off: \x1b[2J", std::string(33, 'a')}) {
    ipc::StatusOk odd{kWorker, kMountpoint};
    odd.extra = Json{{"source_watch", text}};
    check = {};
    EXPECT_TRUE(checked_status(odd, kWorker, kMountpoint, check).extra.empty()) << text;
    EXPECT_TRUE(mentions(check, "field \"source_watch\" is not a word")) << text;
  }
}

TEST(WorkerStatus, AFloodOfFieldsGivesAFewShortProblems) {
  ipc::StatusOk flood{kWorker, kMountpoint};
  for (int i = 0; i < 1000; ++i) flood.extra[std::string(500, 'k') + std::to_string(i)] = i;
  WorkerReplyCheck check;
  const ipc::StatusOk out = checked_status(flood, kWorker, kMountpoint, check);
  EXPECT_TRUE(out.extra.empty());
  ASSERT_EQ(check.problems.size(), 9u);
  EXPECT_EQ(check.problems.back(), "and 992 more");
  for (const std::string& problem : check.problems) EXPECT_LT(problem.size(), 120u) << problem;
}

// A long name is cut at a character boundary: no half character becomes a \x escape.
TEST(WorkerStatus, ALongNameIsCutBetweenCharacters) {
  ipc::StatusOk long_name{kWorker, kMountpoint};
  long_name.extra[std::string(63, 'k') + "\xe6\x97\xa5" + std::string(10, 'k')] = 1;
  WorkerReplyCheck check;
  (void)checked_status(long_name, kWorker, kMountpoint, check);
  ASSERT_EQ(check.problems.size(), 1u);
  EXPECT_EQ(check.problems[0], "unknown field \"" + std::string(63, 'k') + "...\"; dropped");
}

}  // namespace
}  // namespace heddle::launcher
