// Operators on integer values carried as floats (token ids, attention masks;
// see Model's contract on integer graph inputs): Gather whose indices are
// computed at run time (an embedding lookup), Cast of a runtime tensor to an
// integer or boolean type, and Equal and Where on runtime masks (booleans
// are 1 and 0), as nn.TransformerEncoder's key padding mask exports. Gather
// with constant indices is in ops_shape.cc; Cast of constants is folded by the
// importer.
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/ops.h"
#include "engine/ops_util.h"

namespace mixq::engine {
namespace {

// Gather(data, indices) along `axis`, indices read at run time. The output is
// data[:axis] + indices.shape + data[axis+1:]; element (o, j, i) is
// data[o, indices[j], i]. Indices are truncated to integers (they are
// integers when they come from an int64/int32 graph input) and negative ones
// count from the end, as ONNX says; CheckInputs refuses the others.
class IndexGatherKernel : public Kernel {
 public:
  explicit IndexGatherKernel(int64_t axis) : axis_(axis) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& data = *inputs[0];
    const Shape& indices = *inputs[1];
    absl::StatusOr<int64_t> axis =
        NormalizeAxis("Gather", axis_, static_cast<int64_t>(data.size()));
    if (!axis.ok()) return axis.status();
    Shape out(data.begin(), data.begin() + *axis);
    out.insert(out.end(), indices.begin(), indices.end());
    out.insert(out.end(), data.begin() + *axis + 1, data.end());
    return CheckedShape(std::move(out));
  }

  absl::Status CheckInputs(
      absl::Span<const Tensor* const> inputs) const override {
    const Geometry g = GeometryOf(inputs);
    const float* indices = inputs[1]->data();
    for (int64_t j = 0; j < g.num_indices; ++j) {
      const float v = std::trunc(indices[j]);
      if (!(v >= -static_cast<float>(g.dim) && v < static_cast<float>(g.dim))) {
        return absl::InvalidArgumentError(absl::StrCat(
            "Gather: index ", indices[j], " at position ", j, " is outside [",
            -g.dim, ", ", g.dim, ") of data axis ", g.axis, " (shape ",
            ShapeToString(inputs[0]->shape()), ")"));
      }
    }
    return absl::OkStatus();
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const Geometry g = GeometryOf(inputs);
    const float* data = inputs[0]->data();
    float* out = output->data();
    for (int64_t o = 0; o < g.outer; ++o) {
      for (int64_t j = 0; j < g.num_indices; ++j) {
        const int64_t row = Row(inputs[1]->data()[j], g.dim);
        VectorMap(out + (o * g.num_indices + j) * g.inner, g.inner) =
            ConstVectorMap(data + (o * g.dim + row) * g.inner, g.inner);
      }
    }
  }

  // dData is the scatter-add of the output gradient's rows (repeated
  // indices accumulate); the indices have no gradient (zero).
  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    const Geometry g = GeometryOf(inputs);
    if (grad_inputs[1] != nullptr) grad_inputs[1]->flat().setZero();
    Tensor* grad_data = grad_inputs[0];
    if (grad_data == nullptr) return;
    grad_data->flat().setZero();
    const float* grad = grad_output.data();
    float* dst = grad_data->data();
    for (int64_t o = 0; o < g.outer; ++o) {
      for (int64_t j = 0; j < g.num_indices; ++j) {
        const int64_t row = Row(inputs[1]->data()[j], g.dim);
        VectorMap(dst + (o * g.dim + row) * g.inner, g.inner) +=
            ConstVectorMap(grad + (o * g.num_indices + j) * g.inner, g.inner);
      }
    }
  }

 private:
  // data viewed as [outer, dim, inner] with `dim` the gathered axis.
  struct Geometry {
    int64_t axis = 0;
    int64_t outer = 1;
    int64_t dim = 0;
    int64_t inner = 1;
    int64_t num_indices = 0;
  };

  Geometry GeometryOf(absl::Span<const Tensor* const> inputs) const {
    const Shape& data = inputs[0]->shape();
    const int64_t rank = static_cast<int64_t>(data.size());
    Geometry g;
    g.axis = axis_ < 0 ? axis_ + rank : axis_;
    g.outer = Product(data.begin(), data.begin() + g.axis);
    g.dim = data[g.axis];
    g.inner = Product(data.begin() + g.axis + 1, data.end());
    g.num_indices = inputs[1]->size();
    return g;
  }

  // An index CheckInputs accepted, as a row in [0, dim).
  static int64_t Row(float index, int64_t dim) {
    const int64_t i = static_cast<int64_t>(index);
    return i < 0 ? i + dim : i;
  }

  const int64_t axis_;
};

