#include "search/cost_model.h"

#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mixq::search {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Two layers: 300 weights / 3000 MACs and 100 weights / 500 MACs; 50 other
// (bias) parameters, so 450 parameters, 1800 bytes in FP32.
CostModel TwoLayers() { return CostModel({{300, 3000}, {100, 500}}, 450); }

TEST(CostModelTest, PerLayerFigures) {
  const CostModel cost = TwoLayers();
  EXPECT_EQ(cost.num_layers(), 2);
  EXPECT_EQ(cost.layer_weights(1), 100);
  EXPECT_EQ(cost.layer_macs(0), 3000);
  EXPECT_EQ(cost.quantizable_weights(), 400);
  EXPECT_DOUBLE_EQ(cost.LayerBytes(0, 3), 300 * 3 / 8.0);
  EXPECT_DOUBLE_EQ(cost.LayerBytes(1, 8), 100.0);
}

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

TEST(CostModelTest, BopsAreMacsTimesWeightBitsTimesActivationBits) {
  const CostModel cost = TwoLayers();
  EXPECT_EQ(cost.Bops({8, 4}, 8), 3000 * 8 * 8 + 500 * 4 * 8);
  EXPECT_EQ(cost.Bops({8, 4}, 4), 3000 * 8 * 4 + 500 * 4 * 4);
  // Activations left in float count 32 bits.
  EXPECT_EQ(cost.Bops({2, 2}, 32), 3000 * 2 * 32 + 500 * 2 * 32);
}

TEST(CostModelTest, CostGathersEveryUnit) {
  const CostModel cost = TwoLayers();
  const PolicyCost c = cost.Cost({4, 8}, 8);
  EXPECT_DOUBLE_EQ(c.avg_bits, 5.0);
  EXPECT_DOUBLE_EQ(c.size_bytes, (1200 + 800 + 1600) / 8.0);
  EXPECT_DOUBLE_EQ(c.size_fraction, 450.0 / 1800.0);
  EXPECT_EQ(c.bops, 3000 * 4 * 8 + 500 * 8 * 8);
}

TEST(CostModelTest, AbsurdMacsSaturateInsteadOfWrapping) {
  const int64_t huge = std::numeric_limits<int64_t>::max() / 4;
  const CostModel cost({{10, huge}, {10, huge}}, 20);
  EXPECT_EQ(cost.Bops({8, 8}, 8), std::numeric_limits<int64_t>::max());
  const Budget budget{Budget::Kind::kBops, 1e18};
  EXPECT_FALSE(budget.IsMet(cost.Cost({8, 8}, 8)));
}

struct BudgetCase {
  const char* name;
  Budget budget;
  Policy policy;
  int activation_bits;
  bool met;
};

class BudgetTest : public ::testing::TestWithParam<BudgetCase> {};

TEST_P(BudgetTest, IsMet) {
  const BudgetCase& c = GetParam();
  EXPECT_EQ(c.budget.IsMet(TwoLayers().Cost(c.policy, c.activation_bits)),
            c.met);
}

