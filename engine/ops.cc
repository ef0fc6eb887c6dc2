#include "engine/ops.h"

#include <algorithm>
#include <iterator>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/ops_util.h"

namespace mixq::engine {
namespace {

ConstMatrixMap Matrix2D(const Tensor& t) {
  return t.AsMatrix(t.dim(0), t.dim(1));
}
MatrixMap Matrix2D(Tensor* t) { return t->AsMatrix(t->dim(0), t->dim(1)); }

// Calls f(m) or f(m.transpose()): one product expression serves every
// transA/transB combination, and Eigen's GEMM reads the transposed operand in
// place.
template <typename F>
void WithTranspose(const ConstMatrixMap& m, bool transpose, F&& f) {
  if (transpose) {
    f(m.transpose());
  } else {
    f(m);
  }
}

// Y = alpha * op(A) * op(B) + beta * C, with op = transpose when transA /
// transB is 1 and C broadcast to [M, N].
class GemmKernel : public Kernel {
 public:
  GemmKernel(float alpha, float beta, bool trans_a, bool trans_b)
      : alpha_(alpha), beta_(beta), trans_a_(trans_a), trans_b_(trans_b) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& a = *inputs[0];
    const Shape& b = *inputs[1];
    if (a.size() != 2 || b.size() != 2) {
      return ShapeError("Gemm",
                        absl::StrCat("A ", ShapeToString(a), " and B ",
                                     ShapeToString(b), " must both be 2-D"));
    }
    const int64_t m = trans_a_ ? a[1] : a[0];
    const int64_t k = trans_a_ ? a[0] : a[1];
    const int64_t kb = trans_b_ ? b[1] : b[0];
    const int64_t n = trans_b_ ? b[0] : b[1];
    if (k != kb) {
      return ShapeError(
          "Gemm", absl::StrCat("inner dimensions differ: A ", ShapeToString(a),
                               " (transA=", trans_a_, ") and B ",
                               ShapeToString(b), " (transB=", trans_b_, ")"));
    }
    Shape out = {m, n};
    if (inputs.size() == 3) {
      const absl::Status status = CheckBroadcastsTo(*inputs[2], out);
      if (!status.ok()) return ShapeError("Gemm C", status.message());
    }
    return CheckedShape(std::move(out));
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    MatrixMap y = Matrix2D(output);
    WithTranspose(Matrix2D(*inputs[0]), trans_a_, [&](const auto& op_a) {
      WithTranspose(Matrix2D(*inputs[1]), trans_b_, [&](const auto& op_b) {
        y.noalias() = alpha_ * op_a * op_b;
      });
    });
    if (inputs.size() == 3 && beta_ != 0.0f) {
      AddBroadcast(*inputs[2], beta_, output);
    }
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    const ConstMatrixMap g = Matrix2D(grad_output);
    if (grad_inputs[0] != nullptr) {
      MatrixMap da = Matrix2D(grad_inputs[0]);
      WithTranspose(Matrix2D(*inputs[1]), trans_b_, [&](const auto& op_b) {
        if (trans_a_) {
          da.noalias() = alpha_ * op_b * g.transpose();
        } else {
          da.noalias() = alpha_ * g * op_b.transpose();
        }
      });
    }
    if (grad_inputs[1] != nullptr) {
      MatrixMap db = Matrix2D(grad_inputs[1]);
      WithTranspose(Matrix2D(*inputs[0]), trans_a_, [&](const auto& op_a) {
        if (trans_b_) {
          db.noalias() = alpha_ * g.transpose() * op_a;
        } else {
          db.noalias() = alpha_ * op_a.transpose() * g;
        }
      });
    }
    if (grad_inputs.size() == 3 && grad_inputs[2] != nullptr) {
      ReduceBroadcast(grad_output, beta_, grad_inputs[2]);
    }
  }

