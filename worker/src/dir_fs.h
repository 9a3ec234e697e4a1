// The read-only view's logic, free of FUSE types: resolve nodes to source paths, check that
// what is found there is still the same file, and produce attributes, link targets, directory
// snapshots and read-only file fds. Every call returns 0 or an errno for the kernel.
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "heddle/unique_fd.h"
#include "inode_table.h"
#include "source_tree.h"

namespace heddle::worker {

struct DirEntry {
  std::string name;
  ino_t ino = 0;
  unsigned char type = 0;  // DT_*
};

// A directory's entries, read once at opendir so that no directory fd stays open.
// Includes "." and "..", in the order the source filesystem returned them.
struct DirSnapshot {
  std::string path;  // of the directory, beneath the source
  std::vector<DirEntry> entries;
};

class DirFs {
 public:
  explicit DirFs(const SourceTree& tree);
  DirFs(const DirFs&) = delete;
  DirFs& operator=(const DirFs&) = delete;

  // Finds `name` in directory `parent` and counts one kernel reference on the result.
  [[nodiscard]] int lookup(NodeId parent, const char* name, NodeId& node, struct stat& st);
  // The same for an entry of a snapshot (readdirplus).
  [[nodiscard]] int lookup_entry(const DirSnapshot& dir, const DirEntry& entry, NodeId& node,
                                 struct stat& st);
  void forget(NodeId node, std::uint64_t nlookup) noexcept;

  [[nodiscard]] int getattr(NodeId node, struct stat& st) const;
  [[nodiscard]] int readlink(NodeId node, std::string& target) const;
  [[nodiscard]] int read_dir(NodeId node, DirSnapshot& out) const;
  // An O_RDONLY fd of the regular file `node`.
  [[nodiscard]] int open_file(NodeId node, UniqueFd& fd) const;
  [[nodiscard]] int statfs(struct statvfs& out) const;

  [[nodiscard]] std::size_t node_count() const { return nodes_.size(); }
  [[nodiscard]] const SourceTree& tree() const noexcept { return tree_; }

 private:
  // Opens the node's path with `flags` (through SourceTree::open_beneath) and checks that the
  // file found is still the node's: ESTALE otherwise, so that the kernel looks the name up again.
  // `path`, when given, receives the path that was opened.
  [[nodiscard]] int open_node(NodeId node, int flags, UniqueFd& fd, struct stat& st,
                              std::string* path = nullptr) const;
  [[nodiscard]] int lookup_path(const std::string& path, NodeId& node, struct stat& st);

  const SourceTree& tree_;
  InodeTable nodes_;
};

}  // namespace heddle::worker
