#include "server/job_spec.h"

#include <functional>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "tests/support/npy.h"
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

TEST(PrepareJobTest, ValidJobIsPrepared) {
  const Fixture f = ValidJob();
  const auto job = PrepareJob(f.spec, f.files);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->calib.size(), 50);
  EXPECT_EQ(job->train.size(), 150);
  EXPECT_EQ(job->options.candidates, 8);  // default
  EXPECT_EQ(job->options.max_layers, 2);
  EXPECT_EQ(job->options.finetune_steps, 50);
  EXPECT_EQ(job->options.warmup_steps, 50);
  EXPECT_DOUBLE_EQ(job->options.learning_rate, 1e-4);
}

TEST(PrepareJobTest, MaxSamplesAndNormalization) {
  Fixture f = ValidJob();
  f.spec.set_max_samples(120);
  f.spec.mutable_normalize()->set_mean(1.0);
  f.spec.mutable_normalize()->set_std(2.0);
  const auto job = PrepareJob(f.spec, f.files);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->train.size(), 70);
  const search::LabeledData data =
      testing::MakeTeacherData(200, kFeatures, kClasses, 2);
  EXPECT_FLOAT_EQ(job->calib.inputs.values()[0],
                  (data.inputs.values()[0] - 1.0f) / 2.0f);
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
                "bits: 9"},
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
        BadCase{"unknown_layer",
                [](Fixture* f) {
                  v1::LayerOptions* layer =
                      f->spec.mutable_search()->add_layers();
                  layer->set_name("fc9.weight");
                  layer->add_bits(8);
                },
                "no quantizable layer 'fc9.weight'"},
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
                "BOPs"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace mixq::server
