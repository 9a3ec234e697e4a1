// Relays a child's stdout and stderr, line by line, into our log with a prefix, so the
// worker's messages land in the supervisor's log (file or journal) with its level kept.
#pragma once

#include <spdlog/logger.h>

#include <string>
#include <thread>

#include "heddle/unique_fd.h"

namespace heddle::launcher {

class OutputRelay {
 public:
  // Creates the pipe; hand write_fd() to the child, then call start().
  OutputRelay();
  OutputRelay(const OutputRelay&) = delete;
  OutputRelay& operator=(const OutputRelay&) = delete;
  // Logs what is still buffered, then stops, even if a copy of the write end lives on.
  ~OutputRelay();

  [[nodiscard]] int write_fd() const noexcept { return write_end_.get(); }
  // Closes our copy of the write end and logs each line as "PREFIX: line".
  void start(std::string prefix);

 private:
  void relay(spdlog::logger& logger, const std::string& prefix);

  UniqueFd read_end_;
  UniqueFd write_end_;
  UniqueFd stop_;  // eventfd: the owner is done; drain and leave
  std::thread thread_;
};

}  // namespace heddle::launcher
