// One file's whole content for tests that need no launcher (test_support.h includes it too).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "heddle/error.h"
#include "heddle/unique_fd.h"

namespace heddle::test {

// Read with read(2), so that a mount's errors surface as they are; throws heddle::Error.
inline std::string read_file(const std::filesystem::path& path) {
  const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path.string());
  std::string out;
  char buffer[64 * 1024];
  for (ssize_t n; (n = ::read(fd.get(), buffer, sizeof buffer)) != 0;) {
    if (n < 0) throw_errno("read " + path.string());
    out.append(buffer, static_cast<std::size_t>(n));
  }
  return out;
}

}  // namespace heddle::test
