// Operators that move data without arithmetic: Concat, Transpose, Squeeze,
// Unsqueeze, Pad, Slice, Gather and Expand. Their configuration (axes, pads,
// starts, indices, shapes) must be constant; the importer folds the shape
// sub-graphs exporters emit into such constants.
#include <algorithm>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/ops.h"
#include "engine/ops_util.h"

namespace mixq::engine {
namespace {

using StridedVectorMap =
    Eigen::Map<const Eigen::VectorXf, 0, Eigen::InnerStride<>>;

std::vector<int64_t> Strides(const Shape& shape) {
  std::vector<int64_t> strides(shape.size());
  int64_t stride = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    strides[d] = stride;
    stride *= shape[d];
  }
  return strides;
}

using AxisMaps = std::vector<std::vector<int64_t>>;

// Copies between tensors whose elements correspond axis by axis:
// out[i_0, ..., i_{r-1}] = in[maps[0][i_0], ..., maps[r-1][i_{r-1}]], where a
// map entry of -1 means "no input element" (filled with a constant). Slice,
// Gather, Pad and their gradients are such maps. Trailing axes that map
// identically are copied as contiguous blocks, and runs of consecutive input
// indices on the last other axis as vector segments, so the common cases are
// a handful of memcpy-like Eigen assignments per row.
class AxisGather {
 public:
  AxisGather(const Shape& in, AxisMaps maps)
      : maps_(std::move(maps)), in_strides_(Strides(in)) {
    const size_t rank = maps_.size();
    for (const auto& map : maps_) {
      out_shape_.push_back(static_cast<int64_t>(map.size()));
    }
    // The innermost axis that does not map identically; the axes after it
    // form contiguous blocks.
    axis_ = 0;
    for (size_t d = rank; d-- > 0;) {
      bool identity = maps_[d].size() == static_cast<size_t>(in[d]);
      for (size_t i = 0; identity && i < maps_[d].size(); ++i) {
        identity = maps_[d][i] == static_cast<int64_t>(i);
      }
      if (!identity) {
        axis_ = d;
        break;
      }
    }
    block_ = rank == 0 ? 1 : Product(in.begin() + axis_ + 1, in.end());
    if (rank == 0) {
      runs_.push_back({0, 0, 1});
      return;
    }
    const std::vector<int64_t>& map = maps_[axis_];
    for (size_t i = 0; i < map.size(); ++i) {
      const int64_t src = map[i];
      if (!runs_.empty()) {
        Run& last = runs_.back();
        const bool extends = src < 0
                                 ? last.in < 0
                                 : last.in >= 0 && src == last.in + last.length;
        if (extends) {
          ++last.length;
          continue;
        }
      }
      runs_.push_back({static_cast<int64_t>(i), src, 1});
    }
  }

  const Shape& out_shape() const { return out_shape_; }

  void Forward(const float* in, float fill, float* out) const {
    ForEachRun([&](int64_t out_offset, int64_t in_offset, int64_t n) {
      VectorMap y(out + out_offset, n);
      if (in_offset < 0) {
        y.setConstant(fill);
      } else {
        y = ConstVectorMap(in + in_offset, n);
      }
    });
  }

  // grad_in += the gradient of Forward; entries mapped several times
  // (repeated Gather indices, reflected Pad borders) accumulate.
  void BackwardAdd(const float* grad_out, float* grad_in) const {
    ForEachRun([&](int64_t out_offset, int64_t in_offset, int64_t n) {
      if (in_offset < 0) return;
      VectorMap(grad_in + in_offset, n) +=
          ConstVectorMap(grad_out + out_offset, n);
    });
  }

 private:
  struct Run {
    int64_t out;     // first index on axis_ of the output
    int64_t in;      // first index on axis_ of the input, or -1: fill
    int64_t length;  // in indices of axis_
  };

