// Whole-file reads and writes with Status errors naming the path.
#ifndef MIXQ_UTIL_FILE_H_
#define MIXQ_UTIL_FILE_H_

#include <string>

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

// Writes `data` to `path` (truncating), through a temporary file renamed into
// place so readers never see a partial file.
absl::Status WriteFile(const std::string& path, absl::string_view data);

}  // namespace mixq

#endif  // MIXQ_UTIL_FILE_H_
