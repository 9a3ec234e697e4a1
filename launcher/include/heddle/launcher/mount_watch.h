// Noticing that a mount left this mount namespace, whoever removed it: `umount`, `umount -l`
// (after which a reader's open file keeps the FUSE connection, and so the worker, alive),
// `fusermount3 -u [-z]`, a file manager's eject, a shutdown.
#pragma once

#include "heddle/launcher/mountinfo.h"
#include "heddle/unique_fd.h"

namespace heddle::launcher {

class MountWatch {
 public:
  // Watches `mount` through /proc/self/mountinfo, which polls POLLPRI once for every change
  // of this namespace's mounts. Throws heddle::Error if it cannot be opened.
  explicit MountWatch(const MountIdentity& mount);

  // Poll for POLLPRI; each wake-up is one change (of any mount), to be checked by attached().
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  // Is the mount still attached here? Reads mountinfo only: no FUSE server is asked. A
  // mountinfo that cannot be read counts as attached (never end a mount on a guess).
  [[nodiscard]] bool attached() const noexcept;

 private:
  MountIdentity mount_;
  UniqueFd fd_;
};

}  // namespace heddle::launcher
