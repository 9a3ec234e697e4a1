// `sandbox-exec`: a command run in exactly the sandbox a worker for the same source would get,
// for debugging and for the escape tests.
#include <signal.h>

#include <iostream>

#include "commands.h"
#include "heddle/error.h"
#include "heddle/process.h"
#include "heddle/launcher/git_layout.h"
#include "heddle/sandbox/sandboxed_process.h"

namespace heddle::launcher {

int sandbox_exec_command(const SandboxExecArgs& args) {
  MountRequest request;
  if (!args.repo_root.empty()) {
    request.git = GitSource{canonical_source(args.repo_root, "repository"), ""};
  } else if (!args.dir.empty()) {
    request.source_dir = canonical_source(args.dir, "source directory");
  }
  request.uid = ::getuid();
  request.gid = ::getgid();
  sandbox::SandboxSpec spec = worker_sandbox(request, args.supervisor);
  const std::string& command = args.command.at(0);
  spec.executable = command.find('/') != std::string::npos ? command : find_on_path(command);
  if (spec.executable.empty()) {
    throw Error(command + " is not on PATH", ENOENT, "give its absolute path");
  }
  spec.argv = args.command;
  spec.hostname = "heddle-sandbox-exec";
  auto process = sandbox::SandboxedProcess::launch(spec);
  const sandbox::ExitStatus status = process.reap();
  return status.signaled ? 128 + status.signal : status.code;
}

}  // namespace heddle::launcher
