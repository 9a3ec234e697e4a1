// `overlay list | show | discard`: what writable mounts changed, and dropping it.
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <utility>

#include "cli_output.h"
#include "commands.h"
#include "heddle/error.h"
#include "heddle/launcher/control_socket.h"
#include "heddle/launcher/mountinfo.h"
#include "heddle/launcher/overlay_dir.h"

namespace heddle::launcher {
namespace fs = std::filesystem;
namespace {

using Json = nlohmann::ordered_json;

std::string dump(const Json& json) { return json_output(json); }

// One path per line: a name with a backslash, a quote, a control character or bytes that are
// not UTF-8 is quoted, '"' and '\\' escaped, the rest as escape_text() shows it.
std::string quoted(const std::string& path) {
  const std::string escaped = escape_text(path);
  if (escaped == path && path.find_first_of("\"\\") == std::string::npos) return path;
  std::string out = "\"";
  std::size_t start = 0;
  for (std::size_t special; (special = path.find_first_of("\"\\", start)) != std::string::npos;
       start = special + 1) {
    append_escaped(out, std::string_view(path).substr(start, special - start));
    out += '\\';
    out += path[special];
  }
  append_escaped(out, std::string_view(path).substr(start));
  return out + "\"";
}

bool is_overlay_dir(const std::string& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && (fs::exists(dir + "/" + kOverlaySourceFile, ec) ||
                                       fs::is_directory(dir + "/" + kOverlayUpperDir, ec));
}

std::vector<std::string> default_overlays(const UserDirs& dirs) {
  std::vector<std::string> overlays;
  std::error_code ec;
  const std::string root = overlays_root(dirs);
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    if (entry.is_directory(ec) && !entry.is_symlink(ec)) overlays.push_back(entry.path().string());
  }
  if (ec && ec != std::errc::no_such_file_or_directory) throw Error("list " + root, ec.value());
  std::sort(overlays.begin(), overlays.end());
  return overlays;
}

// The overlay of the live mount at `mountpoint`, if a supervisor of ours answers there.
std::optional<std::string> live_mount_overlay(const UserDirs& dirs,
                                              const std::string& mountpoint) {
  const auto top = top_mount_at(mountpoint);
  if (!top || top->fstype != kFuseType) return std::nullopt;
  ipc::Message reply;
  try {
    reply = control_request(dirs, mountpoint, ipc::Status{}, std::chrono::seconds(10));
  } catch (const Error&) {
    return std::nullopt;  // no supervisor: look for the overlay by its lock instead
  }
  const auto* status = std::get_if<ipc::StatusOk>(&reply);
  if (status == nullptr) return std::nullopt;
  if (!status->extra.contains("overlay") || !status->extra["overlay"].is_string()) {
    throw Error("the mount at " + mountpoint + " is read-only: it has no overlay", EINVAL);
  }
  return status->extra["overlay"].get<std::string>();
}

// A mountpoint (live, or the last one an overlay's lock names), a KEY, or an overlay directory.
std::string resolve_overlay(const UserDirs& dirs, const std::string& target) {
  std::string mountpoint;
  try {
    mountpoint = canonical_mountpoint(target);
  } catch (const Error&) {
  }
  if (!mountpoint.empty()) {
    if (auto dir = live_mount_overlay(dirs, mountpoint)) return *dir;
  }
  if (target.find('/') == std::string::npos && target != "." && target != "..") {
    const std::string dir = overlays_root(dirs) + "/" + target;
    if (is_overlay_dir(dir)) return dir;
  }
  std::error_code ec;
  if (const fs::path dir = fs::canonical(target, ec); !ec && is_overlay_dir(dir.string())) {
    return dir.string();
  }
  if (!mountpoint.empty()) {
    std::vector<std::string> named;
    for (const std::string& dir : default_overlays(dirs)) {
      if (overlay_last_mountpoint(dir) == mountpoint) named.push_back(dir);
    }
    if (named.size() == 1) return named.front();
    if (named.size() > 1) {
      std::string keys;
      for (const std::string& dir : named) {
        keys += ' ';
        keys += fs::path(dir).filename().string();
      }
      throw Error("several overlays were last mounted at " + mountpoint, EINVAL,
                  "name one by its KEY:" + keys);
    }
  }
  throw Error("no overlay for " + target, ENOENT,
              "`heddle-fuse-launcher overlay list` shows the overlays and their KEYs; one made "
              "with --overlay-dir is named by its directory");
}

std::optional<std::string> holder_or_null(const std::string& dir) {
  try {
    return overlay_holder(dir);
  } catch (const Error&) {
    return std::nullopt;
  }
}

Json describe(const std::string& dir) {
  Json entry;
  entry["key"] = fs::path(dir).filename().string();
  entry["dir"] = dir;
  const auto source = read_overlay_source(dir);
  entry["source"] = source ? Json(source->source) : nullptr;
  entry["thread"] = source && source->git() ? Json(source->thread) : nullptr;
  entry["kind"] = !source ? Json(nullptr) : Json(source->git() ? "git" : "dir");
  const auto holder = holder_or_null(dir);
  entry["mounted_at"] = holder ? Json(*holder) : nullptr;
  entry["last_mountpoint"] = overlay_last_mountpoint(dir);
  try {
    const OverlayUsage usage = overlay_usage(dir);
    entry["bytes"] = usage.bytes;
    entry["files"] = usage.files;
  } catch (const Error& e) {
    entry["error"] = e.what();
  }
  return entry;
}

int list_overlays(const UserDirs& dirs, bool json) {
  Json entries = Json::array();
  for (const std::string& dir : default_overlays(dirs)) entries.push_back(describe(dir));
  if (json) {
    std::cout << dump(entries) << "\n";
    return 0;
  }
  if (entries.empty()) {
    std::cout << "no overlays in " << overlays_root(dirs) << "\n";
    return 0;
  }
  std::printf("%-40s %-32s %-16s %-24s %10s %7s\n", "KEY", "SOURCE", "THREAD", "MOUNTED AT", "SIZE",
              "FILES");
  for (const Json& entry : entries) {
    const auto text = [](const Json& value) {
      return value.is_string() ? quoted(value.get<std::string>()) : std::string("-");
    };
    const bool sized = entry.contains("bytes");
    std::printf("%-40s %-32s %-16s %-24s %10s %7s\n", text(entry["key"]).c_str(),
                text(entry["source"]).c_str(), text(entry["thread"]).c_str(),
                text(entry["mounted_at"]).c_str(),
                sized ? format_bytes(entry["bytes"].get<std::uint64_t>()).c_str() : "?",
                sized ? std::to_string(entry["files"].get<std::uint64_t>()).c_str() : "?");
  }
  std::fflush(stdout);
  return 0;
}

int show_overlay(const UserDirs& dirs, const std::string& target, bool json) {
  const std::string dir = resolve_overlay(dirs, target);
  const OverlayChanges changes = overlay_changes(dir);
  if (json) {
    Json body = describe(dir);
    body["added"] = changes.added;
    body["modified"] = changes.modified;
    body["deleted"] = changes.deleted;
    body["replaced"] = changes.replaced;
    std::cout << dump(body) << "\n";
    return 0;
  }
  std::vector<std::pair<std::string, char>> lines;
  for (const auto& [list, letter] : {std::pair{&changes.added, 'A'}, {&changes.modified, 'M'},
                                     {&changes.deleted, 'D'}, {&changes.replaced, 'R'}}) {
    for (const std::string& path : *list) lines.emplace_back(path, letter);
  }
  std::sort(lines.begin(), lines.end());
  const auto source = read_overlay_source(dir);
  std::cout << "overlay " << quoted(dir);
  if (source) {
    std::cout << " of " << quoted(source->source + (source->git() ? "#" + source->thread : ""));
  }
  std::cout << (lines.empty() ? ": no changes\n" : "\n");
  for (const auto& [path, letter] : lines) std::cout << letter << ' ' << quoted(path) << '\n';
  return 0;
}

int discard(const UserDirs& dirs, const std::string& target) {
  const std::string dir = resolve_overlay(dirs, target);
  discard_overlay(dir);
  std::cout << "discarded " << quoted(dir) << "\n";
  return 0;
}

}  // namespace

std::string format_bytes(std::uint64_t bytes) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  if (unit == 0) {
    std::snprintf(text, sizeof text, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(text, sizeof text, "%.1f %s", value, kUnits[unit]);
  }
  return text;
}

int overlay_command(const OverlayCommand& command, const UserDirs& dirs) {
  switch (command.action) {
    case OverlayCommand::Action::kList:
      return list_overlays(dirs, command.json);
    case OverlayCommand::Action::kShow:
      return show_overlay(dirs, command.target, command.json);
    case OverlayCommand::Action::kDiscard:
      return discard(dirs, command.target);
  }
  return 1;
}

}  // namespace heddle::launcher
