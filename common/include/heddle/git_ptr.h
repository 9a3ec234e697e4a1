// Owning handles for libgit2 objects and buffers, for the worker (reading) and the launcher
// (capture). Header-only; include it only from code that links libgit2.
#pragma once

#include <git2.h>

#include <memory>
#include <string_view>

namespace heddle {

template <typename T, void (*Free)(T*)>
struct GitDeleter {
  void operator()(T* p) const noexcept { Free(p); }
};
template <typename T, void (*Free)(T*)>
using GitPtr = std::unique_ptr<T, GitDeleter<T, Free>>;

using BlobPtr = GitPtr<git_blob, git_blob_free>;
using BuilderPtr = GitPtr<git_treebuilder, git_treebuilder_free>;
using CommitPtr = GitPtr<git_commit, git_commit_free>;
using ConfigPtr = GitPtr<git_config, git_config_free>;
using FilterListPtr = GitPtr<git_filter_list, git_filter_list_free>;
using IndexPtr = GitPtr<git_index, git_index_free>;
using ObjectPtr = GitPtr<git_object, git_object_free>;
using OdbObjectPtr = GitPtr<git_odb_object, git_odb_object_free>;
using OdbPtr = GitPtr<git_odb, git_odb_free>;
using ReferencePtr = GitPtr<git_reference, git_reference_free>;
using RepoPtr = GitPtr<git_repository, git_repository_free>;
using SignaturePtr = GitPtr<git_signature, git_signature_free>;
using TreePtr = GitPtr<git_tree, git_tree_free>;

// A git_buf that libgit2 fills, disposed of with its owner.
struct GitBuf {
  git_buf buf = GIT_BUF_INIT;
  GitBuf() = default;
  GitBuf(const GitBuf&) = delete;
  GitBuf& operator=(const GitBuf&) = delete;
  ~GitBuf() { git_buf_dispose(&buf); }
  [[nodiscard]] std::string_view view() const {
    return {buf.ptr == nullptr ? "" : buf.ptr, buf.size};
  }
};

}  // namespace heddle
