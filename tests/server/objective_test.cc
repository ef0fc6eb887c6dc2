// The job's objective: label-free jobs distil from the FP32 model's outputs
// (spec.objective, ResolveObjective), through PrepareJob and through a real
// server on 127.0.0.1:0; and fixed-batch exports are refused at submit with
// how to export them with a dynamic batch.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/mixq.grpc.pb.h"
#include "server/job_spec.h"
#include "server/server.h"
#include "tests/support/npy.h"
#include "tests/support/onnx_builder.h"
#include "tests/support/onnx_mlp.h"
#include "tests/support/server_testing.h"

namespace mixq::server {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kFeatures = 12;
constexpr int64_t kClasses = 3;
constexpr int64_t kSamples = 200;
constexpr int64_t kValSamples = 40;

// The tiny MLP job of the server tests without its labels.
v1::SubmitJobRequest LabelFreeRequest() {
  v1::SubmitJobRequest request = testing::TinyJobRequest();
  request.mutable_spec()->clear_labels();
  return request;
}

JobFiles FilesOf(const v1::JobSpec& spec) {
  JobFiles files;
  files.model = spec.model().content();
  files.inputs = spec.inputs().content();
  files.labels = spec.labels().content();
  files.val_inputs = spec.val_inputs().content();
  files.val_labels = spec.val_labels().content();
  return files;
}

void ExpectInvalid(const absl::Status& status, const std::string& substring) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(substring));
}

TEST(ResolveObjectiveTest, DefaultsByLabelsAndChecksTheName) {
  v1::JobSpec spec;
  absl::StatusOr<engine::Objective> objective = ResolveObjective(spec);
  ASSERT_TRUE(objective.ok()) << objective.status();
  EXPECT_EQ(*objective, engine::Objective::kDistill);
  spec.mutable_labels()->set_filename("y.npy");
  objective = ResolveObjective(spec);
  ASSERT_TRUE(objective.ok()) << objective.status();
  EXPECT_EQ(*objective, engine::Objective::kCrossEntropy);
  spec.set_objective("distill");
  objective = ResolveObjective(spec);
  ASSERT_TRUE(objective.ok()) << objective.status();
  EXPECT_EQ(*objective, engine::Objective::kDistill);
  spec.set_objective("mse");
  ExpectInvalid(ResolveObjective(spec).status(),
                "spec.objective: unknown objective 'mse'");
  spec.set_objective("cross_entropy");
  spec.clear_labels();
  ExpectInvalid(ResolveObjective(spec).status(),
                "spec.objective: cross_entropy needs spec.labels");
}

TEST(PrepareJobObjectiveTest, LabelFreeJobDistilsFromTheFp32Outputs) {
  const v1::SubmitJobRequest request = LabelFreeRequest();
  absl::StatusOr<PreparedJob> job =
      PrepareJob(request.spec(), FilesOf(request.spec()));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->objective, engine::Objective::kDistill);
  EXPECT_FALSE(job->calib.has_labels());
  EXPECT_FALSE(job->calib.distill());  // submitting runs no model
  ASSERT_TRUE(AttachTeachers(&*job).ok());
  for (const search::LabeledData* data :
       {&job->calib, &job->train, &job->val}) {
    ASSERT_TRUE(data->distill());
    EXPECT_EQ(data->teacher.dim(0), data->size());
    EXPECT_EQ(data->teacher.dim(1), kClasses);
  }
}