  // Calls f(out_offset, in_offset or -1, n) for contiguous segments.
  template <typename F>
  void ForEachRun(F&& f) const {
    const size_t outer_rank = maps_.empty() ? 0 : axis_;
    const int64_t outer =
        Product(out_shape_.begin(), out_shape_.begin() + outer_rank);
    const int64_t row = (maps_.empty() ? 1 : out_shape_[axis_]) * block_;
    const int64_t axis_stride = maps_.empty() ? 0 : in_strides_[axis_];
    std::vector<int64_t> index(outer_rank, 0);
    for (int64_t o = 0; o < outer; ++o) {
      int64_t in_base = 0;
      for (size_t d = 0; d < outer_rank && in_base >= 0; ++d) {
        const int64_t src = maps_[d][index[d]];
        in_base = src < 0 ? -1 : in_base + src * in_strides_[d];
      }
      for (const Run& run : runs_) {
        const int64_t in_offset =
            in_base < 0 || run.in < 0 ? -1 : in_base + run.in * axis_stride;
        f(o * row + run.out * block_, in_offset, run.length * block_);
      }
      for (size_t d = outer_rank; d-- > 0;) {
        if (++index[d] < out_shape_[d]) break;
        index[d] = 0;
      }
    }
  }

  AxisMaps maps_;
  std::vector<int64_t> in_strides_;
  Shape out_shape_;
  size_t axis_ = 0;
  int64_t block_ = 1;
  std::vector<Run> runs_;
};

std::vector<int64_t> IdentityMap(int64_t n) {
  std::vector<int64_t> map(n);
  std::iota(map.begin(), map.end(), 0);
  return map;
}

// A kernel whose output is an AxisGather of its input (Pad, Slice, Gather):
// subclasses give the maps; the output shape is their lengths unless a
// subclass overrides OutputShape (Gather's index dims).
// The longest input axis AxisMapKernel maps (a 128 MiB map); far beyond
// real models' dims, which the per-sample limits on values keep below 2^28
// for tensors that hold any values.
constexpr int64_t kMaxMappedAxis = int64_t{1} << 24;

class AxisMapKernel : public Kernel {
 public:
  // `fill`: the value of outputs mapped to -1.
  explicit AxisMapKernel(float fill = 0.0f) : fill_(fill) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    // The maps hold 8 bytes per index of every axis, whatever the values
    // per sample: a graph input declaring a fixed batch of 2^31 - 1 (fuzzed:
    // [2147483647, 1]), or a tensor with no elements ([2^31, 0]), passes the
    // per-sample limits, and its map alone would take 16 GB.
    for (int64_t dim : *inputs[0]) {
      if (dim > kMaxMappedAxis) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "an input dim of ", dim, " is above the limit of ", kMaxMappedAxis,
            " for Slice, Pad and Gather on constants"));
      }
    }
    absl::StatusOr<AxisMaps> maps = Maps(*inputs[0]);
    if (!maps.ok()) return maps.status();
    Shape out;
    for (const auto& map : *maps)
      out.push_back(static_cast<int64_t>(map.size()));
    return CheckedShape(std::move(out));
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const Tensor& in = *inputs[0];
    AxisGather(in.shape(), *Maps(in.shape()))
        .Forward(in.data(), fill_, output->data());
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    if (grad_inputs[0] == nullptr) return;
    const Tensor& in = *inputs[0];
    grad_inputs[0]->SetZero();
    AxisGather(in.shape(), *Maps(in.shape()))
        .BackwardAdd(grad_output.data(), grad_inputs[0]->data());
  }

 protected:
  // Per axis of the input: the input index each output index reads, -1 for
  // the fill value. Forward and Backward only call it for shapes OutputShape
  // accepted.
  virtual absl::StatusOr<AxisMaps> Maps(const Shape& in) const = 0;

 private:
  const float fill_;
};

// ---------------------------------------------------------------- Concat --

