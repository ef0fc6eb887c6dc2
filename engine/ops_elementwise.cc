// Element-wise operators: numpy-broadcasting arithmetic (Add, Sub, Mul, Div,
// Pow, PRelu, and the variadic Sum, Mean, Max, Min), activations and unary
// math (Relu, LeakyRelu, Sigmoid, Tanh, HardSigmoid, HardSwish, Elu, Softplus,
// Clip, Neg, Abs, Sqrt, Exp, Log, Reciprocal), Softmax / LogSoftmax,
// LayerNormalization and the reductions (ReduceSum, ReduceMean,
// ReduceSumSquare, ReduceMax, ReduceMin).
//
// Every kernel is a few Eigen array expressions per contiguous run of
// elements: broadcasting goes through BroadcastRuns, so a same-shape operand
// is one run and a per-channel operand ([N, C, H, W] op [C, 1, 1]) is one
// scalar per H*W run.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "engine/ops.h"
#include "engine/ops_unary.h"
#include "engine/ops_util.h"

namespace mixq::engine {
namespace {

constexpr float kInfinity = std::numeric_limits<float>::infinity();

// An INT attribute that must be 0 or 1.
absl::StatusOr<bool> GetFlag(const OpConfig& config, absl::string_view name,
                             bool default_value) {
  const absl::StatusOr<int64_t> value = config.GetInt(name, default_value);
  if (!value.ok()) return value.status();
  if (*value != 0 && *value != 1) {
    return NodeError(config, absl::StrCat("unsupported attribute value ", name,
                                          "=", *value, " (must be 0 or 1)"));
  }
  return *value == 1;
}

// ------------------------------------------------------- Broadcasting ----

// `in` broadcast to `shape` (a copy).
Tensor BroadcastTo(const Tensor& in, const Shape& shape) {
  Tensor out(shape);
  AddBroadcast(in, 1.0f, &out);
  return out;
}

// out = f(full, broadcast(other)), where `full` points at data of out's shape
// (it may be out's own data). f receives a run of `full` and the matching run
// of `other`, or `other`'s scalar where `other` is broadcast along the run, and
// returns an Eigen array expression (so it is written once, generically).
template <typename F>
void ApplyBroadcast(const float* full, const Tensor& other, Tensor* out,
                    F&& f) {
  const float* src = other.data();
  float* dst = out->data();
  if (other.shape() == out->shape()) {
    // No broadcasting (a residual Add): blocks of elements on the threads.
    ParallelBlocks(out->size(), [&](int64_t begin, int64_t n) {
      ArrayMap(dst + begin, n) =
          f(ConstArrayMap(full + begin, n), ConstArrayMap(src + begin, n));
    });
    return;
  }
  BroadcastRuns(other.shape(), out->shape())
      .ForEach([&](int64_t out_offset, int64_t in_offset, int64_t n,
                   int64_t stride) {
        ArrayMap y(dst + out_offset, n);
        const ConstArrayMap x(full + out_offset, n);
        if (stride == 1) {
          y = f(x, ConstArrayMap(src + in_offset, n));
        } else {
          y = f(x, src[in_offset]);
        }
      });
}

// grad = scale * `full` summed over the dims grad was broadcast along.
void ReduceTo(const Tensor& full, float scale, Tensor* grad) {
  if (grad->shape() == full.shape()) {
    const float* src = full.data();
    float* dst = grad->data();
    ParallelBlocks(full.size(), [&](int64_t begin, int64_t n) {
      ArrayMap(dst + begin, n) = scale * ConstArrayMap(src + begin, n);
    });
  } else {
    ReduceBroadcast(full, scale, grad);
  }
}

// grad = f(g, broadcast(other)) summed over the dims grad was broadcast along
// (the gradient of a product-like operand).
template <typename F>
void ReduceApplied(const Tensor& g, const Tensor& other, F&& f, Tensor* grad) {
  if (grad->shape() == g.shape()) {
    ApplyBroadcast(g.data(), other, grad, f);
    return;
  }
  if (other.shape() == g.shape()) {
    // The common per-channel case (the gradient of a [C, 1, 1] scale): each
    // run of f(g, other) is summed as it is computed, with no temporary.
    grad->SetZero();
    const float* gp = g.data();
    const float* op = other.data();
    float* dst = grad->data();
    BroadcastRuns(grad->shape(), g.shape())
        .ForEach([&](int64_t out_offset, int64_t in_offset, int64_t n,
                     int64_t stride) {
          const auto run = f(ConstArrayMap(gp + out_offset, n),
                             ConstArrayMap(op + out_offset, n));
          if (stride == 1) {
            ArrayMap(dst + in_offset, n) += run;
          } else {
            dst[in_offset] += run.sum();
          }
        });
    return;
  }
  Tensor full(g.shape());
  ApplyBroadcast(g.data(), other, &full, f);
  ReduceBroadcast(full, 1.0f, grad);
}

constexpr auto kPlus = [](const auto& x, const auto& y) { return x + y; };
constexpr auto kMinus = [](const auto& x, const auto& y) { return x - y; };
constexpr auto kTimes = [](const auto& x, const auto& y) { return x * y; };
constexpr auto kDivide = [](const auto& x, const auto& y) { return x / y; };
constexpr auto kMaximum = [](const auto& x, const auto& y) { return x.max(y); };
constexpr auto kMinimum = [](const auto& x, const auto& y) { return x.min(y); };
// 1 where x == y, else 0.
constexpr auto kEqual = [](const auto& x, const auto& y) {
  return (x == y).template cast<float>();
};

// x^y through std::pow: Eigen's vectorised pow trips GCC 12's
// -Wuninitialized inside the AVX-512 intrinsics (a false positive that
// -Werror builds cannot take). Squares, the common case, have a fast path.
struct PowFunctor {
  float operator()(float x, float y) const { return std::pow(x, y); }
};
template <typename X, typename Y>
auto Power(const Eigen::ArrayBase<X>& x, const Eigen::ArrayBase<Y>& y) {
  return x.binaryExpr(y, PowFunctor());
}
template <typename X>
auto Power(const Eigen::ArrayBase<X>& x, float y) {
  return x.unaryExpr([y](float v) { return std::pow(v, y); });
}
template <typename Y>
auto Power(float x, const Eigen::ArrayBase<Y>& y) {
  return y.unaryExpr([x](float v) { return std::pow(x, v); });
}
constexpr auto kPower = [](const auto& x, const auto& y) {
  return Power(x, y);
};

// --------------------------------------------------------- Arithmetic ----

enum class Arithmetic { kAdd, kSub, kMul, kDiv, kPow };

// A op B with numpy broadcasting (either or both inputs broadcast).
class ArithmeticKernel : public Kernel {
 public:
  ArithmeticKernel(absl::string_view op_type, Arithmetic op)
      : op_type_(op_type), op_(op) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    absl::StatusOr<Shape> out = BroadcastShapes(*inputs[0], *inputs[1]);
    if (!out.ok()) return ShapeError(op_type_, out.status().message());
    return CheckedShape(*std::move(out));
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    switch (op_) {
      case Arithmetic::kAdd:
        return Apply(*inputs[0], *inputs[1], output, kPlus);
      case Arithmetic::kSub:
        return Apply(*inputs[0], *inputs[1], output, kMinus);
      case Arithmetic::kMul:
        return Apply(*inputs[0], *inputs[1], output, kTimes);
      case Arithmetic::kDiv:
        return Apply(*inputs[0], *inputs[1], output, kDivide);
      case Arithmetic::kPow:
        // A one-element exponent leaves the base's elements in order.
        if (inputs[1]->size() == 1 && inputs[1]->data()[0] == 2.0f) {
          output->flat() = inputs[0]->flat().square();
          return;
        }
        return Apply(*inputs[0], *inputs[1], output, kPower);
    }
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    const Tensor& a = *inputs[0];
    const Tensor& b = *inputs[1];
    const Tensor& g = grad_output;
    Tensor* ga = grad_inputs[0];
    Tensor* gb = grad_inputs[1];
    switch (op_) {
      case Arithmetic::kAdd:
      case Arithmetic::kSub:
        if (ga != nullptr) ReduceTo(g, 1.0f, ga);
        if (gb != nullptr) {
          ReduceTo(g, op_ == Arithmetic::kAdd ? 1.0f : -1.0f, gb);
        }
        return;
      case Arithmetic::kMul:
        if (ga != nullptr) ReduceApplied(g, b, kTimes, ga);
        if (gb != nullptr) ReduceApplied(g, a, kTimes, gb);
        return;
      case Arithmetic::kDiv:
        if (ga != nullptr) ReduceApplied(g, b, kDivide, ga);
        if (gb != nullptr) {
          // d(a / b)/db = -(g / b) * (a / b), built in one output-sized
          // buffer.
          Tensor full(g.shape());
          ApplyBroadcast(g.data(), b, &full, kDivide);
          ApplyBroadcast(full.data(), a, &full, kTimes);
          ApplyBroadcast(full.data(), b, &full, kDivide);
          ReduceTo(full, -1.0f, gb);
        }
        return;
      case Arithmetic::kPow:
        return PowBackward(a, b, g, ga, gb);
    }
  }

