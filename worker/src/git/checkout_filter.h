// What `git checkout` of the served commit writes for a blob, through libgit2's filters: the
// `text`/`eol`/`crlf` conversions and `ident`, with the attributes of the served commit's
// .gitattributes files (and $GIT_DIR/info/attributes), and core.autocrlf / core.eol from the
// repository's own config. The user's global and the system config and attributes are not
// visible in the sandbox, so they never apply. Filters with a driver (`filter=NAME`) would
// run a program: they are reported, never run.
#pragma once

#include <git2.h>

#include <mutex>
#include <optional>
#include <string>

#include "git/crlf_stream.h"
#include "git/repository.h"

namespace heddle::worker::git {

class CheckoutFilter {
 public:
  // `repo` names the repository (its git dir is opened again for attributes); `commit` is the
  // commit whose attributes apply: without one (a thread naming a tree) nothing is converted.
  // Throws heddle::Error (the MountError text) if $GIT_DIR/info/attributes is not a regular
  // file or the repository cannot be opened again.
  CheckoutFilter(git_repository* repo, const std::optional<git_oid>& commit);
  CheckoutFilter(const CheckoutFilter&) = delete;
  CheckoutFilter& operator=(const CheckoutFilter&) = delete;

  // False when nothing can be converted (no commit). Then plan() is never needed.
  [[nodiscard]] bool enabled() const noexcept { return repo_ != nullptr; }
  // Whether files with no .gitattributes in any directory above them may still convert:
  // $GIT_DIR/info/attributes or core.attributesFile exists, or core.autocrlf is true.
  [[nodiscard]] bool applies_everywhere() const noexcept { return everywhere_; }

  struct Plan {
    bool convert = false;  // libgit2 has a filter for it (crlf or ident)
    std::string driver;    // the `filter` attribute's value, if set ("lfs" for Git LFS)
  };
  // The attributes of `path` (no blob is read). 0 or EIO.
  [[nodiscard]] int plan(const std::string& path, Plan& out);

  // How a blob too large to convert in memory converts, without reading it: libgit2's
  // filters for `path` are asked to convert a few probe texts, which tells which rule its crlf
  // filter applies (crlf_stream.h). kUnsupported: `ident` (its $Id$ expansion is not streamed).
  struct StreamPlan {
    enum class Kind { kNone, kCrlf, kUnsupported };
    Kind kind = Kind::kNone;
    CrlfRule crlf;
    std::string why;  // kUnsupported: which filter
  };
  [[nodiscard]] int stream_plan(const std::string& path, StreamPlan& out);

  // The commit whose attributes apply from now on (a retarget); hex, for cache keys.
  void set_commit(const git_oid& commit);
  [[nodiscard]] std::string commit_hex();

  // `blob` as checkout writes it at `path`; `changed` is false when that is the blob as stored.
  // Reads the blob whole. 0 or EIO.
  [[nodiscard]] int convert(const std::string& path, const git_oid& blob, std::string& out,
                            bool& changed);

 private:
  // The filters checkout runs on `path` (null: none), attributes from the commit only; `blob`,
  // if given, is what ident writes the id of. 0 or EIO. Caller holds mutex_.
  [[nodiscard]] int load_filters(const std::string& path, git_blob* blob, FilterListPtr& out);

  std::mutex mutex_;  // one libgit2 handle: used by one thread at a time
  RepoPtr repo_;      // bare, with an empty index: attributes come from the commit only
  IndexPtr index_;
  git_oid commit_{};
  bool everywhere_ = false;
};

}  // namespace heddle::worker::git
