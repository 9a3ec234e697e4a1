#include "heddle/ipc/message.h"

#include <cerrno>
#include <cstddef>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "heddle/error.h"

namespace heddle::ipc {
namespace {

using Json = nlohmann::ordered_json;

constexpr std::string_view kStop = "Stop";
constexpr std::string_view kStatus = "Status";
constexpr std::string_view kMountReady = "MountReady";
constexpr std::string_view kMountError = "MountError";
constexpr std::string_view kStatusOk = "StatusOk";
constexpr std::string_view kStopping = "Stopping";
constexpr std::string_view kFreeze = "Freeze";
constexpr std::string_view kThaw = "Thaw";
constexpr std::string_view kRetarget = "Retarget";
constexpr std::string_view kFrozen = "Frozen";
constexpr std::string_view kThawed = "Thawed";
constexpr std::string_view kRetargeted = "Retargeted";
constexpr std::string_view kRetargetFailed = "RetargetFailed";
constexpr std::string_view kCapture = "Capture";
constexpr std::string_view kCaptured = "Captured";
constexpr std::string_view kRestart = "Restart";

// serde_json's recursion limit: it fails on the 128th nested container.
constexpr std::size_t kMaxNesting = 127;
// Untrusted text quoted in an error message is cut to this many bytes.
constexpr std::size_t kMaxQuoted = 80;

constexpr std::string_view name_of(const Stop&) { return kStop; }
constexpr std::string_view name_of(const Status&) { return kStatus; }
constexpr std::string_view name_of(const MountReady&) { return kMountReady; }
constexpr std::string_view name_of(const MountError&) { return kMountError; }
constexpr std::string_view name_of(const StatusOk&) { return kStatusOk; }
constexpr std::string_view name_of(const Stopping&) { return kStopping; }
constexpr std::string_view name_of(const Freeze&) { return kFreeze; }
constexpr std::string_view name_of(const Thaw&) { return kThaw; }
constexpr std::string_view name_of(const Retarget&) { return kRetarget; }
constexpr std::string_view name_of(const Frozen&) { return kFrozen; }
constexpr std::string_view name_of(const Thawed&) { return kThawed; }
constexpr std::string_view name_of(const Retargeted&) { return kRetargeted; }
constexpr std::string_view name_of(const RetargetFailed&) { return kRetargetFailed; }
constexpr std::string_view name_of(const Capture&) { return kCapture; }
constexpr std::string_view name_of(const Captured&) { return kCaptured; }
constexpr std::string_view name_of(const Restart&) { return kRestart; }

bool is_status_ok_field(std::string_view name) {
  return name == "kind" || name == "pid" || name == "mount_path";
}

// Error text reaches logs and may itself be sent in a MountError, so keep it short, ASCII
// and free of control characters whatever the peer sent.
std::string printable(std::string_view text, std::size_t limit) {
  constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (const char c : text.substr(0, limit)) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f) {
      out += c;
    } else {
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 0xf];
    }
  }
  if (text.size() > limit) out += "...";
  return out;
}

// A JSON value as it would appear in the body, for error messages.
std::string describe(const Json& value) {
  return printable(value.dump(-1, ' ', true, Json::error_handler_t::replace), kMaxQuoted);
}

// nlohmann's what() starts with "[json.exception.parse_error.101] "; the rest is the useful part.
std::string without_prefix(const char* what) {
  const std::string_view text = what;
  const auto end = text.find("] ");
  return printable(end == std::string_view::npos ? text : text.substr(end + 2), 200);
}

// ---- encoding -------------------------------------------------------------------------------

void add_fields(Json&, const Stop&) {}
void add_fields(Json&, const Status&) {}
void add_fields(Json&, const Stopping&) {}
void add_fields(Json&, const Freeze&) {}
void add_fields(Json&, const Thaw&) {}
void add_fields(Json&, const Thawed&) {}
void add_fields(Json&, const Restart&) {}

