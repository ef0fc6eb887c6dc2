#include "search/knapsack.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mixq::search {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

using Groups = std::vector<std::vector<KnapsackOption>>;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNan = std::numeric_limits<double>::quiet_NaN();

// Σ cost and Σ value of `choice`, summed in group order.
KnapsackOption Totals(const Groups& groups, const std::vector<int>& choice) {
  KnapsackOption totals;
  for (size_t g = 0; g < groups.size(); ++g) {
    totals.cost += groups[g][choice[g]].cost;
    totals.value += groups[g][choice[g]].value;
  }
  return totals;
}

// Checks that the solution's figures are the sums over its choice.
void ExpectConsistent(const Groups& groups, const KnapsackSolution& solution) {
  ASSERT_EQ(solution.choice.size(), groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    ASSERT_GE(solution.choice[g], 0);
    ASSERT_LT(solution.choice[g], static_cast<int>(groups[g].size()));
  }
  const KnapsackOption totals = Totals(groups, solution.choice);
  EXPECT_EQ(solution.cost, totals.cost);
  EXPECT_EQ(solution.value, totals.value);
}

struct BruteForce {
  std::vector<int> choice;  // empty when no selection fits
  double cost = 0;
  double value = 0;
};

// The best selection with Σ cost <= limit by enumeration. Selections are
// visited in lexicographic order and replaced only by a strictly better
// (value, cost), so ties go to lower cost, then the smallest choice.
BruteForce BestBruteForce(const Groups& groups, double limit) {
  BruteForce best;
  std::vector<int> choice(groups.size(), 0);
  while (true) {
    const KnapsackOption totals = Totals(groups, choice);
    if (totals.cost <= limit &&
        (best.choice.empty() || totals.value < best.value ||
         (totals.value == best.value && totals.cost < best.cost))) {
      best = {choice, totals.cost, totals.value};
    }
    int g = static_cast<int>(groups.size()) - 1;
    while (g >= 0 && ++choice[g] == static_cast<int>(groups[g].size())) {
      choice[g--] = 0;
    }
    if (g < 0) return best;
  }
}

// RNG helpers on the engine alone, so the instances do not depend on a
// standard library's distribution implementation.
int UniformInt(std::mt19937_64& rng, int lo, int hi) {
  return lo + static_cast<int>(rng() % static_cast<uint64_t>(hi - lo + 1));
}

