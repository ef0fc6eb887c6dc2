// ConvTranspose (1-D and 2-D, with groups, strides, dilations, pads,
// output_padding, output_shape and auto_pad): the adjoint of Conv's input
// gradient. A 1-D node runs as a 2-D one of height 1, as Conv does.
//
// Per sample and group the forward is one GEMM, cols [mg * taps, hw] =
// W_g^T X_g, whose rows are scattered (col2im) into the output planes: input
// pixel (iy, ix) under tap (i, j) lands on output (iy * sy + i * dy - pad_y,
// ix * sx + j * dx - pad_x). The backward gathers dY the same way (im2col)
// and takes dX = W_g cols and dW += X_g cols^T, GEMMs again. Samples are
// split between threads; dW is summed from a fixed number of partial sums in
// a fixed order, so the thread count changes no result.
#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "Eigen/Core"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/ops.h"
#include "engine/ops_util.h"
#include "engine/ops_window.h"

namespace mixq::engine {
namespace {

using StridedArrayMap = Eigen::Map<Eigen::ArrayXf, 0, Eigen::InnerStride<>>;
using StridedConstArrayMap =
    Eigen::Map<const Eigen::ArrayXf, 0, Eigen::InnerStride<>>;

// Weight gradients are summed from at most this many partial sums (one per
// interleaved set of samples).
constexpr int64_t kMaxPartials = 8;

// One spatial dim: input index `i` under tap `t` writes output
// i * stride + t * dilation - pad_begin.
struct TransposedDim {
  int64_t in = 1;
  int64_t kernel = 1;
  int64_t stride = 1;
  int64_t dilation = 1;
  int64_t pad_begin = 0;
  int64_t out = 1;