class ConcatKernel : public Kernel {
 public:
  explicit ConcatKernel(int64_t axis) : axis_(axis) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& first = *inputs[0];
    const int64_t rank = static_cast<int64_t>(first.size());
    absl::StatusOr<int64_t> axis = NormalizeAxis("Concat", axis_, rank);
    if (!axis.ok()) return axis.status();
    Shape out = first;
    out[*axis] = 0;
    for (const Shape* in : inputs) {
      bool ok = in->size() == first.size();
      for (int64_t d = 0; ok && d < rank; ++d) {
        ok = d == *axis || (*in)[d] == first[d];
      }
      if (!ok) {
        return ShapeError(
            "Concat",
            absl::StrCat("inputs ", ShapeToString(first), " and ",
                         ShapeToString(*in), " differ outside axis ", axis_));
      }
      out[*axis] += (*in)[*axis];
    }
    return CheckedShape(std::move(out));
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    ForEachBlock(inputs, output->shape(),
                 [&](int i, int64_t in_offset, int64_t out_offset, int64_t n) {
                   VectorMap(output->data() + out_offset, n) =
                       ConstVectorMap(inputs[i]->data() + in_offset, n);
                 });
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    ForEachBlock(inputs, grad_output.shape(),
                 [&](int i, int64_t in_offset, int64_t out_offset, int64_t n) {
                   if (grad_inputs[i] == nullptr) return;
                   VectorMap(grad_inputs[i]->data() + in_offset, n) =
                       ConstVectorMap(grad_output.data() + out_offset, n);
                 });
  }

 private:
  // Calls f(input, in_offset, out_offset, n) for each contiguous block.
  template <typename F>
  void ForEachBlock(absl::Span<const Tensor* const> inputs, const Shape& out,
                    F&& f) const {
    const int64_t rank = static_cast<int64_t>(out.size());
    const int64_t axis = axis_ < 0 ? axis_ + rank : axis_;
    const int64_t outer = Product(out.begin(), out.begin() + axis);
    const int64_t out_row = Product(out.begin() + axis, out.end());
    int64_t column = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const Shape& in = inputs[i]->shape();
      const int64_t row = Product(in.begin() + axis, in.end());
      if (row > 0) {
        for (int64_t o = 0; o < outer; ++o) {
          f(static_cast<int>(i), o * row, o * out_row + column, row);
        }
      }
      column += row;
    }
  }

  const int64_t axis_;
};

absl::StatusOr<std::unique_ptr<Kernel>> CreateConcat(const OpConfig& config) {
  if (!config.attributes.contains("axis")) {
    return NodeError(config, "the 'axis' attribute is required");
  }
  const absl::StatusOr<int64_t> axis = config.GetInt("axis", 0);
  if (!axis.ok()) return axis.status();
  return std::make_unique<ConcatKernel>(*axis);
}

// ------------------------------------------------------------- Transpose --

// out[i_0, ..., i_{r-1}] = in[j] with j[perm[d]] = i_d.
void Permute(const Tensor& in, const std::vector<int64_t>& perm, Tensor* out) {
  const std::vector<int64_t> in_strides = Strides(in.shape());
  const Shape& out_shape = out->shape();
  const size_t rank = perm.size();
  if (rank == 0 || out->size() == 0) {
    if (out->size() > 0) out->data()[0] = in.data()[0];
    return;
  }
  std::vector<int64_t> strides(rank);
  for (size_t d = 0; d < rank; ++d) strides[d] = in_strides[perm[d]];
  const int64_t inner = out_shape.back();
  const int64_t inner_stride = strides.back();
  const int64_t outer = Product(out_shape.begin(), out_shape.end() - 1);
  std::vector<int64_t> index(rank - 1, 0);
  int64_t in_offset = 0;
  for (int64_t o = 0; o < outer; ++o) {
    VectorMap(out->data() + o * inner, inner) = StridedVectorMap(
        in.data() + in_offset, inner, Eigen::InnerStride<>(inner_stride));
    for (size_t d = rank - 1; d-- > 0;) {
      if (++index[d] < out_shape[d]) {
        in_offset += strides[d];
        break;
      }
      in_offset -= strides[d] * (out_shape[d] - 1);
      index[d] = 0;
    }
  }
}