double Uniform(std::mt19937_64& rng, double lo, double hi) {
  return lo + (hi - lo) * static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

double MinTotal(const Groups& groups) {
  double total = 0;
  for (const auto& group : groups) {
    double min_cost = kInf;
    for (const KnapsackOption& option : group)
      min_cost = std::min(min_cost, option.cost);
    total += min_cost;
  }
  return total;
}

double MaxTotal(const Groups& groups) {
  double total = 0;
  for (const auto& group : groups) {
    double max_cost = 0;
    for (const KnapsackOption& option : group)
      max_cost = std::max(max_cost, option.cost);
    total += max_cost;
  }
  return total;
}

TEST(KnapsackTest, SmallExampleByHand) {
  // Two layers, options (cost, value) at 8/4/2 bits. Σ min cost = 2, so with
  // limit 6 the slack is 4 and resolution 4 makes the unit exactly 1.
  // Selections that fit (Σ cost <= 6) and their values:
  //   (0,1) 4+2=6 -> 1+3=4    (0,2) 4+1=5 -> 1+7=8    (1,0) 2+4=6 -> 5+2=7
  //   (1,1) 2+2=4 -> 5+3=8    (1,2) 3 -> 12  (2,0) 5 -> 11  (2,1) 3 -> 12
  //   (2,2) 2 -> 16;          (0,0) costs 8 and does not fit.
  // The best is (0,1): cost 6, value 4.
  const Groups groups = {{{4, 1}, {2, 5}, {1, 9}}, {{4, 2}, {2, 3}, {1, 7}}};
  const auto solution = SolveMultipleChoiceKnapsack(groups, 6, 4);
  ASSERT_TRUE(solution.ok()) << solution.status();
  EXPECT_THAT(solution->choice, ElementsAre(0, 1));
  EXPECT_EQ(solution->cost, 6);
  EXPECT_EQ(solution->value, 4);
  ExpectConsistent(groups, *solution);
}

TEST(KnapsackTest, GenerousLimitTakesTheLowestValues) {
  // Σ max cost = 8 <= 100: every option fits, so each group takes its lowest
  // value: (0, 0), value 1 + 2 = 3.
  const Groups groups = {{{4, 1}, {2, 5}, {1, 9}}, {{4, 2}, {2, 3}, {1, 7}}};
  const auto solution = SolveMultipleChoiceKnapsack(groups, 100);
  ASSERT_TRUE(solution.ok()) << solution.status();
  EXPECT_THAT(solution->choice, ElementsAre(0, 0));
  EXPECT_EQ(solution->value, 3);
  EXPECT_EQ(solution->cost, 8);
}

TEST(KnapsackTest, EqualValueGoesToTheLowerCost) {
  // Both options have value 1; the one costing 1 wins over the one costing 3.
  const Groups groups = {{{3, 1}, {1, 1}}};
  const auto solution = SolveMultipleChoiceKnapsack(groups, 10);
  ASSERT_TRUE(solution.ok()) << solution.status();
  EXPECT_THAT(solution->choice, ElementsAre(1));
  EXPECT_EQ(solution->cost, 1);
}

TEST(KnapsackTest, EqualValueAndCostGoesToTheLowerIndex) {
  const Groups groups = {{{2, 1}, {2, 1}, {2, 1}}};
  const auto solution = SolveMultipleChoiceKnapsack(groups, 10);
  ASSERT_TRUE(solution.ok()) << solution.status();
  EXPECT_THAT(solution->choice, ElementsAre(0));
}

TEST(KnapsackTest, TiesAcrossGroupsGoToTheSmallestChoice) {
  // Σ min cost = 2, limit 3, resolution 1: unit 1. Fitting selections:
  //   (0,0) 2+1=3 -> 0+1=1   (1,0) 1+1=2 -> 2   (1,1) 1+2=3 -> 1+0=1
  // (0,1) costs 4. (0,0) and (1,1) tie on value 1 and cost 3; (0,0) is
  // lexicographically smaller.
  const Groups groups = {{{2, 0}, {1, 1}}, {{1, 1}, {2, 0}}};
  const auto solution = SolveMultipleChoiceKnapsack(groups, 3, 1);
  ASSERT_TRUE(solution.ok()) << solution.status();
  EXPECT_THAT(solution->choice, ElementsAre(0, 0));
  EXPECT_EQ(solution->value, 1);
  EXPECT_EQ(solution->cost, 3);
}

TEST(KnapsackTest, RoundingUpKeepsTheRealLimit) {
  // Σ min cost = 0, limit 1, resolution 1: unit 1, and an extra cost of 0.6
  // rounds up to 1 unit. Both 0.6 options would take 2 units (and really
  // cost 1.2 > 1), so only one is taken: value 10, cost 0.6, and the
  // smallest choice among the two ties (0,1) and (1,0) is (0,1).
  const Groups groups = {{{0, 10}, {0.6, 0}}, {{0, 10}, {0.6, 0}}};
  const auto solution = SolveMultipleChoiceKnapsack(groups, 1.0, 1);
  ASSERT_TRUE(solution.ok()) << solution.status();
  EXPECT_THAT(solution->choice, ElementsAre(0, 1));
  EXPECT_EQ(solution->value, 10);
  EXPECT_LE(solution->cost, 1.0);
}

TEST(KnapsackTest, CoarseUnitsLoseWhatFinerUnitsFind) {
  // Limit 1.2: both 0.6 options really fit (Σ 1.2). With resolution 1 the
  // unit is 1.2 and each 0.6 rounds up to a whole unit, so only one fits
  // (value 10). With resolution 2 the unit is 0.6, the costs are exact
  // multiples of it, and both fit: value 0.
  const Groups groups = {{{0, 10}, {0.6, 0}}, {{0, 10}, {0.6, 0}}};
  const auto coarse = SolveMultipleChoiceKnapsack(groups, 1.2, 1);
  ASSERT_TRUE(coarse.ok()) << coarse.status();
  EXPECT_EQ(coarse->value, 10);
  const auto fine = SolveMultipleChoiceKnapsack(groups, 1.2, 2);
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_THAT(fine->choice, ElementsAre(1, 1));
  EXPECT_EQ(fine->value, 0);
  EXPECT_EQ(fine->cost, 1.2);
}

TEST(KnapsackTest, RoundingDownBoundsTheOptimum) {
  // The groups above, limit 1, resolution 1: rounded down, each 0.6 takes 0
  // units and both are taken (value 0, cost 1.2 > 1): a lower bound on the
  // optimum (10), not exact. Rounded up the selection fits but the rounding
  // lost something, so it is not known to be exact either.
  const Groups groups = {{{0, 10}, {0.6, 0}}, {{0, 10}, {0.6, 0}}};
  const auto down =
      SolveMultipleChoiceKnapsack(groups, 1.0, 1, KnapsackRounding::kDown);
  ASSERT_TRUE(down.ok()) << down.status();
  EXPECT_THAT(down->choice, ElementsAre(1, 1));
  EXPECT_EQ(down->value, 0);
  EXPECT_EQ(down->cost, 1.2);
  EXPECT_FALSE(down->exact);
  const auto up =
      SolveMultipleChoiceKnapsack(groups, 1.0, 1, KnapsackRounding::kUp);
  ASSERT_TRUE(up.ok()) << up.status();
  EXPECT_EQ(up->value, 10);
  EXPECT_FALSE(up->exact);
  // Limit 1.2: the relaxation's selection meets the limit, so it is the
  // optimum (where rounding up, at resolution 1, loses it).
  const auto fits =
      SolveMultipleChoiceKnapsack(groups, 1.2, 1, KnapsackRounding::kDown);
  ASSERT_TRUE(fits.ok()) << fits.status();
  EXPECT_EQ(fits->value, 0);
  EXPECT_TRUE(fits->exact);
}

TEST(KnapsackTest, GcdOfIntegerCostsMakesTheUnitExact) {
  // Extra costs 3, 6 and 6, 9: gcd 3. Limit 9 leaves 3 multiples of 3, within
  // resolution 4, so the unit is 3 and the DP exact. Fitting selections:
  //   (0,0) 0 -> 20   (0,1) 6 -> 13   (0,2) 9 -> 10   (1,0) 3 -> 15
  //   (1,1) 9 -> 8    (2,0) 6 -> 10
  // The best is (1,1): cost 9, value 8. Split into 4 units of 2.25 instead,
  // 3 and 6 would round up to 2 + 3 = 5 units and (1,1) would not fit.
  const Groups groups = {{{0, 10}, {3, 5}, {6, 0}}, {{0, 10}, {6, 3}, {9, 0}}};
  for (KnapsackRounding rounding :
       {KnapsackRounding::kUp, KnapsackRounding::kDown}) {
    const auto solution = SolveMultipleChoiceKnapsack(groups, 9, 4, rounding);
    ASSERT_TRUE(solution.ok()) << solution.status();
    EXPECT_THAT(solution->choice, ElementsAre(1, 1));
    EXPECT_EQ(solution->value, 8);
    EXPECT_TRUE(solution->exact);
  }
  // A cost that is not an integer turns the gcd off: 4 units of 2.25.
  Groups shifted = groups;
  for (KnapsackOption& option : shifted[0]) option.cost += 0.5;
  const auto up = SolveMultipleChoiceKnapsack(shifted, 9.5, 4);
  ASSERT_TRUE(up.ok()) << up.status();
  EXPECT_EQ(up->value, 10);
  EXPECT_FALSE(up->exact);
  const auto down =
      SolveMultipleChoiceKnapsack(shifted, 9.5, 4, KnapsackRounding::kDown);
  ASSERT_TRUE(down.ok()) << down.status();
  EXPECT_LE(down->value, 8);
  EXPECT_FALSE(down->exact);  // (2,1): value 3 at cost 12.5
}

TEST(KnapsackTest, GcdAboveTheResolutionFallsBackToRounding) {
  // Extra costs multiples of 2 but 5 of them in the slack of 10, resolution
  // 4: units of 2.5, 2 and 4 round up to 1 and 2 units. Rounded up, the
  // selection (1,1) (cost 6, value 0) fits in 3 units.
  const Groups groups = {{{0, 5}, {2, 0}}, {{0, 5}, {4, 0}}};
  const auto solution = SolveMultipleChoiceKnapsack(groups, 10, 4);
  ASSERT_TRUE(solution.ok()) << solution.status();
  EXPECT_THAT(solution->choice, ElementsAre(1, 1));
  EXPECT_EQ(solution->cost, 6);
  EXPECT_FALSE(solution->exact);  // 2 / 2.5 is not a whole number of units
}

TEST(KnapsackTest, NoSlackAllowsOnlyTheCheapestOptions) {
  // Σ min cost = 1 + 2 = 3 = limit. Group 0's cheapest options cost 1 (values
  // 5 and 3: index 1 wins); group 1's cheapest costs 2 (index 2). The dearer
  // options with value 0 cannot be taken.
  const Groups groups = {{{1, 5}, {1, 3}, {2, 0}}, {{3, 0}, {4, 0}, {2, 9}}};
  const auto solution = SolveMultipleChoiceKnapsack(groups, 3);
  ASSERT_TRUE(solution.ok()) << solution.status();
  EXPECT_THAT(solution->choice, ElementsAre(1, 2));
  EXPECT_EQ(solution->cost, 3);
  EXPECT_EQ(solution->value, 12);
}

TEST(KnapsackTest, LimitWithinRoundingOfTheCheapestLeavesNoSlack) {
  // The limit 0.3 and Σ min cost 0.1 + 0.2 = 0.30000000000000004 differ in
  // the last bit: no slack, not OUT_OF_RANGE.
  const Groups groups = {{{0.1, 1}, {0.5, 0}}, {{0.2, 1}, {0.5, 0}}};
  ASSERT_GT(0.1 + 0.2, 0.3);
  const auto solution = SolveMultipleChoiceKnapsack(groups, 0.3);
  ASSERT_TRUE(solution.ok()) << solution.status();
  EXPECT_THAT(solution->choice, ElementsAre(0, 0));
  // Slightly above the cheapest (within 1e-12) is no slack either.
  const auto above = SolveMultipleChoiceKnapsack(groups, 0.3 * (1 + 1e-13));
  ASSERT_TRUE(above.ok()) << above.status();
  EXPECT_THAT(above->choice, ElementsAre(0, 0));
}

TEST(KnapsackTest, ZeroCostsAndZeroLimit) {
  const Groups groups = {{{0, 2}, {0, 1}}, {{0, 0}}};
  const auto solution = SolveMultipleChoiceKnapsack(groups, 0);
  ASSERT_TRUE(solution.ok()) << solution.status();
  EXPECT_THAT(solution->choice, ElementsAre(1, 0));
  EXPECT_EQ(solution->value, 1);
}

TEST(KnapsackTest, MaximumResolutionIsAccepted) {
  // Unit = 1 / 2^20: the 0.5 option takes 2^19 units and fits.
  const Groups groups = {{{0, 1}, {0.5, 0}, {1.5, 0}}};
  const auto solution = SolveMultipleChoiceKnapsack(groups, 1, 1 << 20);
  ASSERT_TRUE(solution.ok()) << solution.status();
  EXPECT_THAT(solution->choice, ElementsAre(1));
}

struct ErrorCase {
  const char* name;
  Groups groups;
  double limit;
  int resolution;
  absl::StatusCode code;
  std::vector<const char*> fragments;
};

class KnapsackErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(KnapsackErrorTest, Fails) {
  const ErrorCase& c = GetParam();
  const auto solution =
      SolveMultipleChoiceKnapsack(c.groups, c.limit, c.resolution);
  ASSERT_FALSE(solution.ok());
  EXPECT_EQ(solution.status().code(), c.code) << solution.status();
  for (const char* fragment : c.fragments)
    EXPECT_THAT(solution.status().message(), HasSubstr(fragment));
}

const Groups kTwoGroups = {{{1, 1}, {2, 0}}, {{1, 1}, {2, 0}}};
constexpr absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;

INSTANTIATE_TEST_SUITE_P(
    Cases, KnapsackErrorTest,
    ::testing::Values(
        ErrorCase{"NoGroup", {}, 1, 8, kInvalid, {"no group"}},
        ErrorCase{"EmptyGroup",
                  {{{1, 1}}, {{1, 1}}, {{1, 1}}, {}},
                  10,
                  8,
                  kInvalid,
                  {"group 3: no option"}},
        ErrorCase{"NegativeCost",
                  {{{1, 1}}, {{1, 1}, {-1, 0}}},
                  10,
                  8,
                  kInvalid,
                  {"group 1, option 1: cost", ">= 0", "-1"}},
        ErrorCase{"InfiniteCost",
                  {{{kInf, 1}}},
                  10,
                  8,
                  kInvalid,
                  {"group 0, option 0: cost", "finite"}},
        ErrorCase{"NanCost",
                  {{{1, 1}, {kNan, 1}}},
                  10,
                  8,
                  kInvalid,
                  {"group 0, option 1: cost"}},
        ErrorCase{"NegativeValue",
                  {{{1, -0.5}}},
                  10,
                  8,
                  kInvalid,
                  {"group 0, option 0: value", "-0.5"}},
        ErrorCase{"NanValue",
                  {{{1, 1}}, {{1, kNan}}},
                  10,
                  8,
                  kInvalid,
                  {"group 1, option 0: value"}},
        ErrorCase{"InfiniteValue",
                  {{{1, kInf}}},
                  10,
                  8,
                  kInvalid,
                  {"group 0, option 0: value"}},
        ErrorCase{
            "InfiniteLimit", kTwoGroups, kInf, 8, kInvalid, {"limit", "inf"}},
        ErrorCase{"NanLimit", kTwoGroups, kNan, 8, kInvalid, {"limit"}},
        ErrorCase{"ZeroResolution",
                  kTwoGroups,
                  10,
                  0,
                  kInvalid,
                  {"resolution", "1..1048576", "got 0"}},
        ErrorCase{"HugeResolution",
                  kTwoGroups,
                  10,
                  (1 << 20) + 1,
                  kInvalid,
                  {"resolution", "got 1048577"}},
        ErrorCase{"CheapestOverLimit",
                  kTwoGroups,
                  1.5,
                  8,
                  absl::StatusCode::kOutOfRange,
                  {"costs 2,", "limit 1.5"}},
        ErrorCase{"NegativeLimit",
                  {{{0, 1}}},
                  -1,
                  8,
                  absl::StatusCode::kOutOfRange,
                  {"costs 0,", "limit -1"}},
        ErrorCase{"CheapestJustBeyondTolerance",
                  {{{1, 1}}},
                  1 - 1e-9,
                  8,
                  absl::StatusCode::kOutOfRange,
                  {"costs 1,", "limit 0.999999999"}}),
    [](const ::testing::TestParamInfo<ErrorCase>& info) {
      return std::string(info.param.name);
    });

// 1..6 groups of 1..5 options.
Groups RandomShape(std::mt19937_64& rng) {
  Groups groups(UniformInt(rng, 1, 6));
  for (auto& group : groups) group.resize(UniformInt(rng, 1, 5));
  return groups;
}

TEST(KnapsackRandomTest, IntegerCostsMatchBruteForceExactly) {
  // Integer costs and values, and a resolution that is a multiple of the
  // (integer) slack, so the unit divides every cost: the DP must find the
  // brute-force optimum, with the same tie-breaking. Small ranges make ties
  // frequent.
  std::mt19937_64 rng(20240611);
  int solved = 0, out_of_range = 0;
  for (int instance = 0; instance < 300; ++instance) {
    SCOPED_TRACE(instance);
    Groups groups = RandomShape(rng);
    for (auto& group : groups) {
      for (KnapsackOption& option : group) {
        option.cost = UniformInt(rng, 0, 10);
        option.value = UniformInt(rng, 0, 20);
      }
    }
    const int min_total = static_cast<int>(MinTotal(groups));
    const int max_total = static_cast<int>(MaxTotal(groups));
    const int limit = UniformInt(rng, min_total - 2, max_total + 2);
    const int slack = limit - min_total;
    const int resolution =
        slack > 0 ? slack * UniformInt(rng, 1, 3) : UniformInt(rng, 1, 5);

    const auto solution =
        SolveMultipleChoiceKnapsack(groups, limit, resolution);
    const BruteForce best = BestBruteForce(groups, limit);
    if (best.choice.empty()) {
      ++out_of_range;
      ASSERT_FALSE(solution.ok());
      EXPECT_EQ(solution.status().code(), absl::StatusCode::kOutOfRange);
      continue;
    }
    ++solved;
    ASSERT_TRUE(solution.ok()) << solution.status();
    ExpectConsistent(groups, *solution);
    EXPECT_EQ(solution->value, best.value);
    EXPECT_EQ(solution->cost, best.cost);
    EXPECT_EQ(solution->choice, best.choice);
  }
  // The generator covers both outcomes.
  EXPECT_GT(solved, 200);
  EXPECT_GT(out_of_range, 0);
}

TEST(KnapsackRandomTest, RealCostsAreFeasibleAndWithinTheRoundingLoss) {
  // Real costs: the DP's selection must fit the limit, be no better than the
  // true optimum, and no worse than the best selection that fits with one
  // unit to spare per group (each group loses less than a unit to rounding).
  constexpr int kResolutions[] = {1, 2, 5, 17, 100, 8192};
  // Float summation noise when comparing a sum with the limit.
  constexpr double kTolerance = 1e-9;
  std::mt19937_64 rng(7);
  int bounded = 0;
  for (int instance = 0; instance < 300; ++instance) {
    SCOPED_TRACE(instance);
    Groups groups = RandomShape(rng);
    for (auto& group : groups) {
      for (KnapsackOption& option : group) {
        option.cost = Uniform(rng, 0, 10);
        option.value = Uniform(rng, 0, 20);
      }
    }
    const double min_total = MinTotal(groups);
    const double max_total = MaxTotal(groups);
    const double limit =
        min_total + Uniform(rng, 0, 1.1) * (max_total - min_total);
    const int resolution = kResolutions[UniformInt(rng, 0, 5)];
    const double unit = (limit - min_total) / resolution;

    const auto solution =
        SolveMultipleChoiceKnapsack(groups, limit, resolution);
    ASSERT_TRUE(solution.ok()) << solution.status();
    ExpectConsistent(groups, *solution);
    EXPECT_LE(solution->cost, limit + kTolerance);

    const BruteForce best = BestBruteForce(groups, limit + kTolerance);
    ASSERT_FALSE(best.choice.empty());
    EXPECT_GE(solution->value, best.value - kTolerance);

    const double spare = static_cast<double>(groups.size()) * unit;
    const BruteForce safe = BestBruteForce(groups, limit - spare - kTolerance);
    if (!safe.choice.empty()) {
      ++bounded;
      EXPECT_LE(solution->value, safe.value + kTolerance);
    }

    const auto again = SolveMultipleChoiceKnapsack(groups, limit, resolution);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->choice, solution->choice);
  }
  EXPECT_GT(bounded, 100);
}

