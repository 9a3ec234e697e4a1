// parse_cli in process: what each command line parses into, and what it refuses with which
// complaint, side by side; sizes for --cache-bytes. Nothing runs, nothing is mounted. (The
// end-to-end exit codes are cli_test's, the overlay flags overlay_cli_test's.)
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "cli.h"

namespace {

using namespace heddle::launcher;
using Words = std::vector<std::string>;

ParsedCli parse(Words words) {
  std::vector<char*> argv;
  for (std::string& word : words) argv.push_back(word.data());
  return parse_cli(std::span<char*>(argv.data(), argv.size()));
}

std::string joined(const Words& words) {
  std::string out;
  for (const std::string& word : words) out += word + " ";
  return out;
}

// The mount command's parsed form, in one place (it is the part most likely to change shape).
const MountArgs& mount_of(const ParsedCli& cli) { return std::get<MountArgs>(cli.command); }

Words git_mount(const std::string& cache_bytes) {
  return {"mount",         "--repo-root", "/r",           "--thread-id", "t",
          "--cache-bytes", cache_bytes,   "--mountpoint", "/m"};
}

TEST(CliParse, RestartBudgetAndRestart) {
  const Words mount = {"mount", "--dir", "/d", "--mountpoint", "/m"};
  EXPECT_FALSE(mount_of(parse(mount)).restart_budget.has_value());
  const auto budget_of = [&](const std::string& text) {
    Words words = mount;
    words.insert(words.end(), {"--restart-budget", text});
    return mount_of(parse(words)).restart_budget.value();
  };
  EXPECT_EQ(budget_of("5/60"), (RestartBudget{5, std::chrono::seconds(60)}));
  EXPECT_EQ(budget_of("0"), (RestartBudget{0, std::chrono::seconds(300)}));
  EXPECT_EQ(budget_of("7"), (RestartBudget{7, std::chrono::seconds(300)}));
  EXPECT_EQ(describe_budget(kDefaultRestartBudget), "3/300");

  const auto restart = std::get<RestartCommand>(parse({"restart", "/m", "--json"}).command);
  EXPECT_EQ(restart.mountpoint, "/m");
  EXPECT_FALSE(restart.all);
  EXPECT_TRUE(restart.json);
  const auto all = std::get<RestartCommand>(parse({"restart", "--all"}).command);
  EXPECT_TRUE(all.all);
  EXPECT_FALSE(all.json);
  EXPECT_TRUE(std::get<RestartCommand>(parse({"restart", "--all", "--json"}).command).json);
}

TEST(CliParse, CacheBytes) {
  const struct {
    const char* text;
    std::uint64_t bytes;
  } valid[] = {
      {"1", 1},
      {"4096", 4096},
      {"4k", 4096},
      {"4K", 4096},
      {"256M", 256u << 20},
      {"256m", 256u << 20},
      {"2G", std::uint64_t{2} << 30},
      {"999999999999", 999999999999u},                         // twelve digits
      {"17179869183G", ((std::uint64_t{1} << 34) - 1) << 30},  // the largest that fits
  };
  for (const auto& c : valid) {
    const ParsedCli cli = parse(git_mount(c.text));
    EXPECT_EQ(mount_of(cli).cache_bytes.value_or(0), c.bytes) << c.text;
  }
  for (const char* text : {"0", "0M", "", "M", "1T", "1.5M", "-1", "+1", " 1", "1 ", "12MB", "1M1",
                           "0x10", "1234567890123", "17179869184G"}) {
    try {
      (void)parse(git_mount(text));
      ADD_FAILURE() << "'" << text << "' accepted";
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find("--cache-bytes"), std::string::npos) << e.what();
    }
  }
  EXPECT_FALSE(
      mount_of(parse({"mount", "--repo-root", "/r", "--thread-id", "t", "--mountpoint", "/m"}))
          .cache_bytes.has_value());
}

TEST(CliParse, Verbosity) {
  const struct {
    Words words;
    int verbosity;
  } cases[] = {
      {{"list"}, 0},
      {{"-v", "list"}, 1},
      {{"-vvv", "list"}, 3},
      {{"-qq", "list"}, -2},
      {{"--verbose", "--verbose", "--quiet", "list"}, 1},
      {{"-v", "-q", "list"}, 0},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(parse(c.words).verbosity, c.verbosity) << joined(c.words);
  }
}

