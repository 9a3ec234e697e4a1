// hostile_worker: takes the bootstrap like heddle-fuse-worker (fd 3 carries one SCM_RIGHTS
// message with [ipc socket, /dev/fuse fd, file broker socket, node journal memfd] and the
// WorkerBootstrap), then misbehaves on the IPC socket.
//
// The sandbox passes only the worker argv the supervisor builds and a fixed environment, so the
// misbehaviour is chosen by the executable's NAME: a copy named `hostile-MODE` runs MODE.
//
//   oversize         a first frame claiming 0xFFFFFFFF body bytes, then silence
//   truncated        a header claiming 100 bytes, 10 of them, then silence
//   unknown-kind     {"kind":"Explode"} instead of MountReady
//   status-first     StatusOk before MountReady
//   close-mid-frame  a header claiming 100 bytes, 10 of them, then exit (EOF mid-frame)
//   flood-reply      MountReady, then every Status answered with kFloodFrames StatusOk frames
//   unsolicited      MountReady, then Stopping frames sent continuously, unasked
//   silent           MountReady, then every request (Stop included) read and ignored
//   extra-fds        MountReady and every StatusOk carry SCM_RIGHTS fds (the /dev/fuse fd among
//                    them); otherwise a well-behaved worker (answers Stop with Stopping)
//   close-mid-reply  MountReady, then the reply to Status cut off after 10 bytes, then exit
//   split-reply      MountReady, then the first reply to Status in two writes kSplitPause
//                    apart (the header and 10 body bytes, then the rest); later ones whole
//   garish           text meant for terminals and logs everywhere it can put some: MountReady
//                    with a false pid and a mount_path of escape sequences, stderr lines with
//                    them (and "\r", "\n<0>", bytes that are not UTF-8), and StatusOk replies
//                    with the same, unknown fields and known ones of the wrong type; answers
//                    Stop with Stopping
//   number-path      MountReady, then a StatusOk whose mount_path is a number
//   mount-error      MountError whose message is escape sequences, "\r" and "\n<0>"
//   broker-probe     asks the supervisor's file broker (the bootstrap's third fd) for each of
//                    kBrokerProbes and reports "NAME=ERRNO ..." as its MountError
//   broker-flood     MountReady, then floods the file broker with requests, never reading an
//                    answer, while answering Status and Stop like a well-behaved worker
//   journal-probe    tries to resize and reseal the node journal memfd (the bootstrap's fourth
//                    fd), and to write in it, and reports "NAME=ERRNO ..." as its MountError
//   process-probe    tries to start a process (fork, vfork, a fork-like clone) and a thread,
//                    and reports "NAME=ERRNO ..." as its MountError
//
// It never serves FUSE: tests must not touch the mount. It always leaves with _exit(): inside
// the sandbox LeakSanitizer's exit-time check (which needs ptrace) cannot run.

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "heddle/ipc/fd_passing.h"
#include "heddle/ipc/file_broker.h"
#include "heddle/ipc/frame.h"
#include "heddle/ipc/journal_size.h"
#include "heddle/ipc/message.h"
#include "heddle/ipc/mount_spec.h"
#include "heddle/unique_fd.h"

namespace {

using namespace std::chrono_literals;
using namespace heddle;

constexpr std::string_view kPrefix = "hostile-";
constexpr int kFloodFrames = 20000;
constexpr int kExtraDups = 30;     // dups of the ipc fd passed along with the others
constexpr auto kLinger = 60s;      // "silence" is bounded: the supervisor kills us long before
constexpr auto kWriteTimeout = 5s;
constexpr auto kSplitPause = 600ms;  // longer than the tests' status_timeout

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "hostile_worker: %s\n", why.c_str());
  std::fflush(stderr);
  ::_exit(1);
}

[[noreturn]] void linger_then_exit() {
  std::this_thread::sleep_for(kLinger);
  ::_exit(0);
}

// Raw bytes, retried on short writes; errors (the supervisor closed its end) end us.
void write_raw(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t sent = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    if (sent <= 0) ::_exit(0);
    bytes.remove_prefix(static_cast<std::size_t>(sent));
  }
}

std::string header(std::uint32_t length) {
  std::string out(4, '\0');
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  return out;
}

// The first 10 of 100 promised body bytes.
std::string partial_frame() { return header(100) + R"({"kind":"M)"; }

void send(int fd, const ipc::Message& message) {
  try {
    ipc::write_frame(fd, message, kWriteTimeout);
  } catch (const std::exception&) {
    ::_exit(0);  // the supervisor is gone or stopped reading
  }
}