 private:
  // out = f(broadcast(a), broadcast(b)): the operand with the output's shape
  // is streamed and the other read run by run; when neither has it, A is
  // broadcast into a temporary first.
  template <typename F>
  static void Apply(const Tensor& a, const Tensor& b, Tensor* out, F&& f) {
    if (a.shape() == out->shape()) {
      ApplyBroadcast(a.data(), b, out, f);
    } else if (b.shape() == out->shape()) {
      ApplyBroadcast(b.data(), a, out,
                     [&f](const auto& x, const auto& y) { return f(y, x); });
    } else {
      const Tensor full_a = BroadcastTo(a, out->shape());
      ApplyBroadcast(full_a.data(), b, out, f);
    }
  }

  // d(a^b)/da = b a^(b-1); d(a^b)/db = a^b log(a), taken as 0 where a <= 0
  // (a^b is not differentiable in b there; NaN would poison the exponent's
  // optimizer state).
  static void PowBackward(const Tensor& a, const Tensor& b, const Tensor& g,
                          Tensor* ga, Tensor* gb) {
    const Tensor base = BroadcastTo(a, g.shape());
    const Tensor exponent = BroadcastTo(b, g.shape());
    const ConstArrayMap x = base.flat();
    const ConstArrayMap y = exponent.flat();
    Tensor full(g.shape());
    if (ga != nullptr) {
      full.flat() = g.flat() * y * Power(x, y - 1.0f);
      ReduceTo(full, 1.0f, ga);
    }
    if (gb != nullptr) {
      full.flat() = (x > 0.0f).select(g.flat() * Power(x, y) * x.log(), 0.0f);
      ReduceTo(full, 1.0f, gb);
    }
  }

