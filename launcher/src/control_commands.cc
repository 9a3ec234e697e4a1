#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <thread>

#include "cli_output.h"
#include "commands.h"
#include "heddle/error.h"
#include "heddle/launcher/control_socket.h"
#include "heddle/launcher/fuse_mount.h"
#include "heddle/launcher/mountinfo.h"
#include "heddle/launcher/overlay_dir.h"

namespace heddle::launcher {
namespace {

bool heddle_mount_at(const std::string& mountpoint) {
  const auto top = top_mount_at(mountpoint);
  return top && top->fstype == kFuseType;
}

[[noreturn]] void throw_reply_error(const ipc::Message& reply) {
  if (const auto* error = std::get_if<ipc::MountError>(&reply)) throw Error(error->message, 0);
  throw Error("unexpected reply " + std::string(ipc::kind_of(reply)) + " from the supervisor",
              EPROTO);
}

std::string format_uptime(long long ms) {
  const long long s = ms / 1000;
  char text[32];
  if (s < 60) {
    std::snprintf(text, sizeof text, "%llds", s);
  } else if (s < 3600) {
    std::snprintf(text, sizeof text, "%lldm%02llds", s / 60, s % 60);
  } else {
    std::snprintf(text, sizeof text, "%lldh%02lldm", s / 3600, s / 60 % 60);
  }
  return text;
}

// A writable mount's overlay size and file count, walked here rather than in the supervisor,
// whose control loop a large overlay would otherwise hold up.
void add_overlay_usage(nlohmann::ordered_json& extra) {
  if (!extra.contains("overlay") || !extra["overlay"].is_string()) return;
  try {
    const OverlayUsage usage = overlay_usage(extra["overlay"].get<std::string>());
    extra["overlay_bytes"] = usage.bytes;
    extra["overlay_files"] = usage.files;
  } catch (const Error& e) {
    extra["overlay_error"] = e.what();
  }
}

using Json = nlohmann::ordered_json;

bool is_string(const Json& value) { return value.is_string(); }
bool is_string_or_null(const Json& value) { return value.is_string() || value.is_null(); }
bool is_bool(const Json& value) { return value.is_boolean(); }
bool is_count(const Json& value) {
  return value.is_number_unsigned() || (value.is_number_integer() && value.get<long long>() >= 0);
}

// A Status field `list` shows, `fallback` if absent. A reply with a field of the wrong type
// makes its own row an error, never the whole listing.
Json field_of(const Json& extra, const char* key, Json fallback, bool (*valid)(const Json&),
              const char* expected) {
  const auto it = extra.find(key);
  if (it == extra.end()) return fallback;
  if (!valid(*it)) {
    throw Error(std::string("the Status reply's \"") + key + "\" is a " + it->type_name() +
                    ", expected " + expected,
                EPROTO);
  }
  return *it;
}

// A string as `list` and `status` print it: escaped; "-" for null.
std::string text_of(const Json& value) {
  if (value.is_null()) return "-";
  return escape_text(value.is_string() ? value.get_ref<const std::string&>()
                                       : json_output(value));
}

// One row of `list`: the supervisor's Status reply, or why there is none.
Json list_entry(const std::string& socket) {
  Json entry;
  try {
    const ipc::Message reply = control_request_at(socket, ipc::Status{}, std::chrono::seconds(3));
    const auto* status = std::get_if<ipc::StatusOk>(&reply);
    if (status == nullptr) throw_reply_error(reply);
    Json extra = status->extra;
    add_overlay_usage(extra);
    entry["mountpoint"] = status->mount_path;
    entry["source"] = field_of(extra, "source", "", is_string, "a string");
    entry["thread"] = field_of(extra, "thread", nullptr, is_string_or_null, "a string");
    entry["worker_pid"] = status->pid;
    entry["supervisor_pid"] = field_of(extra, "supervisor_pid", 0, is_count, "a pid");
    entry["guard_pid"] = field_of(extra, "guard_pid", 0, is_count, "a pid");
    entry["uptime_ms"] = field_of(extra, "uptime_ms", 0, is_count, "a count");
    entry["generation"] = field_of(extra, "generation", 1, is_count, "a count");
    entry["restarts"] = field_of(extra, "restarts", 0, is_count, "a count");
    entry["writable"] = field_of(extra, "writable", false, is_bool, "a bool");
    entry["overlay"] = field_of(extra, "overlay", nullptr, is_string_or_null, "a string");
    entry["commit"] = field_of(extra, "commit", nullptr, is_string_or_null, "a string");
    entry["follow"] = field_of(extra, "follow", nullptr, is_string_or_null, "a string");
    for (const char* key : {"overlay_bytes", "overlay_files"}) {
      if (extra.contains(key)) entry[key] = field_of(extra, key, 0, is_count, "a count");
    }
    if (extra.contains("overlay_error")) {
      entry["overlay_error"] = field_of(extra, "overlay_error", "", is_string, "a string");
    }
    if (entry.contains("overlay_bytes") != entry.contains("overlay_files")) {
      throw Error("the Status reply has only one of overlay_bytes and overlay_files", EPROTO);
    }
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kConnect && e.code() == ECONNREFUSED) {
      // Its supervisor died without removing it (SIGKILL; the guard removes the mount).
      if (remove_stale_control_socket(socket)) {
        spdlog::debug("removed stale control socket {}", socket);
      }
      return nullptr;
    }
    entry = Json{{"socket", socket}, {"error", e.what()}};
  } catch (const std::exception& e) {
    // Not expected after the checks above; still, one bad row must not cost the others.
    entry = Json{{"socket", socket}, {"error", e.what()}};
  }
  return entry;
}

}  // namespace

