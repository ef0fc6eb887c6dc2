// Helpers shared by the operator kernels (ops*.cc): shape checks and numpy
// broadcasting. Private to engine/.
#ifndef MIXQ_ENGINE_OPS_UTIL_H_
#define MIXQ_ENGINE_OPS_UTIL_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "Eigen/Core"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/tensor.h"

namespace mixq::engine {

using ConstVectorMap = Eigen::Map<const Eigen::VectorXf>;
using VectorMap = Eigen::Map<Eigen::VectorXf>;

struct OpConfig;

// INVALID_ARGUMENT "<op>: <message>".
absl::Status ShapeError(absl::string_view op, absl::string_view message);

// INVALID_ARGUMENT "<op_type> node '<name>': <message>", for kernels refusing
// a node's attributes or constant inputs at import.
absl::Status NodeError(const OpConfig& config, absl::string_view message);

// `axis` in [-rank, rank) as an index in [0, rank), or an error naming `op`.
absl::StatusOr<int64_t> NormalizeAxis(absl::string_view op, int64_t axis,
                                      int64_t rank);

// The product of the dims in [begin, end).
int64_t Product(Shape::const_iterator begin, Shape::const_iterator end);

// Numpy broadcasting: the shape both inputs broadcast to.
absl::StatusOr<Shape> BroadcastShapes(const Shape& a, const Shape& b);

// OK when `in` broadcasts to `out` without changing it (ONNX
// "unidirectional" broadcasting, e.g. Gemm's C).
absl::Status CheckBroadcastsTo(const Shape& in, const Shape& out);

// `shape`, or INVALID_ARGUMENT when it is too large (CheckedNumElements).
absl::StatusOr<Shape> CheckedShape(Shape shape);

// Maps the elements of an output of shape `out` to those of an input of
// shape `in` broadcast to it, as contiguous runs of the output, so that
// broadcast arithmetic is a loop of vector operations (bias adds are one run
// per row). Size-1 output dims are dropped and neighbouring dims that are
// both broadcast or both not are merged.
class BroadcastRuns {
 public:
  BroadcastRuns(const Shape& in, const Shape& out) {
    const size_t offset = out.size() - in.size();
    std::vector<bool> broadcast;
    for (size_t d = 0; d < out.size(); ++d) {
      if (out[d] == 1) continue;
      const bool b = d < offset || in[d - offset] == 1;
      if (!dims_.empty() && broadcast.back() == b) {
        dims_.back() *= out[d];
      } else {
        dims_.push_back(out[d]);
        broadcast.push_back(b);
      }
    }
    strides_.resize(dims_.size());
    int64_t stride = 1;
    for (size_t d = dims_.size(); d-- > 0;) {
      strides_[d] = broadcast[d] ? 0 : stride;
      if (!broadcast[d]) stride *= dims_[d];
    }
  }

  // Calls f(out_offset, in_offset, length, in_stride) for every run:
  // in_stride 1 maps the run onto `length` input elements, 0 onto one.
  template <typename F>
  void ForEach(F&& f) const {
    if (dims_.empty()) {
      f(0, 0, 1, 0);
      return;
    }
    const size_t outer_rank = dims_.size() - 1;
    const int64_t inner = dims_.back();
    const int64_t inner_stride = strides_.back();
    const int64_t outer = Product(dims_.begin(), dims_.end() - 1);
    std::vector<int64_t> index(outer_rank, 0);
    int64_t in_offset = 0;
    for (int64_t o = 0; o < outer; ++o) {
      f(o * inner, in_offset, inner, inner_stride);
      for (size_t d = outer_rank; d-- > 0;) {
        if (++index[d] < dims_[d]) {
          in_offset += strides_[d];
          break;
        }
        in_offset -= strides_[d] * (dims_[d] - 1);
        index[d] = 0;
      }
    }
  }

 private:
  std::vector<int64_t> dims_;
  std::vector<int64_t> strides_;
};

// Per element of an output of shape `out`, the offset of the element of an
// input of shape `in` (numpy-broadcast to `out`) it reads: an index table,
// for the small tensors of masks and folded shape arithmetic, where
// broadcasting and its reduction then stay in one place.
std::vector<int64_t> BroadcastIndex(const Shape& in, const Shape& out);

// out += scale * broadcast(in).
void AddBroadcast(const Tensor& in, float scale, Tensor* out);

// grad_in = scale * (grad_out summed over the dims `grad_in` was broadcast
// along): the backward of AddBroadcast.
void ReduceBroadcast(const Tensor& grad_out, float scale, Tensor* grad_in);

// ceil(a / b) and a rounded up to a multiple of b, for a >= 0, b > 0.
inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t RoundUp(int64_t a, int64_t b) { return CeilDiv(a, b) * b; }

// Floor division for a possibly negative numerator and a positive divisor.
inline int64_t FloorDiv(int64_t a, int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

// *product = a * b when it is at most `limit` (a, b >= 0), else false.
inline bool MulWithin(int64_t a, int64_t b, int64_t limit, int64_t* product) {
  return !__builtin_mul_overflow(a, b, product) && *product <= limit;
}

// `buffer` grown to at least `size` floats (new floats are zero), for
// per-thread scratch kept between calls so that a training loop does not
// allocate (and page-fault) it every step.
inline float* Scratch(FloatBuffer* buffer, int64_t size) {
  if (static_cast<int64_t>(buffer->size()) < size) buffer->resize(size);
  return buffer->data();
}

// Calls f(i) for each i in [0, n): split between the calling thread's
// OpenMP threads (one i at a time, dynamically) when `parallel`, else on the
// calling thread alone, outside any parallel region. Use it rather than
// `#pragma omp parallel for if (...)` around work that runs Eigen products:
// a region whose `if` is false still opens a one-thread parallel region,
// and an Eigen product inside it then runs a nested team of threads that
// libgomp does not keep hot as it does the top level's. With one chunk per
// call (batch 1) that made MobileNetV3-L's forward pass 17x slower on two
// threads than on one (224 against 13 ms).
template <typename F>
void ParallelFor(int64_t n, bool parallel, F&& f) {
  if (!parallel) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) f(i);
}

// Elements per block when elementwise work is split between threads.
inline constexpr int64_t kElementwiseBlock = int64_t{1} << 14;

// Calls f(begin, count) for the consecutive blocks of kElementwiseBlock
// elements covering [0, size), on the calling thread's OpenMP threads when
// there are several blocks. For elementwise work: f may only touch its own
// block's elements, and then the result does not depend on the thread count.
template <typename F>
void ParallelBlocks(int64_t size, F&& f) {
  const int64_t blocks = (size + kElementwiseBlock - 1) / kElementwiseBlock;
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t begin = block * kElementwiseBlock;
    f(begin, std::min(kElementwiseBlock, size - begin));
  }
}

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_OPS_UTIL_H_
