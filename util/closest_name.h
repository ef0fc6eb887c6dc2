// "Did you mean …?": the known name closest to a mistyped one, for usage
// errors. Thread-safe (pure functions).
#ifndef MIXQ_UTIL_CLOSEST_NAME_H_
#define MIXQ_UTIL_CLOSEST_NAME_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace mixq::util {

// The number of single-character insertions, deletions, substitutions and
// swaps of two adjacent characters that turn `a` into `b` (optimal string
// alignment distance). O(|a|·|b|) time.
int EditDistance(absl::string_view a, absl::string_view b);

// The name of `names` nearest `word` by EditDistance (the first on ties) if
// it is near enough to be a typo: at most 1 edit for words of up to 4
// characters, 2 up to 8, else 3; nullopt otherwise (or for no names).
std::optional<std::string> ClosestName(absl::string_view word,
                                       const std::vector<std::string>& names);

}  // namespace mixq::util

#endif  // MIXQ_UTIL_CLOSEST_NAME_H_