TEST(KnapsackRandomTest, HundredsOfOptionsMatchBruteForce) {
  // Groups of 300 options (choice entries of 2 bytes); integer costs with a
  // resolution equal to the slack, so the answer is exact.
  std::mt19937_64 rng(99);
  for (int instance = 0; instance < 5; ++instance) {
    SCOPED_TRACE(instance);
    Groups groups(3);
    groups[0].resize(300);
    groups[1].resize(300);
    groups[2].resize(4);
    for (auto& group : groups) {
      for (KnapsackOption& option : group) {
        option.cost = UniformInt(rng, 1, 1000);
        option.value = UniformInt(rng, 0, 100000);
      }
    }
    const int min_total = static_cast<int>(MinTotal(groups));
    const int limit = min_total + UniformInt(rng, 1, 1500);
    const auto solution =
        SolveMultipleChoiceKnapsack(groups, limit, limit - min_total);
    ASSERT_TRUE(solution.ok()) << solution.status();
    ExpectConsistent(groups, *solution);
    const BruteForce best = BestBruteForce(groups, limit);
    EXPECT_EQ(solution->choice, best.choice);
    EXPECT_EQ(solution->value, best.value);
  }
}

TEST(KnapsackTest, MoreOptionsThanTwoBytesCanIndex) {
  // 70000 options: every one costs 1 and is worth 1, except the last (cost 2,
  // value 0). Limit 2 leaves slack 1 for it; limit 1 leaves none, and the
  // cheapest options all tie, so index 0 wins.
  constexpr int kOptions = 70000;
  Groups groups(2);
  groups[0].assign(kOptions, KnapsackOption{1, 1});
  groups[0].back() = {2, 0};
  groups[1] = {{0, 0}};
  const auto slack = SolveMultipleChoiceKnapsack(groups, 2, 4);
  ASSERT_TRUE(slack.ok()) << slack.status();
  EXPECT_THAT(slack->choice, ElementsAre(kOptions - 1, 0));
  const auto no_slack = SolveMultipleChoiceKnapsack(groups, 1, 4);
  ASSERT_TRUE(no_slack.ok()) << no_slack.status();
  EXPECT_THAT(no_slack->choice, ElementsAre(0, 0));
}

