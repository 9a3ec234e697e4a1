#include "git/repository.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>
#include <utility>

#include "git/oid.h"
#include "git/repo_file.h"
#include "heddle/error.h"

#include <spdlog/spdlog.h>

namespace heddle::worker::git {
namespace {

constexpr int kMaxTagDepth = 16;
constexpr int kMaxAlternateDepth = 5;
constexpr std::size_t kHeadsListed = 10;
// Caps on the repository files read whole (by us or by libgit2): far above any real one.
constexpr std::uint64_t kMaxSmallFile = 1ull << 20;        // HEAD, config, a ref, alternates
constexpr std::uint64_t kMaxPackedRefs = 512ull << 20;     // 512 MiB: millions of refs

// libgit2 opens these itself, blocking and following symlinks: a FIFO among them would hang
// the mount, a huge file would be read whole. Checked before libgit2 reads them.
void check_files_libgit2_reads(git_repository* repo, const std::string& root,
                               const std::string& thread) {
  const std::string gitdir = git_repository_path(repo);
  const std::string common = git_repository_commondir(repo);
  std::vector<std::pair<std::string, std::uint64_t>> files{
      {gitdir + "HEAD", kMaxSmallFile},          {gitdir + "config", kMaxSmallFile},
      {gitdir + "commondir", kMaxSmallFile},     {common + "config", kMaxSmallFile},
      {common + "packed-refs", kMaxPackedRefs},  {common + "objects/info/alternates", kMaxSmallFile}};
  if (!thread.empty() && thread.find("..") == std::string::npos) {
    files.emplace_back(common + "refs/heads/" + thread, kMaxSmallFile);
    files.emplace_back(common + "refs/heddle/threads/" + thread, kMaxSmallFile);
  }
  for (const auto& [path, cap] : files) {
    const int err = check_repo_file(path, cap);
    if (err == 0) continue;
    throw Error("repository " + root + ": " + path +
                    (err == EFBIG ? " is larger than " + std::to_string(cap) + " bytes"
                                  : std::string(" is not a regular file (a FIFO, a device or a "
                                                "socket)")) +
                    ": refusing to read it; fix or remove it (git never creates such a file)",
                err);
  }
}

void set_opt_or_throw(int rc, const char* what) {
  if (rc < 0) throw Error(std::string("libgit2 setup failed (") + what + "): " +
                              last_error_message(), EIO);
}

void do_init() {
  if (git_libgit2_init() < 0) throw Error("git_libgit2_init failed: " + last_error_message(), EIO);
  set_opt_or_throw(git_libgit2_opts(GIT_OPT_SET_OWNER_VALIDATION, 0), "owner validation");
  for (const int level : {GIT_CONFIG_LEVEL_SYSTEM, GIT_CONFIG_LEVEL_GLOBAL, GIT_CONFIG_LEVEL_XDG,
                          GIT_CONFIG_LEVEL_PROGRAMDATA}) {
    set_opt_or_throw(git_libgit2_opts(GIT_OPT_SET_SEARCH_PATH, level, ""), "config search path");
  }
  // As git reads objects (it hashes them on fsck and transfer, not on every read): the SHA-1
  // of each object read was a sixth of the worker's CPU in a cold grep. zlib's check still
  // catches damage.
  set_opt_or_throw(git_libgit2_opts(GIT_OPT_ENABLE_STRICT_HASH_VERIFICATION, 0),
                   "hash verification");
  // Commits, trees and tags only (blobs live in our own cache). The 4 KiB default per-object
  // limit would re-parse a big directory's tree on every lookup in it.
  set_opt_or_throw(git_libgit2_opts(GIT_OPT_SET_CACHE_MAX_SIZE, static_cast<ssize_t>(64 << 20)),
                   "cache size");
  set_opt_or_throw(git_libgit2_opts(GIT_OPT_SET_CACHE_OBJECT_LIMIT, GIT_OBJECT_TREE,
                                    static_cast<std::size_t>(16 << 20)),
                   "tree cache limit");
  set_opt_or_throw(git_libgit2_opts(GIT_OPT_SET_CACHE_OBJECT_LIMIT, GIT_OBJECT_COMMIT,
                                    static_cast<std::size_t>(1 << 20)),
                   "commit cache limit");
}

// EACCES on any path the repository needs means the worker's identity cannot read it; probed
// with access() because libgit2 reports most such failures as "not found".
bool denied(const std::string& path, int mode) {
  return ::access(path.c_str(), mode) != 0 && errno == EACCES;
}

bool exists(const std::string& path, bool* is_dir = nullptr) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return false;
  if (is_dir != nullptr) *is_dir = S_ISDIR(st.st_mode);
  return true;
}

bool probe_denied(const std::string& path) {
  bool is_dir = false;
  if (!exists(path, &is_dir)) {
    // A path below an unsearchable directory cannot be stat()ed either.
    return errno == EACCES;
  }
  return denied(path, is_dir ? (R_OK | X_OK) : R_OK);
}

bool unreadable(const std::string& root, git_repository* repo) {
  if (denied(root, R_OK | X_OK)) return true;
  std::vector<std::string> paths{root + "/.git"};
  if (repo != nullptr) {
    const std::string gitdir = git_repository_path(repo);
    const std::string common = git_repository_commondir(repo);
    for (const char* leaf : {"", "HEAD", "config"}) paths.push_back(gitdir + leaf);
    for (const char* leaf : {"", "objects", "objects/pack", "refs", "refs/heads", "packed-refs"}) {
      paths.push_back(common + leaf);
    }
  } else {
    for (const char* leaf : {"HEAD", "objects", "refs"}) {
      paths.push_back(root + "/.git/" + leaf);
      paths.push_back(root + "/" + leaf);
    }
  }
  return std::any_of(paths.begin(), paths.end(), probe_denied);
}

[[noreturn]] void throw_unreadable(const std::string& root) {
  throw Error("repository " + root + " is not readable by the worker's identity (uid " +
                  std::to_string(::getuid()) + ", gid " + std::to_string(::getgid()) +
                  "): make it readable by that user, or mount with --uid/--gid of its owner",
              EACCES);
}

bool permission_message(const std::string& message) {
  return message.find("Permission denied") != std::string::npos ||
         message.find("permission denied") != std::string::npos;
}

// A failure reading an object or ref that exists: unreadable, or damaged.
[[noreturn]] void throw_read_error(git_repository* repo, const std::string& root,
                                   const std::string& what) {
  const std::string message = last_error_message();
  if (permission_message(message) || unreadable(root, repo)) throw_unreadable(root);
  throw Error(what + ": " + message, EIO);
}

std::string list_heads(git_repository* repo) {
  std::vector<std::string> heads;
  git_reference_iterator* raw = nullptr;
  if (git_reference_iterator_glob_new(&raw, repo, "refs/heads/*") == 0) {
    const std::unique_ptr<git_reference_iterator, GitDeleter<git_reference_iterator,
                                                             git_reference_iterator_free>>
        it(raw);
    const char* name = nullptr;
    while (git_reference_next_name(&name, it.get()) == 0) {
      std::string_view view(name);
      view.remove_prefix(std::min(view.size(), std::string_view("refs/heads/").size()));
      heads.emplace_back(view);
    }
  }
  if (heads.empty()) return "(no heads)";
  std::sort(heads.begin(), heads.end());
  std::string out;
  for (std::size_t i = 0; i < heads.size() && i < kHeadsListed; ++i) {
    if (i > 0) out += ", ";
    out += heads[i];
  }
  if (heads.size() > kHeadsListed) out += ", ...";
  return out;
}

// Looks up `name` and returns the object it points to (symbolic refs followed), or null when
// there is no such ref (or `name` is not a valid ref name).
ObjectPtr lookup_ref(git_repository* repo, const std::string& name, const std::string& root) {
  git_reference* raw_ref = nullptr;
  int rc = git_reference_lookup(&raw_ref, repo, name.c_str());
  if (rc == GIT_ENOTFOUND || rc == GIT_EINVALIDSPEC) return nullptr;
  if (rc < 0) throw_read_error(repo, root, "cannot read ref " + name + " in " + root);
  const ReferencePtr ref(raw_ref);
  git_reference* raw_resolved = nullptr;
  rc = git_reference_resolve(&raw_resolved, ref.get());
  if (rc == GIT_ENOTFOUND) return nullptr;  // a dangling symbolic ref
  if (rc < 0) throw_read_error(repo, root, "cannot resolve ref " + name + " in " + root);
  const ReferencePtr resolved(raw_resolved);
  git_object* raw_obj = nullptr;
  if (git_object_lookup(&raw_obj, repo, git_reference_target(resolved.get()), GIT_OBJECT_ANY) <
      0) {
    throw_read_error(repo, root, "cannot read the object " + name + " points to in " + root);
  }
  return ObjectPtr(raw_obj);
}

}  // namespace

