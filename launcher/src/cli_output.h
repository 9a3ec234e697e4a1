// What the CLI prints. Text goes through escape_text() (heddle/display_text.h): worker
// replies, repository names and paths cannot drive the terminal or break a line. JSON is
// written ASCII-only, so control characters, DEL, C1 and every other non-ASCII character are
// \u escapes (the parsed value is unchanged), and bytes that are not UTF-8 become U+FFFD
// instead of making dump() throw.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "heddle/display_text.h"

namespace heddle::launcher {

template <class Json>
[[nodiscard]] std::string json_output(const Json& value) {
  return value.dump(-1, ' ', true, Json::error_handler_t::replace);
}

}  // namespace heddle::launcher
