// heddle-fuse-launcher as a drop-in for heddle's own FUSE worker binary. The test plays
// heddle's supervisor step by step with raw syscalls, as heddle's Rust `Supervisor` does:
// a socketpair, CLOEXEC cleared on the child's end, the launcher spawned (stdin /dev/null) as
// `--repo-root R --thread-id T --mountpoint M --ipc-fd N` with HEDDLE_FUSE_WORKER_BIN naming
// the launcher itself, the child's end closed here, then the handshake read under a deadline,
// Status, Stop, and the Stop → SIGTERM → SIGKILL escalation for a worker that will not stop.
//
// The wire is checked byte for byte against tests/data/frames.txt (the bytes heddle's worker
// writes), without this project's codec: a bug shared by the codec and the launcher would
// otherwise pass. After every case: no mount at M and no process of the launcher's tree left
// (the test is a child subreaper, so orphans come to us to be reaped).
//
// As heddle's own, the mount is writable, into the default overlay directory: under
// $XDG_STATE_HOME, which every launch here points into the case's scratch directory, or for
// root under /var/lib/heddle-fuse/overlays, where TearDown discards what the case made.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <iostream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "heddle/launcher/control_socket.h"
#include "support/child_process.h"
#include "support/test_support.h"
#include "support/tree_snapshot.h"

extern char** environ;

namespace heddle::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using OrderedJson = nlohmann::ordered_json;

// heddle's DEFAULT_STOP_GRACE: how long it waits for the worker's exit after Stop.
constexpr auto kHeddleGrace = 2000ms;
// Mounting may start a sandbox and a git reader; generous, but bounded.
constexpr auto kHandshakeDeadline = 20s;
// Everything must be gone this long after the launcher is.
constexpr auto kSettle = 5s;
// Per-case watchdog for runs outside ctest (ctest's TIMEOUT is 120 s).
constexpr unsigned kWatchdogSeconds = 110;

long ms_since(Clock::time_point start) {
  return static_cast<long>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
}

int poll_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<long>(left.count(), 0));
}

// ---- the reference bytes, from tests/data/frames.txt ------------------------------------------

std::string unhex(const std::string& hex) {
  std::string bytes;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    bytes.push_back(static_cast<char>(std::stoul(hex.substr(i, 2), nullptr, 16)));
  }
  return bytes;
}

std::string hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (const unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

// The frames of one class ("valid" or "lenient") in frames.txt: body -> whole frame. The
// body is taken from the hex (a lenient body's own spaces are not visible in its label).
std::map<std::string, std::string> frames_of_class(const std::string& label) {
  std::map<std::string, std::string> result;
  std::ifstream in(std::string(HEDDLE_TEST_DATA_DIR) + "/frames.txt");
  bool wanted = false;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("hex ", 0) == 0 && wanted) {
      std::string digits = line.substr(4);
      digits.erase(0, digits.find_first_not_of(' '));
      while (!digits.empty() && digits.back() == ' ') digits.pop_back();
      const std::string frame = unhex(digits);
      if (frame.size() >= 4) result[frame.substr(4)] = frame;
    }
    wanted = line.rfind(label + " ", 0) == 0;
  }
  EXPECT_FALSE(result.empty()) << "no " << label << " frames in frames.txt";
  return result;
}

// What heddle's worker writes and reads, byte-exact.
const std::map<std::string, std::string>& reference_frames() {
  static const std::map<std::string, std::string> frames = frames_of_class("valid");
  return frames;
}

// What heddle's reader accepts although no encoder writes it.
const std::map<std::string, std::string>& lenient_frames() {
  static const std::map<std::string, std::string> frames = frames_of_class("lenient");
  return frames;
}

// The reference frame whose body has kind `kind` (the first one listed).
std::string reference_frame(const std::string& kind) {
  for (const auto& [body, frame] : reference_frames()) {
    if (OrderedJson::parse(body).value("kind", "") == kind) return frame;
  }
  ADD_FAILURE() << "frames.txt has no " << kind << " frame";
  return {};
}

std::string le32(std::uint32_t n) {
  std::string out(4, '\0');
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out;
}

// What heddle's worker writes for MountReady/StatusOk with this pid and mount path: the
// reference frame of that kind with its pid and mount_path replaced. (Re-serialising the
// unchanged reference body reproduces it exactly, which is checked, so the replacement is
// written the way serde_json writes it.)
std::string expected_frame(const std::string& kind, pid_t pid, const std::string& mount_path) {
  const std::string reference = reference_frame(kind);
  if (reference.size() < 4) return {};
  OrderedJson body = OrderedJson::parse(reference.substr(4));
  EXPECT_EQ(le32(static_cast<std::uint32_t>(reference.size() - 4)) + body.dump(), reference)
      << "compact re-serialisation does not reproduce frames.txt's " << kind;
  body["pid"] = pid;
  body["mount_path"] = mount_path;
  const std::string text = body.dump();
  return le32(static_cast<std::uint32_t>(text.size())) + text;
}

std::set<std::string> keys_of(const std::string& body) {
  std::set<std::string> keys;
  try {
    const OrderedJson parsed = OrderedJson::parse(body);
    if (!parsed.is_object()) return {"<not an object>"};
    for (auto it = parsed.begin(); it != parsed.end(); ++it) keys.insert(it.key());
  } catch (const std::exception&) {
    keys.insert("<not JSON>");
  }
  return keys;
}

std::string kind_of(const std::string& body) {
  try {
    return OrderedJson::parse(body).value("kind", "<no kind>");
  } catch (const std::exception&) {
    return "<not JSON>";
  }
}

// ---- raw socket I/O with deadlines -------------------------------------------------------------

enum class End { kFrame, kEof, kTimeout, kError };

std::string end_name(End end) {
  switch (end) {
    case End::kFrame: return "frame";
    case End::kEof: return "EOF";
    case End::kTimeout: return "timeout";
    case End::kError: return "error";
  }
  return "?";
}

struct RawFrame {
  End end = End::kError;
  std::string bytes;  // the whole frame (header + body), or what arrived of it
  std::string body;
  std::string detail;

  [[nodiscard]] std::string describe() const {
    if (end == End::kFrame) return "frame " + body;
    return end_name(end) + (detail.empty() ? "" : " (" + detail + ")") +
           (bytes.empty() ? "" : " after bytes " + hex(bytes));
  }
};

// Appends exactly `n` bytes from `fd` to `out`; kEof if the stream ends first.
End read_exact(int fd, std::size_t n, std::string& out, Clock::time_point deadline,
               std::string& detail) {
  std::size_t got = 0;
  while (got < n) {
    pollfd pfd{fd, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, poll_ms(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) {
      detail = std::string("poll: ") + std::strerror(errno);
      return End::kError;
    }
    if (ready == 0) return End::kTimeout;
    char buffer[4096];
    const ssize_t r = ::recv(fd, buffer, std::min(sizeof buffer, n - got), 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      // A peer that closed with unread data in its queue shows as ECONNRESET: heddle's
      // read_exact reports that as an error, not EOF, so keep it apart.
      detail = std::string("recv: ") + std::strerror(errno);
      return End::kError;
    }
    if (r == 0) return End::kEof;
    out.append(buffer, static_cast<std::size_t>(r));
    got += static_cast<std::size_t>(r);
  }
  return End::kFrame;
}

// One frame as heddle's framing::read_frame reads it: u32 LE length (<= 64 KiB), then the body.
RawFrame read_raw_frame(int fd, Clock::time_point deadline) {
  RawFrame frame;
  frame.end = read_exact(fd, 4, frame.bytes, deadline, frame.detail);
  if (frame.end != End::kFrame) {
    if (frame.end == End::kEof && !frame.bytes.empty()) frame.detail = "EOF inside the header";
    return frame;
  }
  std::uint32_t length = 0;
  for (int i = 3; i >= 0; --i) length = (length << 8) | static_cast<unsigned char>(frame.bytes[i]);
  if (length > 65536) {
    frame.end = End::kError;
    frame.detail = "frame length " + std::to_string(length) + " over 64 KiB";
    return frame;
  }
  frame.end = read_exact(fd, length, frame.bytes, deadline, frame.detail);
  if (frame.end == End::kEof) frame.detail = "EOF inside a frame";
  if (frame.end == End::kFrame) frame.body = frame.bytes.substr(4);
  return frame;
}

bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// ---- mounts, straight from /proc/self/mountinfo -------------------------------------------------

std::string unescape_mountinfo(const std::string& field) {
  std::string out;
  for (std::size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      const std::string octal = field.substr(i + 1, 3);
      if (octal.size() == 3 && octal.find_first_not_of("01234567") == std::string::npos) {
        out.push_back(static_cast<char>(std::stoi(octal, nullptr, 8)));
        i += 3;
        continue;
      }
    }
    out.push_back(field[i]);
  }
  return out;
}

