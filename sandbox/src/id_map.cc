#include "id_map.h"

#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "heddle/error.h"
#include "heddle/unique_fd.h"

namespace heddle::sandbox::detail {
namespace {

void write_proc_file(pid_t child, const char* name, const std::string& content) {
  const std::string path = "/proc/" + std::to_string(child) + "/" + name;
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  // These files take the whole content in a single write.
  const ssize_t n = ::write(fd.get(), content.data(), content.size());
  if (n != static_cast<ssize_t>(content.size())) {
    throw_errno("write \"" + content.substr(0, content.find('\n')) + "\" to " + path,
                "the kernel refused the id map; is the uid/gid valid on this host?");
  }
}

}  // namespace

void write_id_maps(pid_t child, uid_t uid, gid_t gid, bool deny_setgroups) {
  write_proc_file(child, "uid_map", std::to_string(uid) + " " + std::to_string(uid) + " 1\n");
  if (deny_setgroups) write_proc_file(child, "setgroups", "deny\n");
  write_proc_file(child, "gid_map", std::to_string(gid) + " " + std::to_string(gid) + " 1\n");
}

}  // namespace heddle::sandbox::detail
