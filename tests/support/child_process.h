// Running our binaries as a user would: argv in, exit code and output out, always bounded.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "heddle/process.h"

namespace heddle::test {

using CommandResult = ProcessResult;
// Its stdout and stderr piped to us; the destructor SIGKILLs and reaps it if still running.
using ChildProcess = Process;

// Runs argv to completion (bounded by `timeout`).
CommandResult run_command(const std::vector<std::string>& argv,
                          std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace heddle::test
