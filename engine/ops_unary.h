// The element-wise unary kernel shared by the operator families (ops_*.cc):
// activations and unary math are an Op struct each, wrapped by UnaryKernel.
// Private to engine/.
#ifndef MIXQ_ENGINE_OPS_UNARY_H_
#define MIXQ_ENGINE_OPS_UNARY_H_

#include <memory>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/ops.h"
#include "engine/ops_util.h"
#include "engine/tensor.h"

namespace mixq::engine {

// y = op(x) element by element. Op provides
//   void Forward(const ConstArrayMap& x, ArrayMap y) const;
//   void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
//                 ArrayMap dx) const;
// where Backward may use dx as scratch before its final assignment.
template <typename Op>
class UnaryKernel : public Kernel {
 public:
  explicit UnaryKernel(Op op) : op_(std::move(op)) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    return *inputs[0];
  }

  // Elementwise, so blocks of elements go to the threads (ParallelBlocks).
  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const float* x = inputs[0]->data();
    float* y = output->data();
    ParallelBlocks(output->size(), [&](int64_t begin, int64_t n) {
      op_.Forward(ConstArrayMap(x + begin, n), ArrayMap(y + begin, n));
    });
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    if (grad_inputs[0] == nullptr) return;
    const float* x = inputs[0]->data();
    const float* g = grad_output.data();
    float* dx = grad_inputs[0]->data();
    ParallelBlocks(grad_output.size(), [&](int64_t begin, int64_t n) {
      op_.Backward(ConstArrayMap(x + begin, n), ConstArrayMap(g + begin, n),
                   ArrayMap(dx + begin, n));
    });
  }

 private:
  const Op op_;
};

template <typename Op>
absl::StatusOr<std::unique_ptr<Kernel>> MakeUnary(Op op) {
  return std::unique_ptr<Kernel>(
      std::make_unique<UnaryKernel<Op>>(std::move(op)));
}

// Operators without attributes.
template <typename Op>
absl::StatusOr<std::unique_ptr<Kernel>> CreateUnary(const OpConfig&) {
  return MakeUnary(Op{});
}

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_OPS_UNARY_H_
