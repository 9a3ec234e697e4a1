// The wire codec against the golden vectors in data/frames.txt, and the streaming path over
// real sockets and pipes.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <optional>
#include <ostream>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "heddle/error.h"
#include "heddle/ipc/frame.h"
#include "heddle/ipc/message.h"
#include "heddle/unique_fd.h"
#include "support/fd_pairs.h"

namespace heddle::ipc {

// Lets gtest show a Message as its JSON body instead of raw bytes.
void PrintTo(const Message& message, std::ostream* out) {
  try {
    *out << encode_body(message);
  } catch (const Error&) {
    *out << "<" << kind_of(message) << " that cannot be encoded>";
  }
}

namespace {

using namespace std::chrono_literals;
using namespace ::heddle::test;  // fd pairs, error_from, open_fd_count
using Json = nlohmann::ordered_json;

constexpr auto kGuard = 2s;  // every blocking call in these tests gives up after this

// ---- golden vector file ---------------------------------------------------------------------

struct Vector {
  std::string label;  // the JSON body for valid/lenient vectors, a description for invalid ones
  std::string bytes;  // the whole frame
};

struct VectorFile {
  std::vector<Vector> valid;
  std::vector<Vector> invalid;
  std::vector<Vector> lenient;
};

std::string hex_to_bytes(const std::string& hex) {
  if (hex.size() % 2 != 0) throw std::runtime_error("odd-length hex: " + hex);
  std::string bytes;
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    bytes += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  }
  return bytes;
}

std::vector<Vector>* group_named(VectorFile& file, const std::string& word) {
  if (word == "valid") return &file.valid;
  if (word == "invalid") return &file.invalid;
  if (word == "lenient") return &file.lenient;
  throw std::runtime_error("unknown line starting with \"" + word + "\"");
}

// "valid <body>", "invalid <description>" or "lenient <body>", each followed by "hex <bytes>".
// Only the single space after the class word is syntax: a lenient body may start with spaces.
VectorFile load_vectors() {
  const std::string path = HEDDLE_TEST_DATA_DIR "/frames.txt";
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  VectorFile file;
  std::vector<Vector>* pending_class = nullptr;
  std::string pending_label;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line.starts_with('#')) continue;
    const auto space = line.find(' ');
    const std::string word = line.substr(0, space);
    const std::string rest = space == std::string::npos ? "" : line.substr(space + 1);
    if (word == "hex") {
      if (pending_class == nullptr) throw std::runtime_error("hex line without a label: " + line);
      const auto digits = rest.find_first_not_of(' ');
      const auto end = rest.find_last_not_of(' ');
      pending_class->push_back(
          {pending_label, hex_to_bytes(rest.substr(digits, end - digits + 1))});
      pending_class = nullptr;
      continue;
    }
    if (pending_class != nullptr) throw std::runtime_error("label without a hex line: " + line);
    pending_class = group_named(file, word);
    pending_label = rest;
  }
  if (pending_class != nullptr) throw std::runtime_error("last label has no hex line");
  return file;
}

const VectorFile& vectors() {
  static const VectorFile file = load_vectors();
  return file;
}

std::uint32_t claimed_length(const std::string& frame) {
  std::uint32_t length = 0;
  for (std::size_t i = 0; i < 4 && i < frame.size(); ++i) {
    length |= static_cast<std::uint32_t>(static_cast<unsigned char>(frame[i])) << (8 * i);
  }
  return length;
}

// The messages the valid vectors hold, in file order, built by hand.
std::vector<Message> expected_valid_messages() {
  return {
      Stop{},
      Status{},
      Stopping{},
      MountReady{12345, "/tmp/x"},
      StatusOk{4194304, "/home/ana/src/app/.heddle/threads/main/app"},
      MountError{"open repo at /nope: No such file or directory (os error 2)"},
      MountError{"line one\nline \"two\"\t\\ tab"},
      MountReady{7, "/mnt/caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac"},
  };
}

