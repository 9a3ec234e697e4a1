// Which host paths a git repository's reader needs: the sandbox binds exactly these.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "heddle/launcher/source_access.h"

namespace heddle::launcher {

// The most the launcher reads of a repository's small files (a .git file, commondir,
// objects/info/alternates): they hold a path or a few.
inline constexpr std::size_t kMaxRepositoryFileBytes = 64 * 1024;

// For a work tree with a .git directory: that directory. With a .git file ("gitdir: X"): the
// file and X. For a bare repository: the repository. Plus the common dir of a linked work tree
// and every alternate object directory (transitively, git's depth limit). For something that
// is not a repository, the path itself, so that the worker can say what is wrong with it.
//
// Everything is resolved and opened with the calling thread's authority, and each bound path
// is opened for reading (search permission on every directory above it, read on itself).
// A repository's small files are read only as regular files of at most
// kMaxRepositoryFileBytes, never through a symlink, and a FIFO does not block. A gitdir must
// hold HEAD, a commondir objects/, and an alternate must be a git object directory; none of
// them may hold a socket, FIFO or device at its top. Throws heddle::Error naming the path and
// why for any of these, and if `repo_root` does not exist. An alternate that does not exist
// is skipped, as git does.
[[nodiscard]] std::vector<SourceBind> git_paths_to_bind(const std::string& repo_root);

// What a directory must be to be bound as an alternate: `pack/` or a fan-out directory (two
// hex digits) at its top, and nothing there but directories and regular files. Throws
// heddle::Error starting with `what` otherwise. `dir_fd` is the directory, open for reading.
void require_object_directory(int dir_fd, const std::string& what);

}  // namespace heddle::launcher