INSTANTIATE_TEST_SUITE_P(
    Units, BudgetTest,
    ::testing::Values(
        // 5.0 average bits exactly.
        BudgetCase{"avg_bits_on_the_limit",
                   {Budget::Kind::kAvgBits, 5.0},
                   {4, 8},
                   8,
                   true},
        BudgetCase{
            "avg_bits_over", {Budget::Kind::kAvgBits, 5.0}, {6, 4}, 8, false},
        // 0.25 of 1800 bytes = 450; {4,4} is 400 bytes, {8,8} 600.
        BudgetCase{"fraction_under",
                   {Budget::Kind::kSizeFraction, 0.25},
                   {4, 4},
                   8,
                   true},
        BudgetCase{"fraction_over",
                   {Budget::Kind::kSizeFraction, 0.25},
                   {8, 8},
                   8,
                   false},
        // {4,4} is exactly 400 bytes, {6,4} 475.
        BudgetCase{
            "bytes_on_the_limit", {Budget::Kind::kBytes, 400}, {4, 4}, 8, true},
        BudgetCase{"bytes_over", {Budget::Kind::kBytes, 400}, {6, 4}, 8, false},
        // {8,4} at 8-bit activations: 192000 + 16000 = 208000 BOPs.
        BudgetCase{"bops_on_the_limit",
                   {Budget::Kind::kBops, 208000},
                   {8, 4},
                   8,
                   true},
        BudgetCase{
            "bops_over", {Budget::Kind::kBops, 208000}, {8, 6}, 8, false},
        // The same policy with float activations costs 4x as much.
        BudgetCase{"bops_float_activations",
                   {Budget::Kind::kBops, 208000},
                   {8, 4},
                   32,
                   false},
        BudgetCase{"bops_4bit_activations",
                   {Budget::Kind::kBops, 104000},
                   {8, 4},
                   4,
                   true}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(BudgetTest, MeasureIsInTheBudgetsUnit) {
  const PolicyCost c = TwoLayers().Cost({4, 4}, 8);
  EXPECT_DOUBLE_EQ((Budget{Budget::Kind::kAvgBits, 1}).Measure(c), 4.0);
  EXPECT_DOUBLE_EQ((Budget{Budget::Kind::kSizeFraction, 1}).Measure(c),
                   400.0 / 1800.0);
  EXPECT_DOUBLE_EQ((Budget{Budget::Kind::kBytes, 1}).Measure(c), 400.0);
  EXPECT_DOUBLE_EQ((Budget{Budget::Kind::kBops, 1}).Measure(c),
                   3000 * 4 * 8 + 500 * 4 * 8);
}

TEST(BudgetTest, MaxSizeBytes) {
  const CostModel cost = TwoLayers();
  EXPECT_DOUBLE_EQ(
      (Budget{Budget::Kind::kSizeFraction, 0.25}).MaxSizeBytes(cost), 450.0);
  EXPECT_DOUBLE_EQ((Budget{Budget::Kind::kBytes, 321}).MaxSizeBytes(cost),
                   321.0);
  EXPECT_EQ((Budget{Budget::Kind::kAvgBits, 4}).MaxSizeBytes(cost),
            std::numeric_limits<double>::infinity());
  EXPECT_EQ((Budget{Budget::Kind::kBops, 4}).MaxSizeBytes(cost),
            std::numeric_limits<double>::infinity());
}

TEST(BudgetTest, ToStringNamesTheUnit) {
  EXPECT_EQ((Budget{Budget::Kind::kAvgBits, 4}).ToString(),
            "4 average weight bits");
  EXPECT_EQ((Budget{Budget::Kind::kSizeFraction, 0.25}).ToString(),
            "0.25 of the FP32 size");
  EXPECT_EQ((Budget{Budget::Kind::kBytes, 50000}).ToString(), "50000 bytes");
  EXPECT_EQ((Budget{Budget::Kind::kBops, 1.2e9}).ToString(), "1.2e+09 BOPs");
}

struct UnreachableCase {
  const char* name;
  Budget budget;
  const char* own;  // the lowest cost in the budget's unit, said first
};

class UnreachableTest : public ::testing::TestWithParam<UnreachableCase> {};

// The lowest policy {2,2}: 2 average bits; (600 + 200 + 1600)/8 = 300 bytes,
// 0.1667 of 1800; (3000 + 500)·2·8 = 56000 BOPs.
TEST_P(UnreachableTest, MessageGivesTheLowestCostInEveryUnit) {
  const UnreachableCase& c = GetParam();
  const absl::Status status =
      CheckBudgetReachable(TwoLayers(), c.budget, {2, 2}, 8);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  const std::string message(status.message());
  EXPECT_THAT(message, StartsWith(absl::StrCat("budget ", c.budget.ToString(),
                                               " cannot be met")));
  EXPECT_THAT(message, HasSubstr(absl::StrCat("is ", c.own, ";")));
  EXPECT_THAT(message, HasSubstr("2 average weight bits"));
  EXPECT_THAT(message, HasSubstr("300 bytes"));
  EXPECT_THAT(message, HasSubstr("0.1667 of the FP32 size"));
  EXPECT_THAT(message, HasSubstr("56000 BOPs (activations at 8 bits)"));
}

INSTANTIATE_TEST_SUITE_P(
    Units, UnreachableTest,
    ::testing::Values(
        UnreachableCase{
            "avg_bits", {Budget::Kind::kAvgBits, 1.5}, "2 average weight bits"},
        UnreachableCase{"fraction",
                        {Budget::Kind::kSizeFraction, 0.1},
                        "0.1667 of the FP32 size"},
        UnreachableCase{"bytes", {Budget::Kind::kBytes, 299}, "300 bytes"},
        UnreachableCase{"bops",
                        {Budget::Kind::kBops, 55999},
                        "56000 BOPs (activations at 8 bits)"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(CheckBudgetReachableTest, ReachableBudgetsAreOk) {
  const CostModel cost = TwoLayers();
  EXPECT_TRUE(
      CheckBudgetReachable(cost, {Budget::Kind::kAvgBits, 2}, {2, 2}, 8).ok());
  EXPECT_TRUE(
      CheckBudgetReachable(cost, {Budget::Kind::kBytes, 300}, {2, 2}, 8).ok());
  EXPECT_TRUE(
      CheckBudgetReachable(cost, {Budget::Kind::kBops, 56000}, {2, 2}, 8).ok());
  // Float activations make the same budget unreachable.
  EXPECT_FALSE(
      CheckBudgetReachable(cost, {Budget::Kind::kBops, 56000}, {2, 2}, 32)
          .ok());
}

TEST(CostModelTest, PolicyToString) {
  EXPECT_EQ(PolicyToString({8, 6, 4}), "8/6/4");
}

}  // namespace
}  // namespace mixq::search
