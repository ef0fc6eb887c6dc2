#include "search/cost_model.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mixq::search {
namespace {

using ::testing::HasSubstr;

// Two layers of 300 and 100 weights, 50 other (bias) parameters.
CostModel TwoLayers() { return CostModel({300, 100}, 450); }

TEST(CostModelTest, AverageBitsAreParameterWeighted) {
  const CostModel cost = TwoLayers();
  EXPECT_DOUBLE_EQ(cost.AvgBits({8, 8}), 8.0);
  EXPECT_DOUBLE_EQ(cost.AvgBits({4, 8}), (300 * 4 + 100 * 8) / 400.0);
}

TEST(CostModelTest, SizeCountsOtherParametersInFp32) {
  const CostModel cost = TwoLayers();
  EXPECT_DOUBLE_EQ(cost.Fp32SizeBytes(), 450 * 4.0);
  EXPECT_DOUBLE_EQ(cost.SizeBytes({8, 4}), (300 * 8 + 100 * 4 + 50 * 32) / 8.0);
}

TEST(CostModelTest, BudgetsInBothUnits) {
  const CostModel cost = TwoLayers();
  const Budget avg{Budget::Kind::kAvgBits, 5.0};
  EXPECT_TRUE(avg.IsMet(cost, {4, 8}));   // exactly 5.0
  EXPECT_FALSE(avg.IsMet(cost, {6, 4}));  // 5.5
  const Budget frac{Budget::Kind::kSizeFraction, 0.25};
  EXPECT_TRUE(frac.IsMet(cost, {4, 4}));   // (1600 + 1600)/8 = 400 <= 450
  EXPECT_FALSE(frac.IsMet(cost, {8, 8}));  // 500 > 450
  EXPECT_DOUBLE_EQ(frac.MaxSizeBytes(cost), 450.0);
}

TEST(CostModelTest, UnreachableBudgetNamesTheLowestCost) {
  const CostModel cost = TwoLayers();
  const absl::Status status =
      CheckBudgetReachable(cost, Budget{Budget::Kind::kAvgBits, 1.5}, {2, 2});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("cannot be met"));
  EXPECT_THAT(status.message(), HasSubstr("2 average weight bits"));
  EXPECT_TRUE(
      CheckBudgetReachable(cost, Budget{Budget::Kind::kAvgBits, 2}, {2, 2})
          .ok());
}

TEST(CostModelTest, PolicyToString) {
  EXPECT_EQ(PolicyToString({8, 6, 4}), "8/6/4");
}

}  // namespace
}  // namespace mixq::search
