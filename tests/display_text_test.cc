// escape_text(): what every log line and every line of the CLI's text output goes through.
#include <gtest/gtest.h>

#include <string>

#include "heddle/display_text.h"

namespace heddle {
namespace {

using namespace std::string_literals;

TEST(DisplayText, PlainTextAndUtf8AreKept) {
  for (const std::string& text :
       {""s, "plain /tmp/a b.txt"s, "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x90\x99"s,
        "back\\slash \\x1b \"quoted\""s, "\xc2\xa0nbsp \xc2\xa9"s}) {
    EXPECT_EQ(escape_text(text), text);
  }
}

TEST(DisplayText, ControlCharactersBecomeVisible) {
  EXPECT_EQ(escape_text("a\tb\nc\rd"), "a\\tb\\nc\\rd");
  EXPECT_EQ(escape_text("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
  EXPECT_EQ(escape_text("osc\x1b]52;c;aGk=\x07"), "osc\\x1b]52;c;aGk=\\x07");
  EXPECT_EQ(escape_text("nul\0del\x7f"s), "nul\\x00del\\x7f");
  EXPECT_EQ(escape_text("\x01\x1f"), "\\x01\\x1f");
  // A forged journal line stays on the line it came with.
  EXPECT_EQ(escape_text("ok\n<0>emergency"), "ok\\n<0>emergency");
}

TEST(DisplayText, C1AndBidiControlsAreShownAsCodePoints) {
  EXPECT_EQ(escape_text("\xc2\x80"), "\\u{80}");
  EXPECT_EQ(escape_text("\xc2\x9b" "2J"), "\\u{9b}2J");  // CSI
  EXPECT_EQ(escape_text("\xc2\x9f"), "\\u{9f}");
  EXPECT_EQ(escape_text("\xe2\x80\xae" "txt.exe"), "\\u{202e}txt.exe");  // RLO
  EXPECT_EQ(escape_text("\xe2\x81\xa6\xe2\x81\xa9"), "\\u{2066}\\u{2069}");
  EXPECT_EQ(escape_text("\xe2\x80\xa8\xe2\x80\xa9"), "\\u{2028}\\u{2029}");
  EXPECT_EQ(escape_text("\xd8\x9c\xe2\x80\x8e\xe2\x80\x8f"), "\\u{61c}\\u{200e}\\u{200f}");
  // Neighbours are ordinary characters.
  EXPECT_EQ(escape_text("\xc2\xa0\xe2\x80\xaf\xe2\x81\xaa"), "\xc2\xa0\xe2\x80\xaf\xe2\x81\xaa");
}

TEST(DisplayText, BytesThatAreNotUtf8AreShownOneByOne) {
  EXPECT_EQ(escape_text("\x9b" "31m"), "\\x9b31m");            // a lone continuation byte
  EXPECT_EQ(escape_text("\xff\xfe"), "\\xff\\xfe");
  EXPECT_EQ(escape_text("\xc3"), "\\xc3");                     // cut short at the end
  EXPECT_EQ(escape_text("\xc3(x"), "\\xc3(x");                 // bad continuation
  EXPECT_EQ(escape_text("\xc0\xaf"), "\\xc0\\xaf");            // overlong '/'
  EXPECT_EQ(escape_text("\xe0\x80\xaf"), "\\xe0\\x80\\xaf");   // overlong, 3 bytes
  EXPECT_EQ(escape_text("\xed\xa0\x80"), "\\xed\\xa0\\x80");   // a UTF-16 surrogate
  EXPECT_EQ(escape_text("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // above U+10FFFF
  EXPECT_EQ(escape_text("\xf0\x9f\x90"), "\\xf0\\x9f\\x90");
  EXPECT_EQ(escape_text("a\xe6\x97" "b\xe6\x97\xa5"), "a\\xe6\\x97b\xe6\x97\xa5");
}

// Whatever goes in, what comes out is printable ASCII or valid UTF-8 free of controls, and
// escaping it again changes nothing (so text escaped early, as a MountError's, is safe to
// escape again on output).
TEST(DisplayText, EveryByteValueGivesSafeIdempotentOutput) {
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  all += "\xc2\x85\xe2\x80\xae\xf0\x9f\x90\x99";
  const std::string out = escape_text(all);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const auto b = static_cast<unsigned char>(out[i]);
    EXPECT_TRUE(b >= 0x20 && b != 0x7f) << "byte " << int(b) << " at " << i;
  }
  EXPECT_EQ(out.find("\xc2\x85"), std::string::npos);
  EXPECT_EQ(out.find("\xe2\x80\xae"), std::string::npos);
  EXPECT_NE(out.find("\xf0\x9f\x90\x99"), std::string::npos);
  EXPECT_EQ(escape_text(out), out);
}

}  // namespace
}  // namespace heddle