  int64_t extent() const { return dilation * (kernel - 1) + 1; }
  // Inputs [lo, hi) whose tap `t` lands inside the output.
  std::pair<int64_t, int64_t> ValidRange(int64_t t) const {
    const int64_t offset = t * dilation - pad_begin;
    const int64_t lo = std::max<int64_t>(0, -FloorDiv(offset, stride));
    const int64_t hi = std::min(in, FloorDiv(out - 1 - offset, stride) + 1);
    return {lo, std::max(lo, hi)};
  }
  int64_t OutputIndex(int64_t i, int64_t t) const {
    return i * stride + t * dilation - pad_begin;
  }
};

struct Geometry {
  int64_t n, c, m, group;
  int64_t cg, mg;  // channels per group, in and out
  TransposedDim y, x;
  int64_t taps;  // kernel height * width
  int64_t hw;    // input pixels
  int64_t p;     // output pixels
};

// The node's attributes, 2-D (1-D ones lifted).
struct TransposeAttrs {
  WindowAttrs window;
  std::vector<int64_t> output_padding;  // per dim, empty: zeros
  std::vector<int64_t> output_shape;    // spatial, empty: from the formula
  int rank = 0;                         // 1, 2, or 0: from the input
  int64_t group = 1;
};

// Calls f(row, channel offset in the group, iy, ix_lo, count, oy, ox_lo) for
// each run of input columns [ix_lo, ix_lo + count) of tap row `row` =
// (mi, i, j) that lands inside output row oy (columns ox_lo, ox_lo + sx, ...).
template <typename F>
void ForEachRun(const Geometry& g, F&& f) {
  for (int64_t mi = 0; mi < g.mg; ++mi) {
    for (int64_t i = 0; i < g.y.kernel; ++i) {
      const auto [ylo, yhi] = g.y.ValidRange(i);
      for (int64_t j = 0; j < g.x.kernel; ++j) {
        const auto [xlo, xhi] = g.x.ValidRange(j);
        if (xlo >= xhi) continue;
        const int64_t row = (mi * g.y.kernel + i) * g.x.kernel + j;
        for (int64_t iy = ylo; iy < yhi; ++iy) {
          f(row, mi, iy, xlo, xhi - xlo, g.y.OutputIndex(iy, i),
            g.x.OutputIndex(xlo, j));
        }
      }
    }
  }
}

class ConvTransposeKernel : public Kernel {
 public:
  explicit ConvTransposeKernel(TransposeAttrs attrs)
      : attrs_(std::move(attrs)) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    absl::StatusOr<Geometry> g = Resolve(inputs);
    if (!g.ok()) return g.status();
    if (inputs[0]->size() == 3) return CheckedShape({g->n, g->m, g->x.out});
    return CheckedShape({g->n, g->m, g->y.out, g->x.out});
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const Geometry g = *Resolve(Shapes(inputs));
    const float* x = inputs[0]->data();
    const float* w = inputs[1]->data();
    const float* b = inputs.size() == 3 ? inputs[2]->data() : nullptr;
    float* y = output->data();
    const int64_t rows = g.mg * g.taps;
    ParallelFor(g.n, g.n > 1, [&](int64_t n) {
      thread_local FloatBuffer cols_buffer;
      float* cols = Scratch(&cols_buffer, rows * g.hw);
      float* yn = y + n * g.m * g.p;
      if (b != nullptr) {
        MatrixMap(yn, g.m, g.p).colwise() = ConstVectorMap(b, g.m);
      } else {
        std::fill(yn, yn + g.m * g.p, 0.0f);
      }
      for (int64_t gi = 0; gi < g.group; ++gi) {
        MatrixMap(cols, rows, g.hw).noalias() =
            WeightsOf(g, w, gi).transpose() *
            ConstMatrixMap(x + (n * g.c + gi * g.cg) * g.hw, g.cg, g.hw);
        float* yg = yn + gi * g.mg * g.p;
        ForEachRun(g, [&](int64_t row, int64_t mi, int64_t iy, int64_t ix,
                          int64_t count, int64_t oy, int64_t ox) {
          StridedArrayMap(yg + mi * g.p + oy * g.x.out + ox, count,
                          Eigen::InnerStride<>(g.x.stride)) +=
              ConstArrayMap(cols + row * g.hw + iy * g.x.in + ix, count);
        });
      }
    });
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    const Geometry g = *Resolve(Shapes(inputs));
    const float* x = inputs[0]->data();
    const float* w = inputs[1]->data();
    const float* dy = grad_output.data();
    float* dx = grad_inputs[0] != nullptr ? grad_inputs[0]->data() : nullptr;
    float* dw = grad_inputs[1] != nullptr ? grad_inputs[1]->data() : nullptr;
    const int64_t rows = g.mg * g.taps;
    const int64_t w_size = g.c * rows;
    const int64_t partials = std::min(kMaxPartials, std::max<int64_t>(g.n, 1));
    Eigen::MatrixXf dw_parts =
        Eigen::MatrixXf::Zero(dw != nullptr ? w_size : 0, partials);
    if (dx != nullptr || dw != nullptr) {
      ParallelFor(partials, partials > 1, [&](int64_t part) {
        thread_local FloatBuffer cols_buffer;
        float* cols = Scratch(&cols_buffer, rows * g.hw);
        for (int64_t n = part; n < g.n; n += partials) {
          for (int64_t gi = 0; gi < g.group; ++gi) {
            std::fill(cols, cols + rows * g.hw, 0.0f);
            const float* dyg = dy + (n * g.m + gi * g.mg) * g.p;
            ForEachRun(g, [&](int64_t row, int64_t mi, int64_t iy, int64_t ix,
                              int64_t count, int64_t oy, int64_t ox) {
              ArrayMap(cols + row * g.hw + iy * g.x.in + ix, count) =
                  StridedConstArrayMap(dyg + mi * g.p + oy * g.x.out + ox,
                                       count, Eigen::InnerStride<>(g.x.stride));
            });
            const ConstMatrixMap colsm(cols, rows, g.hw);
            const int64_t offset = (n * g.c + gi * g.cg) * g.hw;
            if (dx != nullptr) {
              MatrixMap(dx + offset, g.cg, g.hw).noalias() =
                  WeightsOf(g, w, gi) * colsm;
            }
            if (dw != nullptr) {
              MatrixMap(dw_parts.col(part).data() + gi * g.cg * rows, g.cg,
                        rows)
                  .noalias() +=
                  ConstMatrixMap(x + offset, g.cg, g.hw) * colsm.transpose();
            }
          }
        }
      });
    }
    if (dw != nullptr) {
      VectorMap total(dw, w_size);
      total = dw_parts.col(0);
      for (int64_t part = 1; part < partials; ++part) {
        total += dw_parts.col(part);
      }
    }
    if (grad_inputs.size() == 3 && grad_inputs[2] != nullptr) {
      float* db = grad_inputs[2]->data();
      for (int64_t m = 0; m < g.m; ++m) {
        float sum = 0.0f;
        for (int64_t n = 0; n < g.n; ++n) {
          sum += ConstVectorMap(dy + (n * g.m + m) * g.p, g.p).sum();
        }
        db[m] = sum;
      }
    }
  }

