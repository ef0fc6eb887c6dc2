// From FP32 ONNX to QDQ ONNX: BN folding and node naming (PrepareModel),
// activation quantization in QatSession (calibration, fake quantization,
// QAT), and ExportQuantized — whose file mixq's engine must re-import and
// run to the same outputs as the fake-quantized session, within 1e-5.
#include "search/quantize.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "search/activation_quant.h"
#include "search/evaluate.h"
#include "search/qat.h"
#include "search/qdq_export.h"
#include "tests/support/fixtures.h"
#include "tests/support/onnx_mlp.h"
#include "util/file.h"
#include "util/status_macros.h"

namespace mixq::search {
namespace {

using ::testing::HasSubstr;

constexpr float kReproduceTolerance = 1e-5f;

std::string ReadOrDie(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFile(path);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.ok() ? *bytes : "";
}

// The model imported from PrepareModel's bytes, with them.
struct Prepared {
  PreparedModel prepared;
  std::unique_ptr<engine::Model> model;
};

Prepared PrepareOrDie(const std::string& onnx) {
  Prepared p;
  absl::StatusOr<PreparedModel> prepared = PrepareModel(onnx);
  EXPECT_TRUE(prepared.ok()) << prepared.status();
  if (!prepared.ok()) return p;
  p.prepared = *prepared;
  absl::StatusOr<std::unique_ptr<engine::Model>> model =
      engine::Model::FromOnnxBytes(p.prepared.onnx);
  EXPECT_TRUE(model.ok()) << model.status();
  if (model.ok()) p.model = *std::move(model);
  return p;
}

LabeledData Unlabelled(const engine::Tensor& inputs) {
  LabeledData data;
  data.inputs = inputs;
  data.labels.assign(inputs.dim(0), 0);
  return data;
}

float MaxAbsDiff(const engine::Tensor& a, const engine::Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  if (a.shape() != b.shape()) return INFINITY;
  return (a.flat() - b.flat()).abs().maxCoeff();
}

// Exports the session under `policy`, re-imports the file and expects the
// same outputs as the session's fake-quantized forward pass. A policy with a
// layer at 4 bits or fewer packs it (INT4/UINT4, opset 21), which onnx
// 1.12's checker cannot read; the re-import validates it instead.
void ExpectExportReproduces(const Prepared& p, QatSession* session,
                            const Policy& policy,
                            const engine::Tensor& inputs) {
  absl::StatusOr<QuantizedModel> quantized =
      ExportQuantized(p.prepared.onnx, *p.model, *session, policy);
  ASSERT_TRUE(quantized.ok()) << quantized.status();
  const bool packs = std::any_of(policy.begin(), policy.end(), [](int bits) {
    return bits <= kMaxPackedWeightBits;
  });
  EXPECT_EQ(CheckOnnxModel(quantized->onnx).ok(), !packs);
  absl::StatusOr<std::unique_ptr<engine::Model>> reimported =
      engine::Model::FromOnnxBytes(quantized->onnx);
  ASSERT_TRUE(reimported.ok()) << reimported.status();
  std::vector<const engine::Tensor*> params;
  for (const engine::Tensor& t : (*reimported)->initial_params()) {
    params.push_back(&t);
  }
  absl::StatusOr<engine::Tensor> deployed =
      (*reimported)->Forward(inputs, params, nullptr);
  ASSERT_TRUE(deployed.ok()) << deployed.status();
  absl::StatusOr<engine::Tensor> simulated = session->Predict(policy, inputs);
  ASSERT_TRUE(simulated.ok()) << simulated.status();
  const float scale = std::max(1.0f, simulated->flat().abs().maxCoeff());
  EXPECT_LE(MaxAbsDiff(*deployed, *simulated), kReproduceTolerance * scale)
      << "policy " << PolicyToString(policy);
}

TEST(PrepareModelTest, FoldsBatchNormAndNamesEveryNode) {
  const Prepared p =
      PrepareOrDie(ReadOrDie(testing::FixturePath("resnet_fmnist_bn.onnx")));
  ASSERT_NE(p.model, nullptr);
  EXPECT_EQ(p.prepared.folded_batch_norms, 8);
  EXPECT_TRUE(p.prepared.unfolded_batch_norms.empty());
  for (const engine::QuantizableLayer& layer : p.model->quantizable_layers()) {
    EXPECT_FALSE(layer.node_name.empty()) << layer.name;
  }
}

// Folding reads attributes and initializers, so the model is validated
// first: a BatchNormalization's infinite epsilon would otherwise fold into
// finite weights (scale / sqrt(inf) = 0) and escape the validator.
TEST(PrepareModelTest, ValidatesBeforeFolding) {
  onnx::ModelProto model;
  ASSERT_TRUE(model.ParseFromString(
      ReadOrDie(testing::FixturePath("resnet_fmnist_bn.onnx"))));
  onnx::NodeProto* bn = nullptr;
  for (onnx::NodeProto& node : *model.mutable_graph()->mutable_node()) {
    if (node.op_type() == "BatchNormalization") bn = &node;
  }
  ASSERT_NE(bn, nullptr);
  for (onnx::AttributeProto& attr : *bn->mutable_attribute()) {
    if (attr.name() == "epsilon") {
      attr.set_f(std::numeric_limits<float>::infinity());
    }
  }
  const absl::StatusOr<PreparedModel> prepared =
      PrepareModel(model.SerializeAsString());
  EXPECT_EQ(prepared.status().code(), absl::StatusCode::kInvalidArgument)
      << prepared.status();
  EXPECT_THAT(std::string(prepared.status().message()),
              ::testing::HasSubstr(
                  absl::StrCat("attribute 'epsilon' of node '", bn->name(),
                               "' (BatchNormalization) is inf")));
}

TEST(PrepareModelTest, NotOnnxIsInvalidArgument) {
  EXPECT_EQ(PrepareModel("definitely not a model").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ActivationQuantTest, CalibrationFindsTheFirstLayersInputRange) {
  const Prepared p = PrepareOrDie(testing::MakeMlpOnnx({6, 8, 4}, /*seed=*/3));
  ASSERT_NE(p.model, nullptr);
  const LabeledData data = testing::MakeTeacherData(64, 6, 4, /*seed=*/5);
  QatSession session(*p.model, engine::AdamOptions{}, 16, 1);
  ASSERT_TRUE(session.Calibrate({8, 8}, data).ok());
  const QuantParams* first = session.activations().params(0);
  ASSERT_NE(first, nullptr);
  // Asymmetric 8-bit over [min, max] of the inputs (which straddle 0).
  const float lo = data.inputs.flat().minCoeff();
  const float hi = data.inputs.flat().maxCoeff();
  ASSERT_LT(lo, 0.0f);
  EXPECT_FLOAT_EQ(first->scale[0], (hi - lo) / 255.0f);
  EXPECT_EQ(first->zero_point[0],
            static_cast<int>(std::lround(-lo / first->scale[0])));
  ASSERT_NE(session.activations().params(1), nullptr);
  // The second layer reads ReLU outputs: zero point 0, every level >= 0.
  EXPECT_EQ(session.activations().params(1)->zero_point[0], 0);
}

// A tied weight's layer reads several inputs per pass: with dynamic ranges
// each reader's straight-through gradient follows its own input's grid, not
// the one the last reader's input left.
TEST(ActivationQuantTest, DynamicGradientUsesEachReadersOwnGrid) {
  ActivationOptions options;
  options.dynamic = true;
  ActivationQuantizer quantizer(1, options);
  quantizer.SetPolicy({8});
  quantizer.set_mode(ActivationQuantizer::Mode::kQuantize);
  const engine::Tensor wide({4}, {-4, -1, 1, 4});
  const engine::Tensor narrow({4}, {-1, -0.5f, 0.5f, 1});
  engine::Tensor out({4});
  ASSERT_TRUE(quantizer.Forward(0, wide, &out).ok());
  ASSERT_TRUE(quantizer.Forward(0, narrow, &out).ok());
  engine::Tensor grad({4}, {1, 1, 1, 1});
  quantizer.Backward(0, wide, &grad);
  EXPECT_THAT(grad.ToVector(), ::testing::ElementsAre(1, 1, 1, 1));
}

TEST(ActivationQuantTest, FewerActivationBitsCostMoreAccuracy) {
  const Prepared p = PrepareOrDie(testing::MakeMlpOnnx({6, 16, 4}, /*seed=*/3));
  ASSERT_NE(p.model, nullptr);
  const LabeledData data = testing::MakeTeacherData(256, 6, 4, /*seed=*/5);
  // Weights at 8 bits throughout; only the activation bits change.
  const Policy policy = {8, 8};
  std::vector<double> loss_gap;
  Evaluation baseline;
  for (int bits : {kFloatBits, 8, 2}) {
    QuantOptions options;
    options.activations.bits = bits;
    QatSession session(*p.model, engine::AdamOptions{}, 16, 1, options);
    ASSERT_TRUE(session.Calibrate(policy, data).ok());
    absl::StatusOr<Evaluation> e = session.Evaluate(policy, data);
    ASSERT_TRUE(e.ok()) << e.status();
    if (bits == kFloatBits) baseline = *e;
    loss_gap.push_back(std::abs(e->loss - baseline.loss));
  }
  EXPECT_EQ(loss_gap[0], 0.0);
  EXPECT_GT(loss_gap[1], 0.0);          // 8 bits changes something...
  EXPECT_LT(loss_gap[1], 0.01);         // ...but little
  EXPECT_GT(loss_gap[2], loss_gap[1]);  // 2 bits changes more
}

TEST(ActivationQuantTest, QuantizationAwareTrainingRecoversLoss) {
  const Prepared p = PrepareOrDie(testing::MakeMlpOnnx({6, 16, 4}, /*seed=*/3));
  ASSERT_NE(p.model, nullptr);
  const LabeledData data = testing::MakeTeacherData(512, 6, 4, /*seed=*/5);
  QuantOptions options;
  options.activations.bits = 3;
  engine::AdamOptions adam;
  adam.learning_rate = 3e-3f;
  QatSession session(*p.model, adam, 32, 1, options);
  const Policy policy = {3, 3};
  ASSERT_TRUE(session.Calibrate(policy, data).ok());
  const absl::StatusOr<Evaluation> before = session.Evaluate(policy, data);
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE(session.FineTune(policy, data, 200).ok());
  const absl::StatusOr<Evaluation> after = session.Evaluate(policy, data);
  ASSERT_TRUE(after.ok());
  EXPECT_LT(after->loss, before->loss * 0.9)
      << before->loss << " -> " << after->loss;
}

// Calibrates `fixture` on `inputs_fixture` with every layer at `bits`,
// checks that the export reproduces the session, and returns it;
// `original_size` gets the fixture's size.
absl::StatusOr<QuantizedModel> ExportFixtureAt(
    const std::string& fixture, int bits, size_t* original_size,
    const std::string& inputs_fixture = "resnet_fmnist_inputs.npy") {
  const std::string original = ReadOrDie(testing::FixturePath(fixture));
  *original_size = original.size();
  const Prepared p = PrepareOrDie(original);
  if (p.model == nullptr) return absl::InternalError("cannot prepare");
  const engine::Tensor inputs =
      testing::ReadFloatNpy(testing::FixturePath(inputs_fixture));
  QatSession session(*p.model, engine::AdamOptions{}, 8, 1);
  const Policy policy(p.model->quantizable_layers().size(), bits);
  MIXQ_RETURN_IF_ERROR(session.Calibrate(policy, Unlabelled(inputs)));
  ExpectExportReproduces(p, &session, policy, inputs);
  absl::StatusOr<QuantizedModel> quantized =
      ExportQuantized(p.prepared.onnx, *p.model, session, policy);
  if (quantized.ok()) {
    EXPECT_EQ(quantized->layers.size(), p.model->quantizable_layers().size());
    std::cout << bits << "-bit QDQ file of " << fixture << ": "
              << quantized->onnx.size() << " bytes, " << original.size()
              << " FP32 ("
              << static_cast<double>(quantized->onnx.size()) /
                     static_cast<double>(original.size())
              << ")\n";
  }
  return quantized;
}

// 1-D and dense-prediction exports (scripts/make_spatial_models.py): their
// quantizable layers (ConvTranspose's per-channel axis 1 included) run
// fake-quantized, and the QDQ file at 8 and 4 bits reproduces that forward.
class SpatialExportTest
    : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(SpatialExportTest, QuantizedForwardRunsAndExportReproducesIt) {
  const auto [onnx, inputs_file] = GetParam();
  const Prepared p = PrepareOrDie(ReadOrDie(testing::FixturePath(onnx)));
  ASSERT_NE(p.model, nullptr);
  const engine::Tensor inputs =
      testing::ReadFloatNpy(testing::FixturePath(inputs_file));
  const size_t layers = p.model->quantizable_layers().size();
  ASSERT_GE(layers, 2u);
  std::vector<const engine::Tensor*> params;
  for (const engine::Tensor& t : p.model->initial_params()) {
    params.push_back(&t);
  }
  const absl::StatusOr<engine::Tensor> fp32 =
      p.model->Forward(inputs, params, nullptr);
  ASSERT_TRUE(fp32.ok()) << fp32.status();
  for (int bits : {8, 4}) {
    QatSession session(*p.model, engine::AdamOptions{}, 8, 1);
    const Policy policy(layers, bits);
    ASSERT_TRUE(session.Calibrate(policy, Unlabelled(inputs)).ok());
    const absl::StatusOr<engine::Tensor> quantized =
        session.Predict(policy, inputs);
    ASSERT_TRUE(quantized.ok()) << quantized.status();
    ASSERT_TRUE(quantized->flat().isFinite().all());
    const float error = MaxAbsDiff(*quantized, *fp32);
    EXPECT_GT(error, 0.0f) << bits << " bits change nothing";
    EXPECT_LT(error, fp32->flat().abs().maxCoeff()) << bits << " bits";
    ExpectExportReproduces(p, &session, policy, inputs);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, SpatialExportTest,
    ::testing::Values(
        std::pair{"restore_deconv_opset17.onnx", "spatial_image_inputs.npy"},
        std::pair{"restore_shuffle_opset13.onnx", "spatial_image_inputs.npy"},
        std::pair{"upsample_size_opset17.onnx", "spatial_image_inputs.npy"},
        std::pair{"conv1d_avgpool_opset13.onnx", "spatial_signal_inputs.npy"}),
    [](const auto& info) {
      std::string name = info.param.first;
      return name.substr(0, name.find('.'));
    });

TEST(ExportQuantizedTest, ResNetAt8BitsReproducesAndIsAQuarterOfTheSize) {
  size_t original_size = 0;
  const absl::StatusOr<QuantizedModel> quantized =
      ExportFixtureAt("resnet_fmnist_bn.onnx", 8, &original_size);
  ASSERT_TRUE(quantized.ok()) << quantized.status();
  EXPECT_LT(static_cast<double>(quantized->onnx.size()),
            0.35 * static_cast<double>(original_size));
  EXPECT_DOUBLE_EQ(quantized->avg_bits, 8.0);
  EXPECT_EQ(quantized->activation_bits, 8);
  for (const QuantizedLayer& layer : quantized->layers) {
    EXPECT_TRUE(layer.activation_quantized) << layer.name;
    EXPECT_GT(layer.macs, 0) << layer.name;
  }
}

// Transformer exports (tests/fixtures/README.md): every MatMul/Gemm/Conv
// weight quantized per output channel (the last axis of a MatMul's), Q/DQ on
// 3-D activations, and the file re-imports to the session's outputs.
TEST(ExportQuantizedTest, TransformersAt8BitsReproduce) {
  constexpr double kTransformerSizeRatio = 0.7;
  for (const auto& [fixture, inputs] :
       {std::pair<std::string, std::string>{"encoder_opset17.onnx",
                                            "encoder_inputs.npy"},
        {"vit_opset13.onnx", "vit_inputs.npy"},
        {"vit_tanh_opset17.onnx", "vit_tanh_inputs.npy"},
        {"bert_opset13.onnx", "bert_inputs.npy"}}) {
    SCOPED_TRACE(fixture);
    size_t original_size = 0;
    const absl::StatusOr<QuantizedModel> quantized =
        ExportFixtureAt(fixture, 8, &original_size, inputs);
    ASSERT_TRUE(quantized.ok()) << quantized.status();
    // Small models: biases, LayerNorm parameters, the embeddings and a few
    // hundred nodes stay as they were (measured 0.53 to 0.64).
    EXPECT_LT(static_cast<double>(quantized->onnx.size()),
              kTransformerSizeRatio * static_cast<double>(original_size));
    for (const QuantizedLayer& layer : quantized->layers) {
      EXPECT_TRUE(layer.activation_quantized) << layer.name;
    }
  }
}

// Tied weights (tests/fixtures/tied_opset13.onnx: two encoder layers whose
// weights the exporter de-duplicated into Identity nodes, one Linear applied
// twice): each weight is exported once, one DequantizeLinear feeding every
// node that reads it, and every such node's input gets the layer's
// activation Q/DQ; the file computes what the session simulated.
TEST(ExportQuantizedTest, TiedWeightsAreExportedOnceAndEveryReaderQuantized) {
  size_t original_size = 0;
  const absl::StatusOr<QuantizedModel> quantized = ExportFixtureAt(
      "tied_opset13.onnx", 8, &original_size, "tied_inputs.npy");
  ASSERT_TRUE(quantized.ok()) << quantized.status();
  ASSERT_EQ(quantized->layers.size(), 6u);
  onnx::ModelProto proto;
  ASSERT_TRUE(proto.ParseFromString(quantized->onnx));
  std::set<std::string> initializers;
  for (const onnx::TensorProto& t : proto.graph().initializer()) {
    initializers.insert(t.name());
  }
  int weight_dequantizers = 0;
  int activation_quantizers = 0;
  for (const onnx::NodeProto& node : proto.graph().node()) {
    if (node.op_type() == "DequantizeLinear" &&
        initializers.count(node.input(0)) > 0) {
      ++weight_dequantizers;
    }
    activation_quantizers += node.op_type() == "QuantizeLinear";
  }
  EXPECT_EQ(weight_dequantizers, 6);
  // 5 weights read by two nodes each, the head by one.
  EXPECT_EQ(activation_quantizers, 11);
}

// 4-bit weights are packed two per byte: the file is at most a fifth of the
// FP32 one (here with 8-bit activation Q/DQ, which add a little).
TEST(ExportQuantizedTest, FoldedResNetAt4BitsIsAtMostAFifthOfTheSize) {
  size_t original_size = 0;
  const absl::StatusOr<QuantizedModel> quantized =
      ExportFixtureAt("resnet_fmnist_folded.onnx", 4, &original_size);
  ASSERT_TRUE(quantized.ok()) << quantized.status();
  EXPECT_LE(static_cast<double>(quantized->onnx.size()),
            0.2 * static_cast<double>(original_size));
}

struct MixedCase {
  const char* name;
  QuantScheme weight_scheme;
  Granularity granularity;
  int activation_bits;
  std::vector<int> bits;  // cycled over the layers
};

class ExportMixedTest : public ::testing::TestWithParam<MixedCase> {};

// Fine-tuned weights, mixed bits incl. binary and float layers, restricted
// activation ranges (a Clip before QuantizeLinear): the file still computes
// what the session simulated.
TEST_P(ExportMixedTest, ReproducesTheFineTunedSession) {
  const MixedCase& c = GetParam();
  const Prepared p =
      PrepareOrDie(ReadOrDie(testing::FixturePath("resnet_fmnist_bn.onnx")));
  ASSERT_NE(p.model, nullptr);
  const engine::Tensor inputs =
      testing::ReadFloatNpy(testing::FixturePath("resnet_fmnist_inputs.npy"));
  LabeledData data = Unlabelled(inputs);
  for (int64_t i = 0; i < data.size(); ++i) data.labels[i] = i % 10;
  QuantOptions options;
  options.weight_scheme = c.weight_scheme;
  options.weight_granularity = c.granularity;
  options.activations.bits = c.activation_bits;
  QatSession session(*p.model, engine::AdamOptions{}, 4, 1, options);
  Policy policy;
  for (size_t l = 0; l < p.model->quantizable_layers().size(); ++l) {
    policy.push_back(c.bits[l % c.bits.size()]);
  }
  ASSERT_TRUE(session.Calibrate(policy, data).ok());
  ASSERT_TRUE(session.FineTune(policy, data, 3).ok());
  ExpectExportReproduces(p, &session, policy, inputs);
}

INSTANTIATE_TEST_SUITE_P(Policies, ExportMixedTest,
                         ::testing::Values(MixedCase{"sym_per_channel_4bit_act",
                                                     QuantScheme::kSymmetric,
                                                     Granularity::kPerChannel,
                                                     4,
                                                     {8, 4, 2, 6}},
                                           MixedCase{"asym_per_tensor",
                                                     QuantScheme::kAsymmetric,
                                                     Granularity::kPerTensor,
                                                     8,
                                                     {3, 8, 5}},
                                           MixedCase{"binary_and_float",
                                                     QuantScheme::kSymmetric,
                                                     Granularity::kPerChannel,
                                                     6,
                                                     {1, kFloatBits, 4}},
                                           MixedCase{"weights_only",
                                                     QuantScheme::kSymmetric,
                                                     Granularity::kPerChannel,
                                                     kFloatBits,
                                                     {2, 4}}),
                         [](const ::testing::TestParamInfo<MixedCase>& info) {
                           return info.param.name;
                         });

TEST(ExportQuantizedTest, UncalibratedStaticActivationsAreAnError) {
  const Prepared p = PrepareOrDie(testing::MakeMlpOnnx({6, 8, 4}, /*seed=*/3));
  ASSERT_NE(p.model, nullptr);
  QatSession session(*p.model, engine::AdamOptions{}, 16, 1);
  const absl::StatusOr<QuantizedModel> quantized =
      ExportQuantized(p.prepared.onnx, *p.model, session, {8, 8});
  EXPECT_EQ(quantized.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(quantized.status().message()),
              HasSubstr("calibrate"));
}

TEST(EvaluatePolicyTest, ModesAgainstFp32) {
  const Prepared p = PrepareOrDie(testing::MakeMlpOnnx({6, 16, 4}, /*seed=*/3));
  ASSERT_NE(p.model, nullptr);
  const LabeledData data = testing::MakeTeacherData(512, 6, 4, /*seed=*/5);
  const LabeledData calib = data.Slice(0, 256);
  const LabeledData eval = data.Slice(256, 512);
  PolicyEvalOptions options;
  options.learning_rate = 3e-3f;
  options.finetune_steps = 150;
  std::vector<double> losses;
  for (EvalMode mode :
       {EvalMode::kDynamic, EvalMode::kStatic, EvalMode::kQat}) {
    options.mode = mode;
    absl::StatusOr<PolicyEvaluation> e =
        EvaluatePolicy(*p.model, {2, 2}, calib, eval, options);
    ASSERT_TRUE(e.ok()) << EvalModeName(mode) << ": " << e.status();
    losses.push_back(e->quantized.loss);
    EXPECT_TRUE(std::isfinite(e->quantized.loss));
    EXPECT_DOUBLE_EQ(e->cost.avg_bits, 2.0);
    EXPECT_GT(e->cost.bops, 0);
  }
  // QAT adapts the weights to the 2-bit grid: better than static PTQ.
  EXPECT_LT(losses[2], losses[1]);

  // Everything in float is the FP32 model.
  options.mode = EvalMode::kStatic;
  options.quant.activations.bits = kFloatBits;
  absl::StatusOr<PolicyEvaluation> same =
      EvaluatePolicy(*p.model, {kFloatBits, kFloatBits}, calib, eval, options);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->quantized.loss, same->fp32.loss);

  EXPECT_EQ(EvaluatePolicy(*p.model, {8}, calib, eval, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      EvaluatePolicy(*p.model, {9, 8}, calib, eval, options).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EvaluatePolicy(*p.model, {8, 8}, LabeledData(), eval, options)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseEvalMode("fast").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mixq::search
