// ipc::MountSpec in its bootstrap document: every field round-trips, and bad input is refused
// with an error that names the problem.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "heddle/error.h"
#include "heddle/ipc/mount_spec.h"

namespace heddle::ipc {
namespace {

WorkerBootstrap git_bootstrap() {
  WorkerBootstrap boot;
  boot.host_pid = 4242;
  boot.spec = MountSpec::thread(GitSource{"/src/repo", "feature/x", 1234}, "/mnt/x", 1000, 100);
  boot.spec.allow_other = true;
  boot.spec.sandbox = SandboxMode::kDegraded;
  boot.spec.overlay_dir = "/var/lib/heddle-fuse/overlays/repo-x";
  boot.test_ignore_stop = true;
  return boot;
}

TEST(MountSpec, EveryFieldRoundTrips) {
  const WorkerBootstrap git = git_bootstrap();
  EXPECT_EQ(decode_bootstrap(encode_bootstrap(git)), git);

  WorkerBootstrap dir;
  dir.host_pid = 1;
  dir.spec = MountSpec::directory("/srv/dir with spaces/ünï", "/mnt/d");
  dir.spec.sandbox = SandboxMode::kNone;
  EXPECT_EQ(decode_bootstrap(encode_bootstrap(dir)), dir);
  EXPECT_FALSE(dir.spec.writable());
  EXPECT_TRUE(git.spec.writable());
}

TEST(MountSpec, TheDocumentHasItsDocumentedShape) {
  const auto json = nlohmann::json::parse(encode_bootstrap(git_bootstrap()));
  EXPECT_EQ(json, nlohmann::json::parse(R"({"host_pid":4242,"test_ignore_stop":true,"generation":1,"spec":{
      "source":{"kind":"git","repo_root":"/src/repo","thread":"feature/x","cache_bytes":1234},
      "mountpoint":"/mnt/x","uid":1000,"gid":100,"allow_other":true,"sandbox":"degraded",
      "overlay_dir":"/var/lib/heddle-fuse/overlays/repo-x"}})"));
}

// Each case: a change to a valid document, and what the error must say.
TEST(MountSpec, BadDocumentsAreRefusedByName) {
  const auto valid = nlohmann::json::parse(encode_bootstrap(git_bootstrap()));
  struct Case {
    std::function<void(nlohmann::json&)> change;
    std::string says;
  };
  const std::vector<Case> cases = {
      {[](auto& j) { j["spec"]["source"]["kind"] = "nfs"; }, "unknown source kind \"nfs\""},
      {[](auto& j) { j["spec"]["source"].erase("kind"); }, "needs a string \"kind\""},
      {[](auto& j) { j["spec"]["source"].erase("thread"); }, "lacks \"thread\""},
      {[](auto& j) { j["spec"]["source"]["thread"] = ""; }, "\"thread\" is empty"},
      {[](auto& j) { j["spec"]["source"]["cache_bytes"] = 0; }, "\"cache_bytes\" is 0"},
      {[](auto& j) { j["spec"]["source"]["cache_bytes"] = -1; }, "\"cache_bytes\" is not"},
      {[](auto& j) { j["spec"]["source"]["dir"] = "/x"; }, "unknown field \"dir\""},
      {[](auto& j) { j["spec"].erase("mountpoint"); }, "lacks \"mountpoint\""},
      {[](auto& j) { j["spec"]["mountpoint"] = 7; }, "\"mountpoint\" is not a string"},
      {[](auto& j) { j["spec"]["uid"] = 1ull << 32; }, "\"uid\" is not an unsigned 32-bit"},
      {[](auto& j) { j["spec"]["allow_other"] = "yes"; }, "\"allow_other\" is not a boolean"},
      {[](auto& j) { j["spec"]["sandbox"] = "lax"; }, "unknown sandbox mode \"lax\""},
      {[](auto& j) { j["spec"]["extra"] = 1; }, "unknown field \"extra\""},
      {[](auto& j) { j["spec"] = nlohmann::json::array(); }, "\"spec\" is not an object"},
      {[](auto& j) { j.erase("spec"); }, "lacks \"spec\""},
      {[](auto& j) { j["host_pid"] = 0; }, "\"host_pid\" is 0"},
      {[](auto& j) { j.erase("test_ignore_stop"); }, "lacks \"test_ignore_stop\""},
      {[](auto& j) { j.erase("generation"); }, "lacks \"generation\""},
      {[](auto& j) { j["generation"] = 0; }, "\"generation\" is 0"},
  };
  for (const Case& c : cases) {
    nlohmann::json bad = valid;
    c.change(bad);
    try {
      (void)decode_bootstrap(bad.dump());
      ADD_FAILURE() << "accepted " << bad.dump();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), EINVAL);
      EXPECT_NE(std::string(e.what()).find(c.says), std::string::npos)
          << e.what() << "\nexpected: " << c.says;
    }
  }
  for (const char* text : {"", "not json", "[]", "{\"host_pid\":1", "null"}) {
    EXPECT_THROW((void)decode_bootstrap(text), Error) << text;
  }
}

TEST(MountSpec, InvalidUtf8IsAnErrorNotACrash) {
  WorkerBootstrap boot = git_bootstrap();
  boot.spec.mountpoint = "/mnt/\xff";
  EXPECT_THROW((void)encode_bootstrap(boot), Error);
}

}  // namespace
}  // namespace heddle::ipc
