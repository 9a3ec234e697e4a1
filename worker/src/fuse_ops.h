// The libfuse low-level operations table for a Backend: a read-only view (every write is EROFS).
#pragma once

struct fuse_lowlevel_ops;

namespace heddle::worker {

// Its callbacks expect the session's userdata to be a Backend*.
[[nodiscard]] const fuse_lowlevel_ops& backend_operations();

}  // namespace heddle::worker
