// QuantizeLinear and DequantizeLinear (opsets 10 and 13: per-tensor, and
// per-axis along `axis`; opset 21's 4-bit types INT4/UINT4 too, not its
// blocked form).
//
// Runtime tensors are float, so a quantized tensor is carried as float values
// that are exact integers ("float-coded"). QuantizeLinear keeps the range of
// its output's element type (the zero point's: uint8 when absent), which is
// all of that type that matters downstream. Integer constants (quantized
// weights) never reach these kernels at run time: the importer folds a
// DequantizeLinear of one into a float constant by running the kernel on the
// integers converted to float.
//
// Backward passes are the straight-through estimator: QuantizeLinear passes
// grad / scale where round(x / scale) + zero_point lies in the type's range
// (zero where it saturates), DequantizeLinear grad * scale, so Q -> DQ passes
// the gradient unchanged inside the range.
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "Eigen/Core"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "engine/int4.h"
#include "engine/ops.h"
#include "engine/ops_util.h"

namespace mixq::engine {
namespace {

// ONNX TensorProto element types of quantized tensors.
constexpr int64_t kUint8Type = 2;
constexpr int64_t kInt8Type = 3;
constexpr int64_t kUint16Type = 4;
constexpr int64_t kInt16Type = 5;

// The first opset with QuantizeLinear / DequantizeLinear, and the first with
// per-axis parameters (the `axis` attribute, default 1).
constexpr int64_t kQdqOpset = 10;
constexpr int64_t kPerAxisOpset = 13;
constexpr int64_t kDefaultAxis = 1;

// The values an integer element type holds, as floats (all exact).
struct IntRange {
  float lo;
  float hi;
};

std::optional<IntRange> RangeOfType(int64_t type) {
  switch (type) {
    case kUint8Type:
      return IntRange{0.0f, 255.0f};
    case kInt8Type:
      return IntRange{-128.0f, 127.0f};
    case kUint16Type:
      return IntRange{0.0f, 65535.0f};
    case kInt16Type:
      return IntRange{-32768.0f, 32767.0f};
    case kOnnxUint4:
      return IntRange{kUint4Min, kUint4Max};
    case kOnnxInt4:
      return IntRange{kInt4Min, kInt4Max};
    default:
      return std::nullopt;
  }
}

// Scale and zero point, one per tensor or one per index of `axis`.
struct QuantParams {
  std::optional<int64_t> axis;  // as given, in [-rank, rank); unset: per tensor
  Eigen::ArrayXf scale;
  Eigen::ArrayXf zero_point;
};

// Reads inputs 1 (scale) and 2 (zero point, optional) and `axis`. The scale
// must be float, finite and positive; the zero point an integer tensor of the
// scale's shape. One element (a scalar or [1]) is per-tensor; a 1-D scale of
// more (opset 13+) is per-axis, checked against the data in OutputShape.
absl::StatusOr<QuantParams> ReadParams(const OpConfig& config) {
  if (config.opset < kQdqOpset) {
    return NodeError(config, absl::StrCat("the operator does not exist before "
                                          "opset ",
                                          kQdqOpset, " (the model's is ",
                                          config.opset, ")"));
  }
  const absl::StatusOr<int64_t> block_size = config.GetInt("block_size", 0);
  if (!block_size.ok()) return block_size.status();
  if (*block_size != 0) {
    return NodeError(config, absl::StrCat("blocked quantization (block_size=",
                                          *block_size, ") is not supported"));
  }
  if (config.constant_inputs.empty() || !config.constant_inputs[0]) {
    return NodeError(config, "the scale input is missing");
  }
  const ConstantInput& scale = *config.constant_inputs[0];
  if (scale.is_int) {
    return NodeError(config, "the scale must be a float tensor");
  }
  if (scale.shape.size() > 1) {
    return NodeError(config, absl::StrCat("the scale must be a scalar or 1-D, "
                                          "not ",
                                          ShapeToString(scale.shape)));
  }
  for (float s : scale.floats) {
    if (!(std::isfinite(s) && s > 0.0f)) {
      return NodeError(
          config, absl::StrCat("scale ", s, " must be finite and positive"));
    }
  }
  if (scale.floats.empty()) return NodeError(config, "the scale is empty");
  QuantParams params;
  const Eigen::Index n = static_cast<Eigen::Index>(scale.floats.size());
  params.scale = Eigen::Map<const Eigen::ArrayXf>(scale.floats.data(), n);
  params.zero_point = Eigen::ArrayXf::Zero(n);
  if (config.constant_inputs.size() > 1 && config.constant_inputs[1]) {
    const ConstantInput& zero_point = *config.constant_inputs[1];
    if (!zero_point.is_int) {
      return NodeError(config,
                       "the zero point must be an integer tensor (float 8 "
                       "types are not supported)");
    }
    if (zero_point.ints.size() != scale.floats.size()) {
      return NodeError(config, absl::StrCat("the zero point ",
                                            ShapeToString(zero_point.shape),
                                            " must have the scale's shape ",
                                            ShapeToString(scale.shape)));
    }
    for (Eigen::Index i = 0; i < n; ++i) {
      params.zero_point[i] = static_cast<float>(zero_point.ints[i]);
    }
  }
  const bool has_axis = config.attributes.contains("axis");
  if (config.opset < kPerAxisOpset) {
    if (has_axis || n != 1) {
      return NodeError(config,
                       absl::StrCat("per-axis quantization (an 'axis' "
                                    "attribute or a scale of ",
                                    n, " elements) needs opset ", kPerAxisOpset,
                                    " (the model's is ", config.opset, ")"));
    }
    return params;
  }
  const absl::StatusOr<int64_t> axis = config.GetInt("axis", kDefaultAxis);
  if (!axis.ok()) return axis.status();
  if (n > 1) params.axis = *axis;
  return params;
}

// The element-wise part shared by both operators: the shape check and the
// iteration over blocks of the data with their scales.
class QdqKernel : public Kernel {
 public:
  QdqKernel(absl::string_view op_type, QuantParams params)
      : op_type_(op_type), params_(std::move(params)) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& x = *inputs[0];
    if (!params_.axis) return x;
    const int64_t rank = static_cast<int64_t>(x.size());
    const int64_t axis = *params_.axis;
    if (axis < -rank || axis >= rank) {
      return ShapeError(op_type_,
                        absl::StrCat("axis ", axis, " is out of range for ",
                                     ShapeToString(x)));
    }
    const int64_t dim = x[axis < 0 ? axis + rank : axis];
    if (dim != params_.scale.size()) {
      return ShapeError(op_type_,
                        absl::StrCat("the scale has ", params_.scale.size(),
                                     " elements but axis ", axis, " of ",
                                     ShapeToString(x), " has ", dim));
    }
    return x;
  }

