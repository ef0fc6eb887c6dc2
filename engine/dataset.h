// Readers for labeled data: NumPy .npy and MNIST-style IDX (raw or gzip).
// Everything works on in-memory bytes (the server receives files inline);
// `name` is only used in error messages. User data never aborts: every
// problem is INVALID_ARGUMENT naming the file and what is wrong.
#ifndef MIXQ_ENGINE_DATASET_H_
#define MIXQ_ENGINE_DATASET_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/tensor.h"

namespace mixq::engine {

// Decodes model inputs. Accepts:
//  - .npy (format versions 1-3, C order) of float32, float64 or uint8
//    (uint8 scaled to [0, 1]); shape [N, ...];
//  - IDX (magic 0x00000803 for images; raw or gzip-compressed) of uint8,
//    scaled to [0, 1]; shape [N, rows, cols].
// The format is detected from the content (gzip, NPY magic, IDX magic).
// NaN/Inf values are an error.
absl::StatusOr<Tensor> DecodeInputs(absl::string_view bytes, absl::string_view name);

// Decodes integer class labels: .npy of int64/int32/uint8/int8/int16/uint16
// (1-D, or [N, 1]), or IDX (magic 0x00000801; raw or gzip). Negative labels
// are an error.
absl::StatusOr<std::vector<int64_t>> DecodeLabels(absl::string_view bytes, absl::string_view name);

// x = (x - mean) / stddev element-wise. INVALID_ARGUMENT if stddev <= 0.
absl::Status Normalize(float mean, float stddev, Tensor* inputs);

// Reshapes `inputs` ([N, ...]) to [N, model_input_shape[1:]...] when the
// per-sample element counts match (e.g. IDX [N,28,28] to [N,1,28,28] or
// [N,784]); INVALID_ARGUMENT naming both shapes otherwise.
absl::Status ConformToModelInput(const Shape& model_input_shape, Tensor* inputs);

// Reads the whole gzip stream `bytes` (used by the decoders; exposed for
// tests). INVALID_ARGUMENT on corrupt/truncated data; RESOURCE_EXHAUSTED past
// `max_output_bytes`.
absl::StatusOr<std::string> Gunzip(absl::string_view bytes, size_t max_output_bytes);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_DATASET_H_
