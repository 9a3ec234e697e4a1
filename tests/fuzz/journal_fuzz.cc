// The node journal's decoder (worker/src/node_journal.h) as a hostile dead worker leaves it
// (issue 16): the input is the active region's log under a sound header, or, when its first
// byte is odd, the whole image, header included.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "node_journal.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace heddle::worker;
  std::vector<std::byte> image;
  if (size > 0 && (data[0] & 1) != 0) {
    image.assign(reinterpret_cast<const std::byte*>(data + 1),
                 reinterpret_cast<const std::byte*>(data + size));
  } else {
    image = journal_image({}, "init", "reply");
    image.insert(image.end(), reinterpret_cast<const std::byte*>(data),
                 reinterpret_cast<const std::byte*>(data + size));
    const std::uint64_t used = size;
    std::memcpy(image.data() + 32, &used, sizeof used);  // Header::used[0]
  }
  static_cast<void>(decode_journal(image));
  return 0;
}
