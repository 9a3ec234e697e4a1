#include "fuse_ops.h"

#include <fuse_lowlevel.h>

#include <dirent.h>
#include <fcntl.h>

#include <cerrno>
#include <algorithm>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "backend.h"
#include "kernel_opens.h"
#include "node_journal.h"
#include "open_handles.h"
#include "takeover.h"
#include "write_gate.h"

namespace heddle::worker {
namespace {

SessionContext& context_of(fuse_req_t req) {
  return *static_cast<SessionContext*>(fuse_req_userdata(req));
}

Backend& fs_of(fuse_req_t req) { return context_of(req).fs; }

// A modifying request waits here while a capture holds the overlay still (write_gate.h). A
// read-only backend refuses every change at once: nothing to hold back.
WriteGate* gate_of(fuse_req_t req) {
  return fs_of(req).writable() ? &context_of(req).gate : nullptr;
}

fuse_entry_param entry_param(const Backend& fs, NodeId node, const struct stat& st) {
  const CachePolicy policy = fs.cache_policy();
  fuse_entry_param e{};
  e.ino = node;
  e.generation = 0;  // nodeids are never reused
  e.attr = st;       // st_ino is the backend's, not the nodeid
  e.attr_timeout = fs.provisional(node) ? 0.0 : policy.attr_timeout;
  e.entry_timeout = policy.entry_timeout;
  return e;
}

// The open file `fi` names, or null (an fh this worker does not know: EBADF).
std::shared_ptr<OpenHandle> open_file_of(fuse_req_t req, const fuse_file_info* fi) {
  if (fi == nullptr) return nullptr;
  auto handle = context_of(req).handles.find(fi->fh);
  return handle != nullptr && handle->file != nullptr ? handle : nullptr;
}

NodeJournal* journal_of(fuse_req_t req) { return context_of(req).journal; }

// Before a reply that gives the kernel a reference on e.ino, found as `name` in `parent`.
void journal_entry(fuse_req_t req, fuse_ino_t parent, const char* name,
                   const fuse_entry_param& e) {
  if (NodeJournal* journal = journal_of(req); journal != nullptr && e.ino != 0) {
    journal->looked_up(e.ino, parent, name, e.attr.st_ino, e.attr.st_mode);
  }
}

// References the kernel gave back (forget), or never got (a reply that did not arrive).
void drop_references(fuse_req_t req, fuse_ino_t node, std::uint64_t n) {
  fs_of(req).forget(node, n);
  if (NodeJournal* journal = journal_of(req)) journal->forgotten(node, n);
}

KernelOpens& kernel_opens_of(fuse_req_t req) { return context_of(req).kernel_opens; }

// Runs an operation body, turning an escaping exception (allocation failure, in practice) into
// an error reply. Bodies reply last, so an exception never follows a reply.
template <typename Body>
void guarded(fuse_req_t req, const char* op, Body&& body) noexcept {
  try {
    body();
  } catch (const std::bad_alloc&) {
    fuse_reply_err(req, ENOMEM);
  } catch (const std::exception& e) {
    spdlog::error("{}: {}", op, e.what());
    fuse_reply_err(req, EIO);
  } catch (...) {
    spdlog::error("{}: unknown exception", op);
    fuse_reply_err(req, EIO);
  }
}

void op_init(void* userdata, fuse_conn_info* conn) {
  SessionContext& context = *static_cast<SessionContext*>(userdata);
  if ((conn->capable & FUSE_CAP_READDIRPLUS) != 0) conn->want |= FUSE_CAP_READDIRPLUS;
  // A node whose one handle serves every open needs no open round trip (open_in_kernel):
  // op_open and op_opendir answer ENOSYS once, and the kernel opens locally from then on
  // (these capabilities need no `want`).
  if (context.fs.cache_policy().open_in_kernel && !context.fs.writable()) {
    context.kernel_opens.files = (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) != 0;
    context.kernel_opens.dirs = (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) != 0;
  }
  if (context.fs.writable()) {
    // O_TRUNC reaches open(), so a truncating open of a lower file copies up no data.
    if ((conn->capable & FUSE_CAP_ATOMIC_O_TRUNC) != 0) conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
  }
  // Kept pages of a file whose source changed are dropped once its attributes are refreshed.
  if ((conn->capable & FUSE_CAP_AUTO_INVAL_DATA) != 0) conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
  // Every request is read into memory, never spliced into a pipe: the in-flight table
  // (in_flight.h) records each one's unique as read() returns it. libfuse asks for splice reads
  // of its own accord when write_buf is set; the flag stays in libfuse (the kernel is not told,
  // and the FUSE_INIT reply is the same).
  conn->want &= ~FUSE_CAP_SPLICE_READ;
  spdlog::debug("FUSE protocol {}.{}: capable {:#x}, want {:#x}", conn->proto_major,
                conn->proto_minor, conn->capable, conn->want);
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, "lookup", [&] {
    NodeId node = 0;
    struct stat st {};
    if (const int err = fs_of(req).lookup(parent, name, node, st); err != 0) {
      if (err == ENOENT && fs_of(req).writable()) {
        // A negative entry: the kernel remembers the miss (compilers probe many include paths)
        // until the entry timeout, or until a create through this mount replaces it.
        fuse_entry_param none{};
        none.entry_timeout = fs_of(req).cache_policy().entry_timeout;
        fuse_reply_entry(req, &none);
        return;
      }
      fuse_reply_err(req, err);
      return;
    }
    const auto e = entry_param(fs_of(req), node, st);
    journal_entry(req, parent, name, e);
    // Should the reply not arrive (interrupted request), the kernel holds no reference.
    if (fuse_reply_entry(req, &e) != 0) drop_references(req, node, 1);
  });
}

void op_forget(fuse_req_t req, fuse_ino_t ino, std::uint64_t nlookup) {
  drop_references(req, ino, nlookup);
  fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, std::size_t count, fuse_forget_data* forgets) {
  for (std::size_t i = 0; i < count; ++i) drop_references(req, forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, "getattr", [&] {
    struct stat st {};
    // The kernel passes a handle only for regular files; it may answer for the open file
    // (fstat of a file the kernel opened itself: the node's kept handle, if any).
    const auto handle = open_file_of(req, fi);
    const bool kernel_opened = fi != nullptr && fi->fh == 0 && kernel_opens_of(req).files;
    const auto kept = handle == nullptr && kernel_opened ? kernel_opens_of(req).kept_file(ino)
                                                         : nullptr;
    FileHandle* const file = handle != nullptr ? handle->file.get() : kept.get();
    int err = file != nullptr ? file->stat(st) : ENOSYS;
    if (err == ENOSYS) err = fs_of(req).getattr(ino, st);
    if (err != 0) {
      fuse_reply_err(req, err);
      return;
    }
    const Backend& fs = fs_of(req);
    fuse_reply_attr(req, &st, fs.provisional(ino) ? 0.0 : fs.cache_policy().attr_timeout);
  });
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  guarded(req, "readlink", [&] {
    std::string target;
    if (const int err = fs_of(req).readlink(ino, target); err != 0) {
      fuse_reply_err(req, err);
      return;
    }
    fuse_reply_readlink(req, target.c_str());
  });
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, "opendir", [&] {
    if (kernel_opens_of(req).dirs) {
      fuse_reply_err(req, ENOSYS);  // the kernel opens directories itself from now on
      return;
    }
    auto handle = std::make_shared<OpenHandle>();
    handle->dir = std::make_unique<DirListing>(ino);
    fi->fh = context_of(req).handles.add(std::move(handle));
    fi->cache_readdir = fs_of(req).cache_policy().keep_cache;
    fi->keep_cache = fi->cache_readdir;
    if (NodeJournal* journal = journal_of(req)) journal->opened(fi->fh, ino, fi->flags, true);
    // On failure (interrupted opendir) no releasedir will come.
    if (fuse_reply_open(req, fi) != 0) {
      static_cast<void>(context_of(req).handles.take(fi->fh));
      if (NodeJournal* journal = journal_of(req)) journal->released(fi->fh);
    }
  });
}

