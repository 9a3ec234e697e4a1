// Text from elsewhere (a worker's messages and output, a repository's names, paths) made safe
// to print on a terminal or write as one log line. Every log line and every line of the CLI's
// text output goes through escape_text(); --json output is JSON's own escaping.
//
// Escaped, so that no byte can move the cursor, start a terminal escape sequence (colours,
// titles, OSC 52 clipboard writes), end a line (a forged log or journal "<0>" line) or
// reorder what is shown:
//   \t \n \r                          as themselves: \t, \n, \r
//   other C0 controls, ESC, DEL       as \xHH (ESC is \x1b)
//   bytes that are not UTF-8          as \xHH, one per byte (a lone 0x9b is \x9b)
//   C1 controls U+0080..U+009F        as \u{80}..\u{9f}
//   bidi controls and line separators as \u{..}: U+061C, U+200E, U+200F, U+2028..U+202E,
//                                     U+2066..U+2069
// Everything else, backslashes included, is kept as is: the result is for reading, not for
// parsing back (--json gives the exact text).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace heddle {
namespace display_text_detail {

// The length of the well-formed UTF-8 sequence at the start of `text` (which starts with a
// byte >= 0x80) and its code point, or 0 if it is not one (overlong, surrogate, > U+10FFFF,
// cut short).
inline std::size_t decode_utf8(std::string_view text, char32_t& code_point) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(0);
  std::size_t length = 0;
  char32_t min = 0;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
    min = 0x80;
    code_point = lead & 0x1f;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    min = 0x800;
    code_point = lead & 0x0f;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    min = 0x10000;
    code_point = lead & 0x07;
  } else {
    return 0;
  }
  if (text.size() < length) return 0;
  for (std::size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xc0) != 0x80) return 0;
    code_point = (code_point << 6) | (byte(i) & 0x3f);
  }
  const bool surrogate = code_point >= 0xd800 && code_point <= 0xdfff;
  if (code_point < min || code_point > 0x10ffff || surrogate) return 0;
  return length;
}

inline bool is_hidden_format(char32_t c) {
  return (c >= 0x80 && c <= 0x9f) || c == 0x061c || c == 0x200e || c == 0x200f ||
         (c >= 0x2028 && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

inline bool needs_care(unsigned char b) { return b < 0x20 || b >= 0x7f; }

}  // namespace display_text_detail

// Appends `text` to `out`, escaped as described above.
inline void append_escaped(std::string& out, std::string_view text) {
  namespace detail = display_text_detail;
  constexpr char kHex[] = "0123456789abcdef";
  std::size_t i = 0;
  while (i < text.size()) {
    // Plain ASCII runs are copied whole: most text is nothing else.
    std::size_t plain = i;
    while (plain < text.size() && !detail::needs_care(static_cast<unsigned char>(text[plain]))) {
      ++plain;
    }
    out.append(text, i, plain - i);
    i = plain;
    if (i == text.size()) break;
    const auto b = static_cast<unsigned char>(text[i]);
    if (b < 0x80) {
      if (b == '\t') {
        out += "\\t";
      } else if (b == '\n') {
        out += "\\n";
      } else if (b == '\r') {
        out += "\\r";
      } else {
        out += "\\x";
        out += kHex[b >> 4];
        out += kHex[b & 0xf];
      }
      ++i;
      continue;
    }
    char32_t c = 0;
    const std::size_t length = detail::decode_utf8(text.substr(i), c);
    if (length == 0) {
      out += "\\x";
      out += kHex[b >> 4];
      out += kHex[b & 0xf];
      ++i;
    } else if (detail::is_hidden_format(c)) {
      out += "\\u{";
      bool digits = false;
      for (int shift = 20; shift >= 0; shift -= 4) {
        const auto nibble = static_cast<unsigned>((c >> shift) & 0xf);
        if (nibble == 0 && !digits && shift > 0) continue;
        digits = true;
        out += kHex[nibble];
      }
      out += '}';
      i += length;
    } else {
      out.append(text, i, length);
      i += length;
    }
  }
}

[[nodiscard]] inline std::string escape_text(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  append_escaped(out, text);
  return out;
}

}  // namespace heddle
