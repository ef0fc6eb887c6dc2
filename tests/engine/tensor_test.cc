#include "engine/tensor.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mixq::engine {
namespace {

using ::testing::ElementsAre;

TEST(ShapeTest, NumElements) {
  EXPECT_EQ(NumElements({}), 1);
  EXPECT_EQ(NumElements({3}), 3);
  EXPECT_EQ(NumElements({2, 3, 4}), 24);
  EXPECT_EQ(NumElements({2, 0, 4}), 0);
}

TEST(ShapeTest, ToString) {
  EXPECT_EQ(ShapeToString({}), "[]");
  EXPECT_EQ(ShapeToString({7}), "[7]");
  EXPECT_EQ(ShapeToString({2, 3, 4}), "[2, 3, 4]");
}

TEST(TensorTest, DefaultIsEmpty) {
  const Tensor t;
  EXPECT_TRUE(t.empty());
  EXPECT_EQ(t.rank(), 0);
  EXPECT_EQ(t.size(), 0);
}

TEST(TensorTest, ShapeConstructorZeroFills) {
  const Tensor t({2, 3});
  EXPECT_EQ(t.rank(), 2);
  EXPECT_EQ(t.dim(0), 2);
  EXPECT_EQ(t.dim(1), 3);
  EXPECT_EQ(t.size(), 6);
  EXPECT_THAT(t.values(), ElementsAre(0, 0, 0, 0, 0, 0));
}

TEST(TensorTest, CopyIsDeep) {
  Tensor a({2}, {1, 2});
  Tensor b = a;
  b.values()[0] = 5;
  EXPECT_EQ(a.values()[0], 1);
  EXPECT_EQ(b.values()[0], 5);
}

TEST(TensorTest, AsMatrixIsRowMajorView) {
  Tensor t({2, 3}, {1, 2, 3, 4, 5, 6});
  ConstMatrixMap m = static_cast<const Tensor&>(t).AsMatrix(2, 3);
  EXPECT_EQ(m(0, 2), 3);
  EXPECT_EQ(m(1, 0), 4);
  // A different factorisation of the same buffer.
  EXPECT_EQ(t.AsMatrix(3, 2)(1, 1), 4);
  // Writes go through to the tensor.
  t.AsMatrix(2, 3)(1, 2) = 60;
  EXPECT_EQ(t.values()[5], 60);
  t.flat() *= 2;
  EXPECT_THAT(t.values(), ElementsAre(2, 4, 6, 8, 10, 120));
}

TEST(TensorTest, Slice) {
  const Tensor t({3, 2}, {1, 2, 3, 4, 5, 6});
  const Tensor middle = t.Slice(1, 3);
  EXPECT_EQ(middle.shape(), (Shape{2, 2}));
  EXPECT_THAT(middle.values(), ElementsAre(3, 4, 5, 6));
  const Tensor none = t.Slice(2, 2);
  EXPECT_EQ(none.shape(), (Shape{0, 2}));
  EXPECT_TRUE(none.empty());
}

TEST(TensorTest, SliceOfHigherRank) {
  Tensor t({2, 2, 2});
  for (int i = 0; i < 8; ++i) t.values()[i] = static_cast<float>(i);
  EXPECT_THAT(t.Slice(1, 2).values(), ElementsAre(4, 5, 6, 7));
}

TEST(TensorTest, ReshapeKeepsData) {
  Tensor t({2, 3}, {1, 2, 3, 4, 5, 6});
  t.Reshape({3, 2});
  EXPECT_EQ(t.shape(), (Shape{3, 2}));
  EXPECT_THAT(t.values(), ElementsAre(1, 2, 3, 4, 5, 6));
  t.Reshape({6});
  EXPECT_EQ(t.rank(), 1);
}

TEST(TensorTest, ResizeAndSetZero) {
  Tensor t({2, 2}, {1, 2, 3, 4});
  t.Resize({3, 3});
  EXPECT_EQ(t.shape(), (Shape{3, 3}));
  EXPECT_EQ(t.size(), 9);
  t.SetZero();
  EXPECT_EQ(t.flat().abs().sum(), 0);
  t.Resize({1});
  EXPECT_EQ(t.size(), 1);
}

using TensorDeathTest = ::testing::Test;

TEST(TensorDeathTest, ReshapeToAnotherCountAborts) {
  Tensor t({2, 3});
  EXPECT_DEATH(t.Reshape({4, 2}), "reshape changes the element count");
}

TEST(TensorDeathTest, DataSizeMismatchAborts) {
  EXPECT_DEATH(Tensor({2, 2}, {1, 2, 3}), "data size does not match");
}

TEST(TensorDeathTest, AsMatrixMustCoverTheTensor) {
  Tensor t({2, 3});
  EXPECT_DEATH(t.AsMatrix(2, 2), "matrix view");
}

TEST(TensorDeathTest, SliceOutOfRangeAborts) {
  const Tensor t({2, 3});
  EXPECT_DEATH(t.Slice(1, 3), "slice out of range");
  EXPECT_DEATH(t.Slice(2, 1), "slice out of range");
}

}  // namespace
}  // namespace mixq::engine
