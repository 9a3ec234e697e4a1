#include "id_map.h"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>

#include "heddle/error.h"
#include "heddle/process.h"
#include "heddle/sandbox/sandbox_spec.h"
#include "heddle/unique_fd.h"

namespace heddle::sandbox::detail {
namespace {

void write_proc_file(pid_t child, const char* name, const std::string& content) {
  const std::string path = "/proc/" + std::to_string(child) + "/" + name;
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path, userns_restriction_hint());
  // These files take the whole content in a single write.
  const ssize_t n = ::write(fd.get(), content.data(), content.size());
  if (n != static_cast<ssize_t>(content.size())) {
    const std::string restricted = userns_restriction_hint();
    throw_errno("write \"" + content.substr(0, content.find('\n')) + "\" to " + path,
                restricted.empty() ? "the kernel refused the id map; is the uid/gid valid on this host?"
                                   : restricted);
  }
}

void run_map_helper(const char* helper, pid_t child, unsigned id, const char* file) {
  const std::string path = find_on_path(helper);
  if (path.empty()) {
    throw Error(std::string(helper) + " is not on PATH", ENOENT,
                "install the uidmap package, or run the worker as your own uid");
  }
  const std::string text = std::to_string(id);
  const ProcessResult result =
      run_host_command({path, std::to_string(child), text, text, "1"});
  if (!result.ok()) {
    throw Error(path + " " + std::to_string(child) + " " + text + " " + text + " 1: " +
                    result.out,
                EPERM, std::string(file) + " must grant you id " + text);
  }
}

}  // namespace

void write_id_maps(pid_t child, uid_t uid, gid_t gid, bool deny_setgroups) {
  write_proc_file(child, "uid_map", std::to_string(uid) + " " + std::to_string(uid) + " 1\n");
  if (deny_setgroups) write_proc_file(child, "setgroups", "deny\n");
  write_proc_file(child, "gid_map", std::to_string(gid) + " " + std::to_string(gid) + " 1\n");
}

void write_subordinate_id_maps(pid_t child, uid_t uid, gid_t gid) {
  run_map_helper("newuidmap", child, uid, "/etc/subuid");
  run_map_helper("newgidmap", child, gid, "/etc/subgid");
}

std::string userns_restriction_hint() {
  std::ifstream in("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
  int restricted = 0;
  if (!(in >> restricted) || restricted == 0) return "";
  return std::string("AppArmor restricts unprivileged user namespaces here "
                     "(kernel.apparmor_restrict_unprivileged_userns=1): load the profile the "
                     "package ships (apparmor_parser -r ") +
         kAppArmorProfile + "), or set the sysctl to 0";
}

}  // namespace heddle::sandbox::detail
