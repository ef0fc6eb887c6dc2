// Operators transformer exports need beyond the element-wise, convolution and
// shape families: Erf (PyTorch writes exact GELU as x/2 (1 + erf(x/sqrt 2))),
// Gelu (opset 20, exact or tanh), Split, Tile, and ArgMax for models that end
// with their prediction.
#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/ops.h"
#include "engine/ops_unary.h"
#include "engine/ops_util.h"
#include "unsupported/Eigen/SpecialFunctions"
#include "util/check.h"

namespace mixq::engine {
namespace {

// 2 / sqrt(pi): d/dx erf(x) = kTwoOverSqrtPi * exp(-x^2).
constexpr float kTwoOverSqrtPi = 1.1283791670955126f;
constexpr float kInvSqrt2 = 0.7071067811865476f;
// 1 / sqrt(2 pi): the standard normal density at 0.
constexpr float kInvSqrt2Pi = 0.3989422804014327f;
// sqrt(2 / pi) and the cubic coefficient of the tanh approximation of GELU.
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

struct ErfOp {
  void Forward(const ConstArrayMap& x, ArrayMap y) const { y = x.erf(); }
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = g * kTwoOverSqrtPi * (-x.square()).exp();
  }
};

// x * Phi(x), Phi the standard normal CDF.
struct GeluOp {
  void Forward(const ConstArrayMap& x, ArrayMap y) const {
    y = 0.5f * x * (1.0f + (x * kInvSqrt2).erf());
  }
  // Phi(x) + x * phi(x).
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = g * (0.5f * (1.0f + (x * kInvSqrt2).erf()) +
              x * kInvSqrt2Pi * (-0.5f * x.square()).exp());
  }
};

// x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
struct GeluTanhOp {
  void Forward(const ConstArrayMap& x, ArrayMap y) const {
    y = 0.5f * x * (1.0f + (kSqrt2OverPi * (x + kGeluCubic * x.cube())).tanh());
  }
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = (kSqrt2OverPi * (x + kGeluCubic * x.cube())).tanh();
    dx = g *
         (0.5f * (1.0f + dx) + 0.5f * x * (1.0f - dx.square()) * kSqrt2OverPi *
                                   (1.0f + 3.0f * kGeluCubic * x.square()));
  }
};

absl::StatusOr<std::unique_ptr<Kernel>> CreateGelu(const OpConfig& config) {
  const absl::StatusOr<std::string> approximate =
      config.GetString("approximate", "none");
  if (!approximate.ok()) return approximate.status();
  if (*approximate == "none") return MakeUnary(GeluOp{});
  if (*approximate == "tanh") return MakeUnary(GeluTanhOp{});
  return NodeError(config, absl::StrCat("unsupported attribute value "
                                        "approximate='",
                                        *approximate, "' (none or tanh)"));
}

// One output of Split: the part of the input along `axis` that output
// `index` of `parts` gets. The lengths are `split` (opset 13+: input 1, else
// the attribute), or else equal parts (from opset 18, the last may be
// shorter).
class SplitKernel : public Kernel {
 public:
  SplitKernel(int64_t axis, std::optional<std::vector<int64_t>> split,
              int parts, int index, bool allow_uneven)
      : axis_(axis),
        split_(std::move(split)),
        parts_(parts),
        index_(index),
        allow_uneven_(allow_uneven) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& in = *inputs[0];
    const absl::StatusOr<int64_t> axis =
        NormalizeAxis("Split", axis_, static_cast<int64_t>(in.size()));
    if (!axis.ok()) return axis.status();
    const absl::StatusOr<Part> part = GetPart(in[*axis]);
    if (!part.ok()) return part.status();
    Shape out = in;
    out[*axis] = part->length;
    return out;
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const Layout l = GetLayout(inputs[0]->shape());
    const float* x = inputs[0]->data();
    float* y = output->data();
    for (int64_t o = 0; o < l.outer; ++o) {
      ArrayMap(y + o * l.part, l.part) =
          ConstArrayMap(x + o * l.whole + l.offset, l.part);
    }
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    if (grad_inputs[0] == nullptr) return;
    const Layout l = GetLayout(inputs[0]->shape());
    grad_inputs[0]->SetZero();
    const float* g = grad_output.data();
    float* dx = grad_inputs[0]->data();
    for (int64_t o = 0; o < l.outer; ++o) {
      ArrayMap(dx + o * l.whole + l.offset, l.part) =
          ConstArrayMap(g + o * l.part, l.part);
    }
  }

 private:
  struct Part {
    int64_t start, length;
  };
  // The input as `outer` rows of `whole` values, of which this output takes
  // `part` from `offset`.
  struct Layout {
    int64_t outer, whole, part, offset;
  };

  absl::StatusOr<Part> GetPart(int64_t dim) const {
    if (split_) {
      if (static_cast<int>(split_->size()) != parts_) {
        return ShapeError("Split", absl::StrCat(split_->size(), " lengths for ",
                                                parts_, " outputs"));
      }
      int64_t total = 0;
      for (int64_t v : *split_) {
        if (v < 0 || __builtin_add_overflow(total, v, &total)) {
          return ShapeError("Split", "a length is negative or too large");
        }
      }
      if (total != dim) {
        return ShapeError("Split", absl::StrCat("the lengths add up to ", total,
                                                ", not the dim ", dim));
      }
      const int64_t start = std::accumulate(
          split_->begin(), split_->begin() + index_, int64_t{0});
      return Part{start, (*split_)[index_]};
    }
    if (dim % parts_ != 0 && !allow_uneven_) {
      return ShapeError(
          "Split", absl::StrCat("dim ", dim, " does not split into ", parts_,
                                " equal parts"));
    }
    const int64_t length = CeilDiv(dim, parts_);
    const int64_t start = std::min(dim, length * index_);
    return Part{start, std::min(length, dim - start)};
  }

  Layout GetLayout(const Shape& in) const {
    const int64_t rank = static_cast<int64_t>(in.size());
    const int64_t axis = axis_ < 0 ? axis_ + rank : axis_;
    const int64_t inner = Product(in.begin() + axis + 1, in.end());
    const Part part = *GetPart(in[axis]);
    return {Product(in.begin(), in.begin() + axis), in[axis] * inner,
            part.length * inner, part.start * inner};
  }

  const int64_t axis_;
  const std::optional<std::vector<int64_t>> split_;
  const int parts_;
  const int index_;
  const bool allow_uneven_;
};

