#include "search/progressive.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "search/quantizer.h"
#include "tests/search/search_fixture.h"
#include "tests/support/fixtures.h"

namespace mixq::search {
namespace {

using ::testing::HasSubstr;

// The shared MLP search problem (tests/search/search_fixture.h).
class ProgressiveTest : public testing::MlpSearchTest {};

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
  // Every reported policy carries its BOPs at the job's activation bits.
  EXPECT_EQ(result->final_policy.bops,
            cost.Bops(result->final_policy.policy, 8));
  for (const StepReport& step : steps) {
    for (const ScoredPolicy& c : step.candidates)
      EXPECT_EQ(c.bops, cost.Bops(c.policy, 8));
    EXPECT_EQ(step.finetuned.bops, cost.Bops(step.finetuned.policy, 8));
  }
  ASSERT_GE(steps.size(), 2u);  // the budget was not met before the search
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
  // (The rate decays to a tenth over the warm-up: 200 steps reach ~0.58
  // from this random start; the constant rate reached 0.6 in 200.)
  options.warmup_steps = 400;
  const auto result = Run(options, &steps);
  ASSERT_TRUE(result.ok()) << result.status();
  // Four balanced-ish classes: chance is ~0.25; the teacher is linear.
  EXPECT_GT(steps[0].finetuned.accuracy, 0.6);
}

// A model whose weights are tied (tests/fixtures/tied_opset13.onnx: encoder
// layers de-duplicated into Identity nodes, a Linear applied twice) searches
// like any other: its 6 layers (5 read by two nodes) meet the budget, with
// quantized activations on every reader.
TEST(TiedWeightsSearchTest, SearchRunsToTheBudget) {
  absl::StatusOr<std::unique_ptr<engine::Model>> model =
      engine::Model::FromOnnxFile(testing::FixturePath("tied_opset13.onnx"));
  ASSERT_TRUE(model.ok()) << model.status();
  LabeledData data;
  data.inputs = testing::ReadFloatNpy(testing::FixturePath("tied_inputs.npy"));
  std::vector<const engine::Tensor*> params;
  for (const engine::Tensor& p : (*model)->initial_params()) {
    params.push_back(&p);
  }
  const absl::StatusOr<engine::Tensor> logits =
      (*model)->Forward(data.inputs, params, nullptr);
  ASSERT_TRUE(logits.ok()) << logits.status();
  // The FP32 model's predictions as labels.
  const int64_t classes = logits->dim(1);
  for (int64_t i = 0; i < logits->dim(0); ++i) {
    const float* row = logits->data() + i * classes;
    data.labels.push_back(std::max_element(row, row + classes) - row);
  }
  ProgressiveOptions options;
  options.bit_levels = {8, 4};
  options.budget = {Budget::Kind::kAvgBits, 6.0};
  options.warmup_steps = 2;
  options.finetune_steps = 2;
  options.final_finetune_steps = 2;
  options.batch_size = 4;
  options.seed = 1;
  SearchObserver observer;
  const absl::StatusOr<SearchResult> result =
      RunProgressiveSearch(**model, data, data, options, observer);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->final_policy.policy.size(), 6u);
  EXPECT_LE(result->final_policy.avg_bits, 6.0);
  EXPECT_GT(result->steps, 0);
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

// Every policy a search reported: candidates and kept ones.
std::vector<Policy> AllPolicies(const std::vector<StepReport>& steps) {
  std::vector<Policy> policies;
  for (const StepReport& step : steps) {
    for (const ScoredPolicy& c : step.candidates) policies.push_back(c.policy);
    policies.push_back(step.finetuned.policy);
  }
  return policies;
}

// The next lower entry of `bits` (highest first) after `from`.
int NextLower(const std::vector<int>& bits, int from) {
  const auto it = std::find(bits.begin(), bits.end(), from);
  return it + 1 < bits.end() ? *(it + 1) : -1;
}

// Layers: fc0.weight 16x32 (512 weights), fc1.weight 32x24 (768), fc2.weight
// 24x4 (96).
TEST_F(ProgressiveTest, PerLayerListsAndPinsAreRespected) {
  ProgressiveOptions options = Options();
  options.layers = {{"fc1.weight", {3, 8, 5}}, {"fc0.weight", {8}}};
  // Lowest reachable: (512·8 + 768·3 + 96·2) / 1376 = 4.79 average bits.
  options.budget = {Budget::Kind::kAvgBits, 5.0};
  std::vector<StepReport> steps;
  const auto result = Run(options, &steps);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(steps[0].finetuned.policy, Policy({8, 8, 8}));
  EXPECT_LE(result->final_policy.avg_bits, 5.0 + 1e-9);
  ASSERT_GE(result->steps, 1);
  const std::vector<std::vector<int>> lists = {{8}, {8, 5, 3}, {8, 6, 4, 2}};
  for (const Policy& policy : AllPolicies(steps)) {
    EXPECT_EQ(policy[0], 8) << PolicyToString(policy);  // pinned
    for (size_t l = 0; l < lists.size(); ++l) {
      EXPECT_NE(std::find(lists[l].begin(), lists[l].end(), policy[l]),
                lists[l].end())
          << "layer " << l << " at " << policy[l];
    }
  }
  // Each candidate lowers layers one step along their own lists.
  Policy previous = steps[0].finetuned.policy;
  for (size_t s = 1; s < steps.size(); ++s) {
    for (const ScoredPolicy& c : steps[s].candidates) {
      for (size_t l = 0; l < previous.size(); ++l) {
        if (c.policy[l] != previous[l]) {
          EXPECT_EQ(c.policy[l], NextLower(lists[l], previous[l]));
        }
      }
    }
    previous = steps[s].finetuned.policy;
  }
  EXPECT_EQ(result->final_policy.policy[0], 8);
}

TEST_F(ProgressiveTest, PinFirstLastKeepsThemAtTheirHighest) {
  ProgressiveOptions options = Options();
  options.bit_levels = {8, 4, 2};
  options.pin_first_last = true;
  // Only fc1 moves: at 4 bits (4096 + 3072 + 768) / 1376 = 5.77 > 5.5, so it
  // must reach 2 bits (4.65).
  options.budget = {Budget::Kind::kAvgBits, 5.5};
  std::vector<StepReport> steps;
  const auto result = Run(options, &steps);
  ASSERT_TRUE(result.ok()) << result.status();
  for (const Policy& policy : AllPolicies(steps)) {
    EXPECT_EQ(policy.front(), 8) << PolicyToString(policy);
    EXPECT_EQ(policy.back(), 8) << PolicyToString(policy);
  }
  EXPECT_EQ(result->final_policy.policy, Policy({8, 2, 8}));
  EXPECT_EQ(result->steps, 2);
}

TEST_F(ProgressiveTest, EveryLayerPinnedRunsNoStep) {
  ProgressiveOptions options = Options();
  options.layers = {
      {"fc0.weight", {8}}, {"fc1.weight", {4}}, {"fc2.weight", {6}}};
  options.budget = {Budget::Kind::kAvgBits, 8.0};
  std::vector<StepReport> steps;
  const auto result = Run(options, &steps);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->steps, 0);
  EXPECT_EQ(result->final_policy.policy, Policy({8, 4, 6}));