 private:
  const float alpha_;
  const float beta_;
  const bool trans_a_;
  const bool trans_b_;
};

// Numpy matmul of A [..., M, K] and B [..., K, N] for inputs of rank >= 2,
// where B is 2-D (A's leading dims fold into rows: one GEMM), A is 2-D, or
// both have the same leading (batch) dims.
class MatMulKernel : public Kernel {
 public:
  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& a = *inputs[0];
    const Shape& b = *inputs[1];
    if (a.size() < 2 || b.size() < 2) {
      return ShapeError("MatMul",
                        absl::StrCat("inputs ", ShapeToString(a), " and ",
                                     ShapeToString(b), " must have rank >= 2"));
    }
    if (a.back() != b[b.size() - 2]) {
      return ShapeError("MatMul",
                        absl::StrCat("inner dimensions of ", ShapeToString(a),
                                     " and ", ShapeToString(b), " differ"));
    }
    Shape out;
    if (b.size() == 2) {
      out.assign(a.begin(), a.end() - 1);
    } else if (a.size() == 2) {
      out.assign(b.begin(), b.end() - 2);
      out.push_back(a[0]);
    } else if (std::equal(a.begin(), a.end() - 2, b.begin(), b.end() - 2)) {
      out.assign(a.begin(), a.end() - 1);
    } else {
      return ShapeError(
          "MatMul", absl::StrCat("batch dimensions of ", ShapeToString(a),
                                 " and ", ShapeToString(b),
                                 " differ (broadcasting them is unsupported)"));
    }
    out.push_back(b.back());
    return CheckedShape(std::move(out));
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const Dims d = GetDims(*inputs[0], *inputs[1]);
    if (d.batches == 0) {
      output->AsMatrix(d.rows, d.n).noalias() =
          inputs[0]->AsMatrix(d.rows, d.k) * inputs[1]->AsMatrix(d.k, d.n);
      return;
    }
    for (int64_t i = 0; i < d.batches; ++i) {
      Block(output, i, d.m, d.n).noalias() =
          Block(*inputs[0], d.a_batched ? i : 0, d.m, d.k) *
          Block(*inputs[1], i, d.k, d.n);
    }
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    const Tensor& a = *inputs[0];
    const Tensor& b = *inputs[1];
    Tensor* ga = grad_inputs[0];
    Tensor* gb = grad_inputs[1];
    const Dims d = GetDims(a, b);
    if (d.batches == 0) {
      const ConstMatrixMap g = grad_output.AsMatrix(d.rows, d.n);
      if (ga != nullptr) {
        ga->AsMatrix(d.rows, d.k).noalias() =
            g * b.AsMatrix(d.k, d.n).transpose();
      }
      if (gb != nullptr) {
        gb->AsMatrix(d.k, d.n).noalias() =
            a.AsMatrix(d.rows, d.k).transpose() * g;
      }
      return;
    }
    // A broadcast over B's batch accumulates its gradient over the batch.
    if (ga != nullptr && !d.a_batched) ga->SetZero();
    for (int64_t i = 0; i < d.batches; ++i) {
      const ConstMatrixMap g = Block(grad_output, i, d.m, d.n);
      const int64_t ai = d.a_batched ? i : 0;
      if (ga != nullptr) {
        MatrixMap gai = Block(ga, ai, d.m, d.k);
        if (d.a_batched) {
          gai.noalias() = g * Block(b, i, d.k, d.n).transpose();
        } else {
          gai.noalias() += g * Block(b, i, d.k, d.n).transpose();
        }
      }
      if (gb != nullptr) {
        Block(gb, i, d.k, d.n).noalias() =
            Block(a, ai, d.m, d.k).transpose() * g;
      }
    }
  }

 private:
  struct Dims {
    int64_t m, k, n;
    int64_t rows;     // rows of A with its leading dims folded in
    int64_t batches;  // 0 when B is 2-D (a single GEMM)
    bool a_batched;
  };

  static Dims GetDims(const Tensor& a, const Tensor& b) {
    const Shape& as = a.shape();
    const Shape& bs = b.shape();
    Dims d;
    d.m = as[as.size() - 2];
    d.k = as.back();
    d.n = bs.back();
    d.rows = Product(as.begin(), as.end() - 1);
    d.batches = bs.size() == 2 ? 0 : Product(bs.begin(), bs.end() - 2);
    d.a_batched = as.size() > 2;
    return d;
  }

