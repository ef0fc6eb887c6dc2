// The losses the search trains and scores with: softmax cross-entropy against
// class labels, and the label-free distillation distance to the FP32 model's
// outputs.
#ifndef MIXQ_ENGINE_LOSS_H_
#define MIXQ_ENGINE_LOSS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/tensor.h"

namespace mixq::engine {

// What a job's loss compares the model's output with.
enum class Objective {
  kCrossEntropy,  // integer class labels (SoftmaxCrossEntropy)
  kDistill,       // the FP32 model's outputs (DistillLoss); labels optional
};

// "cross_entropy" or "distill".
absl::string_view ObjectiveName(Objective objective);
// The inverse of ObjectiveName; INVALID_ARGUMENT listing the names otherwise.
absl::StatusOr<Objective> ParseObjective(absl::string_view name);

// The softmax temperature T of DistillLoss on logits.
inline constexpr double kDistillTemperature = 1.0;

struct LossResult {
  double loss = 0;      // mean loss over the batch
  int64_t correct = 0;  // samples whose arg-max logit equals the label
};

// `logits` is [N, C]; `labels` has N entries in [0, C). When `grad` is
// non-null it receives dMeanLoss/dLogits ([N, C]). Numerically stable
// (log-sum-exp). INVALID_ARGUMENT on shape mismatch, a label out of range, or
// a NaN or infinite logit (engine/finite.h: the forward pass overflowed).
absl::StatusOr<LossResult> SoftmaxCrossEntropy(const Tensor& logits,
                                               absl::Span<const int64_t> labels,
                                               Tensor* grad);

// The distance of a model's `outputs` to the FP32 model's `teacher` outputs
// on the same inputs (same shape, [N, ...]):
//  - a 2-D output [N, C] is a classifier's logits: the mean over the N rows
//    of T² · KL(softmax(teacher / T) || softmax(outputs / T)), T =
//    kDistillTemperature (0 when the two agree up to a constant per row);
//  - any other output: the mean squared error over all its elements.
// `labels` is optional: empty, or (2-D outputs only) N entries in [0, C)
// whose top-1 hits are counted into `correct`. When `grad` is non-null it
// receives dLoss/dOutputs (outputs' shape). INVALID_ARGUMENT on a shape
// mismatch, no samples, a label out of range or labels for a non-2-D output,
// or a NaN or infinite value in either tensor.
absl::StatusOr<LossResult> DistillLoss(const Tensor& outputs,
                                       const Tensor& teacher,
                                       absl::Span<const int64_t> labels,
                                       Tensor* grad);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_LOSS_H_
