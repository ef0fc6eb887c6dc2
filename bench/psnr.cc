#include "bench/psnr.h"

#include <Eigen/Core>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tensor.h"

namespace mixq::bench {
namespace {

// 10·log10(1 / kMinMse) = kMaxPsnrDb.
constexpr double kMinMse = 1e-10;

}  // namespace

absl::StatusOr<double> MeanPsnr(const engine::Tensor& restored,
                                const engine::Tensor& clean,
                                const Normalization& normalization) {
  if (restored.shape() != clean.shape()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PSNR: the restored images are ",
        engine::ShapeToString(restored.shape()), ", the clean images ",
        engine::ShapeToString(clean.shape())));
  }
  if (clean.rank() == 0 || clean.dim(0) == 0 || clean.size() == 0) {
    return absl::InvalidArgumentError("PSNR: no images");
  }
  const int64_t images = clean.dim(0);
  const int64_t pixels = clean.size() / images;
  const engine::ConstMatrixMap got = restored.AsMatrix(images, pixels);
  const engine::ConstMatrixMap want = clean.AsMatrix(images, pixels);
  if (!got.allFinite() || !want.allFinite()) {
    return absl::InvalidArgumentError("PSNR: a non-finite pixel");
  }
  const double scale = normalization.stddev, shift = normalization.mean;
  const Eigen::ArrayXXd shown =
      (got.cast<double>().array() * scale + shift).cwiseMax(0.0).cwiseMin(1.0);
  const Eigen::ArrayXXd target = want.cast<double>().array() * scale + shift;
  const Eigen::ArrayXd mse =
      (shown - target).square().rowwise().mean().cwiseMax(kMinMse);
  return (-10.0 * mse.log10()).mean();
}

}  // namespace mixq::bench
