// The fine-tuning recipe (QatSession::FineTune with FineTuneOptions): the
// learning-rate schedule, best-weight selection on held-out data, early
// stopping, and the property they exist for — more fine-tuning never ends
// with a higher held-out loss than less.
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "checkpoint.pb.h"
#include "engine/adam.h"
#include "gtest/gtest.h"
#include "search/qat.h"
#include "tests/search/search_fixture.h"

namespace mixq::search {
namespace {

class FineTuneTest : public testing::MlpSearchTest {
 protected:
  struct Tuned {
    FineTuneProgress progress;
    double held_out_loss = 0;  // the session's after the fine-tune
    std::vector<engine::Tensor> weights;
  };

  // From the model's initial weights, `steps` mini-batches of `policy` on
  // the fine-tuning set under `recipe`, selecting on the calibration set.
  Tuned FineTune(const Policy& policy, int steps, const FineTuneOptions& recipe,
                 double learning_rate, uint64_t seed) {
    QatSession session(
        *model_,
        engine::AdamOptions{.learning_rate = static_cast<float>(learning_rate)},
        32, seed);
    EXPECT_TRUE(session.Calibrate(policy, calib_).ok());
    Tuned tuned;
    tuned.progress = FineTuneProgress(steps);
    const absl::Status status =
        session.FineTune(policy, train_, &calib_, recipe, &tuned.progress);
    EXPECT_TRUE(status.ok()) << status;
    const absl::StatusOr<Evaluation> eval = session.Evaluate(policy, calib_);
    EXPECT_TRUE(eval.ok()) << eval.status();
    tuned.held_out_loss = eval.ok() ? eval->loss : 0;
    tuned.weights = session.weights();
    return tuned;
  }
};

bool SameBits(const std::vector<engine::Tensor>& a,
              const std::vector<engine::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].shape() != b[i].shape() ||
        std::memcmp(a[i].data(), b[i].data(),
                    sizeof(float) * static_cast<size_t>(a[i].size())) != 0) {
      return false;
    }
  }
  return true;
}

TEST(ScheduledLearningRateTest, CosineWithinEachCycleFromTheRateToTheFloor) {
  FineTuneOptions cosine;
  cosine.cycle = 11;  // positions 0..10: t = position / 10
  cosine.lr_floor = 0.1;
  FineTuneOptions warm = cosine;
  warm.cycle = 10;
  warm.warmup_fraction = 0.2;  // 2 mini-batches rising, then 8 of cosine
  FineTuneOptions whole = cosine;
  whole.cycle = 0;  // one cycle: the fine-tune's length
  const FineTuneOptions constant = FineTuneOptions::Constant();
  const struct {
    std::string name;
    const FineTuneOptions& options;
    int step, steps;
    double rate;  // for base 1
  } cases[] = {
      {"first", cosine, 0, 100, 1.0},
      {"middle", cosine, 5, 100, 0.1 + 0.9 * 0.5},
      {"quarter", cosine, 2, 100,  // t = 0.2
       0.1 + 0.9 * 0.5 * (1 + std::cos(0.2 * M_PI))},
      {"last of the cycle", cosine, 10, 100, 0.1},
      {"restart", cosine, 11, 100, 1.0},
      {"middle of the third cycle", cosine, 27, 100, 0.55},
      {"length does not matter", cosine, 27, 28, 0.55},
      {"warm-up 1/3", warm, 0, 50, 1.0 / 3},
      {"warm-up 2/3", warm, 1, 50, 2.0 / 3},
      {"after the warm-up", warm, 2, 50, 1.0},
      {"warm cycle's last", warm, 9, 50, 0.1},
      {"warm restart", warm, 10, 50, 1.0 / 3},
      {"whole: middle", whole, 5, 11, 0.55},
      {"whole: last", whole, 10, 11, 0.1},
      {"whole: one mini-batch", whole, 0, 1, 1.0},
      {"constant", constant, 7, 11, 1.0},
  };
  for (const auto& c : cases) {
    EXPECT_NEAR(ScheduledLearningRate(c.options, 1.0, c.step, c.steps), c.rate,
                1e-12)
        << c.name;
    EXPECT_NEAR(ScheduledLearningRate(c.options, 1e-3, c.step, c.steps),
                1e-3 * c.rate, 1e-15)
        << c.name;
  }
}