int list_command(bool json, const UserDirs& dirs) {
  auto entries = Json::array();
  for (const std::string& socket : control_sockets(dirs)) {
    if (auto entry = list_entry(socket); !entry.is_null()) entries.push_back(std::move(entry));
  }
  if (json) {
    std::cout << json_output(entries) << "\n";
    return 0;
  }
  if (entries.empty()) {
    std::cout << "no heddle mounts\n";
    return 0;
  }
  std::printf("%-32s %-32s %-16s %-12s %-7s %4s %8s %4s %8s %10s %8s %8s  %s\n", "MOUNTPOINT",
              "SOURCE", "THREAD", "COMMIT", "FOLLOW", "MODE", "WORKER", "GEN", "RESTARTS",
              "SUPERVISOR", "GUARD", "UPTIME", "OVERLAY");
  for (const auto& entry : entries) {
    if (entry.contains("error")) {
      std::printf("%-32s (not answering: %s)\n", text_of(entry["socket"]).c_str(),
                  text_of(entry["error"]).c_str());
      continue;
    }
    std::string overlay = "-";
    if (entry.contains("overlay_bytes")) {
      overlay = format_bytes(entry["overlay_bytes"].get<std::uint64_t>()) + " in " +
                std::to_string(entry["overlay_files"].get<std::uint64_t>()) + " files";
    } else if (entry.contains("overlay_error")) {
      overlay = "? (" + text_of(entry["overlay_error"]) + ")";
    }
    // The commit abbreviated as git does; "follows", "pinned", or "no" (the reason is in status).
    const std::string commit = text_of(entry["commit"]).substr(0, 12);
    std::string follow = text_of(entry["follow"]);
    if (follow.starts_with("no")) follow = "no";
    std::printf("%-32s %-32s %-16s %-12s %-7s %4s %8d %4llu %8llu %10d %8d %8s  %s\n",
                text_of(entry["mountpoint"]).c_str(), text_of(entry["source"]).c_str(),
                text_of(entry["thread"]).c_str(), commit.c_str(), follow.c_str(),
                entry["writable"].get<bool>() ? "rw" : "ro", entry["worker_pid"].get<int>(),
                entry["generation"].get<unsigned long long>(),
                entry["restarts"].get<unsigned long long>(), entry["supervisor_pid"].get<int>(), entry["guard_pid"].get<int>(),
                format_uptime(entry["uptime_ms"].get<long long>()).c_str(), overlay.c_str());
  }
  std::fflush(stdout);
  return 0;
}

