// Resize (opsets 10-17) and Upsample (opsets 7-9): nearest and linear
// interpolation of the last two axes (the spatial dims of NCHW, or of NCL
// with the channels left as they are). The other axes must keep their size.
//
// Interpolation is separable: along each resized axis an output index reads
// one input (nearest) or two with weights (linear), a sparse [out, in]
// matrix. Per plane [H, W], Y = M_h X M_w^T (two sparse-dense products) and
// the backward is dX = M_h^T dY M_w. Planes are split between threads.
//
// Refused by node name: cubic mode, tf_crop_and_resize (roi),
// half_pixel_symmetric, exclude_outside, antialias, axes and
// keep_aspect_ratio_policy other than stretch.
#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "Eigen/Core"
#include "Eigen/SparseCore"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/ops.h"
#include "engine/ops_util.h"

namespace mixq::engine {
namespace {

using SparseRM = Eigen::SparseMatrix<float, Eigen::RowMajor>;

// Axes resized: the last kResizedAxes.
constexpr int kResizedAxes = 2;

enum class Mode { kNearest, kLinear };

enum class Coordinates {
  kHalfPixel,
  kPyTorchHalfPixel,
  kAlignCorners,
  kAsymmetric,
  kTfHalfPixelForNn,
};

enum class Nearest {
  kRoundPreferFloor,
  kRoundPreferCeil,
  kFloor,
  kCeil,
  // Before opset 11 (Upsample, Resize-10): floor when upsampling, ceil when
  // downsampling, as ONNX Runtime does.
  kLegacy,
};

struct ResizeAttrs {
  Mode mode = Mode::kNearest;
  Coordinates coordinates = Coordinates::kHalfPixel;
  Nearest nearest = Nearest::kRoundPreferFloor;
  // Per axis: scales (empty when sizes are given) or sizes; size_is_batch
  // marks sizes elements that are the batch size (kept as the input's).
  std::vector<float> scales;
  std::vector<int64_t> sizes;
  std::vector<bool> size_is_batch;
};

// The input coordinate of output index `x` along an axis. `out` is the
// resized length before rounding (in * scale when scales are given), as in
// ONNX's reference: align_corners with scales that give no whole length
// (4 x 0.6) maps the corners of that fractional length.
double SourceCoordinate(Coordinates mode, int64_t x, double scale, int64_t in,
                        double out) {
  switch (mode) {
    case Coordinates::kHalfPixel:
      return (x + 0.5) / scale - 0.5;
    case Coordinates::kPyTorchHalfPixel:
      return out > 1.0 ? (x + 0.5) / scale - 0.5 : 0.0;
    case Coordinates::kAlignCorners:
      return out == 1.0 ? 0.0 : x * (in - 1) / (out - 1.0);
    case Coordinates::kAsymmetric:
      return x / scale;
    case Coordinates::kTfHalfPixelForNn:
      return (x + 0.5) / scale;
  }
  return 0.0;
}

int64_t NearestIndex(Nearest mode, double x, double scale) {
  switch (mode) {
    case Nearest::kRoundPreferFloor:
      return x == std::floor(x) + 0.5 ? static_cast<int64_t>(std::floor(x))
                                      : std::llround(x);
    case Nearest::kRoundPreferCeil:
      return x == std::floor(x) + 0.5 ? static_cast<int64_t>(std::ceil(x))
                                      : std::llround(x);
    case Nearest::kFloor:
      return static_cast<int64_t>(std::floor(x));
    case Nearest::kCeil:
      return static_cast<int64_t>(std::ceil(x));
    case Nearest::kLegacy:
      return static_cast<int64_t>(scale < 1.0 ? std::ceil(x) : std::floor(x));
  }
  return 0;
}

class ResizeKernel : public Kernel {
 public:
  ResizeKernel(std::string op, ResizeAttrs attrs)
      : op_(std::move(op)), attrs_(std::move(attrs)) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& x = *inputs[0];
    const size_t rank = x.size();
    const size_t given =
        attrs_.scales.empty() ? attrs_.sizes.size() : attrs_.scales.size();
    if (rank < static_cast<size_t>(kResizedAxes) || given != rank) {
      return ShapeError(
          op_,
          absl::StrCat("input ", ShapeToString(x), " has ", rank, " axes but ",
                       given, attrs_.scales.empty() ? " sizes" : " scales",
                       " are given (at least ", kResizedAxes, " axes)"));
    }
    Shape out(rank);
    for (size_t d = 0; d < rank; ++d) {
      if (!attrs_.scales.empty()) {
        out[d] = static_cast<int64_t>(
            std::floor(static_cast<double>(x[d]) * attrs_.scales[d]));
      } else {
        out[d] = attrs_.size_is_batch[d] ? x[d] : attrs_.sizes[d];
      }
      if (d + kResizedAxes < rank && out[d] != x[d]) {
        return ShapeError(
            op_, absl::StrCat("only the last ", kResizedAxes,
                              " axes may be resized, not axis ", d, " of ",
                              ShapeToString(x), " (to ", out[d], ")"));
      }
      if (out[d] <= 0 || out[d] > kMaxTensorElements) {
        return ShapeError(op_,
                          absl::StrCat("axis ", d, " of ", ShapeToString(x),
                                       " resizes to ", out[d]));
      }
    }
    return CheckedShape(std::move(out));
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const Plan plan = MakePlan(inputs[0]->shape(), output->shape());
    const float* x = inputs[0]->data();
    float* y = output->data();
#pragma omp parallel for schedule( \
    static) if (plan.planes > 1 && output->size() > kElementwiseBlock)
    for (int64_t p = 0; p < plan.planes; ++p) {
      const Eigen::MatrixXf rows =
          ConstMatrixMap(x + p * plan.in_h * plan.in_w, plan.in_h, plan.in_w) *
          plan.w_matrix.transpose();
      MatrixMap(y + p * plan.out_h * plan.out_w, plan.out_h, plan.out_w) =
          plan.h_matrix * rows;
    }
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    if (grad_inputs[0] == nullptr) return;
    const Plan plan = MakePlan(inputs[0]->shape(), grad_output.shape());
    const float* dy = grad_output.data();
    float* dx = grad_inputs[0]->data();
#pragma omp parallel for schedule( \
    static) if (plan.planes > 1 && grad_output.size() > kElementwiseBlock)
    for (int64_t p = 0; p < plan.planes; ++p) {
      const Eigen::MatrixXf rows =
          plan.h_matrix.transpose() *
          ConstMatrixMap(dy + p * plan.out_h * plan.out_w, plan.out_h,
                         plan.out_w);
      MatrixMap(dx + p * plan.in_h * plan.in_w, plan.in_h, plan.in_w) =
          rows * plan.w_matrix;
    }
  }

 private:
  struct Plan {
    int64_t planes, in_h, in_w, out_h, out_w;
    SparseRM h_matrix;  // [out_h, in_h]
    SparseRM w_matrix;  // [out_w, in_w]
  };

  Plan MakePlan(const Shape& in, const Shape& out) const {
    const size_t rank = in.size();
    Plan plan;
    plan.planes = Product(in.begin(), in.end() - kResizedAxes);
    plan.in_h = in[rank - 2];
    plan.in_w = in[rank - 1];
    plan.out_h = out[rank - 2];
    plan.out_w = out[rank - 1];
    plan.h_matrix = AxisMatrix(rank - 2, plan.in_h, plan.out_h);
    plan.w_matrix = AxisMatrix(rank - 1, plan.in_w, plan.out_w);
    return plan;
  }

  // The [out, in] interpolation matrix of axis `d`.
  SparseRM AxisMatrix(size_t d, int64_t in, int64_t out) const {
    // The scale maps coordinates: the given one, or out / in for sizes.
    const double scale = attrs_.scales.empty()
                             ? static_cast<double>(out) / in
                             : static_cast<double>(attrs_.scales[d]);
    const double length = attrs_.scales.empty() ? out : in * scale;
    std::vector<Eigen::Triplet<float>> entries;
    const auto clamp = [in](int64_t i) {
      return std::clamp<int64_t>(i, 0, in - 1);
    };
    for (int64_t o = 0; o < out; ++o) {
      const double x =
          SourceCoordinate(attrs_.coordinates, o, scale, in, length);
      if (attrs_.mode == Mode::kNearest) {
        entries.emplace_back(o, clamp(NearestIndex(attrs_.nearest, x, scale)),
                             1.0f);
        continue;
      }
      const double lo = std::floor(x);
      const float ratio = static_cast<float>(x - lo);
      const int64_t i = static_cast<int64_t>(lo);
      if (ratio != 1.0f) entries.emplace_back(o, clamp(i), 1.0f - ratio);
      if (ratio != 0.0f) entries.emplace_back(o, clamp(i + 1), ratio);
    }
    SparseRM m(out, in);
    m.setFromTriplets(entries.begin(), entries.end());
    return m;
  }

  const std::string op_;
  const ResizeAttrs attrs_;
};