// The fstypes of every mount whose mount point is `path` (canonical), bottom first.
std::vector<std::string> mounts_at(const fs::path& path) {
  std::vector<std::string> types;
  std::ifstream in("/proc/self/mountinfo");
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point;
    fields >> id >> parent >> devno >> root >> mount_point;
    if (unescape_mountinfo(mount_point) != path.string()) continue;
    const auto separator = line.find(" - ");
    std::string fstype;
    if (separator != std::string::npos) std::istringstream(line.substr(separator + 3)) >> fstype;
    types.push_back(fstype);
  }
  return types;
}

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& part : parts) out += (out.empty() ? "" : " ") + part;
  return out.empty() ? "<none>" : out;
}

// ---- processes, from /proc ---------------------------------------------------------------------

struct ProcEntry {
  pid_t ppid = 0;
  char state = '?';
  std::string comm;
};

std::map<pid_t, ProcEntry> process_table() {
  std::map<pid_t, ProcEntry> table;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;
    const auto open_paren = stat.find('(');
    const auto close_paren = stat.rfind(')');
    if (open_paren == std::string::npos || close_paren == std::string::npos) continue;
    ProcEntry proc;
    proc.comm = stat.substr(open_paren + 1, close_paren - open_paren - 1);
    std::istringstream rest(stat.substr(close_paren + 2));
    rest >> proc.state >> proc.ppid;
    table[static_cast<pid_t>(std::stol(name))] = proc;
  }
  return table;
}

// Every process below `root` (not `root` itself), by pid.
std::map<pid_t, std::string> descendants_of(pid_t root) {
  const auto table = process_table();
  std::map<pid_t, std::string> found;
  std::vector<pid_t> frontier = {root};
  while (!frontier.empty()) {
    const pid_t parent = frontier.back();
    frontier.pop_back();
    for (const auto& [pid, proc] : table) {
      if (proc.ppid == parent && !found.contains(pid)) {
        found[pid] = proc.comm + "/" + proc.state;
        frontier.push_back(pid);
      }
    }
  }
  return found;
}

std::string describe(const std::map<pid_t, std::string>& procs) {
  std::string out;
  for (const auto& [pid, what] : procs) out += (out.empty() ? "" : ", ") + std::to_string(pid) + " " + what;
  return out.empty() ? "<none>" : out;
}

// No process left below us. Exited orphans that came to us (we are a subreaper), such as a
// fusermount3 whose launcher was SIGKILLed while it ran, are reaped first, as a subreaper must:
// a zombie is not a process left behind.
bool nothing_left_below_us() {
  for (const auto& [pid, what] : descendants_of(::getpid())) {
    if (what.ends_with("/Z")) ::waitpid(pid, nullptr, WNOHANG);
  }
  return descendants_of(::getpid()).empty();
}

std::string wait_status_text(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("signal ") + ::strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

// ---- one launcher, spawned the way heddle spawns its worker ------------------------------------

struct Launch {
  pid_t pid = -1;
  UniqueFd sock;          // heddle's end of the socketpair
  int child_fd = -1;      // the number the child's end had (and has in the child)
  std::string out_log;    // the child's stdout
  std::string err_log;    // the child's stderr
  Clock::time_point started;
  bool reaped = false;
  int status = 0;

  // Reaps the launcher if it exits by `deadline`.
  bool exited_by(Clock::time_point deadline) {
    while (!reaped) {
      const pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid) {
        reaped = true;
        break;
      }
      if (r < 0 && errno != EINTR) return false;  // not ours any more: cannot happen
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(2ms);
    }
    return true;
  }
  bool exited_within(std::chrono::milliseconds timeout) { return exited_by(Clock::now() + timeout); }
  [[nodiscard]] bool exited_zero() const { return reaped && WIFEXITED(status) && WEXITSTATUS(status) == 0; }
  [[nodiscard]] int exit_code() const { return reaped && WIFEXITED(status) ? WEXITSTATUS(status) : -1; }
  [[nodiscard]] std::string status_text() const { return reaped ? wait_status_text(status) : "running"; }
  [[nodiscard]] std::string err() const { return slurp(err_log); }
  [[nodiscard]] std::string output() const {
    return "stdout:\n" + slurp(out_log) + "stderr:\n" + slurp(err_log);
  }
};

class DropinTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HEDDLE_REQUIRE_MOUNT();
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    ::alarm(kWatchdogSeconds);
    std::string pattern = "/tmp/heddle-dropin-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
    fs::permissions(root_, fs::perms(0755));
    mountpoint_ = root_ / "mnt";
    make_dir(mountpoint_);
    repo_ = root_ / "repo";
    bare_ = root_ / "bare.git";
    make_dir(repo_);
    // World-readable: for root's mounts the sandboxed worker reads it as uid 65534.
    const std::string script =
        "set -e; umask 022; cd \"$0\"; export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1;"
        "g='git -c user.name=t -c user.email=t@t.invalid -c init.defaultBranch=main';"
        "$g init -q -b main .; printf 'alpha\\n' >a.txt; mkdir sub; printf 'beta\\n' >sub/b.txt;"
        "$g add -A; $g commit -q -m one; $g branch feature;"
        "printf 'alpha two\\n' >a.txt; printf 'gamma\\n' >c.txt; $g add -A; $g commit -q -m two;"
        "$g clone -q --bare . \"$1\"; chmod -R a+rX . \"$1\"";
    const CommandResult made = run_command({"/bin/sh", "-c", script, repo_.string(), bare_.string()});
    ASSERT_EQ(made.exit_code, 0) << made.err;
    const CommandResult first = run_command({"/usr/bin/git", "-C", repo_.string(), "rev-parse", "feature"});
    ASSERT_EQ(first.exit_code, 0) << first.err;
    first_commit_ = first.out.substr(0, first.out.find('\n'));
    watched_.push_back(mountpoint_);
  }

  void TearDown() override {
    if (root_.empty()) {
      ::alarm(0);
      return;
    }
    // The launchers we started first: SIGKILL and reap any still running.
    for (auto& launch : launches_) {
      if (!launch->reaped) {
        ADD_FAILURE() << "launcher " << launch->pid << " still running at the end; killing it";
        ::kill(launch->pid, SIGKILL);
        launch->exited_within(10s);
      }
    }
    // Then whatever of their trees reparented to us: nothing may be left.
    if (!eventually(nothing_left_below_us, kSettle)) {
      ADD_FAILURE() << "processes left behind: " << describe(descendants_of(::getpid()));
      for (const auto& [pid, what] : descendants_of(::getpid())) ::kill(pid, SIGKILL);
      eventually([] {
        for (const auto& [pid, what] : descendants_of(::getpid())) ::waitpid(pid, nullptr, WNOHANG);
        return descendants_of(::getpid()).empty();
      });
    }
    for (const fs::path& mp : watched_) {
      for (int i = 0; i < 8 && !mounts_at(mp).empty(); ++i) {
        ADD_FAILURE() << "mount left at " << mp << " (" << join(mounts_at(mp)) << "); removing it";
        if (running_as_root()) {
          ::umount2(mp.c_str(), MNT_DETACH);
        } else {
          (void)run_command({"/usr/bin/fusermount3", "-u", "-z", mp.string()}, 10s);
        }
      }
    }
    if (HasFailure()) {
      for (const auto& launch : launches_) {
        std::cerr << "---- launcher " << launch->pid << " (" << launch->status_text()
                  << ") output:\n" << launch->output() << "----\n";
      }
    }
    // The overlays this case's mounts made (for root they are outside root_).
    for (const std::string& key : overlays_of_this_case()) {
      const CommandResult discarded = launcher_command({"overlay", "discard", key});
      if (discarded.exit_code != 0) {
        ADD_FAILURE() << "overlay discard " << key << ": " << discarded.out << discarded.err;
      }
    }
    std::error_code ec;
    fs::remove_all(root_, ec);
    ::alarm(0);
  }

  static void make_dir(const fs::path& path) {
    fs::create_directories(path);
    fs::permissions(path, fs::perms(0755));
  }

  // Spawns the launcher as heddle spawns its worker. "{fd}" in `args` becomes the number of
  // the child's end of the socketpair. `env` is added to this process's environment, with
  // any HEDDLE_FUSE_WORKER_* of ours removed and HEDDLE_FUSE_WORKER_BIN naming the launcher
  // by the path it is started through, as heddle's is.
  Launch& spawn(std::vector<std::string> args, const std::vector<std::string>& env = {}) {
    return spawn_binary(bin_path("heddle-fuse-launcher"), std::move(args), env);
  }

  // The same, through `launcher` (a path naming the launcher).
  Launch& spawn_binary(const std::string& launcher, std::vector<std::string> args,
                       const std::vector<std::string>& env = {}) {
    auto launch = std::make_unique<Launch>();
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
      throw std::runtime_error("socketpair failed");
    }
    launch->sock.reset(pair[0]);
    const int child_end = pair[1];
    // heddle's clear_cloexec on the child's end.
    const int flags = ::fcntl(child_end, F_GETFD);
    if (flags < 0 || ::fcntl(child_end, F_SETFD, flags & ~FD_CLOEXEC) != 0) {
      throw std::runtime_error("clearing FD_CLOEXEC failed");
    }
    launch->child_fd = child_end;
    const std::string stem = (root_ / ("launcher-" + std::to_string(launches_.size()))).string();
    launch->out_log = stem + ".out";
    launch->err_log = stem + ".err";

    std::vector<std::string> argv = {launcher};
    for (std::string& arg : args) {
      argv.push_back(arg == "{fd}" ? std::to_string(child_end) : std::move(arg));
    }
    std::vector<std::string> envv;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::string_view(*e).rfind("HEDDLE_FUSE_WORKER_", 0) == 0) continue;
      envv.emplace_back(*e);
    }
    envv.push_back("HEDDLE_FUSE_WORKER_BIN=" + launcher);
    envv.insert(envv.end(), env.begin(), env.end());
    std::erase_if(envv, [](const std::string& e) { return e.starts_with("XDG_STATE_HOME="); });
    envv.push_back("XDG_STATE_HOME=" + state_home());
    std::vector<char*> argp;
    for (auto& a : argv) argp.push_back(a.data());
    argp.push_back(nullptr);
    std::vector<char*> envp;
    for (auto& e : envv) envp.push_back(e.data());
    envp.push_back(nullptr);
    const char* out_log = launch->out_log.c_str();
    const char* err_log = launch->err_log.c_str();

    launch->started = Clock::now();
    // Raw fork/exec on purpose: this plays heddle's own spawn (inherited fds, not closed).
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      // Async-signal-safe only from here. stdin is /dev/null; stdout and stderr, which heddle
      // leaves inherited, go to files so the test can show them.
      const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      const int out_fd = ::open(out_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      const int err_fd = ::open(err_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (null_fd < 0 || out_fd < 0 || err_fd < 0 || ::dup2(null_fd, 0) < 0 ||
          ::dup2(out_fd, 1) < 0 || ::dup2(err_fd, 2) < 0) {
        _exit(126);
      }
      // heddle's pre_exec: the inherited end is not CLOEXEC, whatever happened since.
      const int cur = ::fcntl(child_end, F_GETFD);
      if (cur < 0 || ::fcntl(child_end, F_SETFD, cur & ~FD_CLOEXEC) != 0) _exit(126);
      ::execve(argp[0], argp.data(), envp.data());
      _exit(127);
    }
    launch->pid = pid;
    ::close(child_end);  // heddle drops its copy of the child's end right after the spawn
    launches_.push_back(std::move(launch));
    return *launches_.back();
  }

  // The four flags in heddle's order.
  std::vector<std::string> worker_args(const std::string& thread, const std::string& mountpoint,
                                       const std::string& repo = "") const {
    return {"--repo-root", repo.empty() ? repo_.string() : repo, "--thread-id", thread,
            "--mountpoint", mountpoint, "--ipc-fd", "{fd}"};
  }

  // Reads the handshake and checks it is exactly heddle's MountReady{pid, mount_path}.
  void expect_mount_ready(Launch& launch, const std::string& mount_path) {
    const RawFrame frame = read_raw_frame(launch.sock.get(), Clock::now() + kHandshakeDeadline);
    std::cout << "[timing] MountReady after " << ms_since(launch.started) << " ms\n";
    ASSERT_EQ(frame.end, End::kFrame) << "no handshake: " << frame.describe() << "\n"
                                      << launch.output();
    ASSERT_EQ(kind_of(frame.body), "MountReady") << frame.body << "\n" << launch.output();
    EXPECT_EQ(keys_of(frame.body), (std::set<std::string>{"kind", "pid", "mount_path"})) << frame.body;
    const OrderedJson body = OrderedJson::parse(frame.body);
    EXPECT_EQ(body.value("pid", -1), launch.pid) << "pid must be the process heddle spawned";
    EXPECT_EQ(body.value("mount_path", ""), mount_path) << "mount_path must be --mountpoint verbatim";
    EXPECT_EQ(hex(frame.bytes), hex(expected_frame("MountReady", launch.pid, mount_path)))
        << "not the bytes heddle's worker writes: " << frame.body;
  }

  // heddle's Supervisor::status: the Status bytes out, a StatusOk{pid, mount_path} back.
  void expect_status_ok(Launch& launch, const std::string& mount_path) {
    const std::string request = reference_frame("Status");
    ASSERT_EQ(hex(request), "110000007b226b696e64223a22537461747573227d");
    ASSERT_TRUE(write_all(launch.sock.get(), request)) << std::strerror(errno);
    const auto sent = Clock::now();
    const RawFrame reply = read_raw_frame(launch.sock.get(), Clock::now() + 5s);
    const long rtt = ms_since(sent);
    ASSERT_EQ(reply.end, End::kFrame) << "no StatusOk: " << reply.describe();
    EXPECT_LT(rtt, 1000) << "Status round trip";
    ASSERT_EQ(kind_of(reply.body), "StatusOk") << reply.body;
    EXPECT_EQ(keys_of(reply.body), (std::set<std::string>{"kind", "pid", "mount_path"})) << reply.body;
    EXPECT_EQ(hex(reply.bytes), hex(expected_frame("StatusOk", launch.pid, mount_path)))
        << "not the bytes heddle's worker writes: " << reply.body;
    std::cout << "[timing] Status round trip " << rtt << " ms\n";
  }

  // A command, bounded, for reading through the mount (a hung FUSE read cannot hang the test).
  static CommandResult in_mount(const std::vector<std::string>& argv) { return run_command(argv, 10s); }

  // After the launcher is gone: within kSettle, no mount at `mp` and nothing of its tree left.
  void expect_all_gone(const fs::path& mp, const std::map<pid_t, std::string>& recorded = {}) {
    const auto start = Clock::now();
    EXPECT_TRUE(eventually([&] { return mounts_at(mp).empty(); }, kSettle))
        << "mount still at " << mp << ": " << join(mounts_at(mp));
    for (const auto& [pid, what] : recorded) {
      EXPECT_TRUE(eventually([&] { return process_gone(pid); }, kSettle))
          << "descendant " << pid << " (" << what << ") outlived the launcher";
    }
    EXPECT_TRUE(eventually(nothing_left_below_us, kSettle))
        << "left behind: " << describe(descendants_of(::getpid()));
    std::cout << "[timing] mount and processes gone " << ms_since(start) << " ms later\n";
  }

  std::string mp() const { return mountpoint_.string(); }

  // Where a user's default overlays go in these cases (root's go to /var/lib/heddle-fuse).
  std::string state_home() const { return (root_ / "state").string(); }

  // `heddle-fuse-launcher ARGS` with the cases' XDG_STATE_HOME, bounded.
  CommandResult launcher_command(const std::vector<std::string>& args) const {
    std::vector<std::string> argv = {"/usr/bin/env", "XDG_STATE_HOME=" + state_home(),
                                     bin_path("heddle-fuse-launcher")};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, 30s);
  }

  // `overlay list --json`'s entries whose source lies in this case's scratch directory.
  std::vector<OrderedJson> overlay_entries() const {
    std::vector<OrderedJson> entries;
    const CommandResult listed = launcher_command({"overlay", "list", "--json"});
    if (listed.exit_code != 0) {
      ADD_FAILURE() << "overlay list --json: " << listed.out << listed.err;
      return entries;
    }
    const OrderedJson all = OrderedJson::parse(listed.out, nullptr, false);
    if (!all.is_array()) {
      ADD_FAILURE() << "overlay list --json is not an array: " << listed.out;
      return entries;
    }
    std::error_code ec;
    const std::string scratch = fs::canonical(root_, ec).string() + "/";
    for (const auto& entry : all) {
      const auto source = entry.value("source", OrderedJson());
      if (source.is_string() && source.get<std::string>().starts_with(scratch)) {
        entries.push_back(entry);
      }
    }
    return entries;
  }
  std::vector<std::string> overlays_of_this_case() const {
    std::vector<std::string> keys;
    for (const auto& entry : overlay_entries()) keys.push_back(entry.value("key", ""));
    return keys;
  }

  fs::path root_;
  fs::path mountpoint_;
  fs::path repo_;
  fs::path bare_;
  std::string first_commit_;
  std::vector<fs::path> watched_;  // every mountpoint a case uses, for TearDown
  std::vector<std::unique_ptr<Launch>> launches_;
};