TEST(KnapsackTest, LargeInstanceRuns) {
  // 500 layers × 8 bit-widths at the default resolution: cost grows and value
  // falls with the bit-width, as for a real model.
  constexpr int kGroups = 500;
  constexpr int kBitWidths = 8;
  std::mt19937_64 rng(5);
  Groups groups(kGroups);
  double max_total = 0;
  for (auto& group : groups) {
    const double weights = Uniform(rng, 100, 10000);
    const double sensitivity = Uniform(rng, 0.01, 1);
    for (int b = 1; b <= kBitWidths; ++b)
      group.push_back({weights * b, sensitivity * std::pow(4.0, -b)});
    max_total += weights * kBitWidths;
  }
  const double limit = 0.5 * max_total;
  const auto solution =
      SolveMultipleChoiceKnapsack(groups, limit, kDefaultKnapsackResolution);
  ASSERT_TRUE(solution.ok()) << solution.status();
  ExpectConsistent(groups, *solution);
  EXPECT_LE(solution->cost, limit);
  // Half the budget buys some layers a middle bit-width.
  EXPECT_THAT(
      solution->choice,
      ::testing::Contains(AllOf(::testing::Gt(0), ::testing::Lt(kBitWidths))));
}

// Bit allocation as the search poses it (search/progressive.cc): one group
// per layer, one option per candidate bit-width, costs in whole units —
// weight bits n_l·b (average-bit, size-fraction and byte budgets all measure
// these plus a constant) or BOPs MAC_l·a·b — and values Ω_l(b). Small
// models with awkward weight counts, every policy enumerated.
struct ModelCase {
  const char* name;
  std::vector<int64_t> weights;  // n_l
  std::vector<int64_t> outputs;  // MAC_l = n_l · outputs_l (conv positions)
  std::vector<int> bits;         // every layer's candidates
};

