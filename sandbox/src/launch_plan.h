// Everything the child needs, prepared (and allocated) by the parent before clone3.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "child_setup.h"
#include "heddle/sandbox/sandbox_spec.h"

namespace heddle::sandbox::detail {

// A step of the new root as the parent plans it, owning its strings; ChildOp is its view.
struct SetupOp {
  OpKind kind = OpKind::kDir;
  std::string path;
  std::string target;  // kSymlink only
  bool is_file = false;
  bool writable = false;
  std::optional<PinnedObject> pin;  // kBind of a CheckedPath: the object it must still be
  friend bool operator==(const SetupOp&, const SetupOp&) = default;

  static SetupOp dir(std::string path) { return {OpKind::kDir, std::move(path), {}, false, false, {}}; }
  static SetupOp bind(std::string path, bool is_file, bool writable) {
    return {OpKind::kBind, std::move(path), {}, is_file, writable, {}};
  }
  static SetupOp checked_bind(const CheckedPath& checked);
  static SetupOp symlink(std::string target, std::string path) {
    return {OpKind::kSymlink, std::move(path), std::move(target), false, false, {}};
  }
  static SetupOp proc() { return {OpKind::kProc, "/proc", {}, false, false, {}}; }
};

// Orders the binds, links and /proc a sandbox asked for into the child's list: the binds'
// directories (parents first), the binds (parents first, each path once, none inside a bound
// directory of the same writability), the links as asked, /proc.
[[nodiscard]] std::vector<SetupOp> order_setup_ops(const std::vector<SetupOp>& requested);

class LaunchPlan {
 public:
  // Resolves and checks every path of `spec`; throws heddle::Error naming a bad one.
  explicit LaunchPlan(const SandboxSpec& spec);
  LaunchPlan(const LaunchPlan&) = delete;
  LaunchPlan& operator=(const LaunchPlan&) = delete;

  // Points into this object: it must outlive the clone.
  [[nodiscard]] ChildPlan child_plan(int sync_fd, int sync_write_fd, int report_fd) const;

  // The child's setup list, in the order it runs.
  [[nodiscard]] const std::vector<SetupOp>& ops() const noexcept { return ops_; }

  // Turns the child's failure report into a sentence with a hint.
  [[noreturn]] void throw_setup_failure(const SetupReport& report) const;

 private:
  void add_system_runtime();
  void add_bind(const std::string& host_path, bool writable = false);
  void add_op(SetupOp op);
  void freeze();

  const SandboxSpec& spec_;
  std::string executable_;
  std::vector<SetupOp> ops_;  // as asked until freeze(), then ordered
  std::vector<std::string> argv_;
  std::vector<std::string> env_;

  // Views handed to the child, built once every string above is in place.
  std::vector<ChildOp> child_ops_;
  std::vector<char*> argv_ptrs_;
  std::vector<char*> env_ptrs_;
  std::vector<sock_filter> seccomp_;
  sock_fprog seccomp_prog_{};
  int last_cap_ = 40;
};

}  // namespace heddle::sandbox::detail
