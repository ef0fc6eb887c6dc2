#include "server/auth.h"

#include <cstddef>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "util/bearer_token.h"
#include "util/file.h"
#include "util/sha256.h"
#include "util/status_macros.h"

namespace mixq::server {
namespace {

// A token file is a line, not a document.
constexpr size_t kMaxTokenFileBytes = 4096;

// Compares two equally long strings without an early exit, so the time taken
// does not tell how many leading characters matched.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char difference = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    difference |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return difference == 0;
}

}  // namespace

absl::StatusOr<TokenAuthenticator> TokenAuthenticator::FromToken(
    absl::string_view token) {
  MIXQ_ASSIGN_OR_RETURN(const std::string parsed, ParseBearerToken(token));
  return TokenAuthenticator(Sha256Hex(parsed));
}

absl::StatusOr<TokenAuthenticator> TokenAuthenticator::FromFile(
    const std::string& path) {
  MIXQ_ASSIGN_OR_RETURN(const std::string content,
                        ReadFile(path, kMaxTokenFileBytes));
  absl::StatusOr<TokenAuthenticator> authenticator = FromToken(content);
  if (!authenticator.ok()) return Annotate(authenticator.status(), path);
  return authenticator;
}

grpc::Status TokenAuthenticator::Check(
    const grpc::ServerContextBase& context) const {
  const auto& metadata = context.client_metadata();
  const auto entry = metadata.find(kAuthorizationKey);
  if (entry == metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing bearer token (send `authorization: Bearer "
                        "<token>`; mixq: --token-file or MIXQ_TOKEN)");
  }
  const absl::string_view value(entry->second.data(), entry->second.size());
  if (!absl::StartsWith(value, kBearerPrefix) ||
      !ConstantTimeEquals(Sha256Hex(value.substr(sizeof(kBearerPrefix) - 1)),
                          digest_)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "invalid bearer token");
  }
  return grpc::Status::OK;
}

}  // namespace mixq::server
