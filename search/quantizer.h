// Weight fake quantization: quantize to a b-bit integer grid, then
// dequantize back to float, as the deployed integer model would compute.
// Pure functions; thread-safe.
#ifndef MIXQ_SEARCH_QUANTIZER_H_
#define MIXQ_SEARCH_QUANTIZER_H_

#include "engine/tensor.h"

namespace mixq::search {

// Bit-widths the weight quantizer supports; 32 means "left in float".
inline constexpr int kMinWeightBits = 1;
inline constexpr int kMaxWeightBits = 8;
inline constexpr int kFloatBits = 32;

// Symmetric, per-output-channel fake quantization of `weights` into `out`
// (resized to the same shape). `channel_axis` must be 0 or the last axis.
//   bits in 2..8: s_c = max|w_c| / (2^(b-1) - 1),
//                 q = clamp(round(w / s_c), -(2^(b-1)-1), 2^(b-1)-1), out =
//                 s_c·q.
//   bits == 1:    binary, out = sign(w) · mean|w_c| (sign(0) = +1).
//   bits == 32:   out = weights.
// A channel of zeros gets scale 1 (so it stays exactly zero; never NaN).
// The straight-through gradient of this quantizer is the identity: the scale
// is the channel's max, so no weight lies outside the clamp range.
void FakeQuantizeSymmetric(const engine::Tensor& weights, int channel_axis,
                           int bits, engine::Tensor* out);

// Σ_i h_i · (Q_b(w_i) − w_i)², the Hessian-weighted quantization perturbation
// of one tensor, given the diagonal Hessian estimate `hessian_diag` (same
// shape as `weights`) and its fake-quantized version `quantized`.
double WeightedPerturbation(const engine::Tensor& weights,
                            const engine::Tensor& quantized,
                            const engine::Tensor& hessian_diag);

}  // namespace mixq::search

#endif  // MIXQ_SEARCH_QUANTIZER_H_
