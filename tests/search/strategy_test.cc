// The search strategies beside the progressive one (uniform, knapsack, hawq),
// the progressive options (selection per cost saved, a fresh Fisher, landing
// on the budget, a total fine-tune budget), the knapsack oracle, scoring
// with shared prefixes (QatSession::EvaluateNeighbours), Hutchinson traces
// against the exact Hessian diagonal, and determinism across thread counts.
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "engine/loss.h"
#include "engine/model.h"
#include "engine/threads.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "search/progressive.h"
#include "search/qat.h"
#include "search/quantize.h"
#include "tests/search/search_fixture.h"
#include "tests/support/fixtures.h"
#include "tests/support/onnx_mlp.h"
#include "util/file.h"

namespace mixq::search {
namespace {

using ::testing::HasSubstr;

// The shared MLP search problem (tests/search/search_fixture.h).
class StrategyTest : public testing::MlpSearchTest {};

TEST(StrategyNameTest, ParsesEveryNameAndRefusesOthers) {
  for (Strategy s : {Strategy::kProgressive, Strategy::kUniform,
                     Strategy::kKnapsack, Strategy::kHawq, Strategy::kAuto}) {
    auto parsed = ParseStrategy(StrategyName(s));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, s);
  }
  auto bad = ParseStrategy("greedy");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("strategy: unknown 'greedy'"));
}

TEST_F(StrategyTest, UniformPutsEveryLayerAtTheHighestBitsWithinBudget) {
  std::vector<StepReport> steps;
  ProgressiveOptions options = Options(Strategy::kUniform);
  auto result = Run(options, &steps);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->final_policy.policy, Policy({4, 4, 4}));
  ASSERT_EQ(steps.size(), 2u);  // warm-up, allocation
  EXPECT_EQ(steps[1].candidates.size(), 1u);
  // 5 average bits cannot be met by 6 everywhere: 4 it is again.
  options.budget.value = 5.0;
  steps.clear();
  result = Run(options, &steps);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->final_policy.policy, Policy({4, 4, 4}));
}

TEST_F(StrategyTest, KnapsackIsTheOracleOptimumAndMeetsTheBudget) {
  for (double budget : {5.0, 4.0, 3.0}) {
    std::vector<StepReport> steps;
    ProgressiveOptions options = Options(Strategy::kKnapsack);
    options.budget.value = budget;
    auto result = Run(options, &steps);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_LE(result->final_policy.avg_bits, budget + 1e-9);
    ASSERT_EQ(steps.size(), 2u);
    const ScoredPolicy& chosen = steps[1].candidates.front();
    EXPECT_GT(chosen.omega, 0);
    // Nothing at its cost has a lower Ω.
    EXPECT_NEAR(chosen.omega, steps[1].scoring.oracle_omega,
                1e-12 * chosen.omega);
  }
}

TEST_F(StrategyTest, KnapsackBeatsUniformOnOmega) {
  // Same seed, same warm-up: the same Ω table, so the exact allocation's Ω
  // is at most uniform's at the same budget.
  std::vector<StepReport> uniform_steps, knapsack_steps;
  ProgressiveOptions options = Options(Strategy::kUniform);
  options.budget.value = 3.0;
  ASSERT_TRUE(Run(options, &uniform_steps).ok());
  options.strategy = Strategy::kKnapsack;
  ASSERT_TRUE(Run(options, &knapsack_steps).ok());
  EXPECT_LE(knapsack_steps[1].candidates[0].omega,
            uniform_steps[1].candidates[0].omega * (1 + 1e-12));
  EXPECT_LE(uniform_steps[1].scoring.oracle_omega,
            uniform_steps[1].candidates[0].omega * (1 + 1e-12));
}