  const absl::string_view op_type_;
  const Arithmetic op_;
};

// PRelu: X where X > 0, slope * X elsewhere; slope broadcasts to X
// (unidirectionally).
class PReluKernel : public Kernel {
 public:
  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const absl::Status status = CheckBroadcastsTo(*inputs[1], *inputs[0]);
    if (!status.ok()) return ShapeError("PRelu slope", status.message());
    return *inputs[0];
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    ApplyBroadcast(inputs[0]->data(), *inputs[1], output,
                   [](const auto& x, const auto& slope) {
                     return (x > 0.0f).select(x, x * slope);
                   });
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    const Tensor& x = *inputs[0];
    const ConstArrayMap g = grad_output.flat();
    if (grad_inputs[0] != nullptr) {
      Tensor* gx = grad_inputs[0];
      ApplyBroadcast(grad_output.data(), *inputs[1], gx, kTimes);
      gx->flat() = (x.flat() > 0.0f).select(g, gx->flat());
    }
    if (grad_inputs[1] != nullptr) {
      Tensor full(x.shape());
      full.flat() = (x.flat() > 0.0f).select(0.0f, g * x.flat());
      ReduceTo(full, 1.0f, grad_inputs[1]);
    }
  }
};

enum class Variadic { kSum, kMean, kMax, kMin };

// Sum, Mean, Max and Min of any number of inputs, with numpy broadcasting.
// The gradient of Max / Min goes to the inputs that attain the extreme,
// shared equally where several do.
class VariadicKernel : public Kernel {
 public:
  VariadicKernel(absl::string_view op_type, Variadic op)
      : op_type_(op_type), op_(op) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    Shape out = *inputs[0];
    for (size_t i = 1; i < inputs.size(); ++i) {
      absl::StatusOr<Shape> next = BroadcastShapes(out, *inputs[i]);
      if (!next.ok()) return ShapeError(op_type_, next.status().message());
      out = *std::move(next);
    }
    return CheckedShape(std::move(out));
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    output->SetZero();
    switch (op_) {
      case Variadic::kSum:
      case Variadic::kMean: {
        const float scale = Scale(inputs.size());
        for (const Tensor* input : inputs) AddBroadcast(*input, scale, output);
        return;
      }
      case Variadic::kMax:
      case Variadic::kMin:
        AddBroadcast(*inputs[0], 1.0f, output);
        for (size_t i = 1; i < inputs.size(); ++i) {
          if (op_ == Variadic::kMax) {
            ApplyBroadcast(output->data(), *inputs[i], output, kMaximum);
          } else {
            ApplyBroadcast(output->data(), *inputs[i], output, kMinimum);
          }
        }
        return;
    }
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    if (op_ == Variadic::kSum || op_ == Variadic::kMean) {
      const float scale = Scale(inputs.size());
      for (Tensor* grad : grad_inputs) {
        if (grad != nullptr) ReduceTo(grad_output, scale, grad);
      }
      return;
    }
    // share = g / (number of inputs at the extreme), per output element.
    const Shape& shape = grad_output.shape();
    Tensor extreme(shape);
    Forward(inputs, &extreme);
    Tensor mask(shape);
    Tensor share(shape);
    for (const Tensor* input : inputs) {
      ApplyBroadcast(extreme.data(), *input, &mask, kEqual);
      share.flat() += mask.flat();
    }
    share.flat() = grad_output.flat() / share.flat();
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (grad_inputs[i] == nullptr) continue;
      ApplyBroadcast(extreme.data(), *inputs[i], &mask, kEqual);
      mask.flat() *= share.flat();
      ReduceTo(mask, 1.0f, grad_inputs[i]);
    }
  }

 private:
  float Scale(size_t n) const {
    return op_ == Variadic::kMean ? 1.0f / static_cast<float>(n) : 1.0f;
  }

  const absl::string_view op_type_;
  const Variadic op_;
};

// The derivative at 0 is taken as 0.
struct ReluOp {
  void Forward(const ConstArrayMap& x, ArrayMap y) const { y = x.max(0.0f); }
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = (x > 0.0f).select(g, 0.0f);
  }
};

struct LeakyReluOp {
  float alpha;
  void Forward(const ConstArrayMap& x, ArrayMap y) const {
    y = (x > 0.0f).select(x, alpha * x);
  }
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = (x > 0.0f).select(g, alpha * g);
  }
};

// Eigen's logistic saturates instead of overflowing for large |x|.
struct SigmoidOp {
  void Forward(const ConstArrayMap& x, ArrayMap y) const { y = x.logistic(); }
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = x.logistic();
    dx = g * dx * (1.0f - dx);
  }
};

struct TanhOp {
  void Forward(const ConstArrayMap& x, ArrayMap y) const { y = x.tanh(); }
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = x.tanh();
    dx = g * (1.0f - dx.square());
  }
};

// max(0, min(1, alpha * x + beta)).
struct HardSigmoidOp {
  float alpha;
  float beta;
  void Forward(const ConstArrayMap& x, ArrayMap y) const {
    y = (alpha * x + beta).max(0.0f).min(1.0f);
  }
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = alpha * x + beta;
    dx = (dx > 0.0f && dx < 1.0f).select(alpha * g, 0.0f);
  }
};

