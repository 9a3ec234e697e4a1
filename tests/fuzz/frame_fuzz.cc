// libFuzzer target for the worker wire codec (ipc/src/frame.cc, ipc/src/message.cc): the bytes
// are what a hostile peer could send. Nothing may crash, leak, hit UB or throw anything but
// heddle::Error, and whatever decodes must survive a re-encode unchanged.
//
// Each input is decoded three ways:
//   1. decode_frame() on the whole input, as one frame;
//   2. decode_body() on everything after the 4-byte header, whatever the header claims, so
//      mutations of a body are not wasted on a length that no longer matches;
//   3. read_frame() over an fd holding the input, frame after frame, which must agree with
//      decode_frame() on each frame's bytes (same message, or the same errno).
// Built by the `fuzz` preset; run by tests/fuzz/run.
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "heddle/error.h"
#include "heddle/ipc/frame.h"
#include "heddle/ipc/message.h"

namespace {

using namespace heddle;

constexpr std::size_t kHeader = 4;
// Error text reaches logs and may be sent on in a MountError: short, printable ASCII.
constexpr std::size_t kMaxErrorText = 1024;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "frame_fuzz: %s\n", what.c_str());
  std::abort();
}

void check_error_text(const Error& error) {
  const std::string_view text = error.what();
  if (text.size() > kMaxErrorText) fail("error text of " + std::to_string(text.size()) + " bytes");
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte > 0x7e) fail("unprintable byte in error text: " + std::string(text));
  }
  if (error.code() != EPROTO && error.code() != EMSGSIZE) {
    fail("decode error with errno " + std::to_string(error.code()) + ": " + std::string(text));
  }
}

// Either a message or the errno of the heddle::Error that refused it.
struct Outcome {
  std::optional<ipc::Message> message;
  int code = 0;
};

template <typename Decode>
Outcome attempt(Decode&& decode) {
  try {
    return {decode(), 0};
  } catch (const Error& error) {
    check_error_text(error);
    return {std::nullopt, error.code()};
  }
}

std::string describe(const ipc::Message& message) {
  try {
    return ipc::encode_body(message);
  } catch (const Error& error) {
    return "<" + std::string(ipc::kind_of(message)) + ": " + error.what() + ">";
  }
}

// What decodes must encode, and decode again to the same message.
void check_round_trip(const ipc::Message& message) {
  std::string body;
  try {
    body = ipc::encode_body(message);
  } catch (const Error& error) {
    fail(std::string("a decoded message does not encode: ") + error.what());
  }
  const Outcome again = attempt([&] { return ipc::decode_body(body); });
  if (!again.message) fail("re-encoded body does not decode: " + body);
  if (!(*again.message == message)) {
    fail("round trip changed the message: " + describe(message) + " -> " + body);
  }
  // Encoding is canonical: a second round writes the same bytes.
  if (ipc::encode_body(*again.message) != body) fail("encoding is not stable: " + body);
  // The frame adds the header, unless the re-encoded body outgrew the limit (a number such as
  // 1e9 re-encodes as 1000000000.0), which encode_frame must then refuse.
  if (body.size() <= ipc::kMaxFrameBody) {
    const std::string frame = ipc::encode_frame(message);
    if (frame.size() != kHeader + body.size() || frame.substr(kHeader) != body) {
      fail("encode_frame disagrees with encode_body: " + body);
    }
    const Outcome decoded = attempt([&] { return ipc::decode_frame(frame); });
    if (!decoded.message || !(*decoded.message == message)) fail("frame round trip: " + body);
  } else {
    const Outcome refused = attempt([&]() -> ipc::Message {
      (void)ipc::encode_frame(message);
      return message;
    });
    if (refused.message || refused.code != EMSGSIZE) fail("oversize body encoded: " + body);
  }
}

std::uint32_t claimed_length(std::string_view bytes) {
  std::uint32_t length = 0;
  for (std::size_t i = 0; i < kHeader; ++i) {
    length |= static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  }
  return length;
}

// An in-memory file read_frame() reads like a pipe (recv() answers ENOTSOCK, then read()).
int stream_fd() {
  static const int fd = [] {
    const int made = ::memfd_create("frame_fuzz", MFD_CLOEXEC);
    if (made < 0) fail("memfd_create");
    return made;
  }();
  return fd;
}

void load_stream(std::string_view bytes) {
  const int fd = stream_fd();
  if (::ftruncate(fd, 0) != 0) fail("ftruncate");
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t wrote = ::pwrite(fd, bytes.data() + done, bytes.size() - done,
                                   static_cast<off_t>(done));
    if (wrote <= 0) fail("pwrite");
    done += static_cast<std::size_t>(wrote);
  }
  if (::lseek(fd, 0, SEEK_SET) != 0) fail("lseek");
}

// read_frame() over the whole input must agree with decode_frame() frame by frame.
void check_stream(std::string_view bytes) {
  load_stream(bytes);
  std::size_t offset = 0;
  for (;;) {
    const std::string_view rest = bytes.substr(offset);
    std::optional<ipc::Message> read;
    const Outcome streamed = attempt([&] {
      read = ipc::read_frame(stream_fd());
      return read ? *read : ipc::Message{};
    });
    if (rest.empty()) {
      if (streamed.code != 0 || read) fail("read_frame at EOF did not return nullopt");
      return;
    }
    if (streamed.code == 0 && !read) fail("read_frame returned EOF with bytes left");
    // The frame decode_frame() would be given: the header's claim, capped to what is there.
    std::size_t frame_size = rest.size();
    if (rest.size() >= kHeader) {
      frame_size = std::min<std::size_t>(rest.size(), kHeader + std::size_t{claimed_length(rest)});
    }
    const Outcome sliced = attempt([&] { return ipc::decode_frame(rest.substr(0, frame_size)); });
    if (streamed.code != sliced.code) {
      fail("read_frame and decode_frame disagree at offset " + std::to_string(offset) + ": errno " +
           std::to_string(streamed.code) + " vs " + std::to_string(sliced.code));
    }
    if (streamed.code != 0) return;  // after an error the stream is not resynchronised
    if (!(*streamed.message == *sliced.message)) fail("read_frame and decode_frame disagree");
    offset += frame_size;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);

  const Outcome frame = attempt([&] { return ipc::decode_frame(bytes); });
  if (frame.message) {
    if (size < kHeader || claimed_length(bytes) != size - kHeader) fail("accepted a bad length");
    check_round_trip(*frame.message);
  }

  if (size >= kHeader) {
    const Outcome body = attempt([&] { return ipc::decode_body(bytes.substr(kHeader)); });
    if (body.message) check_round_trip(*body.message);
    // The same body behind a header that matches must decode the same way.
    if (frame.message && !(body.message && *body.message == *frame.message)) {
      fail("decode_frame and decode_body disagree");
    }
  }

  check_stream(bytes);
  return 0;
}
