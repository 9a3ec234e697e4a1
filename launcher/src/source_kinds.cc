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

ipc::Source canonical(const ipc::Source& source) {
  return std::visit(Overloaded{[](const ipc::DirSource& s) -> ipc::Source {
                            return ipc::DirSource{canonical_source(s.dir, "source directory")};
                          },
                          [](ipc::GitSource s) -> ipc::Source {
                            s.repo_root = canonical_source(s.repo_root, "repository");
                            return s;
                          }},
                    source);
}

std::vector<std::string> source_binds(const ipc::Source& source) {
  return std::visit(
      Overloaded{[](const ipc::DirSource& s) {
              return s.dir.empty() ? std::vector<std::string>{} : std::vector<std::string>{s.dir};
            },
            [](const ipc::GitSource& s) { return git_paths_to_bind(s.repo_root); }},
      source);
}

std::string source_label(const ipc::Source& source) {
  return std::visit(Overloaded{[](const ipc::DirSource& s) { return s.dir; },
                          [](const ipc::GitSource& s) { return s.repo_root + "#" + s.thread; }},
                    source);
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
