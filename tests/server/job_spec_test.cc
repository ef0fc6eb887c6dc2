#include "server/job_spec.h"

#include <functional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "search/cost_model.h"
#include "search/quantizer.h"
#include "tests/support/npy.h"
#include "tests/support/onnx_builder.h"
#include "tests/support/onnx_mlp.h"

namespace mixq::server {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kFeatures = 12;
constexpr int64_t kClasses = 3;

struct Fixture {
  v1::JobSpec spec;
  JobFiles files;
};

Fixture ValidJob() {
  Fixture f;
  f.files.model = testing::MakeMlpOnnx({kFeatures, 16, kClasses}, 1);
  const search::LabeledData data =
      testing::MakeTeacherData(200, kFeatures, kClasses, 2);
  f.files.inputs = testing::NpyFloat32(data.inputs);
  f.files.labels = testing::NpyInt64(data.labels);
  f.spec.set_calib_size(50);
  f.spec.mutable_inputs()->set_filename("x.npy");
  f.spec.mutable_labels()->set_filename("y.npy");
  v1::SearchOptions* search = f.spec.mutable_search();
  for (int b : {8, 6, 4, 2}) search->add_bits(b);
  search->mutable_budget()->set_avg_bits(4);
  return f;
}

std::string ModelWithOp(const std::string& op_type) {
  onnx::ModelProto model;
  model.ParseFromString(testing::MakeMlpOnnx({kFeatures, 16, kClasses}, 1));
  model.mutable_graph()->mutable_node(1)->set_op_type(
      op_type);  // the first Relu
  return model.SerializeAsString();
}

// What the engine says about the submitted data is the caller's error; the
// server's own failures keep their codes.
TEST(SpecFieldErrorTest, OnlyErrorsOfTheDataBecomeInvalidArgument) {
  using Code = absl::StatusCode;
  const struct {
    Code from;
    Code to;
  } kCases[] = {
      {Code::kInvalidArgument, Code::kInvalidArgument},
      {Code::kFailedPrecondition, Code::kInvalidArgument},
      {Code::kOutOfRange, Code::kInvalidArgument},
      {Code::kNotFound, Code::kInvalidArgument},
      {Code::kAlreadyExists, Code::kInvalidArgument},
      {Code::kUnimplemented, Code::kInvalidArgument},
      {Code::kResourceExhausted, Code::kResourceExhausted},
      {Code::kInternal, Code::kInternal},
      {Code::kUnknown, Code::kUnknown},
      {Code::kDataLoss, Code::kDataLoss},
      {Code::kUnavailable, Code::kUnavailable},
      {Code::kCancelled, Code::kCancelled},
  };
  for (const auto& c : kCases) {
    const absl::Status error =
        SpecFieldError("spec.model", absl::Status(c.from, "what happened"));
    EXPECT_EQ(error.code(), c.to) << absl::StatusCodeToString(c.from);
    EXPECT_EQ(error.message(), "spec.model: what happened");
  }
}

TEST(PrepareJobTest, ValidJobIsPrepared) {
  const Fixture f = ValidJob();
  const auto job = PrepareJob(f.spec, f.files);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->calib.size(), 50);
  // The default validation set: the last 10 % of the 200 samples.
  EXPECT_EQ(job->val.size(), 20);
  EXPECT_EQ(job->train.size(), 130);
  EXPECT_EQ(job->val_source,
            "default: the last 10 % held out: samples [180, 200) of x.npy");
  EXPECT_EQ(job->options.candidates, 8);  // default
  EXPECT_EQ(job->options.max_layers, 2);
  EXPECT_EQ(job->options.finetune_steps, 50);
  EXPECT_EQ(job->options.warmup_steps, 50);
  EXPECT_DOUBLE_EQ(job->options.learning_rate, 1e-4);
}

