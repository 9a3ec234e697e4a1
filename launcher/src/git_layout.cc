#include "heddle/launcher/git_layout.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "heddle/error.h"

namespace heddle::launcher {
namespace fs = std::filesystem;
namespace {

constexpr int kMaxAlternateDepth = 5;  // git's own limit

std::string first_line(const fs::path& file) {
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  return line;
}

// `path` resolved against `base` when relative, then made canonical; empty if it does not exist.
std::string resolve(const fs::path& base, const std::string& path) {
  std::error_code ec;
  const fs::path canonical = fs::canonical(fs::path(path).is_absolute() ? fs::path(path) : base / path, ec);
  return ec ? std::string() : canonical.string();
}

void add_alternates(const fs::path& objects, std::vector<std::string>& paths, int depth) {
  if (depth > kMaxAlternateDepth) return;
  std::ifstream in(objects / "info" / "alternates");
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const std::string alternate = resolve(objects, line);
    if (alternate.empty() || std::find(paths.begin(), paths.end(), alternate) != paths.end()) {
      continue;
    }
    paths.push_back(alternate);
    add_alternates(alternate, paths, depth + 1);
  }
}

}  // namespace

std::vector<std::string> git_paths_to_bind(const std::string& repo_root) {
  std::error_code ec;
  const fs::path root = fs::canonical(repo_root, ec);
  if (ec) throw Error("repository " + repo_root, ec.value());

  std::vector<std::string> paths;
  fs::path git_dir;
  const fs::path dot_git = root / ".git";
  if (fs::is_directory(dot_git, ec)) {
    git_dir = dot_git;
  } else if (fs::is_regular_file(dot_git, ec)) {
    const std::string line = first_line(dot_git);
    constexpr std::string_view kPrefix = "gitdir: ";
    if (line.starts_with(kPrefix)) git_dir = resolve(root, line.substr(kPrefix.size()));
    paths.push_back(dot_git.string());
  } else if (fs::is_regular_file(root / "HEAD", ec) && fs::is_directory(root / "objects", ec)) {
    git_dir = root;
  }
  if (git_dir.empty()) {
    paths.push_back(root.string());
    return paths;
  }
  paths.push_back(git_dir.string());

  fs::path common_dir = git_dir;
  if (fs::is_regular_file(git_dir / "commondir", ec)) {
    if (const std::string common = resolve(git_dir, first_line(git_dir / "commondir"));
        !common.empty()) {
      common_dir = common;
      paths.push_back(common);
    }
  }
  add_alternates(common_dir / "objects", paths, 1);
  return paths;
}

}  // namespace heddle::launcher
