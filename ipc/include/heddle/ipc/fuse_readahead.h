// How far the kernel reads ahead on a mount: 1 MiB, one READ of the 256 pages libfuse asks
// for, where the kernel's default is 128 KiB. A cold sequential read gains about a third
// (bench/README.md). Only root can raise it (the mount's bdi in sysfs, which the supervisor
// writes); the worker's FUSE_INIT reply asks for as much, since the kernel keeps the lower of
// the two. Not more: a git blob's reader keeps 2 MiB behind its latest read, and a window
// past that makes out-of-order reads inflate again.
#pragma once

namespace heddle::ipc {

inline constexpr unsigned kFuseReadaheadKib = 1024;

}  // namespace heddle::ipc
