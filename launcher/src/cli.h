#pragma once

namespace heddle::launcher {

// Parses argv and runs the command: 0 success, 1 failure, 2 usage error.
int run_cli(int argc, char** argv);

}  // namespace heddle::launcher
