// The sandboxed child's setup list, without cloning anything: which ordered ops a request (and
// a whole SandboxSpec) turns into, and which specs the plan refuses before any clone.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "heddle/error.h"
#include "launch_plan.h"

namespace {

namespace fs = std::filesystem;
using heddle::sandbox::SandboxSpec;
using heddle::sandbox::detail::LaunchPlan;
using heddle::sandbox::detail::OpKind;
using heddle::sandbox::detail::order_setup_ops;
using heddle::sandbox::detail::SetupOp;
using heddle::sandbox::detail::SetupReport;
using heddle::sandbox::detail::SetupStage;

constexpr bool kFile = true;
constexpr bool kTree = false;
constexpr bool kWritable = true;
constexpr bool kReadOnly = false;

std::string describe(const std::vector<SetupOp>& ops) {
  std::string out;
  for (const SetupOp& op : ops) {
    static constexpr const char* kNames[] = {"dir", "bind", "symlink", "proc"};
    out += std::string(kNames[static_cast<int>(op.kind)]) + " " + op.path;
    if (op.kind == OpKind::kSymlink) out += " -> " + op.target;
    if (op.kind == OpKind::kBind)
      out += std::string(op.is_file ? " file" : "") + (op.writable ? " rw" : " ro");
    out += "\n";
  }
  return out;
}

struct OrderCase {
  const char* name;
  std::vector<SetupOp> requested;
  std::vector<SetupOp> expected;
};

TEST(SetupOps, RequestsBecomeOneOrderedList) {
  const std::vector<OrderCase> cases = {
      {"nothing asked, nothing done", {}, {}},
      {"/proc alone", {SetupOp::proc()}, {SetupOp::proc()}},
      {"a worker's root: directories, binds parents first, links as asked, /proc last",
       {SetupOp::bind("/usr", kTree, kReadOnly), SetupOp::symlink("usr/bin", "/bin"),
        SetupOp::proc(), SetupOp::symlink("usr/lib", "/lib"),
        SetupOp::bind("/etc/ld.so.cache", kFile, kReadOnly),
        SetupOp::bind("/srv/src", kTree, kReadOnly)},
       {SetupOp::dir("/etc"), SetupOp::dir("/srv"), SetupOp::dir("/srv/src"), SetupOp::dir("/usr"),
        SetupOp::bind("/etc/ld.so.cache", kFile, kReadOnly),
        SetupOp::bind("/srv/src", kTree, kReadOnly), SetupOp::bind("/usr", kTree, kReadOnly),
        SetupOp::symlink("usr/bin", "/bin"), SetupOp::symlink("usr/lib", "/lib"), SetupOp::proc()}},
      {"a binary inside a bound read-only tree is already there",
       {SetupOp::bind("/usr/libexec/heddle/worker", kFile, kReadOnly),
        SetupOp::bind("/usr", kTree, kReadOnly)},
       {SetupOp::dir("/usr"), SetupOp::bind("/usr", kTree, kReadOnly)}},
      {"a writable directory inside a read-only one is bound again on top",
       {SetupOp::bind("/data/overlay", kTree, kWritable), SetupOp::bind("/data", kTree, kReadOnly)},
       {SetupOp::dir("/data"), SetupOp::dir("/data/overlay"),
        SetupOp::bind("/data", kTree, kReadOnly),
        SetupOp::bind("/data/overlay", kTree, kWritable)}},
      {"a bound file covers nothing",
       {SetupOp::bind("/opt/tool", kFile, kReadOnly),
        SetupOp::bind("/opt/tool/x", kFile, kReadOnly)},
       {SetupOp::dir("/opt"), SetupOp::dir("/opt/tool"),
        SetupOp::bind("/opt/tool", kFile, kReadOnly),
        SetupOp::bind("/opt/tool/x", kFile, kReadOnly)}},
      {"a shared prefix is not a parent",
       {SetupOp::bind("/usrx", kTree, kReadOnly), SetupOp::bind("/usr", kTree, kReadOnly)},
       {SetupOp::dir("/usr"), SetupOp::dir("/usrx"), SetupOp::bind("/usr", kTree, kReadOnly),
        SetupOp::bind("/usrx", kTree, kReadOnly)}},
      {"a path asked twice is bound once, as first asked",
       {SetupOp::bind("/a", kTree, kReadOnly), SetupOp::bind("/a", kTree, kWritable),
        SetupOp::bind("/a", kTree, kReadOnly)},
       {SetupOp::dir("/a"), SetupOp::bind("/a", kTree, kReadOnly)}},
  };
  for (const OrderCase& c : cases) {
    EXPECT_EQ(describe(order_setup_ops(c.requested)), describe(c.expected)) << c.name;
  }
}

class LaunchPlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("heddle-setup-ops-" + std::to_string(::getpid()));
    fs::create_directories(root_ / "src" / "deep");
    fs::create_directories(root_ / "overlay");
    std::ofstream(root_ / "src" / "file.txt") << "x";
    root_ = fs::canonical(root_);
    spec_.executable = "/bin/true";
    spec_.argv = {"true"};
  }
  void TearDown() override { fs::remove_all(root_); }

  fs::path root_;
  SandboxSpec spec_;
};