std::vector<Message> expected_lenient_messages() {
  return {
      StatusOk{3, "/x"},
      StatusOk{3, "/x", Json{{"uptime_ms", 10}}},
      Stop{},
  };
}

// ---- helpers --------------------------------------------------------------------------------

testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return testing::AssertionSuccess();
  return testing::AssertionFailure() << "\"" << text << "\" does not contain \"" << part << "\"";
}

void send_raw(int fd, const std::string& bytes) {
  ASSERT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(bytes.size()));
}

// write_frame in a thread, so frames larger than the socket buffer cannot deadlock the test.
Message through_stream(const Message& message, FdPair channel) {
  std::jthread writer([&] { write_frame(channel.writer.get(), message, kGuard); });
  std::optional<Message> got = read_frame(channel.reader.get(), kGuard);
  if (!got) throw std::runtime_error("unexpected EOF");
  return *std::move(got);
}

MountError error_with_body_size(std::size_t body_size) {
  const std::size_t overhead = encode_body(MountError{}).size();
  return MountError{std::string(body_size - overhead, 'a')};
}

// ---- golden vectors -------------------------------------------------------------------------

TEST(FrameVectors, FileHoldsEveryVector) {
  EXPECT_EQ(vectors().valid.size(), 8u);
  EXPECT_EQ(vectors().invalid.size(), 13u);
  EXPECT_EQ(vectors().lenient.size(), 3u);
  for (const auto* group : {&vectors().valid, &vectors().lenient}) {
    for (const Vector& vector : *group) {
      EXPECT_EQ(vector.bytes.substr(4), vector.label) << "hex disagrees with its label";
    }
  }
}

TEST(FrameVectors, ValidVectorsReencodeByteForByte) {
  for (const Vector& vector : vectors().valid) {
    SCOPED_TRACE(vector.label);
    const Message decoded = decode_frame(vector.bytes);
    EXPECT_EQ(encode_frame(decoded), vector.bytes);
    EXPECT_EQ(encode_body(decoded), vector.label);
  }
}

TEST(FrameVectors, HandBuiltMessagesEncodeToValidVectors) {
  const std::vector<Message> messages = expected_valid_messages();
  ASSERT_EQ(messages.size(), vectors().valid.size());
  for (std::size_t i = 0; i < messages.size(); ++i) {
    SCOPED_TRACE(vectors().valid[i].label);
    EXPECT_EQ(encode_frame(messages[i]), vectors().valid[i].bytes);
    EXPECT_EQ(decode_frame(vectors().valid[i].bytes), messages[i]);
  }
}

TEST(FrameVectors, LenientVectorsDecode) {
  const std::vector<Message> messages = expected_lenient_messages();
  ASSERT_EQ(messages.size(), vectors().lenient.size());
  for (std::size_t i = 0; i < messages.size(); ++i) {
    SCOPED_TRACE(vectors().lenient[i].label);
    EXPECT_EQ(decode_frame(vectors().lenient[i].bytes), messages[i]);
  }
}

TEST(FrameVectors, InvalidVectorsAreRejected) {
  int oversize = 0;
  for (const Vector& vector : vectors().invalid) {
    SCOPED_TRACE(vector.label);
    const bool is_oversize =
        vector.bytes.size() >= 4 && claimed_length(vector.bytes) > kMaxFrameBody;
    oversize += is_oversize ? 1 : 0;
    const auto error = error_from([&] { (void)decode_frame(vector.bytes); });
    ASSERT_TRUE(error.has_value());
    EXPECT_EQ(error->code(), is_oversize ? EMSGSIZE : EPROTO) << error->what();
  }
  EXPECT_EQ(oversize, 2);
}

