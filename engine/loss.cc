#include "engine/loss.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/finite.h"

namespace mixq::engine {

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
    Eigen::Index arg_max = 0;
    x.row(i).maxCoeff(&arg_max);
    if (arg_max == labels[i]) ++result.correct;
  }
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

}  // namespace mixq::engine
