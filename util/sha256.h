// SHA-256 content hashes (lower-case hex), used to address artifacts and
// identify models. Thread-safe.
#ifndef MIXQ_UTIL_SHA256_H_
#define MIXQ_UTIL_SHA256_H_

#include <string>

#include "absl/strings/string_view.h"

namespace mixq {

// Returns the 64-character lower-case hex SHA-256 of `data`.
std::string Sha256Hex(absl::string_view data);

// Whether `text` is a SHA-256 as Sha256Hex writes it: 64 lower-case hex
// digits.
bool IsSha256Hex(absl::string_view text);

}  // namespace mixq

#endif  // MIXQ_UTIL_SHA256_H_