// x * HardSigmoid(x) with alpha = 1/6, beta = 1/2 (ONNX HardSwish-14).
struct HardSwishOp {
  static constexpr float kAlpha = 1.0f / 6.0f;
  static constexpr float kBeta = 0.5f;
  // Where alpha * x + beta leaves [0, 1].
  static constexpr float kLow = -kBeta / kAlpha;
  static constexpr float kHigh = (1.0f - kBeta) / kAlpha;
  void Forward(const ConstArrayMap& x, ArrayMap y) const {
    y = x * (kAlpha * x + kBeta).max(0.0f).min(1.0f);
  }
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = (x < kLow).select(
        0.0f, (x > kHigh).select(g, g * (2.0f * kAlpha * x + kBeta)));
  }
};

// x where x > 0, alpha * (exp(x) - 1) elsewhere.
struct EluOp {
  float alpha;
  void Forward(const ConstArrayMap& x, ArrayMap y) const {
    y = (x > 0.0f).select(x, alpha * x.expm1());
  }
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = (x > 0.0f).select(g, alpha * g * x.exp());
  }
};

// log(1 + exp(x)) as max(x, 0) + log1p(exp(-|x|)), which cannot overflow.
struct SoftplusOp {
  void Forward(const ConstArrayMap& x, ArrayMap y) const {
    y = x.max(0.0f) + (-x.abs()).exp().log1p();
  }
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = g * x.logistic();
  }
};

// min(max(x, lo), hi) (all hi when lo > hi, as ONNX specifies). The gradient
// passes where lo < x < hi.
struct ClipOp {
  float lo;
  float hi;
  void Forward(const ConstArrayMap& x, ArrayMap y) const {
    y = x.max(lo).min(hi);
  }
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = (x > lo && x < hi).select(g, 0.0f);
  }
};

struct NegOp {
  void Forward(const ConstArrayMap& x, ArrayMap y) const { y = -x; }
  void Backward(const ConstArrayMap&, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = -g;
  }
};

// The derivative at 0 is taken as 0.
struct AbsOp {
  void Forward(const ConstArrayMap& x, ArrayMap y) const { y = x.abs(); }
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = g * x.sign();
  }
};

struct SqrtOp {
  void Forward(const ConstArrayMap& x, ArrayMap y) const { y = x.sqrt(); }
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = 0.5f * g / x.sqrt();
  }
};

struct ExpOp {
  void Forward(const ConstArrayMap& x, ArrayMap y) const { y = x.exp(); }
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = g * x.exp();
  }
};

struct ReciprocalOp {
  void Forward(const ConstArrayMap& x, ArrayMap y) const { y = x.inverse(); }
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = -g * x.inverse().square();
  }
};

struct LogOp {
  void Forward(const ConstArrayMap& x, ArrayMap y) const { y = x.log(); }
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = g / x;
  }
};

// ----------------------------------------------------------- Softmax ----

using RowArray = Eigen::Array<float, 1, Eigen::Dynamic>;
// A block whose columns are the vectors softmax normalises (the reduced axis
// runs down each column): column-major when that axis is innermost, row-major
// [axis, inner] blocks otherwise.
using ColumnsMap = Eigen::Map<Eigen::ArrayXXf>;
using ConstColumnsMap = Eigen::Map<const Eigen::ArrayXXf>;
using RowMajorArrayXXf =
    Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using BlockMap = Eigen::Map<RowMajorArrayXXf>;
using ConstBlockMap = Eigen::Map<const RowMajorArrayXXf>;

// y = softmax (or log-softmax) of every column of x, shifted by the column's
// maximum so exp never overflows.
//
// Transcendental functions are applied to plain blocks only: Eigen does not
// vectorise exp() of a rowwise-broadcast expression (it is ~5x slower).
template <typename In, typename Out>
void SoftmaxColumns(const In& x, bool log, Out y) {
  const RowArray max = x.colwise().maxCoeff();
  y = x.rowwise() - max;
  if (log) {
    const RowArray log_sum = y.exp().colwise().sum().log();
    y.rowwise() -= log_sum;
  } else {
    y = y.exp();
    const RowArray inverse_sum = y.colwise().sum().inverse();
    y.rowwise() *= inverse_sum;
  }
}

// dx from the upstream gradient g, with dx holding the forward output y:
// softmax dx = y * (g - Σ g y); log-softmax dx = g - exp(y) Σ g.
template <typename In, typename Out>
void SoftmaxColumnsBackward(const In& g, bool log, Out dx) {
  if (log) {
    const RowArray sum = g.colwise().sum();
    dx = dx.exp();
    dx = g - (dx.rowwise() * sum);
  } else {
    const RowArray dot = (g * dx).colwise().sum();
    dx = dx * (g.rowwise() - dot);
  }
}

