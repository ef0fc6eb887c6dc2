#include "search/progressive.h"

#include <atomic>
#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "search/quantizer.h"
#include "tests/support/onnx_mlp.h"

namespace mixq::search {
namespace {

using ::testing::HasSubstr;

class ProgressiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model =
        engine::Model::FromOnnxBytes(testing::MakeMlpOnnx({16, 32, 24, 4}, 1));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    const LabeledData all = testing::MakeTeacherData(640, 16, 4, 2);
    calib_ = all.Slice(0, 128);
    train_ = all.Slice(128, all.size());
  }

  ProgressiveOptions Options() const {
    ProgressiveOptions options;
    options.bit_levels = {8, 6, 4, 2};
    options.budget = {Budget::Kind::kAvgBits, 4.0};
    options.candidates = 6;
    options.max_layers = 2;
    options.warmup_steps = 20;
    options.finetune_steps = 10;
    options.final_finetune_steps = 10;
    options.learning_rate = 1e-3;
    options.batch_size = 32;
    options.seed = 5;
    return options;
  }

  absl::StatusOr<SearchResult> Run(const ProgressiveOptions& options,
                                   std::vector<StepReport>* steps,
                                   const std::atomic<bool>* cancel = nullptr) {
    SearchObserver observer;
    observer.on_step = [steps](const StepReport& report) {
      steps->push_back(report);
      return absl::OkStatus();
    };
    observer.cancel = cancel;
    return RunProgressiveSearch(*model_, calib_, train_, options, observer);
  }

  std::unique_ptr<engine::Model> model_;
  LabeledData calib_;
  LabeledData train_;
};

TEST_F(ProgressiveTest, PinnedAndPerLayerCandidatesAreRespected) {
  ProgressiveOptions options = Options();
  options.pin_first_last = true;  // layers 0 and 2 stay at 8
  options.layers = {{"fc1.weight", {8, 5, 3}}};
  options.budget = {Budget::Kind::kAvgBits, 7.0};
  std::vector<StepReport> steps;
  const auto result = Run(options, &steps);
  ASSERT_TRUE(result.ok()) << result.status();
  for (const StepReport& step : steps) {
    for (const ScoredPolicy& cand : step.candidates) {
      EXPECT_EQ(cand.policy[0], 8);
      EXPECT_EQ(cand.policy[2], 8);
      EXPECT_THAT(cand.policy[1], ::testing::AnyOf(8, 5, 3));
    }
  }
  EXPECT_LE(result->final_policy.avg_bits, 7.0 + 1e-9);
  EXPECT_EQ(result->final_policy.policy[0], 8);
  EXPECT_EQ(result->final_policy.policy[2], 8);
}

