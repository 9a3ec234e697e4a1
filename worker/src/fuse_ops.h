// The libfuse low-level operations table for a Backend: a read-only view (every write is EROFS).
#pragma once

struct fuse_lowlevel_ops;

namespace heddle::worker {

class Backend;
class KernelOpens;
class WriteGate;
class NodeJournal;
class OpenHandles;
struct FuseIo;

// The session's userdata: what the callbacks serve, the gate modifying requests pass, the open
// handles, and (issue 16) the journal every reference and handle is written to first, and the
// state of the session's custom I/O (fuse_session.cc).
struct SessionContext {
  Backend& fs;
  WriteGate& gate;
  OpenHandles& handles;
  KernelOpens& kernel_opens;  // per-node state when the kernel opens files itself
  NodeJournal* journal = nullptr;  // null: no journal (a worker that cannot be restarted)
  FuseIo* io = nullptr;
};

// Its callbacks expect the session's userdata to be a SessionContext*.
[[nodiscard]] const fuse_lowlevel_ops& backend_operations();

}  // namespace heddle::worker