// Softmax and LogSoftmax. From opset 13 along `axis` (default -1); before, the
// input is coerced to 2-D [prod(dims[:axis]), prod(dims[axis:])] (axis
// default 1) and normalised along its rows.
class SoftmaxKernel : public Kernel {
 public:
  SoftmaxKernel(absl::string_view op_type, bool log, int64_t axis,
                bool coerce_2d)
      : op_type_(op_type), log_(log), axis_(axis), coerce_2d_(coerce_2d) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const absl::StatusOr<int64_t> axis =
        NormalizeAxis(op_type_, axis_, static_cast<int64_t>(inputs[0]->size()));
    if (!axis.ok()) return axis.status();
    return *inputs[0];
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const Dims d = GetDims(inputs[0]->shape());
    if (d.size() == 0) return;
    ForEachBlock(d, inputs[0]->data(), output->data(),
                 [&](const auto& x, auto y) { SoftmaxColumns(x, log_, y); });
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    if (grad_inputs[0] == nullptr) return;
    const Dims d = GetDims(inputs[0]->shape());
    if (d.size() == 0) return;
    // The forward output is recomputed into the gradient's buffer.
    Forward(inputs, grad_inputs[0]);
    ForEachBlock(
        d, grad_output.data(), grad_inputs[0]->data(),
        [&](const auto& g, auto dx) { SoftmaxColumnsBackward(g, log_, dx); });
  }

 private:
  // The input as [outer, axis, inner], normalised along `axis`.
  struct Dims {
    int64_t outer, axis, inner;
    int64_t size() const { return outer * axis * inner; }
  };

  // Calls f(in, out) on the blocks of `d` whose columns are normalised: one
  // column-major block when the axis is innermost, else one row-major
  // [axis, inner] block per outer index.
  template <typename F>
  static void ForEachBlock(const Dims& d, const float* in, float* out, F&& f) {
    if (d.inner == 1) {
      f(ConstColumnsMap(in, d.axis, d.outer), ColumnsMap(out, d.axis, d.outer));
      return;
    }
    for (int64_t o = 0; o < d.outer; ++o) {
      const int64_t offset = o * d.axis * d.inner;
      f(ConstBlockMap(in + offset, d.axis, d.inner),
        BlockMap(out + offset, d.axis, d.inner));
    }
  }

  Dims GetDims(const Shape& shape) const {
    const int64_t rank = static_cast<int64_t>(shape.size());
    const int64_t a = axis_ < 0 ? axis_ + rank : axis_;
    Dims d;
    d.outer = Product(shape.begin(), shape.begin() + a);
    if (coerce_2d_) {
      d.axis = Product(shape.begin() + a, shape.end());
      d.inner = 1;
    } else {
      d.axis = shape[a];
      d.inner = Product(shape.begin() + a + 1, shape.end());
    }
    return d;
  }

  const absl::string_view op_type_;
  const bool log_;
  const int64_t axis_;
  const bool coerce_2d_;
};

// ------------------------------------------------ LayerNormalization ----

// LayerNormalization-17: each row of X viewed as [prod(dims[:axis]),
// prod(dims[axis:])] is normalised to zero mean and unit variance
// (N = (x - mean) / sqrt(var + epsilon)), then Y = N * Scale + B, with Scale
// and B broadcasting to X. Only Y is produced (not Mean / InvStdDev).
class LayerNormKernel : public Kernel {
 public:
  LayerNormKernel(int64_t axis, float epsilon)
      : axis_(axis), epsilon_(epsilon) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& x = *inputs[0];
    const absl::StatusOr<int64_t> axis = NormalizeAxis(
        "LayerNormalization", axis_, static_cast<int64_t>(x.size()));
    if (!axis.ok()) return axis.status();
    for (size_t i = 1; i < inputs.size(); ++i) {
      const absl::Status status = CheckBroadcastsTo(*inputs[i], x);
      if (!status.ok()) {
        return ShapeError(
            i == 1 ? "LayerNormalization Scale" : "LayerNormalization B",
            status.message());
      }
    }
    return x;
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    Normalize(*inputs[0], output, nullptr);
    ApplyBroadcast(output->data(), *inputs[1], output, kTimes);
    if (inputs.size() == 3) {
      ApplyBroadcast(output->data(), *inputs[2], output, kPlus);
    }
  }

  // With dN = g * Scale, the gradient of N, per row
  // dX = inv_std * (dN - mean(dN) - N * mean(dN * N)).
  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    const Tensor& x = *inputs[0];
    const Tensor& g = grad_output;
    Tensor normalized(x.shape());
    Eigen::ArrayXf inv_std;
    Normalize(x, &normalized, &inv_std);
    if (grad_inputs.size() == 3 && grad_inputs[2] != nullptr) {
      ReduceTo(g, 1.0f, grad_inputs[2]);
    }
    if (grad_inputs[1] != nullptr) {
      ReduceApplied(g, normalized, kTimes, grad_inputs[1]);
    }
    if (grad_inputs[0] == nullptr) return;
    Tensor* gx = grad_inputs[0];
    ApplyBroadcast(g.data(), *inputs[1], gx, kTimes);  // dN
    const Rows rows = GetRows(x.shape());
    const ConstBlockMap n(normalized.data(), rows.outer, rows.inner);
    BlockMap dx(gx->data(), rows.outer, rows.inner);
    const Eigen::ArrayXf mean_dn = dx.rowwise().mean();
    const Eigen::ArrayXf mean_dn_n = (dx * n).rowwise().mean();
    dx = dx.colwise() - mean_dn;
    dx -= n.colwise() * mean_dn_n;
    dx.colwise() *= inv_std;
  }

 private:
  struct Rows {
    int64_t outer, inner;
  };

  Rows GetRows(const Shape& shape) const {
    const int64_t rank = static_cast<int64_t>(shape.size());
    const int64_t a = axis_ < 0 ? axis_ + rank : axis_;
    return {Product(shape.begin(), shape.begin() + a),
            Product(shape.begin() + a, shape.end())};
  }

  // out = N; inv_std (when non-null) = 1 / sqrt(var + epsilon) per row.
  void Normalize(const Tensor& x, Tensor* out, Eigen::ArrayXf* inv_std) const {
    const Rows rows = GetRows(x.shape());
    if (rows.inner == 0) return;
    const ConstBlockMap in(x.data(), rows.outer, rows.inner);
    BlockMap n(out->data(), rows.outer, rows.inner);
    const Eigen::ArrayXf mean = in.rowwise().mean();
    n = in.colwise() - mean;
    Eigen::ArrayXf inverse = (n.square().rowwise().mean() + epsilon_).rsqrt();
    n.colwise() *= inverse;
    if (inv_std != nullptr) *inv_std = std::move(inverse);
  }

  const int64_t axis_;
  const float epsilon_;
};