 private:
  static std::vector<const Shape*> Shapes(
      absl::Span<const Tensor* const> inputs) {
    std::vector<const Shape*> shapes;
    for (const Tensor* t : inputs) shapes.push_back(&t->shape());
    return shapes;
  }

  // Group gi's weights W[gi cg .. (gi + 1) cg, :, :, :] as [cg, mg * taps].
  static ConstMatrixMap WeightsOf(const Geometry& g, const float* w,
                                  int64_t gi) {
    const int64_t rows = g.mg * g.taps;
    return ConstMatrixMap(w + gi * g.cg * rows, g.cg, rows);
  }

  static Shape WithUnitHeight(const Shape& s) {
    if (s.size() != 3) return s;
    return {s[0], s[1], 1, s[2]};
  }

  absl::StatusOr<Geometry> Resolve(
      absl::Span<const Shape* const> inputs) const {
    const size_t rank = attrs_.rank == 0 ? inputs[0]->size() : attrs_.rank + 2;
    if ((rank != 3 && rank != 4) || inputs[0]->size() != rank ||
        inputs[1]->size() != rank) {
      return ShapeError(
          "ConvTranspose",
          absl::StrCat("only 1-D and 2-D transposed convolution are "
                       "supported (X ",
                       ShapeToString(*inputs[0]), ", W ",
                       ShapeToString(*inputs[1]), "; expected rank ", rank,
                       " for both)"));
    }
    const Shape xs = WithUnitHeight(*inputs[0]);
    const Shape ws = WithUnitHeight(*inputs[1]);
    Geometry g;
    g.n = xs[0];
    g.c = xs[1];
    g.group = attrs_.group;
    g.cg = g.c / g.group;
    g.mg = ws[1];
    g.m = g.mg * g.group;
    if (g.c % g.group != 0 || ws[0] != g.c) {
      return ShapeError(
          "ConvTranspose",
          absl::StrCat("X ", ShapeToString(*inputs[0]), " and W ",
                       ShapeToString(*inputs[1]), " do not fit group ", g.group,
                       " (need W[0] = C, divisible by group)"));
    }
    const WindowAttrs& a = attrs_.window;
    if (!a.kernel.empty() && (a.kernel[0] != ws[2] || a.kernel[1] != ws[3])) {
      return ShapeError(
          "ConvTranspose",
          absl::StrCat("kernel_shape [", absl::StrJoin(a.kernel, ", "),
                       "] differs from W ", ShapeToString(*inputs[1])));
    }
    if (inputs.size() == 3 && *inputs[2] != Shape{g.m}) {
      return ShapeError("ConvTranspose",
                        absl::StrCat("B ", ShapeToString(*inputs[2]),
                                     " must be [", g.m, "]"));
    }
    for (int d = 0; d < 2; ++d) {
      TransposedDim& t = d == 0 ? g.y : g.x;
      t.in = xs[2 + d];
      t.kernel = ws[2 + d];
      if (!a.strides.empty()) t.stride = a.strides[d];
      if (!a.dilations.empty()) t.dilation = a.dilations[d];
      const int64_t out_padding =
          attrs_.output_padding.empty() ? 0 : attrs_.output_padding[d];
      if (out_padding >= std::max(t.stride, t.dilation)) {
        return ShapeError(
            "ConvTranspose",
            absl::StrCat("output_padding ", out_padding, " of spatial dim ", d,
                         " must be smaller than its stride or dilation"));
      }
      // The output the pads give, before any output_shape or auto_pad.
      const int64_t full = t.stride * (t.in - 1) + out_padding + t.extent();
      if (!attrs_.output_shape.empty() || a.auto_pad == AutoPad::kSameUpper ||
          a.auto_pad == AutoPad::kSameLower) {
        t.out = !attrs_.output_shape.empty() ? attrs_.output_shape[d]
                                             : t.in * t.stride;
        // As ONNX's reference: the odd unit of padding goes at the end,
        // except for SAME_UPPER (floor division, so a negative total adds
        // outputs at the end).
        const int64_t total = full - t.out;
        t.pad_begin = a.auto_pad == AutoPad::kSameUpper
                          ? FloorDiv(total, 2)
                          : total - FloorDiv(total, 2);
      } else {
        const int64_t pad_end = a.pads.empty() ? 0 : a.pads[d + 2];
        t.pad_begin = a.pads.empty() ? 0 : a.pads[d];
        if (a.auto_pad == AutoPad::kValid) t.pad_begin = 0;
        t.out =
            full - t.pad_begin - (a.auto_pad == AutoPad::kValid ? 0 : pad_end);
      }
      if (t.out <= 0) {
        return ShapeError("ConvTranspose",
                          absl::StrCat("spatial dim ", d, " of size ", t.in,
                                       " gives an empty output"));
      }
    }
    g.taps = g.y.kernel * g.x.kernel;
    g.hw = g.y.in * g.x.in;
    g.p = g.y.out * g.x.out;
    int64_t cols, macs;
    if (!MulWithin(g.mg * g.taps, g.hw, kMaxWindowBufferValues, &cols) ||
        !MulWithin(g.c * g.mg * g.taps, g.hw, kMaxWindowWork, &macs)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "ConvTranspose: a sample needs more than ", kMaxWindowBufferValues,
          " floats of column buffer (kMaxWindowBufferValues) or more than ",
          kMaxWindowWork, " multiply-adds (kMaxWindowWork)"));
    }
    return g;
  }

  const TransposeAttrs attrs_;
};