// What the parse yields for commands other than mount, field by field.
TEST(CliParse, Commands) {
  EXPECT_TRUE(std::holds_alternative<HelpCommand>(parse({"help"}).command));
  EXPECT_TRUE(std::holds_alternative<HelpCommand>(parse({"-h"}).command));
  EXPECT_TRUE(std::holds_alternative<HelpCommand>(parse({"-v", "--help"}).command));
  EXPECT_TRUE(std::holds_alternative<VersionCommand>(parse({"--version"}).command));
  EXPECT_TRUE(std::holds_alternative<DemoCommand>(parse({"demo"}).command));

  const auto status = std::get<StatusCommand>(parse({"status", "--json", "/m"}).command);
  EXPECT_EQ(status.mountpoint, "/m");
  EXPECT_TRUE(status.json);
  EXPECT_FALSE(std::get<StatusCommand>(parse({"status", "/m"}).command).json);
  EXPECT_EQ(std::get<UnmountCommand>(parse({"unmount", "/m"}).command).mountpoint, "/m");
  EXPECT_TRUE(std::get<ListCommand>(parse({"list", "--json"}).command).json);
  EXPECT_FALSE(std::get<DoctorCommand>(parse({"doctor"}).command).json);

  const auto exec = std::get<SandboxExecArgs>(
      parse({"sandbox-exec", "--dir", "/d", "--sandbox=degraded", "--", "ls", "--", "-l"}).command);
  EXPECT_EQ(exec.dir, "/d");
  EXPECT_EQ(exec.command, (Words{"ls", "--", "-l"}));
  EXPECT_EQ(exec.sandbox, heddle::ipc::SandboxMode::kDegraded);
  EXPECT_EQ(std::get<SandboxExecArgs>(
                parse({"sandbox-exec", "--sandbox", "strict", "--", "true"}).command)
                .sandbox,
            heddle::ipc::SandboxMode::kStrict);

  const auto capture = std::get<CaptureArgs>(
      parse({"capture", "/m", "-m", "msg", "--author", "A U Thor <a@example.com>", "--json"})
          .command);
  EXPECT_EQ(capture.mountpoint, "/m");
  EXPECT_EQ(capture.message, "msg");
  EXPECT_EQ(capture.author, "A U Thor <a@example.com>");
  EXPECT_TRUE(capture.json);
  EXPECT_EQ(std::get<CaptureArgs>(parse({"capture", "--message", "x", "/m"}).command).message, "x");
  EXPECT_TRUE(
      mount_of(parse({"mount", "--repo-root", "/r", "--thread-id", "t", "--pin", "--mountpoint", "/m"}))
          .pin);

  // heddle's worker argv, in any order.
  const auto dropin = std::get<DropInArgs>(
      parse({"--mountpoint", "/m", "--ipc-fd", "3", "--repo-root", "/r", "--thread-id", "t"})
          .command);
  EXPECT_EQ(dropin.repo_root, "/r");
  EXPECT_EQ(dropin.thread_id, "t");
  EXPECT_EQ(dropin.mountpoint, "/m");
  EXPECT_EQ(dropin.ipc_fd, 3);
}

TEST(CliParse, MountIdentity) {
  const ParsedCli cli =
      parse({"mount", "--dir", "/d", "--mountpoint", "/m", "--uid", "0", "--gid", "root"});
  EXPECT_EQ(mount_of(cli).uid, uid_t{0});
  EXPECT_EQ(mount_of(cli).gid, gid_t{0});
  EXPECT_EQ(mount_of(parse({"mount", "--dir", "/d", "--mountpoint", "/m", "--uid", "root"})).uid,
            uid_t{0});
  EXPECT_FALSE(mount_of(parse({"mount", "--dir", "/d", "--mountpoint", "/m"})).uid.has_value());
}

