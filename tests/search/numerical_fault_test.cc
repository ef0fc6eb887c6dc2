// Numerical faults: models the validator accepts (every weight and
// attribute finite) whose forward pass overflows float32 — weights of 3e38,
// a Gemm alpha of 1e38. Evaluating a policy (dynamic, static, qat; with
// activations quantized or in float) and every search strategy end with an
// INVALID_ARGUMENT naming the node or the logits, never an abort.
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "search/evaluate.h"
#include "search/progressive.h"
#include "search/qat.h"
#include "search/quantizer.h"
#include "tests/support/onnx_builder.h"
#include "tests/support/onnx_mlp.h"
#include "tests/support/poison_mlp.h"

namespace mixq::search {
namespace {

using ::mixq::testing::FillFloatData;
using ::mixq::testing::InitializerNamed;
using ::mixq::testing::kHugeWeight;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr int64_t kFeatures = testing::kPoisonFeatures;
constexpr int64_t kClasses = testing::kPoisonClasses;
constexpr int64_t kSamples = 64;
constexpr char kOverflow[] = "the forward pass overflowed float32";

struct PoisonCase {
  std::string name;
  std::function<void(onnx::ModelProto*)> poison;
  // What the error names when activations are quantized (the first
  // quantized layer that reads an overflowed value, or else the node whose
  // output first overflowed) and when they are not (that node).
  std::string quantized_culprit;
  std::string float_culprit;
};

void PrintTo(const PoisonCase& c, std::ostream* os) { *os << c.name; }

std::vector<PoisonCase> PoisonCases() {
  const std::string fc0 = "node '/fc0/Gemm' (Gemm) computed the first NaN";
  const std::string fc1 = "node '/fc1/Gemm' (Gemm) computed the first NaN";
  const std::string fc1_input = "node '/fc1/Gemm' (Gemm): its input holds";
  return {
      {"HugeFirstWeights",
       [](onnx::ModelProto* m) {
         FillFloatData(&InitializerNamed(m, "fc0.weight"), kHugeWeight);
       },
       fc1_input, fc0},
      {"HugeLastWeights",
       [](onnx::ModelProto* m) {
         FillFloatData(&InitializerNamed(m, "fc1.weight"), kHugeWeight);
       },
       fc1, fc1},
      {"GemmAlphaHuge",
       [](onnx::ModelProto* m) {
         testing::SetFloat(m->mutable_graph()->mutable_node(0), "alpha", 1e38f);
         FillFloatData(&InitializerNamed(m, "fc0.weight"), 1e3f);
       },
       fc1_input, fc0},
      {"GemmBetaHuge",
       [](onnx::ModelProto* m) {
         testing::SetFloat(m->mutable_graph()->mutable_node(2), "beta",
                           kHugeWeight);
         FillFloatData(&InitializerNamed(m, "fc1.bias"), -kHugeWeight);
         InitializerNamed(m, "fc1.bias").set_float_data(0, kHugeWeight);
       },
       fc1, fc1},
  };
}

class NumericalFaultTest : public ::testing::TestWithParam<PoisonCase> {
 protected:
  void SetUp() override {
    onnx::ModelProto proto = testing::PoisonableMlp();
    GetParam().poison(&proto);
    auto model = engine::Model::FromOnnxBytes(proto.SerializeAsString());
    ASSERT_TRUE(model.ok())
        << "the poison must pass validation: " << model.status();
    model_ = *std::move(model);
    data_ = testing::MakeTeacherData(kSamples, kFeatures, kClasses, 2);
  }

  void ExpectOverflow(const absl::Status& status, bool activations_quantized) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(
        std::string(status.message()),
        AllOf(HasSubstr(kOverflow),
              HasSubstr(activations_quantized ? GetParam().quantized_culprit
                                              : GetParam().float_culprit)));
  }

  std::unique_ptr<engine::Model> model_;
  LabeledData data_;
};

TEST_P(NumericalFaultTest, EvaluatePolicyFailsInEveryMode) {
  const Policy policy(model_->quantizable_layers().size(), 4);
  for (EvalMode mode :
       {EvalMode::kDynamic, EvalMode::kStatic, EvalMode::kQat}) {
    for (int activation_bits : {8, kFloatBits}) {
      SCOPED_TRACE(::testing::Message()
                   << EvalModeName(mode) << ", activation bits "
                   << activation_bits);
      PolicyEvalOptions options;
      options.mode = mode;
      options.finetune_steps = 2;
      options.batch_size = 16;
      options.quant.activations.bits = activation_bits;
      const auto result =
          EvaluatePolicy(*model_, policy, data_, data_, options);
      ASSERT_FALSE(result.ok());
      // The FP32 reference is evaluated first: its activations are float.
      ExpectOverflow(result.status(), /*activations_quantized=*/false);
    }
  }
}

TEST_P(NumericalFaultTest, QatSessionFailsWithQuantizedActivations) {
  for (bool dynamic : {false, true}) {
    SCOPED_TRACE(dynamic ? "dynamic" : "static");
    QuantOptions quant;
    quant.activations.dynamic = dynamic;
    QatSession session(*model_, engine::AdamOptions(), 16, 0, quant);
    const Policy policy(model_->quantizable_layers().size(), 4);
    ExpectOverflow(session.Evaluate(policy, data_).status(),
                   /*activations_quantized=*/true);
    ExpectOverflow(session.FineTune(policy, data_, 2),
                   /*activations_quantized=*/true);
  }
}

TEST_P(NumericalFaultTest, EveryStrategyFails) {
  for (Strategy strategy :
       {Strategy::kProgressive, Strategy::kUniform, Strategy::kKnapsack,
        Strategy::kHawq, Strategy::kAuto}) {
    SCOPED_TRACE(StrategyName(strategy));
    ProgressiveOptions options;
    options.strategy = strategy;
    options.bit_levels = {8, 4, 2};
    options.budget.value = 3;
    options.warmup_steps = 2;
    options.finetune_steps = 2;
    options.final_finetune_steps = 2;
    options.batch_size = 16;
    options.hessian_samples = 16;
    options.hutchinson_samples = 2;
    const auto result =
        RunProgressiveSearch(*model_, data_, data_, options, SearchObserver());
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument)
        << result.status();
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(kOverflow));
  }
}

INSTANTIATE_TEST_SUITE_P(Poisons, NumericalFaultTest,
                         ::testing::ValuesIn(PoisonCases()),
                         [](const ::testing::TestParamInfo<PoisonCase>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace mixq::search
