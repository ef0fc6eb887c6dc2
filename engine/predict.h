// Running a model over a whole data set, and scoring a classifier's logits:
// the one path by which the service measures an exported policy on
// validation data and `mixq-run --labels` measures the same file, so both
// report the same figures to the bit.
#ifndef MIXQ_ENGINE_PREDICT_H_
#define MIXQ_ENGINE_PREDICT_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model.h"
#include "engine/tensor.h"

namespace mixq::engine {

// Samples per forward pass of PredictInBatches unless a caller says.
inline constexpr int64_t kDefaultPredictBatch = 64;

// The model's first output for every sample of `inputs` ([N, ...], already
// conformed to the model input), with the parameters stored in the model:
// forward passes over consecutive batches of `batch_size` samples, outputs
// concatenated along dim 0 (so only one batch's activations are alive).
// INVALID_ARGUMENT for batch_size < 1, no samples, a forward error (the
// message names the sample range), an output holding NaN or infinity (the
// forward pass overflowed: the message names the node where it started,
// engine/finite.h) or an output whose dim 0 is not the batch or whose shape
// changes between batches. Blocks; uses the engine's threads.
absl::StatusOr<Tensor> PredictInBatches(const Model& model,
                                        const Tensor& inputs,
                                        int64_t batch_size);

struct ClassifierScore {
  double loss = 0;  // mean softmax cross-entropy (ScoreOutputs: its loss)
  // top-1 (first maximal logit), in [0, 1]; NaN when scored without labels
  double accuracy = 0;
  int64_t samples = 0;
};

// Scores `logits` ([N, C]) against `labels` (N entries in [0, C)).
// INVALID_ARGUMENT on a shape mismatch, no samples or a label out of range.
absl::StatusOr<ClassifierScore> ScoreLogits(const Tensor& logits,
                                            absl::Span<const int64_t> labels);

// Scores `outputs` ([N, ...]) by a job's objective (engine/loss.h): with
// `teacher` (the FP32 model's outputs, same shape) the loss is DistillLoss
// and `labels` are optional (accuracy NaN without them); without, it is
// ScoreLogits. INVALID_ARGUMENT as those.
absl::StatusOr<ClassifierScore> ScoreOutputs(const Tensor& outputs,
                                             absl::Span<const int64_t> labels,
                                             const Tensor* teacher);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_PREDICT_H_