class TransposeKernel : public Kernel {
 public:
  // An empty `perm` reverses the axes.
  explicit TransposeKernel(std::vector<int64_t> perm)
      : perm_(std::move(perm)) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& in = *inputs[0];
    const std::vector<int64_t> perm = Perm(in.size());
    if (perm.size() != in.size()) {
      return ShapeError("Transpose",
                        absl::StrCat("perm [", absl::StrJoin(perm_, ", "),
                                     "] does not match ", ShapeToString(in)));
    }
    Shape out(in.size());
    for (size_t d = 0; d < perm.size(); ++d) out[d] = in[perm[d]];
    return out;
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    Permute(*inputs[0], Perm(inputs[0]->shape().size()), output);
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    if (grad_inputs[0] == nullptr) return;
    const std::vector<int64_t> perm = Perm(inputs[0]->shape().size());
    std::vector<int64_t> inverse(perm.size());
    for (size_t d = 0; d < perm.size(); ++d)
      inverse[perm[d]] = static_cast<int64_t>(d);
    Permute(grad_output, inverse, grad_inputs[0]);
  }

 private:
  std::vector<int64_t> Perm(size_t rank) const {
    if (!perm_.empty()) return perm_;
    std::vector<int64_t> perm(rank);
    for (size_t d = 0; d < rank; ++d)
      perm[d] = static_cast<int64_t>(rank - 1 - d);
    return perm;
  }

  const std::vector<int64_t> perm_;
};

absl::StatusOr<std::unique_ptr<Kernel>> CreateTranspose(
    const OpConfig& config) {
  absl::StatusOr<std::optional<std::vector<int64_t>>> perm =
      config.GetInts("perm");
  if (!perm.ok()) return perm.status();
  std::vector<int64_t> values = perm->value_or(std::vector<int64_t>{});
  std::vector<bool> seen(values.size(), false);
  for (int64_t p : values) {
    if (p < 0 || p >= static_cast<int64_t>(values.size()) || seen[p]) {
      return NodeError(config,
                       absl::StrCat("perm [", absl::StrJoin(values, ", "),
                                    "] is not a permutation"));
    }
    seen[p] = true;
  }
  return std::make_unique<TransposeKernel>(std::move(values));
}

// ------------------------------------------------- Squeeze and Unsqueeze --

class SqueezeKernel : public CopyKernel {
 public:
  // Empty `axes`: every dim of size 1.
  explicit SqueezeKernel(std::vector<int64_t> axes) : axes_(std::move(axes)) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& in = *inputs[0];
    const int64_t rank = static_cast<int64_t>(in.size());
    std::vector<bool> drop(in.size(), axes_.empty());
    if (axes_.empty()) {
      for (size_t d = 0; d < in.size(); ++d) drop[d] = in[d] == 1;
    }
    for (int64_t a : axes_) {
      absl::StatusOr<int64_t> axis = NormalizeAxis("Squeeze", a, rank);
      if (!axis.ok()) return axis.status();
      if (in[*axis] != 1) {
        return ShapeError(
            "Squeeze",
            absl::StrCat("dim ", a, " of ", ShapeToString(in), " is not 1"));
      }
      drop[*axis] = true;
    }
    Shape out;
    for (size_t d = 0; d < in.size(); ++d) {
      if (!drop[d]) out.push_back(in[d]);
    }
    return out;
  }

 private:
  const std::vector<int64_t> axes_;
};

class UnsqueezeKernel : public CopyKernel {
 public:
  explicit UnsqueezeKernel(std::vector<int64_t> axes)
      : axes_(std::move(axes)) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& in = *inputs[0];
    const int64_t rank = static_cast<int64_t>(in.size() + axes_.size());
    std::vector<bool> inserted(rank, false);
    for (int64_t a : axes_) {
      absl::StatusOr<int64_t> axis = NormalizeAxis("Unsqueeze", a, rank);
      if (!axis.ok()) return axis.status();
      if (inserted[*axis]) {
        return ShapeError("Unsqueeze",
                          absl::StrCat("axis ", a, " is repeated"));
      }
      inserted[*axis] = true;
    }
    Shape out;
    auto next = in.begin();
    for (int64_t d = 0; d < rank; ++d) out.push_back(inserted[d] ? 1 : *next++);
    return out;
  }

 private:
  const std::vector<int64_t> axes_;
};

