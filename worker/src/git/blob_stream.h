// Streaming a blob too large for the cache: its zlib data is inflated a buffer at a time,
// straight from the loose object file or from the pack, so a 2 GiB file never needs 2 GiB.
// libgit2 cannot do this for packed objects (git_odb_open_rstream serves loose ones only).
#pragma once

#include <git2/oid.h>
#include <sys/stat.h>
#include <zlib.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend.h"
#include "git/oid.h"
#include "git/pack_index.h"
#include "git/warn_once.h"
#include "heddle/unique_fd.h"

namespace heddle::worker::git {

// Where an object's bytes are: a loose file, or an offset in a pack.
struct ObjectLocation {
  enum class Kind { kNone, kLoose, kPacked };
  Kind kind = Kind::kNone;
  std::string path;         // the loose object file or the .pack
  std::uint64_t offset = 0;  // in the pack
};

// Finds objects in the repository's object directories (its own and its alternates'). The
// pack indexes are mapped on first use and rescanned when a pack directory changes.
class ObjectLocator {
 public:
  explicit ObjectLocator(std::vector<std::string> object_dirs);
  ObjectLocator(const ObjectLocator&) = delete;
  ObjectLocator& operator=(const ObjectLocator&) = delete;

  [[nodiscard]] ObjectLocation locate(const git_oid& oid);
  // True if the object's loose file, in any object directory, is something other than a
  // regular file (a FIFO, a device, a link to one): libgit2 would open it blocking, so it
  // must not be asked to read the object.
  [[nodiscard]] bool loose_is_special(const git_oid& oid) const;

 private:
  using Packs = std::vector<std::shared_ptr<const PackIndex>>;
  [[nodiscard]] std::shared_ptr<const Packs> packs(bool rescan_if_changed);
  [[nodiscard]] std::vector<struct timespec> pack_dir_mtimes() const;

  const std::vector<std::string> dirs_;
  std::mutex mutex_;  // guards the two below; held for scans, not for lookups
  std::shared_ptr<const Packs> packs_;
  std::vector<struct timespec> scanned_mtimes_;
};

// An open streamed blob. Keeps its inflate state between reads so that sequential reads
// continue where the last one stopped, plus the last kWindow bytes inflated, so that reads
// the kernel sends slightly out of order (readahead on several threads) are served from
// memory. A read before the window restarts inflating from the beginning. A mutex serialises
// reads on one handle (the state is inherently sequential); different handles do not share it.
class BlobStream final : public FileHandle {
 public:
  static constexpr std::size_t kWindow = 1 << 20;
  static constexpr std::size_t kInput = 64 << 10;
  static constexpr std::size_t kChunk = 128 << 10;

  enum class OpenResult { kOk, kCannotStream, kDamaged };

  // Opens the blob at `where`; kCannotStream when it is not a plain zlib stream we can read
  // (a delta in a pack, not found by our own lookup): the caller then reads it through
  // libgit2. `why` says what happened, for the log.
  [[nodiscard]] static OpenResult open(const ObjectLocation& where, const git_oid& oid,
                                       WarnOnce& warnings, std::unique_ptr<BlobStream>& out,
                                       std::string& why);
  ~BlobStream() override;
  BlobStream(const BlobStream&) = delete;
  BlobStream& operator=(const BlobStream&) = delete;

  // Copies the bytes into out.owned (the ring buffer is reused by the next read).
  [[nodiscard]] int read(std::size_t size, off_t offset, ReadResult& out) override;
  [[nodiscard]] std::uint64_t size() const noexcept { return size_; }

 private:
  BlobStream(UniqueFd fd, bool loose, std::uint64_t data_start, std::uint64_t size,
             const git_oid& oid, WarnOnce& warnings);

  // Back to the start of the data (for loose objects: past the "blob <size>\0" header).
  [[nodiscard]] int restart(std::string& why);
  // Inflates up to `capacity` bytes into `dst`; at least one unless the stream ends.
  [[nodiscard]] int inflate_some(unsigned char* dst, std::size_t capacity, std::size_t& produced,
                                 std::string& why);
  void copy_from_window(std::uint64_t from, std::size_t length, char* dst) const noexcept;
  [[nodiscard]] int fail(std::string why);

  std::mutex mutex_;
  const UniqueFd fd_;
  const bool loose_;
  const std::uint64_t data_start_;  // file offset of the zlib stream
  std::uint64_t size_;              // the blob's size (from the object's header)
  const OidKey oid_;
  WarnOnce& warnings_;

  z_stream zs_{};
  bool zs_ready_ = false;
  bool stream_end_ = false;
  bool broken_ = true;  // restart before the next read
  std::uint64_t input_offset_ = 0;  // next file offset to read compressed bytes from
  std::unique_ptr<unsigned char[]> input_;
  std::unique_ptr<unsigned char[]> window_;  // ring: data offset p lives at p % kWindow
  std::uint64_t pos_ = 0;                    // data bytes inflated so far
  std::uint64_t window_start_ = 0;           // window holds [window_start_, pos_)
};

}  // namespace heddle::worker::git