TEST(FineTuneOptionsTest, OutOfRangeOptionsAreRefusedByName) {
  const struct {
    std::string field;
    void (*set)(FineTuneOptions*);
  } cases[] = {
      {"finetune.lr_floor", [](FineTuneOptions* o) { o->lr_floor = 0; }},
      {"finetune.lr_floor", [](FineTuneOptions* o) { o->lr_floor = 1.5; }},
      {"finetune.warmup_fraction",
       [](FineTuneOptions* o) { o->warmup_fraction = 1; }},
      {"finetune.cycle", [](FineTuneOptions* o) { o->cycle = -1; }},
      {"finetune.evaluations", [](FineTuneOptions* o) { o->evaluations = 0; }},
      {"finetune.eval_cost", [](FineTuneOptions* o) { o->eval_cost = 0; }},
      {"finetune.patience", [](FineTuneOptions* o) { o->patience = -1; }},
  };
  EXPECT_TRUE(ValidateFineTuneOptions(FineTuneOptions()).ok());
  for (const auto& c : cases) {
    FineTuneOptions options;
    c.set(&options);
    const absl::Status status = ValidateFineTuneOptions(options);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(status.message().find(c.field), absl::string_view::npos)
        << status;
  }
}

// Learning rates at which this MLP's fine-tune overshoots (1e-1: the
// calibration loss after 200 mini-batches is above that after 60 unless the
// best weights return), and a gentler one.
struct LengthCase {
  double learning_rate;
  Policy policy;
};
const LengthCase kLengthCases[] = {
    {1e-2, {4, 4, 4}}, {3e-2, {4, 4, 4}}, {1e-1, {4, 4, 4}}, {1e-1, {2, 2, 2}}};
// Whole cycles of the recipe below.
const int kLengths[] = {20, 60, 200};

// Evaluations every 14 mini-batches within each cycle of 20 (see
// EvaluationsBeforeTheStartAtFixedPointsAndAtTheEnd).
FineTuneOptions Recipe(int patience) {
  FineTuneOptions recipe;
  recipe.cycle = 20;
  recipe.eval_cost = 0.1;
  recipe.patience = patience;
  return recipe;
}

// Fails when FineTune does not return to the best weights.
TEST_F(FineTuneTest, MoreStepsNeverEndWithAHigherHeldOutLoss) {
  for (const LengthCase& c : kLengthCases) {
    for (int patience : {0, 3}) {
      const std::string what =
          absl::StrCat("lr ", c.learning_rate, " policy ",
                       PolicyToString(c.policy), " patience ", patience);
      double start = std::numeric_limits<double>::infinity();
      {
        QatSession session(
            *model_,
            engine::AdamOptions{.learning_rate =
                                    static_cast<float>(c.learning_rate)},
            32, 3);
        ASSERT_TRUE(session.Calibrate(c.policy, calib_).ok());
        start = session.Evaluate(c.policy, calib_)->loss;
      }
      double shorter = start;
      for (int steps : kLengths) {
        const Tuned tuned =
            FineTune(c.policy, steps, Recipe(patience), c.learning_rate, 3);
        EXPECT_LE(tuned.held_out_loss, shorter) << what << ", " << steps;
        shorter = tuned.held_out_loss;
        // The session holds exactly the best evaluation's weights.
        ASSERT_GE(tuned.progress.best_at, 0) << what;
        EXPECT_EQ(tuned.held_out_loss, tuned.progress.best.loss) << what;
        EXPECT_TRUE(SameBits(tuned.weights, tuned.progress.best_weights))
            << what;
      }
    }
  }
}

// The setting above is one where more steps hurt: without returning to the
// best weights, 200 mini-batches end above 60 (and the constant rate above
// 20).
TEST_F(FineTuneTest, WithoutRestoringMoreStepsEndWorseHere) {
  FineTuneOptions last_weights = Recipe(0);
  last_weights.restore_best = false;
  for (const Policy& policy : {Policy{4, 4, 4}, Policy{2, 2, 2}}) {
    const std::string what = PolicyToString(policy);
    EXPECT_GT(FineTune(policy, 200, last_weights, 1e-1, 3).held_out_loss,
              FineTune(policy, 60, last_weights, 1e-1, 3).held_out_loss)
        << what;
    const FineTuneOptions constant = FineTuneOptions::Constant();
    if (policy[0] == 2) {
      EXPECT_GT(FineTune(policy, 200, constant, 1e-1, 3).held_out_loss,
                FineTune(policy, 20, constant, 1e-1, 3).held_out_loss)
          << what;
    }
  }
}

