#include "engine/tensor.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "util/check.h"

namespace mixq::engine {

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    MIXQ_CHECK(d >= 0, "negative dimension");
    n *= d;
  }
  return n;
}

std::string ShapeToString(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

Tensor::Tensor(Shape shape)
    : shape_(std::move(shape)), data_(NumElements(shape_), 0.0f) {}

Tensor::Tensor(Shape shape, const std::vector<float>& data)
    : shape_(std::move(shape)), data_(data.begin(), data.end()) {
  MIXQ_CHECK(static_cast<int64_t>(data_.size()) == NumElements(shape_),
             "data size does not match the shape");
}

Tensor::Tensor(Shape shape, std::initializer_list<float> data)
    : shape_(std::move(shape)), data_(data.begin(), data.end()) {
  MIXQ_CHECK(static_cast<int64_t>(data_.size()) == NumElements(shape_),
             "data size does not match the shape");
}

Tensor::Tensor(Shape shape, FloatBuffer data)
    : shape_(std::move(shape)), data_(std::move(data)) {
  MIXQ_CHECK(static_cast<int64_t>(data_.size()) == NumElements(shape_),
             "data size does not match the shape");
}

MatrixMap Tensor::AsMatrix(int64_t rows, int64_t cols) {
  MIXQ_CHECK(rows >= 0 && cols >= 0 && rows * cols == size(),
             "matrix view does not cover the tensor");
  return MatrixMap(data_.data(), rows, cols);
}

ConstMatrixMap Tensor::AsMatrix(int64_t rows, int64_t cols) const {
  MIXQ_CHECK(rows >= 0 && cols >= 0 && rows * cols == size(),
             "matrix view does not cover the tensor");
  return ConstMatrixMap(data_.data(), rows, cols);
}

ArrayMap Tensor::flat() { return ArrayMap(data_.data(), size()); }

ConstArrayMap Tensor::flat() const {
  return ConstArrayMap(data_.data(), size());
}

void Tensor::Reshape(Shape shape) {
  MIXQ_CHECK(NumElements(shape) == size(), "reshape changes the element count");
  shape_ = std::move(shape);
}

void Tensor::Resize(Shape shape) {
  data_.resize(NumElements(shape));
  shape_ = std::move(shape);
}

void Tensor::SetZero() { std::fill(data_.begin(), data_.end(), 0.0f); }

Tensor Tensor::Slice(int64_t begin, int64_t end) const {
  MIXQ_CHECK(rank() >= 1, "slice of a scalar");
  MIXQ_CHECK(0 <= begin && begin <= end && end <= shape_[0],
             "slice out of range");
  const int64_t row = shape_[0] == 0 ? 0 : size() / shape_[0];
  Shape shape = shape_;
  shape[0] = end - begin;
  return Tensor(std::move(shape),
                std::vector<float>(data_.begin() + begin * row,
                                   data_.begin() + end * row));
}

}  // namespace mixq::engine
