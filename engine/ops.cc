#include "engine/ops.h"

#include <algorithm>
#include <utility>

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

// Elementwise A + B with numpy broadcasting.
// Operators that only change the shape (or nothing): the data is copied and
// the gradient copied back.
class CopyKernel : public Kernel {
 public:
  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    output->flat() = inputs[0]->flat();
  }

  void Backward(absl::Span<const Tensor* const> /*inputs*/,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    if (grad_inputs[0] != nullptr) grad_inputs[0]->flat() = grad_output.flat();
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

// Reshape to a constant target shape: 0 copies the input's dim, -1 is
// inferred.
class ReshapeKernel : public CopyKernel {
 public:
  explicit ReshapeKernel(std::vector<int64_t> target)
      : target_(std::move(target)) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& in = *inputs[0];
    const int64_t count = NumElements(in);
    const auto error = [&](absl::string_view why) {
      return ShapeError(
          "Reshape", absl::StrCat("cannot reshape ", ShapeToString(in), " to ",
                                  ShapeToString(target_), ": ", why));
    };
    Shape out(target_.size());
    int inferred = -1;
    int64_t known = 1;
    for (size_t i = 0; i < target_.size(); ++i) {
      int64_t d = target_[i];
      if (d == 0) {
        if (i >= in.size()) return error("a 0 has no input dim to copy");
        d = in[i];
      } else if (d == -1) {
        if (inferred >= 0) return error("more than one -1");
        inferred = static_cast<int>(i);
        continue;
      } else if (d < -1) {
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
  const std::vector<int64_t> target_;
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

absl::StatusOr<std::unique_ptr<Kernel>> CreateFlatten(const OpConfig& config) {
  const absl::StatusOr<int64_t> axis = config.GetInt("axis", 1);
  if (!axis.ok()) return axis.status();
  return std::make_unique<FlattenKernel>(*axis);
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateReshape(const OpConfig& config) {
  if (config.constant_inputs.empty() || !config.constant_inputs[0] ||
      !config.constant_inputs[0]->is_int) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Reshape node '", config.node_name,
        "': the shape input must be a constant int64 tensor (an initializer "
        "or a Constant)"));
  }
  const std::vector<int64_t>& target = config.constant_inputs[0]->ints;
  const absl::StatusOr<int64_t> allow_zero = config.GetInt("allowzero", 0);
  if (!allow_zero.ok()) return allow_zero.status();
  // allowzero=1 only differs from the default when the shape has a 0.
  if (*allow_zero != 0 &&
      std::find(target.begin(), target.end(), 0) != target.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported attribute value allowzero=", *allow_zero,
                     " with a 0 in the shape (node '", config.node_name, "')"));
  }
  return std::make_unique<ReshapeKernel>(target);
}

}  // namespace

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

const OpSchema* FindOp(absl::string_view op_type) {
  static const OpEntry kOps[] = {
      {"Gemm", {2, 3, 3, 1, &CreateGemm}},
      {"MatMul", {2, 2, 2, 1, &CreateMatMul}},
      {"Flatten", {1, 1, 1, 1, &CreateFlatten}},
      {"Reshape", {2, 2, 1, 1, &CreateReshape}},
      {"Identity", {1, 1, 1, 1, &CreateIdentity}},
      // Inference: identity. Ratio and training_mode are ignored, the mask
      // output is never produced.
      {"Dropout", {1, 3, 1, 2, &CreateIdentity}},
  };
  for (absl::Span<const OpEntry> table :
       {absl::Span<const OpEntry>(kOps), ElementwiseOps(), ConvOps(), ShapeOps()}) {
    for (const OpEntry& entry : table) {
      if (entry.op_type == op_type) return &entry.schema;
    }
  }
  return nullptr;
}

}  // namespace mixq::engine
