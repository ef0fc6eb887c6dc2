// File reads (whole or in chunks) and writes with Status errors naming the
// path.
#ifndef MIXQ_UTIL_FILE_H_
#define MIXQ_UTIL_FILE_H_

#include <cstdint>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mixq {

// Reads the file at `path`. NOT_FOUND if it does not exist, INVALID_ARGUMENT
// if it is not a regular file, RESOURCE_EXHAUSTED if larger than `max_bytes`.
absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     size_t max_bytes = size_t{1} << 32);

// ReadFile for a file a command-line `flag` names (a token, certificate or
// key): the same errors, their messages prefixed with the flag.
absl::StatusOr<std::string> ReadFlagFile(absl::string_view flag,
                                         const std::string& path,
                                         size_t max_bytes);

// Reads the regular file at `path` in pieces of at most `chunk_bytes` (> 0),
// handing each to `consume` in order; `consume` returns false to stop early.
// Memory is one chunk, whatever the file's size. The errors of ReadFile
// (without its size limit); DATA_LOSS if the file is shorter than it was
// when opened.
absl::Status ReadFileChunks(const std::string& path, size_t chunk_bytes,
                            absl::FunctionRef<bool(absl::string_view)> consume);

// A file's SHA-256 (Sha256Hex of its bytes) and size, read in chunks.
struct FileDigest {
  std::string sha256;
  int64_t size_bytes = 0;
};
absl::StatusOr<FileDigest> DigestFile(const std::string& path);

// Writes `data` to `path` (truncating), through a temporary file renamed into
// place so readers never see a partial file.
absl::Status WriteFile(const std::string& path, absl::string_view data);

}  // namespace mixq

#endif  // MIXQ_UTIL_FILE_H_