// Input [N, 1, 6, 6] → Conv 4×1×3×3 (no padding: [N, 4, 4, 4]) → Flatten →
// Gemm 64 → 3.
std::string ConvGemmOnnx() {
  testing::OnnxBuilder b;
  b.Input("input", {-1, 1, 6, 6});
  b.Initializer("conv.weight", {4, 1, 3, 3}, std::vector<float>(36, 0.1f));
  b.Initializer("conv.bias", {4}, std::vector<float>(4, 0.0f));
  b.Initializer("fc.weight", {kClasses, 64},
                std::vector<float>(kClasses * 64, 0.01f));
  b.Initializer("fc.bias", {kClasses}, std::vector<float>(kClasses, 0.0f));
  b.Node("Conv", {"input", "conv.weight", "conv.bias"}, {"conv"});
  b.Node("Flatten", {"conv"}, {"flat"});
  testing::SetInt(b.Node("Gemm", {"flat", "fc.weight", "fc.bias"}, {"logits"}),
                  "transB", 1);
  b.Output("logits");
  return b.Bytes();
}

TEST(PrepareJobTest, ConvAndGemmCostsFromTheImportedShapes) {
  Fixture f = ValidJob();
  f.files.model = ConvGemmOnnx();
  const search::LabeledData data =
      testing::MakeTeacherData(200, 36, kClasses, 2);
  f.files.inputs = testing::NpyFloat32(data.inputs);
  f.files.labels = testing::NpyInt64(data.labels);
  v1::SearchOptions* search = f.spec.mutable_search();
  v1::LayerOptions* conv = search->add_layers();
  conv->set_name("conv.weight");
  conv->add_bits(8);  // pinned
  // The lowest reachable with the Conv pinned at 8: 576·8·8 + 192·2·8.
  search->mutable_budget()->set_bops(39936);
  const auto job = PrepareJob(f.spec, f.files);
  ASSERT_TRUE(job.ok()) << job.status();

  // The engine's MACs per sample: the Conv has 4·4·4 outputs of 1·3·3 MACs,
  // the Gemm 3 outputs of 64.
  const auto& layers = job->model->quantizable_layers();
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_EQ(layers[0].name, "conv.weight");
  EXPECT_EQ(layers[0].op_type, "Conv");
  EXPECT_EQ(layers[0].num_weights, 36);
  EXPECT_EQ(layers[0].macs, 576);
  EXPECT_EQ(layers[1].op_type, "Gemm");
  EXPECT_EQ(layers[1].num_weights, 192);
  EXPECT_EQ(layers[1].macs, 192);

  const search::CostModel cost = search::CostModel::ForModel(*job->model);
  EXPECT_EQ(cost.layer_macs(0), 576);
  EXPECT_EQ(cost.Bops({8, 8}, 8), (576 + 192) * 8 * 8);
  EXPECT_EQ(cost.Bops({8, 2}, 8), 576 * 64 + 192 * 2 * 8);  // 39936
  EXPECT_EQ(cost.Bops({8, 4}, search::kFloatBits), 576 * 8 * 32 + 192 * 4 * 32);
  // 36 + 4 + 192 + 3 parameters; the biases stay in FP32.
  EXPECT_DOUBLE_EQ(cost.Fp32SizeBytes(), 235 * 4.0);
  EXPECT_DOUBLE_EQ(cost.SizeBytes({8, 4}), 36 + 96 + 7 * 4.0);
  EXPECT_DOUBLE_EQ(cost.AvgBits({8, 4}), (36 * 8 + 192 * 4) / 228.0);

  EXPECT_EQ(job->candidate_bits.per_layer,
            (std::vector<std::vector<int>>{{8}, {8, 6, 4, 2}}));
  // One BOP less is refused, naming the lowest reachable cost.
  search->mutable_budget()->set_bops(39935);
  const auto unreachable = PrepareJob(f.spec, f.files);
  EXPECT_EQ(unreachable.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unreachable.status().message(),
              HasSubstr("spec.search.budget: budget 39935 BOPs cannot be met: "
                        "the lowest reachable cost (every layer at its lowest "
                        "candidate bits) is 39936 BOPs (activations at 8 "
                        "bits); also"));
}

