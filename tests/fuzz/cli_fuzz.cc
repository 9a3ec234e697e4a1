// libFuzzer target for the heddle-fuse-launcher argument parser (launcher/src/cli.cc): the
// input, split at NUL bytes, is argv after the program name. parse_cli() only parses, never
// runs a command; a UsageError is a fine answer, anything else (a crash, UB, a leak, another
// exception) is a bug. What parses must also satisfy the rules the parser enforces.
// Built by the `fuzz` preset; run by tests/fuzz/run.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "cli.h"

namespace {

using namespace heddle::launcher;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "cli_fuzz: %s\n", what);
  std::abort();
}

struct CheckParsed {
  void operator()(const MountArgs& mount) const {
    const bool git = !mount.repo_root.empty() || !mount.thread_id.empty();
    if (git == !mount.dir.empty()) fail("mount: not exactly one of --dir and the git source");
    if (git && (mount.repo_root.empty() || mount.thread_id.empty())) fail("mount: half a git source");
    if (!git && mount.cache_bytes) fail("mount: --cache-bytes without --repo-root");
    if (mount.cache_bytes && *mount.cache_bytes == 0) fail("mount: zero --cache-bytes");
    if (mount.mountpoint.empty()) fail("mount: no mountpoint");
  }
  void operator()(const SandboxExecArgs& exec) const {
    if (exec.command.empty()) fail("sandbox-exec: no command");
    if (!exec.dir.empty() && !exec.repo_root.empty()) fail("sandbox-exec: two sources");
  }
  void operator()(const StatusCommand& status) const {
    if (status.mountpoint.empty()) fail("status: no mountpoint");
  }
  void operator()(const UnmountCommand& unmount) const {
    if (unmount.mountpoint.empty()) fail("unmount: no mountpoint");
  }
  void operator()(const DropInArgs& dropin) const {
    if (dropin.repo_root.empty() || dropin.thread_id.empty() || dropin.mountpoint.empty()) {
      fail("heddle worker mode: a flag missing");
    }
    if (dropin.ipc_fd < 3) fail("heddle worker mode: --ipc-fd below 3");
  }
  void operator()(const auto&) const {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // "a\0b" is {"a", "b"}; an empty input is no arguments at all.
  std::vector<std::string> words;
  if (size > 0) {
    words.emplace_back();
    for (std::size_t i = 0; i < size; ++i) {
      if (data[i] == 0) {
        words.emplace_back();
      } else {
        words.back() += static_cast<char>(data[i]);
      }
    }
  }
  std::vector<char*> argv;
  for (std::string& word : words) argv.push_back(word.data());
  argv.push_back(nullptr);  // as a real argv ends; not part of the span

  try {
    const ParsedCli parsed = parse_cli(std::span<char*>(argv.data(), words.size()));
    std::visit(CheckParsed{}, parsed.command);
  } catch (const UsageError&) {
  }
  return 0;
}
