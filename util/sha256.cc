#include "util/sha256.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "absl/strings/escaping.h"
#include "util/check.h"

namespace mixq {
namespace {

std::string Hex(const unsigned char* digest, size_t size) {
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), size));
}

}  // namespace

std::string Sha256Hex(absl::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(),
         digest);
  return Hex(digest, sizeof(digest));
}

void Sha256Hasher::Free::operator()(evp_md_ctx_st* context) const {
  EVP_MD_CTX_free(context);
}

// OpenSSL fails these only on allocation failure or misuse: programming
// errors, not data.
Sha256Hasher::Sha256Hasher() : context_(EVP_MD_CTX_new()) {
  MIXQ_CHECK(context_ != nullptr);
  MIXQ_CHECK(EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr) == 1);
}

Sha256Hasher::~Sha256Hasher() = default;

void Sha256Hasher::Update(absl::string_view data) {
  MIXQ_CHECK(EVP_DigestUpdate(context_.get(), data.data(), data.size()) == 1);
}

std::string Sha256Hasher::HexDigest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  MIXQ_CHECK(EVP_DigestFinal_ex(context_.get(), digest, &size) == 1);
  return Hex(digest, size);
}

bool IsSha256Hex(absl::string_view text) {
  return text.size() == 2 * SHA256_DIGEST_LENGTH &&
         text.find_first_not_of("0123456789abcdef") == absl::string_view::npos;
}

}  // namespace mixq