// --------------------------------------------------------- Reductions ----

enum class Reduction { kSum, kMean, kSumSquare, kMax, kMin };

// ReduceSum, ReduceMean, ReduceSumSquare, ReduceMax and ReduceMin over `axes`
// (all axes when nullopt), keeping the reduced axes as size 1 when keepdims;
// an empty axes list is the identity (noop_with_empty_axes). The gradient of
// ReduceMax / ReduceMin is shared equally by the elements that attain the
// extreme (a subgradient at ties, as PyTorch's amax/amin).
class ReduceKernel : public Kernel {
 public:
  ReduceKernel(absl::string_view op_type, Reduction reduction,
               std::optional<std::vector<int64_t>> axes, bool keepdims)
      : op_type_(op_type),
        reduction_(reduction),
        axes_(std::move(axes)),
        keepdims_(keepdims) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& in = *inputs[0];
    const absl::StatusOr<std::vector<bool>> reduced =
        ReducedAxes(static_cast<int64_t>(in.size()));
    if (!reduced.ok()) return reduced.status();
    Shape out;
    for (size_t d = 0; d < in.size(); ++d) {
      if (!(*reduced)[d]) {
        out.push_back(in[d]);
      } else if (keepdims_) {
        out.push_back(1);
      }
    }
    return out;
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const Tensor& x = *inputs[0];
    const Shape out_shape = output->shape();
    output->Reshape(KeptShape(x.shape()));
    switch (reduction_) {
      case Reduction::kSum:
      case Reduction::kMean:
        // A reduction is the backward of broadcasting the kept shape to x's.
        ReduceBroadcast(x, Scale(x.size(), output->size()), output);
        break;
      case Reduction::kSumSquare: {
        Tensor square(x.shape());
        square.flat() = x.flat().square();
        ReduceBroadcast(square, 1.0f, output);
        break;
      }
      case Reduction::kMax:
      case Reduction::kMin:
        Extreme(x, reduction_ == Reduction::kMax, output);
        break;
    }
    output->Reshape(out_shape);
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    Tensor* grad = grad_inputs[0];
    if (grad == nullptr) return;
    const Tensor& x = *inputs[0];
    Tensor g = grad_output;
    g.Reshape(KeptShape(x.shape()));
    grad->SetZero();
    switch (reduction_) {
      case Reduction::kSum:
      case Reduction::kMean:
        AddBroadcast(g, Scale(grad->size(), g.size()), grad);
        return;
      case Reduction::kSumSquare:
        AddBroadcast(g, 2.0f, grad);
        grad->flat() *= x.flat();
        return;
      case Reduction::kMax:
      case Reduction::kMin: {
        // grad = [x == extreme] * g / (number of elements at the extreme).
        Tensor extreme(g.shape());
        Forward(inputs, &extreme);
        AddBroadcast(extreme, 1.0f, grad);
        grad->flat() = (x.flat() == grad->flat()).cast<float>();
        Tensor share(g.shape());
        ReduceBroadcast(*grad, 1.0f, &share);
        share.flat() = g.flat() / share.flat();
        ApplyBroadcast(grad->data(), share, grad, kTimes);
        return;
      }
    }
  }

 private:
  // out = the maximum (or minimum) of each reduced group of x.
  static void Extreme(const Tensor& x, bool max, Tensor* out) {
    out->values().assign(out->size(), max ? -kInfinity : kInfinity);
    const float* src = x.data();
    float* dst = out->data();
    BroadcastRuns(out->shape(), x.shape())
        .ForEach([&](int64_t x_offset, int64_t out_offset, int64_t n,
                     int64_t stride) {
          if (n == 0) return;
          const ConstArrayMap run(src + x_offset, n);
          if (stride == 1) {
            ArrayMap y(dst + out_offset, n);
            if (max) {
              y = y.max(run);
            } else {
              y = y.min(run);
            }
          } else {
            float& y = dst[out_offset];
            y = max ? std::max(y, run.maxCoeff()) : std::min(y, run.minCoeff());
          }
        });
  }

  // Per axis of a rank-`rank` input: whether it is reduced.
  absl::StatusOr<std::vector<bool>> ReducedAxes(int64_t rank) const {
    std::vector<bool> reduced(rank, !axes_.has_value());
    if (!axes_) return reduced;
    for (int64_t axis : *axes_) {
      const absl::StatusOr<int64_t> a = NormalizeAxis(op_type_, axis, rank);
      if (!a.ok()) return a.status();
      if (reduced[*a]) {
        return ShapeError(
            op_type_, absl::StrCat("axis ", axis, " is listed twice in axes"));
      }
      reduced[*a] = true;
    }
    return reduced;
  }

  // The output shape with the reduced axes kept as 1, for an input shape
  // OutputShape accepted.
  Shape KeptShape(const Shape& in) const {
    const std::vector<bool> reduced =
        *ReducedAxes(static_cast<int64_t>(in.size()));
    Shape kept = in;
    for (size_t d = 0; d < in.size(); ++d) {
      if (reduced[d]) kept[d] = 1;
    }
    return kept;
  }

  // 1 / (elements reduced into each output) for the mean, else 1.
  float Scale(int64_t in_size, int64_t out_size) const {
    if (reduction_ != Reduction::kMean || out_size == 0) return 1.0f;
    return static_cast<float>(out_size) / static_cast<float>(in_size);
  }

  const absl::string_view op_type_;
  const Reduction reduction_;
  const std::optional<std::vector<int64_t>> axes_;
  const bool keepdims_;
};

