// The quality bench's metric for image-restoration models: peak
// signal-to-noise ratio against the clean images. Never run by ctest itself;
// tests/bench/psnr_test.cc checks it.
#ifndef MIXQ_BENCH_PSNR_H_
#define MIXQ_BENCH_PSNR_H_

#include "absl/status/statusor.h"
#include "engine/tensor.h"

namespace mixq::bench {

// How the images were normalised: pixel = value · stddev + mean, pixels in
// [0, 1] (x/255).
struct Normalization {
  float mean = 0;
  float stddev = 1;
};

// The mean over the N images of 10·log10(1 / MSE) in dB, where MSE is over an
// image's pixels in [0, 1]: both tensors ([N, ...], the same shape) are
// de-normalised and `restored` is clamped to [0, 1], as a displayed image is.
// An image restored exactly counts as kMaxPsnrDb (instead of infinity), so
// one perfect image does not swamp the mean. INVALID_ARGUMENT on different
// shapes, no images, or a non-finite value.
absl::StatusOr<double> MeanPsnr(const engine::Tensor& restored,
                                const engine::Tensor& clean,
                                const Normalization& normalization);

// The PSNR of an exact restoration (an MSE below 10^-10).
inline constexpr double kMaxPsnrDb = 100.0;

}  // namespace mixq::bench

#endif  // MIXQ_BENCH_PSNR_H_
