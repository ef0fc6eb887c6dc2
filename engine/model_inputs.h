// Data files for a model's graph inputs: decoding them into the one packed
// tensor Model::Forward takes (engine/model.h, Model::inputs()), for models
// with one input (images) or several (token ids and an attention mask).
#ifndef MIXQ_ENGINE_MODEL_INPUTS_H_
#define MIXQ_ENGINE_MODEL_INPUTS_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/model.h"
#include "engine/tensor.h"

namespace mixq::engine {

// Decodes `bytes` (a data file; `name` only names it in messages) into the
// packed input of a model whose graph inputs are `inputs` (Model::inputs()):
//  - one graph input: any file DecodeInputs reads; from a .npz holding an
//    array keyed by the input's name, that array (else DecodeInputs picks);
//    conformed to the input's shape (ConformToModelInput);
//  - several: a .npz with one array per graph input, keyed by its name, all
//    with the same number of samples N, each with the input's values per
//    sample; packed into [N, sum of sample sizes] in graph-input order.
// Arrays for integer inputs (int64/int32) must hold integers within +-2^24
// (int64/int32 arrays, or floats with integral values; uint8 would be scaled
// to [0, 1], so it is refused). Errors are INVALID_ARGUMENT naming the file
// and, in a .npz, the array: not a .npz for several inputs, a missing key
// (listing the archive's keys), a shape or sample-count mismatch, a
// non-integral value of an integer input (with its index); and whatever
// DecodeInputs returns.
absl::StatusOr<Tensor> DecodeModelInputs(absl::Span<const GraphInput> inputs,
                                         absl::string_view bytes,
                                         absl::string_view name);

// x = (x - mean) / stddev on the packed inputs (Normalize) of a model whose
// graph inputs are all float; INVALID_ARGUMENT naming the integer input and
// `flag` (the option that asked for it) when any holds integers: ids are not
// normalised, so the option must be left out.
absl::Status NormalizeModelInputs(absl::Span<const GraphInput> inputs,
                                  float mean, float stddev,
                                  absl::string_view flag, Tensor* packed);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_MODEL_INPUTS_H_