// A model whose output is far larger than its input: x [N, 12] through a
// Gemm, tiled to [N, 12 * 2^20] (48 MiB per sample). Its FP32 outputs for the
// job's 200 samples would take 9.4 GiB: refused at submit, before any is
// computed.
TEST(PrepareJobObjectiveTest, TeacherOutputsBeyondTheLimitAreRefusedAtSubmit) {
  constexpr int64_t kRepeats = int64_t{1} << 20;
  testing::OnnxBuilder b;
  b.Input("x", {-1, kFeatures}).Output("y");
  b.Initializer("w", {kFeatures, kFeatures},
                std::vector<float>(kFeatures * kFeatures, 0.1f));
  b.IntInitializer("repeats", {1, kRepeats});
  b.Node("MatMul", {"x", "w"}, {"h"}, "fc");
  b.Node("Tile", {"h", "repeats"}, {"y"}, "tile");
  v1::SubmitJobRequest request = LabelFreeRequest();
  request.mutable_spec()->mutable_model()->set_content(b.Bytes());
  const absl::StatusOr<PreparedJob> job =
      PrepareJob(request.spec(), FilesOf(request.spec()));
  EXPECT_EQ(job.status().code(), absl::StatusCode::kResourceExhausted)
      << job.status();
  EXPECT_THAT(std::string(job.status().message()),
              HasSubstr("spec.max_samples: the distill objective keeps"));
  // Fewer samples fit: 40 x 48 MiB is under the 2 GiB limit.
  request.mutable_spec()->set_max_samples(40);
  request.mutable_spec()->set_calib_size(8);
  const absl::StatusOr<PreparedJob> fewer =
      PrepareJob(request.spec(), FilesOf(request.spec()));
  EXPECT_TRUE(fewer.ok()) << fewer.status();
}

TEST(PrepareJobObjectiveTest, ValidationInputsAloneAreEnoughWhenDistilling) {
  v1::SubmitJobRequest request = LabelFreeRequest();
  const search::LabeledData val =
      testing::MakeTeacherData(kValSamples, kFeatures, kClasses, 9);
  request.mutable_spec()->mutable_val_inputs()->set_content(
      testing::NpyFloat32(val.inputs));
  absl::StatusOr<PreparedJob> job =
      PrepareJob(request.spec(), FilesOf(request.spec()));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->val.size(), kValSamples);
  EXPECT_FALSE(job->val.has_labels());
  // Cross-entropy still needs both validation files.
  request.mutable_spec()->set_objective("cross_entropy");
  request.mutable_spec()->mutable_labels()->set_content(testing::NpyInt64(
      testing::MakeTeacherData(kSamples, kFeatures, kClasses, 2).labels));
  ExpectInvalid(PrepareJob(request.spec(), FilesOf(request.spec())).status(),
                "spec.val_labels: required with spec.val_inputs");
}

// A graph whose Reshape spells out the batch's element count only runs at
// the batch its input declares.
std::string FixedBatchOnnx() {
  testing::OnnxBuilder b;
  b.Input("x", {4, 3, 4}).Output("y");
  b.IntInitializer("target", {2, 24});
  b.Node("Reshape", {"x", "target"}, {"flat"});
  b.Initializer("w", {24, kClasses}, std::vector<float>(24 * kClasses, 0.1f));
  b.Node("MatMul", {"flat", "w"}, {"y"});
  return b.Bytes();
}

TEST(PrepareJobObjectiveTest, FixedBatchExportIsRefusedWithHowToFixIt) {
  auto model = engine::Model::FromOnnxBytes(FixedBatchOnnx());
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_EQ((*model)->fixed_batch(), 4);
  v1::SubmitJobRequest request = LabelFreeRequest();
  request.mutable_spec()->mutable_model()->set_content(FixedBatchOnnx());
  const absl::Status status =
      PrepareJob(request.spec(), FilesOf(request.spec())).status();
  ExpectInvalid(status, "spec.model: the graph only runs at batch 4");
  EXPECT_THAT(std::string(status.message()), HasSubstr("dynamic_axes"));
  // A model that runs at any batch reports none.
  auto dynamic =
      engine::Model::FromOnnxBytes(testing::MakeMlpOnnx({kFeatures, 3}, 1));
  ASSERT_TRUE(dynamic.ok());
  EXPECT_EQ((*dynamic)->fixed_batch(), -1);
}

// A real server and a gRPC stub.
class ObjectiveServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_dir_ =
        std::filesystem::path(::testing::TempDir()) /
        absl::StrCat(
            "mixq_objective_",
            ::testing::UnitTest::GetInstance()->current_test_info()->name(),
            "_", getpid());
    std::filesystem::remove_all(data_dir_);
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.data_dir = data_dir_.string();
    options.workers = 1;
    auto server = Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = v1::Mixq::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                            grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    stub_.reset();
    server_.reset();
    std::filesystem::remove_all(data_dir_);
  }

  v1::Job RunToEnd(const v1::SubmitJobRequest& request) {
    const std::string id = testing::SubmitAndWatch(*stub_, request);
    grpc::ClientContext context;
    v1::GetJobRequest get;
    get.set_job_id(id);
    v1::Job job;
    const grpc::Status status = stub_->GetJob(&context, get, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }

  std::filesystem::path data_dir_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<v1::Mixq::Stub> stub_;
};

