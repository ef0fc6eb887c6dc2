// Checkpoints: a search resumed from any step's checkpoint continues exactly
// as the uninterrupted search (every later step and the final policy and
// scores, bit for bit), for every strategy and the progressive options that
// carry state; checkpoints that do not fit are refused by name.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "search/progressive.h"
#include "tests/search/search_fixture.h"

namespace mixq::search {
namespace {

using ::testing::HasSubstr;

class CheckpointTest : public testing::MlpSearchTest {
 protected:
  // Same policy, costs and scores to the bit (elapsed times aside).
  static void ExpectSameScored(const ScoredPolicy& a, const ScoredPolicy& b,
                               const std::string& what) {
    EXPECT_EQ(a.policy, b.policy) << what;
    EXPECT_EQ(a.activation_bits, b.activation_bits) << what;
    EXPECT_EQ(a.bops, b.bops) << what;
    EXPECT_EQ(a.loss, b.loss) << what;
    EXPECT_EQ(a.accuracy, b.accuracy) << what;
    EXPECT_EQ(a.omega, b.omega) << what;
    EXPECT_EQ(a.index, b.index) << what;
  }

  // Runs `options` through, then resumes from every step's checkpoint and
  // checks the rest of the run against the uninterrupted one.
  void ExpectEveryResumeMatches(const ProgressiveOptions& options) {
    std::vector<StepReport> full;
    auto expected = Run(options, &full, nullptr, /*checkpoints=*/true);
    ASSERT_TRUE(expected.ok()) << expected.status();
    ASSERT_GE(full.size(), 2u);
    for (size_t from = 0; from < full.size(); ++from) {
      ASSERT_FALSE(full[from].checkpoint.empty());
      std::vector<StepReport> rest;
      auto resumed = Run(options, &rest, nullptr, /*checkpoints=*/true,
                         full[from].checkpoint);
      ASSERT_TRUE(resumed.ok()) << resumed.status();
      const std::string what = absl::StrCat("resumed after step ", from);
      ASSERT_EQ(rest.size(), full.size() - from - 1) << what;
      for (size_t i = 0; i < rest.size(); ++i) {
        const StepReport& a = rest[i];
        const StepReport& b = full[from + 1 + i];
        EXPECT_EQ(a.step, b.step) << what;
        ASSERT_EQ(a.candidates.size(), b.candidates.size()) << what;
        for (size_t c = 0; c < a.candidates.size(); ++c)
          ExpectSameScored(a.candidates[c], b.candidates[c], what);
        ExpectSameScored(a.finetuned, b.finetuned, what);
        EXPECT_EQ(a.scoring.oracle_omega, b.scoring.oracle_omega) << what;
        // And the checkpoints it writes are those of the full run.
        EXPECT_EQ(a.checkpoint, b.checkpoint) << what;
      }
      ExpectSameScored(resumed->final_policy, expected->final_policy, what);
      EXPECT_EQ(resumed->steps, expected->steps) << what;
      EXPECT_EQ(resumed->finetune_steps, expected->finetune_steps) << what;
      EXPECT_EQ(resumed->node_runs, expected->node_runs) << what;
    }
  }
};

// Stops searches inside fine-tunes (warm-up, steps, final) and resumes them
// from the interruption's checkpoint: the rest of the run matches.
class InterruptedFineTuneTest : public CheckpointTest {
 protected:
  struct Capture {
    std::string checkpoint;
    int recorded_step = -2;
  };

  // Runs `options` with `cancel` (raised by the test) and returns the
  // interruption the search reported, if any.
  Capture RunUntilCancelled(const ProgressiveOptions& options,
                            std::atomic<bool>* cancel,
                            std::function<void(Phase)> on_phase = nullptr) {
    Capture capture;
    SearchObserver observer;
    observer.cancel = cancel;
    observer.checkpoints = true;
    observer.on_phase = [&](Phase phase, int) {
      if (on_phase) on_phase(phase);
    };
    observer.on_interrupted = [&](std::string checkpoint, int recorded) {
      capture.checkpoint = std::move(checkpoint);
      capture.recorded_step = recorded;
    };
    auto result =
        RunProgressiveSearch(*model_, calib_, train_, options, observer);
    // (A late cancel may find the search done.)
    if (!capture.checkpoint.empty()) {
      EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
    }
    return capture;
  }

