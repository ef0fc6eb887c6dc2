#include "search/quantizer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

#include "util/check.h"

namespace mixq::search {
namespace {

using engine::Tensor;

// How a tensor's data splits into channels: `outer` consecutive slices of
// `channels` x `inner` values each (the dims before the axis, the axis, the
// dims after it). A slice is viewed as a row-major [channels, inner] matrix
// (axis 0 or a middle axis; one row for per-tensor), or, for the last axis,
// as the transpose of a row-major [inner, channels] one. Either way row c of
// a slice's view is (that slice's part of) channel c.
struct Layout {
  int64_t channels = 1;
  int64_t per_channel = 0;  // outer * inner
  int64_t outer = 1;
  int64_t inner = 0;
  bool transposed = false;
};

Layout ChannelLayout(const Tensor& x, int axis) {
  Layout layout;
  if (axis == kPerTensorAxis) {
    layout.per_channel = layout.inner = x.size();
    return layout;
  }
  MIXQ_CHECK(x.rank() >= 1, "per-channel quantization of a scalar");
  MIXQ_CHECK(axis >= 0 && axis < x.rank(), "channel axis out of range");
  layout.channels = x.dim(axis);
  layout.per_channel = layout.channels == 0 ? 0 : x.size() / layout.channels;
  layout.transposed = axis != 0 && axis == x.rank() - 1;
  if (!layout.transposed) {
    for (int d = 0; d < axis; ++d) layout.outer *= x.dim(d);
  }
  layout.inner = layout.outer == 0 ? 0 : layout.per_channel / layout.outer;
  return layout;
}

// Calls fn(rows) with slice `slice` of `data` (C order, `layout`) viewed as
// described above.
template <typename Scalar, typename Fn>
void WithChannelRows(Scalar* data, const Layout& layout, int64_t slice,
                     Fn&& fn) {
  using Plain = Eigen::Matrix<std::remove_const_t<Scalar>, Eigen::Dynamic,
                              Eigen::Dynamic, Eigen::RowMajor>;
  using Map = Eigen::Map<
      std::conditional_t<std::is_const_v<Scalar>, const Plain, Plain>>;
  Scalar* at = data + slice * layout.channels * layout.inner;
  if (layout.transposed) {
    fn(Map(at, layout.inner, layout.channels).transpose());
  } else {
    fn(Map(at, layout.channels, layout.inner));
  }
}

// Calls fn(rows_a, rows_b) with the same slice of `a` and `b` (both in
// `layout`), slice by slice.
template <typename A, typename B, typename Fn>
void WithChannelRowPairs(A* a, B* b, const Layout& layout, Fn&& fn) {
  for (int64_t slice = 0; slice < layout.outer; ++slice) {
    WithChannelRows(a, layout, slice, [&](const auto& rows_a) {
      WithChannelRows(b, layout, slice,
                      [&](auto rows_b) { fn(rows_a, rows_b); });
    });
  }
}

// A scale that is positive, finite and normal: 1 for an all-zero channel (so
// it stays exactly zero), the nearest such float otherwise.
float SafeScale(float scale, bool zero_range) {
  if (zero_range) return 1.0f;
  if (!(scale <= std::numeric_limits<float>::max())) {
    return std::numeric_limits<float>::max();
  }
  return std::max(scale, std::numeric_limits<float>::min());
}

float RoundScalar(float v, Rounding rounding) {
  // floor(v + 0.5) in double is exact for every float v; in float the sum
  // itself can round (0.49999997f + 0.5f == 1.0f).
  return rounding == Rounding::kHalfUp
             ? static_cast<float>(std::floor(static_cast<double>(v) + 0.5))
             : std::nearbyint(v);
}

// Params with the grid range of `bits`/`scheme` and no channels yet.
QuantParams EmptyGrid(int bits, QuantScheme scheme, int axis,
                      Rounding rounding) {
  QuantParams p;
  p.bits = bits;
  p.axis = axis;
  p.rounding = rounding;
  p.binary = bits == 1;
  p.scheme = p.binary ? QuantScheme::kSymmetric : scheme;
  if (p.binary) {
    p.qmin = -1;
    p.qmax = 1;
  } else if (p.scheme == QuantScheme::kSymmetric) {
    p.qmax = (1 << (bits - 1)) - 1;
    p.qmin = -p.qmax;
  } else {
    p.qmin = 0;
    p.qmax = (1 << bits) - 1;
  }
  return p;
}

// Lowers `scale` by an ulp or two where needed so that s·levels, the largest
// |q − z| times s, stays finite: near the float limit s = max/qmax can round
// up and s·qmax overflow.
float FitScale(float scale, int32_t levels) {
  while (!std::isfinite(scale * static_cast<float>(levels))) {
    scale = std::nextafter(scale, 0.0f);
  }
  return scale;
}

// Appends the scale and zero point of a (non-binary) channel whose values
// span [lo, hi], lo <= 0 <= hi, both finite.
void AppendChannel(float lo, float hi, QuantParams* p) {
  if (p->scheme == QuantScheme::kSymmetric) {
    const float max_abs = std::max(-lo, hi);
    p->scale.push_back(FitScale(
        SafeScale(max_abs / static_cast<float>(p->qmax), max_abs == 0.0f),
        p->qmax));
    p->zero_point.push_back(0);
    return;
  }
  // In double: hi − lo can exceed the float range.
  const double range = static_cast<double>(hi) - static_cast<double>(lo);
  const float scale = FitScale(
      SafeScale(static_cast<float>(range / (p->qmax - p->qmin)), range == 0),
      p->qmax - p->qmin);
  const float zero = RoundScalar(-lo / scale, p->rounding);
  p->scale.push_back(scale);
  p->zero_point.push_back(static_cast<int32_t>(std::clamp(
      zero, static_cast<float>(p->qmin), static_cast<float>(p->qmax))));
}

// p's zero points as floats, for broadcasting over channel rows.
Eigen::ArrayXf ZeroPoints(const QuantParams& p) {
  return Eigen::Map<const Eigen::Array<int32_t, Eigen::Dynamic, 1>>(
             p.zero_point.data(), p.channels())
      .cast<float>();
}

struct HalfUp {
  template <typename Expr>
  auto operator()(const Expr& v) const {
    return (v.template cast<double>() + 0.5).floor().template cast<float>();
  }
};

struct HalfToEven {
  template <typename Expr>
  auto operator()(const Expr& v) const {
    return v.rint();
  }
};

// Calls consume(levels) with the unclamped integer levels round(x/s) + z of
// `rows` (channels as rows) as a float array expression; binary grids give
// sign(x) ∈ {−1, +1}. NaN counts as 0.
template <typename Rows, typename Consume>
void WithLevels(const Rows& rows, const QuantParams& p, Consume&& consume) {
  const auto x = rows.array();
  const auto safe = (x == x).select(x, 0.0f);
  if (p.binary) {
    consume((safe >= 0.0f).template cast<float>() * 2.0f - 1.0f);
    return;
  }
  const Eigen::Map<const Eigen::ArrayXf> scale(p.scale.data(), p.channels());
  const Eigen::ArrayXf zero = ZeroPoints(p);
  // Divide (not multiply by 1/s), as ONNX QuantizeLinear does.
  const auto v = safe.colwise() / scale;
  if (p.rounding == Rounding::kHalfUp) {
    consume(HalfUp()(v).colwise() + zero);
  } else {
    consume(HalfToEven()(v).colwise() + zero);
  }
}

void CheckFits(const QuantParams& p, const Layout& layout) {
  MIXQ_CHECK(p.channels() == layout.channels,
             "params have another channel count than the tensor");
  MIXQ_CHECK(p.zero_point.size() == p.scale.size());
}

}  // namespace

QuantParams ChooseWeightParams(const Tensor& w, int channel_axis,
                               const QuantConfig& config) {
  MIXQ_CHECK(config.bits >= kMinWeightBits && config.bits <= kMaxWeightBits,
             "bits out of range");
  const int axis = config.granularity == Granularity::kPerTensor
                       ? kPerTensorAxis
                       : channel_axis;
  const Layout layout = ChannelLayout(w, axis);
  QuantParams p =
      EmptyGrid(config.bits, config.scheme, axis, Rounding::kHalfUp);
  if (layout.per_channel == 0) {  // empty channels: scale 1
    p.scale.assign(layout.channels, 1.0f);
    p.zero_point.assign(layout.channels, 0);
    return p;
  }
  // Over all slices: binary, the mean |w| of each channel; else its range.
  Eigen::ArrayXf lo = Eigen::ArrayXf::Zero(layout.channels);
  Eigen::ArrayXf hi = Eigen::ArrayXf::Zero(layout.channels);
  for (int64_t slice = 0; slice < layout.outer; ++slice) {
    WithChannelRows(w.data(), layout, slice, [&](const auto& rows) {
      const auto x = rows.array();
      const auto finite = x.isFinite().select(x, 0.0f);
      if (p.binary) {
        hi += finite.abs().rowwise().sum();
      } else {
        lo = lo.min(finite.rowwise().minCoeff());
        hi = hi.max(finite.rowwise().maxCoeff());
      }
    });
  }
  if (p.binary) hi /= static_cast<float>(layout.per_channel);
  p.scale.reserve(layout.channels);
  p.zero_point.reserve(layout.channels);
  for (int64_t c = 0; c < layout.channels; ++c) {
    if (p.binary) {
      p.scale.push_back(SafeScale(hi[c], hi[c] == 0.0f));
      p.zero_point.push_back(0);
    } else {
      AppendChannel(lo[c], hi[c], &p);
    }
  }
  return p;
}

QuantParams ParamsFromRange(float min, float max, int bits,
                            QuantScheme scheme) {
  MIXQ_CHECK(bits >= kMinActivationBits && bits <= kMaxActivationBits,
             "activation bits out of range");
  MIXQ_CHECK(std::isfinite(min) && std::isfinite(max) && min <= max,
             "range must be finite and ordered");
  QuantParams p =
      EmptyGrid(bits, scheme, kPerTensorAxis, Rounding::kHalfToEven);
  AppendChannel(std::min(min, 0.0f), std::max(max, 0.0f), &p);
  return p;
}

void QuantizeToIntegers(const Tensor& x, const QuantParams& p,
                        std::vector<int32_t>* q) {
  const Layout layout = ChannelLayout(x, p.axis);
  CheckFits(p, layout);
  q->resize(x.size());
  if (x.size() == 0) return;
  const float qmin = static_cast<float>(p.qmin);
  const float qmax = static_cast<float>(p.qmax);
  WithChannelRowPairs(
      x.data(), q->data(), layout, [&](const auto& rows, auto out) {
        WithLevels(rows, p, [&](const auto& levels) {
          out.array() = levels.max(qmin).min(qmax).template cast<int32_t>();
        });
      });
}

void FakeQuantize(const Tensor& x, const QuantParams& p, Tensor* out) {
  const Layout layout = ChannelLayout(x, p.axis);
  CheckFits(p, layout);
  if (out != &x) out->Resize(x.shape());
  if (x.size() == 0) return;
  const float qmin = static_cast<float>(p.qmin);
  const float qmax = static_cast<float>(p.qmax);
  const Eigen::Map<const Eigen::ArrayXf> scale(p.scale.data(), p.channels());
  const Eigen::ArrayXf zero = ZeroPoints(p);
  WithChannelRowPairs(
      x.data(), out->data(), layout, [&](const auto& rows, auto dst) {
        WithLevels(rows, p, [&](const auto& levels) {
          // (float(q) − float(z)) · s, the DequantizeLinear formula.
          dst.array() =
              (levels.max(qmin).min(qmax).colwise() - zero).colwise() * scale;
        });
      });
}

void StraightThroughGradient(const Tensor& x, const QuantParams& p,
                             Tensor* grad) {
  const Layout layout = ChannelLayout(x, p.axis);
  CheckFits(p, layout);
  MIXQ_CHECK(grad->shape() == x.shape(), "gradient shape differs from x");
  if (p.binary || x.size() == 0) return;
  const float qmin = static_cast<float>(p.qmin);
  const float qmax = static_cast<float>(p.qmax);
  WithChannelRowPairs(
      x.data(), grad->data(), layout, [&](const auto& rows, auto g) {
        WithLevels(rows, p, [&](const auto& levels) {
          g.array() =
              (levels >= qmin && levels <= qmax).select(g.array(), 0.0f);
        });
      });
}

void FakeQuantizeSymmetric(const Tensor& weights, int channel_axis, int bits,
                           Tensor* out) {
  if (bits >= kFloatBits) {
    out->Resize(weights.shape());
    out->values() = weights.values();
    return;
  }
  const QuantConfig config{bits, QuantScheme::kSymmetric,
                           Granularity::kPerChannel};
  FakeQuantize(weights, ChooseWeightParams(weights, channel_axis, config), out);
}

double WeightedPerturbation(const Tensor& weights, const Tensor& quantized,
                            const Tensor& hessian_diag) {
  MIXQ_CHECK(weights.size() == quantized.size());
  MIXQ_CHECK(weights.size() == hessian_diag.size());
  return (hessian_diag.flat().cast<double>() *
          (quantized.flat() - weights.flat()).cast<double>().square())
      .sum();
}

}  // namespace mixq::search
