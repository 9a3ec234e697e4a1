// The mountpoint of a new mount, resolved and checked once for the user the mount is for, and
// held open from then on: the mount goes onto the directory that was checked, so a path that
// changes afterwards (a renamed directory, a swapped symlink) cannot move it.
#pragma once

#include <sys/types.h>

#include <string>

#include "heddle/unique_fd.h"

namespace heddle::launcher {

struct HeldMountpoint {
  std::string path;  // canonical, as resolved
  UniqueFd fd;       // the directory itself, O_PATH
};

// Resolves `path` one component at a time without trusting what others control:
//  - root acting for another user (uid != 0) walks it as that user (as_mount_user in
//    source_access.h), so it reaches only what that user could search;
//  - root follows only symlinks nobody but root could change (owned by root, in a directory
//    only root may write or a sticky one); anyone else walks with their own rights, as
//    fusermount3 does again after us.
// A dead heddle mount found there is detached (the one held) and said so; then the directory
// must exist, be empty, not be a mount point, and belong to the mount's user (root's own
// mounts excepted). Throws heddle::Error with the errno and a hint.
[[nodiscard]] HeldMountpoint hold_mountpoint(const std::string& path, uid_t uid, gid_t gid);

}  // namespace heddle::launcher
