#include "heddle/launcher/git_layout.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <optional>

#include "dir_entries.h"
#include "heddle/error.h"
#include "heddle/launcher/source_access.h"
#include "heddle/unique_fd.h"

namespace heddle::launcher {
namespace fs = std::filesystem;
namespace {

constexpr int kMaxAlternateDepth = 5;  // git's own limit

// A repository's small file, whole; nullopt if there is none. Opened without following a
// symlink and without blocking (a FIFO), read only if it is a regular file, and only up to
// kMaxRepositoryFileBytes: a link to /dev/zero or a FIFO put there fails the mount instead of
// growing or hanging the launcher.
std::optional<std::string> read_repository_file(const fs::path& file, const std::string& role) {
  const std::string what = role + " " + file.string();
  const UniqueFd fd(::open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return std::nullopt;
    if (errno == ELOOP) {
      throw Error(what + " is a symlink", ELOOP,
                  "a repository's small files are read only as regular files, never through a "
                  "link; put the file itself there");
    }
    throw_errno(what);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno("fstat " + file.string());
  if (!S_ISREG(st.st_mode)) {
    throw Error(what + " is " + file_type_name(st.st_mode) + ", not a regular file", EINVAL,
                "a repository's small files are read only as regular files");
  }
  const std::string too_big_hint =
      "at most " + std::to_string(kMaxRepositoryFileBytes / 1024) + " KiB of it is read";
  if (st.st_size > static_cast<off_t>(kMaxRepositoryFileBytes)) {
    throw Error(what + " holds " + std::to_string(st.st_size) + " bytes", EFBIG, too_big_hint);
  }
  std::string content(kMaxRepositoryFileBytes + 1, '\0');
  std::size_t size = 0;
  while (size < content.size()) {
    const ssize_t n = ::read(fd.get(), content.data() + size, content.size() - size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("read " + what);
    if (n == 0) break;
    size += static_cast<std::size_t>(n);
  }
  if (size > kMaxRepositoryFileBytes) throw Error(what + " grew while read", EFBIG, too_big_hint);
  content.resize(size);
  return content;
}

std::string first_line(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  return line;
}

// `path` resolved against `base` when relative, then made canonical with the calling thread's
// authority; nullopt if it does not exist. Any other failure (EACCES) is an error about `what`.
std::optional<fs::path> resolve(const fs::path& base, const std::string& path,
                                const std::string& what) {
  const fs::path full = fs::path(path).is_absolute() ? fs::path(path) : base / path;
  std::error_code ec;
  fs::path canonical = fs::canonical(full, ec);
  if (ec == std::errc::no_such_file_or_directory || ec == std::errc::not_a_directory) {
    return std::nullopt;
  }
  if (ec) throw Error(what, ec.value());
  return canonical;
}

// "alternate /srv/a/objects (named by /r/.git/objects/info/alternates)"
std::string named(const std::string& kind, const fs::path& path, const fs::path& by) {
  return kind + " " + path.string() + " (named by " + by.string() + ")";
}

bool is_fan_out_name(const std::string& name) {
  const auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); };
  return name.size() == 2 && hex(name[0]) && hex(name[1]);
}

// A sandboxed worker could use a socket (connect), a FIFO (block) or a device bound with a
// directory; git keeps none at the top of its directories.
void refuse_special_entry(const std::string& what, const std::string& name, mode_t type) {
  if (type == S_IFSOCK || type == S_IFIFO || type == S_IFCHR || type == S_IFBLK) {
    throw Error(what + " holds " + file_type_name(type) + ", " + name, EINVAL,
                "the sandbox binds no directory a repository names that has sockets, FIFOs or "
                "devices at its top");
  }
}

// What must be at the top of a directory the repository names: `required` (a directory if
// `required_dir`, else a regular file or a symlink), and no special file.
void require_git_directory(int dir_fd, const std::string& what, const std::string& required,
                           bool required_dir) {
  bool found = false;
  for_each_entry(dir_fd, what, [&](const std::string& name, mode_t type) {
    refuse_special_entry(what, name, type);
    if (name == required) {
      found = required_dir ? type == S_IFDIR : type == S_IFREG || type == S_IFLNK;
    }
  });
  if (!found) {
    throw Error(what + " is not a git directory: it has no " + required + (required_dir ? "/" : ""),
                ENOTDIR, "a repository's .git file and commondir must name git directories");
  }
}

// The paths one repository binds, each opened once, in the order found.
class Layout {
 public:
  // Opens `path` and records it; the open directory, for checks of its contents, or an
  // invalid fd if it was already there.
  UniqueFd add(const fs::path& path, const std::string& what, bool chosen_by_repository) {
    const std::string text = path.string();
    if (std::any_of(binds_.begin(), binds_.end(),
                    [&](const SourceBind& bind) { return bind.checked.path == text; })) {
      return UniqueFd();
    }
    OpenSource source = open_source_path(text, what);
    binds_.push_back(SourceBind{std::move(source.checked), chosen_by_repository});
    return std::move(source.fd);
  }