TEST(FrameVectors, InvalidVectorsAreRejectedByReadFrame) {
  for (const Vector& vector : vectors().invalid) {
    SCOPED_TRACE(vector.label);
    FdPair channel = socket_pair();
    send_raw(channel.writer.get(), vector.bytes);
    const bool whole =
        vector.bytes.size() >= 4 && vector.bytes.size() - 4 >= claimed_length(vector.bytes);
    const bool is_oversize =
        vector.bytes.size() >= 4 && claimed_length(vector.bytes) > kMaxFrameBody;
    // Only a truncated frame needs EOF to end; the others must be judged without waiting.
    if (!whole && !is_oversize) channel.writer.reset();
    const auto error = error_from([&] { (void)read_frame(channel.reader.get(), kGuard); });
    ASSERT_TRUE(error.has_value());
    EXPECT_EQ(error->code(), is_oversize ? EMSGSIZE : EPROTO) << error->what();
  }
}

// ---- error messages -------------------------------------------------------------------------

std::string decode_error(const std::string& body) {
  const auto error = error_from([&] { (void)decode_body(body); });
  if (!error) return "<accepted>";
  EXPECT_EQ(error->code(), EPROTO) << error->what();
  return error->what();
}

TEST(DecodeBody, ErrorsNameTheProblem) {
  EXPECT_TRUE(
      Contains(decode_error(R"({"kind":"Explode"})"), R"(frame body: unknown kind "Explode")"));
  EXPECT_TRUE(Contains(decode_error(R"({"kind":"MountReady","mount_path":"/x"})"),
                       R"(frame body: MountReady is missing field "pid")"));
  EXPECT_TRUE(Contains(decode_error(R"({"kind":"StatusOk","pid":-1,"mount_path":"/x"})"),
                       "frame body: pid -1 is not a u32"));
  EXPECT_TRUE(Contains(decode_error(R"({"kind":"MountReady","pid":4294967296,"mount_path":"/x"})"),
                       "pid 4294967296 is not a u32"));
  EXPECT_TRUE(Contains(decode_error(R"({"kind":"MountReady","pid":1.5,"mount_path":"/x"})"),
                       "pid 1.5 is not a u32"));
  EXPECT_TRUE(Contains(decode_error(R"({"kind":"MountReady","pid":"1","mount_path":"/x"})"),
                       R"(field "pid" is a string)"));
  EXPECT_TRUE(Contains(decode_error(R"({"kind":"MountError","message":7})"),
                       R"(field "message" is a number)"));
  EXPECT_TRUE(Contains(decode_error(R"({"pid":1})"), R"(missing field "kind")"));
  EXPECT_TRUE(Contains(decode_error(R"({"kind":null})"), R"("kind" is a null)"));
  EXPECT_TRUE(Contains(decode_error(R"("Stop")"), "expected a JSON object, got string"));
  EXPECT_TRUE(Contains(decode_error(""), "frame body: empty"));
  EXPECT_TRUE(Contains(decode_error("{\"kind\":\"Stop\"} x"), "not valid JSON"));
}

TEST(DecodeBody, UntrustedTextInErrorsIsEscaped) {
  const std::string message = decode_error("{\"kind\":\"\\u0007\xc3\xa9\"}");
  EXPECT_TRUE(Contains(message, R"(unknown kind "\u0007\u00e9")"));
  for (const char c : message) {
    EXPECT_TRUE(c >= 0x20 && c < 0x7f) << "byte " << static_cast<int>(c) << " in " << message;
  }
}

TEST(DecodeBody, RejectsDuplicateFields) {
  EXPECT_TRUE(Contains(decode_error(R"({"kind":"MountReady","pid":1,"pid":2,"mount_path":"/x"})"),
                       R"(duplicate field "pid")"));
  EXPECT_TRUE(
      Contains(decode_error(R"({"kind":"Stop","kind":"Status"})"), R"(duplicate field "kind")"));
}

TEST(DecodeBody, LimitsNestingLikeSerde) {
  const auto nested = [](std::size_t depth) {
    return R"({"kind":"Stop","x":)" + std::string(depth - 1, '[') + std::string(depth - 1, ']') +
           "}";
  };
  EXPECT_EQ(decode_body(nested(127)), Message(Stop{}));
  EXPECT_TRUE(Contains(decode_error(nested(128)), "nested deeper"));
  // The deepest a 64 KiB body can go must fail cleanly, not overflow the stack.
  EXPECT_TRUE(Contains(decode_error(nested(kMaxFrameBody / 2 - 16)), "nested deeper"));
}