void add_fields(Json& out, const Retarget& message) {
  out["commit"] = message.commit;
  out["drop_overlay"] = message.drop_overlay;
}

void add_fields(Json& out, const Frozen& message) { out["commit"] = message.commit; }

void add_fields(Json& out, const Retargeted& message) {
  out["commit"] = message.commit;
  out["conflicts"] = message.conflicts;
}

void add_fields(Json& out, const RetargetFailed& message) { out["message"] = message.message; }

void add_fields(Json& out, const Capture& message) {
  out["message"] = message.message;
  out["author"] = message.author;
}

void add_fields(Json& out, const Captured& message) {
  out["commit"] = message.commit;
  out["ref"] = message.ref;
  out["unchanged"] = message.unchanged;
  out["empty_dirs"] = message.empty_dirs;
}

void add_fields(Json& out, const MountReady& message) {
  out["pid"] = message.pid;
  out["mount_path"] = message.mount_path;
}

void add_fields(Json& out, const MountError& message) { out["message"] = message.message; }

void add_fields(Json& out, const StatusOk& message) {
  out["pid"] = message.pid;
  out["mount_path"] = message.mount_path;
  if (!message.extra.is_object()) {
    throw Error(std::string("encode StatusOk: extra must be a JSON object, not ") +
                    message.extra.type_name(),
                EINVAL);
  }
  for (const auto& [name, value] : message.extra.items()) {
    // A second "pid" would make the body ambiguous (and serde rejects it).
    if (is_status_ok_field(name)) {
      throw Error("encode StatusOk: extra field \"" + name + "\" clashes with a known field",
                  EINVAL);
    }
    out[name] = value;
  }
}

// ---- decoding -------------------------------------------------------------------------------

[[noreturn]] void reject(const std::string& problem) {
  throw Error("frame body: " + problem, EPROTO);
}

// The DOM, built in the same pass that refuses duplicate keys (nlohmann keeps the last of them
// where serde rejects them) and nesting deeper than serde's limit: either would let the two
// ends read one body differently.
class CheckedDom {
 public:
  using string_t = Json::string_t;
  explicit CheckedDom(Json& root) : dom_(root, false) {}

  bool null() { return dom_.null(); }
  bool boolean(bool value) { return dom_.boolean(value); }
  bool number_integer(Json::number_integer_t value) { return dom_.number_integer(value); }
  bool number_unsigned(Json::number_unsigned_t value) { return dom_.number_unsigned(value); }
  bool number_float(Json::number_float_t value, const string_t& text) {
    return dom_.number_float(value, text);
  }
  bool string(string_t& value) { return dom_.string(value); }
  bool binary(Json::binary_t& value) { return dom_.binary(value); }
  bool start_object(std::size_t size) {
    open_objects_.push_back(keys_.size());
    return enter() && dom_.start_object(size);
  }
  bool key(string_t& name) {
    // Objects here have a few dozen keys at most: a linear search allocates nothing.
    for (std::size_t i = open_objects_.back(); i < keys_.size(); ++i) {
      if (keys_[i] == name) return fail("duplicate field " + describe(Json(name)));
    }
    keys_.push_back(name);
    return dom_.key(name);
  }
  bool end_object() {
    keys_.resize(open_objects_.back());
    open_objects_.pop_back();
    --depth_;
    return dom_.end_object();
  }
  bool start_array(std::size_t size) { return enter() && dom_.start_array(size); }
  bool end_array() {
    --depth_;
    return dom_.end_array();
  }
  template <class Exception>
  bool parse_error(std::size_t, const std::string&, const Exception& error) {
    return fail("not valid JSON: " + without_prefix(error.what()));
  }

  [[nodiscard]] const std::string& problem() const { return problem_; }

 private:
  bool enter() {
    if (++depth_ > kMaxNesting) return fail("nested deeper than 127 levels");
    return true;
  }
  bool fail(std::string problem) {
    problem_ = std::move(problem);
    return false;
  }

