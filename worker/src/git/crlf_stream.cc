#include "git/crlf_stream.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

namespace heddle::worker::git {
namespace {

// libgit2's git_str_gather_text_stats, one byte class at a time.
enum ByteClass : unsigned char { kPrintable, kNonprintable, kNul, kLf, kCr };

constexpr std::array<ByteClass, 256> make_classes() {
  std::array<ByteClass, 256> out{};
  for (int c = 0; c < 256; ++c) {
    if (c > 0x1f && c != 0x7f) {
      out[c] = kPrintable;
    } else if (c == 0) {
      out[c] = kNul;
    } else if (c == '\n') {
      out[c] = kLf;
    } else if (c == '\r') {
      out[c] = kCr;
    } else if (c == '\t' || c == '\f' || c == '\v' || c == '\b' || c == 0x1b) {
      out[c] = kPrintable;
    } else {
      out[c] = kNonprintable;
    }
  }
  return out;
}
constexpr std::array<ByteClass, 256> kClasses = make_classes();

}  // namespace

int index_crlf(ByteSource& raw, const CrlfRule& rule, CrlfIndex& out, std::string& why) {
  out = CrlfIndex{};
  if (const int err = raw.rewind(0, why); err != 0) return err;
  if (raw.pos() != 0) {
    why = "cannot go back to the blob's start";
    return EIO;
  }
  out.raw_size = raw.size();
  std::uint64_t counts[5] = {};  // by ByteClass
  std::uint64_t crlf = 0;
  bool after_cr = false;
  unsigned char last = 0;
  std::uint64_t next_point = 0;
  const auto buffer = std::make_unique<unsigned char[]>(CrlfSource::kBuffer);
  for (std::uint64_t at = 0; at < out.raw_size;) {
    if (at >= next_point) {
      out.points.push_back(CrlfIndex::Point{at, at + counts[kLf] - crlf, after_cr});
      next_point = at + CrlfIndex::kPointEvery;
    }
    std::size_t got = 0;
    if (const int err = raw.produce(buffer.get(), CrlfSource::kBuffer, got, why); err != 0) {
      return err;
    }
    if (got == 0) {
      why = "the stream ends before the blob's " + std::to_string(out.raw_size) + " bytes";
      return EIO;
    }
    for (std::size_t i = 0; i < got; ++i) {
      const ByteClass c = kClasses[buffer[i]];
      ++counts[c];
      if (c == kLf && after_cr) ++crlf;
      after_cr = c == kCr;
    }
    last = buffer[got - 1];
    at += got;
  }
  if (const int err = raw.finish(why); err != 0) return err;
  if (out.points.empty()) out.points.push_back(CrlfIndex::Point{});
  // A trailing EOF character (^Z) is not counted (it is neither a CR nor a LF).
  if (out.raw_size > 0 && last == '\032') --counts[kNonprintable];
  const std::uint64_t lf = counts[kLf], cr = counts[kCr];
  out.size = out.raw_size;
  if (out.raw_size == 0 || lf == 0 || lf == crlf) return 0;
  if (rule.automatic) {
    // Any CR already (or, for older libgit2, a bare one): left alone.
    if (rule.auto_converts_with_crlf ? cr != crlf : cr > 0) return 0;
    const bool binary = cr != crlf || counts[kNul] > 0 ||
                        (counts[kPrintable] >> 7) < counts[kNonprintable];
    if (binary) return 0;
  }
  out.convert = true;
  out.size = out.raw_size + (lf - crlf);
  return 0;
}

CrlfSource::CrlfSource(std::unique_ptr<ByteSource> raw, std::shared_ptr<const CrlfIndex> index)
    : raw_(std::move(raw)), index_(std::move(index)), buffer_(new unsigned char[kBuffer]) {}

int CrlfSource::rewind(std::uint64_t target, std::string& why) {
  const auto& points = index_->points;
  auto it = std::upper_bound(points.begin(), points.end(), target,
                             [](std::uint64_t t, const CrlfIndex::Point& p) { return t < p.out; });
  const CrlfIndex::Point point = it == points.begin() ? CrlfIndex::Point{} : *std::prev(it);
  if (const int err = raw_->rewind(point.raw, why); err != 0) return err;
  // The raw source stops at its own seek point at or before ours: skip to ours.
  while (raw_->pos() < point.raw) {
    std::size_t got = 0;
    const auto want = static_cast<std::size_t>(
        std::min<std::uint64_t>(kBuffer, point.raw - raw_->pos()));
    if (const int err = raw_->produce(buffer_.get(), want, got, why); err != 0) return err;
    if (got == 0) {
      why = "the stream ends before a seek point";
      return EIO;
    }
  }
  if (raw_->pos() != point.raw) {
    why = "the stored stream went past a seek point";
    return EIO;
  }
  buffer_at_ = buffer_end_ = 0;
  pos_ = point.out;
  after_cr_ = point.after_cr;
  pending_lf_ = false;
  return 0;
}

int CrlfSource::seek_forward(std::uint64_t target, std::string& why) {
  const auto& points = index_->points;
  auto it = std::upper_bound(points.begin(), points.end(), target,
                             [](std::uint64_t t, const CrlfIndex::Point& p) { return t < p.out; });
  if (it == points.begin() || std::prev(it)->out <= pos_) return 0;
  return rewind(target, why);
}

int CrlfSource::produce(unsigned char* dst, std::size_t capacity, std::size_t& produced,
                        std::string& why) {
  std::size_t n = 0;
  if (pending_lf_ && capacity > 0) {
    dst[n++] = '\n';
    pending_lf_ = false;
  }
  while (n < capacity) {
    if (buffer_at_ == buffer_end_) {
      std::size_t got = 0;
      if (const int err = raw_->produce(buffer_.get(), kBuffer, got, why); err != 0) return err;
      if (got == 0) break;  // the end
      buffer_at_ = 0;
      buffer_end_ = got;
    }
    const unsigned char* from = buffer_.get() + buffer_at_;
    const std::size_t length = std::min(buffer_end_ - buffer_at_, capacity - n);
    const auto* lf = static_cast<const unsigned char*>(std::memchr(from, '\n', length));
    if (lf == nullptr) {
      std::memcpy(dst + n, from, length);
      n += length;
      buffer_at_ += length;
      after_cr_ = from[length - 1] == '\r';
      continue;
    }
    const auto before = static_cast<std::size_t>(lf - from);
    std::memcpy(dst + n, from, before);
    n += before;  // at most capacity - 1: the LF was within `length`
    const bool after_cr = before > 0 ? from[before - 1] == '\r' : after_cr_;
    if (!after_cr) {
      dst[n++] = '\r';
      if (n == capacity) {
        pending_lf_ = true;
      } else {
        dst[n++] = '\n';
      }
    } else {
      dst[n++] = '\n';
    }
    buffer_at_ += before + 1;
    after_cr_ = false;
  }
  pos_ += n;
  produced = n;
  return 0;
}

}  // namespace heddle::worker::git