// A string attribute that must be one of `choices` (mapped to values).
template <typename T>
absl::StatusOr<T> ParseChoice(
    const OpConfig& config, absl::string_view name,
    absl::string_view default_value,
    std::initializer_list<std::pair<absl::string_view, T>> choices) {
  absl::StatusOr<std::string> s = config.GetString(name, default_value);
  if (!s.ok()) return s.status();
  std::vector<absl::string_view> names;
  for (const auto& [text, value] : choices) {
    if (*s == text) return value;
    names.push_back(text);
  }
  return NodeError(
      config, absl::StrCat("unsupported ", name, " '", *s,
                           "' (supported: ", absl::StrJoin(names, ", "), ")"));
}

// Scales from a constant float input, or nullopt when absent or empty (a
// Resize with sizes may pass an empty scales tensor).
absl::StatusOr<std::optional<std::vector<float>>> ScalesInput(
    const OpConfig& config, int index) {
  if (index >= static_cast<int>(config.constant_inputs.size()) ||
      !config.constant_inputs[index].has_value() ||
      config.constant_inputs[index]->shape == Shape{0}) {
    return std::nullopt;
  }
  const ConstantInput& c = *config.constant_inputs[index];
  if (c.is_int || c.shape.size() != 1) {
    return NodeError(config, "scales must be a 1-D float tensor");
  }
  return c.floats;
}

