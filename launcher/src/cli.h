#pragma once

#include <span>
#include <string>
#include <variant>

#include "commands.h"

namespace heddle::launcher {

// The commands without arguments of their own beyond these fields; mount, sandbox-exec and
// overlay parse into MountArgs, SandboxExecArgs and OverlayCommand (commands.h).
struct HelpCommand {};
struct VersionCommand {};
struct StatusCommand {
  std::string mountpoint;
  bool json = false;
};
struct UnmountCommand {
  std::string mountpoint;
};
struct DoctorCommand {
  bool json = false;
};
struct ListCommand {
  bool json = false;
};
struct DemoCommand {};

using ParsedCommand =
    std::variant<HelpCommand, VersionCommand, MountArgs, StatusCommand, UnmountCommand,
                 ListCommand, DoctorCommand, SandboxExecArgs, DemoCommand, DropInArgs,
                 OverlayCommand, CaptureArgs, RestartCommand>;

struct ParsedCli {
  ParsedCommand command;
  int verbosity = 0;  // +1 per -v, -1 per -q
};

// Parses the arguments after the program name into a command, without running it or touching
// anything but the user and group databases (--uid/--gid names). Throws UsageError.
// heddle's worker argv (no command, only --repo-root, --thread-id, --mountpoint and
// --ipc-fd) parses into DropInArgs.
[[nodiscard]] ParsedCli parse_cli(std::span<char*> args);

// Parses argv and runs the command: 0 success, 1 failure, 2 usage error.
int run_cli(int argc, char** argv, LauncherEnvironment env);

}  // namespace heddle::launcher