  static ConstMatrixMap Block(const Tensor& t, int64_t i, int64_t rows,
                              int64_t cols) {
    return ConstMatrixMap(t.data() + i * rows * cols, rows, cols);
  }
  static MatrixMap Block(Tensor* t, int64_t i, int64_t rows, int64_t cols) {
    return MatrixMap(t->data() + i * rows * cols, rows, cols);
  }
};

// Identity, and Dropout at inference.
class IdentityKernel : public CopyKernel {
 public:
  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    return *inputs[0];
  }
};

class FlattenKernel : public CopyKernel {
 public:
  explicit FlattenKernel(int64_t axis) : axis_(axis) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& in = *inputs[0];
    const int64_t rank = static_cast<int64_t>(in.size());
    if (axis_ < -rank || axis_ > rank) {
      return ShapeError("Flatten",
                        absl::StrCat("axis ", axis_, " is out of range for ",
                                     ShapeToString(in)));
    }
    const auto split = in.begin() + (axis_ < 0 ? axis_ + rank : axis_);
    return Shape{Product(in.begin(), split), Product(split, in.end())};
  }

 private:
  const int64_t axis_;
};

// Reshape to a constant target shape: -1 is inferred, 0 copies the input's
// dim at the same position (unless allowzero), and batch elements of the
// target (BatchShape) are resolved at the runtime batch.
class ReshapeKernel : public CopyKernel {
 public:
  // copy_zero[i]: output dim i is input dim i (a 0 without allowzero).
  ReshapeKernel(BatchShape target, std::vector<bool> copy_zero)
      : target_(std::move(target)), copy_zero_(std::move(copy_zero)) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& in = *inputs[0];
    const int64_t count = NumElements(in);
    const auto error = [&](absl::string_view why) {
      return ShapeError(
          "Reshape", absl::StrCat("cannot reshape ", ShapeToString(in), " to ",
                                  ShapeToString(target_.values()), ": ", why));
    };
    absl::StatusOr<std::vector<int64_t>> target = target_.Resolve(inputs);
    if (!target.ok()) return error(target.status().message());
    Shape out(target->size());
    int inferred = -1;
    int64_t known = 1;
    for (size_t i = 0; i < target->size(); ++i) {
      int64_t d = (*target)[i];
      if (copy_zero_[i]) {
        if (i >= in.size()) return error("a 0 has no input dim to copy");
        d = in[i];
      } else if (d == -1 && !target_.is_batch(i)) {
        if (inferred >= 0) return error("more than one -1");
        inferred = static_cast<int>(i);
        continue;
      } else if (d < 0) {
        return error("negative dim");
      }
      out[i] = d;
      // Keeps `known` bounded: the result must match `count` anyway.
      if (d != 0 && known > kMaxTensorElements / d) {
        return error("too many elements");
      }
      known *= d;
    }
    if (inferred >= 0) {
      if (known == 0 || count % known != 0) {
        return error("the -1 cannot be inferred");
      }
      out[inferred] = count / known;
    } else if (known != count) {
      return error("the element counts differ");
    }
    return CheckedShape(std::move(out));
  }

 private:
  const BatchShape target_;
  const std::vector<bool> copy_zero_;
};