  // Resumes from `capture` and checks the rest against the full run.
  void ExpectResumeMatches(const ProgressiveOptions& options,
                           const Capture& capture,
                           const std::vector<StepReport>& full,
                           const SearchResult& expected) {
    std::vector<StepReport> rest;
    auto resumed =
        Run(options, &rest, nullptr, /*checkpoints=*/true, capture.checkpoint);
    ASSERT_TRUE(resumed.ok()) << resumed.status();
    const std::string what =
        absl::StrCat("interrupted after step ", capture.recorded_step);
    const size_t first = static_cast<size_t>(capture.recorded_step + 1);
    ASSERT_EQ(rest.size(), full.size() - first) << what;
    for (size_t i = 0; i < rest.size(); ++i) {
      const StepReport& a = rest[i];
      const StepReport& b = full[first + i];
      EXPECT_EQ(a.step, b.step) << what;
      ASSERT_EQ(a.candidates.size(), b.candidates.size()) << what;
      for (size_t c = 0; c < a.candidates.size(); ++c)
        ExpectSameScored(a.candidates[c], b.candidates[c], what);
      ExpectSameScored(a.finetuned, b.finetuned, what);
      EXPECT_EQ(a.finetune_steps, b.finetune_steps) << what;
      EXPECT_EQ(a.scoring.node_runs, b.scoring.node_runs) << what;
      EXPECT_EQ(a.checkpoint, b.checkpoint) << what;
    }
    ExpectSameScored(resumed->final_policy, expected.final_policy, what);
    EXPECT_EQ(resumed->finetune_steps, expected.finetune_steps) << what;
    EXPECT_EQ(resumed->node_runs, expected.node_runs) << what;
  }

