// Test support: checks a kernel's backward pass against central finite
// differences of its forward pass. Header-only; needs GoogleTest.
#ifndef MIXQ_TESTS_SUPPORT_GRADIENT_CHECK_H_
#define MIXQ_TESTS_SUPPORT_GRADIENT_CHECK_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "gtest/gtest.h"
#include "tests/support/tensor_compare.h"

namespace mixq::testing {

// The finite-difference step and the accepted error of a gradient element:
// |analytic - numeric| <= abs + rel * |numeric|.
struct GradientTolerance {
  float eps = 1e-3f;
  double abs = 2e-3;
  double rel = 1e-2;
};

inline bool GradientNear(double analytic, double numeric,
                         const GradientTolerance& tolerance) {
  return std::abs(analytic - numeric) <=
         tolerance.abs + tolerance.rel * std::abs(numeric);
}

// f() with the element `x` at x + eps and at x - eps; `x` is restored.
struct CentralValues {
  double plus;
  double minus;
};

template <typename F>
CentralValues EvaluateAround(float& x, float eps, F&& f) {
  const float saved = x;
  x = saved + eps;
  const double plus = f();
  x = saved - eps;
  const double minus = f();
  x = saved;
  return {plus, minus};
}

// For L = Σ upstream ⊙ kernel(inputs), expects kernel.Backward's dL/dInput of
// every element of every input to match central differences of L (summed in
// double), every gradient buffer to be overwritten (they start filled with
// garbage), and asking for one input's gradient alone to give the same values.
// The inputs listed in `zero_by_contract` (BatchNormalization's mean and var)
// get zeros by the kernel's contract rather than the derivative, and are
// expected to. `upstream` must have the kernel's output shape for `inputs`.
// Failures name the input and the element.
inline void ExpectGradientsMatchFiniteDifferences(
    const engine::Kernel& kernel, std::vector<engine::Tensor> inputs,
    const engine::Tensor& upstream, const GradientTolerance& tolerance = {},
    const std::vector<size_t>& zero_by_contract = {}) {
  // What a kernel that accumulates instead of overwriting would leave behind.
  constexpr float kGarbage = 123.0f;
  std::vector<const engine::Tensor*> pointers;
  for (const engine::Tensor& t : inputs) pointers.push_back(&t);

  const auto loss = [&]() {
    engine::Tensor out(upstream.shape());
    kernel.Forward(pointers, &out);
    double sum = 0;
    for (int64_t i = 0; i < out.size(); ++i) {
      sum += static_cast<double>(out.data()[i]) * upstream.data()[i];
    }
    return sum;
  };

  std::vector<engine::Tensor> grads;
  std::vector<engine::Tensor*> grad_pointers;
  for (const engine::Tensor& t : inputs) grads.emplace_back(t.shape());
  for (engine::Tensor& g : grads) {
    g.flat().setConstant(kGarbage);
    grad_pointers.push_back(&g);
  }
  kernel.Backward(pointers, upstream, grad_pointers);

  for (size_t i = 0; i < inputs.size(); ++i) {
    if (std::find(zero_by_contract.begin(), zero_by_contract.end(), i) !=
        zero_by_contract.end()) {
      EXPECT_TRUE(grads[i].flat().isZero()) << "input " << i;
    } else {
      for (int64_t j = 0; j < inputs[i].size(); ++j) {
        const auto [plus, minus] =
            EvaluateAround(inputs[i].data()[j], tolerance.eps, loss);
        const double numeric = (plus - minus) / (2.0 * tolerance.eps);
        EXPECT_TRUE(GradientNear(grads[i].data()[j], numeric, tolerance))
            << "input " << i << " element " << j << ": analytic "
            << grads[i].data()[j] << ", numeric " << numeric;
      }
    }
    std::vector<engine::Tensor*> only(inputs.size(), nullptr);
    engine::Tensor alone(inputs[i].shape());
    alone.flat().setConstant(kGarbage);
    only[i] = &alone;
    kernel.Backward(pointers, upstream, only);
    EXPECT_EQ(alone.values(), grads[i].values()) << "input " << i;
  }
}

// For checking a whole model's gradients against central differences:
// L = Σ R ⊙ model(x, params) with R fixed (R[i] = sin(0.7 i + 0.3)). Writes
// Backward's dL/dParams at `params` into `*grads` (test failures when Forward
// or Backward fails) and returns L as a function of the values `params` holds
// when it is called; it borrows `model`, `x` and `params`.
inline std::function<double()> ModelLossAndGradients(
    const engine::Model& model, const engine::Tensor& x,
    const std::vector<engine::Tensor>& params,
    std::vector<engine::Tensor>* grads) {
  engine::ForwardTrace trace;
  absl::StatusOr<engine::Tensor> y = model.Forward(x, Pointers(params), &trace);
  EXPECT_TRUE(y.ok()) << y.status();
  engine::Tensor upstream(y.ok() ? y->shape() : engine::Shape{0});
  for (int64_t i = 0; i < upstream.size(); ++i) {
    upstream.data()[i] = std::sin(0.7f * static_cast<float>(i) + 0.3f);
  }
  if (y.ok()) {
    const absl::Status backward =
        model.Backward(trace, Pointers(params), upstream, grads);
    EXPECT_TRUE(backward.ok()) << backward;
  }
  return [&model, &x, &params, upstream]() {
    absl::StatusOr<engine::Tensor> out =
        model.Forward(x, Pointers(params), nullptr);
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return 0.0;
    return (out->flat().cast<double>() * upstream.flat().cast<double>()).sum();
  };
}

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SUPPORT_GRADIENT_CHECK_H_
