// Streaming a blob too large for the cache: its zlib data is inflated a buffer at a time,
// straight from the loose object file or from the pack, so a 2 GiB file never needs 2 GiB.
// Its converted form for checkout streams the same way (crlf_stream.h).
// libgit2 cannot do this for packed objects (git_odb_open_rstream serves loose ones only).
#pragma once

#include <git2/oid.h>
#include <sys/stat.h>
#include <zlib.h>

#include <cstdint>
#include <algorithm>
#include <memory>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
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

// Bytes produced in order from a start, with a way back: what a WindowedReader serves. A zlib
// stream (Inflater), a blob in memory (MemorySource), or a conversion of either (crlf_stream.h).
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  [[nodiscard]] virtual std::uint64_t size() const noexcept = 0;
  [[nodiscard]] virtual std::uint64_t pos() const noexcept = 0;
  // Moves to the nearest point at or before `target` that the source can reach without
  // producing from its start (a seek point), or to the start. 0 or an errno.
  [[nodiscard]] virtual int rewind(std::uint64_t target, std::string& why) = 0;
  // Moves forward to the nearest seek point at or before `target` if there is one past pos();
  // else stays. 0 or an errno.
  [[nodiscard]] virtual int seek_forward(std::uint64_t /*target*/, std::string& /*why*/) {
    return 0;
  }
  // Up to `capacity` bytes at pos(); at least one unless pos() == size(). 0 or an errno.
  [[nodiscard]] virtual int produce(unsigned char* dst, std::size_t capacity,
                                    std::size_t& produced, std::string& why) = 0;
  // Called once pos() == size(): checks that the stream really ends there (zlib's adler32).
  [[nodiscard]] virtual int finish(std::string& /*why*/) { return 0; }
};

// Seek points of one stored blob (copies of the inflate state, about 40 KiB each), shared by
// every open of it: a new handle reading a page the kernel dropped resumes near it instead of
// inflating from offset 0. Kept by SeekPointRegistry for the most recent blobs.
class SeekPoints {
 public:
  SeekPoints() = default;
  SeekPoints(const SeekPoints&) = delete;
  SeekPoints& operator=(const SeekPoints&) = delete;
  ~SeekPoints();

 private:
  friend class Inflater;
  struct Snapshot {
    std::uint64_t pos = 0;    // data bytes produced before it
    std::uint64_t input = 0;  // file offset of the next compressed byte
    std::uint32_t adler = 1;  // of the data before pos (loose objects: and the header)
    z_stream zs{};            // inflateCopy of the state there
  };
  std::mutex mutex_;
  std::vector<std::unique_ptr<Snapshot>> snapshots_;  // by increasing pos
};

// The seek points of the last kKept blobs streamed, by where their stream is (object id, file,
// offset: a `git gc` that moves the object makes new ones).
class SeekPointRegistry {
 public:
  static constexpr std::size_t kKept = 16;
  [[nodiscard]] std::shared_ptr<SeekPoints> get(const git_oid& oid, const ObjectLocation& where);

 private:
  std::mutex mutex_;
  std::vector<std::pair<std::string, std::shared_ptr<SeekPoints>>> recent_;  // oldest first
};

// A blob's zlib stream, inflated a buffer at a time from the loose object file or the pack.
// Seek points (SeekPoints, at most kMaxSnapshots spread evenly) let a read behind the reader's
// window resume near it instead of at offset 0.
class Inflater final : public ByteSource {
 public:
  static constexpr std::size_t kInput = 64 << 10;
  static constexpr std::size_t kMaxSnapshots = 32;
  static constexpr std::uint64_t kMinSnapshotEvery = 8ull << 20;

  enum class OpenResult { kOk, kCannotStream, kDamaged };

  // Opens the blob at `where`; kCannotStream when it is not a plain zlib stream we can read
  // (a delta in a pack, not found by our own lookup): the caller then reads it through
  // libgit2. `why` says what happened, for the log.
  [[nodiscard]] static OpenResult open(const ObjectLocation& where,
                                       std::unique_ptr<Inflater>& out, std::string& why,
                                       std::shared_ptr<SeekPoints> points = nullptr);
  ~Inflater() override;
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;

  [[nodiscard]] std::uint64_t size() const noexcept override { return size_; }
  [[nodiscard]] std::uint64_t pos() const noexcept override { return pos_; }
  [[nodiscard]] int rewind(std::uint64_t target, std::string& why) override;
  [[nodiscard]] int seek_forward(std::uint64_t target, std::string& why) override;
  [[nodiscard]] int produce(unsigned char* dst, std::size_t capacity, std::size_t& produced,
                            std::string& why) override;
  [[nodiscard]] int finish(std::string& why) override;

 private:
  Inflater(UniqueFd fd, bool loose, std::uint64_t data_start, std::uint64_t size);
  // Back to the start of the data (for loose objects: past the "blob <size>\0" header).
  [[nodiscard]] int restart(std::string& why);
  // Resumes at the snapshot `best` (points_->mutex_ held).
  [[nodiscard]] int resume(SeekPoints::Snapshot& best, std::string& why);
  [[nodiscard]] int inflate_some(unsigned char* dst, std::size_t capacity, std::size_t& produced,
                                 std::string& why);
  void maybe_snapshot() noexcept;
  // At the stream's end: its stored adler32 against adler_. 0 or EIO.
  [[nodiscard]] int check_adler(std::string& why);

