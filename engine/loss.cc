#include "engine/loss.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/finite.h"

namespace mixq::engine {
namespace {

constexpr absl::string_view kCrossEntropyName = "cross_entropy";
constexpr absl::string_view kDistillName = "distill";

// INVALID_ARGUMENT unless `labels` holds `n` classes in [0, c).
absl::Status CheckLabelRange(absl::Span<const int64_t> labels, int64_t n,
                             int64_t c) {
  if (static_cast<int64_t>(labels.size()) != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "got ", labels.size(), " labels for ", n, " rows of logits"));
  }
  for (int64_t i = 0; i < n; ++i) {
    if (labels[i] < 0 || labels[i] >= c) {
      return absl::InvalidArgumentError(
          absl::StrCat("label ", labels[i], " of sample ", i,
                       " is out of range [0, ", c, ")"));
    }
  }
  return absl::OkStatus();
}

// Rows of `x` whose first maximal entry is at their label.
int64_t CountCorrect(const ConstMatrixMap& x,
                     absl::Span<const int64_t> labels) {
  int64_t correct = 0;
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    Eigen::Index arg_max = 0;
    x.row(i).maxCoeff(&arg_max);
    if (arg_max == labels[i]) ++correct;
  }
  return correct;
}

// Row-wise log-softmax of `x` / `temperature`, stable (shifted by each row's
// maximum).
Eigen::ArrayXXf LogSoftmax(const ConstMatrixMap& x, float temperature) {
  const Eigen::ArrayXXf scaled = x.array() / temperature;
  const Eigen::ArrayXf row_max = scaled.rowwise().maxCoeff();
  const Eigen::ArrayXXf shifted = scaled.colwise() - row_max;
  const Eigen::ArrayXf log_sum = shifted.exp().rowwise().sum().log();
  return shifted.colwise() - log_sum;
}

}  // namespace

absl::string_view ObjectiveName(Objective objective) {
  switch (objective) {
    case Objective::kCrossEntropy:
      return kCrossEntropyName;
    case Objective::kDistill:
      return kDistillName;
  }
  return kCrossEntropyName;
}

absl::StatusOr<Objective> ParseObjective(absl::string_view name) {
  if (name == kCrossEntropyName) return Objective::kCrossEntropy;
  if (name == kDistillName) return Objective::kDistill;
  return absl::InvalidArgumentError(absl::StrCat("unknown objective '", name,
                                                 "' (", kCrossEntropyName, ", ",
                                                 kDistillName, ")"));
}

absl::StatusOr<LossResult> SoftmaxCrossEntropy(const Tensor& logits,
                                               absl::Span<const int64_t> labels,
                                               Tensor* grad) {
  if (logits.rank() != 2 || logits.dim(0) < 1 || logits.dim(1) < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("logits must be [N, C] with N, C >= 1; got ",
                     ShapeToString(logits.shape())));
  }
  const int64_t n = logits.dim(0);
  const int64_t c = logits.dim(1);
  if (const absl::Status range = CheckLabelRange(labels, n, c); !range.ok())
    return range;

  // Infinite or NaN logits (an overflowed forward pass) would give a NaN loss
  // and gradient that training would silently spread into the weights.
  const absl::Status finite = CheckFinite(logits, "the logits (model output)");
  if (!finite.ok()) return finite;

  const ConstMatrixMap x = logits.AsMatrix(n, c);
  // Shifting each row by its maximum keeps exp() from overflowing.
  const Eigen::VectorXf row_max = x.rowwise().maxCoeff();
  const Eigen::ArrayXXf shifted = (x.colwise() - row_max).array();
  Eigen::ArrayXXf exp = shifted.exp();
  const Eigen::ArrayXf sum = exp.rowwise().sum();

  LossResult result;
  for (int64_t i = 0; i < n; ++i) {
    result.loss += std::log(static_cast<double>(sum(i))) -
                   static_cast<double>(shifted(i, labels[i]));
  }
  result.correct = CountCorrect(x, labels);
  result.loss /= static_cast<double>(n);

  if (grad != nullptr) {
    grad->Resize({n, c});
    MatrixMap g = grad->AsMatrix(n, c);
    const float inv_n = 1.0f / static_cast<float>(n);
    g = (exp.colwise() * (inv_n / sum)).matrix();
    for (int64_t i = 0; i < n; ++i) g(i, labels[i]) -= inv_n;
  }
  return result;
}

absl::StatusOr<LossResult> DistillLoss(const Tensor& outputs,
                                       const Tensor& teacher,
                                       absl::Span<const int64_t> labels,
                                       Tensor* grad) {
  if (outputs.shape() != teacher.shape()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the output has shape ", ShapeToString(outputs.shape()),
        " but the FP32 model's output has ", ShapeToString(teacher.shape())));
  }
  if (outputs.rank() < 1 || outputs.dim(0) < 1 || outputs.size() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("the output must be [N, ...] with N >= 1; got ",
                     ShapeToString(outputs.shape())));
  }
  const bool logits = outputs.rank() == 2;
  if (!labels.empty() && !logits) {
    return absl::InvalidArgumentError(
        absl::StrCat("labels need a 2-D output [N, C]; got ",
                     ShapeToString(outputs.shape())));
  }
  // Either side overflowing would give a NaN loss (engine/finite.h).
  if (const absl::Status finite = CheckFinite(outputs, "the model output");
      !finite.ok()) {
    return finite;
  }
  if (const absl::Status finite =
          CheckFinite(teacher, "the FP32 model's output");
      !finite.ok()) {
    return finite;
  }
  LossResult result;
  if (!logits) {
    // Mean squared error: d/dq mean((q - t)²) = 2 (q - t) / size.
    const auto diff =
        outputs.flat().cast<double>() - teacher.flat().cast<double>();
    result.loss = diff.square().mean();
    if (grad != nullptr) {
      grad->Resize(outputs.shape());
      grad->flat() = (outputs.flat() - teacher.flat()) *
                     (2.0f / static_cast<float>(outputs.size()));
    }
    return result;
  }
  const int64_t n = outputs.dim(0);
  const int64_t c = outputs.dim(1);
  if (!labels.empty()) {
    if (const absl::Status range = CheckLabelRange(labels, n, c); !range.ok()) {
      return range;
    }
  }
  const ConstMatrixMap q = outputs.AsMatrix(n, c);
  const ConstMatrixMap t = teacher.AsMatrix(n, c);
  const float temperature = static_cast<float>(kDistillTemperature);
  const Eigen::ArrayXXf log_q = LogSoftmax(q, temperature);
  const Eigen::ArrayXXf log_p = LogSoftmax(t, temperature);
  const Eigen::ArrayXXf p = log_p.exp();
  // T² keeps the gradient's scale independent of T (Hinton et al., 2015).
  const double t2 = kDistillTemperature * kDistillTemperature;
  result.loss =
      t2 * (p * (log_p - log_q)).cast<double>().sum() / static_cast<double>(n);
  if (!labels.empty()) result.correct = CountCorrect(q, labels);
  if (grad != nullptr) {
    // d/dq of T² KL(p || softmax(q / T)) is T (softmax(q / T) - p).
    grad->Resize({n, c});
    grad->AsMatrix(n, c) =
        ((log_q.exp() - p) * (temperature / static_cast<float>(n))).matrix();
  }
  return result;
}

}  // namespace mixq::engine