// Each refused command line and a word of what the complaint must say.
TEST(CliParse, RefusedWithAReason) {
  const struct {
    Words words;
    const char* complaint;
  } cases[] = {
      {{}, "a command is required"},
      {{"-v"}, "a command is required"},
      {{"-vq", "list"}, "unknown command -vq"},
      {{"frobnicate"}, "unknown command frobnicate"},
      {{"status"}, "mountpoint is required"},
      {{"status", "/a", "/b"}, "unexpected argument /b"},
      {{"status", "--bogus", "/a"}, "unknown option --bogus"},
      {{"unmount", "--json", "/a"}, "unknown option --json"},
      {{"list", "x"}, "unexpected argument x"},
      {{"doctor", "--verbose"}, "unexpected argument --verbose"},
      {{"demo", "x"}, "no arguments"},
      {{"sandbox-exec"}, "after --"},
      {{"sandbox-exec", "--"}, "after --"},
      {{"sandbox-exec", "ls"}, "unknown option ls"},
      {{"sandbox-exec", "--dir", "/d", "--repo-root", "/r", "--", "ls"}, "exclude"},
      {{"mount"}, "is required"},
      {{"mount", "--dir"}, "--dir needs a value"},
      {{"mount", "--dir", "/d"}, "--mountpoint is required"},
      {{"mount", "--dir", "/d", "--mountpoint", "/m", "--bogus"}, "unknown option --bogus"},
      {{"mount", "--dir", "/d", "--repo-root", "/r", "--thread-id", "t", "--mountpoint", "/m"},
       "exclude"},
      {{"mount", "--repo-root", "/r", "--mountpoint", "/m"}, "go together"},
      {{"mount", "--thread-id", "t", "--mountpoint", "/m"}, "go together"},
      {{"mount", "--dir", "/d", "--mountpoint", "/m", "--cache-bytes", "1M"}, "--cache-bytes"},
      {{"mount", "--dir", "/d", "--mountpoint", "/m", "--sandbox=lax"}, "strict or degraded"},
      {{"mount", "--dir", "/d", "--mountpoint", "/m", "--pin"}, "--pin needs --repo-root"},
      {{"mount", "--dir", "/d", "--mountpoint", "/m", "--restart-budget", "x"}, "RESTARTS[/SECONDS]"},
      {{"mount", "--dir", "/d", "--mountpoint", "/m", "--restart-budget", "3/0"}, "--restart-budget"},
      {{"mount", "--dir", "/d", "--mountpoint", "/m", "--restart-budget", "-1"}, "--restart-budget"},
      {{"mount", "--dir", "/d", "--mountpoint", "/m", "--restart-budget", "3/"}, "--restart-budget"},
      {{"mount", "--dir", "/d", "--mountpoint", "/m", "--restart-budget", "1001"}, "--restart-budget"},
      {{"mount", "--dir", "/d", "--mountpoint", "/m", "--restart-budget"}, "needs a value"},
      {{"restart"}, "mountpoint is required"},
      {{"restart", "/m", "/n"}, "unexpected argument /n"},
      {{"restart", "--all", "/m"}, "unexpected argument /m"},
      {{"capture"}, "mountpoint is required"},
      {{"capture", "/m", "/n"}, "unexpected argument /n"},
      {{"capture", "/m", "-m"}, "-m needs a value"},
      {{"capture", "/m", "-m", ""}, "needs a message"},
      {{"capture", "/m", "--author", "nobody"}, "Name <email>"},
      {{"capture", "/m", "--author", "A <a@b> x"}, "Name <email>"},
      {{"capture", "/m", "--author", "<a@b>"}, "Name <email>"},
      {{"capture", "/m", "--bogus"}, "unknown option --bogus"},
      {{"mount", "--dir", "/d", "--mountpoint", "/m", "--sandbox"}, "--sandbox needs a value"},
      {{"mount", "--dir", "/d", "--mountpoint", "/m", "--uid", "no-such-user-here"},
       "no such user"},
      {{"mount", "--dir", "/d", "--mountpoint", "/m", "--gid", "no-such-group-here"},
       "no such group"},
      {{"mount", "--dir", "/d", "--mountpoint", "/m", "--uid", "12345678901"}, "no such user"},
      // heddle's worker argv: its four flags, each once, with a usable fd.
      {{"--repo-root", "/r", "--thread-id", "t", "--mountpoint", "/m"}, "--ipc-fd is required"},
      {{"--repo-root", "/r", "--thread-id", "t", "--mountpoint", "/m", "--ipc-fd", "2"}, "above 2"},
      {{"--repo-root", "/r", "--thread-id", "t", "--mountpoint", "/m", "--ipc-fd", "x"}, "above 2"},
      {{"--repo-root", "/r", "--thread-id", "t", "--mountpoint", "/m", "--ipc-fd", "12345678901"},
       "above 2"},
      {{"--repo-root", "/r", "--repo-root", "/r"}, "given twice"},
      {{"--repo-root", "", "--thread-id", "t"}, "non-empty"},
      {{"--repo-root", "/r", "--dir", "/d"}, "unrecognised argument --dir"},
  };
  for (const auto& c : cases) {
    try {
      (void)parse(c.words);
      ADD_FAILURE() << joined(c.words) << ": accepted";
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(c.complaint), std::string::npos)
          << joined(c.words) << ": " << e.what();
    }
  }
}

}  // namespace