// The vectors themselves, read raw: what every other case compares against.
TEST_F(DropinTest, TheReferenceVectorsAreWhatHeddleWrites) {
  EXPECT_EQ(hex(reference_frame("Stop")), "0f0000007b226b696e64223a2253746f70227d");
  EXPECT_EQ(hex(reference_frame("Status")), "110000007b226b696e64223a22537461747573227d");
  EXPECT_EQ(hex(reference_frame("Stopping")), "130000007b226b696e64223a2253746f7070696e67227d");
  EXPECT_EQ(expected_frame("MountReady", 12345, "/tmp/x"),
            reference_frames().at(R"({"kind":"MountReady","pid":12345,"mount_path":"/tmp/x"})"));
  EXPECT_EQ(expected_frame("MountReady", 7, "/mnt/café/日本"),
            reference_frames().at(R"({"kind":"MountReady","pid":7,"mount_path":"/mnt/café/日本"})"));
}

// (1) The whole life heddle gives its worker: handshake, reads, Status x3, Stop.
TEST_F(DropinTest, HappyPathHandshakeStatusAndStop) {
  ASSERT_TRUE(mounts_at(mountpoint_).empty());
  Launch& launch = spawn(worker_args("main", mp()));
  ASSERT_NO_FATAL_FAILURE(expect_mount_ready(launch, mp()));
  const auto types = mounts_at(mountpoint_);
  ASSERT_EQ(types.size(), 1u) << join(types);
  EXPECT_EQ(types[0].rfind("fuse", 0), 0u) << types[0];
  const auto tree = descendants_of(launch.pid);
  std::cout << "launcher " << launch.pid << " tree: " << describe(tree) << "\n";

  // The tree of main, read-only.
  const CommandResult a = in_mount({"/bin/cat", mp() + "/a.txt"});
  EXPECT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, "alpha two\n");
  EXPECT_EQ(in_mount({"/bin/cat", mp() + "/sub/b.txt"}).out, "beta\n");
  const CommandResult listing = in_mount({"/bin/ls", "-A", mp()});
  EXPECT_EQ(listing.out, "a.txt\nc.txt\nsub\n") << listing.err;
  // Writable, as heddle's mounts are (into an overlay; the repository is never written).
  const CommandResult write = in_mount({"/bin/sh", "-c", "echo x >\"$0\"", mp() + "/new.txt"});
  EXPECT_EQ(write.exit_code, 0) << "the drop-in mount must be writable: " << write.err;
  const CommandResult overwrite = in_mount({"/bin/sh", "-c", "echo x >>\"$0\"", mp() + "/a.txt"});
  EXPECT_EQ(overwrite.exit_code, 0) << "the drop-in mount must be writable: " << overwrite.err;
  EXPECT_EQ(in_mount({"/bin/cat", mp() + "/a.txt"}).out, "alpha two\nx\n");

  for (int i = 0; i < 3; ++i) ASSERT_NO_FATAL_FAILURE(expect_status_ok(launch, mp()));
  // heddle's write_frame writes the length and the body separately: they may arrive apart.
  {
    const std::string status = reference_frame("Status");
    ASSERT_TRUE(write_all(launch.sock.get(), status.substr(0, 4)));
    std::this_thread::sleep_for(100ms);
    ASSERT_TRUE(write_all(launch.sock.get(), status.substr(4)));
    const RawFrame reply = read_raw_frame(launch.sock.get(), Clock::now() + 5s);
    EXPECT_EQ(hex(reply.bytes), hex(expected_frame("StatusOk", launch.pid, mp())))
        << "Status in two writes: " << reply.describe();
  }

  // heddle's unmount: Stop (it does not wait for the reply), then up to stop_grace for the exit.
  const std::string stop = reference_frame("Stop");
  ASSERT_EQ(hex(stop), "0f0000007b226b696e64223a2253746f70227d");
  const auto stop_sent = Clock::now();
  ASSERT_TRUE(write_all(launch.sock.get(), stop));
  const RawFrame stopping = read_raw_frame(launch.sock.get(), stop_sent + kHeddleGrace);
  EXPECT_EQ(stopping.end, End::kFrame) << stopping.describe();
  EXPECT_EQ(hex(stopping.bytes), hex(reference_frame("Stopping"))) << stopping.body;
  const bool in_grace = launch.exited_by(stop_sent + kHeddleGrace);
  const long exit_ms = ms_since(stop_sent);
  std::cout << "[timing] Stop -> Stopping+exit " << exit_ms << " ms (" << launch.status_text() << ")\n";
  EXPECT_TRUE(in_grace) << "no exit within heddle's 2000 ms grace after Stop";
  if (!in_grace) {
    ASSERT_TRUE(launch.exited_within(15s)) << "no exit at all after Stop";
  }
  EXPECT_TRUE(launch.exited_zero()) << launch.status_text() << "\n" << launch.output();
  EXPECT_TRUE(mounts_at(mountpoint_).empty()) << "mount still there when the launcher exited: "
                                              << join(mounts_at(mountpoint_));
  // Nothing more on the wire, and nobody else holds the worker's end: EOF.
  const RawFrame after = read_raw_frame(launch.sock.get(), Clock::now() + kSettle);
  EXPECT_EQ(after.end, End::kEof) << after.describe();
  expect_all_gone(mountpoint_, tree);
}