// The next request, or exit on EOF / a broken stream.
ipc::Message next_request(int fd) {
  try {
    if (auto message = ipc::read_frame(fd)) return *message;
  } catch (const std::exception&) {
  }
  ::_exit(0);
}

// A whole frame whose first byte carries `fds` (the kernel attaches them to that byte).
void send_with_fds(int fd, const ipc::Message& message, const std::vector<int>& fds) {
  try {
    ipc::send_fds(fd, fds, ipc::encode_frame(message));
  } catch (const std::exception& e) {
    die(std::string("send a frame with fds: ") + e.what());
  }
}

struct Args {
  std::string mode;
  int bootstrap_fd = 3;
};

Args parse(int argc, char** argv) {
  Args args;
  const std::string_view self = argc > 0 ? argv[0] : "";
  const auto slash = self.rfind('/');
  const std::string_view name = slash == std::string_view::npos ? self : self.substr(slash + 1);
  if (!name.starts_with(kPrefix)) die("run me as hostile-MODE, not " + std::string(name));
  args.mode = name.substr(kPrefix.size());
  for (int i = 1; i + 1 < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "--bootstrap-fd") {
      const std::string_view value = argv[i + 1];
      if (std::from_chars(value.data(), value.data() + value.size(), args.bootstrap_fd).ec !=
          std::errc{}) {
        die("bad --bootstrap-fd");
      }
    }
  }
  return args;
}

// An OSC 52 clipboard write, a colour, a title change, a carriage return, a forged journal
// line, C1 CSI (U+009B) and a right-to-left override: all valid UTF-8, so JSON carries them.
constexpr std::string_view kGarish =
    "\x1b]52;c;aGVkZGxl\x07\x1b[31mred\x1b]0;title\x07\rover\n<0>forged emergency\xc2\x9b"
    "2J\xe2\x80\xae";

void write_stderr(std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::write(STDERR_FILENO, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    text.remove_prefix(static_cast<std::size_t>(n));
  }
}

void send_body(int fd, const std::string& body) {
  write_raw(fd, header(static_cast<std::uint32_t>(body.size())) + body);
}

// A StatusOk as no worker of ours sends it: a false pid, escape sequences, and extra fields
// the supervisor does not know or that have the wrong type.
std::string garish_status() {
  const std::string garish(kGarish);
  nlohmann::ordered_json body = {{"kind", "StatusOk"}, {"pid", 1}, {"mount_path", garish}};
  body["thread"] = 5;                       // list printed it as a string
  body["overlay_bytes"] = "lots";           // and this as a number
  body["uptime_ms"] = "soon";
  body["serving"] = "yes";
  body["commit"] = garish;
  body["source"] = 9;
  body["supervisor_pid"] = "me";
  body["nodes"] = 7;                        // known and well-typed: kept
  body["bogus" + garish] = garish;
  return body.dump();
}

// What a compromised worker would ask the broker for; the source holds secret.txt (0600, the
// mount's user's), a symlink `root-link` to / and nothing else of note.
struct BrokerProbe {
  const char* name;
  ipc::BrokerOpen kind;
  std::string path;
};
std::vector<BrokerProbe> broker_probes() {
  using ipc::BrokerOpen;
  std::string deep = "d";
  while (deep.size() < 8192) deep += "/d";
  return {{"secret", BrokerOpen::kFile, "secret.txt"},
          {"dotdot", BrokerOpen::kFile, "../../../../etc/shadow"},
          {"inner-dotdot", BrokerOpen::kDirectory, "sub/../.."},
          {"absolute", BrokerOpen::kFile, "/etc/shadow"},
          {"proc-self", BrokerOpen::kFile, "/proc/self/environ"},
          {"proc-relative", BrokerOpen::kPath, "proc/self/root"},
          {"symlink", BrokerOpen::kFile, "root-link/etc/shadow"},
          {"symlink-last", BrokerOpen::kDirectory, "root-link"},
          {"nul", BrokerOpen::kFile, std::string("secret.txt\0x", 12)},
          {"long", BrokerOpen::kFile, deep}};
}

// The errno the broker answers (-1: no answer), closing any fd it passes.
int ask_broker(int broker_fd, const std::string& packet) {
  if (::send(broker_fd, packet.data(), packet.size(), MSG_NOSIGNAL) < 0) return -1;
  try {
    auto answer = ipc::receive_fds_between(broker_fd, 0, 1, ipc::kBrokerOwnerAnswerBytes, 5s);
    const auto decoded = ipc::decode_broker_answer(answer.payload);
    return decoded ? decoded->error : -1;
  } catch (const std::exception&) {
    return -1;
  }
}

