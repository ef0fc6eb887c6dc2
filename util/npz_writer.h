// Writing NumPy .npz archives (reading them is engine/npz.h): a zip of
// stored (uncompressed) members "<key>.npy", as np.savez writes them. The
// client and mixq-run pack one .npy per model input (`--inputs NAME=PATH`,
// repeated) into one .npz keyed by input name, which the server and the
// engine read (engine/model_inputs.h).
#ifndef MIXQ_UTIL_NPZ_WRITER_H_
#define MIXQ_UTIL_NPZ_WRITER_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mixq {

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

// A `--inputs NAME=PATH` value: a graph input's name and its file.
struct NamedFile {
  std::string name;
  std::string path;
};

// `value` as NAME=PATH when it has an '=' after a non-empty NAME holding no
// '/' (a path, not an input name: write "./a=b.npy" for a file so named);
// nullopt for a plain path.
std::optional<NamedFile> ParseNamedFile(absl::string_view value);

// Reads each file (.npy, written into the archive as is) and packs them into
// one .npz keyed by name. Errors are prefixed with `flag`: the files' read
// errors (naming the path), and EncodeNpz's (a name given twice).
absl::StatusOr<std::string> PackNamedFiles(const std::vector<NamedFile>& files,
                                           absl::string_view flag);

}  // namespace mixq

#endif  // MIXQ_UTIL_NPZ_WRITER_H_