absl::StatusOr<bool> GetFlag(const OpConfig& config, absl::string_view name) {
  const absl::StatusOr<int64_t> value = config.GetInt(name, 0);
  if (!value.ok()) return value.status();
  if (*value != 0 && *value != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported attribute value ", name, "=", *value,
                     " (node '", config.node_name, "')"));
  }
  return *value == 1;
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateGemm(const OpConfig& config) {
  const absl::StatusOr<float> alpha = config.GetFloat("alpha", 1.0f);
  const absl::StatusOr<float> beta = config.GetFloat("beta", 1.0f);
  const absl::StatusOr<bool> trans_a = GetFlag(config, "transA");
  const absl::StatusOr<bool> trans_b = GetFlag(config, "transB");
  for (const absl::Status& s :
       {alpha.status(), beta.status(), trans_a.status(), trans_b.status()}) {
    if (!s.ok()) return s;
  }
  return std::make_unique<GemmKernel>(*alpha, *beta, *trans_a, *trans_b);
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateMatMul(const OpConfig&) {
  return std::make_unique<MatMulKernel>();
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateIdentity(const OpConfig&) {
  return std::make_unique<IdentityKernel>();
}

// Dropout at inference is Identity. With a true training_mode input (opset
// 12+) ONNX drops values at random, which mixq does not do: that is an error
// unless the ratio is 0 (where training mode is Identity too).
absl::StatusOr<std::unique_ptr<Kernel>> CreateDropout(const OpConfig& config) {
  constexpr size_t kRatio = 0;         // index in constant_inputs
  constexpr size_t kTrainingMode = 1;  // index in constant_inputs
  const auto nonzero = [&](size_t i) {
    if (config.constant_inputs.size() <= i || !config.constant_inputs[i]) {
      return false;
    }
    const ConstantInput& value = *config.constant_inputs[i];
    return std::any_of(value.ints.begin(), value.ints.end(),
                       [](int64_t v) { return v != 0; }) ||
           std::any_of(value.floats.begin(), value.floats.end(),
                       [](float v) { return v != 0.0f; });
  };
  const bool default_ratio = config.constant_inputs.size() <= kRatio ||
                             !config.constant_inputs[kRatio];
  if (nonzero(kTrainingMode) && (default_ratio || nonzero(kRatio))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "node '", config.node_name,
        "' (Dropout): training_mode true is not supported (mixq runs Dropout "
        "at inference)"));
  }
  return std::make_unique<IdentityKernel>();
}

// ONNX TensorProto element types a runtime Cast may target. Runtime tensors
// are float; integer values (ids, masks) are carried as exact floats.
constexpr int64_t kFloatType = 1;
constexpr int64_t kDoubleType = 11;
constexpr int64_t kBoolType = 9;
constexpr int64_t kIntegerTypes[] = {2, 3, 4, 5, 6, 7, 12, 13};  // u8 ... u64

// Cast of a runtime tensor: to FLOAT or DOUBLE it is Identity, to an integer
// type a truncation, to BOOL a test against zero. Casts of constants are
// folded by the importer.
absl::StatusOr<std::unique_ptr<Kernel>> CreateCast(const OpConfig& config) {
  const absl::StatusOr<int64_t> to = config.GetInt("to", 0);
  if (!to.ok()) return to.status();
  if (*to == kFloatType || *to == kDoubleType) {
    return std::make_unique<IdentityKernel>();
  }
  if (*to == kBoolType ||
      std::find(std::begin(kIntegerTypes), std::end(kIntegerTypes), *to) !=
          std::end(kIntegerTypes)) {
    return MakeCastToIntegerKernel(*to == kBoolType);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "Cast node '", config.node_name, "': casting a runtime tensor to type ",
      *to,
      " is not supported (only to FLOAT, DOUBLE, BOOL or an integer type)"));
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateFlatten(const OpConfig& config) {
  const absl::StatusOr<int64_t> axis = config.GetInt("axis", 1);
  if (!axis.ok()) return axis.status();
  return std::make_unique<FlattenKernel>(*axis);
}

// Reshape's shape input may hold batch elements (ConstantInput::batch_factor,
// resolved by BatchShape), so `x.view(x.size(0), -1)` and attention's
// `view(T, batch * heads, -1)` run at any batch.
absl::StatusOr<std::unique_ptr<Kernel>> CreateReshape(const OpConfig& config) {
  if (config.constant_inputs.empty() || !config.constant_inputs[0] ||
      !config.constant_inputs[0]->is_int) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Reshape node '", config.node_name,
        "': the shape input must be a constant int64 tensor (an initializer "
        "or a Constant)"));
  }
  const ConstantInput& shape = *config.constant_inputs[0];
  if (shape.shape.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Reshape node '", config.node_name,
        "': the shape input must be 1-D, not ", ShapeToString(shape.shape)));
  }
  const absl::StatusOr<int64_t> allow_zero = config.GetInt("allowzero", 0);
  if (!allow_zero.ok()) return allow_zero.status();
  if (*allow_zero != 0 && *allow_zero != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported attribute value allowzero=", *allow_zero,
                     " (node '", config.node_name, "')"));
  }
  absl::StatusOr<BatchShape> target = BatchShape::Create(config, shape);
  if (!target.ok()) return target.status();
  std::vector<bool> copy_zero(shape.ints.size(), false);
  for (size_t i = 0; i < shape.ints.size(); ++i) {
    copy_zero[i] =
        !target->is_batch(i) && shape.ints[i] == 0 && *allow_zero == 0;
  }
  return std::make_unique<ReshapeKernel>(*std::move(target),
                                         std::move(copy_zero));
}

}  // namespace

