// Which host paths a git repository's reader needs: the sandbox binds exactly these.
#pragma once

#include <string>
#include <vector>

namespace heddle::launcher {

// For a work tree with a .git directory: that directory. With a .git file ("gitdir: X"): the
// file and X. For a bare repository: the repository. Plus the common dir of a linked work tree
// and every alternate object directory (transitively). For something that is not a repository,
// the path itself, so that the worker can say what is wrong with it.
// Paths are canonical. Throws heddle::Error if `repo_root` does not exist.
[[nodiscard]] std::vector<std::string> git_paths_to_bind(const std::string& repo_root);

}  // namespace heddle::launcher
