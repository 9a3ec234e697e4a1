#include "fuse_session.h"

#include <fuse_lowlevel.h>

#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "backend.h"
#include "fuse_ops.h"
#include "heddle/error.h"

namespace heddle::worker {

namespace {
// Threads the loop may start. Modifying requests wait at a closed gate (a capture) holding a
// thread each: room for many of them while reads are still served.
constexpr unsigned kMaxThreads = 32;
}  // namespace

FuseSession::FuseSession(UniqueFd fuse_fd, Backend& fs, bool debug) : context_{fs, gate_, kernel_opens_} {
  std::vector<std::string> arg_storage{"heddle-fuse-worker"};
  if (debug) arg_storage.emplace_back("-d");
  std::vector<char*> argv;
  for (auto& arg : arg_storage) argv.push_back(arg.data());
  fuse_args args{static_cast<int>(argv.size()), argv.data(), 0};

  const fuse_lowlevel_ops& ops = backend_operations();
  session_ = fuse_session_new(&args, &ops, sizeof ops, &context_);
  fuse_opt_free_args(&args);
  if (session_ == nullptr) throw Error("fuse_session_new failed (see libfuse's message above)", 0);

  // "/dev/fd/N": libfuse adopts the fd as is; nothing is mounted.
  const std::string device = "/dev/fd/" + std::to_string(fuse_fd.get());
  if (fuse_session_mount(session_, device.c_str()) != 0) {
    fuse_session_destroy(session_);
    session_ = nullptr;
    throw Error("cannot adopt the FUSE connection fd " + std::to_string(fuse_fd.get()), 0);
  }
  static_cast<void>(fuse_fd.release());  // the session owns it now
}

FuseSession::~FuseSession() {
  if (loop_.joinable()) {
    if (serving_.load()) {
      // Leak the session: its threads still use it until the process exits.
      loop_.detach();
      return;
    }
    loop_.join();
  }
  // Never fuse_session_unmount(): the supervisor owns the mount.
  if (session_ != nullptr) fuse_session_destroy(session_);
}

void FuseSession::start(unsigned max_idle_threads, std::function<void(bool closed)> on_end) {
  fuse_loop_config* config = fuse_loop_cfg_create();
  if (config == nullptr) throw Error("fuse_loop_cfg_create failed", ENOMEM);
  fuse_loop_cfg_set_clone_fd(config, 0);
  fuse_loop_cfg_set_idle_threads(config, max_idle_threads);
  fuse_loop_cfg_set_max_threads(config, kMaxThreads);

  serving_ = true;
  try {
    loop_ = std::thread(
        [this, config, on_end = std::move(on_end)] { run_loop(config, on_end); });
  } catch (...) {
    serving_ = false;
    fuse_loop_cfg_destroy(config);
    throw;
  }
}

int FuseSession::invalidate_entry(std::uint64_t parent, const std::string& name) noexcept {
  // libfuse sends the terminating NUL too.
  const int rc = fuse_lowlevel_notify_inval_entry(session_, parent, name.c_str(), name.size());
  return rc < 0 ? -rc : 0;
}

int FuseSession::invalidate_node(std::uint64_t node) noexcept {
  // Offset 0, length 0: the attributes and every cached page (a directory's listing too).
  const int rc = fuse_lowlevel_notify_inval_inode(session_, node, 0, 0);
  return rc < 0 ? -rc : 0;
}

void FuseSession::run_loop(fuse_loop_config* config, const std::function<void(bool)>& on_end) {
  const int rc = fuse_session_loop_mt(session_, config);
  fuse_loop_cfg_destroy(config);
  serving_ = false;
  if (rc == 0) {
    spdlog::info("FUSE connection closed (unmounted or aborted); no longer serving");
  } else {
    spdlog::error("FUSE session loop ended with {}", rc);
  }
  if (on_end) on_end(rc == 0);
}

}  // namespace heddle::worker