  nlohmann::detail::json_sax_dom_parser<Json> dom_;
  std::vector<std::string> keys_;          // of the open objects, innermost last
  std::vector<std::size_t> open_objects_;  // where each open object's keys start in keys_
  std::size_t depth_ = 0;
  std::string problem_;
};

Json parse_object(std::string_view body) {
  if (body.empty()) reject("empty");
  Json json;
  CheckedDom dom(json);
  if (!Json::sax_parse(body.begin(), body.end(), &dom)) reject(dom.problem());
  if (!json.is_object()) reject(std::string("expected a JSON object, got ") + json.type_name());
  return json;
}

const Json& field(const Json& object, std::string_view kind, const std::string& name) {
  const auto it = object.find(name);
  if (it == object.end()) reject(std::string(kind) + " is missing field \"" + name + "\"");
  return *it;
}

std::string string_field(const Json& object, std::string_view kind, const std::string& name) {
  const Json& value = field(object, kind, name);
  if (!value.is_string()) {
    reject(std::string(kind) + " field \"" + name + "\" is a " + value.type_name() +
           ", expected a string");
  }
  return value.get<std::string>();
}

bool bool_field(const Json& object, std::string_view kind, const std::string& name) {
  const Json& value = field(object, kind, name);
  if (!value.is_boolean()) {
    reject(std::string(kind) + " field \"" + name + "\" is a " + value.type_name() +
           ", expected a boolean");
  }
  return value.get<bool>();
}

std::vector<std::string> strings_field(const Json& object, std::string_view kind,
                                       const std::string& name) {
  const Json& value = field(object, kind, name);
  if (!value.is_array()) {
    reject(std::string(kind) + " field \"" + name + "\" is a " + value.type_name() +
           ", expected an array of strings");
  }
  std::vector<std::string> out;
  out.reserve(value.size());
  for (const Json& item : value) {
    if (!item.is_string()) {
      reject(std::string(kind) + " field \"" + name + "\" holds a " + item.type_name() +
             ", expected only strings");
    }
    out.push_back(item.get<std::string>());
  }
  return out;
}

std::uint32_t pid_field(const Json& object, std::string_view kind) {
  const Json& value = field(object, kind, "pid");
  if (!value.is_number()) {
    reject(std::string(kind) + " field \"pid\" is a " + value.type_name() + ", expected a u32");
  }
  // Negative integers parse as number_integer, fractions and huge values as number_float.
  if (!value.is_number_unsigned() ||
      value.get<std::uint64_t>() > std::numeric_limits<std::uint32_t>::max()) {
    reject("pid " + describe(value) + " is not a u32");
  }
  return static_cast<std::uint32_t>(value.get<std::uint64_t>());
}

std::string kind_field(const Json& object) {
  const auto it = object.find("kind");
  if (it == object.end()) reject("missing field \"kind\"");
  if (!it->is_string()) {
    reject(std::string("\"kind\" is a ") + it->type_name() + ", expected a string");
  }
  return it->get<std::string>();
}

// Unknown fields, in body order; the known ones are already in the struct.
Json extra_fields(Json& object) {
  Json extra = Json::object();
  for (auto it = object.begin(); it != object.end(); ++it) {
    if (!is_status_ok_field(it.key())) extra[it.key()] = std::move(it.value());
  }
  return extra;
}