absl::StatusOr<std::unique_ptr<Kernel>> CreateConvTranspose(
    const OpConfig& config) {
  TransposeAttrs attrs;
  absl::StatusOr<WindowAttrs> window = ParseWindow(config, false, &attrs.rank);
  if (!window.ok()) return window.status();
  if (attrs.rank > 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ConvTranspose: only 1-D and 2-D transposed convolution are supported "
        "(node '",
        config.node_name, "': its attributes give ", attrs.rank,
        " spatial dims)"));
  }
  for (auto [name, values] :
       {std::pair{"output_padding", &attrs.output_padding},
        std::pair{"output_shape", &attrs.output_shape}}) {
    absl::StatusOr<std::optional<std::vector<int64_t>>> v =
        config.GetInts(name);
    if (!v.ok()) return v.status();
    if (!v->has_value()) continue;
    *values = **v;
    // output_shape may also give N and C.
    if (values == &attrs.output_shape && values->size() > 2 &&
        values->size() == static_cast<size_t>(attrs.rank) + 2) {
      values->erase(values->begin(), values->begin() + 2);
    }
    const int r = static_cast<int>(values->size());
    if ((attrs.rank != 0 && r != attrs.rank) || r == 0 || r > 2) {
      return NodeError(config,
                       absl::StrCat(name, " has ", r, " values for a rank-",
                                    attrs.rank, " window"));
    }
    attrs.rank = r;
    for (int64_t x : *values) {
      if (x < 0 || x > kMaxWindowAttribute) {
        return NodeError(
            config,
            absl::StrCat(name, " [", absl::StrJoin(*values, ", "),
                         "] must be in [0, ", kMaxWindowAttribute, "]"));
      }
    }
    // Lifted to 2-D: the unit leading dim has no padding and one output.
    if (r == 1) {
      values->insert(values->begin(), values == &attrs.output_shape ? 1 : 0);
    }
  }
  absl::StatusOr<int64_t> group = config.GetInt("group", 1);
  if (!group.ok()) return group.status();
  if (*group < 1) {
    return NodeError(config, absl::StrCat("group ", *group, " must be >= 1"));
  }
  attrs.group = *group;
  attrs.window = LiftTo2d(*std::move(window));
  return std::make_unique<ConvTransposeKernel>(std::move(attrs));
}

}  // namespace

absl::Span<const OpEntry> ConvTransposeOps() {
  static const OpEntry kOps[] = {
      {"ConvTranspose", {2, 3, 3, 1, &CreateConvTranspose}},
  };
  return kOps;
}

}  // namespace mixq::engine
