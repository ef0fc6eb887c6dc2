// The bearer token of mixq's RPCs, as mixq-server (--auth-token-file) and
// the mixq client (--token-file, MIXQ_TOKEN) both accept it.
#ifndef MIXQ_UTIL_BEARER_TOKEN_H_
#define MIXQ_UTIL_BEARER_TOKEN_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mixq {

// `text` (a token file's content, say) without surrounding whitespace, if
// that is a usable token: non-empty printable ASCII without spaces, so it
// fits in one HTTP/2 header value. INVALID_ARGUMENT otherwise: "the token
// is empty", "the token may only contain printable ASCII without spaces".
absl::StatusOr<std::string> ParseBearerToken(absl::string_view text);

}  // namespace mixq

#endif  // MIXQ_UTIL_BEARER_TOKEN_H_
