// Writing NumPy .npz archives (reading them is engine/npz.h): a zip of
// stored (uncompressed) members "<key>.npy", as np.savez writes them. The
// client packs one .npy per model input into one .npz keyed by input name.
#ifndef MIXQ_ENGINE_NPZ_WRITER_H_
#define MIXQ_ENGINE_NPZ_WRITER_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace mixq::engine {

// An array of the archive: its key (the member is "<key>.npy") and the bytes
// of its .npy file (written as given, not parsed).
struct NpzMember {
  std::string key;
  std::string npy;
};

// The zip archive of `members`, in order, stored with their CRC-32. np.load
// and NpzKeys/ReadNpzArray read it back. INVALID_ARGUMENT for an empty or
// repeated key, or one holding '/' or '\\'; RESOURCE_EXHAUSTED when a member
// or the archive would pass the 4 GiB a zip without ZIP64 records can
// describe.
absl::StatusOr<std::string> EncodeNpz(const std::vector<NpzMember>& members);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_NPZ_WRITER_H_