  const UniqueFd fd_;
  const bool loose_;
  const std::uint64_t data_start_;  // file offset of the zlib stream
  std::uint64_t size_;              // the blob's size (from the object's header)
  std::uint64_t snapshot_every_ = kMinSnapshotEvery;

  z_stream zs_{};
  bool zs_ready_ = false;
  bool stream_end_ = false;
  // The adler32 of everything inflated so far, by libdeflate: an order of magnitude faster
  // than zlib's, whose own check is off.
  std::uint32_t adler_ = 1;
  std::uint64_t input_offset_ = 0;  // next file offset to read compressed bytes from
  std::unique_ptr<unsigned char[]> input_;
  std::uint64_t pos_ = 0;  // data bytes produced so far
  std::string head_rest_;  // loose objects: data inflated along with the header, not yet given
  std::shared_ptr<SeekPoints> points_;  // never null
};

// A blob held in memory, as a ByteSource (a delta blob read whole, to be converted).
class MemorySource final : public ByteSource {
 public:
  explicit MemorySource(std::shared_ptr<const std::string> bytes) : bytes_(std::move(bytes)) {}
  [[nodiscard]] std::uint64_t size() const noexcept override { return bytes_->size(); }
  [[nodiscard]] std::uint64_t pos() const noexcept override { return pos_; }
  [[nodiscard]] int rewind(std::uint64_t target, std::string& /*why*/) override {
    pos_ = std::min<std::uint64_t>(target, bytes_->size());
    return 0;
  }
  [[nodiscard]] int produce(unsigned char* dst, std::size_t capacity, std::size_t& produced,
                            std::string& why) override;

 private:
  std::shared_ptr<const std::string> bytes_;
  std::uint64_t pos_ = 0;
};

// An open file read from a ByteSource. A thread of its own produces the source's bytes into
// a ring ahead of the reader (inflating while the kernel copies the last reply), keeping the
// last kKeep bytes before the end of the latest read, so that reads the kernel sends out of
// order (readahead on several threads) are served from memory; a read before that rewinds the
// source to its nearest seek point. Reads on one handle are serialised (the source is
// sequential); different handles share nothing.
// A read that lies in one stretch of the ring is answered from the ring itself, without a
// copy: its ReadResult pins those bytes until the reply is sent and the result dropped.
class WindowedReader final : public FileHandle {
 public:
  static constexpr std::size_t kWindow = 4 << 20;  // the ring
  // Kept behind the end of the latest read: the kernel's readahead sends up to its window
  // (and FUSE up to 1 MiB a request) on several threads, in any order.
  static constexpr std::size_t kKeep = 2 << 20;
  static constexpr std::size_t kChunk = 128 << 10;  // produced at a time

  // `oid` and `warnings` name the blob in the log when a read fails.
  WindowedReader(std::unique_ptr<ByteSource> source, const git_oid& oid, WarnOnce& warnings);
  ~WindowedReader() override;
  WindowedReader(const WindowedReader&) = delete;
  WindowedReader& operator=(const WindowedReader&) = delete;

  // A view into the ring, pinned by out.hold; a read that wraps around the ring (or is
  // larger than it) is copied into out.owned. Drop a result before reading again on the same
  // thread: a read may wait for every pin to go.
  [[nodiscard]] int read(std::size_t size, off_t offset, ReadResult& out) override;
  [[nodiscard]] std::uint64_t size() const noexcept { return size_; }

 private:
  void produce_loop() noexcept;
  // Stops the producer thread (if any) and waits for it; `lock` holds ring_->mutex.
  void stop(std::unique_lock<std::mutex>& lock) noexcept;
  void copy_from_window(std::uint64_t from, std::size_t length, char* dst) const noexcept;
  [[nodiscard]] int fail(const std::string& why);
  // Where the producer may not write from: floor_, or the lowest pinned reply.
  [[nodiscard]] std::uint64_t low_water() const noexcept;

  // The ring and its lock, shared with the replies that point into it: a reply may outlive
  // its handle (a release racing the reply), and its pin must still reach the producer.
  struct Ring {
    std::mutex mutex;  // the fields below and the WindowedReader's, shared with the producer
    std::condition_variable changed;
    std::unique_ptr<unsigned char[]> bytes;  // data offset p lives at p % kWindow
    std::vector<std::uint64_t> pinned;       // starts of replies not yet dropped
  };

  std::mutex read_mutex_;  // one read at a time
  const std::unique_ptr<ByteSource> source_;  // used by the producer, or with it stopped
  const std::uint64_t size_;
  const OidKey oid_;
  WarnOnce& warnings_;
  const std::shared_ptr<Ring> ring_;
  // Guarded by ring_->mutex:
  bool running_ = false;  // a producer thread is in produce_loop (it is detached)
  bool stop_ = false;
  bool finished_ = false;  // the source ended where it should (ByteSource::finish)
  int error_ = 0;          // the producer failed: rewind before the next read
  std::string why_;
  std::uint64_t produced_ = 0;  // the ring holds [low_water(), produced_)
  std::uint64_t floor_ = 0;     // the producer never overwrites bytes at or after it
};

}  // namespace heddle::worker::git