absl::Status CheckScales(const OpConfig& config,
                         const std::vector<float>& scales) {
  for (float s : scales) {
    if (!(s > 0.0f) || !std::isfinite(s) || s > kMaxWindowAttribute) {
      return NodeError(
          config,
          absl::StrCat("scales [", absl::StrJoin(scales, ", "),
                       "] must be positive and at most ", kMaxWindowAttribute));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateResize(const OpConfig& config) {
  ResizeAttrs attrs;
  absl::StatusOr<Mode> mode = ParseChoice<Mode>(
      config, "mode", "nearest",
      {{"nearest", Mode::kNearest}, {"linear", Mode::kLinear}});
  if (!mode.ok()) return mode.status();
  attrs.mode = *mode;
  for (auto [name, default_value] :
       {std::pair{"exclude_outside", 0}, std::pair{"antialias", 0}}) {
    absl::StatusOr<int64_t> v = config.GetInt(name, default_value);
    if (!v.ok()) return v.status();
    if (*v != default_value) {
      return NodeError(config,
                       absl::StrCat(name, " ", *v, " is not supported"));
    }
  }
  absl::StatusOr<std::optional<std::vector<int64_t>>> axes =
      config.GetInts("axes");
  if (!axes.ok()) return axes.status();
  if (axes->has_value()) return NodeError(config, "axes are not supported");
  absl::StatusOr<std::string> policy =
      config.GetString("keep_aspect_ratio_policy", "stretch");
  if (!policy.ok()) return policy.status();
  if (*policy != "stretch") {
    return NodeError(config, absl::StrCat("keep_aspect_ratio_policy '", *policy,
                                          "' is not supported"));
  }
  int scales_input = 0;
  if (config.opset >= 11) {
    absl::StatusOr<Coordinates> coordinates = ParseChoice<Coordinates>(
        config, "coordinate_transformation_mode", "half_pixel",
        {{"half_pixel", Coordinates::kHalfPixel},
         {"pytorch_half_pixel", Coordinates::kPyTorchHalfPixel},
         {"align_corners", Coordinates::kAlignCorners},
         {"asymmetric", Coordinates::kAsymmetric},
         {"tf_half_pixel_for_nn", Coordinates::kTfHalfPixelForNn}});
    if (!coordinates.ok()) return coordinates.status();
    attrs.coordinates = *coordinates;
    absl::StatusOr<Nearest> nearest = ParseChoice<Nearest>(
        config, "nearest_mode", "round_prefer_floor",
        {{"round_prefer_floor", Nearest::kRoundPreferFloor},
         {"round_prefer_ceil", Nearest::kRoundPreferCeil},
         {"floor", Nearest::kFloor},
         {"ceil", Nearest::kCeil}});
    if (!nearest.ok()) return nearest.status();
    attrs.nearest = *nearest;
    scales_input = 1;  // after roi, which only tf_crop_and_resize reads
  } else {
    attrs.coordinates = Coordinates::kAsymmetric;
    attrs.nearest = Nearest::kLegacy;
  }
  absl::StatusOr<std::optional<std::vector<float>>> scales =
      ScalesInput(config, scales_input);
  if (!scales.ok()) return scales.status();
  const int sizes_input = scales_input + 1;
  const bool has_sizes =
      config.opset >= 11 &&
      sizes_input < static_cast<int>(config.constant_inputs.size()) &&
      config.constant_inputs[sizes_input].has_value();
  if (scales->has_value() == has_sizes) {
    return NodeError(config, "exactly one of scales and sizes must be given");
  }
  if (has_sizes) {
    const ConstantInput& sizes = *config.constant_inputs[sizes_input];
    if (!sizes.is_int || sizes.shape.size() != 1) {
      return NodeError(config, "sizes must be a 1-D int64 tensor");
    }
    attrs.sizes = sizes.ints;
    attrs.size_is_batch.assign(attrs.sizes.size(), false);
    for (size_t d = 0; d < sizes.batch_factor.size() && d < attrs.sizes.size();
         ++d) {
      // The batch itself keeps the axis; a multiple of it would resize the
      // batch, which no exporter does.
      if (sizes.batch_factor[d] > 1) {
        return NodeError(
            config, absl::StrCat("sizes[", d, "] is ", sizes.batch_factor[d],
                                 " x the batch size"));
      }
      attrs.size_is_batch[d] = sizes.batch_factor[d] == 1;
    }
  } else {
    attrs.scales = **scales;
    absl::Status valid = CheckScales(config, attrs.scales);
    if (!valid.ok()) return valid;
  }
  return std::make_unique<ResizeKernel>("Resize", std::move(attrs));
}

// Upsample: opset 7 gives scales as an attribute, 9 as input 1; mode
// nearest or linear ("bilinear" in older exporters).
absl::StatusOr<std::unique_ptr<Kernel>> CreateUpsample(const OpConfig& config) {
  ResizeAttrs attrs;
  absl::StatusOr<Mode> mode = ParseChoice<Mode>(config, "mode", "nearest",
                                                {{"nearest", Mode::kNearest},
                                                 {"linear", Mode::kLinear},
                                                 {"bilinear", Mode::kLinear}});
  if (!mode.ok()) return mode.status();
  attrs.mode = *mode;
  attrs.coordinates = Coordinates::kAsymmetric;
  attrs.nearest = Nearest::kLegacy;
  absl::StatusOr<std::optional<std::vector<float>>> scales =
      ScalesInput(config, 0);
  if (!scales.ok()) return scales.status();
  if (scales->has_value()) {
    attrs.scales = **scales;
  } else {
    const auto it = config.attributes.find("scales");
    if (it == config.attributes.end() ||
        it->second.type != Attribute::Type::kFloats) {
      return NodeError(config, "scales are required");
    }
    attrs.scales = it->second.floats;
  }
  absl::Status valid = CheckScales(config, attrs.scales);
  if (!valid.ok()) return valid;
  return std::make_unique<ResizeKernel>("Upsample", std::move(attrs));
}

}  // namespace

absl::Span<const OpEntry> ResizeOps() {
  static const OpEntry kOps[] = {
      // X, roi, scales, sizes (opset 10: X, scales).
      {"Resize", {1, 4, 1, 1, &CreateResize}},
      {"Upsample", {1, 2, 1, 1, &CreateUpsample}},
  };
  return kOps;
}

}  // namespace mixq::engine
