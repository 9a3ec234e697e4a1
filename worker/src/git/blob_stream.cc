#include "git/blob_stream.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <new>

#include <libdeflate.h>

#include "git/repo_file.h"

namespace heddle::worker::git {
namespace {

// Pack entry types (gitformat-pack(5)).
constexpr int kObjBlob = 3;
constexpr int kObjOfsDelta = 6;
constexpr int kObjRefDelta = 7;

constexpr std::size_t kMaxLooseHeader = 64;  // "blob " + 20 digits + NUL fits easily

bool same_time(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

// The object's file in `dir`: objects/xx/yyyy... (38 hex digits).
std::string loose_path(const std::string& dir, const git_oid& oid) {
  const std::string hex = to_hex(oid);
  return dir + "/" + hex.substr(0, 2) + "/" + hex.substr(2);
}

bool pread_full(int fd, unsigned char* dst, std::size_t length, std::uint64_t offset,
                std::size_t& got) {
  got = 0;
  while (got < length) {
    const ssize_t n = ::pread(fd, dst + got, length - got, static_cast<off_t>(offset + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

ObjectLocator::ObjectLocator(std::vector<std::string> object_dirs) : dirs_(std::move(object_dirs)) {}

std::vector<struct timespec> ObjectLocator::pack_dir_mtimes() const {
  std::vector<struct timespec> out;
  out.reserve(dirs_.size());
  for (const auto& dir : dirs_) {
    struct stat st {};
    out.push_back(::stat((dir + "/pack").c_str(), &st) == 0 ? st.st_mtim : timespec{});
  }
  return out;
}

std::shared_ptr<const ObjectLocator::Packs> ObjectLocator::packs(bool rescan_if_changed) {
  const std::lock_guard lock(mutex_);
  if (packs_ && !rescan_if_changed) return packs_;
  auto mtimes = pack_dir_mtimes();
  if (packs_ && std::equal(mtimes.begin(), mtimes.end(), scanned_mtimes_.begin(),
                           scanned_mtimes_.end(), same_time)) {
    return packs_;
  }
  // Scanned under the lock: it happens once, or when a host `git gc` added packs.
  auto packs = std::make_shared<Packs>();
  for (const auto& dir : dirs_) {
    const std::string pack_dir = dir + "/pack";
    DIR* d = ::opendir(pack_dir.c_str());
    if (d == nullptr) continue;
    std::vector<std::string> names;
    while (const dirent* entry = ::readdir(d)) {
      const std::string_view name = entry->d_name;
      if (name.size() > 4 && name.substr(name.size() - 4) == ".idx") names.emplace_back(name);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      if (auto index = PackIndex::open(pack_dir + "/" + name)) packs->push_back(std::move(index));
    }
  }
  packs_ = std::move(packs);
  scanned_mtimes_ = std::move(mtimes);
  return packs_;
}

ObjectLocation ObjectLocator::locate(const git_oid& oid) {
  for (const bool rescan : {false, true}) {
    const auto all = packs(rescan);
    for (const auto& pack : *all) {
      if (const auto offset = pack->find(oid)) {
        return {ObjectLocation::Kind::kPacked, pack->pack_path(), *offset};
      }
    }
    if (!rescan) {
      for (const auto& dir : dirs_) {
        std::string path = loose_path(dir, oid);
        if (::access(path.c_str(), F_OK) == 0) return {ObjectLocation::Kind::kLoose, path, 0};
      }
    }
  }
  return {};
}

bool ObjectLocator::loose_is_special(const git_oid& oid) const {
  for (const auto& dir : dirs_) {
    struct stat st {};
    if (::stat(loose_path(dir, oid).c_str(), &st) == 0 && !S_ISREG(st.st_mode)) return true;
  }
  return false;
}

SeekPoints::~SeekPoints() {
  for (auto& snapshot : snapshots_) inflateEnd(&snapshot->zs);
}

std::shared_ptr<SeekPoints> SeekPointRegistry::get(const git_oid& oid,
                                                   const ObjectLocation& where) {
  const std::string key = to_hex(oid) + " " + where.path + " " + std::to_string(where.offset);
  const std::lock_guard lock(mutex_);
  for (auto it = recent_.begin(); it != recent_.end(); ++it) {
    if (it->first != key) continue;
    auto entry = std::move(*it);  // most recent: to the back
    recent_.erase(it);
    recent_.push_back(std::move(entry));
    return recent_.back().second;
  }
  if (recent_.size() >= kKept) recent_.erase(recent_.begin());
  recent_.emplace_back(key, std::make_shared<SeekPoints>());
  return recent_.back().second;
}

Inflater::OpenResult Inflater::open(const ObjectLocation& where, std::unique_ptr<Inflater>& out,
                                    std::string& why, std::shared_ptr<SeekPoints> points) {
  if (where.kind == ObjectLocation::Kind::kNone) {
    why = "not found in any pack index or as a loose object";
    return OpenResult::kCannotStream;
  }
  // Read a buffer at a time: no size cap, but a regular file, never a FIFO or a device.
  RepoFile file = open_repo_file(where.path, UINT64_MAX);
  if (!file.fd) {
    why = "cannot open " + where.path + ": " +
          (file.error == EINVAL ? std::string("not a regular file") : std::strerror(file.error));
    return OpenResult::kDamaged;
  }
  UniqueFd fd = std::move(file.fd);
  // Read front to back: a larger readahead window for the object file (a hint; may fail).
  (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  if (where.kind == ObjectLocation::Kind::kLoose) {
    // The size is in the zlib stream's header, which restart() parses.
    out.reset(new Inflater(std::move(fd), true, 0, 0));
    if (points) out->points_ = std::move(points);
    return out->restart(why) == 0 ? OpenResult::kOk : OpenResult::kDamaged;
  }

  // A pack entry starts with its type (bits 4-6 of the first byte) and a size varint.
  unsigned char header[32];
  std::size_t got = 0;
  if (!pread_full(fd.get(), header, sizeof header, where.offset, got) || got == 0) {
    why = "cannot read the entry at offset " + std::to_string(where.offset) + " of " + where.path;
    return OpenResult::kDamaged;
  }
  const int type = (header[0] >> 4) & 7;
  std::uint64_t size = header[0] & 15u;
  std::size_t used = 1;
  for (unsigned shift = 4, c = header[0]; (c & 0x80u) != 0; shift += 7) {
    if (used >= got || shift > 57) {
      why = "bad entry header at offset " + std::to_string(where.offset) + " of " + where.path;
      return OpenResult::kDamaged;
    }
    c = header[used++];
    size |= std::uint64_t{c & 0x7fu} << shift;
  }
  if (type == kObjOfsDelta || type == kObjRefDelta) {
    // git stores big files whole by default (core.bigFileThreshold = 512 MiB disables delta
    // compression above it), so a delta here is rare; inflating a delta chain incrementally is
    // not possible anyway, since applying a delta needs random access to its base.
    why = "stored as a delta in " + where.path;
    return OpenResult::kCannotStream;
  }
  if (type != kObjBlob) {
    why = "the pack entry is of type " + std::to_string(type) + ", not a blob";
    return OpenResult::kDamaged;
  }
  out.reset(new Inflater(std::move(fd), false, where.offset + used, size));
  if (points) out->points_ = std::move(points);
  return out->restart(why) == 0 ? OpenResult::kOk : OpenResult::kDamaged;
}

Inflater::Inflater(UniqueFd fd, bool loose, std::uint64_t data_start, std::uint64_t size)
    : fd_(std::move(fd)),
      loose_(loose),
      data_start_(data_start),
      size_(size),
      input_(new unsigned char[kInput]),
      points_(std::make_shared<SeekPoints>()) {}

Inflater::~Inflater() {
  if (zs_ready_) inflateEnd(&zs_);
}

int Inflater::restart(std::string& why) {
  if (zs_ready_) {
    inflateEnd(&zs_);
    zs_ready_ = false;
  }
  zs_ = z_stream{};
  const int rc = inflateInit(&zs_);
  if (rc != Z_OK) {
    why = "inflateInit failed";
    return rc == Z_MEM_ERROR ? ENOMEM : EIO;
  }
  zs_ready_ = true;
  // zlib's own adler32 cost over a quarter of a cold read's CPU: checked in inflate_some().
  (void)inflateValidate(&zs_, 0);
  adler_ = 1;
  stream_end_ = false;
  input_offset_ = data_start_;
  pos_ = 0;
  head_rest_.clear();

  if (loose_) {
    // "blob <size>\0<data>": inflate a little, parse the header, keep what follows it.
    unsigned char head[kMaxLooseHeader];
    std::size_t have = 0;
    const unsigned char* nul = nullptr;
    while (nul == nullptr) {
      std::size_t produced = 0;
      if (have == sizeof head || stream_end_) {
        why = "bad loose object header";
        return EIO;
      }
      if (const int err = inflate_some(head + have, sizeof head - have, produced, why); err != 0) {
        return err;
      }
      nul = static_cast<const unsigned char*>(std::memchr(head + have, 0, produced));
      have += produced;
    }
    const std::string_view text(reinterpret_cast<const char*>(head),
                                static_cast<std::size_t>(nul - head));
    std::uint64_t size = 0;
    const auto digits = text.substr(std::min(text.size(), std::size_t{5}));
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), size);
    if (text.substr(0, 5) != "blob " || digits.empty() || ec != std::errc{} ||
        end != digits.data() + digits.size()) {
      why = "not a blob: loose object header '" + std::string(text.substr(0, 32)) + "'";
      return EIO;
    }
    const std::size_t rest = have - static_cast<std::size_t>(nul + 1 - head);
    if (rest > size) {
      why = "loose object longer than its header says";
      return EIO;
    }
    size_ = size;
    head_rest_.assign(reinterpret_cast<const char*>(nul + 1), rest);
  }
  snapshot_every_ = std::max<std::uint64_t>(kMinSnapshotEvery, size_ / kMaxSnapshots + 1);
  return 0;
}

int Inflater::inflate_some(unsigned char* dst, std::size_t capacity, std::size_t& produced,
                           std::string& why) {
  zs_.next_out = dst;
  zs_.avail_out = static_cast<uInt>(capacity);
  while (zs_.avail_out == capacity && !stream_end_) {
    if (zs_.avail_in == 0) {
      std::size_t got = 0;
      if (!pread_full(fd_.get(), input_.get(), kInput, input_offset_, got)) {
        why = std::string("read failed: ") + std::strerror(errno);
        return EIO;
      }
      if (got == 0) {
        why = "truncated: the file ends inside the object";
        return EIO;
      }
      input_offset_ += got;
      zs_.next_in = input_.get();
      zs_.avail_in = static_cast<uInt>(got);
    }
    unsigned char* const out = zs_.next_out;
    const int rc = inflate(&zs_, Z_NO_FLUSH);
    adler_ = libdeflate_adler32(adler_, out, static_cast<std::size_t>(zs_.next_out - out));
    if (rc == Z_STREAM_END) {
      stream_end_ = true;
      if (const int err = check_adler(why); err != 0) return err;
    } else if (rc == Z_MEM_ERROR) {
      why = "out of memory inflating";
      return ENOMEM;
    } else if (rc != Z_OK && !(rc == Z_BUF_ERROR && zs_.avail_in == 0)) {
      why = std::string("zlib: ") + (zs_.msg != nullptr ? zs_.msg : "error " + std::to_string(rc));
      return EIO;
    }
  }
  produced = capacity - zs_.avail_out;
  return 0;
}

int Inflater::check_adler(std::string& why) {
  // zlib consumed the stream's last 4 bytes, its big-endian adler32 of the data, unchecked.
  const std::uint64_t end = input_offset_ - zs_.avail_in;
  unsigned char trailer[4];
  std::size_t got = 0;
  if (end < data_start_ + sizeof trailer ||
      !pread_full(fd_.get(), trailer, sizeof trailer, end - sizeof trailer, got) ||
      got != sizeof trailer) {
    why = "cannot read the zlib stream's check value";
    return EIO;
  }
  const std::uint32_t stored = std::uint32_t{trailer[0]} << 24 | std::uint32_t{trailer[1]} << 16 |
                               std::uint32_t{trailer[2]} << 8 | trailer[3];
  if (stored != adler_) {
    why = "zlib: incorrect data check";
    return EIO;
  }
  return 0;
}

void Inflater::maybe_snapshot() noexcept {
  if (!head_rest_.empty() || stream_end_) return;
  const std::lock_guard lock(points_->mutex_);
  auto& snapshots = points_->snapshots_;
  if (snapshots.size() >= kMaxSnapshots) return;
  // Another open of the blob may have gone further already: then its points serve this one.
  const std::uint64_t last = snapshots.empty() ? 0 : snapshots.back()->pos;
  if (pos_ < last + snapshot_every_) return;
  try {
    auto snapshot = std::make_unique<SeekPoints::Snapshot>();
    if (inflateCopy(&snapshot->zs, &zs_) != Z_OK) return;  // no seek point: not an error
    snapshot->pos = pos_;
    snapshot->input = input_offset_ - zs_.avail_in;
    snapshot->adler = adler_;
    snapshots.push_back(std::move(snapshot));
  } catch (...) {
  }
}

int Inflater::rewind(std::uint64_t target, std::string& why) {
  const std::lock_guard lock(points_->mutex_);
  SeekPoints::Snapshot* best = nullptr;
  for (const auto& snapshot : points_->snapshots_) {
    if (snapshot->pos <= target) best = snapshot.get();
  }
  if (best == nullptr) return restart(why);
  return resume(*best, why);
}

int Inflater::seek_forward(std::uint64_t target, std::string& why) {
  const std::lock_guard lock(points_->mutex_);
  SeekPoints::Snapshot* best = nullptr;
  for (const auto& snapshot : points_->snapshots_) {
    if (snapshot->pos <= target) best = snapshot.get();
  }
  if (best == nullptr || best->pos <= pos_) return 0;
  return resume(*best, why);
}

int Inflater::resume(SeekPoints::Snapshot& best, std::string& why) {
  if (zs_ready_) {
    inflateEnd(&zs_);
    zs_ready_ = false;
  }
  const int rc = inflateCopy(&zs_, &best.zs);
  if (rc != Z_OK) {
    why = "inflateCopy failed";
    return rc == Z_MEM_ERROR ? ENOMEM : EIO;
  }
  zs_ready_ = true;
  zs_.next_in = input_.get();
  zs_.avail_in = 0;
  input_offset_ = best.input;
  pos_ = best.pos;
  adler_ = best.adler;
  stream_end_ = false;
  head_rest_.clear();
  return 0;
}

int Inflater::produce(unsigned char* dst, std::size_t capacity, std::size_t& produced,
                      std::string& why) {
  produced = 0;
  if (!zs_ready_) {
    if (const int err = restart(why); err != 0) return err;
  }
  capacity = static_cast<std::size_t>(std::min<std::uint64_t>(capacity, size_ - pos_));
  if (capacity == 0) return 0;
  if (!head_rest_.empty()) {
    produced = std::min(capacity, head_rest_.size());
    std::memcpy(dst, head_rest_.data(), produced);
    head_rest_.erase(0, produced);
    pos_ += produced;
    return 0;
  }
  if (const int err = inflate_some(dst, capacity, produced, why); err != 0) return err;
  if (produced == 0) {
    why = "the zlib stream ends before the blob's " + std::to_string(size_) + " bytes";
    return EIO;
  }
  pos_ += produced;
  maybe_snapshot();
  return 0;
}

int Inflater::finish(std::string& why) {
  if (stream_end_) return 0;
  // All data is out: finish the stream so that its adler32 is checked, which catches damage
  // that still inflated to something.
  unsigned char extra = 0;
  std::size_t produced = 0;
  if (const int err = inflate_some(&extra, 1, produced, why); err != 0) return err;
  if (produced != 0) {
    why = "the zlib stream is longer than the blob's size";
    return EIO;
  }
  return 0;
}

int MemorySource::produce(unsigned char* dst, std::size_t capacity, std::size_t& produced,
                          std::string& /*why*/) {
  produced = static_cast<std::size_t>(std::min<std::uint64_t>(capacity, bytes_->size() - pos_));
  std::memcpy(dst, bytes_->data() + pos_, produced);
  pos_ += produced;
  return 0;
}

WindowedReader::WindowedReader(std::unique_ptr<ByteSource> source, const git_oid& oid,
                               WarnOnce& warnings)
    : source_(std::move(source)),
      size_(source_->size()),
      oid_(oid),
      warnings_(warnings),
      ring_(std::make_shared<Ring>()) {
  ring_->bytes.reset(new unsigned char[kWindow]);
  produced_ = floor_ = source_->pos();
}

WindowedReader::~WindowedReader() {
  std::unique_lock lock(ring_->mutex);
  stop(lock);
}

void WindowedReader::stop(std::unique_lock<std::mutex>& lock) noexcept {
  if (!running_) return;
  stop_ = true;
  ring_->changed.notify_all();
  ring_->changed.wait(lock, [&] { return !running_; });
  stop_ = false;
}

void WindowedReader::produce_loop() noexcept {
  std::unique_lock lock(ring_->mutex);
  while (!stop_ && error_ == 0) {
    if (produced_ == size_) {
      if (!finished_) {
        std::string why;
        lock.unlock();
        const int err = source_->finish(why);
        lock.lock();
        if (err != 0) {
          error_ = err;
          why_ = std::move(why);
        } else {
          finished_ = true;
        }
        ring_->changed.notify_all();
      }
      break;
    }
    const std::uint64_t limit = low_water() + kWindow;
    if (produced_ >= limit) {
      ring_->changed.wait(lock);
      continue;
    }
    const std::size_t at = produced_ % kWindow;
    const std::size_t capacity = static_cast<std::size_t>(
        std::min<std::uint64_t>({kWindow - at, kChunk, size_ - produced_, limit - produced_}));
    std::size_t produced = 0;
    std::string why;
    lock.unlock();
    // Only this thread writes the ring, and only where no reader may look (below floor_ once
    // the ring wraps): the copy runs without the lock.
    int err = 0;
    try {
      err = source_->produce(ring_->bytes.get() + at, capacity, produced, why);
    } catch (...) {
      err = ENOMEM;
    }
    lock.lock();
    if (err == 0 && produced == 0) {
      err = EIO;
      why = "the stream ends before the blob's " + std::to_string(size_) + " bytes";
    }
    if (err != 0) {
      error_ = err;
      why_ = std::move(why);
    } else {
      produced_ += produced;
    }
    ring_->changed.notify_all();
  }
  // Last touch of this object: stop() (the destructor too) may go on once it sees this.
  running_ = false;
  ring_->changed.notify_all();
}

void WindowedReader::copy_from_window(std::uint64_t from, std::size_t length, char* dst) const
    noexcept {
  while (length > 0) {
    const std::size_t at = from % kWindow;
    const std::size_t n = std::min(length, kWindow - at);
    std::memcpy(dst, ring_->bytes.get() + at, n);
    dst += n;
    from += n;
    length -= n;
  }
}

std::uint64_t WindowedReader::low_water() const noexcept {
  const auto& pinned = ring_->pinned;
  return pinned.empty() ? floor_ : std::min(floor_, *std::min_element(pinned.begin(), pinned.end()));
}

int WindowedReader::fail(const std::string& why) {
  warnings_.warn(oid_, "blob " + to_hex(oid_.oid()) + " cannot be streamed: " + why);
  return EIO;
}

int WindowedReader::read(std::size_t size, off_t offset, ReadResult& out) {
  try {
    if (offset < 0) return EINVAL;
    const auto begin = static_cast<std::uint64_t>(offset);
    out.fd = -1;
    out.data = {};
    out.hold.reset();  // this thread's previous pin, which the waits below could wait for
    if (begin >= size_ || size == 0) return 0;
    const std::uint64_t end = begin + std::min<std::uint64_t>(size, size_ - begin);
    const bool in_place = begin / kWindow == (end - 1) / kWindow;  // one stretch of the ring
    if (!in_place) out.owned.resize(static_cast<std::size_t>(end - begin));  // before any lock

    const std::lock_guard reading(read_mutex_);
    std::unique_lock lock(ring_->mutex);
    const auto move_source = [&](auto&& to) {
      stop(lock);
      // Replies still pointing into the ring are sent first: the producer starts over.
      ring_->changed.wait(lock, [&] { return ring_->pinned.empty(); });
      std::string why;
      const int err = to(why);
      produced_ = floor_ = source_->pos();
      error_ = err;
      return err == 0 ? 0 : err == ENOMEM ? err : fail(why);
    };
    if (error_ != 0 || begin < floor_) {
      finished_ = false;
      if (const int err = move_source([&](std::string& why) { return source_->rewind(begin, why); }))
        return err;
    }
    if (begin > produced_ + kWindow) {
      // Far ahead (another open of the blob went there, or the kernel dropped a page): a seek
      // point on the way saves inflating everything in between.
      if (const int err = move_source(
              [&](std::string& why) { return source_->seek_forward(begin, why); }))
        return err;
    }
    // Nothing more than kKeep before this read's end is kept: the producer may run that far
    // ahead. Never past a byte still to copy (a request larger than kKeep).
    const std::uint64_t keep_from = end > kKeep ? end - kKeep : 0;
    floor_ = std::max(floor_, std::min(begin, keep_from));
    if (!running_ && !finished_) {
      // Detached, and waited for through running_: the worker exits without destroying open
      // handles, and a joinable thread left then is a leak to TSan.
      std::thread producer([this] { produce_loop(); });
      running_ = true;
      producer.detach();
    }
    ring_->changed.notify_all();

    const auto failed = [&] {
      const int err = error_;
      const std::string why = why_;
      return err == ENOMEM ? err : fail(why);
    };
    if (in_place) {
      // floor_ >= end - kWindow now, so the producer can get there once older pins go.
      ring_->changed.wait(lock, [&] { return produced_ >= end || error_ != 0; });
      if (produced_ < end) return failed();
    }
    for (std::uint64_t pos = begin; !in_place && pos < end;) {
      ring_->changed.wait(lock, [&] { return produced_ > pos || error_ != 0; });
      if (produced_ <= pos) return failed();
      const std::uint64_t upto = std::min(produced_, end);
      lock.unlock();
      // [pos, upto) is at or after floor_: the producer does not overwrite it.
      copy_from_window(pos, static_cast<std::size_t>(upto - pos), out.owned.data() + (pos - begin));
      lock.lock();
      pos = upto;
      if (std::min(pos, keep_from) > floor_) {
        floor_ = std::min(pos, keep_from);  // a request larger than kKeep: let it go on
        ring_->changed.notify_all();
      }
    }
    if (end == size_) {
      // The last bytes: the source must also end there (zlib's adler32 check).
      ring_->changed.wait(lock, [&] { return finished_ || error_ != 0; });
      if (!finished_) return failed();
    }
    if (!in_place) {
      out.data = out.owned;
      return 0;
    }
    ring_->pinned.push_back(begin);
    out.hold = std::shared_ptr<void>(nullptr, [ring = ring_, begin](void*) {
      const std::lock_guard unpin(ring->mutex);
      auto& pinned = ring->pinned;
      pinned.erase(std::find(pinned.begin(), pinned.end(), begin));
      ring->changed.notify_all();
    });
    out.data = std::string_view(reinterpret_cast<const char*>(ring_->bytes.get()) + begin % kWindow,
                                static_cast<std::size_t>(end - begin));
    return 0;
  } catch (const std::bad_alloc&) {
    return ENOMEM;
  } catch (...) {
    return EIO;
  }
}

}  // namespace heddle::worker::git