TEST(ToProgressiveOptionsTest, FillsLayersPinsActivationBitsAndBudgets) {
  v1::SearchOptions search = ValidJob().spec.search();
  auto options = ToProgressiveOptions(search);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->activation_bits, 8);  // unset
  EXPECT_FALSE(options->pin_first_last);
  EXPECT_TRUE(options->layers.empty());

  v1::LayerOptions* layer = search.add_layers();
  layer->set_name("fc1.weight");
  layer->add_bits(6);
  layer->add_bits(3);
  search.set_pin_first_last(true);
  search.set_activation_bits(search::kFloatBits);
  search.mutable_budget()->set_size_bytes(5000);
  options = ToProgressiveOptions(search);
  ASSERT_TRUE(options.ok()) << options.status();
  ASSERT_EQ(options->layers.size(), 1u);
  EXPECT_EQ(options->layers[0].name, "fc1.weight");
  EXPECT_EQ(options->layers[0].bits, std::vector<int>({6, 3}));
  EXPECT_TRUE(options->pin_first_last);
  EXPECT_EQ(options->activation_bits, 32);
  EXPECT_EQ(options->budget.kind, search::Budget::Kind::kBytes);
  EXPECT_EQ(options->budget.value, 5000);

  search.mutable_budget()->set_bops(1.5e6);
  options = ToProgressiveOptions(search);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->budget.kind, search::Budget::Kind::kBops);
  EXPECT_EQ(options->budget.value, 1.5e6);
}

TEST(ToProgressiveOptionsTest, StrategyAndProgressiveOptions) {
  v1::SearchOptions search = ValidJob().spec.search();
  auto options = ToProgressiveOptions(search);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->strategy, search::Strategy::kAuto);  // unset: the default
  EXPECT_EQ(options->selection, search::Selection::kMinIndex);
  EXPECT_EQ(options->hutchinson_samples, 16);

  search.set_strategy("hawq");
  search.set_selection("per_cost_saved");
  search.set_refresh_fisher(true);
  search.set_land_on_budget(true);
  search.set_total_finetune_steps(500);
  search.set_hutchinson_samples(4);
  options = ToProgressiveOptions(search);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->strategy, search::Strategy::kHawq);
  EXPECT_TRUE(options->activation_levels.empty());
  EXPECT_EQ(options->selection, search::Selection::kPerCostSaved);
  EXPECT_TRUE(options->refresh_fisher);
  EXPECT_TRUE(options->land_on_budget);
  EXPECT_EQ(options->total_finetune_steps, 500);
  EXPECT_EQ(options->hutchinson_samples, 4);

  search.set_strategy("Knapsack");
  EXPECT_THAT(ToProgressiveOptions(search).status().message(),
              HasSubstr("spec.search.strategy: unknown 'Knapsack'"));
  search.set_strategy("knapsack");
  search.set_selection("best");
  EXPECT_THAT(ToProgressiveOptions(search).status().message(),
              HasSubstr("spec.search.selection: unknown 'best'"));
  search.set_selection("");
  search.set_total_finetune_steps(-1);
  EXPECT_THAT(ToProgressiveOptions(search).status().message(),
              HasSubstr("spec.search.total_finetune_steps"));
  search.set_total_finetune_steps(0);
  search.set_hutchinson_samples(-3);
  EXPECT_THAT(ToProgressiveOptions(search).status().message(),
              HasSubstr("spec.search.hutchinson_samples"));
  search.set_hutchinson_samples(0);
  search.set_strategy("progressive");
  search.add_activation_levels(8);
  search.add_activation_levels(4);
  options = ToProgressiveOptions(search);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->activation_levels, std::vector<int>({8, 4}));
  search.add_activation_levels(9);
  EXPECT_THAT(ToProgressiveOptions(search).status().message(),
              HasSubstr("spec.search.activation_levels[2]: must be in 2..8"));
}

// Appends spec.search.layers {name, bits}.
void AddLayer(Fixture* f, const std::string& name, std::vector<int> bits) {
  v1::LayerOptions* layer = f->spec.mutable_search()->add_layers();
  layer->set_name(name);
  for (int b : bits) layer->add_bits(b);
}