// auto keeps, of uniform's and knapsack's allocations, the one of lower
// calibration loss: its candidates are those allocations (each on the
// budget, each once), ranked by calibration loss.
TEST_F(StrategyTest, AutoKeepsTheLowestCalibrationLossOfItsAllocations) {
  for (double budget : {5.0, 4.0, 3.0}) {
    SCOPED_TRACE(budget);
    ProgressiveOptions options = Options(Strategy::kAuto);
    options.budget.value = budget;
    std::vector<StepReport> auto_steps, uniform_steps, knapsack_steps;
    auto result = Run(options, &auto_steps);
    ASSERT_TRUE(result.ok()) << result.status();
    options.strategy = Strategy::kUniform;
    ASSERT_TRUE(Run(options, &uniform_steps).ok());
    options.strategy = Strategy::kKnapsack;
    ASSERT_TRUE(Run(options, &knapsack_steps).ok());

    ASSERT_EQ(auto_steps.size(), 2u);
    const std::vector<ScoredPolicy>& candidates = auto_steps[1].candidates;
    ASSERT_GE(candidates.size(), 1u);
    ASSERT_LE(candidates.size(), 2u);
    for (size_t i = 0; i < candidates.size(); ++i) {
      EXPECT_LE(candidates[i].avg_bits, budget + 1e-9);
      if (i > 0) {
        EXPECT_LE(candidates[i - 1].loss, candidates[i].loss);
      }
    }
    EXPECT_EQ(result->final_policy.policy, candidates.front().policy);
    EXPECT_EQ(auto_steps[1].finetuned.policy, candidates.front().policy);
    // The same warm-up (same seed): uniform's and knapsack's allocations are
    // among auto's, with the calibration loss they were scored with.
    for (const std::vector<StepReport>* other :
         {&uniform_steps, &knapsack_steps}) {
      const ScoredPolicy& allocation = (*other)[1].candidates.front();
      const auto it = std::find_if(
          candidates.begin(), candidates.end(),
          [&](const ScoredPolicy& c) { return c.policy == allocation.policy; });
      ASSERT_NE(it, candidates.end());
      EXPECT_EQ(it->loss, allocation.loss);
      EXPECT_LE(candidates.front().loss, allocation.loss);
    }
  }
}

TEST_F(StrategyTest, HawqAllocatesUnderTheBudget) {
  std::vector<StepReport> steps;
  ProgressiveOptions options = Options(Strategy::kHawq);
  options.hutchinson_samples = 8;
  options.budget = {Budget::Kind::kSizeFraction, 0.2};
  auto result = Run(options, &steps);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_GT(steps[1].candidates[0].omega, 0);
  const CostModel cost = CostModel::ForModel(*model_);
  EXPECT_TRUE(options.budget.IsMet(
      cost.Cost(result->final_policy.policy, options.activation_bits)));
}

TEST_F(StrategyTest, TotalFineTuneStepsGoToTheFinalFineTune) {
  for (Strategy strategy : {Strategy::kProgressive, Strategy::kKnapsack}) {
    std::vector<StepReport> steps;
    ProgressiveOptions options = Options(strategy);
    options.total_finetune_steps = 200;
    auto result = Run(options, &steps);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->finetune_steps, 200) << StrategyName(strategy);
    int spent = 0;
    for (const StepReport& step : steps) spent += step.finetune_steps;
    EXPECT_LT(spent, 200);
  }
}

TEST_F(StrategyTest, ProgressiveStepsAreNeverBelowTheOracle) {
  std::vector<StepReport> steps;
  auto result = Run(Options(Strategy::kProgressive), &steps);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_GE(steps.size(), 2u);
  for (size_t s = 1; s < steps.size(); ++s) {
    const ScoredPolicy& kept = steps[s].candidates.front();
    EXPECT_LE(steps[s].scoring.oracle_omega, kept.omega * (1 + 1e-9))
        << "step " << s;
    EXPECT_GT(steps[s].scoring.naive_node_runs, 0);
    EXPECT_GT(steps[s].scoring.node_runs, 0);
  }
  EXPECT_EQ(result->naive_node_runs > 0, true);
}

