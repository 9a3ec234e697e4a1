// One lambda per alternative, for std::visit.
#pragma once

namespace heddle {

template <typename... F>
struct Overloaded : F... {
  using F::operator()...;
};
// Needed by clang 14 (the fuzz preset), which lacks C++20's deduction for aggregates.
template <typename... F>
Overloaded(F...) -> Overloaded<F...>;

}  // namespace heddle