// Serves readdir and readdirplus from the snapshot (the open's, or the node's when the kernel
// opened the directory itself). Entry i has offset i + 1.
void reply_dir(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off, fuse_file_info* fi,
               bool plus) {
  Backend& fs = fs_of(req);
  std::shared_ptr<OpenHandle> handle;  // these keep the snapshot alive until the reply is sent
  std::shared_ptr<const DirSnapshot> by_node;
  const DirSnapshot* opened = nullptr;
  if (fi->fh == 0 && kernel_opens_of(req).dirs) {
    if (const int err = kernel_opens_of(req).listing(fs, ino, off == 0, by_node); err != 0) {
      fuse_reply_err(req, err);
      return;
    }
    opened = by_node.get();
  } else {
    handle = context_of(req).handles.find(fi->fh);
    if (handle == nullptr || handle->dir == nullptr) {
      fuse_reply_err(req, EBADF);
      return;
    }
    if (const int err = handle->dir->get(fs, opened); err != 0) {
      fuse_reply_err(req, err);
      return;
    }
  }
  const DirSnapshot& dir = *opened;
  std::vector<char> buffer(size);
  std::vector<NodeId> counted;  // lookups made for this reply (readdirplus)
  std::size_t used = 0;
  for (std::size_t i = off < 0 ? dir.entries.size() : static_cast<std::size_t>(off);
       i < dir.entries.size(); ++i) {
    const DirEntry& entry = dir.entries[i];
    const auto next = static_cast<off_t>(i + 1);
    char* const at = buffer.data() + used;
    const std::size_t room = size - used;
    if (!plus) {
      struct stat st {};
      st.st_ino = entry.ino;
      st.st_mode = DTTOIF(entry.type);
      // Writes nothing, and answers the size needed, when the entry does not fit.
      const std::size_t n = fuse_add_direntry(req, at, room, entry.name.c_str(), &st, next);
      if (n > room) break;
      used += n;
      continue;
    }
    // Check the fit before the lookup: an entry that is not sent must not be counted.
    const std::size_t needed = fuse_add_direntry_plus(req, nullptr, 0, entry.name.c_str(),
                                                      nullptr, next);
    if (needed > room) break;
    fuse_entry_param e{};
    e.attr.st_ino = entry.ino;
    e.attr.st_mode = DTTOIF(entry.type);
    // "." and "..", and entries that vanished or cannot be resolved since the listing was
    // read, go out with nodeid 0: the kernel then lists the name without caching a node for it
    // (nor sending a forget for it).
    const bool dots = entry.name == "." || entry.name == "..";
    if (!dots) {
      NodeId node = 0;
      struct stat st {};
      if (fs.lookup(dir.node, entry.name, node, st) == 0) {
        e = entry_param(fs, node, st);
        counted.push_back(node);
        journal_entry(req, dir.node, entry.name.c_str(), e);
      }
    }
    used += fuse_add_direntry_plus(req, at, room, entry.name.c_str(), &e, next);
  }
  // An empty reply ends a listing: one the kernel opened itself need not be kept any longer.
  if (used == 0 && by_node) kernel_opens_of(req).listing_done(ino);
  // Should the reply not arrive (interrupted request), the kernel holds none of these.
  if (fuse_reply_buf(req, buffer.data(), used) != 0) {
    for (const NodeId node : counted) drop_references(req, node, 1);
  }
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off,
                fuse_file_info* fi) {
  guarded(req, "readdir", [&] { reply_dir(req, ino, size, off, fi, false); });
}