TEST_F(StrategyTest, LandingOnTheBudgetKeepsTheLeastOmegaWithinIt) {
  ProgressiveOptions options = Options(Strategy::kProgressive);
  options.budget.value = 5.0;
  options.max_layers = 3;
  std::vector<StepReport> plain_steps, landed_steps;
  auto plain = Run(options, &plain_steps);
  options.land_on_budget = true;
  auto landed = Run(options, &landed_steps);
  ASSERT_TRUE(plain.ok() && landed.ok());
  // The runs agree until the step that meets the budget; there the landed
  // run keeps the least-Ω policy within the budget below the previous one,
  // never worse (same Ω table) than the plain run's candidate.
  ASSERT_EQ(plain_steps.size(), landed_steps.size());
  ASSERT_GE(landed_steps.size(), 2u);
  const StepReport& last = landed_steps.back();
  const Policy& previous =
      landed_steps[landed_steps.size() - 2].finetuned.policy;
  EXPECT_EQ(previous, plain_steps[plain_steps.size() - 2].finetuned.policy);
  EXPECT_EQ(last.finetuned.policy, landed->final_policy.policy);
  EXPECT_LE(last.candidates.front().omega,
            plain_steps.back().candidates.front().omega * (1 + 1e-12));
  for (size_t l = 0; l < previous.size(); ++l)
    EXPECT_LE(landed->final_policy.policy[l], previous[l]);
  EXPECT_LE(landed->final_policy.avg_bits, options.budget.value + 1e-9);
}

TEST_F(StrategyTest, KnapsackGuidedCandidatesLowerOnlyTheAllocationsLayers) {
  ProgressiveOptions options = Options(Strategy::kProgressive);
  options.knapsack_guided = true;
  options.budget.value = 3.0;
  std::vector<StepReport> steps;
  auto result = Run(options, &steps);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_LE(result->final_policy.avg_bits, 3.0 + 1e-9);
  // Every candidate of a step lowers layers of the previous policy; the
  // guide never raises a layer, and the search still ends on the budget.
  for (size_t s = 1; s < steps.size(); ++s) {
    const Policy& previous = steps[s - 1].finetuned.policy;
    for (const ScoredPolicy& c : steps[s].candidates) {
      for (size_t l = 0; l < previous.size(); ++l)
        EXPECT_LE(c.policy[l], previous[l]);
    }
  }
}

TEST_F(StrategyTest, ActivationBitsAreSearchedUnderABopsBudget) {
  // 1376 MACs per sample: every layer at 2 bits with 8-bit activations is
  // 22016 BOPs, so 15000 needs the activations at 5 bits or fewer.
  ProgressiveOptions options = Options(Strategy::kProgressive);
  options.budget = {Budget::Kind::kBops, 15000};
  options.activation_levels = {4, 8, 6};
  std::vector<StepReport> steps;
  auto result = Run(options, &steps);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_LE(result->final_policy.bops, 15000);
  EXPECT_EQ(result->final_policy.activation_bits, 4);
  EXPECT_EQ(steps[0].finetuned.activation_bits, 8);  // starts at the highest
  int previous_bits = 8;
  bool lowered = false;
  for (size_t s = 1; s < steps.size(); ++s) {
    const int bits = steps[s].finetuned.activation_bits;
    EXPECT_LE(bits, previous_bits);  // never raised
    lowered |= bits < previous_bits;
    previous_bits = bits;
    for (const ScoredPolicy& c : steps[s].candidates) {
      EXPECT_EQ(c.bops,
                CostModel::ForModel(*model_).Bops(c.policy, c.activation_bits));
    }
  }
  EXPECT_TRUE(lowered);
  // Deterministic, and refused by the other strategies.
  std::vector<StepReport> again;
  auto rerun = Run(options, &again);
  ASSERT_TRUE(rerun.ok());
  EXPECT_EQ(rerun->final_policy.policy, result->final_policy.policy);
  EXPECT_EQ(rerun->final_policy.loss, result->final_policy.loss);
  options.strategy = Strategy::kKnapsack;
  EXPECT_THAT(ValidateOptions(options).message(),
              HasSubstr("activation_levels: only the progressive strategy"));
  options.strategy = Strategy::kProgressive;
  options.activation_levels = {8, 1};
  EXPECT_THAT(ValidateOptions(options).message(),
              HasSubstr("activation_levels[1]: must be in 2..8"));
}