TEST_F(LaunchPlanTest, ASpecYieldsItsBindsAfterTheirDirectoriesAndProcLast) {
  spec_.readonly_paths = {(root_ / "src").string(), (root_ / "src" / "deep").string(),
                          (root_ / "src" / "file.txt").string()};
  spec_.writable_paths = {(root_ / "overlay").string()};
  const LaunchPlan plan(spec_);
  const std::vector<SetupOp>& ops = plan.ops();
  ASSERT_FALSE(ops.empty());
  EXPECT_EQ(ops.back(), SetupOp::proc());

  // The source once (what lies inside it is covered), the overlay writable, nothing else ours.
  std::vector<SetupOp> ours;
  for (const SetupOp& op : ops) {
    if (op.kind == OpKind::kBind && op.path.starts_with(root_.string())) ours.push_back(op);
  }
  EXPECT_EQ(describe(ours), describe({SetupOp::bind((root_ / "overlay").string(), kTree, kWritable),
                                      SetupOp::bind((root_ / "src").string(), kTree, kReadOnly)}));
  // The executable lives in /usr, bound read-only like the rest of the runtime.
  EXPECT_NE(std::find(ops.begin(), ops.end(), SetupOp::bind("/usr", kTree, kReadOnly)), ops.end());

  // Every op's directory exists before it: each kind in its block, parents before children.
  const auto first_of = [&](OpKind kind) {
    return std::find_if(ops.begin(), ops.end(), [&](const SetupOp& op) { return op.kind == kind; });
  };
  EXPECT_TRUE(std::is_partitioned(ops.begin(), ops.end(),
                                  [](const SetupOp& op) { return op.kind == OpKind::kDir; }));
  EXPECT_TRUE(std::is_sorted(ops.begin(), first_of(OpKind::kBind),
                             [](const SetupOp& a, const SetupOp& b) { return a.path < b.path; }));
  for (auto bind = first_of(OpKind::kBind); bind != ops.end() && bind->kind == OpKind::kBind;
       ++bind) {
    const fs::path dir = bind->is_file ? fs::path(bind->path).parent_path() : fs::path(bind->path);
    EXPECT_NE(std::find(ops.begin(), bind, SetupOp::dir(dir.string())), bind) << bind->path;
  }

  // The child's view is the same list.
  const auto child = plan.child_plan(-1, -1, -1);
  ASSERT_EQ(child.op_count, ops.size());
  for (std::size_t i = 0; i < ops.size(); ++i) {
    EXPECT_EQ(child.ops[i].kind, ops[i].kind);
    EXPECT_EQ(child.ops[i].path, ops[i].path);
    EXPECT_EQ(child.ops[i].writable, ops[i].writable);
  }
}

TEST_F(LaunchPlanTest, NoProcWhenTheSpecSaysSo) {
  spec_.mount_proc = false;
  const LaunchPlan plan(spec_);
  EXPECT_EQ(std::count(plan.ops().begin(), plan.ops().end(), SetupOp::proc()), 0);
}

TEST_F(LaunchPlanTest, BadSpecsAreRefusedBeforeAnyClone) {
  struct Bad {
    const char* name;
    void (*change)(SandboxSpec&, const fs::path&);
    int code;
  };
  const Bad cases[] = {
      {"host uid 0", [](SandboxSpec& s, const fs::path&) { s.uid = 0; }, EINVAL},
      {"host gid 0", [](SandboxSpec& s, const fs::path&) { s.gid = 0; }, EINVAL},
      {"no argv", [](SandboxSpec& s, const fs::path&) { s.argv.clear(); }, EINVAL},
      {"missing executable",
       [](SandboxSpec& s, const fs::path& r) { s.executable = (r / "nope").string(); }, ENOENT},
      {"the host root", [](SandboxSpec& s, const fs::path&) { s.readonly_paths = {"/"}; }, EINVAL},
      {"missing path",
       [](SandboxSpec& s, const fs::path& r) { s.readonly_paths = {(r / "nope").string()}; },
       ENOENT},
      {"a writable file",
       [](SandboxSpec& s, const fs::path& r) {
         s.writable_paths = {(r / "src" / "file.txt").string()};
       },
       ENOTDIR},
      {"more binds than the child has room for",
       [](SandboxSpec& s, const fs::path& r) { s.readonly_paths.assign(40, (r / "src").string()); },
       E2BIG},
  };
  for (const Bad& bad : cases) {
    SandboxSpec spec = spec_;
    bad.change(spec, root_);
    try {
      const LaunchPlan plan(spec);
      ADD_FAILURE() << bad.name << ": accepted";
    } catch (const heddle::Error& e) {
      EXPECT_EQ(e.code(), bad.code) << bad.name << ": " << e.what();
    }
  }
}