void op_readdirplus(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off,
                    fuse_file_info* fi) {
  guarded(req, "readdirplus", [&] { reply_dir(req, ino, size, off, fi, true); });
}

void op_releasedir(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* fi) {
  static_cast<void>(context_of(req).handles.take(fi->fh));
  if (NodeJournal* journal = journal_of(req)) journal->released(fi->fh);
  fuse_reply_err(req, 0);
}

// Hands an open handle of `ino` to the kernel (with `e` for create). On failure (an interrupted
// request) no release will come: the handle is freed here.
void reply_opened(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi,
                  std::unique_ptr<FileHandle> handle, const fuse_entry_param* e = nullptr) {
  auto open = std::make_shared<OpenHandle>();
  open->file = std::move(handle);
  fi->fh = context_of(req).handles.add(std::move(open));
  // Writes reach the upper file as they are made: close() has nothing left to flush.
  fi->noflush = 1;
  fi->keep_cache = fs_of(req).cache_policy().keep_cache;
  if (NodeJournal* journal = journal_of(req)) journal->opened(fi->fh, ino, fi->flags, false);
  const int rc = e != nullptr ? fuse_reply_create(req, e, fi) : fuse_reply_open(req, fi);
  if (rc != 0) {
    static_cast<void>(context_of(req).handles.take(fi->fh));
    if (NodeJournal* journal = journal_of(req)) journal->released(fi->fh);
    if (e != nullptr) drop_references(req, e->ino, 1);
  }
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, "open", [&] {
    if (kernel_opens_of(req).files && !opens_for_writing(fi->flags)) {
      fuse_reply_err(req, ENOSYS);  // the kernel opens files itself from now on
      return;
    }
    std::unique_ptr<FileHandle> handle;
    const WriteGate::Pass pass(opens_for_writing(fi->flags) ? gate_of(req) : nullptr);
    const int err = opens_for_writing(fi->flags)
                        ? fs_of(req).open_writable(ino, fi->flags, handle)
                        : fs_of(req).open_file(ino, handle);
    if (err != 0) {
      fuse_reply_err(req, err);
      return;
    }
    reply_opened(req, ino, fi, std::move(handle));
  });
}

