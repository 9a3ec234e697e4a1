// A blob larger than the blob cache, as `git checkout` writes it with LF -> CRLF (the text /
// eol / crlf attributes, core.autocrlf, core.eol), without ever holding it whole: one pass
// over the stored bytes at lookup learns whether checkout converts it and the converted size
// (stat must show it before any read), plus a seek point every few MiB; reads then convert on
// the fly from the nearest seek point. LF -> CRLF is a stream transform (each LF not after a
// CR gains a CR), so the converted offset of any stored offset is known from the count of
// such LFs before it. The decision itself (text or binary, any CR already) needs the whole
// content's statistics, which is why the pass runs before the size can be given.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "git/blob_stream.h"

namespace heddle::worker::git {

// How libgit2's crlf filter treats a path on checkout (CheckoutFilter::stream_plan finds out).
struct CrlfRule {
  // text=auto, core.autocrlf=true: only what looks like text is converted, and only if it has
  // no CR yet. Otherwise (text, eol=crlf, crlf) every lone LF becomes CRLF whatever the file.
  bool automatic = false;
  // libgit2 versions differ for text=auto: older ones convert a file whose CRs are all in
  // CRLFs (the rule then is "no bare CR"), newer ones and git leave any file with a CR alone.
  bool auto_converts_with_crlf = false;
};

struct CrlfIndex {
  struct Point {
    std::uint64_t raw = 0;  // stored offset
    std::uint64_t out = 0;  // converted offset
    bool after_cr = false;  // the stored byte before `raw` is a CR
  };
  static constexpr std::uint64_t kPointEvery = 1ull << 20;  // stored bytes between points

  bool convert = false;  // false: checkout writes the blob as stored
  std::uint64_t raw_size = 0;
  std::uint64_t size = 0;     // converted
  std::vector<Point> points;  // by increasing offset; points[0] is the start
};

// Reads `raw` once from its start and fills `out` as libgit2's crlf filter would decide
// (crlf_apply_to_workdir). 0 or an errno, with `why`.
[[nodiscard]] int index_crlf(ByteSource& raw, const CrlfRule& rule, CrlfIndex& out,
                             std::string& why);

// The converted bytes of `raw` (whose index says convert), produced on the fly.
class CrlfSource final : public ByteSource {
 public:
  static constexpr std::size_t kBuffer = 64 << 10;

  CrlfSource(std::unique_ptr<ByteSource> raw, std::shared_ptr<const CrlfIndex> index);
  [[nodiscard]] std::uint64_t size() const noexcept override { return index_->size; }
  [[nodiscard]] std::uint64_t pos() const noexcept override { return pos_; }
  [[nodiscard]] int rewind(std::uint64_t target, std::string& why) override;
  [[nodiscard]] int seek_forward(std::uint64_t target, std::string& why) override;
  [[nodiscard]] int produce(unsigned char* dst, std::size_t capacity, std::size_t& produced,
                            std::string& why) override;
  [[nodiscard]] int finish(std::string& why) override { return raw_->finish(why); }

 private:
  const std::unique_ptr<ByteSource> raw_;
  const std::shared_ptr<const CrlfIndex> index_;
  std::unique_ptr<unsigned char[]> buffer_;  // stored bytes taken from raw_, not yet converted
  std::size_t buffer_at_ = 0;
  std::size_t buffer_end_ = 0;
  std::uint64_t pos_ = 0;    // converted bytes produced
  bool after_cr_ = false;    // the last stored byte converted was a CR
  bool pending_lf_ = false;  // a CRLF's LF did not fit in the last call
};

}  // namespace heddle::worker::git
