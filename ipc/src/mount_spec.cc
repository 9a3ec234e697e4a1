#include "heddle/ipc/mount_spec.h"

#include <cerrno>
#include <initializer_list>
#include <limits>

#include <nlohmann/json.hpp>

#include "heddle/error.h"
#include "heddle/overloaded.h"

namespace heddle::ipc {
namespace {

using Json = nlohmann::ordered_json;

constexpr std::string_view kSandboxNames[] = {"strict", "degraded", "none"};

[[noreturn]] void bad(const std::string& what) {
  throw Error("worker bootstrap: " + what, EINVAL);
}

// `object` is a JSON object with exactly `keys`.
const Json& checked_object(const Json& object, std::initializer_list<std::string_view> keys,
                           const std::string& where) {
  if (!object.is_object()) bad(where + " is not an object");
  for (const auto& [key, value] : object.items()) {
    bool known = false;
    for (const std::string_view k : keys) known = known || key == k;
    if (!known) bad(where + " has an unknown field \"" + key + "\"");
  }
  for (const std::string_view key : keys) {
    if (!object.contains(key)) bad(where + " lacks \"" + std::string(key) + "\"");
  }
  return object;
}

std::string text(const Json& object, const char* key, bool allow_empty = false) {
  const Json& value = object.at(key);
  if (!value.is_string()) bad(std::string("\"") + key + "\" is not a string");
  auto out = value.get<std::string>();
  if (out.empty() && !allow_empty) bad(std::string("\"") + key + "\" is empty");
  return out;
}

bool flag(const Json& object, const char* key) {
  const Json& value = object.at(key);
  if (!value.is_boolean()) bad(std::string("\"") + key + "\" is not a boolean");
  return value.get<bool>();
}

template <typename T>
T number(const Json& object, const char* key) {
  const Json& value = object.at(key);
  if (!value.is_number_unsigned() || value.get<std::uint64_t>() > std::numeric_limits<T>::max()) {
    bad(std::string("\"") + key + "\" is not an unsigned " + std::to_string(sizeof(T) * 8) +
        "-bit number");
  }
  return static_cast<T>(value.get<std::uint64_t>());
}

Json source_json(const Source& source) {
  return std::visit(Overloaded{[](const DirSource& s) -> Json {
                                 return {{"kind", "dir"}, {"dir", s.dir}};
                               },
                               [](const GitSource& s) -> Json {
                                 return {{"kind", "git"},
                                         {"repo_root", s.repo_root},
                                         {"thread", s.thread},
                                         {"cache_bytes", s.cache_bytes}};
                               }},
                    source);
}

Source parse_source(const Json& json) {
  if (!json.is_object() || !json.contains("kind") || !json["kind"].is_string()) {
    bad("\"source\" needs a string \"kind\"");
  }
  const auto kind = json["kind"].get<std::string>();
  if (kind == "dir") {
    checked_object(json, {"kind", "dir"}, "the dir source");
    return DirSource{text(json, "dir")};
  }
  if (kind == "git") {
    checked_object(json, {"kind", "repo_root", "thread", "cache_bytes"}, "the git source");
    GitSource git{text(json, "repo_root"), text(json, "thread"),
                  number<std::uint64_t>(json, "cache_bytes")};
    if (git.cache_bytes == 0) bad("\"cache_bytes\" is 0");
    return git;
  }
  bad("unknown source kind \"" + kind + "\" (dir or git)");
}

SandboxMode parse_sandbox(const std::string& name) {
  for (std::size_t i = 0; i < std::size(kSandboxNames); ++i) {
    if (name == kSandboxNames[i]) return static_cast<SandboxMode>(i);
  }
  bad("unknown sandbox mode \"" + name + "\" (strict, degraded or none)");
}

}  // namespace

std::string encode_bootstrap(const WorkerBootstrap& bootstrap) {
  const MountSpec& spec = bootstrap.spec;
  const Json json = {
      {"host_pid", bootstrap.host_pid},
      {"spec",
       {{"source", source_json(spec.source)},
        {"mountpoint", spec.mountpoint},
        {"uid", spec.uid},
        {"gid", spec.gid},
        {"allow_other", spec.allow_other},
        {"sandbox", kSandboxNames[static_cast<std::size_t>(spec.sandbox)]},
        {"overlay_dir", spec.overlay_dir}}},
      {"test_ignore_stop", bootstrap.test_ignore_stop},
      {"generation", bootstrap.generation}};
  try {
    return json.dump();
  } catch (const Json::exception& e) {
    throw Error(std::string("encode the worker bootstrap: ") + e.what(), EINVAL);
  }
}

WorkerBootstrap decode_bootstrap(std::string_view text_in) {
  Json json;
  try {
    json = Json::parse(text_in);
  } catch (const Json::exception& e) {
    bad(std::string("not JSON: ") + e.what());
  }
  checked_object(json, {"host_pid", "spec", "test_ignore_stop", "generation"}, "the bootstrap");
  const Json& spec = checked_object(
      json["spec"], {"source", "mountpoint", "uid", "gid", "allow_other", "sandbox", "overlay_dir"},
      "\"spec\"");
  WorkerBootstrap out;
  out.host_pid = number<std::uint32_t>(json, "host_pid");
  if (out.host_pid == 0) bad("\"host_pid\" is 0");
  out.test_ignore_stop = flag(json, "test_ignore_stop");
  out.generation = number<std::uint32_t>(json, "generation");
  if (out.generation == 0) bad("\"generation\" is 0");
  out.spec.source = parse_source(spec["source"]);
  out.spec.mountpoint = text(spec, "mountpoint");
  out.spec.uid = number<uid_t>(spec, "uid");
  out.spec.gid = number<gid_t>(spec, "gid");
  out.spec.allow_other = flag(spec, "allow_other");
  out.spec.sandbox = parse_sandbox(text(spec, "sandbox"));
  out.spec.overlay_dir = text(spec, "overlay_dir", true);
  return out;
}

}  // namespace heddle::ipc