absl::StatusOr<std::unique_ptr<Kernel>> CreateSqueeze(const OpConfig& config) {
  absl::StatusOr<std::optional<std::vector<int64_t>>> axes =
      config.GetIntsAttrOrInput("axes", 0);
  if (!axes.ok()) return axes.status();
  return std::make_unique<SqueezeKernel>(
      axes->value_or(std::vector<int64_t>{}));
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateUnsqueeze(
    const OpConfig& config) {
  absl::StatusOr<std::optional<std::vector<int64_t>>> axes =
      config.GetIntsAttrOrInput("axes", 0);
  if (!axes.ok()) return axes.status();
  if (!axes->has_value()) return NodeError(config, "'axes' is required");
  return std::make_unique<UnsqueezeKernel>(**axes);
}

// ------------------------------------------------------------------- Pad --

enum class PadMode { kConstant, kReflect, kEdge };

class PadKernel : public AxisMapKernel {
 public:
  // pads: [begin_0, ..., begin_{n-1}, end_0, ..., end_{n-1}] for `axes`
  // (all axes in order when empty).
  PadKernel(std::vector<int64_t> pads, std::vector<int64_t> axes, PadMode mode,
            float value)
      : AxisMapKernel(value),
        pads_(std::move(pads)),
        axes_(std::move(axes)),
        mode_(mode) {}

  // The padded shape, checked (CheckedShape) without building the maps:
  // pads come from the file, and maps for a huge output would be allocated
  // before the check.
  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    std::vector<int64_t> pads;
    return PaddedShape(*inputs[0], &pads);
  }

 protected:
  absl::StatusOr<AxisMaps> Maps(const Shape& in) const override {
    std::vector<int64_t> pads;
    const absl::StatusOr<Shape> out = PaddedShape(in, &pads);
    if (!out.ok()) return out.status();
    const size_t rank = in.size();
    AxisMaps maps(rank);
    for (size_t d = 0; d < rank; ++d) {
      const int64_t begin = pads[d];
      const int64_t n = (*out)[d];
      std::vector<int64_t>& map = maps[d];
      map.resize(n);
      for (int64_t j = 0; j < n; ++j) {
        int64_t src = j - begin;
        if (src < 0 || src >= in[d]) {
          switch (mode_) {
            case PadMode::kConstant:
              src = -1;
              break;
            case PadMode::kEdge:
              src = std::clamp<int64_t>(src, 0, in[d] - 1);
              break;
            case PadMode::kReflect:
              src = src < 0 ? -src : 2 * (in[d] - 1) - src;
              break;
          }
        }
        map[j] = src;
      }
    }
    return maps;
  }

 private:
  // `in` padded; `*pads_out` gets every axis' pads ([begins..., ends...]).
  absl::StatusOr<Shape> PaddedShape(const Shape& in,
                                    std::vector<int64_t>* pads_out) const {
    const size_t rank = in.size();
    const size_t n_axes = axes_.empty() ? rank : axes_.size();
    if (pads_.size() != 2 * n_axes) {
      return ShapeError("Pad",
                        absl::StrCat("pads [", absl::StrJoin(pads_, ", "),
                                     "] do not match ", ShapeToString(in)));
    }
    std::vector<int64_t> pads(2 * rank, 0);
    std::vector<bool> seen(rank, false);
    for (size_t k = 0; k < n_axes; ++k) {
      int64_t axis = static_cast<int64_t>(k);
      if (!axes_.empty()) {
        absl::StatusOr<int64_t> a =
            NormalizeAxis("Pad", axes_[k], static_cast<int64_t>(rank));
        if (!a.ok()) return a.status();
        axis = *a;
      }
      if (seen[axis]) return ShapeError("Pad", "an axis is repeated");
      seen[axis] = true;
      pads[axis] = pads_[k];
      pads[axis + rank] = pads_[k + n_axes];
    }
    Shape out(rank);
    for (size_t d = 0; d < rank; ++d) {
      const int64_t begin = pads[d];
      const int64_t end = pads[d + rank];
      // Bounded pads keep the index arithmetic in Maps from overflowing.
      const auto small = [](int64_t p) {
        return p >= -kMaxTensorElements && p <= kMaxTensorElements;
      };
      const bool bounded = small(begin) && small(end);
      const int64_t n = bounded ? in[d] + begin + end : -1;
      if (n < 0 || n > kMaxTensorElements) {
        return ShapeError("Pad",
                          absl::StrCat("pads [", absl::StrJoin(pads, ", "),
                                       "] give a negative or huge dim for ",
                                       ShapeToString(in)));
      }
      const bool pads_outside = std::max(begin, end) > 0;
      if (pads_outside && mode_ != PadMode::kConstant && in[d] == 0) {
        return ShapeError("Pad", "cannot reflect or extend an empty axis");
      }
      if (mode_ == PadMode::kReflect && std::max(begin, end) >= in[d]) {
        return ShapeError(
            "Pad", absl::StrCat("reflect pads [", absl::StrJoin(pads, ", "),
                                "] must be smaller than the dims of ",
                                ShapeToString(in)));
      }
      out[d] = n;
    }
    *pads_out = std::move(pads);
    return CheckedShape(std::move(out));
  }

  const std::vector<int64_t> pads_;
  const std::vector<int64_t> axes_;
  const PadMode mode_;
};

