#include "util/bearer_token.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"

namespace mixq {

absl::StatusOr<std::string> ParseBearerToken(absl::string_view text) {
  const absl::string_view token = absl::StripAsciiWhitespace(text);
  if (token.empty()) return absl::InvalidArgumentError("the token is empty");
  const bool printable = std::all_of(token.begin(), token.end(), [](char c) {
    return absl::ascii_isgraph(static_cast<unsigned char>(c));
  });
  if (!printable) {
    return absl::InvalidArgumentError(
        "the token may only contain printable ASCII without spaces");
  }
  return std::string(token);
}

}  // namespace mixq
