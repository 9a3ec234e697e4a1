// The libfuse low-level operations table for a Backend: a read-only view (every write is EROFS).
#pragma once

struct fuse_lowlevel_ops;

namespace heddle::worker {

class Backend;
class KernelOpens;
class WriteGate;

// The session's userdata: what the callbacks serve, and the gate modifying requests pass.
struct SessionContext {
  Backend& fs;
  WriteGate& gate;
  KernelOpens& kernel_opens;  // per-node state when the kernel opens files itself
};

// Its callbacks expect the session's userdata to be a SessionContext*.
[[nodiscard]] const fuse_lowlevel_ops& backend_operations();

}  // namespace heddle::worker