int status_command(const std::string& path, bool json, const UserDirs& dirs) {
  const std::string mountpoint = canonical_mountpoint(path);
  const ipc::Message reply =
      control_request(dirs, mountpoint, ipc::Status{}, std::chrono::milliseconds(10000));
  const auto* reply_status = std::get_if<ipc::StatusOk>(&reply);
  if (reply_status == nullptr) throw_reply_error(reply);
  ipc::StatusOk with_usage = *reply_status;
  add_overlay_usage(with_usage.extra);
  const auto* status = &with_usage;
  if (json) {
    // The reply's own layout ("kind" first), but as output: ASCII-only and never throwing.
    Json body = {{"kind", "StatusOk"}, {"pid", status->pid}, {"mount_path", status->mount_path}};
    for (const auto& [key, value] : status->extra.items()) body[key] = value;
    std::cout << json_output(body) << "\n";
    return 0;
  }
  std::cout << "mount:    " << escape_text(status->mount_path) << "\n"
            << "worker:   pid " << status->pid << ", answering\n";
  for (const auto& [key, value] : status->extra.items()) {
    std::cout << escape_text(key) << ": " << text_of(value) << "\n";
  }
  return 0;
}

int capture_command(const CaptureArgs& args, const UserDirs& dirs) {
  const std::string mountpoint = canonical_mountpoint(args.mountpoint);
  // A freeze, a tree walk over the overlay and a retarget: bounded, but not by a Status's 10 s.
  const ipc::Message reply = control_request(
      dirs, mountpoint, ipc::Capture{args.message, args.author}, std::chrono::minutes(5));
  const auto* captured = std::get_if<ipc::Captured>(&reply);
  if (captured == nullptr) throw_reply_error(reply);
  if (args.json) {
    const Json body = {{"commit", captured->commit},
                       {"ref", captured->ref},
                       {"unchanged", captured->unchanged},
                       {"empty_dirs", captured->empty_dirs}};
    std::cout << json_output(body) << "\n";
    return 0;
  }
  if (captured->unchanged) {
    std::cout << "nothing to capture: " << escape_text(mountpoint) << " shows "
              << escape_text(captured->commit) << " unchanged\n";
  } else {
    std::cout << "captured " << escape_text(mountpoint) << " as " << escape_text(captured->commit)
              << " (" << escape_text(captured->ref) << ")\n";
  }
  if (!captured->empty_dirs.empty()) {
    std::cout << "left in the overlay (a commit cannot hold an empty directory):\n";
    for (const std::string& dir : captured->empty_dirs) std::cout << "  " << escape_text(dir) << "/\n";
  }
  return 0;
}

namespace {

// Stop and its escalation, then a successor's start (and, should it fail, more within the
// restart budget): bounded by the supervisor; this only guards against one that hangs.
constexpr std::chrono::minutes kRestartTimeout{3};

// A `restart`'s reply: the successor's StatusOk, or why there is none.
ipc::StatusOk restarted(const ipc::Message& reply) {
  if (const auto* status = std::get_if<ipc::StatusOk>(&reply)) return *status;
  if (const auto* error = std::get_if<ipc::MountError>(&reply)) {
    throw Error(error->message, 0,
                "see the mount's log; a supervisor older than `restart` answers \"unsupported "
                "request\": unmount and mount again to get the new worker");
  }
  throw Error("unexpected reply " + std::string(ipc::kind_of(reply)) + " from the supervisor",
              EPROTO);
}

Json restart_json(const ipc::StatusOk& status) {
  return Json{{"mountpoint", status.mount_path},
              {"worker_pid", status.pid},
              {"generation", field_of(status.extra, "generation", 1, is_count, "a count")},
              {"restarts", field_of(status.extra, "restarts", 0, is_count, "a count")}};
}

}  // namespace

