// The one error type: what failed, the errno it failed with, what a person can do about it,
// and the kind of failure for callers that react to it (never to the message's text).
#pragma once

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace heddle {

// Only the kinds some caller branches on; everything else is kOther.
enum class ErrorKind {
  kOther,
  kConnect,  // connecting to a socket failed (nothing listens, or no socket there)
  kClone,    // creating the sandboxed process (clone3/clone with its namespaces) failed
};

class Error : public std::runtime_error {
 public:
  // `what` says what was attempted ("open /dev/fuse"); `code` is an errno value or 0;
  // `hint` is an action the reader can take, or empty.
  Error(std::string what, int code, std::string hint = {})
      : Error(ErrorKind::kOther, std::move(what), code, std::move(hint)) {}
  Error(ErrorKind kind, std::string what, int code, std::string hint = {})
      : std::runtime_error(format(describe(what, code), hint)),
        kind_(kind),
        attempt_(std::move(what)),
        code_(code),
        hint_(std::move(hint)) {}

  [[nodiscard]] ErrorKind kind() const noexcept { return kind_; }
  [[nodiscard]] int code() const noexcept { return code_; }
  [[nodiscard]] const std::string& attempt() const noexcept { return attempt_; }
  [[nodiscard]] const std::string& hint() const noexcept { return hint_; }
  // what() without the hint: the attempt and the errno.
  [[nodiscard]] std::string message() const { return describe(attempt_, code_); }

  // The same failure with one more thing the reader can do.
  [[nodiscard]] Error with_hint(const std::string& more) const {
    return Error(kind_, attempt_, code_, hint_.empty() ? more : hint_ + "; " + more);
  }

 private:
  static std::string describe(const std::string& what, int code) {
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
    return out;
  }
  static std::string format(std::string message, const std::string& hint) {
    if (!hint.empty()) {
      message += "; hint: ";
      message += hint;
    }
    return message;
  }

  ErrorKind kind_;
  std::string attempt_;
  int code_;
  std::string hint_;
};

// Throws an Error carrying the current errno.
[[noreturn]] inline void throw_errno(std::string what, std::string hint = {}) {
  throw Error(std::move(what), errno, std::move(hint));
}

}  // namespace heddle