const ModelCase kModelCases[] = {
    // The README demo MLP: weight counts share a factor 128.
    {"mlp_fmnist", {100352, 8192, 640}, {1, 1, 1}, {8, 6, 5, 4, 3, 2}},
    {"mlp_and_37", {100352, 8192, 640, 37}, {1, 1, 1, 1}, {8, 4, 2}},
    {"conv_like", {100352, 8192, 640, 37}, {1, 196, 49, 1}, {8, 5, 3, 2}},
    {"coprime", {99695, 8001, 630, 37, 5}, {1, 1, 1, 1, 1}, {8, 6, 4}},
};

// What the search's allocation passes as the resolution.
constexpr int kAllocationResolution = 1 << 17;
// Σ value of the same selection in another order.
constexpr double kSumSlack = 1e-12;

struct CostKind {
  const char* name;
  int activation_bits;  // 0: weight bits
};
const CostKind kCostKinds[] = {{"weight_bits", 0}, {"bops_a8", 8}};

Groups ModelGroups(const ModelCase& model, const CostKind& kind,
                   std::mt19937_64& rng) {
  Groups groups(model.weights.size());
  for (size_t l = 0; l < groups.size(); ++l) {
    const double per_bit =
        kind.activation_bits == 0
            ? static_cast<double>(model.weights[l])
            : static_cast<double>(model.weights[l] * model.outputs[l] *
                                  kind.activation_bits);
    // Ω falls about 4× per bit, times a per-layer sensitivity.
    const double sensitivity = Uniform(rng, 1e-8, 1e-5);
    for (int b : model.bits) {
      groups[l].push_back(
          {per_bit * b, sensitivity * static_cast<double>(model.weights[l]) *
                            std::pow(4.0, -b) * Uniform(rng, 0.5, 1.5)});
    }
  }
  return groups;
}

