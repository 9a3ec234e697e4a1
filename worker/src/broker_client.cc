#include "broker_client.h"

#include <cerrno>
#include <cstdint>

#include "heddle/error.h"
#include "heddle/ipc/fd_passing.h"

namespace heddle::worker {

int BrokerClient::ask(ipc::BrokerOpen kind, std::uint8_t root, const std::string& rel,
                      ipc::BrokerAnswer& answer, UniqueFd& fd) {
  if (const int err = ipc::check_broker_path(rel); err != 0) return err;
  const std::string request = ipc::encode_broker_request({kind, root, rel});
  std::lock_guard lock(mutex_);
  if (!socket_) return EACCES;
  try {
    ipc::send_fds(socket_.get(), {}, request);
    auto got = ipc::receive_fds_between(socket_.get(), 0, 1, ipc::kBrokerOwnerAnswerBytes);
    const auto decoded = ipc::decode_broker_answer(got.payload);
    const bool owner = kind == ipc::BrokerOpen::kOwner;
    // In step: an fd with success only, and never with an owner; an owner when asked.
    if (!decoded || got.fds.size() != (decoded->error == 0 && !owner ? 1u : 0u) ||
        (decoded->error == 0 && decoded->has_owner != owner)) {
      throw Error("file broker answer out of step", EPROTO);
    }
    answer = *decoded;
    if (!got.fds.empty()) fd = std::move(got.fds[0]);
    return answer.error;
  } catch (const Error&) {
    // The supervisor stopped serving (or broke the protocol): the worker's own refusal stands.
    socket_.reset();
    return EACCES;
  }
}

OpenResult BrokerClient::open(ipc::BrokerOpen kind, std::uint8_t root, const std::string& rel) {
  ipc::BrokerAnswer answer;
  UniqueFd fd;
  const int err = ask(kind, root, rel, answer, fd);
  return {std::move(fd), err};
}

int BrokerClient::owner(std::uint8_t root, const std::string& rel, uid_t& uid, gid_t& gid) {
  ipc::BrokerAnswer answer;
  UniqueFd fd;
  if (const int err = ask(ipc::BrokerOpen::kOwner, root, rel, answer, fd); err != 0) return err;
  uid = answer.uid;
  gid = answer.gid;
  return 0;
}

}  // namespace heddle::worker
