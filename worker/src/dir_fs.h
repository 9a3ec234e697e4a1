// The directory backend: resolves nodes to paths beneath the source, checks that what is
// found there is still the same file, and answers with attributes, link targets, directory
// snapshots and read-only file fds (spliced to the kernel).
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "heddle/unique_fd.h"
#include "inode_table.h"
#include "served_ino.h"
#include "source_tree.h"
#include "source_watch.h"

namespace heddle::worker {

class DirFs final : public Backend {
 public:
  explicit DirFs(SourceTree tree);

  [[nodiscard]] int lookup(NodeId parent, std::string_view name, NodeId& node,
                           struct stat& st) override;
  void forget(NodeId node, std::uint64_t nlookup) noexcept override;
  [[nodiscard]] int getattr(NodeId node, struct stat& st) override;
  [[nodiscard]] int readlink(NodeId node, std::string& target) override;
  [[nodiscard]] int read_dir(NodeId node, DirSnapshot& out) override;
  // The handle holds an O_RDONLY fd of the file; reads are spliced from it. Files the kernel
  // opened itself share one such handle per node (KernelOpens): a file replaced in the source
  // since (another inode under its name) reads ESTALE, as over NFS, once that handle has left
  // KernelOpens' few.
  [[nodiscard]] int open_file(NodeId node, std::unique_ptr<FileHandle>& out) override;
  [[nodiscard]] int statfs(struct statvfs& out) override;
  // The source may change. Watched (SourceWatch), the kernel keeps names and attributes for 10
  // minutes and is told of each change (what inotify misses shows within them); else for 1 s.
  // Shorter watched timeouts cost a LOOKUP per entry each time they run out: a warm grep -r of
  // /usr/include 60 s after the last took 5-8 s instead of 0.4-1. Cached pages and listings
  // are dropped once a refreshed attribute shows a new mtime or size. The kernel opens files
  // and directories itself (a read-only mount; see open_file).
  static constexpr double kWatchedTimeout = 600.0;
  static constexpr double kUnwatchedTimeout = 1.0;
  [[nodiscard]] CachePolicy cache_policy() const override {
    const double timeout = watch_ && watch_->active() ? kWatchedTimeout : kUnwatchedTimeout;
    return {timeout, timeout, true, true};
  }
  // Starts watching the source (from the root down, as the kernel looks directories up).
  void attach_kernel_cache(KernelCache* cache) override;
  [[nodiscard]] std::size_t node_count() const override { return nodes_.size(); }
  void add_status(nlohmann::ordered_json& extra) const override;
  [[nodiscard]] bool set_next_node(NodeId node) override {
    nodes_.set_next(node);
    return true;
  }
  void add_lookups(NodeId node, std::uint64_t n) override { nodes_.add_lookups(node, n); }

 private:
  // Opens the node's path with `flags` (through SourceTree::open_beneath) and checks that the
  // file found is still the node's: ESTALE otherwise, so that the kernel looks the name up again.
  // With `owner`, st's owner and group are the real ones (SourceTree::restore_owner).
  [[nodiscard]] int open_node(NodeId node, int flags, UniqueFd& fd, struct stat& st,
                              bool owner = false) const;
  [[nodiscard]] int lookup_path(const std::string& path, NodeId& node, struct stat& st);
  // For SourceWatch: the node the kernel holds for `name` in directory `dir`, or 0.
  [[nodiscard]] NodeId child_node(NodeId dir, const std::string& name) const;
  // For SourceWatch, after lost events: every node's entry, and every node.
  [[nodiscard]] std::vector<KernelNote> everything() const;

  const SourceTree tree_;
  InodeTable nodes_;
  // st_ino as shown: unique per (st_dev, st_ino), since submounts are served too.
  mutable ServedIno inos_;
  // Set before the session serves, reset after: null when the kernel's node ids are not ours
  // (an overlay's lower layer) or inotify could not be used (watch_off_ says why).
  std::unique_ptr<SourceWatch> watch_;
  const char* watch_off_ = "off_under_overlay";
};

}  // namespace heddle::worker