// Opset 18 splits into equal parts by attribute num_outputs, the last one
// shorter when the dim does not divide.
constexpr int64_t kUnevenSplitOpset = 18;

absl::StatusOr<std::unique_ptr<Kernel>> CreateSplit(const OpConfig& config) {
  const absl::StatusOr<int64_t> axis = config.GetInt("axis", 0);
  if (!axis.ok()) return axis.status();
  absl::StatusOr<std::optional<std::vector<int64_t>>> split =
      config.GetIntsAttrOrInput("split", 0);
  if (!split.ok()) return split.status();
  const absl::StatusOr<int64_t> num_outputs =
      config.GetInt("num_outputs", config.num_outputs);
  if (!num_outputs.ok()) return num_outputs.status();
  if (*num_outputs != config.num_outputs) {
    return NodeError(
        config, absl::StrCat("num_outputs=", *num_outputs, " but the node has ",
                             config.num_outputs, " outputs"));
  }
  return std::make_unique<SplitKernel>(*axis, *std::move(split),
                                       config.num_outputs, config.output_index,
                                       config.opset >= kUnevenSplitOpset);
}

// Repeats the input `repeats[d]` times along every dim d. The output laid out
// as [r0, d0, r1, d1, ...] is the input [1, d0, 1, d1, ...] broadcast, so
// Tile is a broadcast (and its gradient the broadcast's reduction). Repeats
// may be multiples of the batch (BatchShape): `token.repeat(batch, 1, 1)`.
class TileKernel : public Kernel {
 public:
  explicit TileKernel(BatchShape repeats) : repeats_(std::move(repeats)) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& in = *inputs[0];
    absl::StatusOr<std::vector<int64_t>> repeats = repeats_.Resolve(inputs);
    if (!repeats.ok()) return ShapeError("Tile", repeats.status().message());
    if (in.size() != repeats->size()) {
      return ShapeError("Tile", absl::StrCat(repeats->size(),
                                             " repeats for an input of shape ",
                                             ShapeToString(in)));
    }
    Shape out(in.size());
    for (size_t d = 0; d < in.size(); ++d) {
      if ((*repeats)[d] < 0) return ShapeError("Tile", "a repeat is negative");
      if (__builtin_mul_overflow(in[d], (*repeats)[d], &out[d])) {
        return ShapeError("Tile", "the output is too large");
      }
    }
    return CheckedShape(std::move(out));
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const float* src = inputs[0]->data();
    float* dst = output->data();
    Runs(inputs[0]->shape(), output->shape())
        .ForEach([&](int64_t out_offset, int64_t in_offset, int64_t n,
                     int64_t stride) {
          if (stride == 0) {
            ArrayMap(dst + out_offset, n).setConstant(src[in_offset]);
          } else {
            ArrayMap(dst + out_offset, n) = ConstArrayMap(src + in_offset, n);
          }
        });
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    if (grad_inputs[0] == nullptr) return;
    grad_inputs[0]->SetZero();
    const float* src = grad_output.data();
    float* dst = grad_inputs[0]->data();
    Runs(inputs[0]->shape(), grad_output.shape())
        .ForEach([&](int64_t out_offset, int64_t in_offset, int64_t n,
                     int64_t stride) {
          if (stride == 0) {
            dst[in_offset] += ConstArrayMap(src + out_offset, n).sum();
          } else {
            ArrayMap(dst + in_offset, n) += ConstArrayMap(src + out_offset, n);
          }
        });
  }

 private:
  // The repeats are the output's dims over the input's (an empty input
  // repeats nothing).
  static BroadcastRuns Runs(const Shape& in, const Shape& out) {
    Shape spread;
    Shape tiled;
    for (size_t d = 0; d < in.size(); ++d) {
      spread.insert(spread.end(), {1, in[d]});
      tiled.insert(tiled.end(), {in[d] == 0 ? 0 : out[d] / in[d], in[d]});
    }
    return BroadcastRuns(spread, tiled);
  }

  const BatchShape repeats_;
};