void CopyKernel::Forward(absl::Span<const Tensor* const> inputs,
                         Tensor* output) const {
  output->flat() = inputs[0]->flat();
}

void CopyKernel::Backward(absl::Span<const Tensor* const> /*inputs*/,
                          const Tensor& grad_output,
                          absl::Span<Tensor* const> grad_inputs) const {
  if (grad_inputs[0] != nullptr) grad_inputs[0]->flat() = grad_output.flat();
}

absl::StatusOr<BatchShape> BatchShape::Create(const OpConfig& config,
                                              const ConstantInput& shape) {
  std::vector<int64_t> factors = shape.batch_factor;
  factors.resize(shape.ints.size(), 0);
  if (shape.has_batch() && config.batch_source.input < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        config.op_type, " node '", config.node_name,
        "': the shape depends on the batch size but no input carries the "
        "batch; shape computation depends on the batch size in a way mixq "
        "cannot represent"));
  }
  return BatchShape(shape.ints, std::move(factors), config.batch_source);
}

absl::StatusOr<std::vector<int64_t>> BatchShape::Resolve(
    absl::Span<const Shape* const> inputs) const {
  if (std::all_of(factors_.begin(), factors_.end(),
                  [](int64_t k) { return k == 0; })) {
    return values_;
  }
  if (source_.input < 0 ||
      static_cast<size_t>(source_.input) >= inputs.size() || source_.axis < 0 ||
      static_cast<size_t>(source_.axis) >= inputs[source_.input]->size() ||
      source_.factor <= 0) {
    return absl::InvalidArgumentError("the batch axis is out of range");
  }
  const int64_t carried = (*inputs[source_.input])[source_.axis];
  if (carried % source_.factor != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the batch dim ", carried, " is not a multiple of ", source_.factor));
  }
  const int64_t batch = carried / source_.factor;
  std::vector<int64_t> values = values_;
  for (size_t i = 0; i < values.size(); ++i) {
    if (factors_[i] > 0 &&
        __builtin_mul_overflow(factors_[i], batch, &values[i])) {
      return absl::InvalidArgumentError("a batch dim overflows");
    }
  }
  return values;
}

bool ConstantInput::has_batch() const {
  return std::any_of(batch_factor.begin(), batch_factor.end(),
                     [](int64_t k) { return k != 0; });
}

absl::StatusOr<int64_t> CheckedNumElements(const Shape& shape) {
  // Zero dims are skipped in the bound so that no product of a subset of the
  // dims (as Flatten or a reshape computes) can overflow either.
  int64_t nonzero = 1;
  bool empty = false;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("negative dimension in ", ShapeToString(shape)));
    }
    if (d == 0) {
      empty = true;
    } else if (nonzero > kMaxTensorElements / d) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor of shape ", ShapeToString(shape), " is too large"));
    } else {
      nonzero *= d;
    }
  }
  return empty ? 0 : nonzero;
}

absl::StatusOr<int64_t> OpConfig::GetInt(absl::string_view name,
                                         int64_t default_value) const {
  const auto it = attributes.find(name);
  if (it == attributes.end()) return default_value;
  if (it->second.type != Attribute::Type::kInt) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attribute '", name, "' of node '", node_name, "' must be an INT"));
  }
  return it->second.i;
}