int restart_command(const RestartCommand& command, const UserDirs& dirs) {
  if (!command.all) {
    const std::string mountpoint = canonical_mountpoint(command.mountpoint);
    const ipc::StatusOk status =
        restarted(control_request(dirs, mountpoint, ipc::Restart{}, kRestartTimeout));
    const Json result = restart_json(status);
    if (command.json) {
      std::cout << json_output(result) << "\n";
    } else {
      std::cout << "restarted " << text_of(result["mountpoint"]) << ": worker pid "
                << result["worker_pid"].get<long long>() << ", generation "
                << result["generation"].get<unsigned long long>() << "\n";
    }
    return 0;
  }
  auto results = Json::array();
  int code = 0;
  for (const std::string& socket : control_sockets(dirs)) {
    try {
      results.push_back(
          restart_json(restarted(control_request_at(socket, ipc::Restart{}, kRestartTimeout))));
    } catch (const Error& e) {
      // A dead supervisor's socket: nothing to restart there (`list` removes it).
      if (e.kind() == ErrorKind::kConnect && e.code() == ECONNREFUSED) continue;
      results.push_back(Json{{"socket", socket}, {"error", e.what()}});
      code = 1;
    }
  }
  if (command.json) {
    std::cout << json_output(results) << "\n";
    return code;
  }
  for (const auto& result : results) {
    if (result.contains("error")) {
      std::cout << "not restarted: " << text_of(result["socket"]) << ": "
                << text_of(result["error"]) << "\n";
    } else {
      std::cout << "restarted " << text_of(result["mountpoint"]) << ": worker pid "
                << result["worker_pid"].get<long long>() << ", generation "
                << result["generation"].get<unsigned long long>() << "\n";
    }
  }
  if (results.empty()) std::cout << "no heddle mounts\n";
  return code;
}

int unmount_command(const std::string& path, const LauncherEnvironment& env) {
  const std::string mountpoint = canonical_mountpoint(path);
  // Stop, then up to two grace periods of escalation, then the unmount itself.
  const auto timeout = 3 * env.stop_grace + std::chrono::milliseconds(10000);
  try {
    const ipc::Message reply = control_request(env.dirs, mountpoint, ipc::Stop{}, timeout);
    if (!std::holds_alternative<ipc::Stopping>(reply)) throw_reply_error(reply);
  } catch (const Error& e) {
    const bool no_supervisor = e.code() == ENOENT || e.code() == ECONNREFUSED;
    if (e.code() == ECONNREFUSED) {
      // Its dead supervisor's socket and lock go, whatever is left at the mountpoint.
      try {
        static_cast<void>(remove_stale_control_socket(control_socket_path(env.dirs, mountpoint)));
      } catch (const Error&) {
      }
    }
    const auto top = top_mount_at(mountpoint);
    if (!no_supervisor || !top || top->fstype != kFuseType) throw;
    // Its supervisor is gone: what is left is a dead mount of ours. Held while it is checked
    // and removed, so it is that mount, not whatever the path leads to by then.
    const UniqueFd held(::open(mountpoint.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!held || mount_id_of(held.get()) != top->id) throw;
    detach_mount(held.get());
    std::cout << "removed stale mount at " << escape_text(mountpoint)
              << " (its supervisor was gone)\n";
    return 0;
  }
  for (int i = 0; i < 100 && heddle_mount_at(mountpoint); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (heddle_mount_at(mountpoint)) {
    throw Error("the mount at " + mountpoint + " is still present after Stop", EBUSY);
  }
  std::cout << "unmounted " << escape_text(mountpoint) << "\n";
  return 0;
}

}  // namespace heddle::launcher