// Every selection's (cost, value), sorted by cost, with the least value at
// or below each cost.
class AllSelections {
 public:
  explicit AllSelections(const Groups& groups) {
    std::vector<int> choice(groups.size(), 0);
    while (true) {
      all_.push_back({choice, Totals(groups, choice)});
      int g = static_cast<int>(groups.size()) - 1;
      while (g >= 0 && ++choice[g] == static_cast<int>(groups[g].size()))
        choice[g--] = 0;
      if (g < 0) break;
    }
    std::sort(all_.begin(), all_.end(), [](const Entry& a, const Entry& b) {
      return a.totals.cost < b.totals.cost;
    });
    double least = kInf;
    for (const Entry& entry : all_) {
      least = std::min(least, entry.totals.value);
      least_up_to_.push_back(least);
    }
  }
  size_t size() const { return all_.size(); }
  const std::vector<int>& choice(size_t i) const { return all_[i].choice; }
  const KnapsackOption& totals(size_t i) const { return all_[i].totals; }
  // The least value of the selections costing at most `limit`.
  double LeastValue(double limit) const {
    const auto end = std::upper_bound(
        all_.begin(), all_.end(), limit,
        [](double x, const Entry& entry) { return x < entry.totals.cost; });
    return end == all_.begin() ? kInf : least_up_to_[end - all_.begin() - 1];
  }

