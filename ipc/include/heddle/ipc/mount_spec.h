// What to mount, as one value: built by the launcher's commands, consumed by the Supervisor,
// and handed to the worker as one JSON document in its bootstrap message (never in argv).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

namespace heddle::ipc {

// A directory, served read-only (or as the lower layer of an overlay).
struct DirSource {
  std::string dir;
  friend bool operator==(const DirSource&, const DirSource&) = default;
};

// A heddle thread: the tree of a ref (or any revision) of a git repository.
struct GitSource {
  std::string repo_root;  // a work tree or a bare repository
  std::string thread;
  std::uint64_t cache_bytes = 256ull << 20;  // the worker's inflated-blob cache
  friend bool operator==(const GitSource&, const GitSource&) = default;
};

using Source = std::variant<DirSource, GitSource>;

enum class SandboxMode {
  kStrict,    // user namespace and all the rest (the default)
  kDegraded,  // --sandbox=degraded: no user namespace, the rest still applies
  kNone,      // no confinement expected: only the tests' unsandboxed harness sends this
};

struct MountSpec {
  Source source;
  std::string mountpoint;
  uid_t uid = 0;  // the user the mount is for (its user_id=, group_id=, and the nodes' owner)
  gid_t gid = 0;
  bool allow_other = false;  // other users may enter the mount too
  SandboxMode sandbox = SandboxMode::kStrict;
  // A writable mount's overlay directory (made by the launcher's prepare_overlay_dir); empty
  // for a read-only mount.
  std::string overlay_dir;

  [[nodiscard]] bool writable() const { return !overlay_dir.empty(); }
  [[nodiscard]] bool degraded() const { return sandbox == SandboxMode::kDegraded; }

  [[nodiscard]] static MountSpec directory(std::string dir, std::string mountpoint,
                                           uid_t uid = 0, gid_t gid = 0) {
    MountSpec spec;
    spec.source = DirSource{std::move(dir)};
    spec.mountpoint = std::move(mountpoint);
    spec.uid = uid;
    spec.gid = gid;
    return spec;
  }
  [[nodiscard]] static MountSpec thread(GitSource source, std::string mountpoint, uid_t uid = 0,
                                        gid_t gid = 0) {
    MountSpec spec = directory({}, std::move(mountpoint), uid, gid);
    spec.source = std::move(source);
    return spec;
  }
  friend bool operator==(const MountSpec&, const MountSpec&) = default;
};

// The bootstrap message's payload: the worker's host pid (it cannot see it from inside its
// pid namespace), the spec, the escalation tests' hook, and which worker of the mount this is.
//
// The message carries the fds [ipc socket, /dev/fuse fd, file broker socket (optional), node
// journal memfd (optional)]. The broker's is a socket and the journal a memfd, which is how the
// worker tells the optional two apart. The journal (issue 16) is one memfd per mount, made by
// the supervisor (memfd_create, MFD_CLOEXEC | MFD_ALLOW_SEALING, then sized and sealed as
// journal_size.h says) and passed to each of its workers; its format is the worker's (worker/src/node_journal.h), the supervisor never reads it.
struct WorkerBootstrap {
  std::uint32_t host_pid = 0;
  MountSpec spec;
  bool test_ignore_stop = false;  // the worker ignores Stop and SIGTERM
  // 1 for a mount's first worker, which receives FUSE_INIT. Above 1: the connection is live
  // and already initialised; the worker takes it over from the journal (no FUSE_INIT comes).
  std::uint32_t generation = 1;
  friend bool operator==(const WorkerBootstrap&, const WorkerBootstrap&) = default;
};

// Paths are at most PATH_MAX each, so a real bootstrap is far below this.
inline constexpr std::size_t kMaxBootstrapBytes = 64 * 1024;

// Compact JSON. Throws heddle::Error (EINVAL) if a string is not valid UTF-8.
[[nodiscard]] std::string encode_bootstrap(const WorkerBootstrap& bootstrap);
// Strict: an unknown source kind or sandbox mode, a missing, mistyped or unknown field, an
// empty path or a zero cache size throws heddle::Error (EINVAL) naming the problem.
[[nodiscard]] WorkerBootstrap decode_bootstrap(std::string_view json);

}  // namespace heddle::ipc