void init_libgit2() {
  static std::once_flag once;
  std::call_once(once, do_init);
}

std::string last_error_message() {
  const git_error* e = git_error_last();
  return (e != nullptr && e->message != nullptr) ? e->message : "unknown libgit2 error";
}

RepoPtr open_repository(const std::string& root) {
  init_libgit2();
  git_repository* raw = nullptr;
  if (git_repository_open_ext(&raw, root.c_str(), GIT_REPOSITORY_OPEN_NO_SEARCH, nullptr) == 0) {
    return RepoPtr(raw);
  }
  const std::string message = last_error_message();
  if (permission_message(message) || unreadable(root, nullptr)) throw_unreadable(root);
  bool is_dir = false;
  const int code = !exists(root, &is_dir) && errno == ENOENT ? ENOENT : ENOTDIR;
  throw Error(root + " is not a git repository: " + message, code);
}

ResolvedThread resolve_thread(git_repository* repo, const std::string& thread,
                              const std::string& root) {
  check_files_libgit2_reads(repo, root, thread);
  ObjectPtr obj;
  if (!thread.empty()) {
    obj = lookup_ref(repo, "refs/heads/" + thread, root);
    if (!obj) obj = lookup_ref(repo, "refs/heddle/threads/" + thread, root);
    if (!obj) {
      git_object* raw = nullptr;
      const int rc = git_revparse_single(&raw, repo, thread.c_str());
      if (rc == 0) {
        obj.reset(raw);
      } else if (rc != GIT_ENOTFOUND && rc != GIT_EINVALIDSPEC && rc != GIT_EAMBIGUOUS &&
                 rc != GIT_EPEEL) {
        throw_read_error(repo, root, "cannot resolve thread '" + thread + "' in " + root);
      }
    }
  }
  if (!obj) {
    if (unreadable(root, repo)) throw_unreadable(root);
    throw Error("thread '" + thread + "' not found in " + root + " (tried refs/heads/" + thread +
                    ", refs/heddle/threads/" + thread + " and revision '" + thread +
                    "'); existing heads: " + list_heads(repo),
                ENOENT);
  }

  for (int depth = 0; git_object_type(obj.get()) == GIT_OBJECT_TAG; ++depth) {
    git_object* target = nullptr;
    if (depth == kMaxTagDepth ||
        git_tag_target(&target, reinterpret_cast<const git_tag*>(obj.get())) < 0) {
      throw_read_error(repo, root, "cannot peel the tag thread '" + thread + "' names in " + root);
    }
    obj.reset(target);
  }

  ResolvedThread out;
  switch (git_object_type(obj.get())) {
    case GIT_OBJECT_COMMIT: {
      const auto* commit = reinterpret_cast<const git_commit*>(obj.get());
      out.commit = *git_commit_id(commit);
      out.tree = *git_commit_tree_id(commit);  // the id only: the tree is not read here
      out.time = static_cast<std::int64_t>(git_commit_time(commit));
      break;
    }
    case GIT_OBJECT_TREE:
      out.tree = *git_object_id(obj.get());
      break;
    case GIT_OBJECT_BLOB:
      throw Error("thread '" + thread + "' in " + root + " resolves to a blob (" +
                      to_hex(*git_object_id(obj.get())) + "), not a commit or tree",
                  EINVAL);
    default:
      throw Error("thread '" + thread + "' in " + root + " resolves to a " +
                      git_object_type2string(git_object_type(obj.get())) +
                      " object, not a commit or tree",
                  EINVAL);
  }
  return out;
}

