// The libfuse low-level operations table for DirFs: a read-only view (every write is EROFS).
#pragma once

struct fuse_lowlevel_ops;

namespace heddle::worker {

// Its callbacks expect the session's userdata to be a DirFs*.
[[nodiscard]] const fuse_lowlevel_ops& dir_fs_operations();

}  // namespace heddle::worker