// (6b) The flags in any order: same handshake, same Stop.
TEST_F(DropinTest, FlagsInAnyOrderWork) {
  const std::vector<std::vector<std::string>> orders = {
      {"--ipc-fd", "{fd}", "--mountpoint", mp(), "--thread-id", "main", "--repo-root", repo_.string()},
      {"--thread-id", "main", "--ipc-fd", "{fd}", "--repo-root", repo_.string(), "--mountpoint", mp()},
  };
  for (const auto& order : orders) {
    SCOPED_TRACE(join(order));
    Launch& launch = spawn(order);
    ASSERT_NO_FATAL_FAILURE(expect_mount_ready(launch, mp()));
    EXPECT_EQ(in_mount({"/bin/cat", mp() + "/a.txt"}).out, "alpha two\n");
    ASSERT_NO_FATAL_FAILURE(expect_status_ok(launch, mp()));
    const auto stop_sent = Clock::now();
    ASSERT_TRUE(write_all(launch.sock.get(), reference_frame("Stop")));
    EXPECT_TRUE(launch.exited_by(stop_sent + kHeddleGrace)) << "no exit within the grace";
    ASSERT_TRUE(launch.exited_within(15s));
    EXPECT_TRUE(launch.exited_zero()) << launch.status_text();
    expect_all_gone(mountpoint_);
  }
}

// R may be bare and T a revision rather than a branch name.
TEST_F(DropinTest, BareRepositoryAndRevisions) {
  struct Case {
    std::string repo, thread, a_txt;
  };
  const std::vector<Case> cases = {
      {bare_.string(), "main", "alpha two\n"},
      {bare_.string(), "feature", "alpha\n"},
      {repo_.string(), first_commit_, "alpha\n"},
      {repo_.string(), "main~1", "alpha\n"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.repo + " @ " + c.thread);
    Launch& launch = spawn(worker_args(c.thread, mp(), c.repo));
    ASSERT_NO_FATAL_FAILURE(expect_mount_ready(launch, mp()));
    EXPECT_EQ(in_mount({"/bin/cat", mp() + "/a.txt"}).out, c.a_txt);
    EXPECT_EQ(in_mount({"/bin/cat", mp() + "/sub/b.txt"}).out, "beta\n");
    ASSERT_TRUE(write_all(launch.sock.get(), reference_frame("Stop")));
    ASSERT_TRUE(launch.exited_within(15s));
    EXPECT_TRUE(launch.exited_zero()) << launch.status_text();
    expect_all_gone(mountpoint_);
  }
}

// mount_path is the argument as heddle passed it, not a canonical form of it.
TEST_F(DropinTest, MountPathIsTheArgumentVerbatim) {
  const fs::path odd = root_ / "café 日本";
  make_dir(odd);
  fs::create_directory_symlink(mountpoint_, root_ / "link");
  watched_.push_back(odd);
  const std::vector<std::pair<std::string, fs::path>> cases = {
      {odd.string(), odd},                                        // UTF-8 and a space
      {mp() + "/", mountpoint_},                                  // a trailing slash
      {root_.string() + "/./mnt", mountpoint_},                   // a dot component
      {(root_ / "link").string(), mountpoint_},                   // a symlink to the mountpoint
  };
  for (const auto& [argument, where] : cases) {
    SCOPED_TRACE(argument);
    Launch& launch = spawn(worker_args("main", argument));
    ASSERT_NO_FATAL_FAILURE(expect_mount_ready(launch, argument));
    EXPECT_EQ(mounts_at(where).size(), 1u) << join(mounts_at(where));
    EXPECT_EQ(in_mount({"/bin/cat", argument + "/a.txt"}).out, "alpha two\n");
    ASSERT_NO_FATAL_FAILURE(expect_status_ok(launch, argument));
    ASSERT_TRUE(write_all(launch.sock.get(), reference_frame("Stop")));
    ASSERT_TRUE(launch.exited_within(15s));
    EXPECT_TRUE(launch.exited_zero()) << launch.status_text();
    expect_all_gone(where);
  }
}

// (2) heddle gone (its end closed): an implicit Stop.
TEST_F(DropinTest, EofOnTheIpcFdStopsCleanly) {
  Launch& launch = spawn(worker_args("main", mp()));
  ASSERT_NO_FATAL_FAILURE(expect_mount_ready(launch, mp()));
  const auto tree = descendants_of(launch.pid);
  launch.sock.reset();
  const auto closed = Clock::now();
  ASSERT_TRUE(launch.exited_within(15s)) << "no exit after EOF";
  std::cout << "[timing] EOF -> exit " << ms_since(closed) << " ms (" << launch.status_text() << ")\n";
  EXPECT_TRUE(launch.exited_zero()) << launch.status_text() << "\n" << launch.output();
  EXPECT_TRUE(mounts_at(mountpoint_).empty()) << "mount still there when the launcher exited";
  expect_all_gone(mountpoint_, tree);
}

// (3) SIGTERM alone stops it cleanly.
TEST_F(DropinTest, SigtermStopsCleanly) {
  Launch& launch = spawn(worker_args("main", mp()));
  ASSERT_NO_FATAL_FAILURE(expect_mount_ready(launch, mp()));
  ASSERT_NO_FATAL_FAILURE(expect_status_ok(launch, mp()));
  const auto tree = descendants_of(launch.pid);
  const auto signalled = Clock::now();
  ASSERT_EQ(::kill(launch.pid, SIGTERM), 0);
  ASSERT_TRUE(launch.exited_within(15s)) << "no exit after SIGTERM";
  std::cout << "[timing] SIGTERM -> exit " << ms_since(signalled) << " ms (" << launch.status_text()
            << ")\n";
  EXPECT_TRUE(launch.exited_zero()) << launch.status_text() << "\n" << launch.output();
  EXPECT_TRUE(mounts_at(mountpoint_).empty()) << "mount still there when the launcher exited";
  // Whatever it said on the way out, it was not a second handshake; then EOF.
  for (;;) {
    const RawFrame frame = read_raw_frame(launch.sock.get(), Clock::now() + kSettle);
    if (frame.end != End::kFrame) {
      EXPECT_EQ(frame.end, End::kEof) << frame.describe();
      break;
    }
    EXPECT_NE(kind_of(frame.body), "MountReady") << frame.body;
  }
  expect_all_gone(mountpoint_, tree);
}

// (4) The crash injection: non-zero before MountReady, EOF (or MountError), nothing mounted.
TEST_F(DropinTest, PanicOnInitExitsNonZeroBeforeMountReady) {
  Launch& launch = spawn(worker_args("main", mp()), {"HEDDLE_FUSE_WORKER_PANIC_ON_INIT=1"});
  const RawFrame frame = read_raw_frame(launch.sock.get(), Clock::now() + kHandshakeDeadline);
  std::cout << "[timing] handshake end after " << ms_since(launch.started) << " ms: "
            << frame.describe() << "\n";
  if (frame.end == End::kFrame) {
    EXPECT_EQ(kind_of(frame.body), "MountError") << "PANIC_ON_INIT must not reach MountReady";
    EXPECT_EQ(keys_of(frame.body), (std::set<std::string>{"kind", "message"})) << frame.body;
    const RawFrame next = read_raw_frame(launch.sock.get(), Clock::now() + kHandshakeDeadline);
    EXPECT_EQ(next.end, End::kEof) << next.describe();
  } else {
    EXPECT_EQ(frame.end, End::kEof) << frame.describe();
  }
  ASSERT_TRUE(launch.exited_within(15s));
  EXPECT_FALSE(launch.exited_zero()) << launch.status_text();
  EXPECT_TRUE(launch.reaped && (WIFSIGNALED(launch.status) || WEXITSTATUS(launch.status) != 0));
  EXPECT_TRUE(mounts_at(mountpoint_).empty()) << join(mounts_at(mountpoint_));
  expect_all_gone(mountpoint_);
}

