// Warm starts (RunProgressiveSearch's warm_start, the engine of `submit
// --from-job`): a search started from another search's step-0 state skips
// the warm-up and then runs exactly as a search of its own options that did
// that warm-up itself; states that are not a step 0 of this model are
// refused by name.
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "search/progressive.h"
#include "tests/search/search_fixture.h"
#include "tests/support/onnx_mlp.h"

namespace mixq::search {
namespace {

using ::testing::HasSubstr;

class WarmStartTest : public testing::MlpSearchTest {
 protected:
  // The step-0 checkpoint of a search with `options`.
  std::string WarmUpState(const ProgressiveOptions& options) {
    std::vector<StepReport> steps;
    auto result = Run(options, &steps, nullptr, /*checkpoints=*/true);
    EXPECT_TRUE(result.ok()) << result.status();
    if (steps.empty()) return "";
    EXPECT_EQ(steps[0].step, 0);
    return steps[0].checkpoint;
  }
};

TEST_F(WarmStartTest, ContinuesAsTheSearchThatRanTheWarmUp) {
  // The source: a progressive search at 4 bits. Each target searches another
  // budget (and strategy) from its warm-up.
  const std::string state = WarmUpState(Options());
  ASSERT_FALSE(state.empty());
  for (Strategy strategy :
       {Strategy::kProgressive, Strategy::kKnapsack, Strategy::kAuto}) {
    ProgressiveOptions options = Options(strategy);
    options.budget = {Budget::Kind::kAvgBits, 3.0};
    const std::string what = StrategyName(strategy);

    std::vector<StepReport> fresh;
    auto expected = Run(options, &fresh);
    ASSERT_TRUE(expected.ok()) << expected.status();
    std::vector<StepReport> warm;
    auto result =
        Run(options, &warm, nullptr, /*checkpoints=*/false, {}, state);
    ASSERT_TRUE(result.ok()) << result.status();

    ASSERT_EQ(warm.size(), fresh.size()) << what;
    EXPECT_EQ(warm[0].finetune_steps, 0) << what;
    EXPECT_EQ(fresh[0].finetune_steps, options.warmup_steps) << what;
    // The restored v̂ is the warm-up's: the same Ω table.
    EXPECT_EQ(warm[0].sensitivities.omega, fresh[0].sensitivities.omega)
        << what;
    EXPECT_EQ(warm[0].finetuned.loss, fresh[0].finetuned.loss) << what;
    for (size_t i = 1; i < warm.size(); ++i) {
      EXPECT_EQ(warm[i].finetuned.policy, fresh[i].finetuned.policy) << what;
      EXPECT_EQ(warm[i].finetuned.loss, fresh[i].finetuned.loss) << what;
    }
    EXPECT_EQ(result->final_policy.policy, expected->final_policy.policy)
        << what;
    EXPECT_EQ(result->final_policy.loss, expected->final_policy.loss) << what;
    EXPECT_EQ(result->finetune_steps,
              expected->finetune_steps - options.warmup_steps)
        << what;
  }
}

TEST_F(WarmStartTest, ResumingAWarmStartedSearchIgnoresTheWarmStart) {
  const std::string state = WarmUpState(Options());
  ProgressiveOptions options = Options();
  options.budget = {Budget::Kind::kAvgBits, 3.0};
  std::vector<StepReport> full;
  auto expected = Run(options, &full, nullptr, /*checkpoints=*/true, {}, state);
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_GE(full.size(), 2u);
  std::vector<StepReport> rest;
  auto resumed = Run(options, &rest, nullptr, /*checkpoints=*/true,
                     full[1].checkpoint, state);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->final_policy.policy, expected->final_policy.policy);
  EXPECT_EQ(resumed->final_policy.loss, expected->final_policy.loss);
  EXPECT_EQ(resumed->finetune_steps, expected->finetune_steps);
}

TEST_F(WarmStartTest, RefusesStatesThatAreNotAWarmUpOfThisModel) {
  std::vector<StepReport> steps;
  ASSERT_TRUE(Run(Options(), &steps, nullptr, /*checkpoints=*/true).ok());
  ASSERT_GE(steps.size(), 2u);

  // Another model's warm-up (other layer widths).
  auto other =
      engine::Model::FromOnnxBytes(testing::MakeMlpOnnx({16, 8, 24, 4}, 1));
  ASSERT_TRUE(other.ok()) << other.status();
  SearchObserver observer;
  observer.checkpoints = true;
  std::string other_state;
  observer.on_step = [&](const StepReport& report) {
    if (report.step == 0) other_state = report.checkpoint;
    return absl::OkStatus();
  };
  ASSERT_TRUE(
      RunProgressiveSearch(**other, calib_, train_, Options(), observer).ok());

  const struct {
    std::string state;
    std::string error;
  } cases[] = {
      {"not a checkpoint", "warm start: does not parse"},
      {steps[1].checkpoint, "warm start: not the state after a warm-up"},
      {other_state, "warm start: "},
  };
  for (const auto& c : cases) {
    std::vector<StepReport> ignored;
    auto result = Run(Options(), &ignored, nullptr, false, {}, c.state);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument)
        << c.error;
    EXPECT_THAT(result.status().message(), HasSubstr(c.error));
  }
}

}  // namespace
}  // namespace mixq::search
