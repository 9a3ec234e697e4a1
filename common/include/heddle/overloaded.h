// One lambda per alternative, for std::visit.
#pragma once

namespace heddle {

template <typename... F>
struct Overloaded : F... {
  using F::operator()...;
};

}  // namespace heddle