// ----------------------------------------------------------- Creation ----

constexpr absl::string_view kArithmeticNames[] = {"Add", "Sub", "Mul", "Div",
                                                  "Pow"};

template <Arithmetic op>
absl::StatusOr<std::unique_ptr<Kernel>> CreateArithmetic(const OpConfig&) {
  return std::make_unique<ArithmeticKernel>(
      kArithmeticNames[static_cast<int>(op)], op);
}

absl::StatusOr<std::unique_ptr<Kernel>> CreatePRelu(const OpConfig&) {
  return std::make_unique<PReluKernel>();
}

template <Variadic op>
absl::StatusOr<std::unique_ptr<Kernel>> CreateVariadic(const OpConfig&) {
  constexpr absl::string_view kNames[] = {"Sum", "Mean", "Max", "Min"};
  return std::make_unique<VariadicKernel>(kNames[static_cast<int>(op)], op);
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateLeakyRelu(
    const OpConfig& config) {
  constexpr float kDefaultAlpha = 0.01f;
  const absl::StatusOr<float> alpha = config.GetFloat("alpha", kDefaultAlpha);
  if (!alpha.ok()) return alpha.status();
  return MakeUnary(LeakyReluOp{*alpha});
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateHardSigmoid(
    const OpConfig& config) {
  constexpr float kDefaultAlpha = 0.2f;
  constexpr float kDefaultBeta = 0.5f;
  const absl::StatusOr<float> alpha = config.GetFloat("alpha", kDefaultAlpha);
  if (!alpha.ok()) return alpha.status();
  const absl::StatusOr<float> beta = config.GetFloat("beta", kDefaultBeta);
  if (!beta.ok()) return beta.status();
  return MakeUnary(HardSigmoidOp{*alpha, *beta});
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateElu(const OpConfig& config) {
  constexpr float kDefaultAlpha = 1.0f;
  const absl::StatusOr<float> alpha = config.GetFloat("alpha", kDefaultAlpha);
  if (!alpha.ok()) return alpha.status();
  return MakeUnary(EluOp{*alpha});
}

// The first opset whose Clip takes min and max as inputs.
constexpr int64_t kClipInputsOpset = 11;

// Clip-6 takes min and max as attributes (defaulting to the float range);
// Clip-11 and later as optional scalar inputs, which must be constants (an
// absent or empty input is unbounded).
absl::StatusOr<std::unique_ptr<Kernel>> CreateClip(const OpConfig& config) {
  if (config.opset < kClipInputsOpset) {
    if (!config.constant_inputs.empty()) {
      return NodeError(config, absl::StrCat("min and max are attributes, not "
                                            "inputs, before opset ",
                                            kClipInputsOpset));
    }
    const absl::StatusOr<float> lo =
        config.GetFloat("min", std::numeric_limits<float>::lowest());
    if (!lo.ok()) return lo.status();
    const absl::StatusOr<float> hi =
        config.GetFloat("max", std::numeric_limits<float>::max());
    if (!hi.ok()) return hi.status();
    return MakeUnary(ClipOp{*lo, *hi});
  }
  for (absl::string_view name : {"min", "max"}) {
    if (config.attributes.contains(name)) {
      return NodeError(
          config,
          absl::StrCat("attribute '", name, "' is not part of Clip from opset ",
                       kClipInputsOpset, " (min and max are inputs)"));
    }
  }
  float bounds[2] = {-kInfinity, kInfinity};
  constexpr absl::string_view kNames[2] = {"min", "max"};
  for (size_t i = 0; i < config.constant_inputs.size() && i < 2; ++i) {
    const std::optional<ConstantInput>& bound = config.constant_inputs[i];
    if (!bound) continue;
    if (bound->is_int) {
      return NodeError(config, absl::StrCat("input '", kNames[i],
                                            "' must be a float scalar, not an "
                                            "integer tensor"));
    }
    if (bound->floats.size() != 1) {
      return NodeError(config, absl::StrCat("input '", kNames[i],
                                            "' must be a scalar, not shape ",
                                            ShapeToString(bound->shape)));
    }
    bounds[i] = bound->floats[0];
  }
  return MakeUnary(ClipOp{bounds[0], bounds[1]});
}

// The first opset whose Softmax and LogSoftmax work along one axis.
constexpr int64_t kSoftmaxAxisOpset = 13;

template <bool log>
absl::StatusOr<std::unique_ptr<Kernel>> CreateSoftmax(const OpConfig& config) {
  const bool coerce_2d = config.opset < kSoftmaxAxisOpset;
  const absl::StatusOr<int64_t> axis =
      config.GetInt("axis", coerce_2d ? 1 : -1);
  if (!axis.ok()) return axis.status();
  return std::make_unique<SoftmaxKernel>(log ? "LogSoftmax" : "Softmax", log,
                                         *axis, coerce_2d);
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateLayerNorm(
    const OpConfig& config) {
  constexpr float kDefaultEpsilon = 1e-5f;
  // TensorProto::FLOAT: statistics in float, the only type mixq computes in.
  constexpr int64_t kFloatStash = 1;
  const absl::StatusOr<int64_t> axis = config.GetInt("axis", -1);
  if (!axis.ok()) return axis.status();
  const absl::StatusOr<float> epsilon =
      config.GetFloat("epsilon", kDefaultEpsilon);
  if (!epsilon.ok()) return epsilon.status();
  const absl::StatusOr<int64_t> stash =
      config.GetInt("stash_type", kFloatStash);
  if (!stash.ok()) return stash.status();
  if (*stash != kFloatStash) {
    return NodeError(config, absl::StrCat("unsupported attribute value "
                                          "stash_type=",
                                          *stash, " (only 1, float)"));
  }
  return std::make_unique<LayerNormKernel>(*axis, *epsilon);
}

// Axes come as an attribute or, from ReduceSum-13 (the others from 18), as a
// constant input; either form is accepted at any opset.
template <Reduction reduction>
absl::StatusOr<std::unique_ptr<Kernel>> CreateReduce(const OpConfig& config) {
  constexpr absl::string_view kNames[] = {
      "ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceMax", "ReduceMin"};
  const absl::StatusOr<bool> keepdims = GetFlag(config, "keepdims", true);
  if (!keepdims.ok()) return keepdims.status();
  const absl::StatusOr<bool> noop =
      GetFlag(config, "noop_with_empty_axes", false);
  if (!noop.ok()) return noop.status();
  absl::StatusOr<std::optional<std::vector<int64_t>>> axes =
      config.GetIntsAttrOrInput("axes", 0);
  if (!axes.ok()) return axes.status();
  // Empty axes reduce everything unless noop_with_empty_axes.
  if (*axes && (*axes)->empty() && !*noop) axes->reset();
  if (!*axes && *noop) axes->emplace();
  return std::make_unique<ReduceKernel>(kNames[static_cast<int>(reduction)],
                                        reduction, *std::move(axes), *keepdims);
}

}  // namespace

absl::Span<const OpEntry> ElementwiseOps() {
  static const OpEntry kOps[] = {
      {"Add", {2, 2, 2, 1, &CreateArithmetic<Arithmetic::kAdd>}},
      {"Sub", {2, 2, 2, 1, &CreateArithmetic<Arithmetic::kSub>}},
      {"Mul", {2, 2, 2, 1, &CreateArithmetic<Arithmetic::kMul>}},
      {"Div", {2, 2, 2, 1, &CreateArithmetic<Arithmetic::kDiv>}},
      {"Pow", {2, 2, 2, 1, &CreateArithmetic<Arithmetic::kPow>}},
      {"PRelu", {2, 2, 2, 1, &CreatePRelu}},
      {"Sum", {1, kVariadic, kVariadic, 1, &CreateVariadic<Variadic::kSum>}},
      {"Mean", {1, kVariadic, kVariadic, 1, &CreateVariadic<Variadic::kMean>}},
      {"Max", {1, kVariadic, kVariadic, 1, &CreateVariadic<Variadic::kMax>}},
      {"Min", {1, kVariadic, kVariadic, 1, &CreateVariadic<Variadic::kMin>}},
      {"Relu", {1, 1, 1, 1, &CreateUnary<ReluOp>}},
      {"LeakyRelu", {1, 1, 1, 1, &CreateLeakyRelu}},
      {"Sigmoid", {1, 1, 1, 1, &CreateUnary<SigmoidOp>}},
      {"Tanh", {1, 1, 1, 1, &CreateUnary<TanhOp>}},
      {"HardSigmoid", {1, 1, 1, 1, &CreateHardSigmoid}},
      {"HardSwish", {1, 1, 1, 1, &CreateUnary<HardSwishOp>}},
      {"Elu", {1, 1, 1, 1, &CreateElu}},
      {"Softplus", {1, 1, 1, 1, &CreateUnary<SoftplusOp>}},
      {"Clip", {1, 3, 1, 1, &CreateClip}},
      {"Neg", {1, 1, 1, 1, &CreateUnary<NegOp>}},
      {"Abs", {1, 1, 1, 1, &CreateUnary<AbsOp>}},
      {"Sqrt", {1, 1, 1, 1, &CreateUnary<SqrtOp>}},
      {"Exp", {1, 1, 1, 1, &CreateUnary<ExpOp>}},
      {"Log", {1, 1, 1, 1, &CreateUnary<LogOp>}},
      {"Reciprocal", {1, 1, 1, 1, &CreateUnary<ReciprocalOp>}},
      {"Softmax", {1, 1, 1, 1, &CreateSoftmax<false>}},
      {"LogSoftmax", {1, 1, 1, 1, &CreateSoftmax<true>}},
      {"LayerNormalization", {2, 3, 3, 3, &CreateLayerNorm}},
      {"ReduceSum", {1, 2, 1, 1, &CreateReduce<Reduction::kSum>}},
      {"ReduceMean", {1, 2, 1, 1, &CreateReduce<Reduction::kMean>}},
      {"ReduceSumSquare", {1, 2, 1, 1, &CreateReduce<Reduction::kSumSquare>}},
      {"ReduceMax", {1, 2, 1, 1, &CreateReduce<Reduction::kMax>}},
      {"ReduceMin", {1, 2, 1, 1, &CreateReduce<Reduction::kMin>}},
  };
  return kOps;
}

}  // namespace mixq::engine