Message message_from(Json& object) {
  const std::string kind = kind_field(object);
  if (kind == kStop) return Stop{};
  if (kind == kStatus) return Status{};
  if (kind == kStopping) return Stopping{};
  if (kind == kMountReady) {
    // Braced initialisation evaluates in order, so "pid" is always checked first.
    return MountReady{pid_field(object, kind), string_field(object, kind, "mount_path")};
  }
  if (kind == kMountError) return MountError{string_field(object, kind, "message")};
  if (kind == kStatusOk) {
    return StatusOk{pid_field(object, kind), string_field(object, kind, "mount_path"),
                    extra_fields(object)};
  }
  if (kind == kFreeze) return Freeze{};
  if (kind == kThaw) return Thaw{};
  if (kind == kThawed) return Thawed{};
  if (kind == kRestart) return Restart{};
  if (kind == kRetarget) {
    return Retarget{string_field(object, kind, "commit"),
                    bool_field(object, kind, "drop_overlay")};
  }
  if (kind == kFrozen) return Frozen{string_field(object, kind, "commit")};
  if (kind == kRetargeted) {
    return Retargeted{string_field(object, kind, "commit"),
                      strings_field(object, kind, "conflicts")};
  }
  if (kind == kRetargetFailed) return RetargetFailed{string_field(object, kind, "message")};
  if (kind == kCapture) {
    return Capture{string_field(object, kind, "message"), string_field(object, kind, "author")};
  }
  if (kind == kCaptured) {
    return Captured{string_field(object, kind, "commit"), string_field(object, kind, "ref"),
                    bool_field(object, kind, "unchanged"),
                    strings_field(object, kind, "empty_dirs")};
  }
  reject("unknown kind " + describe(Json(kind)));
}

}  // namespace

std::string_view kind_of(const Message& message) {
  return std::visit([](const auto& alternative) { return name_of(alternative); }, message);
}

std::string encode_body(const Message& message) {
  Json body = Json::object();
  body["kind"] = kind_of(message);
  std::visit([&body](const auto& alternative) { add_fields(body, alternative); }, message);
  try {
    // Compact, raw UTF-8, control characters escaped: the same bytes serde_json writes.
    return body.dump(-1, ' ', false, Json::error_handler_t::strict);
  } catch (const Json::exception& error) {
    throw Error(
        "encode " + std::string(kind_of(message)) + " frame body: " + without_prefix(error.what()),
        EINVAL);
  }
}

Message decode_body(std::string_view body) {
  try {
    Json object = parse_object(body);
    return message_from(object);
  } catch (const Json::exception& error) {
    // Not expected after ShapeCheck, but no nlohmann exception may escape.
    reject(without_prefix(error.what()));
  }
}

bool operator==(const Stop&, const Stop&) { return true; }
bool operator==(const Status&, const Status&) { return true; }
bool operator==(const Stopping&, const Stopping&) { return true; }
bool operator==(const Freeze&, const Freeze&) { return true; }
bool operator==(const Thaw&, const Thaw&) { return true; }
bool operator==(const Thawed&, const Thawed&) { return true; }

bool operator==(const Retarget& a, const Retarget& b) {
  return a.commit == b.commit && a.drop_overlay == b.drop_overlay;
}

bool operator==(const Frozen& a, const Frozen& b) { return a.commit == b.commit; }

bool operator==(const Retargeted& a, const Retargeted& b) {
  return a.commit == b.commit && a.conflicts == b.conflicts;
}

bool operator==(const RetargetFailed& a, const RetargetFailed& b) {
  return a.message == b.message;
}

bool operator==(const Capture& a, const Capture& b) {
  return a.message == b.message && a.author == b.author;
}

bool operator==(const Restart&, const Restart&) { return true; }

bool operator==(const Captured& a, const Captured& b) {
  return a.commit == b.commit && a.ref == b.ref && a.unchanged == b.unchanged &&
         a.empty_dirs == b.empty_dirs;
}

bool operator==(const MountReady& a, const MountReady& b) {
  return a.pid == b.pid && a.mount_path == b.mount_path;
}

bool operator==(const MountError& a, const MountError& b) { return a.message == b.message; }

bool operator==(const StatusOk& a, const StatusOk& b) {
  return a.pid == b.pid && a.mount_path == b.mount_path && a.extra == b.extra;
}

}  // namespace heddle::ipc
