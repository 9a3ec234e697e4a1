// Everything the child needs, prepared (and allocated) by the parent before clone3.
#pragma once

#include <string>
#include <vector>

#include "child_setup.h"
#include "heddle/sandbox/sandbox_spec.h"

namespace heddle::sandbox::detail {

class LaunchPlan {
 public:
  // Resolves and checks every path of `spec`; throws heddle::Error naming a bad one.
  explicit LaunchPlan(const SandboxSpec& spec);
  LaunchPlan(const LaunchPlan&) = delete;
  LaunchPlan& operator=(const LaunchPlan&) = delete;

  // Points into this object: it must outlive the clone.
  [[nodiscard]] ChildPlan child_plan(int sync_fd, int sync_write_fd, int report_fd) const;

  // Turns the child's failure report into a sentence with a hint.
  [[noreturn]] void throw_setup_failure(const SetupReport& report) const;

 private:
  void add_system_runtime();
  void add_bind(const std::string& host_path, bool writable = false);
  void freeze();

  const SandboxSpec& spec_;
  std::string executable_;
  std::vector<std::string> dirs_;
  std::vector<std::string> bind_paths_;  // host paths, bound at the same path inside
  std::vector<bool> bind_is_file_;
  std::vector<bool> bind_writable_;
  std::vector<std::string> link_targets_;
  std::vector<std::string> link_paths_;
  std::vector<std::string> argv_;
  std::vector<std::string> env_;

  // Views handed to the child, built once every string above is in place.
  std::vector<const char*> dir_ptrs_;
  std::vector<ChildBind> binds_;
  std::vector<ChildLink> links_;
  std::vector<char*> argv_ptrs_;
  std::vector<char*> env_ptrs_;
  std::vector<sock_filter> seccomp_;
  sock_fprog seccomp_prog_{};
  int last_cap_ = 40;
};

}  // namespace heddle::sandbox::detail
