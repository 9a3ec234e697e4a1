#include "heddle/sandbox/facts.h"

#include <unistd.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "heddle/error.h"

namespace heddle::sandbox {
namespace {

constexpr std::array<const char*, 7> kNamespaces = {"user", "mnt", "pid", "net",
                                                    "ipc",  "uts", "cgroup"};
constexpr std::array<const char*, 11> kStatusFields = {
    "Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
    "NoNewPrivs", "Seccomp", "NSpid"};
constexpr std::array<const char*, 5> kCapFields = {"CapInh", "CapPrm", "CapEff", "CapBnd",
                                                   "CapAmb"};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("read " + path, errno, "is the process still running?");
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\n");
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\n") - b + 1);
}

// True when no line of an id map sends anything to host id 0.
bool map_avoids_host_root(const std::string& map) {
  std::istringstream lines(map);
  long inside = 0;
  long outside = 0;
  long count = 0;
  bool any = false;
  while (lines >> inside >> outside >> count) {
    any = true;
    if (outside == 0) return false;
  }
  return any;
}

}  // namespace

SandboxFacts read_facts(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid);
  SandboxFacts facts;
  std::istringstream status(read_file(dir + "/status"));
  for (std::string line; std::getline(status, line);) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = line.substr(0, colon);
    for (const char* wanted : kStatusFields) {
      if (key == wanted) facts.status[key] = trim(line.substr(colon + 1));
    }
  }
  for (const char* ns : kNamespaces) {
    std::error_code ec_self;
    std::error_code ec_child;
    const auto self = std::filesystem::read_symlink(std::string("/proc/self/ns/") + ns, ec_self);
    const auto child = std::filesystem::read_symlink(dir + "/ns/" + ns, ec_child);
    facts.namespace_differs[ns] = !ec_self && !ec_child && self != child;
  }
  facts.uid_map = trim(read_file(dir + "/uid_map"));
  facts.gid_map = trim(read_file(dir + "/gid_map"));
  return facts;
}

bool SandboxFacts::confined() const {
  const auto field = [&](const char* key) {
    const auto it = status.find(key);
    return it == status.end() ? std::string("?") : it->second;
  };
  for (const char* cap : kCapFields) {
    if (field(cap) != "0000000000000000") return false;
  }
  for (const auto& [ns, differs] : namespace_differs) {
    if (!differs) return false;
  }
  return field("NoNewPrivs") == "1" && field("Seccomp") == "2" && field("Groups").empty() &&
         namespace_differs.size() == kNamespaces.size() && map_avoids_host_root(uid_map) &&
         map_avoids_host_root(gid_map);
}

std::string SandboxFacts::describe() const {
  std::ostringstream out;
  for (const char* key : kStatusFields) {
    const auto it = status.find(key);
    if (it != status.end()) out << "  " << key << ": " << (it->second.empty() ? "(none)" : it->second) << "\n";
  }
  out << "  uid_map: " << uid_map << "\n  gid_map: " << gid_map << "\n  namespaces:";
  for (const auto& [ns, differs] : namespace_differs) {
    out << " " << ns << (differs ? "=new" : "=SHARED");
  }
  out << "\n  confined: " << (confined() ? "yes" : "NO") << "\n";
  return out.str();
}

}  // namespace heddle::sandbox
