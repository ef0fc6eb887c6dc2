#include "engine/predict.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/finite.h"
#include "engine/loss.h"
#include "util/status_macros.h"

namespace mixq::engine {

absl::StatusOr<Tensor> PredictInBatches(const Model& model,
                                        const Tensor& inputs,
                                        int64_t batch_size) {
  if (batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch size must be at least 1, got ", batch_size));
  }
  const int64_t num_samples = inputs.shape().empty() ? 0 : inputs.dim(0);
  if (num_samples == 0) return absl::InvalidArgumentError("no samples");
  std::vector<const Tensor*> params;
  for (const Tensor& p : model.initial_params()) params.push_back(&p);
  Shape out_shape;
  FloatBuffer values;
  for (int64_t begin = 0; begin < num_samples; begin += batch_size) {
    const int64_t end = std::min(num_samples, begin + batch_size);
    absl::StatusOr<Tensor> forward =
        model.Forward(inputs.Slice(begin, end), params, nullptr);
    if (!forward.ok()) {
      return Annotate(forward.status(),
                      absl::StrCat("samples [", begin, ", ", end, ")"));
    }
    // An overflowed pass: its figures would be NaN; the error says where.
    if (const absl::Status finite = CheckFinite(
            *forward, absl::StrCat("output '", model.output_name(), "'"));
        !finite.ok()) {
      return Annotate(
          WithOverflowSource(finite, model.FirstNonFiniteNode(
                                         inputs.Slice(begin, end), params)),
          absl::StrCat("samples [", begin, ", ", end, ")"));
    }
    const Shape& shape = forward->shape();
    if (shape.empty() || shape[0] != end - begin) {
      return absl::InvalidArgumentError(
          absl::StrCat("output '", model.output_name(), "' has shape ",
                       ShapeToString(shape), " for a batch of ", end - begin,
                       "; the batch must be its dim 0 to concatenate batches"));
    }
    if (begin == 0) {
      out_shape = shape;
      out_shape[0] = num_samples;
      values.reserve(NumElements(out_shape));
    } else if (!std::equal(shape.begin() + 1, shape.end(),
                           out_shape.begin() + 1, out_shape.end())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "output '", model.output_name(), "' changed shape between batches (",
          ShapeToString(shape), " vs ", ShapeToString(out_shape), " overall)"));
    }
    values.insert(values.end(), forward->values().begin(),
                  forward->values().end());
  }
  return Tensor(out_shape, std::move(values));
}

absl::StatusOr<ClassifierScore> ScoreLogits(const Tensor& logits,
                                            absl::Span<const int64_t> labels) {
  if (labels.empty()) return absl::InvalidArgumentError("no samples");
  MIXQ_ASSIGN_OR_RETURN(const LossResult result,
                        SoftmaxCrossEntropy(logits, labels, nullptr));
  ClassifierScore score;
  score.samples = static_cast<int64_t>(labels.size());
  score.loss = result.loss;
  score.accuracy =
      static_cast<double>(result.correct) / static_cast<double>(score.samples);
  return score;
}

absl::StatusOr<ClassifierScore> ScoreOutputs(const Tensor& outputs,
                                             absl::Span<const int64_t> labels,
                                             const Tensor* teacher) {
  if (teacher == nullptr) return ScoreLogits(outputs, labels);
  MIXQ_ASSIGN_OR_RETURN(const LossResult result,
                        DistillLoss(outputs, *teacher, labels, nullptr));
  ClassifierScore score;
  score.samples = outputs.dim(0);
  score.loss = result.loss;
  score.accuracy = labels.empty() ? std::numeric_limits<double>::quiet_NaN()
                                  : static_cast<double>(result.correct) /
                                        static_cast<double>(score.samples);
  return score;
}

}  // namespace mixq::engine
