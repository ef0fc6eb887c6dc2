// TensorPool: Take hands out the best-fitting pooled buffer (least capacity
// that holds the shape, else the largest, grown), Give keeps buffers, empty
// tensors are not kept.
#include "engine/tensor_pool.h"

#include "engine/tensor.h"
#include "gtest/gtest.h"

namespace mixq::engine {
namespace {

TEST(TensorPoolTest, TakeReusesTheSmallestBufferThatFits) {
  TensorPool pool;
  Tensor small({10});
  Tensor large({1000});
  const float* large_data = large.data();
  pool.Give(std::move(small));
  pool.Give(std::move(large));
  EXPECT_EQ(pool.capacity(), 1010);
  const Tensor t = pool.Take({20, 5});  // 100: only the large one fits
  EXPECT_EQ(t.data(), large_data);
  EXPECT_EQ(t.shape(), (Shape{20, 5}));
  EXPECT_EQ(t.size(), 100);
  EXPECT_EQ(pool.capacity(), 10);
}

TEST(TensorPoolTest, TakeGrowsTheLargestWhenNoneFits) {
  TensorPool pool;
  pool.Give(Tensor({10}));
  pool.Give(Tensor({30}));
  const Tensor t = pool.Take({50});
  EXPECT_EQ(t.size(), 50);
  EXPECT_EQ(pool.capacity(), 10);  // the 30 was taken and grown
}

TEST(TensorPoolTest, TakeFromAnEmptyPoolMakesATensor) {
  TensorPool pool;
  const Tensor t = pool.Take({3, 4});
  EXPECT_EQ(t.shape(), (Shape{3, 4}));
  EXPECT_EQ(t.size(), 12);
}

TEST(TensorPoolTest, EmptyTensorsAreNotKept) {
  TensorPool pool;
  pool.Give(Tensor());
  EXPECT_EQ(pool.capacity(), 0);
  const Tensor t = pool.Take({2});
  EXPECT_EQ(t.size(), 2);
}

TEST(TensorPoolTest, AnExactFitIsPreferredOverALargerBuffer) {
  TensorPool pool;
  Tensor exact({64});
  const float* exact_data = exact.data();
  pool.Give(Tensor({4096}));
  pool.Give(std::move(exact));
  pool.Give(Tensor({100}));
  EXPECT_EQ(pool.Take({64}).data(), exact_data);
}

}  // namespace
}  // namespace mixq::engine
