// Adam optimizer (Kingma & Ba) over a list of parameter tensors. Its
// bias-corrected second moments v̂ are readable per parameter: the search uses
// them as a diagonal Hessian (empirical Fisher) approximation.
// Not thread-safe.
#ifndef MIXQ_ENGINE_ADAM_H_
#define MIXQ_ENGINE_ADAM_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "engine/tensor.h"

namespace mixq::engine {

struct AdamOptions {
  float learning_rate = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float epsilon = 1e-8f;
};

class Adam {
 public:
  // One moment pair per shape, zero-initialised.
  Adam(const AdamOptions& options, const std::vector<Shape>& shapes);

  // One update: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²;
  // p -= lr · m̂ / (sqrt(v̂) + eps). params[i] and grads[i] must have the
  // shapes given at construction (checked).
  void Step(absl::Span<Tensor* const> params, absl::Span<const Tensor> grads);

  int64_t step_count() const { return t_; }
  const AdamOptions& options() const { return options_; }
  void set_learning_rate(float lr) { options_.learning_rate = lr; }

  // Raw moments of parameter i.
  const Tensor& first_moment(int i) const { return m_[i]; }
  const Tensor& second_moment(int i) const { return v_[i]; }
  // v̂ = v / (1 - beta2^t) of parameter i; all zeros before the first step.
  Tensor CorrectedSecondMoment(int i) const;

  // Replaces the state (a checkpoint's): step count t and both moments.
  // False (nothing changed) unless t >= 0 and m, v have the constructor's
  // shapes.
  bool Restore(int64_t t, std::vector<Tensor> m, std::vector<Tensor> v);

 private:
  AdamOptions options_;
  int64_t t_ = 0;
  std::vector<Tensor> m_;
  std::vector<Tensor> v_;
};

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_ADAM_H_