void op_read(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off, fuse_file_info* fi) {
  guarded(req, "read", [&] {
    std::shared_ptr<OpenHandle> opened;           // these keep the handle alive until the
    std::shared_ptr<FileHandle> by_node;          // reply is sent
    FileHandle* handle = nullptr;
    if (fi->fh == 0 && kernel_opens_of(req).files) {
      if (const int err = kernel_opens_of(req).file(fs_of(req), ino, by_node); err != 0) {
        fuse_reply_err(req, err);
        return;
      }
      handle = by_node.get();
    } else {
      opened = open_file_of(req, fi);
      if (opened == nullptr) {
        fuse_reply_err(req, EBADF);
        return;
      }
      handle = opened->file.get();
    }
    ReadResult result;
    if (const int err = handle->read(size, off, result); err != 0) {
      fuse_reply_err(req, err);
      return;
    }
    if (result.fd < 0) {
      fuse_reply_buf(req, result.data.data(), std::min(size, result.data.size()));
      return;
    }
    // Straight from the source fd (pread, or splice when the connection uses it).
    fuse_bufvec buf{};
    buf.count = 1;
    buf.buf[0].size = size;
    buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = result.fd;
    buf.buf[0].pos = result.fd_offset;
    fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
  });
}

void op_release(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* fi) {
  static_cast<void>(context_of(req).handles.take(fi->fh));
  if (NodeJournal* journal = journal_of(req)) journal->released(fi->fh);
  fuse_reply_err(req, 0);
}

void op_statfs(fuse_req_t req, fuse_ino_t /*ino*/) {
  struct statvfs st {};
  if (const int err = fs_of(req).statfs(st); err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_reply_statfs(req, &st);
}

void op_access(fuse_req_t req, fuse_ino_t /*ino*/, int mask) {
  // Only reached without default_permissions; reading is decided by the source's modes as the
  // kernel sees them, writing only where the backend is writable.
  fuse_reply_err(req, (mask & W_OK) != 0 && !fs_of(req).writable() ? EROFS : 0);
}

// Replies with the new node `node` (one reference counted), found as `name` in `parent`, or
// the error.
void reply_entry(fuse_req_t req, int err, NodeId node, const struct stat& st, fuse_ino_t parent,
                 const char* name) {
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  const auto e = entry_param(fs_of(req), node, st);
  journal_entry(req, parent, name, e);
  if (fuse_reply_entry(req, &e) != 0) drop_references(req, node, 1);
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
               fuse_file_info* fi) {
  guarded(req, "create", [&] {
    const WriteGate::Pass pass(gate_of(req));
    NodeId node = 0;
    struct stat st {};
    std::unique_ptr<FileHandle> handle;
    if (const int err = fs_of(req).create(parent, name, mode, fi->flags, node, st, handle);
        err != 0) {
      fuse_reply_err(req, err);
      return;
    }
    const auto e = entry_param(fs_of(req), node, st);
    journal_entry(req, parent, name, e);
    reply_opened(req, node, fi, std::move(handle), &e);
  });
}

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t /*rdev*/) {
  guarded(req, "mknod", [&] {
    const WriteGate::Pass pass(gate_of(req));
    // Regular files only: device nodes, FIFOs and sockets are not kept in an overlay.
    if (!S_ISREG(mode)) {
      fuse_reply_err(req, fs_of(req).writable() ? EPERM : EROFS);
      return;
    }
    NodeId node = 0;
    struct stat st {};
    std::unique_ptr<FileHandle> handle;
    const int err = fs_of(req).create(parent, name, mode, O_RDONLY, node, st, handle);
    reply_entry(req, err, node, st, parent, name);
  });
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  guarded(req, "mkdir", [&] {
    const WriteGate::Pass pass(gate_of(req));
    NodeId node = 0;
    struct stat st {};
    const int err = fs_of(req).mkdir(parent, name, mode, node, st);
    reply_entry(req, err, node, st, parent, name);
  });
}