TEST_F(FineTuneTest,
       EarlyStoppingStopsAfterPatienceEvaluationsWithoutImprovement) {
  const Policy policy = {4, 4, 4};
  const Tuned stopped = FineTune(policy, 200, Recipe(3), 1e-1, 3);
  EXPECT_TRUE(stopped.progress.stopped);
  EXPECT_LT(stopped.progress.done, 200);
  EXPECT_EQ(stopped.progress.since_best, 3);
  EXPECT_EQ(stopped.progress.last_evaluation, stopped.progress.done);
  EXPECT_LT(stopped.progress.best_at, stopped.progress.done);
  // Without patience the same fine-tune runs to its end, through the same
  // evaluations up to the stop, so it ends no higher.
  const Tuned full = FineTune(policy, 200, Recipe(0), 1e-1, 3);
  EXPECT_FALSE(full.progress.stopped);
  EXPECT_EQ(full.progress.done, 200);
  EXPECT_GT(full.progress.evaluations, stopped.progress.evaluations);
  EXPECT_LE(full.held_out_loss, stopped.held_out_loss);
}

TEST_F(FineTuneTest, EvaluationsBeforeTheStartAtFixedPointsAndAtTheEnd) {
  FineTuneOptions recipe = Recipe(0);
  recipe.eval_cost = 1e6;  // no cost bound: cycle / evaluations = 2
  recipe.evaluations = 10;
  // 0, 2, ..., 20 (11), then 22..40 (10), then 42, 44 and the end, 45.
  EXPECT_EQ(FineTune({4, 4, 4}, 45, recipe, 1e-2, 3).progress.evaluations, 24);
  // The cost bound: 128 held-out samples against mini-batches of 32 cost
  // 128 / (0.1 · 3 · 32) = 13.3 → every 14 mini-batches: 0, 14 | 20, 34 |
  // 40, 45.
  recipe.eval_cost = 0.1;
  EXPECT_EQ(FineTune({4, 4, 4}, 45, recipe, 1e-2, 3).progress.evaluations, 6);
  // By default (0.05) every 27, capped at the cycle: 0 | 20 | 40, 45.
  recipe.eval_cost = FineTuneOptions().eval_cost;
  EXPECT_EQ(FineTune({4, 4, 4}, 45, recipe, 1e-2, 3).progress.evaluations, 4);
  // Without a held-out set: no evaluation, the last weights.
  QatSession session(*model_, engine::AdamOptions{}, 32, 3);
  FineTuneProgress progress(10);
  ASSERT_TRUE(
      session.FineTune({4, 4, 4}, train_, nullptr, recipe, &progress).ok());
  EXPECT_EQ(progress.evaluations, 0);
  EXPECT_EQ(progress.best_at, -1);
  EXPECT_EQ(progress.done, 10);
}

TEST_F(FineTuneTest, ProgressRoundTripsThroughItsCheckpointState) {
  const Tuned tuned = FineTune({4, 4, 4}, 200, Recipe(3), 1e-1, 3);
  QatSession session(*model_, engine::AdamOptions{}, 32, 3);
  ASSERT_TRUE(session.Calibrate({4, 4, 4}, calib_).ok());
  internal::FineTuneProgressState state;
  session.SaveProgress(tuned.progress, &state);
  const absl::StatusOr<FineTuneProgress> back =
      session.RestoreProgress(state, tuned.progress.steps, tuned.progress.done);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->last_evaluation, tuned.progress.last_evaluation);
  EXPECT_EQ(back->evaluations, tuned.progress.evaluations);
  EXPECT_EQ(back->best.loss, tuned.progress.best.loss);
  EXPECT_EQ(back->best.accuracy, tuned.progress.best.accuracy);
  EXPECT_EQ(back->best_at, tuned.progress.best_at);
  EXPECT_TRUE(SameBits(back->best_weights, tuned.progress.best_weights));
  EXPECT_EQ(back->best_ranges.min, tuned.progress.best_ranges.min);
  EXPECT_EQ(back->best_ranges.max, tuned.progress.best_ranges.max);
  EXPECT_EQ(back->since_best, tuned.progress.since_best);
  EXPECT_EQ(back->stopped, tuned.progress.stopped);
  // A best beyond the position, or weights of another shape, do not fit.
  EXPECT_FALSE(session.RestoreProgress(state, 200, 10).ok());
  state.mutable_best_weights(0)->set_data("xyz");
  EXPECT_FALSE(session.RestoreProgress(state, 200, tuned.progress.done).ok());
}

}  // namespace
}  // namespace mixq::search