TEST_F(StrategyTest, SelectionPerCostSavedAndFreshFisherMeetTheBudget) {
  ProgressiveOptions options = Options(Strategy::kProgressive);
  options.selection = Selection::kPerCostSaved;
  options.refresh_fisher = true;
  std::vector<StepReport> a, b;
  auto ra = Run(options, &a);
  auto rb = Run(options, &b);
  ASSERT_TRUE(ra.ok() && rb.ok()) << ra.status() << rb.status();
  EXPECT_LE(ra->final_policy.avg_bits, 4.0 + 1e-9);
  EXPECT_EQ(ra->final_policy.policy, rb->final_policy.policy);
  EXPECT_EQ(ra->final_policy.loss, rb->final_policy.loss);
}

TEST_F(StrategyTest, ThreadCountDoesNotChangeTheResult) {
  ProgressiveOptions options = Options(Strategy::kProgressive);
  std::vector<StepReport> one_steps, two_steps;
  engine::SetEngineThreads(1);
  auto one = Run(options, &one_steps);
  engine::SetEngineThreads(2);
  auto two = Run(options, &two_steps);
  engine::SetEngineThreads(0);
  ASSERT_TRUE(one.ok() && two.ok());
  ASSERT_EQ(one_steps.size(), two_steps.size());
  for (size_t s = 0; s < one_steps.size(); ++s) {
    EXPECT_EQ(one_steps[s].finetuned.policy, two_steps[s].finetuned.policy);
  }
  EXPECT_EQ(one->final_policy.policy, two->final_policy.policy);
  EXPECT_NEAR(one->final_policy.loss, two->final_policy.loss, 1e-5);
  EXPECT_EQ(one->final_policy.accuracy, two->final_policy.accuracy);
}

TEST(FisherTest, IsTheMeanSquaredBatchGradient) {
  auto model = engine::Model::FromOnnxBytes(testing::MakeMlpOnnx({8, 6, 3}, 3));
  ASSERT_TRUE(model.ok());
  const LabeledData data = testing::MakeTeacherData(64, 8, 3, 4);
  // Activations in float: each session below would calibrate its own ranges.
  QuantOptions quant;
  quant.activations.bits = kFloatBits;
  QatSession session(**model, engine::AdamOptions{}, 16, 1, quant);
  const Policy policy = {8, 8};
  auto fisher = session.FisherDiagonal(policy, data);
  ASSERT_TRUE(fisher.ok()) << fisher.status();
  // By hand: four batches of 16, squared batch gradients averaged.
  const auto& layers = (*model)->quantizable_layers();
  std::vector<engine::Tensor> expected((*model)->params().size());
  for (int b = 0; b < 4; ++b) {
    const LabeledData batch = data.Slice(16 * b, 16 * (b + 1));
    QatSession one(**model, engine::AdamOptions{}, 16, 1, quant);
    // A one-batch Fisher is the squared gradient of that batch.
    auto g2 = one.FisherDiagonal(policy, batch);
    ASSERT_TRUE(g2.ok());
    for (size_t p = 0; p < expected.size(); ++p) {
      if (b == 0) {
        expected[p] = (*g2)[p];
      } else {
        expected[p].flat() += (*g2)[p].flat();
      }
    }
  }
  for (const auto& layer : layers) {
    const int p = layer.weight_param;
    EXPECT_TRUE(
        ((*fisher)[p].flat() * 4 - expected[p].flat()).abs().maxCoeff() <
        1e-6f * std::max(1.0f, expected[p].flat().maxCoeff()));
    EXPECT_GT((*fisher)[p].flat().sum(), 0);
  }
  auto table = session.LayerOmegaTable({8, 4, 2}, &*fisher);
  for (const auto& row : table) {
    EXPECT_LT(row[0], row[1]);
    EXPECT_LT(row[1], row[2]);
  }
}

// dL/dW of the mean cross-entropy over `data` at `params` (float model).
std::vector<engine::Tensor> Gradient(const engine::Model& model,
                                     const std::vector<engine::Tensor>& params,
                                     const LabeledData& data) {
  std::vector<const engine::Tensor*> bound;
  for (const auto& p : params) bound.push_back(&p);
  engine::ForwardTrace trace;
  auto logits = model.Forward(data.inputs, bound, &trace);
  EXPECT_TRUE(logits.ok());
  engine::Tensor grad_logits;
  auto loss = engine::SoftmaxCrossEntropy(*logits, data.labels, &grad_logits);
  EXPECT_TRUE(loss.ok());
  std::vector<engine::Tensor> grads;
  EXPECT_TRUE(model.Backward(trace, bound, grad_logits, &grads).ok());
  return grads;
}

