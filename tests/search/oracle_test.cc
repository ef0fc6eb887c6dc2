// The progressive search's oracle (ScoringStats::oracle_omega) on real
// searches over MLPs the size of the README demo: with layers of 100352, 8192
// and 640 weights the slack of a 4-average-bit budget is too wide for a DP
// cell per weight bit, so the knapsack must either divide the costs by their
// gcd (exact) or discretise (a lower bound). Either way the oracle, computed
// on the step's Ω table at the kept policy's cost, is at most the Ω of every
// policy that step recorded at no more than that cost, the kept one included.
// The brute-force check of the allocation itself over every policy of small
// models is in knapsack_test.cc (KnapsackModelTest).
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model.h"
#include "gtest/gtest.h"
#include "search/cost_model.h"
#include "search/progressive.h"
#include "search/qat.h"
#include "tests/search/search_fixture.h"
#include "tests/support/onnx_mlp.h"

namespace mixq::search {
namespace {

// Float summation noise between two Ω sums of the same table.
constexpr double kOmegaRelativeSlack = 1e-12;

struct Shape {
  const char* name;
  std::vector<int64_t> dims;
};

// fashion-MNIST's MLP (weights 100352, 8192, 640: gcd 128), and one whose
// weight counts 99695 = 785·127, 8001 = 127·63 and 630 have gcd 1, so that
// the knapsack must discretise.
const Shape kShapes[] = {
    {"mlp_fmnist", {784, 128, 64, 10}},
    {"coprime", {785, 127, 63, 10}},
};

struct Variant {
  const char* name;
  bool land_on_budget;
  bool knapsack_guided;
};

const Variant kVariants[] = {
    {"plain", false, false},
    {"land_on_budget", true, false},
    {"knapsack_guided", false, true},
};

// The shared search runner (tests/search/search_fixture.h) on models that
// each test loads.
class OracleTest : public testing::MlpSearchTest {
 protected:
  void SetUp() override {}

  void Load(const Shape& shape) {
    auto model =
        engine::Model::FromOnnxBytes(testing::MakeMlpOnnx(shape.dims, 3));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    const LabeledData all =
        testing::MakeTeacherData(96, shape.dims.front(), shape.dims.back(), 4);
    calib_ = all.Slice(0, 32);
    train_ = all.Slice(32, all.size());
  }

  // The README demo's options, shortened: bits 8..2, n = 6, k = 2.
  static ProgressiveOptions Options(const Budget& budget,
                                    const Variant& variant) {
    ProgressiveOptions options;
    options.bit_levels = {8, 6, 5, 4, 3, 2};
    options.activation_bits = 8;
    options.budget = budget;
    options.candidates = 6;
    options.max_layers = 2;
    options.warmup_steps = 2;
    options.finetune_steps = 2;
    options.final_finetune_steps = 0;
    options.learning_rate = 1e-3;
    options.batch_size = 32;
    options.seed = 7;
    options.land_on_budget = variant.land_on_budget;
    options.knapsack_guided = variant.knapsack_guided;
    return options;
  }

  // Every budget kind at about 4 average bits.
  std::vector<Budget> Budgets() const {
    const CostModel cost = CostModel::ForModel(*model_);
    const Policy four(cost.num_layers(), 4);
    const PolicyCost at_four = cost.Cost(four, 8);
    return {{Budget::Kind::kAvgBits, 4.0},
            {Budget::Kind::kSizeFraction, at_four.size_fraction},
            {Budget::Kind::kBytes, at_four.size_bytes},
            {Budget::Kind::kBops, static_cast<double>(at_four.bops)}};
  }

  // The oracle of every search step is at most the Ω of every candidate
  // scored at no more than the kept policy's cost (same Ω table), the kept
  // policy first.
  void ExpectOracleBelowEveryCheaperCandidate(
      const ProgressiveOptions& options, const std::vector<StepReport>& steps,
      const std::string& what) const {
    const CostModel cost = CostModel::ForModel(*model_);
    const auto measure = [&](const ScoredPolicy& p) {
      return options.budget.Measure(cost.Cost(p.policy, p.activation_bits));
    };
    ASSERT_GE(steps.size(), 2u) << what;
    for (size_t s = 1; s < steps.size(); ++s) {
      const StepReport& step = steps[s];
      const ScoredPolicy& kept = step.candidates.front();
      const double oracle = step.scoring.oracle_omega;
      EXPECT_GT(oracle, 0) << what << " step " << s;
      EXPECT_LE(oracle, kept.omega)
          << what << " step " << s << ": kept " << PolicyToString(kept.policy);
      for (const ScoredPolicy& c : step.candidates) {
        if (measure(c) > measure(kept) * (1 + 1e-12)) continue;
        EXPECT_LE(oracle, c.omega * (1 + kOmegaRelativeSlack))
            << what << " step " << s << ": candidate "
            << PolicyToString(c.policy) << " at no more than the kept "
            << PolicyToString(kept.policy) << "'s cost";
      }
    }
  }
};

TEST_F(OracleTest, ProgressiveStepsAreNeverBelowTheOracle) {
  for (const Shape& shape : kShapes) {
    Load(shape);
    for (const Budget& budget : Budgets()) {
      for (const Variant& variant : kVariants) {
        const ProgressiveOptions options = Options(budget, variant);
        const std::string what = absl::StrCat(
            shape.name, ", ", budget.ToString(), ", ", variant.name);
        std::vector<StepReport> steps;
        const auto result = Run(options, &steps);
        ASSERT_TRUE(result.ok()) << what << ": " << result.status();
        ExpectOracleBelowEveryCheaperCandidate(options, steps, what);
      }
    }
  }
}

TEST_F(OracleTest, KnapsackStrategyIsTheOracleWhenTheGcdMakesItExact) {
  // mlp_fmnist: every extra cost is a multiple of 128 weight bits, so the
  // allocation is exact and is its own oracle; on the coprime shape the
  // allocation (rounded up) can only be worse than the bound.
  for (const Shape& shape : kShapes) {
    Load(shape);
    for (const Budget& budget : Budgets()) {
      ProgressiveOptions options = Options(budget, kVariants[0]);
      options.strategy = Strategy::kKnapsack;
      const std::string what =
          absl::StrCat(shape.name, ", ", budget.ToString());
      std::vector<StepReport> steps;
      const auto result = Run(options, &steps);
      ASSERT_TRUE(result.ok()) << what << ": " << result.status();
      ASSERT_EQ(steps.size(), 2u) << what;
      const ScoredPolicy& chosen = steps[1].candidates.front();
      const double oracle = steps[1].scoring.oracle_omega;
      EXPECT_LE(oracle, chosen.omega) << what;
      if (std::string(shape.name) == "mlp_fmnist") {
        EXPECT_NEAR(oracle, chosen.omega, kOmegaRelativeSlack * chosen.omega)
            << what;
      }
    }
  }
}

}  // namespace
}  // namespace mixq::search
