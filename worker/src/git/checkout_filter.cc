#include "git/checkout_filter.h"

#include <git2/sys/repository.h>

#include <sys/stat.h>

#include "git/repo_file.h"
#include "heddle/error.h"

namespace heddle::worker::git {
namespace {

constexpr std::uint64_t kMaxAttributesFile = 100ull << 20;  // libgit2's own cap

std::optional<std::string> config_string(git_config* config, const char* name) {
  GitBuf value;
  if (git_config_get_string_buf(&value.buf, config, name) < 0) return std::nullopt;
  return std::string(value.buf.ptr, value.buf.size);
}

}  // namespace

CheckoutFilter::CheckoutFilter(git_repository* repo, const std::optional<git_oid>& commit) {
  if (!commit) return;
  commit_ = *commit;
  const std::string git_dir = git_repository_path(repo);
  // In the common dir: a linked work tree shares its repository's (as git does).
  const std::string info_attributes =
      std::string(git_repository_commondir(repo)) + "info/attributes";
  // libgit2 reads it itself, blocking and following links (see check_files_libgit2_reads).
  if (const int err = check_repo_file(info_attributes, kMaxAttributesFile); err != 0) {
    throw Error(info_attributes + " is " +
                    (err == EFBIG ? std::string("larger than 100 MiB")
                                  : std::string("not a regular file (a FIFO, a device or a socket)")) +
                    ": refusing to read it; fix or remove it (git never creates such a file)",
                err);
  }
  // Bare: no work tree files; an empty index: not the index's .gitattributes either. Only
  // the commit's (and info/attributes) decide, as for `git checkout COMMIT` into an empty tree.
  git_repository* raw = nullptr;
  if (git_repository_open_ext(&raw, git_dir.c_str(),
                              GIT_REPOSITORY_OPEN_NO_SEARCH | GIT_REPOSITORY_OPEN_BARE,
                              nullptr) < 0) {
    throw Error("repository " + git_dir + " cannot be opened for its attributes: " +
                    last_error_message(),
                EIO);
  }
  RepoPtr attributes_repo(raw);
  git_index* index = nullptr;
  if (git_index_new(&index) < 0 || git_repository_set_index(attributes_repo.get(), index) < 0) {
    if (index != nullptr) git_index_free(index);
    throw Error("libgit2: no index for attributes: " + last_error_message(), EIO);
  }
  index_.reset(index);

  struct stat st {};
  everywhere_ = ::stat(info_attributes.c_str(), &st) == 0;
  git_config* config_raw = nullptr;
  if (git_repository_config_snapshot(&config_raw, attributes_repo.get()) == 0) {
    const ConfigPtr config(config_raw);
    if (config_string(config.get(), "core.attributesfile")) everywhere_ = true;
    if (const auto autocrlf = config_string(config.get(), "core.autocrlf")) {
      int value = 0;
      // "input" converts only on the way in (capture), never on checkout.
      if (git_config_parse_bool(&value, autocrlf->c_str()) == 0 && value != 0) everywhere_ = true;
    }
  }
  repo_ = std::move(attributes_repo);
}

void CheckoutFilter::set_commit(const git_oid& commit) {
  const std::lock_guard lock(mutex_);
  commit_ = commit;
}

std::string CheckoutFilter::commit_hex() {
  const std::lock_guard lock(mutex_);
  char hex[GIT_OID_HEXSZ + 1] = {};
  git_oid_tostr(hex, sizeof hex, &commit_);
  return hex;
}

int CheckoutFilter::load_filters(const std::string& path, git_blob* blob, FilterListPtr& out) {
  git_filter_options options = GIT_FILTER_OPTIONS_INIT;
  options.flags = GIT_FILTER_NO_SYSTEM_ATTRIBUTES | GIT_FILTER_ATTRIBUTES_FROM_COMMIT;
  options.attr_commit_id = commit_;
  git_filter_list* list = nullptr;
  if (git_filter_list_load_ext(&list, repo_.get(), blob, path.c_str(), GIT_FILTER_TO_WORKTREE,
                               &options) < 0) {
    return EIO;
  }
  out.reset(list);
  return 0;
}

int CheckoutFilter::plan(const std::string& path, Plan& out) {
  out = Plan{};
  if (!repo_) return 0;
  const std::lock_guard lock(mutex_);
  FilterListPtr filters;
  if (const int err = load_filters(path, nullptr, filters); err != 0) return err;
  out.convert = filters != nullptr;

  git_attr_options attr_options = GIT_ATTR_OPTIONS_INIT;
  attr_options.flags =
      GIT_ATTR_CHECK_INDEX_ONLY | GIT_ATTR_CHECK_NO_SYSTEM | GIT_ATTR_CHECK_INCLUDE_COMMIT;
  attr_options.attr_commit_id = commit_;
  const char* value = nullptr;
  if (git_attr_get_ext(&value, repo_.get(), &attr_options, path.c_str(), "filter") < 0) return EIO;
  if (git_attr_value(value) == GIT_ATTR_VALUE_STRING) out.driver = value;
  return 0;
}

int CheckoutFilter::stream_plan(const std::string& path, StreamPlan& out) {
  out = StreamPlan{};
  if (!repo_) return 0;
  const std::lock_guard lock(mutex_);
  FilterListPtr filters;
  if (const int err = load_filters(path, nullptr, filters); err != 0) return err;
  if (!filters) return 0;
  if (git_filter_list_contains(filters.get(), "ident") != 0) {
    out.kind = StreamPlan::Kind::kUnsupported;
    out.why = "ident";
    return 0;
  }
  // libgit2 has two built-in filters, crlf and ident; drivers are never registered here.
  const auto converts = [&](std::string_view probe, std::string_view expected, bool& yes) {
    GitBuf converted;
    if (git_filter_list_apply_to_buffer(&converted.buf, filters.get(), probe.data(),
                                        probe.size()) < 0) {
      return false;
    }
    yes = std::string_view(converted.buf.ptr, converted.buf.size) == expected;
    return true;
  };
  bool text = false, forced = false, mixed = false;
  // Plain text: converted unless checkout writes LF here (eol=lf, text=auto without crlf...).
  if (!converts("a\n", "a\r\n", text)) return EIO;
  if (!text) return 0;
  // A bare CR makes text=auto leave the file alone; text / eol=crlf convert it all the same.
  if (!converts("a\rb\n", "a\rb\r\n", forced)) return EIO;
  if (!converts("a\r\nb\n", "a\r\nb\r\n", mixed)) return EIO;
  out.kind = StreamPlan::Kind::kCrlf;
  out.crlf.automatic = !forced;
  out.crlf.auto_converts_with_crlf = !forced && mixed;
  return 0;
}

int CheckoutFilter::convert(const std::string& path, const git_oid& blob_id, std::string& out,
                            bool& changed) {
  if (!repo_) return EIO;
  const std::lock_guard lock(mutex_);
  git_blob* raw_blob = nullptr;
  if (git_blob_lookup(&raw_blob, repo_.get(), &blob_id) < 0) return EIO;
  const BlobPtr blob(raw_blob);
  // Loaded with the blob: ident writes its id.
  FilterListPtr filters;
  if (const int err = load_filters(path, blob.get(), filters); err != 0) return err;
  const std::string_view stored(static_cast<const char*>(git_blob_rawcontent(blob.get())),
                                static_cast<std::size_t>(git_blob_rawsize(blob.get())));
  if (!filters) {
    out.assign(stored);
    changed = false;
    return 0;
  }
  GitBuf converted;
  if (git_filter_list_apply_to_blob(&converted.buf, filters.get(), blob.get()) < 0) return EIO;
  out.assign(converted.buf.ptr, converted.buf.size);
  changed = out != stored;
  return 0;
}

}  // namespace heddle::worker::git