 protected:
  // Calls f(offset, n, scale, zero_point) for consecutive blocks of a tensor
  // of `shape`: per tensor one block with scalar parameters; per axis one
  // block per index of the axes before `axis`, with the parameters expanded
  // to one value per element of the block (so every block is one vector
  // expression, whatever the inner size).
  template <typename F>
  void ForEachBlock(const Shape& shape, F&& f) const {
    const int64_t total = NumElements(shape);
    if (!params_.axis) {
      f(0, total, params_.scale[0], params_.zero_point[0]);
      return;
    }
    const int64_t rank = static_cast<int64_t>(shape.size());
    const int64_t axis =
        *params_.axis < 0 ? *params_.axis + rank : *params_.axis;
    const int64_t channels = shape[axis];
    const int64_t inner = Product(shape.begin() + axis + 1, shape.end());
    const int64_t block = channels * inner;
    if (block == 0) return;
    Eigen::ArrayXf scale(block);
    Eigen::ArrayXf zero_point(block);
    for (int64_t c = 0; c < channels; ++c) {
      scale.segment(c * inner, inner).setConstant(params_.scale[c]);
      zero_point.segment(c * inner, inner).setConstant(params_.zero_point[c]);
    }
    for (int64_t offset = 0; offset < total; offset += block) {
      f(offset, block, scale, zero_point);
    }
  }