  options.budget = {Budget::Kind::kAvgBits, 5.0};  // pinned cost: 5.69
  steps.clear();
  const auto unmet = Run(options, &steps);
  EXPECT_EQ(unmet.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unmet.status().message(), HasSubstr("cannot be met"));
  EXPECT_TRUE(steps.empty());
}

TEST_F(ProgressiveTest, UnknownLayerNameListsTheLayers) {
  ProgressiveOptions options = Options();
  options.layers = {{"fc1.weight", {8, 4}}, {"fc9.weight", {8}}};
  std::vector<StepReport> steps;
  const auto result = Run(options, &steps);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(result.status().message(),
            "layers[1].name: no quantizable layer 'fc9.weight'; layers are: "
            "fc0.weight, fc1.weight, fc2.weight");
  EXPECT_TRUE(steps.empty());
}

TEST_F(ProgressiveTest, ResolveCandidateBits) {
  ProgressiveOptions options = Options();
  options.layers = {{"fc2.weight", {2, 4, 4, 8}}};
  options.pin_first_last = true;
  const auto bits = ResolveCandidateBits(options, *model_);
  ASSERT_TRUE(bits.ok()) << bits.status();
  // fc2 is last: its own list, pinned at its highest.
  EXPECT_EQ(bits->per_layer,
            (std::vector<std::vector<int>>{{8}, {8, 6, 4, 2}, {8}}));
  EXPECT_TRUE(bits->pinned(0));
  EXPECT_FALSE(bits->pinned(1));
  EXPECT_FALSE(bits->all_pinned());
  EXPECT_EQ(bits->Highest(), Policy({8, 8, 8}));
  EXPECT_EQ(bits->Lowest(), Policy({8, 2, 8}));
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

TEST(ValidateOptionsTest, AcceptsFloatAndLowActivationBits) {
  ProgressiveOptions options;
  options.bit_levels = {8, 4};
  options.budget = {Budget::Kind::kBops, 1e6};
  for (int bits : {2, 8, 32}) {
    options.activation_bits = bits;
    EXPECT_TRUE(ValidateOptions(options).ok()) << bits;
  }
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
                  "size_fraction"},
        BadOption{"bytes",
                  [](ProgressiveOptions* o) {
                    o->budget = {Budget::Kind::kBytes, 0};
                  },
                  "budget.size_bytes: must be positive"},
        BadOption{"bops",
                  [](ProgressiveOptions* o) {
                    o->budget = {Budget::Kind::kBops, -1};
                  },
                  "budget.bops: must be positive"},
        BadOption{"layer_without_name",
                  [](ProgressiveOptions* o) {
                    o->layers = {{"", {8}}};
                  },
                  "layers[0].name: required"},
        BadOption{"layer_without_bits",
                  [](ProgressiveOptions* o) {
                    o->layers = {{"fc0.weight", {8}}, {"fc1.weight", {}}};
                  },
                  "layers[1].bits: no candidate bit-width"},
        BadOption{"layer_bits_9",
                  [](ProgressiveOptions* o) {
                    o->layers = {{"fc0.weight", {8, 9}}};
                  },
                  "layers[0].bits: 9 is outside 1..8"},
        BadOption{"layer_twice",
                  [](ProgressiveOptions* o) {
                    o->layers = {{"a", {8}}, {"b", {4}}, {"a", {6}}};
                  },
                  "layers[2].name: 'a' is listed twice (also layers[0])"},
        BadOption{"activation_bits_1",
                  [](ProgressiveOptions* o) { o->activation_bits = 1; },
                  "activation_bits: must be in 2..8 or 32 (float), got 1"},
        BadOption{"activation_bits_16",
                  [](ProgressiveOptions* o) { o->activation_bits = 16; },
                  "activation_bits"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace mixq::search
