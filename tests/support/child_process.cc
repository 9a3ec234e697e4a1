#include "support/child_process.h"

namespace heddle::test {

CommandResult run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  return run_process(argv, {}, timeout);
}

}  // namespace heddle::test
