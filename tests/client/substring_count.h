// Test helper: how often a string occurs in a rendered page or chart.
#ifndef MIXQ_TESTS_CLIENT_SUBSTRING_COUNT_H_
#define MIXQ_TESTS_CLIENT_SUBSTRING_COUNT_H_

#include <string>

namespace mixq::client {

// The number of non-overlapping occurrences of `needle` (not empty) in
// `text`.
inline int CountSubstrings(const std::string& text, const std::string& needle) {
  int count = 0;
  for (size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + needle.size())) {
    ++count;
  }
  return count;
}

}  // namespace mixq::client

#endif  // MIXQ_TESTS_CLIENT_SUBSTRING_COUNT_H_
