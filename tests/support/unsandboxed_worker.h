// Test harness: runs heddle-fuse-worker WITHOUT the launcher's sandbox. As root it mounts a
// fresh FUSE connection itself, hands the worker [ipc socket, /dev/fuse fd] and the
// WorkerBootstrap (the MountSpec) on fd 3 exactly as the supervisor does, and waits for the
// first message. Everything it creates (the worker
// process, the mount, the temp dirs, every fd) is undone by its destructor, also on failure.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "heddle/ipc/message.h"
#include "heddle/unique_fd.h"

namespace heddle::test {

// A mkdtemp() directory, removed recursively (symlinks are not followed) on destruction.
class TempDir {
 public:
  // Created in `parent`, or in std::filesystem::temp_directory_path() when empty.
  explicit TempDir(const std::string& prefix = "heddle-test",
                   const std::filesystem::path& parent = {});
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

// Why this machine cannot run the worker tests (not root, no /dev/fuse), or nullopt.
[[nodiscard]] std::optional<std::string> worker_tests_unavailable();

struct WorkerConfig {
  std::filesystem::path source;
  bool test_ignore_stop = false;
  bool expect_sandbox = false;  // sandbox mode strict, which an unconfined worker refuses
  std::vector<std::string> extra_env;  // "NAME=VALUE", added to (or replacing in) our env
  // MS_RDONLY on the mount. Off, the kernel forwards writes and the worker must refuse them.
  bool read_only_mount = true;
  std::filesystem::path overlay_dir;  // non-empty: a writable mount, changes kept here
  std::string git_thread;  // non-empty: `source` is a repository, and this thread is served
  // Sent as the bootstrap payload instead of the encoded spec (bad-input tests).
  std::optional<std::string> bootstrap_payload;
  std::chrono::milliseconds first_message_timeout{10'000};
  // Issue 16: the harness keeps a copy of the connection and gives the worker a node journal
  // (a memfd), as the supervisor does, so that kill_worker() + start_successor() replace the
  // worker under the live mount.
  bool journal = false;
};

class UnsandboxedWorker {
 public:
  // Mounts, starts the worker, and reads its first message. Throws heddle::Error (cleaning up
  // whatever was already set up) when any step fails or the first message times out.
  explicit UnsandboxedWorker(WorkerConfig config);
  UnsandboxedWorker(const UnsandboxedWorker&) = delete;
  UnsandboxedWorker& operator=(const UnsandboxedWorker&) = delete;
  // Sends Stop and waits up to 5 s; then SIGKILL. Then unmounts (MNT_DETACH) and removes the
  // temp dirs.
  ~UnsandboxedWorker();

  // MountReady, MountError, or nullopt when the worker closed the socket first.
  [[nodiscard]] const std::optional<ipc::Message>& first_message() const noexcept {
    return first_;
  }
  [[nodiscard]] bool ready() const noexcept;

  [[nodiscard]] const std::filesystem::path& mountpoint() const noexcept {
    return dirs_.mountpoint;
  }
  [[nodiscard]] pid_t pid() const noexcept { return child_.pid(); }
  [[nodiscard]] int ipc_fd() const noexcept { return ipc_.get(); }

  void send(const ipc::Message& message);
  // Throws heddle::Error (ETIMEDOUT) after `timeout`.
  [[nodiscard]] std::optional<ipc::Message> receive(std::chrono::milliseconds timeout);
  // Closes our end of the IPC socket (the worker sees EOF).
  void close_ipc() noexcept { ipc_.reset(); }

  // The worker's wait status once it has exited, or nullopt if it is still running after
  // `timeout`. Reaps it.
  [[nodiscard]] std::optional<int> wait_for_exit(std::chrono::milliseconds timeout);

  // Open fds of the worker (from /proc/<pid>/fd), or -1 if unreadable.
  [[nodiscard]] int count_fds() const;

  // Issue 16 (config.journal only). SIGKILLs the worker and reaps it: the mount stays, and
  // requests wait in the kernel.
  void kill_worker() noexcept { child_.kill_and_reap(); }
  // Starts the next generation on the same connection and journal, and reads its first message
  // (first_message() answers it).
  void start_successor();
  [[nodiscard]] std::uint32_t generation() const noexcept { return generation_; }
  [[nodiscard]] int journal_fd() const noexcept { return journal_.get(); }

 private:
  // The worker process: killed (SIGKILL) and reaped on destruction if still running.
  class Child {
   public:
    Child() = default;
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    ~Child();
    void adopt(pid_t pid) noexcept {
      pid_ = pid;
      status_.reset();
    }
    [[nodiscard]] pid_t pid() const noexcept { return pid_; }
    [[nodiscard]] bool running() const noexcept { return pid_ > 0 && !status_; }
    [[nodiscard]] std::optional<int> wait(std::chrono::milliseconds timeout);
    void kill_and_reap() noexcept;

   private:
    pid_t pid_ = -1;
    std::optional<int> status_;
  };

  // The FUSE mount: detached on destruction.
  class Mount {
   public:
    Mount() = default;
    Mount(const Mount&) = delete;
    Mount& operator=(const Mount&) = delete;
    ~Mount();
    // Opens /dev/fuse and mounts it at `at`; returns the connection fd.
    UniqueFd mount(const std::filesystem::path& at, bool read_only);

   private:
    std::filesystem::path path_;
  };

  // The mountpoint's temp dirs. Removed without recursion: never walk into a mount.
  struct Dirs {
    std::filesystem::path base;
    std::filesystem::path mountpoint;
    Dirs() = default;
    Dirs(const Dirs&) = delete;
    Dirs& operator=(const Dirs&) = delete;
    ~Dirs();
  };

  // Spawns a worker of `generation_` on `fuse` (and the journal), and reads its first message.
  void spawn(UniqueFd fuse);

  // Members are destroyed in reverse order: the worker first, then our copy of the connection
  // (the kernel then fails what still waits), then the mount, then the dirs.
  WorkerConfig config_;
  Dirs dirs_;
  Mount mount_;
  UniqueFd connection_;  // config.journal: our copy of the /dev/fuse fd
  UniqueFd journal_;     // config.journal: the node journal memfd
  UniqueFd ipc_;
  Child child_;
  std::optional<ipc::Message> first_;
  std::uint32_t generation_ = 1;
};

}  // namespace heddle::test
