#include "fuse_session.h"

#include <fuse_lowlevel.h>

#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "backend.h"
#include "fuse_ops.h"
#include "heddle/error.h"

namespace heddle::worker {

FuseSession::FuseSession(UniqueFd fuse_fd, Backend& fs, bool debug) {
  std::vector<std::string> arg_storage{"heddle-fuse-worker"};
  if (debug) arg_storage.emplace_back("-d");
  std::vector<char*> argv;
  for (auto& arg : arg_storage) argv.push_back(arg.data());
  fuse_args args{static_cast<int>(argv.size()), argv.data(), 0};

  const fuse_lowlevel_ops& ops = backend_operations();
  session_ = fuse_session_new(&args, &ops, sizeof ops, &fs);
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
