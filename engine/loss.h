// Softmax cross-entropy, the loss the search trains and scores with.
#ifndef MIXQ_ENGINE_LOSS_H_
#define MIXQ_ENGINE_LOSS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/tensor.h"

namespace mixq::engine {

struct LossResult {
  double loss = 0;      // mean cross-entropy over the batch
  int64_t correct = 0;  // samples whose arg-max logit equals the label
};

// `logits` is [N, C]; `labels` has N entries in [0, C). When `grad` is
// non-null it receives dMeanLoss/dLogits ([N, C]). Numerically stable
// (log-sum-exp). INVALID_ARGUMENT on shape mismatch, a label out of range, or
// a NaN or infinite logit (engine/finite.h: the forward pass overflowed).
absl::StatusOr<LossResult> SoftmaxCrossEntropy(const Tensor& logits,
                                               absl::Span<const int64_t> labels, Tensor* grad);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_LOSS_H_
