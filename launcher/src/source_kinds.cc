#include "heddle/launcher/source_kinds.h"

#include <filesystem>
#include <type_traits>

#include "heddle/error.h"
#include "heddle/overloaded.h"
#include "heddle/launcher/git_layout.h"

namespace heddle::launcher {
std::string canonical_source(const std::string& path, const char* role) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path canonical = fs::canonical(path, ec);
  if (ec) throw Error(std::string(role) + " " + path, ec.value());
  if (!fs::is_directory(canonical, ec)) throw Error(std::string(role) + " " + path, ENOTDIR);
  return canonical.string();
}

namespace {

// Runs `work` as the mount's user; a refusal says whose authority it was.
template <typename Work>
auto as_user(uid_t uid, gid_t gid, Work&& work) {
  std::invoke_result_t<Work> result;
  try {
    as_mount_user(uid, gid, [&] { result = work(); });
  } catch (const Error& e) {
    if (e.code() != EACCES && e.code() != EPERM) throw;
    throw e.with_hint("the launcher resolves and opens a mount's sources as " +
                      mount_user_label(uid, gid) + ", who may not read this");
  }
  return result;
}

}  // namespace

ipc::Source canonical(const ipc::Source& source, uid_t uid, gid_t gid) {
  return as_user(uid, gid, [&] {
    return std::visit(Overloaded{[](const ipc::DirSource& s) -> ipc::Source {
                                   return ipc::DirSource{canonical_source(s.dir, "source directory")};
                                 },
                                 [](ipc::GitSource s) -> ipc::Source {
                                   s.repo_root = canonical_source(s.repo_root, "repository");
                                   return s;
                                 }},
                      source);
  });
}

std::vector<SourceBind> source_binds(const ipc::Source& source, uid_t uid, gid_t gid) {
  return as_user(uid, gid, [&] {
    return std::visit(
        Overloaded{[](const ipc::DirSource& s) {
                     std::vector<SourceBind> binds;
                     if (!s.dir.empty()) {
                       const std::string dir = canonical_source(s.dir, "source directory");
                       binds.push_back(SourceBind{
                           open_source_path(dir, "source directory " + dir).checked, false});
                     }
                     return binds;
                   },
                   [](const ipc::GitSource& s) { return git_paths_to_bind(s.repo_root); }},
        source);
  });
}

std::vector<UniqueFd> source_broker_roots(const ipc::Source& source, uid_t uid, gid_t gid) {
  auto dir = std::get_if<ipc::DirSource>(&source);
  std::vector<UniqueFd> roots;
  if (dir == nullptr || dir->dir.empty()) return roots;
  as_user(uid, gid, [&] {
    roots.push_back(open_source_path(dir->dir, "source directory " + dir->dir).fd);
    return 0;
  });
  return roots;
}

std::vector<std::string> bind_paths(const std::vector<SourceBind>& binds) {
  std::vector<std::string> paths;
  for (const SourceBind& bind : binds) paths.push_back(bind.checked.path);
  return paths;
}

std::string source_label(const ipc::Source& source) {
  return std::visit(Overloaded{[](const ipc::DirSource& s) { return s.dir; },
                          [](const ipc::GitSource& s) { return s.repo_root + "#" + s.thread; }},
                    source);
}

const char* worker_program(const ipc::Source& source) {
  return std::holds_alternative<ipc::GitSource>(source) ? "heddle-fuse-worker-git"
                                                         : "heddle-fuse-worker";
}

void add_source_status(const ipc::Source& source, nlohmann::ordered_json& extra) {
  std::visit(Overloaded{[&](const ipc::DirSource& s) { extra["source"] = s.dir; },
                   [&](const ipc::GitSource& s) {
                     extra["source"] = s.repo_root;
                     extra["thread"] = s.thread;
                   }},
             source);
}

OverlaySource overlay_source(const ipc::Source& source) {
  return std::visit(Overloaded{[](const ipc::DirSource& s) { return OverlaySource{s.dir, ""}; },
                          [](const ipc::GitSource& s) {
                            return OverlaySource{s.repo_root, s.thread};
                          }},
                    source);
}

}  // namespace heddle::launcher
