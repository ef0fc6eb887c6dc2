#include "engine/tensor_pool.h"

#include <utility>

namespace mixq::engine {
namespace {

int64_t Capacity(const Tensor& t) {
  return static_cast<int64_t>(t.values().capacity());
}

}  // namespace

Tensor TensorPool::Take(const Shape& shape) {
  const int64_t needed = NumElements(shape);
  int best = -1;  // least capacity >= needed, else most capacity
  for (int i = 0; i < static_cast<int>(free_.size()); ++i) {
    const int64_t capacity = Capacity(free_[i]);
    if (best < 0) {
      best = i;
      continue;
    }
    const int64_t best_capacity = Capacity(free_[best]);
    const bool fits = capacity >= needed;
    const bool best_fits = best_capacity >= needed;
    if (fits ? !best_fits || capacity < best_capacity
             : !best_fits && capacity > best_capacity) {
      best = i;
    }
  }
  Tensor tensor;
  if (best >= 0) {
    tensor = std::move(free_[best]);
    if (best + 1 < static_cast<int>(free_.size())) {
      free_[best] = std::move(free_.back());
    }
    free_.pop_back();
  }
  tensor.Resize(shape);
  return tensor;
}

void TensorPool::Give(Tensor tensor) {
  if (Capacity(tensor) == 0) return;
  free_.push_back(std::move(tensor));
}

int64_t TensorPool::capacity() const {
  int64_t total = 0;
  for (const Tensor& t : free_) total += Capacity(t);
  return total;
}

}  // namespace mixq::engine
