// `sandbox-exec`: a command run in exactly the sandbox a worker for the same source would get,
// for debugging and for the escape tests.
#include <signal.h>

#include <iostream>

#include "commands.h"
#include "heddle/error.h"
#include "heddle/process.h"
#include "heddle/launcher/source_kinds.h"
#include "heddle/sandbox/sandboxed_process.h"

namespace heddle::launcher {

int sandbox_exec_command(const SandboxExecArgs& args, const LauncherEnvironment& env) {
  ipc::MountSpec mount;
  mount.uid = ::getuid();
  mount.gid = ::getgid();
  // No source: DirSource{""}, which binds nothing.
  if (!args.repo_root.empty()) {
    mount.source = canonical(ipc::GitSource{args.repo_root, ""}, mount.uid, mount.gid);
  } else if (!args.dir.empty()) {
    mount.source = canonical(ipc::DirSource{args.dir}, mount.uid, mount.gid);
  }
  mount.sandbox = args.sandbox;
  sandbox::SandboxSpec spec = worker_sandbox(mount, env.supervisor_options());
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
