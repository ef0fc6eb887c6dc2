#include "engine/adam.h"

#include <cmath>

#include "util/check.h"

namespace mixq::engine {

Adam::Adam(const AdamOptions& options, const std::vector<Shape>& shapes)
    : options_(options) {
  m_.reserve(shapes.size());
  v_.reserve(shapes.size());
  for (const Shape& shape : shapes) {
    m_.emplace_back(shape);
    v_.emplace_back(shape);
  }
}

void Adam::Step(absl::Span<Tensor* const> params,
                absl::Span<const Tensor> grads) {
  MIXQ_CHECK(params.size() == m_.size() && grads.size() == m_.size(),
             "Adam::Step needs one parameter and gradient per moment");
  ++t_;
  const double t = static_cast<double>(t_);
  const float correction1 = static_cast<float>(
      1.0 - std::pow(static_cast<double>(options_.beta1), t));
  const float correction2 = static_cast<float>(
      1.0 - std::pow(static_cast<double>(options_.beta2), t));
  const float b1 = options_.beta1;
  const float b2 = options_.beta2;
  for (size_t i = 0; i < m_.size(); ++i) {
    MIXQ_CHECK(params[i]->shape() == m_[i].shape() &&
                   grads[i].shape() == m_[i].shape(),
               "Adam::Step shape mismatch");
    const ConstArrayMap g = grads[i].flat();
    ArrayMap m = m_[i].flat();
    ArrayMap v = v_[i].flat();
    m = b1 * m + (1.0f - b1) * g;
    v = b2 * v + (1.0f - b2) * g.square();
    params[i]->flat() -= options_.learning_rate * (m / correction1) /
                         ((v / correction2).sqrt() + options_.epsilon);
  }
}

bool Adam::Restore(int64_t t, std::vector<Tensor> m, std::vector<Tensor> v) {
  if (t < 0 || m.size() != m_.size() || v.size() != v_.size()) return false;
  for (size_t i = 0; i < m_.size(); ++i) {
    if (m[i].shape() != m_[i].shape() || v[i].shape() != v_[i].shape())
      return false;
  }
  t_ = t;
  m_ = std::move(m);
  v_ = std::move(v);
  return true;
}

Tensor Adam::CorrectedSecondMoment(int i) const {
  Tensor corrected = v_[i];
  if (t_ > 0) {
    const double correction =
        1.0 -
        std::pow(static_cast<double>(options_.beta2), static_cast<double>(t_));
    corrected.flat() /= static_cast<float>(correction);
  }
  return corrected;
}

}  // namespace mixq::engine
