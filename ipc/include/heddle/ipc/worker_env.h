#pragma once

// Environment variables the worker reads itself, which the supervisor passes through. Named
// here, once, for both processes.
namespace heddle::ipc {

// Set to anything: the worker aborts before answering FUSE_INIT (the fault matrix's panic).
inline constexpr const char* kPanicOnInitEnv = "HEDDLE_FUSE_WORKER_PANIC_ON_INIT";
// Milliseconds the worker waits before MountReady, so a test can act in that phase.
inline constexpr const char* kHoldReadyEnv = "HEDDLE_FUSE_WORKER_TEST_HOLD_READY_MS";
// Tests only (the unsandboxed harness): set, a successor acts as on a kernel without
// FUSE_NOTIFY_RESEND (before Linux 6.9), failing the requests its predecessor had taken.
inline constexpr const char* kNoResendEnv = "HEDDLE_FUSE_WORKER_TEST_NO_RESEND";
// Tests only: "before-init", "at-init" or "at-init-unrecorded": a mount's first worker
// (generation 1) SIGKILLs itself before it reads FUSE_INIT, or once it has read it and before
// it replies (once it has recorded the request in the journal, or before).
inline constexpr const char* kFirstDiesEnv = "HEDDLE_FUSE_WORKER_TEST_FIRST_DIES";
// The worker's RLIMIT_DATA in MiB (0: none); see worker/src/memory_limit.h for the default.
inline constexpr const char* kMemoryLimitEnv = "HEDDLE_FUSE_WORKER_MEMORY_LIMIT_MIB";

}  // namespace heddle::ipc
