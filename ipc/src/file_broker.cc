#include "heddle/ipc/file_broker.h"

#include <fcntl.h>

#include <cerrno>

namespace heddle::ipc {

int check_broker_path(std::string_view path) {
  if (path.size() > kBrokerMaxPath) return ENAMETOOLONG;
  if (path == ".") return 0;
  if (path.empty() || path.front() == '/' || path.find('\0') != std::string_view::npos) {
    return EINVAL;
  }
  for (std::size_t start = 0;;) {
    const std::size_t end = path.find('/', start);
    const std::string_view part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return EINVAL;
    if (part.size() > NAME_MAX) return ENAMETOOLONG;
    if (end == std::string_view::npos) return 0;
    start = end + 1;
  }
}

int broker_open_flags(BrokerOpen kind) {
  switch (kind) {
    case BrokerOpen::kPath:
    case BrokerOpen::kOwner: return O_PATH | O_NOFOLLOW | O_CLOEXEC;
    case BrokerOpen::kFile: return O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
    case BrokerOpen::kDirectory: return O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
  }
  return -1;
}

std::optional<BrokerOpen> broker_kind_for(int flags) {
  // The broker never follows a symlink, so neither may the open it stands in for.
  if ((flags & O_NOFOLLOW) == 0) return std::nullopt;
  if ((flags & O_PATH) != 0) return BrokerOpen::kPath;
  if ((flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC | O_APPEND)) != 0) {
    return std::nullopt;  // the broker never opens for writing
  }
  if ((flags & O_DIRECTORY) != 0) return BrokerOpen::kDirectory;
  return BrokerOpen::kFile;
}

std::string encode_broker_request(const BrokerRequest& request) {
  std::string packet;
  packet.reserve(kBrokerHeaderBytes + request.path.size());
  packet += static_cast<char>(request.kind);
  packet += static_cast<char>(request.root);
  packet += request.path;
  return packet;
}

DecodedBrokerRequest decode_broker_request(std::string_view packet) {
  DecodedBrokerRequest out;
  if (packet.size() > kMaxBrokerRequest) {
    out.error = ENAMETOOLONG;
    return out;
  }
  if (packet.size() < kBrokerHeaderBytes) {
    out.error = EINVAL;
    return out;
  }
  const auto kind = static_cast<std::uint8_t>(packet[0]);
  if (kind < 1 || kind > 4) {
    out.error = EINVAL;
    return out;
  }
  out.request.kind = static_cast<BrokerOpen>(kind);
  out.request.root = static_cast<std::uint8_t>(packet[1]);
  const std::string_view path = packet.substr(kBrokerHeaderBytes);
  out.error = check_broker_path(path);
  if (out.error == 0) out.request.path = path;
  return out;
}

namespace {

void put_u32(std::string& out, std::uint32_t value) {
  for (int i = 0; i < 4; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
}

std::uint32_t get_u32(std::string_view in) {
  std::uint32_t value = 0;
  for (int i = 3; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(in[i]);
  return value;
}

}  // namespace

std::string encode_broker_answer(const BrokerAnswer& answer) {
  std::string out;
  put_u32(out, static_cast<std::uint32_t>(answer.error));
  if (answer.has_owner) {
    put_u32(out, answer.uid);
    put_u32(out, answer.gid);
  }
  return out;
}

std::optional<BrokerAnswer> decode_broker_answer(std::string_view packet) {
  if (packet.size() != kBrokerAnswerBytes && packet.size() != kBrokerOwnerAnswerBytes) {
    return std::nullopt;
  }
  BrokerAnswer answer;
  answer.error = static_cast<int>(get_u32(packet));
  if (packet.size() == kBrokerOwnerAnswerBytes) {
    answer.has_owner = true;
    answer.uid = get_u32(packet.substr(4));
    answer.gid = get_u32(packet.substr(8));
  }
  return answer;
}

}  // namespace heddle::ipc
