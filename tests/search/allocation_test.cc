// The allocation module (search/allocation.h): the least-Ω policy under a
// budget from a table of per-layer sensitivities, checked on a hand-solved
// table and against a brute force over every policy of small models.
#include "search/allocation.h"

#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "search/progressive.h"
#include "tests/search/search_fixture.h"

namespace mixq::search {
namespace {

using ::testing::ElementsAre;

TEST(CandidateBitsTest, AllBitsAreDistinctHighestFirst) {
  CandidateBits bits{{{8, 4, 2}, {8}, {6, 4, 3}}};
  EXPECT_THAT(bits.AllBits(), ElementsAre(8, 6, 4, 3, 2));
  EXPECT_THAT(bits.Highest(), ElementsAre(8, 8, 6));
  EXPECT_THAT(bits.Lowest(), ElementsAre(2, 8, 3));
  EXPECT_TRUE(bits.pinned(1));
  EXPECT_FALSE(bits.all_pinned());
}

// Three layers of 100, 200 and 100 weights at 8/4/2 bits. Lowering the big
// layer costs little Ω, so an average of 6 bits (2400 weight bits of 400
// weights) goes 8/4/8 (Ω 0.5) and 5 bits 8/2/8 (Ω 1.5); 4 bits goes 8/2/4
// (Ω 3.5, tied with 4/2/8 and broken towards the first layer's higher bits;
// 8/4/4 would be Ω 4.5); 3 bits needs 4/2/4.
TEST(AllocatorTest, SolvesAHandSolvedTable) {
  const CostModel cost({{100, 1000}, {200, 500}, {100, 1000}}, 400);
  const CandidateBits bits{{{8, 4, 2}, {8, 4, 2}, {8, 4, 2}}};
  const Allocator allocator(cost, bits, Budget::Kind::kAvgBits, {8, 4, 2});
  const Allocator::Table table = {
      {0.0, 2.0, 9.0}, {0.0, 0.5, 1.5}, {0.0, 2.0, 8.0}};
  const auto at = [&](double limit) {
    auto level = allocator.Allocate(table, allocator.TopLevels(),
                                    allocator.BottomLevels(), limit, 8);
    EXPECT_TRUE(level.ok()) << level.status();
    return level.ok() ? allocator.PolicyAt(*level) : Policy{};
  };
  EXPECT_THAT(at(8), ElementsAre(8, 8, 8));
  EXPECT_THAT(at(6), ElementsAre(8, 4, 8));
  EXPECT_THAT(at(5), ElementsAre(8, 2, 8));
  EXPECT_THAT(at(4), ElementsAre(8, 2, 4));
  EXPECT_THAT(at(3), ElementsAre(4, 2, 4));
  EXPECT_DOUBLE_EQ(allocator.Omega(table, {8, 2, 4}), 3.5);
  EXPECT_EQ(allocator.CostUnits(1, 4, 8), 800);
  EXPECT_THAT(allocator.TopLevels(), ElementsAre(0, 0, 0));
  EXPECT_THAT(allocator.BottomLevels(), ElementsAre(2, 2, 2));

  // Levels bounded below: from 8/4/8, nothing goes back up.
  auto from =
      allocator.Allocate(table, {0, 1, 0}, allocator.BottomLevels(), 8, 8);
  ASSERT_TRUE(from.ok()) << from.status();
  EXPECT_THAT(allocator.PolicyAt(*from), ElementsAre(8, 4, 8));

  // BOPs count MACs times both bit-widths: 8/8/8 at 8-bit activations is
  // 8·8·2500 = 160000; within 120000 the least Ω lowers the 500-MAC layer
  // and the last 1000-MAC one to 4 (112000 BOPs, Ω 2.5).
  const Allocator bops(cost, bits, Budget::Kind::kBops, {8, 4, 2});
  EXPECT_EQ(bops.CostUnits(0, 4, 8), 32000);
  auto level =
      bops.Allocate(table, bops.TopLevels(), bops.BottomLevels(), 120000, 8);
  ASSERT_TRUE(level.ok()) << level.status();
  EXPECT_THAT(bops.PolicyAt(*level), ElementsAre(8, 4, 4));
}

struct Best {
  Policy policy;
  double omega = std::numeric_limits<double>::infinity();
};

// The least Ω over every policy (within each layer's candidates) that
// meets `budget`.
Best BruteForce(const CostModel& cost, const CandidateBits& bits,
                const Allocator::Table& table, const std::vector<int>& columns,
                const Budget& budget, int act_bits) {
  Best best;
  const int layers = cost.num_layers();
  std::vector<int> level(layers, 0);
  while (true) {
    Policy policy(layers);
    double omega = 0;
    for (int l = 0; l < layers; ++l) {
      policy[l] = bits.per_layer[l][level[l]];
      for (size_t c = 0; c < columns.size(); ++c)
        if (columns[c] == policy[l]) omega += table[l][c];
    }
    if (budget.IsMet(cost.Cost(policy, act_bits)) && omega < best.omega) {
      best = {policy, omega};
    }
    int l = 0;
    while (l < layers &&
           ++level[l] == static_cast<int>(bits.per_layer[l].size()))
      level[l++] = 0;
    if (l == layers) return best;
  }
}

// Random 3- and 4-layer models, tables and budgets in every unit: the
// allocation meets the budget and no policy within it has less Ω.
TEST(AllocatorTest, IsTheLeastOmegaPolicyWithinTheBudget) {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int64_t> weights(1, 40);
  std::uniform_real_distribution<double> unit(0, 1);
  const std::vector<int> columns = {8, 6, 4, 3, 2};
  int checked = 0;
  for (int trial = 0; trial < 60; ++trial) {
    const int layers = 3 + trial % 2;
    std::vector<CostModel::Layer> layer_costs;
    int64_t total = 0;
    for (int l = 0; l < layers; ++l) {
      layer_costs.push_back({weights(rng) * 16, weights(rng) * 100});
      total += layer_costs.back().weights;
    }
    const CostModel cost(layer_costs, total + 37);
    CandidateBits bits;
    for (int l = 0; l < layers; ++l) {
      bits.per_layer.push_back(l == 0 && trial % 3 == 0
                                   ? std::vector<int>{8}  // pinned
                                   : std::vector<int>{8, 6, 4, 2});
    }
    bits.per_layer.back() = {6, 4, 3};
    // Ω grows as bits fall, per layer at its own rate.
    Allocator::Table table(layers);
    for (int l = 0; l < layers; ++l) {
      const double scale = unit(rng);
      for (int b : columns)
        table[l].push_back(scale * (1 << (8 - b)) * (1 + 0.5 * unit(rng)));
    }
    const int act_bits = 4 + trial % 5;
    const Policy lowest = bits.Lowest();
    const Policy highest = bits.Highest();
    for (Budget::Kind kind :
         {Budget::Kind::kAvgBits, Budget::Kind::kBytes, Budget::Kind::kBops}) {
      Budget low{kind, 0}, high{kind, 0};
      low.value = low.Measure(cost.Cost(lowest, act_bits));
      high.value = high.Measure(cost.Cost(highest, act_bits));
      const Allocator allocator(cost, bits, kind, columns);
      for (double t : {0.0, 0.2, 0.45, 0.7, 0.9, 1.0}) {
        const Budget budget{kind, low.value + t * (high.value - low.value)};
        auto level = allocator.Allocate(table, allocator.TopLevels(),
                                        allocator.BottomLevels(), budget.value,
                                        act_bits);
        ASSERT_TRUE(level.ok()) << level.status();
        const Policy policy = allocator.PolicyAt(*level);
        EXPECT_TRUE(budget.IsMet(cost.Cost(policy, act_bits)))
            << "trial " << trial << " " << budget.ToString();
        const Best best =
            BruteForce(cost, bits, table, columns, budget, act_bits);
        EXPECT_DOUBLE_EQ(allocator.Omega(table, policy), best.omega)
            << "trial " << trial << " " << budget.ToString() << ": "
            << PolicyToString(policy) << " vs " << PolicyToString(best.policy);
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 60 * 3 * 6);
}

class WarmupTableTest : public testing::MlpSearchTest {};

// The warm-up reports its Ω table (every candidate bit-width), and the
// knapsack strategy's allocation is the allocation on that table: what the
// server re-solves a stored job's budgets from.
TEST_F(WarmupTableTest, KnapsackAllocatesOnTheWarmupTable) {
  ProgressiveOptions options = Options(Strategy::kKnapsack);
  options.layers = {{"fc2.weight", {8, 3}}};
  std::vector<StepReport> steps;
  ASSERT_TRUE(Run(options, &steps).ok());
  ASSERT_EQ(steps.size(), 2u);
  const SensitivityTable& table = steps[0].sensitivities;
  EXPECT_THAT(table.bits, ElementsAre(8, 6, 4, 3, 2));
  ASSERT_EQ(table.omega.size(), 3u);
  for (const auto& row : table.omega) {
    ASSERT_EQ(row.size(), table.bits.size());
    EXPECT_LE(row[0], row[1]);  // Ω grows as the bits fall
    EXPECT_LE(row[1], row[2]);
  }
  EXPECT_TRUE(steps[1].sensitivities.bits.empty());

  const CostModel cost = CostModel::ForModel(*model_);
  auto bits = ResolveCandidateBits(options, *model_);
  ASSERT_TRUE(bits.ok()) << bits.status();
  const Allocator allocator(cost, *bits, Budget::Kind::kAvgBits, table.bits);
  auto level = allocator.Allocate(
      table.omega, allocator.TopLevels(), allocator.BottomLevels(),
      options.budget.value, options.activation_bits);
  ASSERT_TRUE(level.ok()) << level.status();
  const StepReport& allocation = steps[1];
  EXPECT_EQ(allocator.PolicyAt(*level), allocation.candidates[0].policy);
  EXPECT_EQ(allocator.Omega(table.omega, allocator.PolicyAt(*level)),
            allocation.candidates[0].omega);

  // Every strategy reports it, and the same warm-up measures the same table.
  std::vector<StepReport> progressive;
  options.strategy = Strategy::kProgressive;
  ASSERT_TRUE(Run(options, &progressive).ok());
  EXPECT_EQ(progressive[0].sensitivities.bits, table.bits);
  EXPECT_EQ(progressive[0].sensitivities.omega, table.omega);
}

}  // namespace
}  // namespace mixq::search
