#include "heddle/launcher/capture.h"

#include <fcntl.h>
#include <git2.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <set>

#include "dir_entries.h"
#include "heddle/error.h"
#include "heddle/git_ptr.h"
#include "heddle/launcher/overlay_dir.h"
#include "heddle/lfs_pointer.h"
#include "heddle/sha256.h"
#include "heddle/unique_fd.h"

namespace heddle::launcher {
namespace {

void init_libgit2() {
  static std::once_flag once;
  std::call_once(once, [] {
    git_libgit2_init();
    // The supervisor checked the repository as the mount's user when it mounted it; git's
    // safe.directory check would refuse root reading a user's repository.
    git_libgit2_opts(GIT_OPT_SET_OWNER_VALIDATION, 0);
  });
}

[[noreturn]] void throw_git(const std::string& what, int rc = 0) {
  const git_error* error = git_error_last();
  std::string text = what;
  if (error != nullptr && error->message != nullptr) text += ": " + std::string(error->message);
  throw Error(text, rc == GIT_ENOTFOUND ? ENOENT : rc == GIT_EEXISTS ? EEXIST : EIO);
}

std::string hex(const git_oid& oid) {
  char text[GIT_OID_HEXSZ + 1];
  git_oid_tostr(text, sizeof text, &oid);
  return text;
}

git_oid parse_oid(const std::string& text) {
  git_oid oid{};
  if (text.size() != GIT_OID_HEXSZ || git_oid_fromstr(&oid, text.c_str()) != 0) {
    throw Error("commit id \"" + text + "\" is not 40 hex digits", EINVAL);
  }
  return oid;
}

// The repository without its work tree: attributes come from the commit (and info/attributes),
// never from a work tree's .gitattributes, which is not what the mount shows.
RepoPtr open_repository(const std::string& root) {
  init_libgit2();
  git_repository* raw = nullptr;
  if (git_repository_open_ext(&raw, root.c_str(), GIT_REPOSITORY_OPEN_NO_SEARCH, nullptr) != 0) {
    throw_git("open repository " + root);
  }
  RepoPtr full(raw);
  if (git_repository_is_bare(full.get())) return RepoPtr(full.release());
  raw = nullptr;
  if (git_repository_open_ext(&raw, git_repository_path(full.get()),
                              GIT_REPOSITORY_OPEN_NO_SEARCH | GIT_REPOSITORY_OPEN_BARE,
                              nullptr) != 0) {
    throw_git("open repository " + root);
  }
  return RepoPtr(raw);
}

CommitPtr lookup_commit(git_repository* repo, const git_oid& id) {
  git_commit* raw = nullptr;
  if (const int rc = git_commit_lookup(&raw, repo, &id); rc != 0) {
    throw_git("commit " + hex(id), rc);
  }
  return CommitPtr(raw);
}

std::string read_fd(int fd, const std::string& what) {
  std::string content;
  char buffer[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("read " + what);
    if (n == 0) return content;
    content.append(buffer, static_cast<std::size_t>(n));
  }
}

// The view mode of an upper file (see worker/src/upper_dir.h): its disk mode, or the mode in
// user.heddle.attr when S_ISVTX flags that the disk could not hold it.
mode_t view_mode(int fd, const struct stat& st) {
  mode_t mode = st.st_mode & 07777;
  if ((mode & S_ISVTX) == 0) return mode;
  char value[96] = {};
  unsigned parsed = 0;
  const ssize_t n = ::fgetxattr(fd, kAttrXattr, value, sizeof value - 1);
  if (n > 0 && std::sscanf(value, "%o", &parsed) == 1) return parsed & 07777;
  return mode & ~S_ISVTX;
}

// Writes `content` as the Git LFS object `pointer` names, where git-lfs keeps it: in a temporary
// file beside it, renamed into place, with the modes git-lfs gives (0666 and 0777 less the
// umask). An object already there with the right size is kept, as git-lfs keeps it.
void store_lfs_object(const std::string& common_dir, const LfsPointer& pointer,
                      const std::string& content, const std::string& path) {
  const std::string object = lfs_object_path(common_dir, pointer.oid);
  const auto fail = [&](int error) {
    throw Error("store the Git LFS object of " + path + " as " + object, error,
                "the mount's user must be able to write " + common_dir +
                    "lfs/objects (git-lfs writes there too); nothing was captured");
  };
  struct stat st {};
  if (::stat(object.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
      static_cast<std::uint64_t>(st.st_size) == pointer.size) {
    return;
  }
  const std::string objects = common_dir + "lfs/objects";
  const std::string fan_out = objects + "/" + pointer.oid.substr(0, 2);
  for (const std::string& dir :
       {common_dir + "lfs", objects, fan_out, fan_out + "/" + pointer.oid.substr(2, 2)}) {
    if (::mkdir(dir.c_str(), 0777) != 0 && errno != EEXIST) fail(errno);
  }
  static std::atomic<unsigned> counter{0};
  std::string temp;
  UniqueFd fd;
  while (!fd) {
    temp = object + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    fd.reset(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666));
    if (!fd && errno != EEXIST) fail(errno);
  }
  const auto discard = [&](int error) {
    ::unlink(temp.c_str());
    fail(error);
  };
  for (std::size_t done = 0; done < content.size();) {
    const ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) discard(errno);
    done += static_cast<std::size_t>(n);
  }
  if (::close(fd.release()) != 0) discard(errno);
  if (::rename(temp.c_str(), object.c_str()) != 0) discard(errno);
}

// What `git lfs clean` gives for `content`: content that already is a pointer as it is, else
// the pointer to its SHA-256, the object stored in the repository's lfs/objects.
std::string lfs_clean(const std::string& common_dir, const std::string& content,
                      const std::string& path) {
  if (parse_lfs_pointer(content)) return content;
  Sha256 hash;
  hash.update(content);
  const LfsPointer pointer{hash.hex_digest(), content.size()};
  // An empty file's pointer is empty (git-lfs's too), and smudges to nothing: no object.
  if (pointer.size > 0) store_lfs_object(common_dir, pointer, content, path);
  return lfs_pointer_text(pointer);
}

// Walks upper/ (written by the sandboxed worker, so never followed through a symlink) over
// the lower tree, writing blobs and trees.
class TreeCapture {
 public:
  TreeCapture(git_repository* repo, const git_oid& commit) : repo_(repo), commit_(commit) {}

