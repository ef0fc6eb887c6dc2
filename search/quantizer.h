// Linear (uniform) quantization of weights and activations
// (docs/design.md §1.1):
// choosing the integer grid of a tensor (QuantParams), quantizing to that
// grid, fake quantization (quantize, then dequantize in float, as the
// deployed integer model computes) and its straight-through gradient.
//
//   q = clamp(round(x / s) + z, qmin, qmax),   fake(x) = s · (q − z).
//
// All functions are pure and thread-safe. Mismatched arguments (bits out of
// range, a channel axis outside the tensor, params of another shape) are
// programmer errors and abort through MIXQ_CHECK; any float data, including NaN
// and infinities, is accepted (see each function).
#ifndef MIXQ_SEARCH_QUANTIZER_H_
#define MIXQ_SEARCH_QUANTIZER_H_

#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace mixq::search {

// Bit-widths the weight quantizer supports; 32 means "left in float".
inline constexpr int kMinWeightBits = 1;
inline constexpr int kMaxWeightBits = 8;
inline constexpr int kFloatBits = 32;
// Bit-widths of activation grids (binary activations are not supported).
inline constexpr int kMinActivationBits = 2;
inline constexpr int kMaxActivationBits = 8;
// `axis` of per-tensor params.
inline constexpr int kPerTensorAxis = -1;

// Symmetric: z = 0, s = max|x| / (2^(b−1) − 1), q ∈ [−(2^(b−1) − 1), 2^(b−1) −
// 1] (the restricted range: −2^(b−1) is never used, so the grid is symmetric),
// stored in an int8 container.
// Asymmetric (affine): s = (max − min) / (2^b − 1), z = round(−min / s),
// q ∈ [0, 2^b − 1], stored in a uint8 container. The range [min, max] is
// always widened to include 0, so 0 is exactly representable and z lies in
// [0, 2^b − 1].
enum class QuantScheme { kSymmetric, kAsymmetric };
enum class Granularity { kPerTensor, kPerChannel };
// How x / s is rounded to an integer. Weights round half up, floor(v + 0.5)
// (the hand-computed grids of mixq issue #4: [−3, 6] at 8 bits symmetric maps
// −3 ↦ −63); activations round half to even, as ONNX QuantizeLinear does when
// a deployed runtime quantizes them, so that fake quantization simulates it.
enum class Rounding { kHalfUp, kHalfToEven };

// How to quantize a weight tensor.
struct QuantConfig {
  int bits =
      8;  // kMinWeightBits..kMaxWeightBits; 1 is binary (see QuantParams)
  QuantScheme scheme = QuantScheme::kSymmetric;
  Granularity granularity = Granularity::kPerChannel;
};

// The integer grid of one tensor: per channel along `axis` (any axis of the
// tensor: 0 for Conv, 1 for ConvTranspose, the last for MatMul) or per tensor
// (axis == kPerTensorAxis).
//
// Binary (bits == 1, weights only): q ∈ {−1, +1} is sign(x) with
// sign(0) = +1, z = 0 and s = mean|x| of the channel, so s·q = sign(x)·mean|x|
// (the least-squares scale for a sign grid). Binary is always symmetric.
struct QuantParams {
  int bits = 8;
  QuantScheme scheme = QuantScheme::kSymmetric;
  int axis = kPerTensorAxis;
  bool binary = false;
  Rounding rounding = Rounding::kHalfUp;
  // One entry per channel (per-channel) or exactly one (per-tensor). Every
  // scale is a positive, finite, normal float, and so is s·(qmax − qmin);
  // zero points lie in [qmin, qmax] (0 for symmetric and binary).
  std::vector<float> scale;
  std::vector<int32_t> zero_point;
  int32_t qmin = 0;  // the grid's range for `bits` (binary: −1, +1)
  int32_t qmax = 0;

  // True for an int8 container (symmetric, binary), false for uint8.
  bool is_signed() const { return scheme == QuantScheme::kSymmetric; }
  int64_t channels() const { return static_cast<int64_t>(scale.size()); }
};

// The grid of weight tensor `w` under `config`, with Rounding::kHalfUp.
// Per-channel: one scale per index of `channel_axis` (an axis of w),
// from that channel's min/max (binary: mean|w|). Per-tensor: `channel_axis`
// is ignored and the whole tensor gives one scale. Non-finite weights count
// as 0 when choosing scales (so scales stay finite). A channel of zeros (or an
// empty one) gets s = 1 and z = 0, so it stays exactly zero; a constant
// channel c ≠ 0 gets s = |c| / qmax (symmetric) or |c| / (2^b − 1)
// (asymmetric), so it is reproduced to within rounding of c. Ranges so small
// that the scale would underflow get the smallest normal float as scale.
QuantParams ChooseWeightParams(const engine::Tensor& w, int channel_axis,
                               const QuantConfig& config);

// Per-tensor activation grid for the observed range [min, max] (finite,
// min <= max; see observer.h), `bits` in kMinActivationBits..
// kMaxActivationBits, with Rounding::kHalfToEven. The range is widened to
// include 0 first; an all-zero range gets s = 1.
QuantParams ParamsFromRange(float min, float max, int bits, QuantScheme scheme);

// The integers q of `x` on grid `p`, in C order (q resized to x.size()).
// `p` must fit `x`: one scale per index of p.axis, or per-tensor. x / s is a
// float division (as in QuantizeLinear), rounded by p.rounding; +/−infinity
// clamp to qmax/qmin; NaN is quantized as if it were 0 (to z, binary: +1).
void QuantizeToIntegers(const engine::Tensor& x, const QuantParams& p,
                        std::vector<int32_t>* q);

// Fake quantization of `x` into `out` (resized to x's shape): out equals
// (float(q) − float(z)) · s for the q of QuantizeToIntegers, bit for bit,
// so an exported DequantizeLinear reproduces it. `out` may be `&x`.
void FakeQuantize(const engine::Tensor& x, const QuantParams& p,
                  engine::Tensor* out);

// Straight-through estimator: d fake(x)/dx taken as 1 where the clamp does
// not bind, i.e. qmin <= round(x / s) + z <= qmax (x within
// [s·(qmin − z), s·(qmax − z)], up to the half step that still rounds onto
// the grid), and 0 where it binds. Multiplies `grad` (x's shape, checked) by
// that mask in place. Binary grids have no clamp: `grad` is left unchanged.
// Deciding on the integer, not on x ≥ s·qmin, keeps a channel's max weight
// inside even when s·qmax rounds to just below it. NaN counts as 0 (inside).
void StraightThroughGradient(const engine::Tensor& x, const QuantParams& p,
                             engine::Tensor* grad);

// Symmetric, per-output-channel fake quantization of `weights` into `out`
// (resized to the same shape): FakeQuantize with
// ChooseWeightParams(weights, channel_axis, {bits, kSymmetric, kPerChannel}),
// and out = weights when bits == kFloatBits. `channel_axis` must be an axis
// of `weights`; bits 1..8 or 32.
//   bits in 2..8: s_c = max|w_c| / (2^(b-1) - 1),
//                 q = clamp(floor(w / s_c + 0.5), ±(2^(b-1)-1)), out = s_c·q.
//   bits == 1:    binary, out = sign(w) · mean|w_c| (sign(0) = +1).
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
