#include "options.h"

#include <charconv>
#include <optional>
#include <string_view>

namespace heddle::worker {

std::string usage_text() {
  return "usage: heddle-fuse-worker --bootstrap-fd N\n"
         "       heddle-fuse-worker --help\n"
         "\n"
         "Serves a directory, or a git thread's tree, over a FUSE connection the supervisor\n"
         "already mounted: read-only, or writable through an overlay kept on disk. Started\n"
         "by heddle-fuse-launcher; not meant to be run by hand.\n"
         "\n"
         "  --bootstrap-fd N    socket delivering [ipc socket, /dev/fuse fd] and one JSON\n"
         "                      document: the host pid and what to serve where (the source,\n"
         "                      mountpoint, owner, sandbox mode and overlay directory)\n"
         "  --help              show this text\n"
         "\n"
         "Environment: HEDDLE_FUSE_LOG=trace|debug|info|warn|error|critical|off (default info)\n";
}

ParsedArgs parse_args(std::span<const char* const> args) {
  std::optional<int> fd;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "--help" || arg == "-h") return HelpRequested{};
    std::string_view value;
    if (arg == "--bootstrap-fd") {
      if (i + 1 >= args.size()) return UsageError{"--bootstrap-fd needs a value"};
      value = args[++i];
    } else if (arg.starts_with("--bootstrap-fd=")) {
      value = arg.substr(arg.find('=') + 1);
    } else {
      return UsageError{"unknown argument '" + std::string(arg) + "'"};
    }
    if (fd) return UsageError{"--bootstrap-fd given more than once"};
    int parsed = -1;
    const char* const end = value.data() + value.size();
    const auto [ptr, ec] = std::from_chars(value.data(), end, parsed);
    if (value.empty() || ec != std::errc{} || ptr != end || parsed < 0) {
      return UsageError{"--bootstrap-fd needs a non-negative integer, got '" + std::string(value) +
                        "'"};
    }
    fd = parsed;
  }
  if (!fd) return UsageError{"missing --bootstrap-fd N"};
  return Options{*fd};
}

}  // namespace heddle::worker
