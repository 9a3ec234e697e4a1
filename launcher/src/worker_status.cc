#include "heddle/launcher/worker_status.h"

#include <algorithm>
#include <string_view>

#include "heddle/display_text.h"

namespace heddle::launcher {
namespace {

using Json = nlohmann::ordered_json;

enum class FieldType { kCounter, kBool, kObjectId, kObjectIdOrNull, kStringArray, kWord };

struct KnownField {
  std::string_view name;
  FieldType type;
};

// What heddle-fuse-worker sends (worker/src/main.cc and the backends' add_status). A field a
// worker gains must be added here to reach `status`.
constexpr KnownField kWorkerFields[] = {
    {"uptime_ms", FieldType::kCounter},
    {"nodes", FieldType::kCounter},
    {"serving", FieldType::kBool},
    {"commit", FieldType::kObjectIdOrNull},
    {"tree", FieldType::kObjectId},
    {"cache_bytes", FieldType::kCounter},
    {"cache_limit", FieldType::kCounter},
    {"cache_entries", FieldType::kCounter},
    {"cache_hits", FieldType::kCounter},
    {"cache_misses", FieldType::kCounter},
    {"streamed_opens", FieldType::kCounter},
    {"whole_reads_of_big_blobs", FieldType::kCounter},
    {"repositories_open", FieldType::kCounter},
    {"hidden_names", FieldType::kCounter},
    {"inode_collisions", FieldType::kCounter},
    {"open_streams", FieldType::kCounter},
    {"held_bytes", FieldType::kCounter},
    {"held_limit", FieldType::kCounter},
    {"opens_refused_for_memory", FieldType::kCounter},
    {"other_filesystems", FieldType::kCounter},
    {"converted_files", FieldType::kCounter},
    {"lfs_files", FieldType::kCounter},
    {"lfs_missing", FieldType::kCounter},
    {"filter_drivers_not_run", FieldType::kCounter},
    {"conversions_too_big", FieldType::kCounter},
    // Capture and follow (issue 15).
    {"retargets", FieldType::kCounter},
    {"conflicts", FieldType::kStringArray},
    {"conflict_count", FieldType::kCounter},
    {"frozen", FieldType::kBool},
    {"writes_held", FieldType::kCounter},
    // Worker restart (issue 16): which worker of the mount this is, whether the kernel resent
    // what its predecessor had taken, and the node journal's size.
    {"generation", FieldType::kCounter},
    {"resend", FieldType::kBool},
    {"journal_nodes", FieldType::kCounter},
    {"journal_handles", FieldType::kCounter},
    {"restored_nodes", FieldType::kCounter},
    {"stale_nodes", FieldType::kCounter},
    // A directory source watched for changes (issue 17): "inotify", or off_... and why.
    {"source_watch", FieldType::kWord},
    {"watched_dirs", FieldType::kCounter},
    {"watch_notifications", FieldType::kCounter},
    {"watch_overflows", FieldType::kCounter},
};

// Sent by the worker too, but the supervisor knows better and fills them (supervision.cc).
constexpr std::string_view kSupervisorFields[] = {
    "source", "thread", "writable", "overlay", "supervisor_pid", "guard_pid",
    "overlay_bytes", "overlay_files", "overlay_error"};

// A frame holds up to 64 KiB of field names: the log gets the first few, cut short.
constexpr std::size_t kMaxProblems = 8;
constexpr std::size_t kMaxName = 64;

bool is_object_id(const Json& value) {
  if (!value.is_string()) return false;
  const auto& text = value.get_ref<const std::string&>();
  return (text.size() == 40 || text.size() == 64) &&
         std::all_of(text.begin(), text.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// A short fixed term the worker chose from a few (shown as is, so no other text gets through).
bool is_word(const Json& value) {
  if (!value.is_string()) return false;
  const auto& text = value.get_ref<const std::string&>();
  return !text.empty() && text.size() <= 32 &&
         std::all_of(text.begin(), text.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || c == '_'; });
}

bool has_type(const Json& value, FieldType type) {
  switch (type) {
    case FieldType::kCounter:
      return value.is_number_unsigned();
    case FieldType::kBool:
      return value.is_boolean();
    case FieldType::kObjectId:
      return is_object_id(value);
    case FieldType::kObjectIdOrNull:
      return value.is_null() || is_object_id(value);
    case FieldType::kStringArray:
      return value.is_array() &&
             std::all_of(value.begin(), value.end(), [](const Json& item) { return item.is_string(); });
    case FieldType::kWord:
      return is_word(value);
  }
  return false;
}

const char* expected(FieldType type) {
  switch (type) {
    case FieldType::kCounter:
      return "an unsigned integer";
    case FieldType::kBool:
      return "a bool";
    case FieldType::kObjectId:
      return "an object id";
    case FieldType::kObjectIdOrNull:
      return "an object id or null";
    case FieldType::kStringArray:
      return "an array of strings";
    case FieldType::kWord:
      return "a word (a-z and _, at most 32)";
  }
  return "?";
}

// Cut short at a character boundary, so what is kept of valid UTF-8 stays valid.
std::string quoted_name(std::string_view name) {
  if (name.size() <= kMaxName) return "\"" + std::string(name) + "\"";
  std::size_t cut = kMaxName;
  while (cut > 0 && (static_cast<unsigned char>(name[cut]) & 0xc0) == 0x80) --cut;
  return "\"" + std::string(name.substr(0, cut)) + "...\"";
}

class Problems {
 public:
  explicit Problems(WorkerReplyCheck& check) : check_(check) {}
  ~Problems() {
    if (dropped_ > 0) check_.problems.push_back("and " + std::to_string(dropped_) + " more");
  }
  Problems(const Problems&) = delete;
  Problems& operator=(const Problems&) = delete;

  void add(std::string problem) {
    if (check_.problems.size() < kMaxProblems) {
      // The log escapes it; escaped here too, it stays one short line wherever it goes.
      check_.problems.push_back(escape_text(problem));
    } else {
      ++dropped_;
    }
  }

 private:
  WorkerReplyCheck& check_;
  std::size_t dropped_ = 0;
};

void check_identity(std::uint32_t& pid, std::string& mount_path, pid_t worker_pid,
                    const std::string& mountpoint, Problems& problems) {
  if (pid != static_cast<std::uint32_t>(worker_pid)) {
    problems.add("pid " + std::to_string(pid) + " is not the worker's (" +
                 std::to_string(worker_pid) + ")");
  }
  if (mount_path != mountpoint) {
    problems.add("mount_path " + quoted_name(mount_path) + " is not the mountpoint");
  }
  pid = static_cast<std::uint32_t>(worker_pid);
  mount_path = mountpoint;
}

}  // namespace

ipc::MountReady checked_mount_ready(const ipc::MountReady& ready, pid_t worker_pid,
                                    const std::string& mountpoint, WorkerReplyCheck& check) {
  ipc::MountReady out = ready;
  Problems problems(check);
  check_identity(out.pid, out.mount_path, worker_pid, mountpoint, problems);
  return out;
}

ipc::StatusOk checked_status(const ipc::StatusOk& status, pid_t worker_pid,
                             const std::string& mountpoint, WorkerReplyCheck& check) {
  ipc::StatusOk out{status.pid, status.mount_path};
  Problems problems(check);
  check_identity(out.pid, out.mount_path, worker_pid, mountpoint, problems);
  if (!status.extra.is_object()) return out;
  for (const auto& item : status.extra.items()) {
    // Not a structured binding: clang 14 (the fuzz preset) cannot capture one in a lambda.
    const std::string& name = item.key();
    const Json& value = item.value();
    const auto known = std::find_if(std::begin(kWorkerFields), std::end(kWorkerFields),
                                    [&](const KnownField& field) { return field.name == name; });
    if (known != std::end(kWorkerFields)) {
      if (has_type(value, known->type)) {
        out.extra[name] = value;
      } else {
        problems.add("field " + quoted_name(name) + " is not " + expected(known->type) + " (a " +
                     value.type_name() + "); dropped");
      }
    } else if (std::find(std::begin(kSupervisorFields), std::end(kSupervisorFields), name) ==
               std::end(kSupervisorFields)) {
      problems.add("unknown field " + quoted_name(name) + "; dropped");
    }
  }
  return out;
}

}  // namespace heddle::launcher
