#include "takeover.h"

#include <fcntl.h>

#include <algorithm>
#include <deque>
#include <unordered_map>
#include <vector>

#include <spdlog/spdlog.h>

#include "heddle/error.h"

namespace heddle::worker {
namespace {

// A reopened handle must not do again what its open did once: truncate, create.
constexpr int kOnceOnly = O_TRUNC | O_CREAT | O_EXCL;

void restore_nodes(Backend& fs, const JournalState& state, RestoreReport& report) {
  std::unordered_map<NodeId, std::vector<NodeId>> children;
  NodeId highest = kRootNode;
  for (const auto& [id, node] : state.nodes) {
    highest = std::max(highest, id);
    if (node.parent != 0) children[node.parent].push_back(id);
  }
  // Breadth first from the root: a node is tried once its parent is back, so a cycle or a
  // parent that is gone leaves the nodes below it out.
  std::deque<NodeId> queue{kRootNode};
  while (!queue.empty()) {
    const NodeId parent = queue.front();
    queue.pop_front();
    const auto below = children.find(parent);
    if (below == children.end()) continue;
    for (const NodeId id : below->second) {
      const JournalNode& want = state.nodes.at(id);
      if (!fs.set_next_node(id)) continue;
      NodeId got = 0;
      struct stat st {};
      if (fs.lookup(parent, want.name, got, st) != 0) continue;
      if (got != id || st.st_ino != want.ino || (st.st_mode & S_IFMT) != want.type) {
        fs.forget(got, 1);
        continue;
      }
      if (want.nlookup > 1) fs.add_lookups(id, want.nlookup - 1);
      report.kept.nodes.emplace(id, want);
      queue.push_back(id);
    }
  }
  // Nodes not found by name (removed while open, or their name gone before the journal said
  // so): the backend may have kept them where it finds them by id.
  for (const auto& [id, want] : state.nodes) {
    if (report.kept.nodes.contains(id) || !fs.restore_unnamed(id, want.ino, want.type)) continue;
    if (want.nlookup > 1) fs.add_lookups(id, want.nlookup - 1);
    JournalNode kept = want;
    kept.parent = 0;
    kept.name.clear();
    report.kept.nodes.emplace(id, std::move(kept));
  }
  // Where the kernel may still cache a name for a node that is gone (under a parent that is back).
  for (const auto& [id, want] : state.nodes) {
    const bool parent_back = want.parent == kRootNode || report.kept.nodes.contains(want.parent);
    if (!report.kept.nodes.contains(id) && parent_back && !want.name.empty()) {
      report.stale_names.emplace_back(want.parent, want.name);
    }
  }
  // No id the kernel may still send is ever given to another file.
  static_cast<void>(fs.set_next_node(std::max(highest + 1, state.next_node)));
  report.nodes = report.kept.nodes.size();
  report.stale_nodes = state.nodes.size() - report.nodes;
}

void restore_handles(Backend& fs, OpenHandles& handles, const JournalState& state,
                     RestoreReport& report) {
  std::uint64_t highest = 0;
  for (const auto& [fh, recorded] : state.handles) {
    highest = std::max(highest, fh);
    if (recorded.node != kRootNode && !report.kept.nodes.contains(recorded.node)) continue;
    auto handle = std::make_shared<OpenHandle>();
    int err = 0;
    if (recorded.dir) {
      handle->dir = std::make_unique<DirListing>(recorded.node);
      const DirSnapshot* listing = nullptr;
      err = handle->dir->get(fs, listing);  // a directory that is gone is not restored
    } else if (opens_for_writing(recorded.flags)) {
      err = fs.open_writable(recorded.node, recorded.flags & ~kOnceOnly, handle->file);
    } else {
      err = fs.open_file(recorded.node, handle->file);
    }
    if (err != 0) {
      spdlog::debug("takeover: handle {} of node {} cannot be reopened: errno {}", fh,
                    recorded.node, err);
      continue;
    }
    handles.put(fh, std::move(handle));
    report.kept.handles.emplace(fh, recorded);
  }
  handles.reserve_below(std::max(highest + 1, state.next_fh));
  report.handles = report.kept.handles.size();
  report.lost_handles = state.handles.size() - report.handles;
}

}  // namespace

bool opens_for_writing(int flags) noexcept {
  return (flags & O_ACCMODE) != O_RDONLY || (flags & (O_TRUNC | O_APPEND)) != 0;
}

RestoreReport restore_journal(Backend& fs, OpenHandles& handles, const JournalState& state) {
  RestoreReport report;
  report.kept.init_request = state.init_request;
  report.kept.init_reply = state.init_reply;
  report.kept.next_node = state.next_node;
  report.kept.next_fh = state.next_fh;
  // The same inode numbers, and the commit the kernel's nodes were found in.
  fs.restore_takeover_state(state.backend);
  report.kept.backend = state.backend;
  if (!state.commit.empty() && fs.served_commit() != state.commit) {
    try {
      static_cast<void>(fs.retarget(state.commit, false));
    } catch (const std::exception& e) {
      spdlog::warn("takeover: cannot serve the predecessor's commit again: {}", e.what());
    }
  }
  report.kept.commit = fs.served_commit().value_or("");
  // A backend that cannot keep ids could give a new file an id the kernel holds for another.
  if (!fs.set_next_node(state.next_node)) {
    throw Error("this backend cannot keep node ids: the connection cannot be taken over", ENOTSUP);
  }
  restore_nodes(fs, state, report);
  restore_handles(fs, handles, state, report);
  fs.restore_done();
  return report;
}

}  // namespace heddle::worker