  // Runs `options` through, then stops it at points spread over the run's
  // duration (a low-discrepancy sequence of fractions) and resumes each: the
  // rest matches the full run. Stops go on until kWanted have landed inside
  // a fine-tune, one of them inside a search step's, or kMaxAttempts: on a
  // loaded machine a run's timing drifts from the measured one, so a fixed
  // count of timed stops could miss.
  void ExpectRandomStopsResumeExactly(const ProgressiveOptions& options) {
    std::vector<StepReport> full;
    const auto start = std::chrono::steady_clock::now();
    auto expected = Run(options, &full, nullptr, true);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    ASSERT_TRUE(expected.ok()) << expected.status();
    // Most stops land in a fine-tune (it is most of the time), some in
    // scoring (no interruption reported).
    constexpr int kWanted = 5;
    constexpr int kMaxAttempts = 200;
    constexpr double kGoldenFraction = 0.6180339887498949;
    const int last = static_cast<int>(full.size()) - 1;
    int resumed = 0;
    bool inside_a_step = false;
    std::set<int> recorded_steps;
    for (int attempt = 0;
         attempt < kMaxAttempts && (resumed < kWanted || !inside_a_step);
         ++attempt) {
      const double fraction = std::fmod(0.5 + attempt * kGoldenFraction, 1.0);
      std::atomic<bool> cancel{false};
      std::thread stopper([&] {
        std::this_thread::sleep_for(
            std::chrono::duration<double>(seconds * fraction));
        cancel = true;
      });
      const Capture capture = RunUntilCancelled(options, &cancel);
      stopper.join();
      if (capture.checkpoint.empty()) continue;
      ExpectResumeMatches(options, capture, full, *expected);
      recorded_steps.insert(capture.recorded_step);
      inside_a_step = inside_a_step || (capture.recorded_step >= 0 &&
                                        capture.recorded_step < last);
      ++resumed;
    }
    EXPECT_GE(resumed, kWanted);
    // Some inside a search step's fine-tune (after step r, before the last),
    // not only in the warm-up (-1) or the final (the last step).
    EXPECT_TRUE(inside_a_step);
  }
};

TEST_F(InterruptedFineTuneTest, WarmupAndFinalStoppedAtTheirStartResume) {
  for (Strategy strategy : {Strategy::kProgressive, Strategy::kKnapsack}) {
    SCOPED_TRACE(StrategyName(strategy));
    const ProgressiveOptions options = Options(strategy);
    std::vector<StepReport> full;
    auto expected = Run(options, &full, nullptr, true);
    ASSERT_TRUE(expected.ok()) << expected.status();
    for (Phase stop_at : {Phase::kWarmup, Phase::kFinal}) {
      std::atomic<bool> cancel{false};
      const Capture capture =
          RunUntilCancelled(options, &cancel, [&](Phase phase) {
            if (phase == stop_at) cancel = true;
          });
      ASSERT_FALSE(capture.checkpoint.empty());
      EXPECT_EQ(capture.recorded_step, stop_at == Phase::kWarmup
                                           ? -1
                                           : static_cast<int>(full.size()) - 1);
      ExpectResumeMatches(options, capture, full, *expected);
    }
  }
}

TEST_F(InterruptedFineTuneTest, StoppedAtRandomPointsResumeExactly) {
  ProgressiveOptions options = Options();
  options.finetune_steps = 30;
  options.final_finetune_steps = 30;
  ExpectRandomStopsResumeExactly(options);
}

// The fine-tunes' held-out selection under way (best weights and ranges,
// best loss, evaluations without improvement) and early stops resume too:
// evaluations every 3 mini-batches, a rate that overshoots, patience 2.
TEST_F(InterruptedFineTuneTest, StoppedInsideSelectingFineTunesResumeExactly) {
  ProgressiveOptions options = Options();
  options.finetune_steps = 30;
  options.final_finetune_steps = 60;
  options.learning_rate = 3e-2;
  options.finetune.eval_cost = 1e6;
  options.finetune.patience = 2;
  ExpectRandomStopsResumeExactly(options);
}

TEST_F(CheckpointTest, ProgressiveResumesExactlyFromEveryStep) {
  ExpectEveryResumeMatches(Options());
}

TEST_F(CheckpointTest, ProgressiveWithStatefulOptionsResumesExactly) {
  ProgressiveOptions options = Options();
  // Activation bits searched (the session's bits change mid-run), a fresh
  // Fisher, knapsack guidance and landing, and a total fine-tune budget.
  options.activation_levels = {8, 6, 4};
  options.budget = {Budget::Kind::kBops, 0};
  {
    // Half the BOPs of 8-bit weights and activations.
    const CostModel cost = CostModel::ForModel(*model_);
    options.budget.value =
        0.5 *
        static_cast<double>(cost.Cost(Policy(cost.num_layers(), 8), 8).bops);
  }
  options.refresh_fisher = true;
  options.knapsack_guided = true;
  options.land_on_budget = true;
  options.total_finetune_steps = 90;
  ExpectEveryResumeMatches(options);
}

TEST_F(CheckpointTest, AllocationStrategiesResumeExactly) {
  for (Strategy strategy : {Strategy::kUniform, Strategy::kKnapsack,
                            Strategy::kHawq, Strategy::kAuto}) {
    SCOPED_TRACE(StrategyName(strategy));
    ProgressiveOptions options = Options(strategy);
    options.hutchinson_samples = 2;
    ExpectEveryResumeMatches(options);
  }
}

TEST_F(CheckpointTest, WithoutTheFlagReportsCarryNoCheckpoint) {
  std::vector<StepReport> steps;
  ASSERT_TRUE(Run(Options(), &steps).ok());
  for (const StepReport& step : steps) EXPECT_TRUE(step.checkpoint.empty());
}

TEST_F(CheckpointTest, RefusesCheckpointsThatDoNotFit) {
  std::vector<StepReport> steps;
  ASSERT_TRUE(Run(Options(), &steps, nullptr, true).ok());
  const std::string& checkpoint = steps.at(1).checkpoint;

  std::vector<StepReport> ignored;
  auto garbage = Run(Options(), &ignored, nullptr, false, "not a checkpoint");
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(garbage.status().message()), HasSubstr("checkpoint"));

  ProgressiveOptions other_seed = Options();
  other_seed.seed = 6;
  auto seed = Run(other_seed, &ignored, nullptr, false, checkpoint);
  EXPECT_EQ(seed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(seed.status().message()), HasSubstr("seed"));

  auto strategy =
      Run(Options(Strategy::kKnapsack), &ignored, nullptr, false, checkpoint);
  EXPECT_EQ(strategy.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(strategy.status().message()),
              HasSubstr("progressive"));

  // Fewer candidate bits: a level beyond the layer's list.
  ProgressiveOptions fewer_bits = Options();
  fewer_bits.bit_levels = {8, 4};
  auto bits =
      Run(fewer_bits, &ignored, nullptr, false, steps.back().checkpoint);
  EXPECT_EQ(bits.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bits.status().message()), HasSubstr("level"));

  // A truncated checkpoint never half-restores: it fails to parse or fit.
  auto truncated = Run(Options(), &ignored, nullptr, false,
                       checkpoint.substr(0, checkpoint.size() / 2));
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mixq::search
