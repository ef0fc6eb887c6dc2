// Bearer-token authentication of mixq RPCs.
//
// gRPC 1.51 cannot do this for us on insecure ports (SetAuthMetadataProcessor
// on insecure credentials aborts the process, and server interceptors cannot
// reject a call), so every MixqService handler calls Check first. Health
// checking and reflection are separate services and stay open.
//
// The client sends `authorization: Bearer <token>` as call metadata. The
// authenticator keeps only the SHA-256 of the expected token and compares
// digests in constant time, so neither the token's content nor its length
// leaks through timing. Thread-safe (immutable after construction).
#ifndef MIXQ_SERVER_AUTH_H_
#define MIXQ_SERVER_AUTH_H_

#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/server_context.h"

namespace mixq::server {

// The metadata key (lower case, as gRPC delivers it) and its value's prefix.
inline constexpr char kAuthorizationKey[] = "authorization";
inline constexpr char kBearerPrefix[] = "Bearer ";

class TokenAuthenticator {
 public:
  // Reads the token from the file at `path`; leading and trailing whitespace
  // (e.g. the final newline) is not part of it. Errors name the file:
  // NOT_FOUND / INVALID_ARGUMENT from reading it, INVALID_ARGUMENT if the
  // token is empty or contains whitespace or control characters (it must fit
  // in one HTTP/2 header value).
  static absl::StatusOr<TokenAuthenticator> FromFile(const std::string& path);
  // The same for a token given directly (util/bearer_token.h's rules).
  static absl::StatusOr<TokenAuthenticator> FromToken(absl::string_view token);

  // OK if `context`'s client metadata carries `authorization: Bearer <the
  // token>`; otherwise UNAUTHENTICATED, "missing bearer token" or "invalid
  // bearer token" (never echoing what was sent). Does not block.
  grpc::Status Check(const grpc::ServerContextBase& context) const;

 private:
  explicit TokenAuthenticator(std::string digest)
      : digest_(std::move(digest)) {}

  std::string digest_;  // Sha256Hex of the expected token
};

}  // namespace mixq::server

#endif  // MIXQ_SERVER_AUTH_H_