// Cast of a runtime tensor to an integer type (truncation toward zero, as
// ONNX casts float to int) or to BOOL (1 where non-zero). Its output is
// piecewise constant: the gradient is zero.
class CastToIntegerKernel : public Kernel {
 public:
  explicit CastToIntegerKernel(bool to_bool) : to_bool_(to_bool) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    return *inputs[0];
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const auto in = inputs[0]->flat();
    if (to_bool_) {
      output->flat() = (in != 0.0f).cast<float>();
    } else {
      output->flat() = in.unaryExpr([](float v) { return std::trunc(v); });
    }
  }

  void Backward(absl::Span<const Tensor* const> /*inputs*/,
                const Tensor& /*grad_output*/,
                absl::Span<Tensor* const> grad_inputs) const override {
    if (grad_inputs[0] != nullptr) grad_inputs[0]->flat().setZero();
  }

 private:
  const bool to_bool_;
};

absl::StatusOr<Shape> BroadcastAll(absl::Span<const Shape* const> inputs) {
  Shape out = *inputs[0];
  for (size_t i = 1; i < inputs.size(); ++i) {
    absl::StatusOr<Shape> next = BroadcastShapes(out, *inputs[i]);
    if (!next.ok()) return next.status();
    out = *std::move(next);
  }
  return out;
}

// Equal(a, b): 1 where the broadcast elements are equal, else 0. Its output
// is piecewise constant: zero gradients.
class EqualKernel : public Kernel {
 public:
  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    return BroadcastAll(inputs);
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const std::vector<int64_t> a =
        BroadcastIndex(inputs[0]->shape(), output->shape());
    const std::vector<int64_t> b =
        BroadcastIndex(inputs[1]->shape(), output->shape());
    for (int64_t i = 0; i < output->size(); ++i) {
      output->data()[i] =
          inputs[0]->data()[a[i]] == inputs[1]->data()[b[i]] ? 1.0f : 0.0f;
    }
  }

  void Backward(absl::Span<const Tensor* const> /*inputs*/,
                const Tensor& /*grad_output*/,
                absl::Span<Tensor* const> grad_inputs) const override {
    for (Tensor* grad : grad_inputs) {
      if (grad != nullptr) grad->flat().setZero();
    }
  }
};

// Where(condition, x, y): x where the condition is non-zero, else y
// (broadcast). dx and dy are the output gradient where each was chosen,
// summed over the axes they were broadcast along; the condition gets zeros.
class WhereKernel : public Kernel {
 public:
  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    return BroadcastAll(inputs);
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const Shape& out = output->shape();
    const std::vector<int64_t> c = BroadcastIndex(inputs[0]->shape(), out);
    const std::vector<int64_t> x = BroadcastIndex(inputs[1]->shape(), out);
    const std::vector<int64_t> y = BroadcastIndex(inputs[2]->shape(), out);
    for (int64_t i = 0; i < output->size(); ++i) {
      output->data()[i] = inputs[0]->data()[c[i]] != 0.0f
                              ? inputs[1]->data()[x[i]]
                              : inputs[2]->data()[y[i]];
    }
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    const Shape& out = grad_output.shape();
    const std::vector<int64_t> c = BroadcastIndex(inputs[0]->shape(), out);
    if (grad_inputs[0] != nullptr) grad_inputs[0]->flat().setZero();
    for (int branch : {1, 2}) {
      Tensor* grad = grad_inputs[branch];
      if (grad == nullptr) continue;
      grad->flat().setZero();
      const std::vector<int64_t> to =
          BroadcastIndex(inputs[branch]->shape(), out);
      const bool chosen_when = branch == 1;
      for (int64_t i = 0; i < grad_output.size(); ++i) {
        if ((inputs[0]->data()[c[i]] != 0.0f) == chosen_when) {
          grad->data()[to[i]] += grad_output.data()[i];
        }
      }
    }
  }
};

absl::StatusOr<std::unique_ptr<Kernel>> CreateEqual(const OpConfig&) {
  return std::make_unique<EqualKernel>();
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateWhere(const OpConfig&) {
  return std::make_unique<WhereKernel>();
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateIndexGather(
    const OpConfig& config) {
  const absl::StatusOr<int64_t> axis = config.GetInt("axis", 0);
  if (!axis.ok()) return axis.status();
  return std::make_unique<IndexGatherKernel>(*axis);
}

}  // namespace

absl::Span<const OpEntry> MaskOps() {
  static const OpEntry kOps[] = {
      {"Equal", {2, 2, 2, 1, &CreateEqual}},
      {"Where", {3, 3, 3, 1, &CreateWhere}},
  };
  return kOps;
}

const OpSchema& IndexGatherSchema() {
  static const OpSchema kSchema = {2, 2, 2, 1, &CreateIndexGather};
  return kSchema;
}

std::unique_ptr<Kernel> MakeCastToIntegerKernel(bool to_bool) {
  return std::make_unique<CastToIntegerKernel>(to_bool);
}

}  // namespace mixq::engine