void op_symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  guarded(req, "symlink", [&] {
    const WriteGate::Pass pass(gate_of(req));
    NodeId node = 0;
    struct stat st {};
    const int err = fs_of(req).symlink(parent, name, target, node, st);
    reply_entry(req, err, node, st, parent, name);
  });
}

void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
  guarded(req, "link", [&] {
    const WriteGate::Pass pass(gate_of(req));
    struct stat st {};
    const int err = fs_of(req).link(ino, parent, name, st);
    reply_entry(req, err, ino, st, parent, name);
  });
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  const WriteGate::Pass pass(gate_of(req));
  guarded(req, "unlink", [&] {
    const int err = fs_of(req).unlink(parent, name);
    if (NodeJournal* journal = journal_of(req); journal != nullptr && err == 0) {
      journal->unlinked(parent, name);
    }
    fuse_reply_err(req, err);
  });
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  const WriteGate::Pass pass(gate_of(req));
  guarded(req, "rmdir", [&] {
    const int err = fs_of(req).rmdir(parent, name);
    if (NodeJournal* journal = journal_of(req); journal != nullptr && err == 0) {
      journal->unlinked(parent, name);
    }
    fuse_reply_err(req, err);
  });
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent,
               const char* new_name, unsigned int flags) {
  guarded(req, "rename", [&] {
    const WriteGate::Pass pass(gate_of(req));
    const int err = fs_of(req).rename(parent, name, new_parent, new_name, flags);
    if (NodeJournal* journal = journal_of(req); journal != nullptr && err == 0) {
      journal->renamed(parent, name, new_parent, new_name, (flags & RENAME_EXCHANGE) != 0);
    }
    fuse_reply_err(req, err);
  });
}

timespec set_time(const timespec& given, bool now) { return now ? timespec{0, UTIME_NOW} : given; }

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                fuse_file_info* fi) {
  guarded(req, "setattr", [&] {
    const WriteGate::Pass pass(gate_of(req));
    AttrChange change;
    if ((to_set & FUSE_SET_ATTR_MODE) != 0) change.mode = attr->st_mode;
    if ((to_set & FUSE_SET_ATTR_UID) != 0) change.uid = attr->st_uid;
    if ((to_set & FUSE_SET_ATTR_GID) != 0) change.gid = attr->st_gid;
    if ((to_set & FUSE_SET_ATTR_SIZE) != 0) change.size = attr->st_size;
    if ((to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)) != 0) {
      change.atime = set_time(attr->st_atim, (to_set & FUSE_SET_ATTR_ATIME_NOW) != 0);
    }
    if ((to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) != 0) {
      change.mtime = set_time(attr->st_mtim, (to_set & FUSE_SET_ATTR_MTIME_NOW) != 0);
    }
    const auto open = open_file_of(req, fi);
    FileHandle* handle = open != nullptr ? open->file.get() : nullptr;
    struct stat st {};
    if (const int err = fs_of(req).setattr(ino, change, handle, st); err != 0) {
      fuse_reply_err(req, err);
      return;
    }
    fuse_reply_attr(req, &st, fs_of(req).cache_policy().attr_timeout);
  });
}