// " NAME=ERRNO" for a syscall-style result (0 when it worked).
std::string outcome(const char* name, long rc) {
  return " " + std::string(name) + "=" + std::to_string(rc < 0 ? errno : 0);
}

// What a worker could do to the journal its successor will read.
std::string probe_journal(int journal_fd) {
  if (journal_fd < 0) return "journal: none";
  struct stat st {};
  if (::fstat(journal_fd, &st) != 0) return "journal: fstat failed";
  const auto size = static_cast<off_t>(ipc::kJournalBytes);
  std::string report = "journal: size=" + std::to_string(st.st_size);
  report += outcome("grow", ::ftruncate(journal_fd, size + 4096));
  report += outcome("shrink", ::ftruncate(journal_fd, 0));
  report += outcome("fallocate-past-end", ::fallocate(journal_fd, 0, size, 4096));
  report += outcome("write-past-end", ::pwrite(journal_fd, "x", 1, size));
  report += outcome("unseal", ::fcntl(journal_fd, F_ADD_SEALS, F_SEAL_WRITE));
  report += outcome("write-inside", ::pwrite(journal_fd, "x", 1, size - 1));
  if (::fstat(journal_fd, &st) == 0) report += " size-after=" + std::to_string(st.st_size);
  return report;
}

// A child of the worker could outlive it and keep the FUSE fd (issue 16): none may start.
// A child that does start exits at once.
std::string probe_processes() {
  std::string report = "processes:";
  const pid_t forked = ::fork();
  if (forked == 0) ::_exit(0);
  report += outcome("fork", forked);
  const pid_t vforked = ::vfork();
  if (vforked == 0) ::_exit(0);
  report += outcome("vfork", vforked);
  const long cloned = ::syscall(SYS_clone, SIGCHLD, nullptr, nullptr, nullptr, 0);
  if (cloned == 0) ::_exit(0);
  report += outcome("clone", cloned);
  // clone3 first, then clone with CLONE_THREAD: the way every thread starts.
  int thread_ran = 0;
  std::thread([&] { thread_ran = 1; }).join();
  report += " thread=" + std::to_string(thread_ran);
  return report;
}

