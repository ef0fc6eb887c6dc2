// Reading NumPy .npz archives: zip files of .npy members, as np.savez
// (stored) and np.savez_compressed (deflated) write them. Archives are read
// from memory (the server receives files inline) with libzip; nothing touches
// the file system. Decoding a member's .npy bytes is DecodeInputs /
// DecodeLabels in engine/dataset.h, which also accept .npz directly.
//
// Every function is thread-compatible and stateless: each call opens the
// archive afresh (parsing a zip directory is cheap next to inflating data).
// `name` is only used in error messages, which all start with it.
#ifndef MIXQ_ENGINE_NPZ_H_
#define MIXQ_ENGINE_NPZ_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mixq::engine {

// Whether `bytes` starts like a zip archive: a local file header
// ("PK\x03\x04") or, for an archive with no members (np.savez()), the end of
// central directory record ("PK\x05\x06"). Content sniffing only; the
// functions below validate the archive.
bool LooksLikeZip(absl::string_view bytes);

// The keys of the arrays in the .npz archive `bytes`, in archive order: each
// member's name without its ".npy" suffix ("x.npy" -> "x"), as np.load names
// them. Validates the whole directory. Errors, all INVALID_ARGUMENT naming
// the file (and the member where there is one):
//  - not a zip archive, truncated or inconsistent (local and central headers
//    disagree), multi-disk;
//  - a member that is a directory, whose name does not end in ".npy", or
//    whose key repeats another's;
//  - an encrypted member, or one compressed other than stored or deflated.
// An archive with no member is valid and gives an empty list.
// RESOURCE_EXHAUSTED only if libzip runs out of memory.
absl::StatusOr<std::vector<std::string>> NpzKeys(absl::string_view bytes,
                                                 absl::string_view name);

// The bytes of the member `key` + ".npy" of the .npz archive `bytes`, which
// should be a whole .npy file (not checked here: DecodeInputs/DecodeLabels
// parse it). The archive is validated as NpzKeys does. Blocks while inflating;
// memory use is bounded by `max_bytes` whatever the archive claims.
// Errors:
//  - RESOURCE_EXHAUSTED when the member's uncompressed size exceeds
//    `max_bytes` (a zip bomb, or simply too much data for one request);
//  - INVALID_ARGUMENT when there is no such key (the message lists the
//    keys), for everything NpzKeys rejects, and for member data that is
//    corrupt, truncated, fails its CRC or inflates to another size than the
//    directory declares.
absl::StatusOr<std::string> ReadNpzArray(absl::string_view bytes,
                                         absl::string_view name,
                                         absl::string_view key,
                                         size_t max_bytes);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_NPZ_H_
