// The writable layer of an overlay, on disk: DIR/upper holds the changed tree, DIR/work the
// temporaries that become visible only by an atomic rename. The format (see the README):
//   .wh.NAME            in a directory: NAME of the lower layer is deleted
//   .wh..wh..opq        in a directory: nothing of the lower directory shows through
//   user.heddle.origin  xattr: copied up from the lower layer (else created in the mount)
//   user.heddle.attr    xattr "MODE UID GID [INO]": what the mount shows, when the disk cannot
//                       hold it (INO: the inode number a copied-up file had); flagged by S_ISVTX
//                       on the file so that only flagged files are read
// Every path is resolved strictly beneath DIR/upper without following a symlink.
// DIR/work/orphans holds files removed from the mount while still open (issue 16): a worker
// that replaces a dead one under the same connection finds them there by node id.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "heddle/unique_fd.h"
#include "source_tree.h"

namespace heddle::worker {

inline constexpr std::string_view kWhiteoutPrefix = ".wh.";
inline constexpr const char* kOpaqueMarker = ".wh..wh..opq";

// What the mount shows for an upper entry's mode and owner.
struct ViewAttr {
  mode_t mode = 0;  // permission bits incl. setuid/setgid/sticky, without the type
  uid_t uid = 0;
  gid_t gid = 0;
  ino_t ino = 0;    // a copied-up file keeps the inode number it had; 0: the upper file's
};

class UpperDir {
 public:
  // Opens (creating, 0700) DIR/upper and DIR/work, and empties DIR/work: what a crash left
  // there was never visible. A `successor` (a worker taking a live connection over) keeps
  // DIR/work/orphans, whose files the kernel may still have open. Throws heddle::Error.
  UpperDir(const std::string& dir, uid_t owner_uid, gid_t owner_gid, bool successor = false);

  // openat2 beneath DIR/upper (see SourceTree::open_beneath).
  [[nodiscard]] OpenResult open(const std::string& rel, int flags) const;
  // The directory `rel` (O_PATH), or its errno.
  [[nodiscard]] OpenResult open_dir(const std::string& rel) const;
  [[nodiscard]] int root_fd() const noexcept { return upper_.get(); }
  [[nodiscard]] int work_fd() const noexcept { return work_.get(); }
  [[nodiscard]] const std::string& path() const noexcept { return dir_; }

  // A fresh name in DIR/work for a temporary.
  [[nodiscard]] std::string temp_name();
  // Removes `name` in DIR/work and everything below it. Best effort.
  void remove_temp(const std::string& name) const;
  // Takes the directory `name` in `dir_fd` out of sight in one rename into DIR/work, then
  // removes it with what it holds (markers only, for a directory that is empty in the mount).
  [[nodiscard]] int set_aside(int dir_fd, const std::string& name);

  // Files removed while open, out of the mount's sight: each under a name of the caller's in
  // DIR/work/orphans (made on first use). hide() moves the entry `name` of `dir_fd` there
  // (`keep` false) or links it there, the name staying (`keep` true); hide_pointer() leaves a
  // symlink to `target` there instead (a lower file, which cannot be moved).
  [[nodiscard]] int hide(int dir_fd, const std::string& name, const std::string& hidden, bool keep);
  [[nodiscard]] int hide_pointer(const std::string& target, const std::string& hidden);
  void unhide(const std::string& hidden) const;
  // DIR/work/orphans (O_PATH), or -1 when it does not exist; and the names in it.
  [[nodiscard]] int hidden_fd() const noexcept { return orphans_.get(); }
  [[nodiscard]] std::vector<std::string> hidden_names() const;

  // The whiteout and opaque markers, in the directory `dir_fd`.
  [[nodiscard]] static bool has_whiteout(int dir_fd, std::string_view name);
  [[nodiscard]] static int add_whiteout(int dir_fd, std::string_view name);
  static void drop_whiteout(int dir_fd, std::string_view name);
  [[nodiscard]] static bool is_opaque(int dir_fd);
  [[nodiscard]] static int make_opaque(int dir_fd);
  [[nodiscard]] static bool is_marker(std::string_view name) {
    return name.starts_with(kWhiteoutPrefix);
  }

  // The on-disk mode for a view mode: owner rw (rwx for directories) always, so that the
  // worker can use the file whatever the user chmods; never setuid/setgid; S_ISVTX when the
  // view needs the attr xattr. Applies it to `fd` (opened O_RDONLY or O_RDWR, not O_PATH) and
  // stores or removes the xattr; a `fresh` file (just made, with the mode it was created with
  // and no xattr) is touched only if its view needs it.
  [[nodiscard]] int store_attr(int fd, bool is_dir, const ViewAttr& view, bool fresh = false) const;
  // The view of an upper file from its on-disk stat (and the xattr, when flagged): through an
  // open (not O_PATH) fd of it, or by name in the directory `dir_fd`.
  [[nodiscard]] ViewAttr view_of(int fd, const struct stat& st) const;
  [[nodiscard]] ViewAttr view_at(int dir_fd, const std::string& name, const struct stat& st) const;
  static void mark_origin(int fd);

  [[nodiscard]] uid_t owner_uid() const noexcept { return owner_uid_; }
  [[nodiscard]] gid_t owner_gid() const noexcept { return owner_gid_; }

 private:
  std::string dir_;
  UniqueFd upper_;
  UniqueFd work_;
  UniqueFd orphans_;  // DIR/work/orphans, once it exists
  uid_t owner_uid_;
  gid_t owner_gid_;
  std::uint64_t next_temp_ = 0;

  [[nodiscard]] int open_orphans();
};

// The permission bits a file or directory with this view mode gets on disk (without the flag).
[[nodiscard]] mode_t disk_mode(bool is_dir, mode_t view_mode);

// "a/b/c" -> {"a/b", "c"}; "c" -> {".", "c"}.
[[nodiscard]] std::pair<std::string, std::string> split_path(const std::string& path);

}  // namespace heddle::worker
