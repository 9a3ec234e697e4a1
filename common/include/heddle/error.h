// The one error type: what failed, the errno it failed with, and what a person can do about it.
#pragma once

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace heddle {

class Error : public std::runtime_error {
 public:
  // `what` says what was attempted ("open /dev/fuse"); `code` is an errno value or 0;
  // `hint` is an action the reader can take, or empty.
  Error(std::string what, int code, std::string hint = {})
      : std::runtime_error(format(what, code, hint)),
        attempt_(std::move(what)),
        code_(code),
        hint_(std::move(hint)) {}

  [[nodiscard]] int code() const noexcept { return code_; }
  [[nodiscard]] const std::string& attempt() const noexcept { return attempt_; }
  [[nodiscard]] const std::string& hint() const noexcept { return hint_; }

  // The same failure with one more thing the reader can do.
  [[nodiscard]] Error with_hint(const std::string& more) const {
    return Error(attempt_, code_, hint_.empty() ? more : hint_ + "; " + more);
  }

 private:
  static std::string format(const std::string& what, int code, const std::string& hint) {
    std::string out = what;
    if (code != 0) {
      const char* name = ::strerrorname_np(code);
      out += ": ";
      out += std::strerror(code);
      if (name != nullptr) {
        out += " (";
        out += name;
        out += ")";
      }
    }
    if (!hint.empty()) {
      out += "; hint: ";
      out += hint;
    }
    return out;
  }

  std::string attempt_;
  int code_;
  std::string hint_;
};

// Throws an Error carrying the current errno.
[[noreturn]] inline void throw_errno(std::string what, std::string hint = {}) {
  throw Error(std::move(what), errno, std::move(hint));
}

}  // namespace heddle
