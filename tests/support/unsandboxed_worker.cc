#include "support/unsandboxed_worker.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <system_error>
#include <thread>

#include "heddle/error.h"
#include "heddle/ipc/fd_passing.h"
#include "heddle/ipc/frame.h"
#include "heddle/ipc/mount_spec.h"
#include "heddle/process.h"

namespace heddle::test {
namespace {

using std::chrono::milliseconds;
namespace fs = std::filesystem;

constexpr milliseconds kPollInterval{5};
constexpr milliseconds kStopGrace{5'000};
constexpr int kWorkerBootstrapFd = 3;

std::filesystem::path make_temp_dir(const std::string& prefix, const fs::path& parent = {}) {
  const fs::path where = parent.empty() ? fs::temp_directory_path() : parent;
  std::string pattern = (where / (prefix + ".XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) throw_errno("mkdtemp " + pattern);
  return pattern;
}

std::pair<UniqueFd, UniqueFd> make_socketpair() {
  std::array<int, 2> fds{-1, -1};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds.data()) != 0) {
    throw_errno("socketpair");
  }
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

}  // namespace

TempDir::TempDir(const std::string& prefix, const fs::path& parent)
    : path_(make_temp_dir(prefix, parent)) {}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);  // does not follow symlinks
}

std::optional<std::string> worker_tests_unavailable() {
  if (::geteuid() != 0) {
    return "needs root: the harness mounts a FUSE filesystem itself (run the tests as root)";
  }
  if (::access("/dev/fuse", R_OK | W_OK) != 0) {
    return std::string("/dev/fuse is not usable: ") + std::strerror(errno);
  }
  return std::nullopt;
}

// --- Child ---------------------------------------------------------------------------------

UnsandboxedWorker::Child::~Child() { kill_and_reap(); }

std::optional<int> UnsandboxedWorker::Child::wait(milliseconds timeout) {
  if (pid_ <= 0 || status_) return status_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      status_ = status;
      return status_;
    }
    if (r < 0 && errno != EINTR) throw_errno("waitpid " + std::to_string(pid_));
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(kPollInterval);
  }
}

void UnsandboxedWorker::Child::kill_and_reap() noexcept {
  if (!running()) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  status_ = status;
}

// --- Mount ---------------------------------------------------------------------------------