TEST(DecodeBody, IgnoresUnknownFieldsExceptInStatusOk) {
  EXPECT_EQ(decode_body(R"({"kind":"MountError","message":"m","code":2})"),
            Message(MountError{"m"}));
  EXPECT_EQ(decode_body(R"({"x":[1,{"y":null}],"kind":"Stopping"})"), Message(Stopping{}));
  const Message status =
      decode_body(R"({"b":2,"kind":"StatusOk","pid":0,"a":{"n":[true]},"mount_path":""})");
  EXPECT_EQ(status, Message(StatusOk{0, "", Json{{"b", 2}, {"a", {{"n", {true}}}}}}));
}

// ---- encoding -------------------------------------------------------------------------------

TEST(EncodeBody, EscapesControlCharactersLikeSerde) {
  const std::string text = std::string("a\x01\x1f\x7f\b\f\r\n\t\"\\/", 12) + std::string(1, '\0');
  const std::string expected = R"({"kind":"MountError","message":"a\u0001\u001f)"
                               "\x7f"  // serde leaves DEL raw
                               R"(\b\f\r\n\t\"\\/\u0000"})";
  EXPECT_EQ(encode_body(MountError{text}), expected);
}

TEST(EncodeBody, StatusOkExtraFieldsFollowInOrder) {
  const StatusOk status{9, "/m", Json{{"uptime_ms", 10}, {"source", "git"}, {"flags", {1, 2}}}};
  EXPECT_EQ(
      encode_body(status),
      R"({"kind":"StatusOk","pid":9,"mount_path":"/m","uptime_ms":10,"source":"git","flags":[1,2]})");
}

TEST(EncodeBody, RejectsInvalidUtf8) {
  const auto error = error_from([] { (void)encode_body(MountReady{1, "/bad\xff"}); });
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code(), EINVAL);
  EXPECT_TRUE(Contains(error->what(), "MountReady"));
}

TEST(EncodeBody, RejectsExtraThatClashesOrIsNotAnObject) {
  const auto clash = error_from([] { (void)encode_body(StatusOk{1, "/", Json{{"pid", 2}}}); });
  ASSERT_TRUE(clash.has_value());
  EXPECT_EQ(clash->code(), EINVAL);
  const auto array = error_from([] { (void)encode_body(StatusOk{1, "/", Json::array()}); });
  ASSERT_TRUE(array.has_value());
  EXPECT_EQ(array->code(), EINVAL);
}

TEST(EncodeBody, KindOfNamesEveryAlternative) {
  EXPECT_EQ(kind_of(Stop{}), "Stop");
  EXPECT_EQ(kind_of(Status{}), "Status");
  EXPECT_EQ(kind_of(MountReady{}), "MountReady");
  EXPECT_EQ(kind_of(MountError{}), "MountError");
  EXPECT_EQ(kind_of(StatusOk{}), "StatusOk");
  EXPECT_EQ(kind_of(Stopping{}), "Stopping");
  EXPECT_EQ(kind_of(Freeze{}), "Freeze");
  EXPECT_EQ(kind_of(Thaw{}), "Thaw");
  EXPECT_EQ(kind_of(Retarget{}), "Retarget");
  EXPECT_EQ(kind_of(Frozen{}), "Frozen");
  EXPECT_EQ(kind_of(Thawed{}), "Thawed");
  EXPECT_EQ(kind_of(Retargeted{}), "Retargeted");
  EXPECT_EQ(kind_of(RetargetFailed{}), "RetargetFailed");
  EXPECT_EQ(kind_of(Capture{}), "Capture");
  EXPECT_EQ(kind_of(Captured{}), "Captured");
  EXPECT_EQ(kind_of(Restart{}), "Restart");
}

