#include "search/quantizer.h"

#include <cmath>

#include "util/check.h"

namespace mixq::search {
namespace {

using engine::ConstMatrixMap;
using engine::MatrixMap;

// Quantizes each row of `w` (one output channel per row) into `q`.
template <typename In, typename Out>
void QuantizeRows(const In& w, int bits, Out q) {
  if (bits == 1) {
    const Eigen::ArrayXf mean_abs = w.cwiseAbs().rowwise().mean().array();
    const auto sign = (w.array() >= 0.0f).template cast<float>() * 2.0f - 1.0f;
    q = (sign.colwise() * mean_abs).matrix();
    return;
  }
  const float qmax = static_cast<float>((1 << (bits - 1)) - 1);
  Eigen::ArrayXf scale = w.cwiseAbs().rowwise().maxCoeff().array() / qmax;
  scale = (scale > 0.0f).select(scale, 1.0f);
  // Divide (not multiply by 1/s) and round ties to even, exactly as ONNX
  // QuantizeLinear does, so an exported QDQ model reproduces these values.
  q = ((w.array().colwise() / scale).rint().max(-qmax).min(qmax).colwise() *
       scale)
          .matrix();
}

}  // namespace

void FakeQuantizeSymmetric(const engine::Tensor& weights, int channel_axis,
                           int bits, engine::Tensor* out) {
  out->Resize(weights.shape());
  if (bits >= kFloatBits || weights.size() == 0) {
    out->values() = weights.values();
    return;
  }
  MIXQ_CHECK(bits >= kMinWeightBits && bits <= kMaxWeightBits,
             "bits out of range");
  MIXQ_CHECK(weights.rank() >= 1);
  const int last_axis = weights.rank() - 1;
  MIXQ_CHECK(channel_axis == 0 || channel_axis == last_axis,
             "channel axis must be first or last");
  const int64_t channels = weights.dim(channel_axis);
  const int64_t per_channel = weights.size() / channels;
  if (channel_axis == 0) {
    QuantizeRows(weights.AsMatrix(channels, per_channel), bits,
                 out->AsMatrix(channels, per_channel));
  } else {
    // Channels are columns: quantize the transposed view.
    QuantizeRows(weights.AsMatrix(per_channel, channels).transpose(), bits,
                 out->AsMatrix(per_channel, channels).transpose());
  }
}

double WeightedPerturbation(const engine::Tensor& weights,
                            const engine::Tensor& quantized,
                            const engine::Tensor& hessian_diag) {
  MIXQ_CHECK(weights.size() == quantized.size());
  MIXQ_CHECK(weights.size() == hessian_diag.size());
  return (hessian_diag.flat().cast<double>() *
          (quantized.flat() - weights.flat()).cast<double>().square())
      .sum();
}

}  // namespace mixq::search