UniqueFd UnsandboxedWorker::Mount::mount(const fs::path& at, bool read_only) {
  UniqueFd fuse(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
  if (!fuse) throw_errno("open /dev/fuse");
  const std::string options = "fd=" + std::to_string(fuse.get()) +
                              ",rootmode=40000,user_id=0,group_id=0,default_permissions";
  unsigned long flags = MS_NOSUID | MS_NODEV;
  if (read_only) flags |= MS_RDONLY;
  if (::mount("heddle-test", at.c_str(), "fuse.heddle", flags, options.c_str()) != 0) {
    throw_errno("mount fuse.heddle at " + at.string());
  }
  path_ = at;
  return fuse;
}

UnsandboxedWorker::Mount::~Mount() {
  if (!path_.empty()) ::umount2(path_.c_str(), MNT_DETACH);
}

// --- Dirs ----------------------------------------------------------------------------------

UnsandboxedWorker::Dirs::~Dirs() {
  std::error_code ec;
  if (!mountpoint.empty()) fs::remove(mountpoint, ec);
  if (!base.empty()) fs::remove(base, ec);
}

// --- UnsandboxedWorker ---------------------------------------------------------------------

UnsandboxedWorker::UnsandboxedWorker(WorkerConfig config) : config_(std::move(config)) {
  dirs_.base = make_temp_dir("heddle-worker-mnt");
  dirs_.mountpoint = dirs_.base / "mnt";
  if (::mkdir(dirs_.mountpoint.c_str(), 0755) != 0) throw_errno("mkdir " + dirs_.mountpoint.string());
  UniqueFd fuse = mount_.mount(dirs_.mountpoint, config_.read_only_mount);
  if (config_.journal) {
    connection_ = UniqueFd(::fcntl(fuse.get(), F_DUPFD_CLOEXEC, 0));
    if (!connection_) throw_errno("dup the /dev/fuse fd");
    journal_ = UniqueFd(::memfd_create("heddle-node-journal", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!journal_) throw_errno("memfd_create");
  }
  spawn(std::move(fuse));
}

void UnsandboxedWorker::start_successor() {
  if (!config_.journal) throw Error("start_successor needs WorkerConfig::journal", EINVAL);
  UniqueFd fuse(::fcntl(connection_.get(), F_DUPFD_CLOEXEC, 0));
  if (!fuse) throw_errno("dup the /dev/fuse fd");
  ++generation_;
  spawn(std::move(fuse));
}

void UnsandboxedWorker::spawn(UniqueFd fuse) {
  auto [boot_parent, boot_child] = make_socketpair();
  auto [ipc_parent, ipc_child] = make_socketpair();

  // As the supervisor chooses: only the git thread worker links libgit2.
  std::string binary = config_.git_thread.empty() ? HEDDLE_BIN_DIR "/heddle-fuse-worker"
                                                 : HEDDLE_BIN_DIR "/heddle-fuse-worker-git";
  const std::vector<std::string> args{binary, "--bootstrap-fd",
                                      std::to_string(kWorkerBootstrapFd)};
  ProcessOptions options;
  options.output = ProcessOptions::Output::kInherit;
  options.env = config_.extra_env;
  options.fds = {{boot_child.get(), kWorkerBootstrapFd}};
  const pid_t pid = Process(args, options).release();
  child_.adopt(pid);
  boot_child.reset();

  std::vector<int> fds{ipc_child.get(), fuse.get()};
  if (journal_) fds.push_back(journal_.get());
  ipc::WorkerBootstrap bootstrap{static_cast<std::uint32_t>(pid),
                                 ipc::MountSpec::directory(config_.source, dirs_.mountpoint),
                                 config_.test_ignore_stop};
  bootstrap.generation = generation_;
  bootstrap.spec.sandbox = config_.expect_sandbox ? ipc::SandboxMode::kStrict : ipc::SandboxMode::kNone;
  bootstrap.spec.overlay_dir = config_.overlay_dir;
  if (!config_.git_thread.empty()) {
    bootstrap.spec.source = ipc::GitSource{config_.source, config_.git_thread};
  }
  ipc::send_fds(boot_parent.get(), fds,
                config_.bootstrap_payload.value_or(ipc::encode_bootstrap(bootstrap)));
  // From now on only the worker holds the connection (and, with a journal, we): if it dies
  // without our copy, the mount says ENOTCONN.
  ipc_child.reset();
  fuse.reset();
  boot_parent.reset();

  ipc_ = std::move(ipc_parent);
  first_ = ipc::read_frame(ipc_.get(), config_.first_message_timeout);
}

UnsandboxedWorker::~UnsandboxedWorker() {
  if (!child_.running()) return;
  try {
    if (ipc_) ipc::write_frame(ipc_.get(), ipc::Stop{}, milliseconds(1'000));
    static_cast<void>(child_.wait(kStopGrace));
  } catch (...) {
    // Child's destructor kills it.
  }
}

bool UnsandboxedWorker::ready() const noexcept {
  return first_ && std::holds_alternative<ipc::MountReady>(*first_);
}

void UnsandboxedWorker::send(const ipc::Message& message) {
  ipc::write_frame(ipc_.get(), message, milliseconds(5'000));
}

std::optional<ipc::Message> UnsandboxedWorker::receive(milliseconds timeout) {
  return ipc::read_frame(ipc_.get(), timeout);
}

std::optional<int> UnsandboxedWorker::wait_for_exit(milliseconds timeout) {
  return child_.wait(timeout);
}

int UnsandboxedWorker::count_fds() const {
  const std::string dir = "/proc/" + std::to_string(child_.pid()) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return -1;
  int count = 0;
  while (const dirent* entry = ::readdir(d)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(d);
  return count;
}

}  // namespace heddle::test