  void add_alternates(const fs::path& objects, int depth) {
    if (depth > kMaxAlternateDepth) return;
    const fs::path file = objects / "info" / "alternates";
    const std::optional<std::string> text = read_repository_file(file, "alternates file");
    if (!text) return;
    std::size_t start = 0;
    while (start < text->size()) {
      std::size_t end = text->find('\n', start);
      if (end == std::string::npos) end = text->size();
      std::string line = text->substr(start, end - start);
      start = end + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || line[0] == '#') continue;
      const std::optional<fs::path> alternate =
          resolve(objects, line, named("alternate", line, file));
      if (!alternate) continue;  // git warns and goes on without it
      const std::string what = named("alternate", *alternate, file);
      const UniqueFd dir = add(*alternate, what, true);
      if (!dir) continue;
      require_object_directory(dir.get(), what);
      add_alternates(*alternate, depth + 1);
    }
  }

  [[nodiscard]] std::vector<SourceBind> take() { return std::move(binds_); }

 private:
  std::vector<SourceBind> binds_;
};

}  // namespace

void require_object_directory(int dir_fd, const std::string& what) {
  bool objects = false;
  for_each_entry(dir_fd, what, [&](const std::string& name, mode_t type) {
    if (type != S_IFDIR && type != S_IFREG) {
      throw Error(what + " holds " + file_type_name(type) + ", " + name, EINVAL,
                  "an alternate must be a git object directory: nothing at its top but "
                  "directories and regular files");
    }
    if (type == S_IFDIR && (name == "pack" || is_fan_out_name(name))) objects = true;
  });
  if (!objects) {
    throw Error(what + " is not a git object directory", ENOTDIR,
                "an alternate names a repository's objects/ directory (with pack/ or the "
                "two-hex-digit directories of loose objects)");
  }
}

std::vector<SourceBind> git_paths_to_bind(const std::string& repo_root) {
  std::error_code ec;
  const fs::path root = fs::canonical(repo_root, ec);
  if (ec) throw Error("repository " + repo_root, ec.value());

  Layout layout;
  const fs::path dot_git = root / ".git";
  fs::path git_dir;
  std::string git_what;  // set when the repository's files chose git_dir
  struct stat st {};
  if (::lstat(dot_git.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      git_dir = dot_git;
    } else if (S_ISLNK(st.st_mode)) {
      // git follows a .git symlink to a git directory: where it points is the link's choice.
      const std::optional<fs::path> target = resolve(root, ".git", "the .git link " + dot_git.string());
      if (!target) throw Error("the .git link " + dot_git.string(), ENOENT);
      git_dir = *target;
      git_what = named("git directory", git_dir, dot_git);
    } else {
      const std::string line = first_line(read_repository_file(dot_git, "the .git file").value());
      constexpr std::string_view kPrefix = "gitdir: ";
      if (!line.starts_with(kPrefix)) {
        throw Error("the .git file " + dot_git.string() + " does not begin with \"gitdir: \"",
                    EINVAL, "a .git file names its git directory: gitdir: PATH");
      }
      const std::string named_dir = line.substr(kPrefix.size());
      const std::optional<fs::path> target =
          resolve(root, named_dir, named("git directory", named_dir, dot_git));
      if (!target) throw Error(named("git directory", named_dir, dot_git), ENOENT);
      (void)layout.add(dot_git, "the .git file " + dot_git.string(), false);
      git_dir = *target;
      git_what = named("git directory", git_dir, dot_git);
    }
  } else if (errno != ENOENT) {
    throw_errno("repository " + root.string() + ": .git");
  } else if (::stat((root / "HEAD").c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
             ::stat((root / "objects").c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    git_dir = root;
  }
  if (git_dir.empty()) {
    (void)layout.add(root, "repository " + root.string(), false);
    return layout.take();
  }
  const bool chosen = !git_what.empty();
  const UniqueFd git_fd = layout.add(git_dir, chosen ? git_what : "git directory " + git_dir.string(), chosen);
  if (chosen && git_fd) require_git_directory(git_fd.get(), git_what, "HEAD", false);

  fs::path common_dir = git_dir;
  const fs::path common_file = git_dir / "commondir";
  if (const auto text = read_repository_file(common_file, "commondir file")) {
    const std::string line = first_line(*text);
    const std::optional<fs::path> common =
        resolve(git_dir, line, named("common directory", line, common_file));
    if (!common) throw Error(named("common directory", line, common_file), ENOENT);
    const std::string what = named("common directory", *common, common_file);
    if (const UniqueFd common_fd = layout.add(*common, what, true)) {
      require_git_directory(common_fd.get(), what, "objects", true);
    }
    common_dir = *common;
  }
  layout.add_alternates(common_dir / "objects", 1);
  return layout.take();
}

}  // namespace heddle::launcher
