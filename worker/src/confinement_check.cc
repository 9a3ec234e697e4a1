#include "confinement_check.h"

#include <cap-ng.h>
#include <sys/prctl.h>

namespace heddle::worker {

std::optional<std::string> confinement_problem(bool degraded) {
  // libcap-ng is safe here (after exec, single-threaded); the launcher's pre-exec code could
  // not use it, so this is where libcap-ng confirms the drop.
  if (capng_get_caps_process() != 0) return "cannot read this process's capabilities";
  const auto sets = degraded ? static_cast<capng_select_t>(CAPNG_SELECT_CAPS | CAPNG_SELECT_AMBIENT)
                             : CAPNG_SELECT_ALL;
  if (capng_have_capabilities(sets) != CAPNG_NONE) {
    return "the worker still holds capabilities; it must run under heddle-fuse-launcher's sandbox";
  }
  if (::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) {
    return "no_new_privs is not set; the worker must run under heddle-fuse-launcher's sandbox";
  }
  return std::nullopt;
}

}  // namespace heddle::worker