// Σ_i ∂²L/∂w_i² per quantizable layer, each by central differences of the
// backward pass along e_i.
std::vector<double> ExactTraces(const engine::Model& model,
                                const LabeledData& data) {
  const auto& layers = model.quantizable_layers();
  std::vector<double> exact(layers.size(), 0.0);
  const double h = 1e-2;
  for (size_t l = 0; l < layers.size(); ++l) {
    const int p = layers[l].weight_param;
    std::vector<engine::Tensor> params = model.initial_params();
    for (int64_t i = 0; i < params[p].size(); ++i) {
      const float w = params[p].data()[i];
      params[p].data()[i] = static_cast<float>(w + h);
      const float plus = Gradient(model, params, data)[p].data()[i];
      params[p].data()[i] = static_cast<float>(w - h);
      const float minus = Gradient(model, params, data)[p].data()[i];
      params[p].data()[i] = w;
      exact[l] += (plus - minus) / (2 * h);
    }
  }
  return exact;
}

TEST(HessianTracesTest, HutchinsonMatchesTheExactTrace) {
  // Softmax regression (one Gemm): a smooth loss, so the exact trace is
  // well defined everywhere. With a hidden ReLU layer, the last layer's
  // gradient stays continuous in every weight and its trace is checked too;
  // the first layer's is not: finite differences across the ReLU kinks add
  // curvature autograd's Hessian would not have (HessianTraces notes it).
  for (const std::vector<int64_t>& dims :
       {std::vector<int64_t>{6, 3}, std::vector<int64_t>{6, 5, 3}}) {
    auto model = engine::Model::FromOnnxBytes(testing::MakeMlpOnnx(dims, 7));
    ASSERT_TRUE(model.ok());
    const LabeledData data = testing::MakeTeacherData(96, 6, 3, 8);
    const std::vector<double> exact = ExactTraces(**model, data);
    QatSession session(**model, engine::AdamOptions{}, 32, 1);
    auto traces = session.HessianTraces(data, 2000, 11);
    ASSERT_TRUE(traces.ok()) << traces.status();
    const size_t l = exact.size() - 1;
    EXPECT_GT(exact[l], 0);
    EXPECT_NEAR((*traces)[l], exact[l], 0.05 * exact[l])
        << dims.size() << " layers";
    // Weights are restored.
    for (size_t p = 0; p < session.weights().size(); ++p) {
      EXPECT_EQ(
          (session.weights()[p].flat() - (*model)->initial_params()[p].flat())
              .abs()
              .maxCoeff(),
          0.0f);
    }
    EXPECT_EQ(session.HessianTraces(data, 0, 1).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST(EvaluateNeighboursTest, MatchesEvaluateOnTheResNetWhileSkippingPrefixes) {
  auto bytes = ReadFile(testing::FixturePath("resnet_fmnist_bn.onnx"));
  ASSERT_TRUE(bytes.ok());
  auto prepared = PrepareModel(*bytes);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  auto model = engine::Model::FromOnnxBytes(prepared->onnx);
  ASSERT_TRUE(model.ok()) << model.status();
  LabeledData data;
  data.inputs =
      testing::ReadFloatNpy(testing::FixturePath("resnet_fmnist_inputs.npy"));
  const engine::Tensor logits =
      testing::ReadFloatNpy(testing::FixturePath("resnet_fmnist_logits.npy"));
  for (int64_t i = 0; i < logits.dim(0); ++i) {
    int64_t best = 0;
    for (int64_t c = 1; c < logits.dim(1); ++c) {
      if (logits.data()[i * logits.dim(1) + c] >
          logits.data()[i * logits.dim(1) + best])
        best = c;
    }
    data.labels.push_back((best + i) % 10);  // some wrong: a loss to compare
  }
  const size_t n = (*model)->quantizable_layers().size();
  ASSERT_GE(n, 4u);
  QuantOptions quant;
  quant.activations.bits = 4;
  QatSession session(**model, engine::AdamOptions{}, 8, 1, quant);
  const Policy base(n, 8);
  ASSERT_TRUE(session.Calibrate(base, data).ok());
  std::vector<Policy> candidates;
  for (size_t l = 0; l < n; ++l) {
    Policy p = base;
    p[l] = 3;
    candidates.push_back(p);
  }
  Policy two = base;
  two[1] = 2;
  two[n - 1] = 4;
  candidates.push_back(two);
  Policy floated = base;
  floated[n / 2] = kFloatBits;
  candidates.push_back(floated);
  candidates.push_back(base);
  auto scores = session.EvaluateNeighbours(base, candidates, data);
  ASSERT_TRUE(scores.ok()) << scores.status();
  // A candidate at other activation bits: the same as Evaluate at them.
  {
    std::vector<int> act_bits(candidates.size(), 4);
    act_bits[0] = 3;
    auto with_bits =
        session.EvaluateNeighbours(base, candidates, data, act_bits);
    ASSERT_TRUE(with_bits.ok()) << with_bits.status();
    EXPECT_EQ(with_bits->candidates[1].loss, scores->candidates[1].loss);
    session.SetActivationBits(3);
    auto at_three = session.Evaluate(candidates[0], data);
    session.SetActivationBits(4);
    ASSERT_TRUE(at_three.ok());
    EXPECT_EQ(with_bits->candidates[0].loss, at_three->loss);
    EXPECT_NE(with_bits->candidates[0].loss, scores->candidates[0].loss);
  }
  for (size_t c = 0; c < candidates.size(); ++c) {
    auto full = session.Evaluate(candidates[c], data);
    ASSERT_TRUE(full.ok());
    EXPECT_EQ(scores->candidates[c].loss, full->loss)
        << PolicyToString(candidates[c]);
    EXPECT_EQ(scores->candidates[c].accuracy, full->accuracy);
  }
  auto base_full = session.Evaluate(base, data);
  EXPECT_EQ(scores->base.loss, base_full->loss);
  EXPECT_EQ(scores->naive_node_runs,
            static_cast<int64_t>(candidates.size()) * (*model)->num_nodes());
  // Later layers re-run only their suffix: well under the naive count even
  // with the base pass included.
  EXPECT_LT(scores->node_runs, scores->naive_node_runs * 3 / 4);
}

TEST(ForwardFromTest, ResumesATraceAndRefusesBadArguments) {
  auto model = engine::Model::FromOnnxBytes(testing::MakeMlpOnnx({4, 5, 3}, 2));
  ASSERT_TRUE(model.ok());
  const LabeledData data = testing::MakeTeacherData(6, 4, 3, 1);
  std::vector<engine::Tensor> params = (*model)->initial_params();
  std::vector<const engine::Tensor*> bound;
  for (const auto& p : params) bound.push_back(&p);
  engine::ForwardTrace trace;
  auto full = (*model)->Forward(data.inputs, bound, &trace);
  ASSERT_TRUE(full.ok());
  // Change the last layer's weight; resume from its first reader.
  const auto& last = (*model)->quantizable_layers().back();
  params[last.weight_param].flat() *= 0.5f;
  const int first = (*model)->FirstNodeReading(last.weight_param);
  EXPECT_GT(first, 0);
  EXPECT_LT(first, (*model)->num_nodes());
  auto resumed = (*model)->ForwardFrom(first, bound, &trace);
  ASSERT_TRUE(resumed.ok());
  auto fresh = (*model)->Forward(data.inputs, bound, nullptr);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ((resumed->flat() - fresh->flat()).abs().maxCoeff(), 0.0f);
  EXPECT_GT((resumed->flat() - full->flat()).abs().maxCoeff(), 0.0f);
  EXPECT_EQ((*model)->ForwardFrom(-1, bound, &trace).status().code(),
            absl::StatusCode::kInvalidArgument);
  engine::ForwardTrace empty;
  EXPECT_EQ((*model)->ForwardFrom(0, bound, &empty).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mixq::search
