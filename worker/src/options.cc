#include "options.h"

#include <charconv>
#include <optional>
#include <string_view>

namespace heddle::worker {
namespace {

std::optional<int> parse_fd(std::string_view text) {
  int value = -1;
  const char* const end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc{} || ptr != end || value < 0) return std::nullopt;
  return value;
}

}  // namespace

std::string usage_text() {
  return "usage: heddle-fuse-worker --dir SOURCE --mountpoint MP --bootstrap-fd N "
         "[--test-ignore-stop] [--expect-sandbox]\n"
         "       heddle-fuse-worker --help\n"
         "\n"
         "Serves a read-only view of SOURCE over a FUSE connection already mounted at MP.\n"
         "Started by heddle-fuse-launcher; not meant to be run by hand.\n"
         "\n"
         "  --dir SOURCE        directory to serve (read-only)\n"
         "  --mountpoint MP     where the supervisor mounted the connection (reported back)\n"
         "  --bootstrap-fd N    socket delivering [ipc socket, /dev/fuse fd] + host pid\n"
         "  --test-ignore-stop  tests only: ignore Stop requests and SIGTERM\n"
         "  --expect-sandbox    refuse to serve while holding any capability or without\n"
         "                      no_new_privs (the launcher always passes it)\n"
         "  --help              show this text\n"
         "\n"
         "Environment: HEDDLE_FUSE_LOG=trace|debug|info|warn|error|critical|off (default info)\n";
}

ParsedArgs parse_args(std::span<const char* const> args) {
  Options options;
  bool have_dir = false;
  bool have_mountpoint = false;
  bool have_fd = false;

  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "--help" || arg == "-h") return HelpRequested{};
    if (arg == "--test-ignore-stop") {
      options.test_ignore_stop = true;
      continue;
    }
    if (arg == "--expect-sandbox") {
      options.expect_sandbox = true;
      continue;
    }

    // Flags with a value, as `--flag VALUE` or `--flag=VALUE`.
    std::string_view flag = arg;
    std::optional<std::string_view> value;
    if (const auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      flag = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    }
    bool* seen = nullptr;
    if (flag == "--dir") {
      seen = &have_dir;
    } else if (flag == "--mountpoint") {
      seen = &have_mountpoint;
    } else if (flag == "--bootstrap-fd") {
      seen = &have_fd;
    } else {
      return UsageError{"unknown argument '" + std::string(arg) + "'"};
    }
    if (!value) {
      if (i + 1 >= args.size()) return UsageError{std::string(flag) + " needs a value"};
      value = args[++i];
    }
    if (*seen) return UsageError{std::string(flag) + " given more than once"};
    *seen = true;
    if (value->empty()) return UsageError{std::string(flag) + " needs a non-empty value"};

    if (flag == "--dir") {
      options.dir = std::string(*value);
    } else if (flag == "--mountpoint") {
      options.mountpoint = std::string(*value);
    } else {
      const auto fd = parse_fd(*value);
      if (!fd) {
        return UsageError{"--bootstrap-fd needs a non-negative integer, got '" +
                          std::string(*value) + "'"};
      }
      options.bootstrap_fd = *fd;
    }
  }

  if (!have_dir) return UsageError{"missing --dir SOURCE"};
  if (!have_mountpoint) return UsageError{"missing --mountpoint MP"};
  if (!have_fd) return UsageError{"missing --bootstrap-fd N"};
  return options;
}

}  // namespace heddle::worker