absl::StatusOr<std::unique_ptr<Kernel>> CreateTile(const OpConfig& config) {
  if (config.constant_inputs.empty() || !config.constant_inputs[0] ||
      !config.constant_inputs[0]->is_int ||
      config.constant_inputs[0]->shape.size() != 1) {
    return NodeError(config, "the repeats must be a constant 1-D int64 tensor");
  }
  const ConstantInput& repeats = *config.constant_inputs[0];
  for (int64_t r : repeats.ints) {
    if (r < 0) return NodeError(config, "a repeat is negative");
  }
  absl::StatusOr<BatchShape> shape = BatchShape::Create(config, repeats);
  if (!shape.ok()) return shape.status();
  return std::make_unique<TileKernel>(*std::move(shape));
}

// The index of the largest element along `axis` (the first, or with
// select_last_index the last, of equal ones), as a float: runtime tensors are
// float, and indices up to 2^24 are exact. No gradient.
class ArgMaxKernel : public Kernel {
 public:
  ArgMaxKernel(int64_t axis, bool keepdims, bool select_last)
      : axis_(axis), keepdims_(keepdims), select_last_(select_last) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& in = *inputs[0];
    const absl::StatusOr<int64_t> axis =
        NormalizeAxis("ArgMax", axis_, static_cast<int64_t>(in.size()));
    if (!axis.ok()) return axis.status();
    if (in[*axis] == 0) {
      return ShapeError("ArgMax", absl::StrCat("axis ", *axis, " of ",
                                               ShapeToString(in), " is empty"));
    }
    Shape out = in;
    if (keepdims_) {
      out[*axis] = 1;
    } else {
      out.erase(out.begin() + *axis);
    }
    return out;
  }

  bool has_gradient() const override { return false; }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const Shape& in = inputs[0]->shape();
    const int64_t rank = static_cast<int64_t>(in.size());
    const int64_t axis = axis_ < 0 ? axis_ + rank : axis_;
    const int64_t n = in[axis];
    const int64_t inner = Product(in.begin() + axis + 1, in.end());
    const int64_t outer = Product(in.begin(), in.begin() + axis);
    const float* x = inputs[0]->data();
    float* y = output->data();
    for (int64_t o = 0; o < outer; ++o) {
      // Rows of [n, inner]: the running best per column.
      const float* block = x + o * n * inner;
      Eigen::Map<const Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic,
                                    Eigen::RowMajor>>
          rows(block, n, inner);
      Eigen::ArrayXf best = rows.row(0).transpose();
      Eigen::ArrayXf index = Eigen::ArrayXf::Zero(inner);
      for (int64_t k = 1; k < n; ++k) {
        const Eigen::ArrayXf row = rows.row(k).transpose();
        const auto better =
            select_last_ ? (row >= best).eval() : (row > best).eval();
        best = better.select(row, best);
        index = better.select(static_cast<float>(k), index);
      }
      ArrayMap(y + o * inner, inner) = index;
    }
  }

  void Backward(absl::Span<const Tensor* const>, const Tensor&,
                absl::Span<Tensor* const>) const override {
    MIXQ_CHECK(false, "ArgMax has no gradient (Model::Backward refuses it)");
  }

 private:
  const int64_t axis_;
  const bool keepdims_;
  const bool select_last_;
};

absl::StatusOr<std::unique_ptr<Kernel>> CreateArgMax(const OpConfig& config) {
  const absl::StatusOr<int64_t> axis = config.GetInt("axis", 0);
  const absl::StatusOr<int64_t> keepdims = config.GetInt("keepdims", 1);
  const absl::StatusOr<int64_t> select_last =
      config.GetInt("select_last_index", 0);
  for (const absl::Status& s :
       {axis.status(), keepdims.status(), select_last.status()}) {
    if (!s.ok()) return s;
  }
  for (int64_t flag : {*keepdims, *select_last}) {
    if (flag != 0 && flag != 1) {
      return NodeError(config, "keepdims and select_last_index must be 0 or 1");
    }
  }
  return std::make_unique<ArgMaxKernel>(*axis, *keepdims == 1,
                                        *select_last == 1);
}

}  // namespace

absl::Span<const OpEntry> TransformerOps() {
  static const OpEntry kOps[] = {
      {"Erf", {1, 1, 1, 1, &CreateUnary<ErfOp>}},
      {"Gelu", {1, 1, 1, 1, &CreateGelu}},
      {"Tile", {2, 2, 1, 1, &CreateTile}},
      {"Split",
       {1, 2, 1, kVariadic, &CreateSplit,
        /*optional_data_inputs=*/false, /*kernel_per_output=*/true}},
      {"ArgMax", {1, 1, 1, 1, &CreateArgMax}},
  };
  return kOps;
}

}  // namespace mixq::engine
