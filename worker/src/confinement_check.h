// The worker's own check, after exec, that the launcher really confined it.
#pragma once

#include <optional>
#include <string>

namespace heddle::worker {

// nullopt when every capability set (effective, permitted, inheritable, bounding, ambient) is
// empty and no_new_privs is set; otherwise what is wrong.
[[nodiscard]] std::optional<std::string> confinement_problem();

}  // namespace heddle::worker