  // The tree for `lower` (null: none, or hidden by an opaque marker) with the upper directory
  // `upper_fd` (-1: no changes) on top; nullopt if it would be empty.
  std::optional<git_oid> build(const git_tree* lower, int upper_fd, const std::string& prefix) {
    if (upper_fd < 0) {
      if (lower == nullptr || git_tree_entrycount(lower) == 0) return std::nullopt;
      return *git_tree_id(lower);
    }
    const std::string where = prefix.empty() ? "the overlay's upper/" : "upper/" + prefix;
    const std::vector<std::string> names = sorted_entry_names(upper_fd, where);
    if (std::find(names.begin(), names.end(), kOpaqueMarker) != names.end()) lower = nullptr;
    git_treebuilder* raw = nullptr;
    if (git_treebuilder_new(&raw, repo_, lower) != 0) throw_git("tree builder for " + where);
    const BuilderPtr builder(raw);
    const std::set<std::string> present(names.begin(), names.end());
    const std::string_view whiteout = kWhiteoutPrefix;
    for (const std::string& name : names) {
      if (!name.starts_with(whiteout)) continue;
      const std::string hidden = name.substr(whiteout.size());
      // A whiteout beside an entry of the same name is stale: the entry wins.
      if (name != kOpaqueMarker && !present.contains(hidden)) {
        (void)git_treebuilder_remove(builder.get(), hidden.c_str());
      }
    }
    for (const std::string& name : names) {
      if (name.starts_with(whiteout)) continue;
      add(builder.get(), lower, upper_fd, name, prefix + name);
    }
    if (git_treebuilder_entrycount(builder.get()) == 0) return std::nullopt;
    git_oid id{};
    if (git_treebuilder_write(&id, builder.get()) != 0) throw_git("write the tree of " + where);
    return id;
  }

  std::vector<std::string> empty_dirs;

 private:
  void insert(git_treebuilder* builder, const std::string& name, const git_oid& id,
              git_filemode_t mode, const std::string& path) {
    if (git_treebuilder_insert(nullptr, builder, name.c_str(), &id, mode) != 0) {
      throw_git("record " + path + " in its tree");
    }
  }