// `restart` (issue 16), on the control socket only: a kind without fields.
TEST(RestartMessage, EncodesAndDecodesAsAKindAlone) {
  EXPECT_EQ(encode_body(Restart{}), R"({"kind":"Restart"})");
  EXPECT_EQ(decode_body(R"({"kind":"Restart"})"), Message(Restart{}));
  EXPECT_EQ(decode_body(R"( {"extra":1,"kind":"Restart"} )"), Message(Restart{}));
}

// ---- size limit -----------------------------------------------------------------------------

TEST(FrameSize, BodyOverLimitIsRejectedOnEncodeAndWrite) {
  const MountError too_big = error_with_body_size(kMaxFrameBody + 1);
  ASSERT_EQ(encode_body(too_big).size(), kMaxFrameBody + 1);
  const auto encode_error = error_from([&] { (void)encode_frame(too_big); });
  ASSERT_TRUE(encode_error.has_value());
  EXPECT_EQ(encode_error->code(), EMSGSIZE);

  FdPair channel = socket_pair();
  const auto write_error = error_from([&] { write_frame(channel.writer.get(), too_big, kGuard); });
  ASSERT_TRUE(write_error.has_value());
  EXPECT_EQ(write_error->code(), EMSGSIZE);
}

TEST(FrameSize, BodyAtLimitRoundTrips) {
  const MountError largest = error_with_body_size(kMaxFrameBody);
  ASSERT_EQ(encode_frame(largest).size(), 4 + kMaxFrameBody);
  EXPECT_EQ(decode_frame(encode_frame(largest)), Message(largest));
  EXPECT_EQ(through_stream(largest, socket_pair()), Message(largest));
  EXPECT_EQ(through_stream(largest, pipe_pair()), Message(largest));
}

// ---- round trips over real streams ----------------------------------------------------------

// NUL, BEL, ESC, DEL, quotes, backslash and U+2028 (which JavaScript, unlike JSON, forbids raw).
constexpr char kControlAndSeparators[] = "nul\0 bell\a esc\x1b del\x7f \"q\" \\ \xe2\x80\xa8";

std::vector<Message> assorted_messages() {
  return {
      Stop{},
      Status{},
      Stopping{},
      MountReady{0, "/"},
      MountReady{4294967295u, "/mnt/caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac/\xf0\x9f\xa7\xb5"},
      MountError{""},
      MountError{std::string(kControlAndSeparators, sizeof kControlAndSeparators - 1)},
      StatusOk{42, "/srv/m"},
      StatusOk{42, "/srv/\xc3\xa9",
               Json{{"uptime_ms", 123456789},
                    {"source", "/r\n"},
                    {"nested", {{"ok", true}, {"v", nullptr}}}}},
  };
}

TEST(FrameStream, EveryMessageRoundTripsOverSocketAndPipe) {
  for (const Message& message : assorted_messages()) {
    SCOPED_TRACE(encode_body(message));
    EXPECT_EQ(decode_frame(encode_frame(message)), message);
    EXPECT_EQ(through_stream(message, socket_pair()), message);
    EXPECT_EQ(through_stream(message, pipe_pair()), message);
  }
}

TEST(FrameStream, ReadsExactlyOneFrameAtATime) {
  FdPair channel = socket_pair();
  for (const Message& message : assorted_messages()) write_frame(channel.writer.get(), message);
  channel.writer.reset();
  for (const Message& message : assorted_messages()) {
    EXPECT_EQ(read_frame(channel.reader.get(), kGuard), std::optional<Message>(message));
  }
  EXPECT_EQ(read_frame(channel.reader.get(), kGuard), std::nullopt);
}

TEST(FrameStream, WorksWithoutTimeoutOnNonBlockingSocket) {
  FdPair channel = socket_pair(SOCK_STREAM | SOCK_NONBLOCK);
  std::jthread writer([&] {
    std::this_thread::sleep_for(50ms);
    write_frame(channel.writer.get(), Status{});
  });
  EXPECT_EQ(read_frame(channel.reader.get()), std::optional<Message>(Status{}));
}