namespace {

void add_object_dir(std::string dir, int depth, std::vector<std::string>& out) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (std::find(out.begin(), out.end(), dir) != out.end()) return;
  out.push_back(dir);
  if (depth >= kMaxAlternateDepth) return;
  std::string text;
  const std::string file = dir + "/info/alternates";
  if (const int err = read_repo_file(file, kMaxSmallFile, text); err != 0 && err != ENOENT) {
    spdlog::warn("git: ignoring {}: {}", file,
                 err == EINVAL ? "not a regular file" : std::strerror(err));
    return;
  }
  std::istringstream alternates(text);
  std::string line;
  while (std::getline(alternates, line)) {
    if (line.empty() || line[0] == '#') continue;
    // Relative alternates are relative to this objects directory (gitrepository-layout(5)).
    add_object_dir(line[0] == '/' ? line : dir + "/" + line, depth + 1, out);
  }
}

}  // namespace

std::vector<std::string> object_directories(git_repository* repo) {
  std::vector<std::string> out;
  add_object_dir(std::string(git_repository_commondir(repo)) + "objects", 0, out);
  return out;
}

RepoPool::RepoPool(std::string root, RepoPtr first) : root_(std::move(root)) {
  idle_.push_back(make_handle(std::move(first)));
  opened_ = 1;
}