TEST_F(ProgressiveTest, BopsBudgetCountsActivationBits) {
  ProgressiveOptions options = Options();
  const CostModel cost = CostModel::ForModel(*model_);
  // Half the BOPs of the all-8-bit model with 8-bit activations.
  const double all8 = static_cast<double>(cost.Bops({8, 8, 8}, 8));
  options.activation_bits = 8;
  options.budget = {Budget::Kind::kBops, all8 / 2};
  std::vector<StepReport> steps;
  const auto result = Run(options, &steps);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_LE(static_cast<double>(cost.Bops(result->final_policy.policy, 8)),
            all8 / 2);
  // With activations in float (32 bits), even 2-bit weights cost
  // Σ MACs·2·32 = all8: an eighth of it is unreachable, refused up front.
  options.activation_bits = kFloatBits;
  options.budget = {Budget::Kind::kBops, all8 / 8};
  EXPECT_EQ(Run(options, &steps).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ProgressiveTest, MeetsTheBudgetKeepingTheMinimumIndexEachStep) {
  std::vector<StepReport> steps;
  const auto result = Run(Options(), &steps);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_LE(result->final_policy.avg_bits, 4.0 + 1e-9);
  ASSERT_EQ(static_cast<int>(steps.size()), result->steps + 1);
  EXPECT_EQ(steps[0].step, 0);
  EXPECT_TRUE(steps[0].candidates.empty());
  EXPECT_EQ(steps[0].finetuned.policy, Policy({8, 8, 8}));

  Policy previous = steps[0].finetuned.policy;
  for (size_t s = 1; s < steps.size(); ++s) {
    const StepReport& step = steps[s];
    ASSERT_FALSE(step.candidates.empty());
    EXPECT_LE(step.candidates.size(), 6u);
    for (size_t c = 0; c < step.candidates.size(); ++c) {
      const ScoredPolicy& cand = step.candidates[c];
      // Ranked by index; the index is L_C + λ·½·Ω.
      if (c > 0) {
        EXPECT_LE(step.candidates[c - 1].index, cand.index);
      }
      EXPECT_DOUBLE_EQ(cand.index, cand.loss + 0.5 * cand.omega);
      EXPECT_GT(cand.omega, 0);
      // Each candidate lowers 1..k layers of the previous policy one level.
      int lowered = 0;
      for (size_t l = 0; l < previous.size(); ++l) {
        if (cand.policy[l] != previous[l]) {
          ++lowered;
          const int expected = previous[l] == 8 ? 6 : previous[l] == 6 ? 4 : 2;
          EXPECT_EQ(cand.policy[l], expected);
        }
      }
      EXPECT_GE(lowered, 1);
      EXPECT_LE(lowered, 2);
      // Distinct candidates.
      for (size_t d = 0; d < c; ++d)
        EXPECT_NE(step.candidates[d].policy, cand.policy);
    }
    // The kept policy is the minimum-index candidate.
    EXPECT_EQ(step.finetuned.policy, step.candidates[0].policy);
    previous = step.finetuned.policy;
  }
  EXPECT_EQ(result->final_policy.policy, previous);
}

TEST_F(ProgressiveTest, SameSeedSameResult) {
  std::vector<StepReport> a, b;
  const auto ra = Run(Options(), &a);
  const auto rb = Run(Options(), &b);
  ASSERT_TRUE(ra.ok() && rb.ok());
  ASSERT_EQ(a.size(), b.size());
  for (size_t s = 0; s < a.size(); ++s) {
    ASSERT_EQ(a[s].candidates.size(), b[s].candidates.size());
    for (size_t c = 0; c < a[s].candidates.size(); ++c) {
      EXPECT_EQ(a[s].candidates[c].policy, b[s].candidates[c].policy);
      EXPECT_EQ(a[s].candidates[c].index, b[s].candidates[c].index);
    }
    EXPECT_EQ(a[s].finetuned.loss, b[s].finetuned.loss);
  }
  EXPECT_EQ(ra->final_policy.loss, rb->final_policy.loss);
  EXPECT_EQ(ra->final_policy.policy, rb->final_policy.policy);
}

TEST_F(ProgressiveTest, FineTuningLearnsTheTask) {
  std::vector<StepReport> steps;
  ProgressiveOptions options = Options();
  options.warmup_steps = 200;
  const auto result = Run(options, &steps);
  ASSERT_TRUE(result.ok()) << result.status();
  // Four balanced-ish classes: chance is ~0.25; the teacher is linear.
  EXPECT_GT(steps[0].finetuned.accuracy, 0.6);
}

TEST_F(ProgressiveTest, SizeFractionBudget) {
  ProgressiveOptions options = Options();
  options.budget = {Budget::Kind::kSizeFraction, 0.2};
  std::vector<StepReport> steps;
  const auto result = Run(options, &steps);
  ASSERT_TRUE(result.ok()) << result.status();
  const CostModel cost = CostModel::ForModel(*model_);
  EXPECT_LE(result->final_policy.size_bytes, 0.2 * cost.Fp32SizeBytes());
}

TEST_F(ProgressiveTest, UnreachableBudgetIsInvalidArgument) {
  ProgressiveOptions options = Options();
  options.budget = {Budget::Kind::kAvgBits, 1.5};
  std::vector<StepReport> steps;
  const auto result = Run(options, &steps);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(result.status().message(), HasSubstr("cannot be met"));
  EXPECT_TRUE(steps.empty());
}

TEST_F(ProgressiveTest, CancelStopsBetweenSteps) {
  std::atomic<bool> cancel{true};
  std::vector<StepReport> steps;
  const auto result = Run(Options(), &steps, &cancel);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_LE(steps.size(), 1u);
}

TEST_F(ProgressiveTest, ObserverErrorAbortsTheSearch) {
  SearchObserver observer;
  observer.on_step = [](const StepReport&) {
    return absl::UnavailableError("disk full");
  };
  const auto result =
      RunProgressiveSearch(*model_, calib_, train_, Options(), observer);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
}

struct BadOption {
  const char* name;
  void (*mutate)(ProgressiveOptions*);
  const char* field;
};

class ValidateOptionsTest : public ::testing::TestWithParam<BadOption> {};

TEST_P(ValidateOptionsTest, NamesTheField) {
  ProgressiveOptions options;
  options.bit_levels = {8, 4};
  options.budget = {Budget::Kind::kAvgBits, 4};
  ASSERT_TRUE(ValidateOptions(options).ok());
  GetParam().mutate(&options);
  const absl::Status status = ValidateOptions(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr(GetParam().field));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ValidateOptionsTest,
    ::testing::Values(
        BadOption{"no_bits",
                  [](ProgressiveOptions* o) { o->bit_levels.clear(); }, "bits"},
        BadOption{"bits_9",
                  [](ProgressiveOptions* o) {
                    o->bit_levels = {9, 4};
                  },
                  "bits: 9"},
        BadOption{"bits_0",
                  [](ProgressiveOptions* o) {
                    o->bit_levels = {8, 0};
                  },
                  "bits: 0"},
        BadOption{"candidates",
                  [](ProgressiveOptions* o) { o->candidates = 0; },
                  "candidates"},
        BadOption{"max_layers",
                  [](ProgressiveOptions* o) { o->max_layers = 0; },
                  "max_layers"},
        BadOption{"batch", [](ProgressiveOptions* o) { o->batch_size = 0; },
                  "batch_size"},
        BadOption{"lr", [](ProgressiveOptions* o) { o->learning_rate = 0; },
                  "learning_rate"},
        BadOption{"fraction",
                  [](ProgressiveOptions* o) {
                    o->budget = {Budget::Kind::kSizeFraction, 2};
                  },
                  "size_fraction"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace mixq::search