TEST(FrameStream, CleanEofIsNullopt) {
  FdPair channel = socket_pair();
  channel.writer.reset();
  EXPECT_EQ(read_frame(channel.reader.get(), kGuard), std::nullopt);
  FdPair pipe = pipe_pair();
  pipe.writer.reset();
  EXPECT_EQ(read_frame(pipe.reader.get()), std::nullopt);
}

TEST(FrameStream, EofInsideAFrameIsTruncated) {
  const std::string frame = encode_frame(MountReady{1, "/x"});
  for (const std::size_t cut : {std::size_t{1}, std::size_t{3}, std::size_t{4}, frame.size() - 1}) {
    FdPair channel = socket_pair();
    send_raw(channel.writer.get(), frame.substr(0, cut));
    channel.writer.reset();
    const auto error = error_from([&] { (void)read_frame(channel.reader.get(), kGuard); });
    ASSERT_TRUE(error.has_value()) << "cut at " << cut;
    EXPECT_EQ(error->code(), EPROTO);
    EXPECT_TRUE(Contains(error->what(), "truncated frame"));
  }
}

TEST(FrameStream, ReadTimesOutWhenNothingArrives) {
  FdPair channel = socket_pair();
  const auto start = std::chrono::steady_clock::now();
  const auto error = error_from([&] { (void)read_frame(channel.reader.get(), 200ms); });
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code(), ETIMEDOUT);
  EXPECT_GE(elapsed, 190ms);
  EXPECT_LT(elapsed, 1500ms);
}

TEST(FrameStream, DeadlineCoversTheWholeFrameNotEachRead) {
  FdPair channel = socket_pair();
  const std::string frame = encode_frame(MountReady{1, "/x"});
  // Bytes trickle in more often than the timeout, but the frame never completes.
  std::jthread writer([&](std::stop_token stop) {
    for (std::size_t i = 0; i + 1 < frame.size() && !stop.stop_requested(); ++i) {
      ::send(channel.writer.get(), &frame[i], 1, MSG_NOSIGNAL);
      std::this_thread::sleep_for(40ms);
    }
  });
  const auto start = std::chrono::steady_clock::now();
  const auto error = error_from([&] { (void)read_frame(channel.reader.get(), 300ms); });
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code(), ETIMEDOUT);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1000ms);
}

TEST(FrameStream, WriteTimesOutWhenPeerDoesNotRead) {
  FdPair channel = socket_pair();
  const Message big = error_with_body_size(kMaxFrameBody);
  std::optional<Error> error;
  for (int i = 0; i < 1000 && !error; ++i) {
    error = error_from([&] { write_frame(channel.writer.get(), big, 100ms); });
  }
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code(), ETIMEDOUT);
}

TEST(FrameStream, WriteToClosedPeerIsEpipeWithoutSignal) {
  FdPair channel = socket_pair();
  channel.reader.reset();
  const auto socket_error = error_from([&] { write_frame(channel.writer.get(), Stop{}); });
  ASSERT_TRUE(socket_error.has_value());
  EXPECT_EQ(socket_error->code(), EPIPE);

  FdPair pipe = pipe_pair();
  pipe.reader.reset();
  const auto pipe_error = error_from([&] { write_frame(pipe.writer.get(), Stop{}, kGuard); });
  ASSERT_TRUE(pipe_error.has_value());
  EXPECT_EQ(pipe_error->code(), EPIPE);
}

// ---- hostile input --------------------------------------------------------------------------

// Either a message or heddle::Error; anything else (a crash, another exception) fails.
void decode_or_reject(const std::string& bytes) {
  try {
    (void)decode_frame(bytes);
  } catch (const Error& error) {
    EXPECT_TRUE(error.code() == EPROTO || error.code() == EMSGSIZE) << error.what();
  }
}

std::string random_bytes(std::mt19937& rng, std::size_t size) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::string out(size, '\0');
  for (char& c : out) c = static_cast<char>(byte(rng));
  return out;
}

std::string with_header(const std::string& body) {
  std::string frame(4, '\0');
  for (std::size_t i = 0; i < 4; ++i) frame[i] = static_cast<char>((body.size() >> (8 * i)) & 0xff);
  return frame + body;
}

