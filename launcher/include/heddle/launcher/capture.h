// Capture (issue 15): a thread mount's content (the served commit's tree plus the overlay
// directory) recorded as a commit and the thread's ref moved to it, written with libgit2 by
// the supervisor, outside the sandbox. The worker never writes the repository.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace heddle::launcher {

// The tree a capture records.
struct CapturedTree {
  std::string tree;  // hex object id
  // Directories the mount shows empty: a git tree cannot hold one, so they are left out of
  // the tree and stay in the overlay. Relative to the mount's root, sorted.
  std::vector<std::string> empty_dirs;
};

// The tree of `base_commit` with the overlay directory's changes (its upper/: whiteouts,
// opaque directories, copied-up and new entries, modes from user.heddle.attr) applied, with
// modes as git records them (100644, 100755, 120000, 040000; a submodule stays a gitlink).
// Changed files go through the "clean" conversion of the attributes in `base_commit`
// (libgit2's filters: text/eol, ident; for filter=lfs, git-lfs's clean: the content stored
// as <common dir>lfs/objects/OI/D2/OID, its pointer the blob; any other filter driver is
// refused, ENOTSUP); a file whose content is what the mount served for its blob keeps that
// blob, so an unchanged or merely touched file changes no blob. New objects are written to the
// repository's object database. Throws heddle::Error naming the path.
[[nodiscard]] CapturedTree build_capture_tree(const std::string& repo_root,
                                              const std::string& base_commit,
                                              const std::string& overlay_dir);

// The ref a thread names, as the worker resolves it: refs/heads/T if it exists, else
// refs/heddle/threads/T; nullopt when neither exists (a tag or a commit id is served).
[[nodiscard]] std::optional<std::string> thread_ref(const std::string& repo_root,
                                                    const std::string& thread);

// The commit `ref` resolves to now (hex, tags peeled); nullopt if the ref is gone.
[[nodiscard]] std::optional<std::string> ref_commit(const std::string& repo_root,
                                                    const std::string& ref);

struct CaptureRequest {
  std::string repo_root;
  std::string ref;          // what thread_ref() gave when the mount started
  std::string base_commit;  // the commit the mount serves (the worker's Frozen)
  std::string overlay_dir;
  std::string message;      // empty: a default naming the mount
  std::string author;       // "Name <email>"; empty: user.name and user.email
};

// Reads the global git config (~/.gitconfig, ~/.config/git/config) under `home` from now on,
// in this process: the mount's user's when root works for them (root's own would be read,
// or, as the user, refused). Process-wide, as libgit2's search path is.
void use_git_config_home(const std::string& home);

struct CaptureResult {
  std::string commit;  // the new commit; base_commit if nothing changed
  std::string tree;
  std::vector<std::string> empty_dirs;
  bool unchanged = false;  // the tree is base_commit's: no commit written, the ref not moved
};

// Builds the tree, writes the commit (parent base_commit; author from `author` or the
// repository's config, committer from the config or else the author) and moves `ref` from
// base_commit to it with a compare-and-swap. Throws heddle::Error; if the ref no longer points
// at base_commit, nothing but unreferenced objects was written and the error says what to do.
[[nodiscard]] CaptureResult capture_commit(const CaptureRequest& request);

// The repository's common git directory (refs/, packed-refs), ending in '/'.
[[nodiscard]] std::string git_common_dir(const std::string& repo_root);

// "Name <email>" -> {name, email}; throws heddle::Error (EINVAL) for anything else.
[[nodiscard]] std::pair<std::string, std::string> parse_author(const std::string& text);

}  // namespace heddle::launcher