constexpr int kPadsInput = 0;  // constant_inputs index, opset >= 11
constexpr int kPadValueInput = 1;
constexpr int kPadAxesInput = 2;  // opset >= 18
constexpr int64_t kPadInputsOpset = 11;

absl::StatusOr<std::unique_ptr<Kernel>> CreatePad(const OpConfig& config) {
  const absl::StatusOr<std::string> mode_name =
      config.GetString("mode", "constant");
  if (!mode_name.ok()) return mode_name.status();
  PadMode mode;
  if (*mode_name == "constant") {
    mode = PadMode::kConstant;
  } else if (*mode_name == "reflect") {
    mode = PadMode::kReflect;
  } else if (*mode_name == "edge") {
    mode = PadMode::kEdge;
  } else {
    return NodeError(config, absl::StrCat("unsupported attribute value mode='",
                                          *mode_name, "'"));
  }
  const auto input = [&](int i) -> const std::optional<ConstantInput>* {
    return i < static_cast<int>(config.constant_inputs.size()) &&
                   config.constant_inputs[i].has_value()
               ? &config.constant_inputs[i]
               : nullptr;
  };
  std::vector<int64_t> pads;
  float value = 0.0f;
  if (config.opset < kPadInputsOpset) {
    absl::StatusOr<std::optional<std::vector<int64_t>>> attr =
        config.GetInts("pads");
    if (!attr.ok()) return attr.status();
    if (!attr->has_value()) {
      return NodeError(config, "the 'pads' attribute is required");
    }
    pads = **attr;
    const absl::StatusOr<float> v = config.GetFloat("value", 0.0f);
    if (!v.ok()) return v.status();
    value = *v;
  } else {
    absl::StatusOr<std::optional<std::vector<int64_t>>> in =
        config.GetIntsAttrOrInput("pads", kPadsInput);
    if (!in.ok()) return in.status();
    if (!in->has_value()) {
      return NodeError(config, "the 'pads' input is required");
    }
    pads = **in;
    if (const auto* v = input(kPadValueInput)) {
      if ((*v)->is_int || (*v)->floats.size() != 1) {
        return NodeError(config, "constant_value must be a float scalar");
      }
      value = (*v)->floats[0];
    }
  }
  absl::StatusOr<std::optional<std::vector<int64_t>>> axes =
      config.GetIntsAttrOrInput("axes", kPadAxesInput);
  if (!axes.ok()) return axes.status();
  return std::make_unique<PadKernel>(
      std::move(pads), axes->value_or(std::vector<int64_t>{}), mode, value);
}

// ----------------------------------------------------------------- Slice --

class SliceKernel : public AxisMapKernel {
 public:
  // axes may be empty (0, 1, ...); steps may be empty (all 1).
  SliceKernel(std::vector<int64_t> starts, std::vector<int64_t> ends,
              std::vector<int64_t> axes, std::vector<int64_t> steps)
      : starts_(std::move(starts)),
        ends_(std::move(ends)),
        axes_(std::move(axes)),
        steps_(std::move(steps)) {}