TEST(HostileInput, RandomBytesNeverCrash) {
  std::mt19937 rng(20240601);
  std::uniform_int_distribution<std::size_t> size(0, 96);
  for (int i = 0; i < 3000; ++i) {
    const std::string body = random_bytes(rng, size(rng));
    decode_or_reject(body);               // random header too: mostly oversize
    decode_or_reject(with_header(body));  // a plausible header reaches the JSON parser
  }
}

TEST(HostileInput, MutatedVectorsNeverCrash) {
  std::mt19937 rng(7);
  std::vector<std::string> seeds;
  for (const auto* group : {&vectors().valid, &vectors().lenient}) {
    for (const Vector& vector : *group) seeds.push_back(vector.label);
  }
  std::uniform_int_distribution<std::size_t> pick(0, seeds.size() - 1);
  std::uniform_int_distribution<int> byte(0, 255);
  const std::string interesting = "{}[]\":,-0123456789.eE\\u\xff\xc3 ";
  std::uniform_int_distribution<std::size_t> special(0, interesting.size() - 1);
  for (int i = 0; i < 5000; ++i) {
    std::string body = seeds[pick(rng)];
    std::uniform_int_distribution<std::size_t> position(0, body.size() - 1);
    for (int edits = 1 + i % 4; edits > 0; --edits) {
      body[position(rng)] = (i % 2 == 0) ? static_cast<char>(byte(rng)) : interesting[special(rng)];
    }
    decode_or_reject(with_header(body));
  }
}

// ---- capture and follow (issue 15) ------------------------------------------------------------

constexpr char kCommit[] = "0123456789abcdef0123456789abcdef01234567";

// The exact bodies the supervisor and the worker exchange: fixed here so both sides agree.
TEST(CaptureMessages, EncodeToTheDocumentedBodies) {
  EXPECT_EQ(encode_body(Freeze{}), R"({"kind":"Freeze"})");
  EXPECT_EQ(encode_body(Thaw{}), R"({"kind":"Thaw"})");
  EXPECT_EQ(encode_body(Thawed{}), R"({"kind":"Thawed"})");
  EXPECT_EQ(encode_body(Retarget{kCommit, true}),
            R"({"kind":"Retarget","commit":"0123456789abcdef0123456789abcdef01234567",)"
            R"("drop_overlay":true})");
  EXPECT_EQ(encode_body(Retarget{kCommit, false}),
            R"({"kind":"Retarget","commit":"0123456789abcdef0123456789abcdef01234567",)"
            R"("drop_overlay":false})");
  EXPECT_EQ(encode_body(Frozen{kCommit}),
            R"({"kind":"Frozen","commit":"0123456789abcdef0123456789abcdef01234567"})");
  EXPECT_EQ(encode_body(Retargeted{kCommit, {}}),
            R"({"kind":"Retargeted","commit":"0123456789abcdef0123456789abcdef01234567",)"
            R"("conflicts":[]})");
  EXPECT_EQ(encode_body(Retargeted{kCommit, {"a/b.txt", "c"}}),
            R"({"kind":"Retargeted","commit":"0123456789abcdef0123456789abcdef01234567",)"
            R"("conflicts":["a/b.txt","c"]})");
  EXPECT_EQ(encode_body(RetargetFailed{"no commit 01"}),
            R"({"kind":"RetargetFailed","message":"no commit 01"})");
}

TEST(CaptureMessages, DecodeReorderedAndWithUnknownFields) {
  EXPECT_EQ(decode_body(R"({"drop_overlay":false,"x":1,"commit":"c","kind":"Retarget"})"),
            Message(Retarget{"c", false}));
  EXPECT_EQ(decode_body(R"({"conflicts":["p"],"kind":"Retargeted","commit":"c"})"),
            Message(Retargeted{"c", {"p"}}));
  EXPECT_EQ(decode_body(R"( {"kind":"Freeze","n":null} )"), Message(Freeze{}));
}

