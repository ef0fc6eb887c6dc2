// TensorPool: the buffers of tensors a pass no longer needs, handed out
// again by size. A pass that needs one buffer per graph value, but only
// while the value is alive (Backward: a value's gradient lives from its
// first consumer's backward to its producer's), then holds as many buffers
// as are alive at once instead of one per value, and a pool kept between
// calls (thread_local) keeps their capacity, so repeated calls do not
// allocate.
//
// Thread-safety: none; one pool per thread.
#ifndef MIXQ_ENGINE_TENSOR_POOL_H_
#define MIXQ_ENGINE_TENSOR_POOL_H_

#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace mixq::engine {

class TensorPool {
 public:
  // A tensor of `shape`, contents unspecified: the pooled buffer with the
  // least capacity that holds it, else the one with the most (grown), else
  // a new one.
  Tensor Take(const Shape& shape);

  // Keeps `tensor`'s buffer for a later Take (an empty tensor is dropped).
  void Give(Tensor tensor);

  // Floats of capacity the pool holds (for tests and memory accounting).
  int64_t capacity() const;

 private:
  std::vector<Tensor> free_;
};

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_TENSOR_POOL_H_