 protected:
  absl::StatusOr<AxisMaps> Maps(const Shape& in) const override {
    const int64_t rank = static_cast<int64_t>(in.size());
    AxisMaps maps(rank);
    std::vector<bool> sliced(rank, false);
    for (size_t i = 0; i < starts_.size(); ++i) {
      absl::StatusOr<int64_t> axis = NormalizeAxis(
          "Slice", axes_.empty() ? static_cast<int64_t>(i) : axes_[i], rank);
      if (!axis.ok()) return axis.status();
      if (sliced[*axis]) {
        return ShapeError("Slice",
                          absl::StrCat("axis ", *axis, " is repeated"));
      }
      sliced[*axis] = true;
      const int64_t dim = in[*axis];
      if (dim == 0) continue;  // an empty map: nothing to slice
      // Steps longer than the dim select one element at most; clamping them
      // keeps the index arithmetic below from overflowing.
      const int64_t step = std::clamp<int64_t>(steps_.empty() ? 1 : steps_[i],
                                               -(dim + 1), dim + 1);
      // As in the ONNX spec: negatives count from the end; then starts clamp
      // to [0, dim] and ends to [0, dim] for positive steps, starts to
      // [0, dim - 1] and ends to [-1, dim - 1] for negative ones.
      const auto clamp = [&](int64_t v, int64_t lo, int64_t hi) {
        return std::clamp<int64_t>(v < 0 ? v + dim : v, lo, hi);
      };
      const int64_t start =
          step > 0 ? clamp(starts_[i], 0, dim) : clamp(starts_[i], 0, dim - 1);
      const int64_t end =
          step > 0 ? clamp(ends_[i], 0, dim) : clamp(ends_[i], -1, dim - 1);
      std::vector<int64_t>& map = maps[*axis];
      for (int64_t j = start; step > 0 ? j < end : j > end; j += step) {
        map.push_back(j);
      }
    }
    for (int64_t d = 0; d < rank; ++d) {
      if (!sliced[d]) maps[d] = IdentityMap(in[d]);
    }
    return maps;
  }

  const std::vector<int64_t> starts_, ends_, axes_, steps_;
};

constexpr int64_t kSliceInputsOpset = 10;

absl::StatusOr<std::unique_ptr<Kernel>> CreateSlice(const OpConfig& config) {
  std::optional<std::vector<int64_t>> parts[4];  // starts, ends, axes, steps
  const char* const kNames[4] = {"starts", "ends", "axes", "steps"};
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<std::optional<std::vector<int64_t>>> value =
        config.opset < kSliceInputsOpset && i < 3
            ? config.GetInts(kNames[i])
            : config.GetIntsAttrOrInput(kNames[i], i);
    if (!value.ok()) return value.status();
    parts[i] = *std::move(value);
  }
  if (!parts[0] || !parts[1]) {
    return NodeError(config, "starts and ends are required");
  }
  const size_t n = parts[0]->size();
  if (parts[1]->size() != n || (parts[2] && parts[2]->size() != n) ||
      (parts[3] && parts[3]->size() != n)) {
    return NodeError(config, "starts, ends, axes and steps differ in length");
  }
  if (parts[3] &&
      std::find(parts[3]->begin(), parts[3]->end(), 0) != parts[3]->end()) {
    return NodeError(config, "a step is 0");
  }
  return std::make_unique<SliceKernel>(
      *std::move(parts[0]), *std::move(parts[1]),
      parts[2].value_or(std::vector<int64_t>{}),
      parts[3].value_or(std::vector<int64_t>{}));
}

// ---------------------------------------------------------------- Gather --

// The output is an AxisGather viewed as in[:axis] + indices.shape +
// in[axis+1:] (the gathered axis's map lists the flattened indices).
class GatherKernel : public AxisMapKernel {
 public:
  GatherKernel(int64_t axis, Shape indices_shape, std::vector<int64_t> indices)
      : axis_(axis),
        indices_shape_(std::move(indices_shape)),
        indices_(std::move(indices)) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& in = *inputs[0];
    absl::StatusOr<int64_t> axis =
        NormalizeAxis("Gather", axis_, static_cast<int64_t>(in.size()));
    if (!axis.ok()) return axis.status();
    for (int64_t i : indices_) {
      if (i < -in[*axis] || i >= in[*axis]) {
        return ShapeError("Gather",
                          absl::StrCat("index ", i, " is out of range for dim ",
                                       *axis, " of ", ShapeToString(in)));
      }
    }
    Shape out(in.begin(), in.begin() + *axis);
    out.insert(out.end(), indices_shape_.begin(), indices_shape_.end());
    out.insert(out.end(), in.begin() + *axis + 1, in.end());
    return CheckedShape(std::move(out));
  }

 protected:
  absl::StatusOr<AxisMaps> Maps(const Shape& in) const override {
    const int64_t rank = static_cast<int64_t>(in.size());
    const int64_t axis = axis_ < 0 ? axis_ + rank : axis_;
    AxisMaps maps(rank);
    for (int64_t d = 0; d < rank; ++d) {
      if (d != axis) {
        maps[d] = IdentityMap(in[d]);
        continue;
      }
      for (int64_t i : indices_) maps[d].push_back(i < 0 ? i + in[d] : i);
    }
    return maps;
  }

 private:
  const int64_t axis_;
  const Shape indices_shape_;
  const std::vector<int64_t> indices_;
};

