#include "broker_client.h"

#include <cerrno>
#include <cstdint>

#include "heddle/error.h"
#include "heddle/ipc/fd_passing.h"

namespace heddle::worker {

OpenResult BrokerClient::open(ipc::BrokerOpen kind, std::uint8_t root, const std::string& rel) {
  if (const int err = ipc::check_broker_path(rel); err != 0) return {UniqueFd(), err};
  const std::string request = ipc::encode_broker_request({kind, root, rel});
  std::lock_guard lock(mutex_);
  if (!socket_) return {UniqueFd(), EACCES};
  try {
    ipc::send_fds(socket_.get(), {}, request);
    auto answer = ipc::receive_fds_between(socket_.get(), 0, 1, ipc::kBrokerAnswerBytes);
    if (answer.payload.size() != ipc::kBrokerAnswerBytes) throw Error("short answer", EPROTO);
    std::uint32_t error = 0;
    for (int i = 3; i >= 0; --i) error = (error << 8) | static_cast<unsigned char>(answer.payload[i]);
    if (error == 0 && answer.fds.size() == 1) return {std::move(answer.fds[0]), 0};
    if (error != 0 && answer.fds.empty()) return {UniqueFd(), static_cast<int>(error)};
    throw Error("answer out of step", EPROTO);
  } catch (const Error&) {
    // The supervisor stopped serving (or broke the protocol): the worker's own refusal stands.
    socket_.reset();
    return {UniqueFd(), EACCES};
  }
}

}  // namespace heddle::worker
