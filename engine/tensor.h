// Tensor: a dense, row-major float32 array with a shape. A value type:
// copying copies the data. Views into Eigen through Map (no copies).
// Not thread-safe for concurrent mutation; concurrent const reads are fine.
#ifndef MIXQ_ENGINE_TENSOR_H_
#define MIXQ_ENGINE_TENSOR_H_

#include <Eigen/Core>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace mixq::engine {

using Shape = std::vector<int64_t>;

// Tensor storage: aligned to Eigen's largest packet (64 bytes with AVX-512),
// so vectorised reductions over a tensor always split the same way and a
// seed fixes every result. With malloc's 16-byte alignment the unaligned
// head of a reduction, and hence its rounding, would vary from run to run.
using FloatBuffer = std::vector<float, Eigen::aligned_allocator<float>>;

// Product of the dims (1 for a scalar shape {}). Dims must be >= 0.
int64_t NumElements(const Shape& shape);
// "[2, 3, 4]".
std::string ShapeToString(const Shape& shape);

using MatrixRM =
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<MatrixRM>;
using ConstMatrixMap = Eigen::Map<const MatrixRM>;
using ArrayMap = Eigen::Map<Eigen::ArrayXf>;
using ConstArrayMap = Eigen::Map<const Eigen::ArrayXf>;

class Tensor {
 public:
  Tensor() = default;
  // Zero-filled tensor of `shape`.
  explicit Tensor(Shape shape);
  // Copies `data`; data.size() must equal NumElements(shape) (checked, aborts:
  // callers validate user data before constructing).
  Tensor(Shape shape, const std::vector<float>& data);
  // Takes `data`; same size rule.
  Tensor(Shape shape, FloatBuffer data);
  // Literal values, e.g. Tensor({2}, {1.0f, 2.0f}); same size rule.
  Tensor(Shape shape, std::initializer_list<float> data);

  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i]; }
  int64_t size() const { return static_cast<int64_t>(data_.size()); }
  bool empty() const { return data_.empty(); }

  float* data() { return data_.data(); }
  const float* data() const { return data_.data(); }
  FloatBuffer& values() { return data_; }
  const FloatBuffer& values() const { return data_; }
  // A copy of the data in a plain std::vector (for APIs and tests that take
  // one).
  std::vector<float> ToVector() const { return {data_.begin(), data_.end()}; }

  // The data as a rows x cols row-major matrix; rows * cols must equal size().
  MatrixMap AsMatrix(int64_t rows, int64_t cols);
  ConstMatrixMap AsMatrix(int64_t rows, int64_t cols) const;
  // The data as a flat array.
  ArrayMap flat();
  ConstArrayMap flat() const;

  // Changes the shape; the element count must stay the same (checked).
  void Reshape(Shape shape);
  // Changes the shape and resizes the buffer (contents unspecified), reusing
  // capacity where possible.
  void Resize(Shape shape);
  void SetZero();

  // Rows [begin, end) of the leading dimension, copied.
  Tensor Slice(int64_t begin, int64_t end) const;

 private:
  Shape shape_;
  FloatBuffer data_;
};

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_TENSOR_H_