absl::StatusOr<std::unique_ptr<Kernel>> CreateGather(const OpConfig& config) {
  const absl::StatusOr<int64_t> axis = config.GetInt("axis", 0);
  if (!axis.ok()) return axis.status();
  if (config.constant_inputs.empty() || !config.constant_inputs[0] ||
      !config.constant_inputs[0]->is_int) {
    return NodeError(config, "the indices must be a constant int64 tensor");
  }
  const ConstantInput& indices = *config.constant_inputs[0];
  if (indices.has_batch()) {
    return NodeError(
        config,
        "the indices depend on the batch size; shape computation "
        "depends on the batch size in a way mixq cannot represent");
  }
  return std::make_unique<GatherKernel>(*axis, indices.shape, indices.ints);
}

// ---------------------------------------------------------------- Expand --

// Broadcasts the input to a constant shape whose batch elements (BatchShape)
// are resolved at the runtime batch.
class ExpandKernel : public Kernel {
 public:
  explicit ExpandKernel(BatchShape shape) : shape_(std::move(shape)) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& in = *inputs[0];
    absl::StatusOr<std::vector<int64_t>> target = shape_.Resolve(inputs);
    if (!target.ok()) return ShapeError("Expand", target.status().message());
    for (int64_t d : *target) {
      if (d < 0) {
        return ShapeError(
            "Expand", absl::StrCat("negative dim in ", ShapeToString(*target)));
      }
    }
    absl::StatusOr<Shape> out = BroadcastShapes(in, *target);
    if (!out.ok()) return ShapeError("Expand", out.status().message());
    return CheckedShape(*std::move(out));
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    output->SetZero();
    AddBroadcast(*inputs[0], 1.0f, output);
  }

  void Backward(absl::Span<const Tensor* const> /*inputs*/,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    if (grad_inputs[0] != nullptr) {
      ReduceBroadcast(grad_output, 1.0f, grad_inputs[0]);
    }
  }

 private:
  const BatchShape shape_;
};

// Expand's shape may hold batch elements (ConstantInput::batch_factor): a
// class token expanded to the batch runs at any batch.
absl::StatusOr<std::unique_ptr<Kernel>> CreateExpand(const OpConfig& config) {
  if (config.constant_inputs.empty() || !config.constant_inputs[0] ||
      !config.constant_inputs[0]->is_int ||
      config.constant_inputs[0]->shape.size() != 1) {
    return NodeError(config, "the shape must be a constant 1-D int64 tensor");
  }
  absl::StatusOr<BatchShape> shape =
      BatchShape::Create(config, *config.constant_inputs[0]);
  if (!shape.ok()) return shape.status();
  return std::make_unique<ExpandKernel>(*std::move(shape));
}

}  // namespace

absl::Span<const OpEntry> ShapeOps() {
  static const OpEntry kOps[] = {
      {"Concat", {1, kVariadic, kVariadic, 1, &CreateConcat}},
      {"Transpose", {1, 1, 1, 1, &CreateTranspose}},
      {"Squeeze", {1, 2, 1, 1, &CreateSqueeze}},
      {"Unsqueeze", {1, 2, 1, 1, &CreateUnsqueeze}},
      {"Pad", {1, 4, 1, 1, &CreatePad}},
      {"Slice", {1, 5, 1, 1, &CreateSlice}},
      {"Gather", {2, 2, 1, 1, &CreateGather}},
      {"Expand", {2, 2, 1, 1, &CreateExpand}},
  };
  return kOps;
}

}  // namespace mixq::engine