  // out = f(in, scale, zero_point) block by block, where f maps a block of
  // `in` and its parameters to an Eigen array expression.
  template <typename F>
  void Apply(const Tensor& in, Tensor* out, F&& f) const {
    const float* src = in.data();
    float* dst = out->data();
    ForEachBlock(in.shape(), [&](int64_t offset, int64_t n, const auto& scale,
                                 const auto& zero_point) {
      ArrayMap(dst + offset, n) =
          f(ConstArrayMap(src + offset, n), scale, zero_point);
    });
  }

 private:
  const absl::string_view op_type_;
  const QuantParams params_;
};

// y = saturate(round_half_to_even(x / scale) + zero_point) to `range`.
class QuantizeKernel : public QdqKernel {
 public:
  QuantizeKernel(QuantParams params, IntRange range)
      : QdqKernel("QuantizeLinear", std::move(params)), range_(range) {}

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    // rint rounds half to even in the default rounding mode.
    Apply(*inputs[0], output,
          [this](const auto& x, const auto& scale, const auto& zero_point) {
            return ((x / scale).rint() + zero_point)
                .max(range_.lo)
                .min(range_.hi);
          });
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    if (grad_inputs[0] == nullptr) return;
    const float* x = inputs[0]->data();
    const float* g = grad_output.data();
    float* dx = grad_inputs[0]->data();
    ForEachBlock(
        inputs[0]->shape(), [&](int64_t offset, int64_t n, const auto& scale,
                                const auto& zero_point) {
          const Eigen::ArrayXf q =
              (ConstArrayMap(x + offset, n) / scale).rint() + zero_point;
          ArrayMap(dx + offset, n) =
              (q >= range_.lo && q <= range_.hi)
                  .select(ConstArrayMap(g + offset, n) / scale, 0.0f);
        });
  }

 private:
  const IntRange range_;
};

// y = (x - zero_point) * scale.
class DequantizeKernel : public QdqKernel {
 public:
  explicit DequantizeKernel(QuantParams params)
      : QdqKernel("DequantizeLinear", std::move(params)) {}

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    Apply(*inputs[0], output,
          [](const auto& x, const auto& scale, const auto& zero_point) {
            return (x - zero_point) * scale;
          });
  }

  void Backward(absl::Span<const Tensor* const> /*inputs*/,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    if (grad_inputs[0] == nullptr) return;
    Apply(grad_output, grad_inputs[0],
          [](const auto& g, const auto& scale, const auto&) {
            return g * scale;
          });
  }
};

// The output type is `output_dtype` (opset 21's attribute; the importer also
// sets it from the zero point's element type, which ONNX infers it from),
// uint8 when absent. The zero point must lie in its range.
absl::StatusOr<std::unique_ptr<Kernel>> CreateQuantize(const OpConfig& config) {
  absl::StatusOr<QuantParams> params = ReadParams(config);
  if (!params.ok()) return params.status();
  const absl::StatusOr<int64_t> type = config.GetInt("output_dtype", 0);
  if (!type.ok()) return type.status();
  const std::optional<IntRange> range =
      RangeOfType(*type == 0 ? kUint8Type : *type);
  if (!range) {
    return NodeError(config, absl::StrCat("quantizing to element type ", *type,
                                          " is not supported (int4, uint4, "
                                          "int8, uint8, int16 and uint16 "
                                          "are)"));
  }
  for (float z : params->zero_point) {
    if (z < range->lo || z > range->hi) {
      return NodeError(config, absl::StrCat("zero point ", z,
                                            " is outside the output type's "
                                            "range [",
                                            range->lo, ", ", range->hi, "]"));
    }
  }
  return std::make_unique<QuantizeKernel>(*std::move(params), *range);
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateDequantize(
    const OpConfig& config) {
  absl::StatusOr<QuantParams> params = ReadParams(config);
  if (!params.ok()) return params.status();
  return std::make_unique<DequantizeKernel>(*std::move(params));
}

}  // namespace

absl::Span<const OpEntry> QuantOps() {
  // x is the data input; scale and zero point configure the kernel.
  static const OpEntry kOps[] = {
      {"QuantizeLinear", {2, 3, 1, 1, &CreateQuantize}},
      {"DequantizeLinear", {2, 3, 1, 1, &CreateDequantize}},
  };
  return kOps;
}

}  // namespace mixq::engine
