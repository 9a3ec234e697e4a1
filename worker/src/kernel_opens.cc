#include "kernel_opens.h"

namespace heddle::worker {

int KernelOpens::file(Backend& fs, NodeId node, std::shared_ptr<FileHandle>& out) {
  if ((out = files_.find(node))) return 0;
  // Two first reads of one node may both open it: the later one is kept, both are served.
  std::unique_ptr<FileHandle> opened;
  if (const int err = fs.open_node(node, opened); err != 0) return err;
  out = std::move(opened);
  files_.put(node, out);
  return 0;
}

int KernelOpens::listing(Backend& fs, NodeId node, bool fresh,
                         std::shared_ptr<const DirSnapshot>& out) {
  if (!fresh && (out = listings_.find(node))) return 0;
  auto snapshot = std::make_shared<DirSnapshot>();
  if (const int err = fs.read_dir(node, *snapshot); err != 0) return err;
  out = std::move(snapshot);
  listings_.put(node, out);
  return 0;
}

}  // namespace heddle::worker
