// The worker's own check, after exec, that the launcher really confined it.
#pragma once

#include <optional>
#include <string>

namespace heddle::worker {

// nullopt when every capability set (effective, permitted, inheritable, bounding, ambient) is
// empty and no_new_privs is set; otherwise what is wrong. A degraded sandbox run by an
// unprivileged caller cannot empty the bounding set (that needs CAP_SETPCAP), which under
// no_new_privs grants nothing, so `degraded` leaves it out.
[[nodiscard]] std::optional<std::string> confinement_problem(bool degraded);

}  // namespace heddle::worker
