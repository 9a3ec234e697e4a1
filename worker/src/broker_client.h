// The worker's side of the supervisor's file broker (heddle/ipc/file_broker.h): asks for a path
// of its source that its own open was refused (EACCES), and gets an fd opened with the mount's
// user's authority, or the supervisor's errno.
#pragma once

#include <sys/types.h>

#include <mutex>
#include <string>

#include "heddle/ipc/file_broker.h"
#include "heddle/unique_fd.h"
#include "source_tree.h"

namespace heddle::worker {

class BrokerClient {
 public:
  explicit BrokerClient(UniqueFd socket) : socket_(std::move(socket)) {}

  // The path `rel` beneath source root `root`, opened as `kind`. Never names a path the
  // supervisor would refuse (checked here first, and there again). One request at a time:
  // FUSE threads wait their turn. EACCES once the broker is gone.
  [[nodiscard]] OpenResult open(ipc::BrokerOpen kind, std::uint8_t root, const std::string& rel);

  // The owner and group of `rel` as the supervisor sees them (host ids). 0 or an errno.
  [[nodiscard]] int owner(std::uint8_t root, const std::string& rel, uid_t& uid, gid_t& gid);

 private:
  int ask(ipc::BrokerOpen kind, std::uint8_t root, const std::string& rel,
          ipc::BrokerAnswer& answer, UniqueFd& fd);

  std::mutex mutex_;
  UniqueFd socket_;
};

}  // namespace heddle::worker