std::unique_ptr<RepoPool::Handle> RepoPool::make_handle(RepoPtr repo) {
  git_odb* odb = nullptr;
  if (git_repository_odb(&odb, repo.get()) < 0) {
    throw Error("cannot open the object database: " + last_error_message(), EIO);
  }
  auto handle = std::make_unique<Handle>();
  handle->repo = std::move(repo);
  handle->odb.reset(odb);
  return handle;
}

RepoPool::Lease RepoPool::acquire() {
  {
    const std::lock_guard lock(mutex_);
    if (!idle_.empty()) {
      auto handle = std::move(idle_.back());
      idle_.pop_back();
      return Lease(*this, std::move(handle));
    }
  }
  // Opened outside the lock: it reads the repository's config and HEAD.
  git_repository* raw = nullptr;
  if (git_repository_open_ext(&raw, root_.c_str(), GIT_REPOSITORY_OPEN_NO_SEARCH, nullptr) < 0) {
    throw Error("cannot reopen " + root_ + ": " + last_error_message(), EIO);
  }
  auto handle = make_handle(RepoPtr(raw));
  {
    const std::lock_guard lock(mutex_);
    ++opened_;
  }
  return Lease(*this, std::move(handle));
}

void RepoPool::release(std::unique_ptr<Handle> handle) noexcept {
  try {
    const std::lock_guard lock(mutex_);
    idle_.push_back(std::move(handle));
  } catch (...) {
    // Out of memory growing the idle list: the handle is simply closed.
  }
}

void RepoPool::close_idle() noexcept {
  std::vector<std::unique_ptr<Handle>> closing;
  {
    const std::lock_guard lock(mutex_);
    closing.swap(idle_);
    opened_ -= closing.size();
  }
  // Closed outside the lock: freeing a cache of many trees takes a while.
}

std::size_t RepoPool::size() const {
  const std::lock_guard lock(mutex_);
  return opened_;
}

}  // namespace heddle::worker::git
