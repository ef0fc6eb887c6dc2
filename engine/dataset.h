// Readers for labeled data: NumPy .npy and .npz, and MNIST-style IDX (raw or
// gzip). Everything works on in-memory bytes (the server receives files
// inline); `name` is only used in error messages. User data never aborts:
// every problem is INVALID_ARGUMENT naming the file (and, in a .npz, the
// array) and what is wrong; only data too large to hold is
// RESOURCE_EXHAUSTED.
#ifndef MIXQ_ENGINE_DATASET_H_
#define MIXQ_ENGINE_DATASET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/tensor.h"

namespace mixq::engine {

// The largest integer magnitude float32 holds exactly (and every integer
// below it): 2^24. Integer inputs are carried as floats up to it.
inline constexpr int64_t kMaxExactFloatInteger = int64_t{1} << 24;

// Decodes model inputs. Accepts:
//  - .npy (format versions 1-3, little-endian, C order) of float32, float64,
//    uint8 (scaled to [0, 1]), or int64/int32 (token ids, masks: carried as
//    exact floats, so a |value| above 2^24 is an INVALID_ARGUMENT naming its
//    index); shape [N, ...]; gzip-compressed too;
//  - .npz (np.savez or np.savez_compressed) holding such an array: the one
//    named `npz_key` if it is not empty; otherwise the archive's only array,
//    or else the one array named "x", "inputs", "images" or "data"
//    (several or none of those is an error listing the archive's keys);
//  - IDX (magic 0x00000803 for images; raw or gzip-compressed) of uint8,
//    scaled to [0, 1]; shape [N, rows, cols].
// The format is detected from the content (zip, gzip, NPY or IDX magic); a
// non-empty `npz_key` for a file that is not a .npz is an error. NaN/Inf
// values, big-endian or object dtypes, Fortran order, truncated or
// oversized payloads are errors. RESOURCE_EXHAUSTED for an array of more
// than 2^28 values or 1 GiB (as many values as one activation of a model per
// sample may hold, engine/model.h), and for a .npz member of more than 1 GiB
// uncompressed. A gzip stream is inflated first only as far as its NPY or IDX
// header (64 KiB at most), and then only when the array it declares is within
// these limits, and never past the size it declares: a small upload cannot
// make the decoder inflate more than the data it declares.
absl::StatusOr<Tensor> DecodeInputs(absl::string_view bytes,
                                    absl::string_view name,
                                    absl::string_view npz_key = {});

// Decodes integer class labels: .npy of int64/int32/uint8/int8/int16/uint16
// (1-D, or [N, 1]; gzip-compressed too), the same in a .npz (the array
// `npz_key`, or the only one, or else the one named "y", "labels" or
// "targets"; see DecodeInputs), or IDX (magic 0x00000801; raw or gzip).
// Negative labels are an error; CheckLabels checks the upper bound.
absl::StatusOr<std::vector<int64_t>> DecodeLabels(
    absl::string_view bytes, absl::string_view name,
    absl::string_view npz_key = {});

// INVALID_ARGUMENT unless every label is a class of a model with
// `num_classes` classes, i.e. in [0, num_classes); the message names the
// first offender: "<name>: label 12 at index 3 is outside the model's 10
// classes [0, 10)". A `num_classes` below 1 (a model without a fixed class
// count) is INVALID_ARGUMENT too.
absl::Status CheckLabels(absl::Span<const int64_t> labels, int64_t num_classes,
                         absl::string_view name);

// x = (x - mean) / stddev element-wise. INVALID_ARGUMENT if stddev <= 0.
absl::Status Normalize(float mean, float stddev, Tensor* inputs);

// Reshapes `inputs` ([N, ...]) to [N, model_input_shape[1:]...] when the
// per-sample element counts match (e.g. IDX [N,28,28] to [N,1,28,28] or
// [N,784]); INVALID_ARGUMENT naming both shapes otherwise.
absl::Status ConformToModelInput(const Shape& model_input_shape,
                                 Tensor* inputs);

// Reads the whole gzip stream `bytes` (used by the decoders; exposed for
// tests). INVALID_ARGUMENT on corrupt/truncated data; RESOURCE_EXHAUSTED past
// `max_output_bytes`.
absl::StatusOr<std::string> Gunzip(absl::string_view bytes,
                                   size_t max_output_bytes);

// The first `prefix_bytes` of the gzip stream `bytes` (all of it when
// shorter), inflating no further. INVALID_ARGUMENT on corrupt data before
// that point, or a stream that ends truncated before it.
absl::StatusOr<std::string> GunzipPrefix(absl::string_view bytes,
                                         size_t prefix_bytes);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_DATASET_H_
