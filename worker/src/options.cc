#include "options.h"

#include <charconv>
#include <optional>
#include <set>
#include <string_view>

namespace heddle::worker {
namespace {

template <typename T>
std::optional<T> parse_number(std::string_view text) {
  T value{};
  const char* const end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc{} || ptr != end) return std::nullopt;
  return value;
}

// "UID:GID", both numeric.
bool parse_owner(std::string_view text, Options& options) {
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) return false;
  const auto uid = parse_number<uid_t>(text.substr(0, colon));
  const auto gid = parse_number<gid_t>(text.substr(colon + 1));
  if (!uid || !gid) return false;
  options.owner_uid = *uid;
  options.owner_gid = *gid;
  return true;
}

// Stores `value` for `flag`; an error message, or empty on success.
std::string apply(std::string_view flag, std::string_view value, Options& options) {
  if (flag == "--dir") {
    options.dir = value;
  } else if (flag == "--repo-root") {
    options.repo_root = value;
  } else if (flag == "--thread-id") {
    options.thread_id = value;
  } else if (flag == "--mountpoint") {
    options.mountpoint = value;
  } else if (flag == "--bootstrap-fd") {
    const auto fd = parse_number<int>(value);
    if (!fd || *fd < 0) return "--bootstrap-fd needs a non-negative integer";
    options.bootstrap_fd = *fd;
  } else if (flag == "--cache-bytes") {
    const auto bytes = parse_number<std::uint64_t>(value);
    if (!bytes || *bytes == 0) return "--cache-bytes needs a positive integer";
    options.cache_bytes = *bytes;
  } else if (flag == "--overlay") {
    options.overlay_dir = value;
  } else if (flag == "--owner") {
    if (!parse_owner(value, options)) return "--owner needs UID:GID";
  }
  return {};
}

const std::set<std::string_view> kValueFlags = {"--dir",        "--repo-root",    "--thread-id",
                                                "--mountpoint", "--bootstrap-fd", "--cache-bytes",
                                                "--owner",      "--overlay"};

}  // namespace

std::string usage_text() {
  return "usage: heddle-fuse-worker (--dir SOURCE | --repo-root REPO --thread-id THREAD\n"
         "                           [--cache-bytes N]) --mountpoint MP --bootstrap-fd N\n"
         "                          [--owner UID:GID] [--overlay DIR] [--test-ignore-stop]\n"
         "                          [--expect-sandbox[=degraded]]\n"
         "       heddle-fuse-worker --help\n"
         "\n"
         "Serves a directory, or a git thread's tree, over a FUSE connection already mounted\n"
         "at MP: read-only, or writable through an overlay kept on disk in DIR. Started by\n"
         "heddle-fuse-launcher; not meant to be run by hand.\n"
         "\n"
         "  --dir SOURCE        directory to serve (read-only)\n"
         "  --repo-root REPO    git repository (work tree or bare) whose thread to serve\n"
         "  --thread-id THREAD  refs/heads/THREAD, refs/heddle/threads/THREAD, or a revision\n"
         "  --cache-bytes N     cap of the inflated-blob cache (default 268435456); larger\n"
         "                      blobs stream\n"
         "  --owner UID:GID     owner reported for every node of a git tree or an overlay\n"
         "                      (default 0:0)\n"
         "  --overlay DIR       serve read-write: changes go to DIR/upper (copy-on-write,\n"
         "                      whiteouts), DIR/work holds temporaries; the source is never\n"
         "                      written\n"
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
  std::set<std::string_view> seen;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "--help" || arg == "-h") return HelpRequested{};
    if (arg == "--test-ignore-stop") {
      options.test_ignore_stop = true;
      continue;
    }
    if (arg == "--expect-sandbox" || arg == "--expect-sandbox=degraded") {
      options.expect_sandbox = true;
      options.degraded_sandbox = arg.ends_with("=degraded");
      continue;
    }
    // Flags with a value, as `--flag VALUE` or `--flag=VALUE`.
    std::string_view flag = arg;
    std::optional<std::string_view> value;
    if (const auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      flag = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    }
    if (!kValueFlags.contains(flag)) return UsageError{"unknown argument '" + std::string(arg) + "'"};
    if (!value) {
      if (i + 1 >= args.size()) return UsageError{std::string(flag) + " needs a value"};
      value = args[++i];
    }
    if (!seen.insert(flag).second) return UsageError{std::string(flag) + " given more than once"};
    if (value->empty()) return UsageError{std::string(flag) + " needs a non-empty value"};
    if (const std::string error = apply(flag, *value, options); !error.empty()) {
      return UsageError{error + ", got '" + std::string(*value) + "'"};
    }
  }

  const bool dir = seen.contains("--dir");
  const bool git = seen.contains("--repo-root") || seen.contains("--thread-id");
  if (dir && git) return UsageError{"--dir and --repo-root/--thread-id exclude each other"};
  if (!dir && !git) return UsageError{"missing --dir SOURCE or --repo-root REPO --thread-id T"};
  if (git && !seen.contains("--repo-root")) return UsageError{"missing --repo-root REPO"};
  if (git && !seen.contains("--thread-id")) return UsageError{"missing --thread-id THREAD"};
  if (dir && seen.contains("--cache-bytes")) return UsageError{"--cache-bytes needs a git backend"};
  if (!seen.contains("--mountpoint")) return UsageError{"missing --mountpoint MP"};
  if (!seen.contains("--bootstrap-fd")) return UsageError{"missing --bootstrap-fd N"};
  return options;
}

}  // namespace heddle::worker
