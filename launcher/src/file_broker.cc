#include "heddle/launcher/file_broker.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <string_view>

#include "heddle/error.h"
#include "heddle/ipc/fd_passing.h"
#include "heddle/ipc/file_broker.h"
#include "heddle/launcher/source_access.h"

namespace heddle::launcher {
namespace {

UniqueFd open_strictly_beneath(int root, const std::string& path, int flags, int& error) {
  struct open_how how {};
  how.flags = static_cast<unsigned long long>(flags);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  for (int attempt = 0;; ++attempt) {
    const long fd = ::syscall(SYS_openat2, root, path.c_str(), &how, sizeof how);
    if (fd >= 0) return UniqueFd(static_cast<int>(fd));
    // EAGAIN: a concurrent rename the kernel could not rule out; worth a few retries.
    if ((errno == EINTR || errno == EAGAIN) && attempt < 16) continue;
    error = errno;
    return UniqueFd();
  }
}

}  // namespace

BrokerSockets make_broker_sockets() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) {
    throw_errno("socketpair for the file broker");
  }
  return BrokerSockets{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

FileBroker::FileBroker(std::vector<UniqueFd> roots, UniqueFd socket, uid_t uid, gid_t gid)
    : roots_(std::move(roots)), socket_(std::move(socket)), uid_(uid), gid_(gid) {
  thread_ = std::thread([this] {
    try {
      // Every open below is checked against the mount's user's credentials, not root's.
      as_mount_user(uid_, gid_, [this] { serve(); });
    } catch (const std::exception& e) {
      spdlog::warn("file broker: {}", e.what());
    }
  });
}

FileBroker::~FileBroker() { stop(); }

void FileBroker::stop() {
  if (socket_) ::shutdown(socket_.get(), SHUT_RDWR);
  if (thread_.joinable()) thread_.join();
}

int FileBroker::open(const std::vector<char>& packet, std::size_t size, UniqueFd& fd) const {
  // Checked again here: the worker may be anyone's by now.
  const auto decoded = ipc::decode_broker_request(std::string_view(packet.data(), size));
  if (decoded.error != 0) return decoded.error;
  const ipc::BrokerRequest& request = decoded.request;
  if (request.root >= roots_.size()) return EINVAL;
  const int root = roots_[request.root].get();
  int error = 0;
  if (request.kind == ipc::BrokerOpen::kFile) {
    // Look before opening: opening a FIFO or a device could already act on it.
    const UniqueFd path = open_strictly_beneath(root, request.path,
                                                ipc::broker_open_flags(ipc::BrokerOpen::kPath), error);
    if (!path) return error;
    struct stat st {};
    if (::fstat(path.get(), &st) != 0) return errno;
    if (S_ISLNK(st.st_mode)) return ELOOP;  // as the open itself would say
    if (!S_ISREG(st.st_mode)) return S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
  }
  fd = open_strictly_beneath(root, request.path, ipc::broker_open_flags(request.kind), error);
  if (!fd) return error;
  if (request.kind == ipc::BrokerOpen::kPath) {
    // O_PATH|O_NOFOLLOW opens a trailing magic link (/proc/PID/root, say) as itself, even
    // under RESOLVE_NO_MAGICLINKS; such an fd reopened through /proc/self/fd would jump.
    struct stat st {};
    struct statfs on {};
    if (::fstat(fd.get(), &st) != 0 ||
        (S_ISLNK(st.st_mode) && (::fstatfs(fd.get(), &on) != 0 || on.f_type == PROC_SUPER_MAGIC))) {
      fd.reset();
      return ELOOP;
    }
  }
  if (request.kind == ipc::BrokerOpen::kFile) {
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {  // swapped since the look
      fd.reset();
      return EINVAL;
    }
  }
  return 0;
}

void FileBroker::serve() {
  // One byte more than a request may have: a longer packet arrives truncated and is refused.
  std::vector<char> packet(ipc::kMaxBrokerRequest + 1);
  for (;;) {
    msghdr message{};
    iovec data{packet.data(), packet.size()};
    message.msg_iov = &data;
    message.msg_iovlen = 1;
    // No control buffer: fds the worker might send are discarded by the kernel, never ours.
    const ssize_t got = ::recvmsg(socket_.get(), &message, MSG_CMSG_CLOEXEC);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return;  // the worker's end closed, or stop()
    UniqueFd fd;
    ipc::BrokerAnswer reply;
    reply.error = (message.msg_flags & MSG_TRUNC) != 0
                      ? ENAMETOOLONG
                      : open(packet, static_cast<std::size_t>(got), fd);
    (reply.error == 0 ? granted_ : refused_).fetch_add(1, std::memory_order_relaxed);
    if (reply.error == 0 && packet[0] == static_cast<char>(ipc::BrokerOpen::kOwner)) {
      // The owner only: the O_PATH fd stays here.
      struct stat st {};
      if (::fstat(fd.get(), &st) == 0) {
        reply.has_owner = true;
        reply.uid = st.st_uid;
        reply.gid = st.st_gid;
      } else {
        reply.error = errno;
      }
      fd.reset();
    }
    const std::string answer = ipc::encode_broker_answer(reply);
    try {
      if (fd) {
        const std::array<int, 1> fds{fd.get()};
        ipc::send_fds(socket_.get(), fds, answer);
      } else {
        ssize_t sent;
        do {
          sent = ::send(socket_.get(), answer.data(), answer.size(), MSG_NOSIGNAL);
        } while (sent < 0 && errno == EINTR);
        if (sent < 0) return;
      }
    } catch (const Error&) {
      return;  // the worker is gone, or stop()
    }
  }
}

}  // namespace heddle::launcher