 private:
  struct Entry {
    std::vector<int> choice;
    KnapsackOption totals;
  };
  std::vector<Entry> all_;
  std::vector<double> least_up_to_;
};

TEST(KnapsackModelTest, BoundAndAllocationAgainstEveryPolicy) {
  // For policies P of each model (sampled), limit = P's cost, as the
  // search's oracle poses it for its kept policy:
  //   - rounded down, the value is at most the least Ω of every policy at no
  //     more than that cost (the brute-force minimum), P's Ω included, and
  //     equal to it when `exact`;
  //   - rounded up (the `knapsack` strategy's allocation) the selection
  //     meets the limit, is no better than the minimum, and equal to it when
  //     `exact`.
  // The README MLP is exact at the search's resolution thanks to the gcd;
  // the coprime shapes need the bound.
  constexpr int kSampledPolicies = 24;
  std::mt19937_64 rng(2024);
  int inexact_bounds = 0;
  for (const ModelCase& model : kModelCases) {
    for (const CostKind& kind : kCostKinds) {
      const Groups groups = ModelGroups(model, kind, rng);
      const AllSelections all(groups);
      for (int resolution : {kAllocationResolution, 1000}) {
        for (int sample = 0; sample < kSampledPolicies; ++sample) {
          const size_t p = static_cast<size_t>(
              UniformInt(rng, 0, static_cast<int>(all.size()) - 1));
          const double limit = all.totals(p).cost;
          const double least = all.LeastValue(limit);
          SCOPED_TRACE(::testing::Message()
                       << model.name << ", " << kind.name << ", resolution "
                       << resolution << ", limit " << limit);
          const auto bound = SolveMultipleChoiceKnapsack(
              groups, limit, resolution, KnapsackRounding::kDown);
          ASSERT_TRUE(bound.ok()) << bound.status();
          ExpectConsistent(groups, *bound);
          EXPECT_LE(bound->value, least * (1 + kSumSlack));
          EXPECT_LE(bound->value, all.totals(p).value * (1 + kSumSlack));
          if (bound->exact) {
            EXPECT_LE(bound->cost, limit);
            EXPECT_NEAR(bound->value, least, least * kSumSlack);
          } else {
            ++inexact_bounds;
          }
          const auto allocation = SolveMultipleChoiceKnapsack(
              groups, limit, resolution, KnapsackRounding::kUp);
          ASSERT_TRUE(allocation.ok()) << allocation.status();
          ExpectConsistent(groups, *allocation);
          EXPECT_LE(allocation->cost, limit);
          EXPECT_GE(allocation->value, least * (1 - kSumSlack));
          if (allocation->exact) {
            EXPECT_NEAR(allocation->value, least, least * kSumSlack);
          }
          if (std::string(model.name) == "mlp_fmnist" &&
              resolution == kAllocationResolution) {
            EXPECT_TRUE(bound->exact);
            EXPECT_TRUE(allocation->exact);
          }
        }
      }
    }
  }
  // The models cover the discretised case.
  EXPECT_GT(inexact_bounds, 0);
}

TEST(KnapsackModelTest, ReadmeDemoIsExactAtFourAverageBits) {
  // Layers of 100352, 8192 and 640 weights at 8..2 bits, 4 average bits:
  // 218368 weight bits of slack, more than 2^17 units, but 1706 multiples of
  // the extra costs' gcd 128: allocation and bound are both the brute-force
  // optimum.
  const ModelCase& model = kModelCases[0];
  std::mt19937_64 rng(1);
  const Groups groups = ModelGroups(model, kCostKinds[0], rng);
  const double limit = 4.0 * (100352 + 8192 + 640);
  const AllSelections all(groups);
  for (KnapsackRounding rounding :
       {KnapsackRounding::kUp, KnapsackRounding::kDown}) {
    const auto solution = SolveMultipleChoiceKnapsack(
        groups, limit, kAllocationResolution, rounding);
    ASSERT_TRUE(solution.ok()) << solution.status();
    EXPECT_TRUE(solution->exact);
    EXPECT_LE(solution->cost, limit);
    EXPECT_NEAR(solution->value, all.LeastValue(limit),
                kSumSlack * solution->value);
  }
}

}  // namespace
}  // namespace mixq::search