[[noreturn]] void serve(const Args& args, int ipc_fd, int fuse_fd, int broker_fd, int journal_fd,
                        const ipc::WorkerBootstrap& boot) {
  const std::uint32_t pid = boot.host_pid;
  const ipc::MountReady ready{pid, boot.spec.mountpoint};
  const ipc::StatusOk ok{pid, boot.spec.mountpoint};
  const std::string& mode = args.mode;

  if (mode == "broker-probe") {
    std::string report = "broker:";
    for (const BrokerProbe& probe : broker_probes()) {
      // Built by hand: the probes include what encode_broker_request's callers never send.
      std::string packet = ipc::encode_broker_request({probe.kind, 0, ""});
      packet += probe.path;
      report += " " + std::string(probe.name) + "=" + std::to_string(ask_broker(broker_fd, packet));
    }
    send(ipc_fd, ipc::MountError{report});
    ::_exit(1);
  }
  if (mode == "journal-probe") {
    send(ipc_fd, ipc::MountError{probe_journal(journal_fd)});
    ::_exit(1);
  }
  if (mode == "process-probe") {
    send(ipc_fd, ipc::MountError{probe_processes()});
    ::_exit(1);
  }
  if (mode == "broker-flood") {
    send(ipc_fd, ready);
    std::thread([broker_fd] {
      const std::string packet =
          ipc::encode_broker_request({ipc::BrokerOpen::kFile, 0, "secret.txt"});
      // Blocks once both directions are full; the supervisor must still get rid of us.
      while (::send(broker_fd, packet.data(), packet.size(), MSG_NOSIGNAL) >= 0) {
      }
    }).detach();
    for (;;) {
      const ipc::Message request = next_request(ipc_fd);
      if (std::holds_alternative<ipc::Stop>(request)) {
        send(ipc_fd, ipc::Stopping{});
        ::_exit(0);
      }
      if (std::holds_alternative<ipc::Status>(request)) send(ipc_fd, ok);
    }
  }

  if (mode == "oversize") {
    write_raw(ipc_fd, header(0xFFFFFFFFu));
    linger_then_exit();
  }
  if (mode == "truncated") {
    write_raw(ipc_fd, partial_frame());
    linger_then_exit();
  }
  if (mode == "close-mid-frame") {
    write_raw(ipc_fd, partial_frame());
    ::_exit(0);
  }
  if (mode == "unknown-kind") {
    const std::string body = R"({"kind":"Explode","pid":1})";
    write_raw(ipc_fd, header(static_cast<std::uint32_t>(body.size())) + body);
    linger_then_exit();
  }
  if (mode == "status-first") {
    send(ipc_fd, ok);
    linger_then_exit();
  }

  if (mode == "mount-error") {
    send(ipc_fd, ipc::MountError{"it failed" + std::string(kGarish)});
    ::_exit(1);
  }
  if (mode == "garish") {
    send(ipc_fd, ipc::MountReady{1, "/" + std::string(kGarish)});
    // A line with everything, then one whose bytes are no UTF-8 at all (a lone 0x9b is CSI
    // to a terminal in 8-bit mode).
    write_stderr("[error] " + std::string(kGarish) + "\n");
    write_stderr("[warning] \x9b" "31m\xff\xfe\x1b[2J\r<0>forged\n");
    for (;;) {
      const ipc::Message request = next_request(ipc_fd);
      if (std::holds_alternative<ipc::Stop>(request)) {
        send(ipc_fd, ipc::Stopping{});
        ::_exit(0);
      }
      if (std::holds_alternative<ipc::Status>(request)) send_body(ipc_fd, garish_status());
    }
  }
  if (mode == "extra-fds") {
    // The /dev/fuse fd, the IPC socket itself, stdio and a pile of dups.
    std::vector<int> fds = {fuse_fd, ipc_fd, 0, 1, 2};
    for (int i = 0; i < kExtraDups; ++i) {
      const int dup = ::dup(ipc_fd);
      if (dup < 0) die("dup");
      fds.push_back(dup);
    }
    send_with_fds(ipc_fd, ready, fds);
    for (;;) {
      const ipc::Message request = next_request(ipc_fd);
      if (std::holds_alternative<ipc::Stop>(request)) {
        send(ipc_fd, ipc::Stopping{});
        ::_exit(0);
      }
      if (std::holds_alternative<ipc::Status>(request)) send_with_fds(ipc_fd, ok, fds);
    }
  }

  send(ipc_fd, ready);
  if (mode == "unsolicited") {
    // Blocks once the supervisor's receive buffer is full; it must still get rid of us.
    for (;;) write_raw(ipc_fd, ipc::encode_frame(ipc::Stopping{}));
  }
  int replies = 0;
  for (;;) {
    const ipc::Message request = next_request(ipc_fd);
    if (!std::holds_alternative<ipc::Status>(request)) continue;  // Stop is ignored too
    if (mode == "silent") continue;
    if (mode == "flood-reply") {
      const std::string frame = ipc::encode_frame(ok);
      std::string burst;
      for (int i = 0; i < kFloodFrames; ++i) burst += frame;
      write_raw(ipc_fd, burst);
    } else if (mode == "split-reply") {
      const std::string frame = ipc::encode_frame(ok);
      if (replies++ == 0) {
        write_raw(ipc_fd, frame.substr(0, 14));
        std::this_thread::sleep_for(kSplitPause);
        write_raw(ipc_fd, frame.substr(14));
      } else {
        write_raw(ipc_fd, frame);
      }
    } else if (mode == "number-path") {
      send_body(ipc_fd, R"({"kind":"StatusOk","pid":)" + std::to_string(pid) +
                            R"(,"mount_path":42})");
    } else if (mode == "close-mid-reply") {
      write_raw(ipc_fd, partial_frame());
      ::_exit(0);
    } else {
      die("unknown mode " + mode);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  ipc::ReceivedFds bootstrap;
  ipc::WorkerBootstrap boot;
  try {
    const UniqueFd fd(args.bootstrap_fd);
    // [ipc, /dev/fuse, file broker, node journal]; the broker's own hostile cases are
    // file_broker_test.cc.
    bootstrap = ipc::receive_fds_between(fd.get(), 3, 4, ipc::kMaxBootstrapBytes, 10s);
    boot = ipc::decode_bootstrap(bootstrap.payload);
  } catch (const std::exception& e) {
    die(std::string("bootstrap: ") + e.what());
  }
  // They stay open until we exit, like a real worker's.
  serve(args, bootstrap.fds[0].get(), bootstrap.fds[1].get(), bootstrap.fds[2].get(),
        bootstrap.fds.size() > 3 ? bootstrap.fds[3].get() : -1, boot);
}
