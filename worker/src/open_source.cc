#include "open_source.h"

#include "dir_fs.h"
#ifdef HEDDLE_HAVE_GIT_BACKEND
#include "git/git_fs.h"
#endif
#include "heddle/error.h"
#include "heddle/overloaded.h"
#include "source_tree.h"

namespace heddle::worker {
std::unique_ptr<Backend> open_source(const ipc::Source& source, uid_t owner_uid,
                                     gid_t owner_gid, std::shared_ptr<BrokerClient> broker) {
  return std::visit(
      Overloaded{[&](const ipc::DirSource& dir) -> std::unique_ptr<Backend> {
              return std::make_unique<DirFs>(SourceTree::open(dir.dir, std::move(broker)));
            },
            [&](const ipc::GitSource& git) -> std::unique_ptr<Backend> {
#ifdef HEDDLE_HAVE_GIT_BACKEND
              return open_git_fs(
                  GitFsOptions{git.repo_root, git.thread, git.cache_bytes, owner_uid, owner_gid});
#else
              (void)git, (void)owner_uid, (void)owner_gid;
              // The supervisor runs heddle-fuse-worker-git for a git thread (worker/CMakeLists.txt).
              throw Error("heddle-fuse-worker serves directories; a git thread is served by "
                          "heddle-fuse-worker-git",
                          ENOTSUP,
                          "HEDDLE_FUSE_WORKER_BIN names one worker for every mount; set "
                          "HEDDLE_FUSE_WORKER_GIT_BIN to heddle-fuse-worker-git, or unset it");
#endif
            }},
      source);
}

std::string describe_source(const ipc::Source& source) {
  return std::visit(Overloaded{[](const ipc::DirSource& dir) { return dir.dir; },
                          [](const ipc::GitSource& git) {
                            return git.repo_root + " thread " + git.thread;
                          }},
                    source);
}

}  // namespace heddle::worker