TEST_F(ObjectiveServerTest, LabelFreeJobSucceedsReportingTheDistance) {
  const v1::Job job = RunToEnd(LabelFreeRequest());
  ASSERT_EQ(job.state(), v1::SUCCEEDED) << job.error();
  const v1::Policy& final_policy = job.final_policy();
  EXPECT_TRUE(std::isfinite(final_policy.loss()));
  EXPECT_GE(final_policy.loss(), 0.0);
  EXPECT_TRUE(std::isnan(final_policy.accuracy()));
  // The default hold-out has no labels either: a distance, no accuracy.
  EXPECT_TRUE(std::isfinite(final_policy.val_loss()));
  EXPECT_TRUE(std::isnan(final_policy.val_accuracy()));
  // Its Pareto front ranks by that distance instead of being empty.
  grpc::ClientContext context;
  v1::GetParetoFrontRequest request;
  request.set_job_id(job.id());
  v1::GetParetoFrontResponse front;
  ASSERT_TRUE(stub_->GetParetoFront(&context, request, &front).ok());
  ASSERT_GT(front.policies_size(), 0);
  for (const v1::Policy& policy : front.policies()) {
    EXPECT_TRUE(std::isfinite(policy.val_loss())) << policy.policy_id();
  }
}

TEST_F(ObjectiveServerTest, ValidationLabelsAddTheAccuracy) {
  v1::SubmitJobRequest request = LabelFreeRequest();
  request.mutable_spec()->set_objective("distill");
  const search::LabeledData val =
      testing::MakeTeacherData(kValSamples, kFeatures, kClasses, 9);
  request.mutable_spec()->mutable_val_inputs()->set_content(
      testing::NpyFloat32(val.inputs));
  request.mutable_spec()->mutable_val_labels()->set_content(
      testing::NpyInt64(val.labels));
  const v1::Job job = RunToEnd(request);
  ASSERT_EQ(job.state(), v1::SUCCEEDED) << job.error();
  EXPECT_TRUE(std::isnan(job.final_policy().accuracy()));
  EXPECT_TRUE(std::isfinite(job.final_policy().val_loss()));
  EXPECT_GE(job.final_policy().val_accuracy(), 0.0);
  EXPECT_LE(job.final_policy().val_accuracy(), 1.0);
}

TEST_F(ObjectiveServerTest, EvaluatePolicyReportsTheDistance) {
  v1::EvaluatePolicyRequest request;
  *request.mutable_spec() = LabelFreeRequest().spec();
  request.set_default_bits(2);
  grpc::ClientContext context;
  v1::EvaluatePolicyResponse response;
  const grpc::Status status =
      stub_->EvaluatePolicy(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  // FP32 against itself: no distance; 2-bit weights move the outputs.
  EXPECT_NEAR(response.fp32_loss(), 0.0, 1e-6);
  EXPECT_GT(response.loss(), response.fp32_loss());
  EXPECT_TRUE(std::isnan(response.fp32_accuracy()));
  EXPECT_TRUE(std::isnan(response.accuracy()));
}

TEST_F(ObjectiveServerTest, SubmitRefusesAFixedBatchExport) {
  v1::SubmitJobRequest request = LabelFreeRequest();
  request.mutable_spec()->mutable_model()->set_content(FixedBatchOnnx());
  grpc::ClientContext context;
  v1::SubmitJobResponse response;
  const grpc::Status status = stub_->SubmitJob(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("only runs at batch 4"));
  EXPECT_THAT(status.error_message(), HasSubstr("dynamic_axes"));
}

TEST_F(ObjectiveServerTest, CrossEntropyWithoutLabelsIsRefusedNamingTheField) {
  v1::SubmitJobRequest request = LabelFreeRequest();
  request.mutable_spec()->set_objective("cross_entropy");
  grpc::ClientContext context;
  v1::SubmitJobResponse response;
  const grpc::Status status = stub_->SubmitJob(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("spec.objective"));
}

}  // namespace
}  // namespace mixq::server