// (5) A failure heddle can show: MountError{message}, then a non-zero exit, nothing mounted.
TEST_F(DropinTest, MountErrorsAreReportedOnTheSocket) {
  const fs::path full = root_ / "full";
  make_dir(full);
  std::ofstream(full / "occupant") << "x\n";
  watched_.push_back(full);
  struct Case {
    std::string name, repo, thread, mountpoint, mentions;
  };
  const std::vector<Case> cases = {
      {"unknown thread", repo_.string(), "no-such-thread", mp(), "no-such-thread"},
      {"mountpoint not empty", repo_.string(), "main", full.string(), ""},
      {"mountpoint missing", repo_.string(), "main", (root_ / "absent").string(), ""},
      {"repo missing", (root_ / "nope").string(), "main", mp(), ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    Launch& launch = spawn(worker_args(c.thread, c.mountpoint, c.repo));
    const RawFrame frame = read_raw_frame(launch.sock.get(), Clock::now() + kHandshakeDeadline);
    std::cout << "[" << c.name << "] after " << ms_since(launch.started) << " ms: "
              << frame.describe() << "\n";
    ASSERT_EQ(frame.end, End::kFrame) << frame.describe() << "\n" << launch.output();
    EXPECT_EQ(kind_of(frame.body), "MountError") << frame.body;
    EXPECT_EQ(keys_of(frame.body), (std::set<std::string>{"kind", "message"})) << frame.body;
    const std::string message = OrderedJson::parse(frame.body).value("message", "");
    EXPECT_FALSE(message.empty());
    if (!c.mentions.empty()) {
      EXPECT_NE(message.find(c.mentions), std::string::npos) << message;
    }
    // The length prefix frames exactly the body.
    EXPECT_EQ(frame.bytes.substr(0, 4), le32(static_cast<std::uint32_t>(frame.body.size())));
    ASSERT_TRUE(launch.exited_within(15s));
    EXPECT_NE(launch.exit_code(), 0) << launch.status_text();
    EXPECT_TRUE(launch.reaped && WIFEXITED(launch.status)) << "crashed: " << launch.status_text();
    const RawFrame next = read_raw_frame(launch.sock.get(), Clock::now() + kSettle);
    EXPECT_EQ(next.end, End::kEof) << next.describe();
    EXPECT_TRUE(mounts_at(c.mountpoint).empty());
    EXPECT_TRUE(fs::exists(full / "occupant"));
    expect_all_gone(c.mountpoint);
  }
}

// (6) Not heddle's argv: exit 2 and a message, before anything is mounted.
TEST_F(DropinTest, ArgvErrorsExitTwoBeforeMounting) {
  const std::string repo = repo_.string();
  const std::vector<std::vector<std::string>> cases = {
      {"--repo-root", repo, "--thread-id", "main", "--mountpoint", mp(), "--ipc-fd", "{fd}", "--bogus", "x"},
      {"--bogus", "--repo-root", repo, "--thread-id", "main", "--mountpoint", mp(), "--ipc-fd", "{fd}"},
      {"--repo-root", repo, "--thread-id", "main", "--mountpoint", mp()},
      {"--thread-id", "main", "--mountpoint", mp(), "--ipc-fd", "{fd}"},
      {"--repo-root", repo, "--mountpoint", mp(), "--ipc-fd", "{fd}"},
      {"--repo-root", repo, "--thread-id", "main", "--ipc-fd", "{fd}"},
      {"--repo-root", repo, "--thread-id", "main", "--thread-id", "main", "--mountpoint", mp(), "--ipc-fd", "{fd}"},
      {"--repo-root", repo, "--thread-id", "main", "--mountpoint", mp(), "--ipc-fd", "{fd}", "--ipc-fd", "{fd}"},
      {"--repo-root", repo, "--thread-id", "main", "mount", "--mountpoint", mp(), "--ipc-fd", "{fd}"},
      {"mount", "--repo-root", repo, "--thread-id", "main", "--mountpoint", mp(), "--ipc-fd", "{fd}"},
      {"--repo-root", repo, "--thread-id", "main", "--mountpoint", mp(), "--ipc-fd", "{fd}", "unmount"},
      {"--repo-root=" + repo, "--thread-id", "main", "--mountpoint", mp(), "--ipc-fd", "{fd}"},
      {"--repo-root", repo, "--thread-id", "main", "--mountpoint", mp(), "--ipc-fd"},
  };
  for (const auto& args : cases) {
    SCOPED_TRACE(join(args));
    Launch& launch = spawn(args);
    const bool exited = launch.exited_within(15s);
    if (!exited) {
      ADD_FAILURE() << "still running 15 s later; mounts: " << join(mounts_at(mountpoint_));
      ::kill(launch.pid, SIGKILL);
      ASSERT_TRUE(launch.exited_within(10s));
    }
    EXPECT_EQ(launch.exit_code(), 2) << launch.status_text() << "\n" << launch.output();
    EXPECT_FALSE(launch.err().empty()) << "no message on stderr";
    const RawFrame frame = read_raw_frame(launch.sock.get(), Clock::now() + 1s);
    EXPECT_NE(kind_of(frame.body), "MountReady") << frame.body;
    EXPECT_TRUE(mounts_at(mountpoint_).empty()) << join(mounts_at(mountpoint_));
    expect_all_gone(mountpoint_);
  }
}

// What heddle's reader accepts, its worker accepts: a Stop with spaces around is a Stop; a
// frame that is not one stops the worker (the reference leaves its loop on a read error),
// which must remove the mount and leave nothing either way.
TEST_F(DropinTest, LenientAndBrokenFramesFromTheSupervisor) {
  {
    SCOPED_TRACE("lenient Stop");
    const std::string lenient = lenient_frames().at(R"( {"kind" : "Stop"} )");
    Launch& launch = spawn(worker_args("main", mp()));
    ASSERT_NO_FATAL_FAILURE(expect_mount_ready(launch, mp()));
    ASSERT_TRUE(write_all(launch.sock.get(), lenient));
    const RawFrame stopping = read_raw_frame(launch.sock.get(), Clock::now() + kHeddleGrace);
    EXPECT_EQ(hex(stopping.bytes), hex(reference_frame("Stopping"))) << stopping.describe();
    ASSERT_TRUE(launch.exited_within(15s));
    EXPECT_TRUE(launch.exited_zero()) << launch.status_text();
    expect_all_gone(mountpoint_);
  }
  {
    SCOPED_TRACE("not JSON");
    Launch& launch = spawn(worker_args("main", mp()));
    ASSERT_NO_FATAL_FAILURE(expect_mount_ready(launch, mp()));
    ASSERT_TRUE(write_all(launch.sock.get(), unhex("0500000068656c6c6f")));
    const auto sent = Clock::now();
    EXPECT_TRUE(launch.exited_within(kSettle)) << "a broken frame must end the worker";
    std::cout << "[timing] broken frame -> exit " << ms_since(sent) << " ms ("
              << launch.status_text() << ")\n";
    if (!launch.reaped) {
      ::kill(launch.pid, SIGTERM);
      ASSERT_TRUE(launch.exited_within(15s));
    }
    expect_all_gone(mountpoint_);
  }
}

// SIGTERM stops it cleanly at any time, also while it is already stopping a worker that will
// not stop (heddle's escalation sends exactly this when its grace runs out first).
TEST_F(DropinTest, SigtermDuringAStopStillExitsZero) {
  Launch& launch = spawn(worker_args("main", mp()), {"HEDDLE_FUSE_WORKER_TEST_IGNORE_STOP=1",
                                                     "HEDDLE_FUSE_WORKER_STOP_GRACE_MS=500"});
  ASSERT_NO_FATAL_FAILURE(expect_mount_ready(launch, mp()));
  const auto tree = descendants_of(launch.pid);
  const auto stop_sent = Clock::now();
  ASSERT_TRUE(write_all(launch.sock.get(), reference_frame("Stop")));
  const RawFrame stopping = read_raw_frame(launch.sock.get(), stop_sent + kHeddleGrace);
  EXPECT_EQ(hex(stopping.bytes), hex(reference_frame("Stopping"))) << stopping.describe();
  // Inside the launcher's first inner grace: its worker has ignored Stop and is still there.
  std::this_thread::sleep_for(200ms);
  ASSERT_FALSE(launch.exited_within(0ms)) << "exited before the SIGTERM: " << launch.status_text();
  ASSERT_EQ(::kill(launch.pid, SIGTERM), 0);
  ASSERT_TRUE(launch.exited_within(15s));
  std::cout << "[timing] Stop -> exit " << ms_since(stop_sent) << " ms (" << launch.status_text()
            << "), SIGTERM at 200 ms\n";
  EXPECT_TRUE(launch.exited_zero()) << launch.status_text() << "\n" << launch.output();
  EXPECT_TRUE(mounts_at(mountpoint_).empty()) << "mount still there when the launcher exited";
  expect_all_gone(mountpoint_, tree);
}

// heddle's last resort, SIGKILL, on an idle launcher: its guard and worker clean up.
TEST_F(DropinTest, SigkillOfTheLauncherLeavesNothing) {
  Launch& launch = spawn(worker_args("main", mp()));
  ASSERT_NO_FATAL_FAILURE(expect_mount_ready(launch, mp()));
  const auto tree = descendants_of(launch.pid);
  ASSERT_EQ(::kill(launch.pid, SIGKILL), 0);
  ASSERT_TRUE(launch.exited_within(5s));
  expect_all_gone(mountpoint_, tree);
}

// heddle found through a symlink named like its own worker, HEDDLE_FUSE_WORKER_BIN naming the
// link: still the launcher, which must neither run itself as its worker nor fail to find it.
TEST_F(DropinTest, ThroughASymlinkNamedLikeHeddlesWorker) {
  const fs::path bin = root_ / "bin";
  make_dir(bin);
  const fs::path link = bin / "heddle-fuse-worker";
  fs::create_symlink(bin_path("heddle-fuse-launcher"), link);
  Launch& launch = spawn_binary(link.string(), worker_args("main", mp()));
  ASSERT_NO_FATAL_FAILURE(expect_mount_ready(launch, mp()));
  EXPECT_EQ(in_mount({"/bin/cat", mp() + "/a.txt"}).out, "alpha two\n");
  ASSERT_NO_FATAL_FAILURE(expect_status_ok(launch, mp()));
  ASSERT_TRUE(write_all(launch.sock.get(), reference_frame("Stop")));
  ASSERT_TRUE(launch.exited_within(15s));
  EXPECT_TRUE(launch.exited_zero()) << launch.status_text();
  expect_all_gone(mountpoint_);
}

// Stop, grace, SIGTERM, grace, SIGKILL, grace: heddle's Supervisor::unmount, run to completion.
// Returns which step the launcher's exit came in.
std::string heddle_unmount(Launch& launch, std::chrono::milliseconds grace,
                           std::map<pid_t, std::string>& tree) {
  const auto record = [&] {
    for (const auto& [pid, what] : descendants_of(launch.pid)) tree.emplace(pid, what);
  };
  record();
  std::string step = "Stop";
  (void)write_all(launch.sock.get(), reference_frame("Stop"));
  if (!launch.exited_within(grace)) {
    record();
    step = "SIGTERM";
    ::kill(launch.pid, SIGTERM);
    if (!launch.exited_within(grace)) {
      record();
      step = "SIGKILL";
      ::kill(launch.pid, SIGKILL);
      launch.exited_within(grace);
    }
  }
  launch.sock.reset();  // heddle drops the socket last
  return step;
}

// (7) A worker that ignores Stop and SIGTERM, stopped exactly as heddle stops it, with short
// graces on both sides: whatever step ends the launcher, nothing is left within 5 s.
TEST_F(DropinTest, StuckWorkerEscalationLeavesNothing) {
  constexpr auto kGrace = 300ms;
  Launch& launch = spawn(worker_args("main", mp()), {"HEDDLE_FUSE_WORKER_TEST_IGNORE_STOP=1",
                                                     "HEDDLE_FUSE_WORKER_STOP_GRACE_MS=300"});
  ASSERT_NO_FATAL_FAILURE(expect_mount_ready(launch, mp()));
  ASSERT_NO_FATAL_FAILURE(expect_status_ok(launch, mp()));
  EXPECT_EQ(in_mount({"/bin/cat", mp() + "/a.txt"}).out, "alpha two\n");
  std::map<pid_t, std::string> tree;
  const auto start = Clock::now();
  const std::string step = heddle_unmount(launch, kGrace, tree);
  std::cout << "[timing] escalation ended at " << step << " after " << ms_since(start) << " ms ("
            << launch.status_text() << "); tree was " << describe(tree) << "\n";
  EXPECT_FALSE(tree.empty()) << "the launcher had no sandboxed worker below it?";
  if (!launch.reaped) {
    EXPECT_TRUE(launch.exited_within(kSettle)) << "SIGKILLed launcher not reaped";
  }
  expect_all_gone(mountpoint_, tree);
}

// The launcher's own escalation with heddle's default grace outside: Stop is answered with
// Stopping, the stuck inner worker is Stop/SIGTERM/SIGKILLed within the inner 300 ms graces,
// and the launcher still exits 0 within heddle's 2000 ms, mount removed.
TEST_F(DropinTest, InnerEscalationStillExitsZeroWithinHeddlesGrace) {
  Launch& launch = spawn(worker_args("main", mp()), {"HEDDLE_FUSE_WORKER_TEST_IGNORE_STOP=1",
                                                     "HEDDLE_FUSE_WORKER_STOP_GRACE_MS=300"});
  ASSERT_NO_FATAL_FAILURE(expect_mount_ready(launch, mp()));
  const auto tree = descendants_of(launch.pid);
  const auto stop_sent = Clock::now();
  ASSERT_TRUE(write_all(launch.sock.get(), reference_frame("Stop")));
  const RawFrame stopping = read_raw_frame(launch.sock.get(), stop_sent + kHeddleGrace);
  EXPECT_EQ(hex(stopping.bytes), hex(reference_frame("Stopping"))) << stopping.describe();
  const bool in_grace = launch.exited_by(stop_sent + kHeddleGrace);
  std::cout << "[timing] Stop -> exit " << ms_since(stop_sent) << " ms (" << launch.status_text()
            << ")\n";
  EXPECT_TRUE(in_grace) << "heddle would SIGTERM it now";
  if (!in_grace) {
    ASSERT_TRUE(launch.exited_within(15s));
  }
  EXPECT_TRUE(launch.exited_zero()) << launch.status_text() << "\n" << launch.output();
  EXPECT_TRUE(mounts_at(mountpoint_).empty());
  expect_all_gone(mountpoint_, tree);
}

// (8) Writable as heddle's own mounts are, and nothing lost across heddle's Stop: heddle spawns
// the worker, the user changes files, heddle stops it, and spawns it again with the same four
// flags: the changes are there (the same default overlay, found by KEY), and the repository
// never saw them.
TEST_F(DropinTest, WritesSurviveStopAndRespawn) {
  const TreeSnapshot repo_before = snapshot_tree(repo_);
  const TreeSnapshot bare_before = snapshot_tree(bare_);
  ASSERT_TRUE(overlay_entries().empty()) << "an overlay of this case existed before it began";

  Launch& first = spawn(worker_args("main", mp()));
  ASSERT_NO_FATAL_FAILURE(expect_mount_ready(first, mp()));
  // A new file (written and closed), a lower file appended to (copied up), a lower file
  // deleted, a directory made: each acknowledged by a successful close or fsync.
  const std::string big = pattern_bytes(5, 0, 1 << 20);
  const CommandResult changed = in_mount(
      {"/bin/sh", "-c",
       "set -e; cd \"$0\"; printf 'written through heddle\n' >new.txt; printf 'changed\n' >>a.txt;"
       "rm sub/b.txt; mkdir made; printf 'x' >made/x.txt",
       mp()});
  ASSERT_EQ(changed.exit_code, 0) << changed.err;
  {
    const int fd = ::open((mountpoint_ / "big.bin").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    EXPECT_EQ(::write(fd, big.data(), big.size()), static_cast<ssize_t>(big.size())) << std::strerror(errno);
    EXPECT_EQ(::fsync(fd), 0) << std::strerror(errno);
    EXPECT_EQ(::close(fd), 0) << std::strerror(errno);
  }
  const auto expect_changes = [&](const std::string& when) {
    SCOPED_TRACE(when);
    EXPECT_EQ(in_mount({"/bin/cat", mp() + "/new.txt"}).out, "written through heddle\n");
    EXPECT_EQ(in_mount({"/bin/cat", mp() + "/a.txt"}).out, "alpha two\nchanged\n");
    EXPECT_EQ(in_mount({"/bin/cat", mp() + "/made/x.txt"}).out, "x");
    EXPECT_EQ(sha256_file(mountpoint_ / "big.bin"), sha256_hex(big));
    const CommandResult listing = in_mount({"/bin/ls", "-A", mp(), mp() + "/sub"});
    EXPECT_EQ(listing.out, mp() + ":\na.txt\nbig.bin\nc.txt\nmade\nnew.txt\nsub\n\n" + mp() + "/sub:\n")
        << listing.err;
  };
  expect_changes("in the first mount");
  ASSERT_NO_FATAL_FAILURE(expect_status_ok(first, mp()));
  const auto tree = descendants_of(first.pid);
  ASSERT_TRUE(write_all(first.sock.get(), reference_frame("Stop")));
  const RawFrame stopping = read_raw_frame(first.sock.get(), Clock::now() + kHeddleGrace);
  EXPECT_EQ(hex(stopping.bytes), hex(reference_frame("Stopping"))) << stopping.describe();
  ASSERT_TRUE(first.exited_within(15s)) << "no exit after Stop";
  EXPECT_TRUE(first.exited_zero()) << first.status_text() << "\n" << first.output();
  expect_all_gone(mountpoint_, tree);
  first.sock.reset();

  // The changes are in the default overlay, on disk: one overlay for this thread, not in use.
  const auto entries = overlay_entries();
  ASSERT_EQ(entries.size(), 1u) << "overlays of this case's repository after Stop";
  const OrderedJson& overlay = entries.front();
  std::error_code ec;
  EXPECT_EQ(overlay.value("source", ""), fs::canonical(repo_, ec).string()) << overlay.dump();
  EXPECT_EQ(overlay.value("thread", OrderedJson()), "main") << overlay.dump();
  EXPECT_TRUE(overlay.value("mounted_at", OrderedJson()).is_null()) << overlay.dump();
  const std::string overlays_root = running_as_root() ? "/var/lib/heddle-fuse/overlays"
                                                      : state_home() + "/heddle-fuse/overlays";
  const std::string dir = overlay.value("dir", "");
  EXPECT_EQ(fs::path(dir).parent_path().string(), overlays_root) << overlay.dump();
  EXPECT_EQ(slurp(fs::path(dir) / "upper/new.txt"), "written through heddle\n");

  Launch& second = spawn(worker_args("main", mp()));
  ASSERT_NO_FATAL_FAILURE(expect_mount_ready(second, mp()));
  expect_changes("after Stop and a new spawn with the same arguments");
  ASSERT_NO_FATAL_FAILURE(expect_status_ok(second, mp()));
  ASSERT_TRUE(write_all(second.sock.get(), reference_frame("Stop")));
  ASSERT_TRUE(second.exited_within(15s)) << "no exit after Stop";
  EXPECT_TRUE(second.exited_zero()) << second.status_text() << "\n" << second.output();
  expect_all_gone(mountpoint_);

  // Never into the repository: every file of the work tree and of .git (refs, index, objects,
  // packed-refs, config, logs) unchanged by content, and fsck clean.
  const TreeSnapshot repo_after = snapshot_tree(repo_);
  EXPECT_TRUE(repo_after == repo_before) << snapshot_diff(repo_before, repo_after);
  const TreeSnapshot bare_after = snapshot_tree(bare_);
  EXPECT_TRUE(bare_after == bare_before) << snapshot_diff(bare_before, bare_after);
  const CommandResult fsck = run_command({"/usr/bin/env", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
                                          "/usr/bin/git", "-C", repo_.string(), "fsck", "--full",
                                          "--strict", "--no-progress"});
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out << fsck.err;
  EXPECT_EQ(fsck.out, "") << fsck.err;

  // Dropping the overlay drops the changes: the next spawn shows the thread as committed.
  const CommandResult discarded = launcher_command({"overlay", "discard", overlay.value("key", "")});
  EXPECT_EQ(discarded.exit_code, 0) << discarded.out << discarded.err;
  EXPECT_FALSE(fs::exists(dir)) << "overlay discard left " << dir;
  Launch& third = spawn(worker_args("main", mp()));
  ASSERT_NO_FATAL_FAILURE(expect_mount_ready(third, mp()));
  EXPECT_EQ(in_mount({"/bin/cat", mp() + "/a.txt"}).out, "alpha two\n");
  EXPECT_EQ(in_mount({"/bin/ls", "-A", mp()}).out, "a.txt\nc.txt\nsub\n");
  ASSERT_TRUE(write_all(third.sock.get(), reference_frame("Stop")));
  ASSERT_TRUE(third.exited_within(15s));
  EXPECT_TRUE(third.exited_zero()) << third.status_text();
  expect_all_gone(mountpoint_);
}

// Issue 18: the mount removed from outside (`umount` as root, `fusermount3 -u` as a user).
// heddle's own worker, its session over, sends nothing more and exits 0: so does the
// launcher, within 2 s, leaving no process, mount or control socket, and heddle can spawn
// a worker at that mountpoint again at once.
TEST_F(DropinTest, AMountRemovedFromOutsideEndsAsHeddlesOwnWorkerDoes) {
  Launch& launch = spawn(worker_args("main", mp()));
  ASSERT_NO_FATAL_FAILURE(expect_mount_ready(launch, mp()));
  ASSERT_NO_FATAL_FAILURE(expect_status_ok(launch, mp()));
  const auto tree = descendants_of(launch.pid);
  const std::string socket_path = launcher::control_socket_path(launcher::UserDirs::read(), mp());
  ASSERT_TRUE(fs::exists(socket_path)) << socket_path;
  const std::vector<std::string> argv =
      running_as_root() ? std::vector<std::string>{"/usr/bin/umount", "--", mp()}
                        : std::vector<std::string>{"/usr/bin/fusermount3", "-u", "--", mp()};
  const CommandResult removed = run_command(argv, 10s);
  ASSERT_EQ(removed.exit_code, 0) << removed.out << removed.err;
  const auto start = Clock::now();
  ASSERT_TRUE(launch.exited_within(2s)) << "still running 2 s later\n" << launch.output();
  std::cout << "[timing] unmounted from outside -> exit " << ms_since(start) << " ms\n";
  EXPECT_TRUE(launch.exited_zero()) << launch.status_text() << "\n" << launch.output();
  for (const auto& [pid, what] : tree) {
    EXPECT_TRUE(eventually([&] { return process_gone(pid); }, 2s)) << pid << " (" << what << ")";
  }
  const RawFrame after = read_raw_frame(launch.sock.get(), Clock::now() + kSettle);
  EXPECT_EQ(after.end, End::kEof) << "expected no frame, then EOF: " << after.describe();
  EXPECT_FALSE(fs::exists(socket_path));
  const std::string err = launch.err();
  std::size_t lines = 0;
  for (auto at = err.find("unmounted from outside"); at != std::string::npos;
       at = err.find("unmounted from outside", at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 1u) << err;
  expect_all_gone(mountpoint_, tree);
  launch.sock.reset();

  Launch& again = spawn(worker_args("main", mp()));
  ASSERT_NO_FATAL_FAILURE(expect_mount_ready(again, mp()));
  EXPECT_EQ(in_mount({"/bin/cat", mp() + "/a.txt"}).out, "alpha two\n");
  ASSERT_TRUE(write_all(again.sock.get(), reference_frame("Stop")));
  ASSERT_TRUE(again.exited_within(15s));
  EXPECT_TRUE(again.exited_zero()) << again.status_text();
  EXPECT_EQ(again.err().find("from outside"), std::string::npos) << again.err();
  expect_all_gone(mountpoint_);
}

}  // namespace
}  // namespace heddle::test