void op_write_buf(fuse_req_t req, fuse_ino_t /*ino*/, fuse_bufvec* in, off_t off,
                  fuse_file_info* fi) {
  const WriteGate::Pass pass(gate_of(req));
  const auto handle = open_file_of(req, fi);
  const int fd = handle != nullptr ? handle->file->write_fd() : -1;
  if (fd < 0) {
    fuse_reply_err(req, fi->fh == 0 && !fs_of(req).writable() ? EROFS : EBADF);
    return;
  }
  fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
  out.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  out.buf[0].fd = fd;
  out.buf[0].pos = off;
  const ssize_t written = fuse_buf_copy(&out, in, static_cast<fuse_buf_copy_flags>(0));
  if (written < 0) {
    fuse_reply_err(req, static_cast<int>(-written));
  } else {
    fuse_reply_write(req, static_cast<std::size_t>(written));
  }
}

void op_flush(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* /*fi*/) {
  // Writes were made as they came: nothing to flush. Opens answered here say so (noflush); a
  // file the kernel opened itself does not, and ENOSYS stops FLUSH for the connection.
  fuse_reply_err(req, ENOSYS);
}

void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  guarded(req, "fsync", [&] {
    const auto open = open_file_of(req, fi);
    fuse_reply_err(req, fs_of(req).fsync(ino, open != nullptr ? open->file.get() : nullptr,
                                         datasync != 0));
  });
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* /*fi*/) {
  guarded(req, "fsyncdir", [&] { fuse_reply_err(req, fs_of(req).fsync(ino, nullptr, datasync != 0)); });
}

void op_fallocate(fuse_req_t req, fuse_ino_t /*ino*/, int mode, off_t offset, off_t length,
                  fuse_file_info* fi) {
  const WriteGate::Pass pass(gate_of(req));
  const auto handle = open_file_of(req, fi);
  const int fd = handle != nullptr ? handle->file->write_fd() : -1;
  if (fd < 0) {
    fuse_reply_err(req, fs_of(req).writable() ? EBADF : EROFS);
    return;
  }
  fuse_reply_err(req, ::fallocate(fd, mode, offset, length) == 0 ? 0 : errno);
}

// Extended attributes are not kept: the upper layer's own user.heddle.* must stay ours.
template <typename... Args>
void reply_no_xattr(fuse_req_t req, Args... /*unused*/) {
  fuse_reply_err(req, fs_of(req).writable() ? EOPNOTSUPP : EROFS);
}

fuse_lowlevel_ops make_operations() {
  fuse_lowlevel_ops ops{};
  ops.init = op_init;
  ops.lookup = op_lookup;
  ops.forget = op_forget;
  ops.forget_multi = op_forget_multi;
  ops.getattr = op_getattr;
  ops.readlink = op_readlink;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.readdirplus = op_readdirplus;
  ops.releasedir = op_releasedir;
  ops.open = op_open;
  ops.read = op_read;
  ops.release = op_release;
  ops.statfs = op_statfs;
  ops.access = op_access;

  // Modifying operations: a read-only backend answers EROFS to each.
  ops.create = op_create;
  ops.mknod = op_mknod;
  ops.mkdir = op_mkdir;
  ops.symlink = op_symlink;
  ops.link = op_link;
  ops.unlink = op_unlink;
  ops.rmdir = op_rmdir;
  ops.rename = op_rename;
  ops.setattr = op_setattr;
  ops.write_buf = op_write_buf;
  ops.flush = op_flush;
  ops.fsync = op_fsync;
  ops.fsyncdir = op_fsyncdir;
  ops.fallocate = op_fallocate;
  ops.setxattr = reply_no_xattr<fuse_ino_t, const char*, const char*, std::size_t, int>;
  ops.removexattr = reply_no_xattr<fuse_ino_t, const char*>;
  return ops;
}

}  // namespace

const fuse_lowlevel_ops& backend_operations() {
  static const fuse_lowlevel_ops ops = make_operations();
  return ops;
}

}  // namespace heddle::worker
