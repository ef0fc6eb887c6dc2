// A std::mt19937_64's state as text (the standard's operator<< / >> form)
// and back: how checkpoints keep the search's random generators, so a
// restored generator continues the same sequence.
#ifndef MIXQ_SEARCH_RNG_TEXT_H_
#define MIXQ_SEARCH_RNG_TEXT_H_

#include <random>
#include <sstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace mixq::search {

inline std::string RngToText(const std::mt19937_64& rng) {
  std::ostringstream text;
  text << rng;
  return text.str();
}

// INVALID_ARGUMENT "<what>: unreadable" for text RngToText did not write.
inline absl::StatusOr<std::mt19937_64> RngFromText(absl::string_view text,
                                                   absl::string_view what) {
  std::mt19937_64 rng;
  std::istringstream in{std::string(text)};
  in >> rng;
  if (in.fail()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": unreadable"));
  }
  return rng;
}

}  // namespace mixq::search

#endif  // MIXQ_SEARCH_RNG_TEXT_H_