absl::StatusOr<float> OpConfig::GetFloat(absl::string_view name,
                                         float default_value) const {
  const auto it = attributes.find(name);
  if (it == attributes.end()) return default_value;
  if (it->second.type != Attribute::Type::kFloat) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attribute '", name, "' of node '", node_name, "' must be a FLOAT"));
  }
  return it->second.f;
}

absl::StatusOr<std::string> OpConfig::GetString(
    absl::string_view name, absl::string_view default_value) const {
  const auto it = attributes.find(name);
  if (it == attributes.end()) return std::string(default_value);
  if (it->second.type != Attribute::Type::kString) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attribute '", name, "' of node '", node_name, "' must be a STRING"));
  }
  return it->second.s;
}

absl::StatusOr<std::optional<std::vector<int64_t>>> OpConfig::GetInts(
    absl::string_view name) const {
  const auto it = attributes.find(name);
  if (it == attributes.end()) return std::nullopt;
  if (it->second.type != Attribute::Type::kInts) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attribute '", name, "' of node '", node_name, "' must be INTS"));
  }
  return it->second.ints;
}

absl::StatusOr<std::optional<std::vector<int64_t>>>
OpConfig::GetIntsAttrOrInput(absl::string_view name, int input) const {
  absl::StatusOr<std::optional<std::vector<int64_t>>> attr = GetInts(name);
  if (!attr.ok()) return attr.status();
  const bool has_input = input < static_cast<int>(constant_inputs.size()) &&
                         constant_inputs[input].has_value();
  if (attr->has_value()) {
    if (has_input) {
      return absl::InvalidArgumentError(
          absl::StrCat("node '", node_name, "' (", op_type, ") has both an '",
                       name, "' attribute and input"));
    }
    return attr;
  }
  if (!has_input) return std::nullopt;
  if (!constant_inputs[input]->is_int) {
    return absl::InvalidArgumentError(
        absl::StrCat("node '", node_name, "' (", op_type, "): input '", name,
                     "' must be an int64 tensor"));
  }
  if (constant_inputs[input]->has_batch()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "node '", node_name, "' (", op_type, "): input '", name,
        "' depends on the batch size; shape computation depends on the batch "
        "size in a way mixq cannot represent"));
  }
  return constant_inputs[input]->ints;
}

bool IsOmittedInput(const Shape& shape) {
  return shape.size() == 1 && shape[0] == 0;
}

namespace {

// Every family's table, the ones defined here first.
const std::vector<absl::Span<const OpEntry>>& OpTables() {
  static const OpEntry kOps[] = {
      {"Gemm", {2, 3, 3, 1, &CreateGemm}},
      {"MatMul", {2, 2, 2, 1, &CreateMatMul}},
      {"Flatten", {1, 1, 1, 1, &CreateFlatten}},
      {"Reshape", {2, 2, 1, 1, &CreateReshape}},
      {"Identity", {1, 1, 1, 1, &CreateIdentity}},
      {"Cast", {1, 1, 1, 1, &CreateCast}},
      // Inference: identity; the mask output is never produced.
      {"Dropout", {1, 3, 1, 2, &CreateDropout}},
  };
  static const std::vector<absl::Span<const OpEntry>> kTables = {
      kOps,           ElementwiseOps(),   ConvOps(),   ShapeOps(),
      QuantOps(),     ConvTransposeOps(), ResizeOps(), DepthToSpaceOps(),
      RecurrentOps(), TransformerOps(),   MaskOps(),   ScatterOps()};
  return kTables;
}

}  // namespace

const OpSchema* FindOp(absl::string_view op_type) {
  for (absl::Span<const OpEntry> table : OpTables()) {
    for (const OpEntry& entry : table) {
      if (entry.op_type == op_type) return &entry.schema;
    }
  }
  return nullptr;
}

std::vector<absl::string_view> RegisteredOpTypes() {
  std::vector<absl::string_view> types;
  for (absl::Span<const OpEntry> table : OpTables()) {
    for (const OpEntry& entry : table) types.push_back(entry.op_type);
  }
  return types;
}

}  // namespace mixq::engine
