// How the store marks a full disk, so that callers decide on a code-like
// mark rather than on the text of SQLite's message: a write that fails for
// lack of space (SQLITE_FULL, or an I/O error whose cause is ENOSPC) is
// RESOURCE_EXHAUSTED and carries the kDiskFullPayloadUrl payload. Such a
// write changed nothing (its transaction rolled back) and may succeed once
// space returns.
#ifndef MIXQ_STORAGE_ERRORS_H_
#define MIXQ_STORAGE_ERRORS_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace mixq::storage {

// The payload type URL of a disk-full error (its value is empty).
inline constexpr absl::string_view kDiskFullPayloadUrl =
    "type.mixq.dev/mixq.storage.DiskFull";

// RESOURCE_EXHAUSTED with `message` and the disk-full payload.
absl::Status DiskFullError(absl::string_view message);

// True for an error made by DiskFullError (also after Annotate, which keeps
// payloads).
bool IsDiskFull(const absl::Status& status);

}  // namespace mixq::storage

#endif  // MIXQ_STORAGE_ERRORS_H_