  void add(git_treebuilder* builder, const git_tree* lower, int upper_fd, const std::string& name,
           const std::string& path) {
    struct stat st {};
    if (::fstatat(upper_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      throw_errno("stat upper/" + path);
    }
    const git_tree_entry* below = lower != nullptr ? git_tree_entry_byname(lower, name.c_str())
                                                   : nullptr;
    if (S_ISDIR(st.st_mode)) {
      add_directory(builder, below, upper_fd, name, path);
    } else if (S_ISREG(st.st_mode)) {
      UniqueFd fd(::openat(upper_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
      if (!fd) throw_errno("open upper/" + path);
      struct stat opened {};
      if (::fstat(fd.get(), &opened) != 0 || !S_ISREG(opened.st_mode)) {
        throw Error("upper/" + path + " changed while it was captured", ESTALE, "capture again");
      }
      const std::string content = read_fd(fd.get(), "upper/" + path);
      // git records only the owner's execute bit.
      const git_filemode_t mode = (view_mode(fd.get(), opened) & S_IXUSR) != 0
                                      ? GIT_FILEMODE_BLOB_EXECUTABLE
                                      : GIT_FILEMODE_BLOB;
      insert(builder, name, blob_for(content, below, path), mode, path);
    } else if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<std::size_t>(std::max<off_t>(st.st_size, 0)) + 1, '\0');
      const ssize_t n = ::readlinkat(upper_fd, name.c_str(), target.data(), target.size());
      if (n < 0 || static_cast<std::size_t>(n) >= target.size()) {
        throw Error("read the symlink upper/" + path, n < 0 ? errno : ESTALE);
      }
      git_oid id{};
      if (git_blob_create_from_buffer(&id, repo_, target.data(), static_cast<std::size_t>(n)) != 0) {
        throw_git("write the symlink " + path);
      }
      insert(builder, name, id, GIT_FILEMODE_LINK, path);
    } else {
      throw Error("upper/" + path + " is " + describe_type(st.st_mode) +
                      ", which a git tree cannot hold",
                  EINVAL, "remove it from the mount and capture again");
    }
  }

  static std::string describe_type(mode_t mode) {
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISSOCK(mode)) return "a socket";
    return "a device";
  }

