// Element-wise operators: activations and numpy-broadcasting arithmetic.
#include <memory>

#include "absl/status/statusor.h"
#include "engine/ops.h"
#include "engine/ops_util.h"

namespace mixq::engine {
namespace {

class AddKernel : public Kernel {
 public:
  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    absl::StatusOr<Shape> out = BroadcastShapes(*inputs[0], *inputs[1]);
    if (!out.ok()) return ShapeError("Add", out.status().message());
    return CheckedShape(*std::move(out));
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const Tensor& a = *inputs[0];
    const Tensor& b = *inputs[1];
    if (a.shape() == output->shape()) {
      output->flat() = a.flat();
      AddBroadcast(b, 1.0f, output);
    } else if (b.shape() == output->shape()) {
      output->flat() = b.flat();
      AddBroadcast(a, 1.0f, output);
    } else {
      output->SetZero();
      AddBroadcast(a, 1.0f, output);
      AddBroadcast(b, 1.0f, output);
    }
  }

  void Backward(absl::Span<const Tensor* const> /*inputs*/,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    for (Tensor* grad : grad_inputs) {
      if (grad == nullptr) continue;
      if (grad->shape() == grad_output.shape()) {
        grad->flat() = grad_output.flat();
      } else {
        ReduceBroadcast(grad_output, 1.0f, grad);
      }
    }
  }
};

class ReluKernel : public Kernel {
 public:
  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    return *inputs[0];
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    output->flat() = inputs[0]->flat().max(0.0f);
  }

  // The derivative at 0 is taken as 0.
  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    if (grad_inputs[0] == nullptr) return;
    grad_inputs[0]->flat() =
        (inputs[0]->flat() > 0.0f).select(grad_output.flat(), 0.0f);
  }
};

absl::StatusOr<std::unique_ptr<Kernel>> CreateAdd(const OpConfig&) {
  return std::make_unique<AddKernel>();
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateRelu(const OpConfig&) {
  return std::make_unique<ReluKernel>();
}

}  // namespace

absl::Span<const OpEntry> ElementwiseOps() {
  static const OpEntry kOps[] = {
      {"Add", {2, 2, 2, 1, &CreateAdd}},
      {"Relu", {1, 1, 1, 1, &CreateRelu}},
  };
  return kOps;
}

}  // namespace mixq::engine