TEST(CaptureMessages, MistypedOrMissingFieldsAreRejected) {
  EXPECT_TRUE(Contains(decode_error(R"({"kind":"Retarget","commit":"c"})"),
                       "missing field \"drop_overlay\""));
  EXPECT_TRUE(Contains(decode_error(R"({"kind":"Retarget","commit":"c","drop_overlay":1})"),
                       "expected a boolean"));
  EXPECT_TRUE(Contains(decode_error(R"({"kind":"Retarget","commit":7,"drop_overlay":true})"),
                       "expected a string"));
  EXPECT_TRUE(Contains(decode_error(R"({"kind":"Frozen"})"), "missing field \"commit\""));
  EXPECT_TRUE(Contains(decode_error(R"({"kind":"Retargeted","commit":"c","conflicts":"p"})"),
                       "expected an array of strings"));
  EXPECT_TRUE(Contains(decode_error(R"({"kind":"Retargeted","commit":"c","conflicts":["p",2]})"),
                       "expected only strings"));
  EXPECT_TRUE(Contains(decode_error(R"({"kind":"RetargetFailed"})"), "missing field \"message\""));
}

// The control socket's capture request and reply (CLI <-> supervisor).
TEST(CaptureMessages, CaptureAndCapturedEncodeDecodeAndRefuseMistypedFields) {
  EXPECT_EQ(encode_body(Capture{"msg", "A <a@b>"}),
            R"({"kind":"Capture","message":"msg","author":"A <a@b>"})");
  EXPECT_EQ(encode_body(Captured{kCommit, "refs/heads/main", false, {"e", "e/f"}}),
            R"({"kind":"Captured","commit":"0123456789abcdef0123456789abcdef01234567",)"
            R"("ref":"refs/heads/main","unchanged":false,"empty_dirs":["e","e/f"]})");
  for (const Message& message :
       {Message(Capture{}), Message(Capture{"line\nbreak", ""}),
        Message(Captured{kCommit, "refs/heddle/threads/t", true, {}})}) {
    EXPECT_EQ(decode_body(encode_body(message)), message);
  }
  EXPECT_TRUE(Contains(decode_error(R"({"kind":"Capture","message":"m"})"),
                       "missing field \"author\""));
  EXPECT_TRUE(Contains(decode_error(R"({"kind":"Captured","commit":"c","ref":"r","unchanged":1,)"
                                    R"("empty_dirs":[]})"),
                       "expected a boolean"));
  EXPECT_TRUE(Contains(decode_error(R"({"kind":"Captured","commit":"c","ref":"r",)"
                                    R"("unchanged":true,"empty_dirs":[1]})"),
                       "expected only strings"));
}

TEST(CaptureMessages, RoundTripOverSocketAndPipe) {
  const std::vector<Message> messages = {
      Freeze{},
      Thaw{},
      Thawed{},
      Retarget{kCommit, true},
      Retarget{"", false},
      Frozen{kCommit},
      Retargeted{kCommit, {}},
      Retargeted{kCommit, {"caf\xc3\xa9/x", "line\nbreak", ""}},
      RetargetFailed{std::string(kControlAndSeparators, sizeof kControlAndSeparators - 1)},
  };
  for (const Message& message : messages) {
    SCOPED_TRACE(encode_body(message));
    EXPECT_EQ(decode_frame(encode_frame(message)), message);
    EXPECT_EQ(through_stream(message, socket_pair()), message);
    EXPECT_EQ(through_stream(message, pipe_pair()), message);
  }
  EXPECT_FALSE(Message(Retarget{kCommit, true}) == Message(Retarget{kCommit, false}));
  EXPECT_FALSE(Message(Retargeted{kCommit, {"a"}}) == Message(Retargeted{kCommit, {"b"}}));
}

TEST(CaptureMessages, InvalidUtf8InAConflictPathIsRefusedOnEncode) {
  const auto error = error_from([] { (void)encode_body(Retargeted{kCommit, {"bad\xff"}}); });
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code(), EINVAL);
}

}  // namespace
}  // namespace heddle::ipc
