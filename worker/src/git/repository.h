// libgit2 plumbing: process-wide setup, opening a repository and resolving a
// thread to a tree, and a pool of repository handles for concurrent FUSE threads.
#pragma once

#include <git2.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "heddle/git_ptr.h"  // RepoPtr, TreePtr, ...: one set of owning handles

namespace heddle::worker::git {

// Once per process, thread-safe: git_libgit2_init, no owner validation (the worker's uid is
// not the repository owner's), no system/global/XDG config (the sandbox has no /etc or $HOME),
// and object-cache limits that keep big trees parsed.
void init_libgit2();

// The calling thread's last libgit2 error message (libgit2 keeps it thread-local).
[[nodiscard]] std::string last_error_message();

// Opens a work tree (with a .git directory or file) or a bare repository at `root`, without
// searching parent directories. Throws heddle::Error with the MountError text.
[[nodiscard]] RepoPtr open_repository(const std::string& root);

struct ResolvedThread {
  std::optional<git_oid> commit;  // absent when the thread names a tree directly
  git_oid tree{};
  std::int64_t time = 0;  // the commit's committer time; 0 for a bare tree
};

// refs/heads/T, then refs/heddle/threads/T, then git_revparse_single(T); tags are peeled.
// Reads the ref and commit objects only. Throws heddle::Error with the MountError text.
[[nodiscard]] ResolvedThread resolve_thread(git_repository* repo, const std::string& thread,
                                            const std::string& root);

// The object directories to search, in order: the common dir's objects/ and then every
// alternate (objects/info/alternates, recursively).
[[nodiscard]] std::vector<std::string> object_directories(git_repository* repo);

// libgit2's THREADING.md: "Use an object from a single thread at a time" — a git_repository
// (and its odb and object cache) must not be used by two threads at once. Rather than one
// thread_local repository per FUSE thread (whose lifetime would outlive this backend), every
// request leases a whole repository from this pool and returns it when done: each handle is
// used by one thread at a time, and the pool's mutex only guards popping/pushing a pointer,
// never libgit2 I/O. The pool grows to the number of concurrent requests. Packs are mapped
// once per process (libgit2 shares them between repositories by path).
class RepoPool {
 public:
  struct Handle {
    RepoPtr repo;
    OdbPtr odb;
  };

  class Lease {
   public:
    Lease(RepoPool& pool, std::unique_ptr<Handle> handle) noexcept
        : pool_(&pool), handle_(std::move(handle)) {}
    Lease(Lease&&) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() {
      if (handle_) pool_->release(std::move(handle_));
    }
    [[nodiscard]] git_repository* repo() const noexcept { return handle_->repo.get(); }
    [[nodiscard]] git_odb* odb() const noexcept { return handle_->odb.get(); }

   private:
    RepoPool* pool_;
    std::unique_ptr<Handle> handle_;
  };

  // `first` is the repository open_git_fs already opened; more are opened from `root`.
  RepoPool(std::string root, RepoPtr first);
  RepoPool(const RepoPool&) = delete;
  RepoPool& operator=(const RepoPool&) = delete;

  // Throws heddle::Error (EIO) if another handle is needed and cannot be opened.
  [[nodiscard]] Lease acquire();
  [[nodiscard]] std::size_t size() const;
  // Closes the repositories no request holds: their object caches (the parsed trees, up to
  // the cache's 64 MiB) and, once no repository maps them, the packs go. The next request
  // opens one again.
  void close_idle() noexcept;

 private:
  void release(std::unique_ptr<Handle> handle) noexcept;
  [[nodiscard]] static std::unique_ptr<Handle> make_handle(RepoPtr repo);

  const std::string root_;
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<Handle>> idle_;
  std::size_t opened_ = 0;
};

}  // namespace heddle::worker::git
