// SHA-256 content hashes (lower-case hex), used to address artifacts and
// identify models. Thread-safe.
#ifndef MIXQ_UTIL_SHA256_H_
#define MIXQ_UTIL_SHA256_H_

#include <memory>
#include <string>

#include "absl/strings/string_view.h"

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX

namespace mixq {

// Returns the 64-character lower-case hex SHA-256 of `data`.
std::string Sha256Hex(absl::string_view data);

// SHA-256 of data given in pieces (e.g. a file read in chunks): Update with
// each piece in order, then HexDigest, once. Equal to Sha256Hex of the
// concatenation. Not thread-safe.
class Sha256Hasher {
 public:
  Sha256Hasher();
  ~Sha256Hasher();
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;

  void Update(absl::string_view data);
  // The 64-character lower-case hex digest; the hasher is spent after it.
  std::string HexDigest();

 private:
  struct Free {
    void operator()(evp_md_ctx_st* context) const;
  };
  std::unique_ptr<evp_md_ctx_st, Free> context_;
};

// Whether `text` is a SHA-256 as Sha256Hex writes it: 64 lower-case hex
// digits.
bool IsSha256Hex(absl::string_view text);

}  // namespace mixq

#endif  // MIXQ_UTIL_SHA256_H_
