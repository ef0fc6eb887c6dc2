// Operators on integer values carried as floats (engine/ops_index.cc): Gather
// with runtime indices (an embedding lookup) and Cast of a runtime tensor to
// integer and boolean types.
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/gradient_check.h"
#include "tests/support/kernel_testing.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::ExpectGradientsMatchFiniteDifferences;
using ::mixq::testing::IntAttr;
using ::mixq::testing::MakeKernel;
using ::mixq::testing::RunKernel;

std::unique_ptr<Kernel> IndexGather(int64_t axis) {
  OpConfig config;
  config.op_type = "Gather";
  config.node_name = "embed";
  config.opset = 13;
  config.attributes["axis"] = IntAttr(axis);
  absl::StatusOr<std::unique_ptr<Kernel>> kernel =
      IndexGatherSchema().create(config);
  EXPECT_TRUE(kernel.ok()) << kernel.status();
  return kernel.ok() ? *std::move(kernel) : nullptr;
}

// A 4 x 3 table whose element (r, c) is 10 r + c.
Tensor Table() {
  Tensor table({4, 3});
  for (int64_t r = 0; r < 4; ++r) {
    for (int64_t c = 0; c < 3; ++c) table.data()[r * 3 + c] = 10.0f * r + c;
  }
  return table;
}

TEST(IndexGatherTest, GathersRowsWithNegativeIndicesFromTheEnd) {
  const std::unique_ptr<Kernel> kernel = IndexGather(0);
  const Tensor ids({2, 2}, {0.0f, 3.0f, -1.0f, 1.0f});
  const Tensor out = RunKernel(*kernel, {Table(), ids});
  ASSERT_EQ(out.shape(), (Shape{2, 2, 3}));
  EXPECT_THAT(out.ToVector(), ::testing::ElementsAre(0, 1, 2, 30, 31, 32, 30,
                                                     31, 32, 10, 11, 12));
}

TEST(IndexGatherTest, GathersAlongAnInnerAxis) {
  const std::unique_ptr<Kernel> kernel = IndexGather(1);
  const Tensor ids({2}, {2.0f, 0.0f});
  const Tensor out = RunKernel(*kernel, {Table(), ids});
  ASSERT_EQ(out.shape(), (Shape{4, 2}));
  EXPECT_THAT(out.ToVector(),
              ::testing::ElementsAre(2, 0, 12, 10, 22, 20, 32, 30));
}

TEST(IndexGatherTest, RefusesIndicesOutsideTheTable) {
  const std::unique_ptr<Kernel> kernel = IndexGather(0);
  const Tensor table = Table();
  for (float bad : {4.0f, -5.0f, 1e9f}) {
    const Tensor ids({3}, {0.0f, bad, 1.0f});
    const absl::Status status = kernel->CheckInputs({&table, &ids});
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(status.message(), ::testing::HasSubstr("at position 1"));
    EXPECT_THAT(status.message(), ::testing::HasSubstr("[-4, 4)"));
  }
  const Tensor ids({2}, {3.0f, -4.0f});
  EXPECT_TRUE(kernel->CheckInputs({&table, &ids}).ok());
}

// The table's gradient is the scatter-add of the output gradient's rows
// (row 1 is gathered twice); the ids get zeros.
TEST(IndexGatherTest, GradientMatchesFiniteDifferences) {
  const std::unique_ptr<Kernel> kernel = IndexGather(0);
  const Tensor ids({2, 2}, {1.0f, 3.0f, 1.0f, 0.0f});
  Tensor upstream({2, 2, 3});
  for (int64_t i = 0; i < upstream.size(); ++i) {
    upstream.data()[i] = 0.5f + 0.25f * static_cast<float>(i % 5);
  }
  ExpectGradientsMatchFiniteDifferences(*kernel, {Table(), ids}, upstream, {},
                                        /*zero_by_contract=*/{1});
}

// attention_mask == 0 against a scalar, then Where(mask, -inf, 0) broadcast
// over a row of scores, as a key padding mask exports. (Where's gradient is
// in the operator-test table, op_table.cc.)
TEST(MaskOpsTest, EqualAndWhereBroadcast) {
  absl::StatusOr<std::unique_ptr<Kernel>> equal = MakeKernel("Equal", {});
  ASSERT_TRUE(equal.ok()) << equal.status();
  const Tensor mask({2, 3}, {1, 1, 0, 1, 0, 0});
  const Tensor padded = RunKernel(**equal, {mask, Tensor({}, {0.0f})});
  EXPECT_THAT(padded.ToVector(), ::testing::ElementsAre(0, 0, 1, 0, 1, 1));
  absl::StatusOr<std::unique_ptr<Kernel>> where = MakeKernel("Where", {});
  ASSERT_TRUE(where.ok()) << where.status();
  const Tensor chosen = RunKernel(
      **where, {padded, Tensor({}, {-5.0f}), Tensor({1, 3}, {1, 2, 3})});
  EXPECT_THAT(chosen.ToVector(), ::testing::ElementsAre(1, 2, -5, 1, -5, -5));
}

TEST(RuntimeCastTest, TruncatesToIntegersAndTestsForBool) {
  const Tensor x({4}, {1.7f, -1.7f, 0.0f, 3.0f});
  absl::StatusOr<std::unique_ptr<Kernel>> to_int64 =
      MakeKernel("Cast", {{"to", IntAttr(7)}});
  ASSERT_TRUE(to_int64.ok()) << to_int64.status();
  EXPECT_THAT(RunKernel(**to_int64, {x}).ToVector(),
              ::testing::ElementsAre(1, -1, 0, 3));
  absl::StatusOr<std::unique_ptr<Kernel>> to_bool =
      MakeKernel("Cast", {{"to", IntAttr(9)}});
  ASSERT_TRUE(to_bool.ok()) << to_bool.status();
  EXPECT_THAT(RunKernel(**to_bool, {x}).ToVector(),
              ::testing::ElementsAre(1, 1, 0, 1));
  absl::StatusOr<std::unique_ptr<Kernel>> to_float =
      MakeKernel("Cast", {{"to", IntAttr(1)}});
  ASSERT_TRUE(to_float.ok()) << to_float.status();
  EXPECT_THAT(RunKernel(**to_float, {x}).ToVector(),
              ::testing::ElementsAre(1.7f, -1.7f, 0, 3));
  EXPECT_FALSE(MakeKernel("Cast", {{"to", IntAttr(8)}}).ok());  // STRING
}

}  // namespace
}  // namespace mixq::engine