TEST(PrepareJobTest, MaxSamplesAndNormalization) {
  Fixture f = ValidJob();
  f.spec.set_max_samples(120);
  f.spec.mutable_normalize()->set_mean(1.0);
  f.spec.mutable_normalize()->set_std(2.0);
  const auto job = PrepareJob(f.spec, f.files);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->val.size(), 12);  // 10 % of the 120 samples used
  EXPECT_EQ(job->train.size(), 58);
  const search::LabeledData data =
      testing::MakeTeacherData(200, kFeatures, kClasses, 2);
  EXPECT_FLOAT_EQ(job->calib.inputs.values()[0],
                  (data.inputs.values()[0] - 1.0f) / 2.0f);
}

TEST(PrepareJobTest, ValidationSetIsNeverTrainedOrScoredOn) {
  const search::LabeledData data =
      testing::MakeTeacherData(200, kFeatures, kClasses, 2);
  {
    // val_size: the last samples, taken out of the fine-tuning set.
    Fixture f = ValidJob();
    f.spec.set_val_size(40);
    const auto job = PrepareJob(f.spec, f.files);
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->calib.size(), 50);
    EXPECT_EQ(job->train.size(), 110);
    ASSERT_EQ(job->val.size(), 40);
    EXPECT_EQ(job->val.labels, std::vector<int64_t>(data.labels.begin() + 160,
                                                    data.labels.end()));
    EXPECT_EQ(job->val.inputs.values()[0],
              data.inputs.values()[160 * kFeatures]);
    EXPECT_EQ(job->val_source, "held out: samples [160, 200) of x.npy");
  }
  {
    // Files: all samples train or calibrate; the files are normalised too.
    Fixture f = ValidJob();
    const search::LabeledData val =
        testing::MakeTeacherData(30, kFeatures, kClasses, 9);
    f.files.val_inputs = testing::NpyFloat32(val.inputs);
    f.files.val_labels = testing::NpyInt64(val.labels);
    f.spec.mutable_val_inputs()->set_filename("vx.npy");
    f.spec.mutable_val_labels()->set_filename("vy.npy");
    f.spec.mutable_normalize()->set_mean(1.0);
    f.spec.mutable_normalize()->set_std(2.0);
    const auto job = PrepareJob(f.spec, f.files);
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->train.size(), 150);
    ASSERT_EQ(job->val.size(), 30);
    EXPECT_EQ(job->val.labels, val.labels);
    EXPECT_FLOAT_EQ(job->val.inputs.values()[0],
                    (val.inputs.values()[0] - 1.0f) / 2.0f);
    EXPECT_EQ(job->val_source, "files: vx.npy (30 samples)");
  }
}

TEST(PrepareEvaluationTest, EvaluatesValidationFilesOnlyWhenGiven) {
  Fixture f = ValidJob();
  v1::EvaluatePolicyRequest request;
  *request.mutable_spec() = f.spec;
  auto prepared = PrepareEvaluation(request, f.files);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->job.val.size(), 0);  // no hold-out: train is measured
  EXPECT_EQ(prepared->job.train.size(), 150);
  const search::LabeledData val =
      testing::MakeTeacherData(30, kFeatures, kClasses, 9);
  f.files.val_inputs = testing::NpyFloat32(val.inputs);
  f.files.val_labels = testing::NpyInt64(val.labels);
  request.mutable_spec()->mutable_val_inputs()->set_filename("vx.npy");
  request.mutable_spec()->mutable_val_labels()->set_filename("vy.npy");
  prepared = PrepareEvaluation(request, f.files);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->job.val.size(), 30);
  // val_size holds out the last samples instead.
  request.mutable_spec()->clear_val_inputs();
  request.mutable_spec()->clear_val_labels();
  request.mutable_spec()->set_val_size(40);
  prepared = PrepareEvaluation(request, f.files);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->job.val.size(), 40);
  EXPECT_EQ(prepared->job.train.size(), 110);
}

struct BadCase {
  const char* name;
  std::function<void(Fixture*)> mutate;
  const char* message;  // a substring of the error
};

class BadJobTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadJobTest, IsInvalidArgumentNamingTheProblem) {
  Fixture f = ValidJob();
  GetParam().mutate(&f);
  const auto job = PrepareJob(f.spec, f.files);
  ASSERT_FALSE(job.ok());
  EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument)
      << job.status();
  EXPECT_THAT(job.status().message(), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadJobTest,
    ::testing::Values(
        BadCase{"not_onnx",
                [](Fixture* f) { f->files.model = "this is not a model"; },
                "spec.model"},
        BadCase{"unsupported_op",
                [](Fixture* f) { f->files.model = ModelWithOp("Hardmax"); },
                "Hardmax"},
        BadCase{"bits_9",
                [](Fixture* f) { f->spec.mutable_search()->set_bits(0, 9); },
                "spec.search.bits: 9 is outside 1..8"},
        BadCase{"bits_0",
                [](Fixture* f) { f->spec.mutable_search()->set_bits(3, 0); },
                "bits: 0"},
        BadCase{"no_bits",
                [](Fixture* f) { f->spec.mutable_search()->clear_bits(); },
                "bits"},
        BadCase{"no_budget",
                [](Fixture* f) { f->spec.mutable_search()->clear_budget(); },
                "budget"},
        BadCase{"budget_below_lowest",
                [](Fixture* f) {
                  f->spec.mutable_search()->mutable_budget()->set_avg_bits(1.5);
                },
                "cannot be met"},
        BadCase{"label_count_mismatch",
                [](Fixture* f) {
                  f->files.labels =
                      testing::NpyInt64(std::vector<int64_t>(199, 0));
                },
                "199 labels"},
        BadCase{"input_shape_mismatch",
                [](Fixture* f) {
                  f->files.inputs =
                      testing::NpyFloat32(engine::Tensor({200, kFeatures + 1}));
                },
                "spec.inputs"},
        BadCase{"label_out_of_range",
                [](Fixture* f) {
                  std::vector<int64_t> labels(200, 0);
                  labels[7] = kClasses;
                  f->files.labels = testing::NpyInt64(labels);
                },
                "label 3 at index 7"},
        BadCase{"garbage_inputs",
                [](Fixture* f) { f->files.inputs = "garbage"; }, "spec.inputs"},
        BadCase{"calib_too_large",
                [](Fixture* f) { f->spec.set_calib_size(200); },
                "spec.calib_size"},
        BadCase{"calib_missing", [](Fixture* f) { f->spec.set_calib_size(0); },
                "spec.calib_size"},
        BadCase{"calib_leaves_nothing_after_the_default_hold_out",
                [](Fixture* f) { f->spec.set_calib_size(180); },
                "spec.calib_size: 180 calibration and 20 (default 10 %) "
                "validation samples leave no fine-tuning samples"},
        BadCase{"val_size_leaves_nothing",
                [](Fixture* f) { f->spec.set_val_size(150); },
                "spec.val_size: 50 calibration and 150 validation samples"},
        BadCase{"val_size_negative",
                [](Fixture* f) { f->spec.set_val_size(-1); },
                "spec.val_size: must not be negative"},
        BadCase{"val_inputs_without_labels",
                [](Fixture* f) {
                  f->spec.mutable_val_inputs()->set_filename("vx.npy");
                  f->files.val_inputs = f->files.inputs;
                },
                "spec.val_labels: required with spec.val_inputs"},
        BadCase{"val_files_and_val_size",
                [](Fixture* f) {
                  f->spec.mutable_val_inputs()->set_filename("vx.npy");
                  f->spec.mutable_val_labels()->set_filename("vy.npy");
                  f->files.val_inputs = f->files.inputs;
                  f->files.val_labels = f->files.labels;
                  f->spec.set_val_size(10);
                },
                "spec.val_size: give either validation files"},
        BadCase{"val_label_count_mismatch",
                [](Fixture* f) {
                  f->spec.mutable_val_inputs()->set_filename("vx.npy");
                  f->spec.mutable_val_labels()->set_filename("vy.npy");
                  f->files.val_inputs = f->files.inputs;
                  f->files.val_labels =
                      testing::NpyInt64(std::vector<int64_t>(7, 0));
                },
                "spec.val_labels: vy.npy has 7 labels but vx.npy has 200"},
        BadCase{"val_inputs_shape_mismatch",
                [](Fixture* f) {
                  f->spec.mutable_val_inputs()->set_filename("vx.npy");
                  f->spec.mutable_val_labels()->set_filename("vy.npy");
                  f->files.val_inputs =
                      testing::NpyFloat32(engine::Tensor({5, kFeatures + 1}));
                  f->files.val_labels =
                      testing::NpyInt64(std::vector<int64_t>(5, 0));
                },
                "spec.val_inputs"},
        BadCase{"val_label_out_of_range",
                [](Fixture* f) {
                  f->spec.mutable_val_inputs()->set_filename("vx.npy");
                  f->spec.mutable_val_labels()->set_filename("vy.npy");
                  f->files.val_inputs =
                      testing::NpyFloat32(engine::Tensor({5, kFeatures}));
                  f->files.val_labels = testing::NpyInt64({0, 1, 2, 3, 0});
                },
                "spec.val_labels: vy.npy: label 3 at index 3"},
        BadCase{"unknown_layer",
                [](Fixture* f) {
                  v1::LayerOptions* layer =
                      f->spec.mutable_search()->add_layers();
                  layer->set_name("fc9.weight");
                  layer->add_bits(8);
                },
                "spec.search.layers[0].name: no quantizable layer "
                "'fc9.weight'; layers are: fc0.weight, fc1.weight"},
        BadCase{"layer_bits_out_of_range",
                [](Fixture* f) {
                  v1::LayerOptions* layer =
                      f->spec.mutable_search()->add_layers();
                  layer->set_name("fc0.weight");
                  layer->add_bits(12);
                },
                "spec.search.layers[0].bits"},
        BadCase{"activation_bits",
                [](Fixture* f) {
                  f->spec.mutable_search()->set_activation_bits(1);
                },
                "activation_bits"},
        BadCase{"bops_unreachable",
                [](Fixture* f) {
                  f->spec.mutable_search()->mutable_budget()->set_bops(1);
                },
                "BOPs"},
        BadCase{"layer_twice",
                [](Fixture* f) {
                  AddLayer(f, "fc0.weight", {8, 4});
                  AddLayer(f, "fc0.weight", {8});
                },
                "spec.search.layers[1].name: 'fc0.weight' is listed twice "
                "(also layers[0])"},
        BadCase{"layer_without_bits",
                [](Fixture* f) { AddLayer(f, "fc1.weight", {}); },
                "spec.search.layers[0].bits: no candidate bit-width"},
        BadCase{"layer_without_name", [](Fixture* f) { AddLayer(f, "", {8}); },
                "spec.search.layers[0].name: required"},
        BadCase{"activation_bits_zero_is_not_unset",
                [](Fixture* f) {
                  f->spec.mutable_search()->set_activation_bits(0);
                },
                "spec.search.activation_bits: must be in 2..8 or 32"},
        BadCase{"all_pinned_budget_unmet",
                [](Fixture* f) {
                  AddLayer(f, "fc0.weight", {8});
                  AddLayer(f, "fc1.weight", {6});
                },
                "spec.search.layers: every quantizable layer is pinned, and "
                "budget 4 average weight bits cannot be met"},
        BadCase{"pin_first_last_pins_both_layers",
                [](Fixture* f) {
                  f->spec.mutable_search()->set_pin_first_last(true);
                },
                "spec.search.layers: every quantizable layer is pinned"},
        BadCase{"size_bytes_zero",
                [](Fixture* f) {
                  f->spec.mutable_search()->mutable_budget()->set_size_bytes(0);
                },
                "spec.search.budget.size_bytes: must be positive"},
        BadCase{"size_bytes_unreachable",
                [](Fixture* f) {
                  f->spec.mutable_search()->mutable_budget()->set_size_bytes(
                      100);
                },
                "spec.search.budget: budget 100 bytes cannot be met"},
        BadCase{"bops_negative",
                [](Fixture* f) {
                  f->spec.mutable_search()->mutable_budget()->set_bops(-5);
                },
                "spec.search.budget.bops: must be positive"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace mixq::server