  void add_directory(git_treebuilder* builder, const git_tree_entry* below, int upper_fd,
                     const std::string& name, const std::string& path) {
    const UniqueFd dir(::openat(upper_fd, name.c_str(),
                                O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir) throw_errno("open upper/" + path);
    if (below != nullptr && git_tree_entry_filemode(below) == GIT_FILEMODE_COMMIT) {
      // A submodule shows as an empty directory; its files belong to another repository.
      const auto inside = sorted_entry_names(dir.get(), "upper/" + path);
      if (std::any_of(inside.begin(), inside.end(),
                      [](const std::string& n) { return !n.starts_with(kWhiteoutPrefix); })) {
        throw Error(path + " is a submodule, and the mount has files in it", EINVAL,
                    "files of a submodule belong to its own repository; move them out of " +
                        path + " and capture again");
      }
      return;  // the gitlink stays
    }
    TreePtr subtree;
    if (below != nullptr && git_tree_entry_type(below) == GIT_OBJECT_TREE) {
      git_tree* raw = nullptr;
      if (git_tree_lookup(&raw, repo_, git_tree_entry_id(below)) != 0) throw_git("tree " + path);
      subtree.reset(raw);
    }
    if (const auto id = build(subtree.get(), dir.get(), path + "/")) {
      insert(builder, name, *id, GIT_FILEMODE_TREE, path);
    } else {
      (void)git_treebuilder_remove(builder, name.c_str());
      empty_dirs.push_back(path);
    }
  }

  // The blob for a file's content as the mount shows it: the lower blob when the content is
  // what the mount served for it (checkout's conversion, or an LFS object), else the content
  // cleaned as `git add` cleans it: by git-lfs's clean filter where the attributes say
  // filter=lfs, then by the commit's text/eol and ident attributes.
  git_oid blob_for(const std::string& content, const git_tree_entry* below, const std::string& path) {
    if (below != nullptr && git_tree_entry_type(below) == GIT_OBJECT_BLOB &&
        served_unchanged(content, *git_tree_entry_id(below), path)) {
      return *git_tree_entry_id(below);
    }
    // git applies text/eol and ident to what a filter driver's clean gave, as libgit2's list
    // does below: it has no driver of its own for "lfs".
    std::optional<std::string> lfs_pointer;
    if (const auto driver = filter_driver(path); driver == "lfs") {
      lfs_pointer = lfs_clean(git_repository_commondir(repo_), content, path);
    } else if (driver) {
      throw Error(path + " changed, and its attributes name the filter \"" + *driver +
                      "\", a program capture does not run",
                  ENOTSUP,
                  "commit this change with git in a work tree (where the filter runs), or "
                  "discard it; nothing was captured");
    }
    const std::string& input = lfs_pointer ? *lfs_pointer : content;
    git_filter_options options = GIT_FILTER_OPTIONS_INIT;
    options.flags = GIT_FILTER_ATTRIBUTES_FROM_COMMIT;
    options.attr_commit_id = commit_;
    git_filter_list* raw = nullptr;
    if (git_filter_list_load_ext(&raw, repo_, nullptr, path.c_str(), GIT_FILTER_TO_ODB,
                                 &options) != 0) {
      throw_git("load the clean filters of " + path);
    }
    const FilterListPtr filters(raw);
    git_oid id{};
    if (filters) {
      GitBuf cleaned;
      if (git_filter_list_apply_to_buffer(&cleaned.buf, filters.get(), input.data(),
                                          input.size()) != 0) {
        throw_git("clean " + path);
      }
      if (git_blob_create_from_buffer(&id, repo_, cleaned.buf.ptr, cleaned.buf.size) != 0) {
        throw_git("write " + path);
      }
    } else if (git_blob_create_from_buffer(&id, repo_, input.data(), input.size()) != 0) {
      throw_git("write " + path);
    }
    return id;
  }

  bool served_unchanged(const std::string& content, const git_oid& blob_id, const std::string& path) {
    git_blob* raw = nullptr;
    if (git_blob_lookup(&raw, repo_, &blob_id) != 0) throw_git("blob of " + path);
    const BlobPtr blob(raw);
    const std::string_view stored(static_cast<const char*>(git_blob_rawcontent(blob.get())),
                                  static_cast<std::size_t>(git_blob_rawsize(blob.get())));
    if (stored == content) return true;
    if (const auto pointer = parse_lfs_pointer(stored); pointer && pointer->size == content.size()) {
      const std::string object = lfs_object_path(git_repository_commondir(repo_), pointer->oid);
      const UniqueFd fd(::open(object.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
      struct stat st {};
      if (fd && ::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) &&
          static_cast<std::size_t>(st.st_size) == content.size()) {
        return read_fd(fd.get(), object) == content;
      }
    }
    git_blob_filter_options options = GIT_BLOB_FILTER_OPTIONS_INIT;
    options.flags = GIT_BLOB_FILTER_CHECK_FOR_BINARY | GIT_BLOB_FILTER_ATTRIBUTES_FROM_COMMIT;
    options.attr_commit_id = commit_;
    GitBuf smudged;
    if (git_blob_filter(&smudged.buf, blob.get(), path.c_str(), &options) != 0) {
      throw_git("convert " + path + " as checkout does");
    }
    return smudged.view() == content;
  }

  // The filter driver the commit's attributes name for `path` (filter=NAME), if any.
  std::optional<std::string> filter_driver(const std::string& path) {
    git_attr_options options = GIT_ATTR_OPTIONS_INIT;
    options.flags = GIT_ATTR_CHECK_INCLUDE_COMMIT;
    options.attr_commit_id = commit_;
    const char* value = nullptr;
    if (git_attr_get_ext(&value, repo_, &options, path.c_str(), "filter") != 0) {
      throw_git("read the attributes of " + path);
    }
    if (git_attr_value(value) != GIT_ATTR_VALUE_STRING) return std::nullopt;
    return std::string(value);
  }

  git_repository* repo_;
  git_oid commit_;
};

ReferencePtr lookup_ref(git_repository* repo, const std::string& name) {
  git_reference* raw = nullptr;
  const int rc = git_reference_lookup(&raw, repo, name.c_str());
  if (rc == GIT_ENOTFOUND) return nullptr;
  if (rc != 0) throw_git("read ref " + name, rc);
  return ReferencePtr(raw);
}

std::optional<git_oid> peeled_commit(git_repository* repo, const std::string& name) {
  const ReferencePtr ref = lookup_ref(repo, name);
  if (!ref) return std::nullopt;
  git_object* raw = nullptr;
  if (const int rc = git_reference_peel(&raw, ref.get(), GIT_OBJECT_COMMIT); rc != 0) {
    if (rc == GIT_ENOTFOUND) return std::nullopt;
    throw_git("resolve ref " + name, rc);
  }
  const ObjectPtr object(raw);
  return *git_object_id(object.get());
}

SignaturePtr configured_signature(git_repository* repo) {
  git_signature* raw = nullptr;
  if (git_signature_default(&raw, repo) != 0) return nullptr;
  return SignaturePtr(raw);
}

}  // namespace

std::pair<std::string, std::string> parse_author(const std::string& text) {
  const auto open = text.find('<');
  const auto close = text.find('>');
  std::string name = open == std::string::npos ? "" : text.substr(0, open);
  while (!name.empty() && name.back() == ' ') name.pop_back();
  const bool well_formed = open != std::string::npos && close == text.size() - 1 &&
                           close > open + 1 && !name.empty() &&
                           text.find_first_of("<>", open + 1) == close &&
                           text.find('\n') == std::string::npos;
  if (!well_formed) {
    throw Error("author \"" + text + "\" is not \"Name <email>\"", EINVAL,
                "write it as --author \"A U Thor <author@example.com>\"");
  }
  return {name, text.substr(open + 1, close - open - 1)};
}

CapturedTree build_capture_tree(const std::string& repo_root, const std::string& base_commit,
                                const std::string& overlay_dir) {
  const RepoPtr repo = open_repository(repo_root);
  const git_oid base = parse_oid(base_commit);
  const CommitPtr commit = lookup_commit(repo.get(), base);
  git_tree* raw = nullptr;
  if (git_commit_tree(&raw, commit.get()) != 0) throw_git("the tree of " + base_commit);
  const TreePtr tree(raw);
  const std::string upper_path = overlay_dir + "/" + kOverlayUpperDir;
  const UniqueFd upper(::open(upper_path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!upper && errno != ENOENT) throw_errno("open " + upper_path);
  TreeCapture capture(repo.get(), base);
  const std::optional<git_oid> id = capture.build(tree.get(), upper ? upper.get() : -1, "");
  CapturedTree out;
  if (id) {
    out.tree = hex(*id);
  } else {
    // Everything deleted: the empty tree, as `git commit -a` records it.
    git_treebuilder* empty = nullptr;
    if (git_treebuilder_new(&empty, repo.get(), nullptr) != 0) throw_git("empty tree");
    const BuilderPtr builder(empty);
    git_oid empty_id{};
    if (git_treebuilder_write(&empty_id, builder.get()) != 0) throw_git("write the empty tree");
    out.tree = hex(empty_id);
  }
  out.empty_dirs = std::move(capture.empty_dirs);
  std::sort(out.empty_dirs.begin(), out.empty_dirs.end());
  return out;
}

std::optional<std::string> thread_ref(const std::string& repo_root, const std::string& thread) {
  const RepoPtr repo = open_repository(repo_root);
  for (const std::string& name : {"refs/heads/" + thread, "refs/heddle/threads/" + thread}) {
    if (git_reference_is_valid_name(name.c_str()) == 1 && lookup_ref(repo.get(), name)) return name;
  }
  return std::nullopt;
}

std::optional<std::string> ref_commit(const std::string& repo_root, const std::string& ref) {
  const RepoPtr repo = open_repository(repo_root);
  const auto id = peeled_commit(repo.get(), ref);
  if (!id) return std::nullopt;
  return hex(*id);
}

void use_git_config_home(const std::string& home) {
  init_libgit2();
  const std::string xdg = home + "/.config/git";
  git_libgit2_opts(GIT_OPT_SET_SEARCH_PATH, GIT_CONFIG_LEVEL_GLOBAL, home.c_str());
  git_libgit2_opts(GIT_OPT_SET_SEARCH_PATH, GIT_CONFIG_LEVEL_XDG, xdg.c_str());
}

std::string git_common_dir(const std::string& repo_root) {
  const RepoPtr repo = open_repository(repo_root);
  std::string dir = git_repository_commondir(repo.get());
  if (!dir.ends_with('/')) dir += '/';
  return dir;
}

namespace {

[[noreturn]] void throw_ref_moved(const CaptureRequest& request, const std::optional<git_oid>& now) {
  throw Error(request.ref + " moved since the mount resolved it (the mount serves " +
                  request.base_commit + ", the ref is " + (now ? hex(*now) : "deleted") +
                  " now); nothing was captured",
              EAGAIN,
              "your changes stay in the mount's overlay: once it serves the new commit (a "
              "following mount switches within a second; a --pin mount must be remounted), "
              "capture again");
}

}  // namespace

CaptureResult capture_commit(const CaptureRequest& request) {
  {
    // Checked first so that a refused capture writes nothing; the compare-and-swap below
    // still decides.
    const RepoPtr repo = open_repository(request.repo_root);
    const auto now = peeled_commit(repo.get(), request.ref);
    if (!now || hex(*now) != request.base_commit) throw_ref_moved(request, now);
  }
  CapturedTree built = build_capture_tree(request.repo_root, request.base_commit,
                                          request.overlay_dir);
  const RepoPtr repo = open_repository(request.repo_root);
  const git_oid base = parse_oid(request.base_commit);
  const CommitPtr parent = lookup_commit(repo.get(), base);
  CaptureResult result;
  result.tree = built.tree;
  result.empty_dirs = std::move(built.empty_dirs);
  if (hex(*git_commit_tree_id(parent.get())) == built.tree) {
    result.commit = request.base_commit;
    result.unchanged = true;
    return result;
  }
  SignaturePtr configured = configured_signature(repo.get());
  SignaturePtr author;
  if (!request.author.empty()) {
    const auto [name, email] = parse_author(request.author);
    git_signature* raw = nullptr;
    if (git_signature_now(&raw, name.c_str(), email.c_str()) != 0) {
      throw_git("author \"" + request.author + "\"");
    }
    author.reset(raw);
  } else if (!configured) {
    throw Error("no author for the capture: the repository " + request.repo_root +
                    " has no user.name and user.email",
                ENOENT,
                "pass --author \"Name <email>\", or set them: git -C " + request.repo_root +
                    " config user.name \"Your Name\" && git -C " + request.repo_root +
                    " config user.email you@example.com");
  }
  const git_signature* author_sig = author ? author.get() : configured.get();
  const git_signature* committer_sig = configured ? configured.get() : author.get();

  git_oid tree_id = parse_oid(built.tree);
  git_tree* raw_tree = nullptr;
  if (git_tree_lookup(&raw_tree, repo.get(), &tree_id) != 0) throw_git("tree " + built.tree);
  const TreePtr tree(raw_tree);
  const std::string message =
      request.message.empty() || request.message.back() == '\n' ? request.message
                                                                : request.message + "\n";
  const git_commit* parents[] = {parent.get()};
  git_oid commit_id{};
  if (git_commit_create(&commit_id, repo.get(), nullptr, author_sig, committer_sig, nullptr,
                        message.c_str(), tree.get(), 1, parents) != 0) {
    throw_git("write the commit");
  }
  const std::string subject = message.substr(0, message.find('\n'));
  const std::string log = "heddle-fuse capture: " + subject;
  git_reference* raw_ref = nullptr;
  const int rc = git_reference_create_matching(&raw_ref, repo.get(), request.ref.c_str(),
                                               &commit_id, 1, &base, log.c_str());
  if (rc == GIT_EMODIFIED || rc == GIT_ENOTFOUND) {
    throw_ref_moved(request, peeled_commit(repo.get(), request.ref));
  }
  if (rc != 0) throw_git("move " + request.ref + " to " + hex(commit_id), rc);
  git_reference_free(raw_ref);
  result.commit = hex(commit_id);
  return result;
}

}  // namespace heddle::launcher