// A checked path becomes a bind pinned to the object checked, never resolved again by the
// parent: so it must arrive absolute and canonical. The child refuses it when the path names
// another object by then (ESTALE), which the parent explains.
TEST_F(LaunchPlanTest, ACheckedPathIsBoundPinnedToItsObject) {
  struct stat st {};
  ASSERT_EQ(::stat((root_ / "src").c_str(), &st), 0);
  spec_.checked_paths = {{(root_ / "src").string(), st.st_dev, st.st_ino, true}};
  const LaunchPlan plan(spec_);
  const auto op = std::find_if(plan.ops().begin(), plan.ops().end(), [&](const SetupOp& o) {
    return o.kind == OpKind::kBind && o.path == (root_ / "src").string();
  });
  ASSERT_NE(op, plan.ops().end());
  ASSERT_TRUE(op->pin.has_value());
  EXPECT_EQ(op->pin->ino, st.st_ino);
  EXPECT_EQ(op->pin->dev_major, ::major(st.st_dev));
  EXPECT_EQ(op->pin->dev_minor, ::minor(st.st_dev));
  EXPECT_FALSE(op->writable);
  const auto child = plan.child_plan(-1, -1, -1);
  const auto index = static_cast<std::size_t>(op - plan.ops().begin());
  EXPECT_TRUE(child.ops[index].pinned);
  EXPECT_EQ(child.ops[index].pin, *op->pin);
  // The runtime is not pinned: it is the host's, not a user's.
  for (std::size_t i = 0; i < plan.ops().size(); ++i) {
    if (plan.ops()[i].path == "/usr") {
      EXPECT_FALSE(child.ops[i].pinned);
    }
  }
  try {
    plan.throw_setup_failure(SetupReport{static_cast<int>(SetupStage::kCloneTree), ESTALE,
                                         static_cast<int>(index)});
  } catch (const heddle::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no longer what was checked"), std::string::npos)
        << e.what();
  }

  for (const std::string& bad : {(root_ / "src" / ".." / "src").string(), std::string("src"),
                                 std::string("/")}) {
    SandboxSpec spec = spec_;
    spec.checked_paths = {{bad, st.st_dev, st.st_ino, true}};
    try {
      const LaunchPlan refused(spec);
      ADD_FAILURE() << bad << ": accepted";
    } catch (const heddle::Error& e) {
      EXPECT_EQ(e.code(), EINVAL) << bad << ": " << e.what();
    }
  }
}

// The child reports a failed op by its index; the parent names the op's path.
TEST_F(LaunchPlanTest, AFailedOpIsNamedByItsPath) {
  spec_.readonly_paths = {(root_ / "src").string()};
  const LaunchPlan plan(spec_);
  const auto message = [&](SetupStage stage, int index) -> std::string {
    try {
      plan.throw_setup_failure(SetupReport{static_cast<int>(stage), EIO, index});
    } catch (const heddle::Error& e) {
      EXPECT_EQ(e.code(), EIO);
      return e.what();
    }
    return "no throw";
  };
  const std::vector<SetupOp>& ops = plan.ops();
  const auto index_of = [&](const SetupOp& op) {
    return static_cast<int>(std::find(ops.begin(), ops.end(), op) - ops.begin());
  };
  const std::string src = (root_ / "src").string();
  const int bind = index_of(SetupOp::bind(src, kTree, kReadOnly));
  ASSERT_LT(bind, static_cast<int>(ops.size()));
  EXPECT_TRUE(
      message(SetupStage::kCloneTree, bind).starts_with("sandbox: bind " + src + " read-only"));
  EXPECT_TRUE(message(SetupStage::kBind, bind).starts_with("sandbox: bind " + src + " read-only"));
  EXPECT_TRUE(
      message(SetupStage::kReadOnly, bind).starts_with("sandbox: make " + src + " read-only"));
  EXPECT_TRUE(message(SetupStage::kReadOnly, -1).starts_with("sandbox: make / read-only"));
  EXPECT_TRUE(message(SetupStage::kMakeDir, index_of(SetupOp::dir(src)))
                  .starts_with("sandbox: create " + src + ":"));
  EXPECT_TRUE(
      message(SetupStage::kBind, static_cast<int>(ops.size())).starts_with("sandbox: bind ? "));
}

}  // namespace
