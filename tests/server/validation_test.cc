// Kept policies are what a user deploys: each one (every step's and the
// final) is exported, measured on a validation set the search never trains
// or scores on, ranked by that measurement, and downloadable by its
// policy_id; `mixq-run --labels` on a downloaded file prints exactly the
// validation figures the service reported for it. A real server on
// 127.0.0.1:0, the demo MLP on Fashion-MNIST.
#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/dataset.h"
#include "engine/npy.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/mixq.grpc.pb.h"
#include "server/export.h"
#include "server/server.h"
#include "tests/support/server_testing.h"
#include "tests/support/subprocess.h"
#include "tests/support/test_dir.h"
#include "util/file.h"

namespace mixq {
namespace {

using ::testing::HasSubstr;

constexpr char kFashionDir[] = "/usr/share/datasets/fashion-mnist";
constexpr char kMixqRun[] = MIXQ_RUN_PATH;
constexpr float kMean = 0.2860f;
constexpr float kStd = 0.3530f;
// Validation files: t10k samples [kValBegin, kValEnd), never among the
// job's first kSamples.
constexpr int kSamples = 1500;
constexpr int kValBegin = 8000;
constexpr int kValEnd = 8600;

std::string FashionPath(const char* file) {
  return absl::StrCat(kFashionDir, "/", file);
}

class ValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server::ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.data_dir = dir_.Path("data");
    auto server = server::Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(64 << 20);
    stub_ = v1::Mixq::NewStub(
        grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                  grpc::InsecureChannelCredentials(), args));
  }
  void TearDown() override {
    stub_.reset();
    server_.reset();
  }

  // The demo MLP on the first kSamples t10k images, 4 average bits.
  v1::SubmitJobRequest DemoJob() const {
    v1::SubmitJobRequest request;
    v1::JobSpec* spec = request.mutable_spec();
    const auto read = [](const std::string& path) {
      absl::StatusOr<std::string> bytes = ReadFile(path);
      EXPECT_TRUE(bytes.ok()) << bytes.status();
      return bytes.ok() ? *bytes : "";
    };
    spec->mutable_model()->set_content(
        read(absl::StrCat(MIXQ_SOURCE_DIR, "/tests/fixtures/mlp_fmnist.onnx")));
    spec->mutable_inputs()->set_content(
        read(FashionPath("t10k-images-idx3-ubyte.gz")));
    spec->mutable_labels()->set_content(
        read(FashionPath("t10k-labels-idx1-ubyte.gz")));
    spec->mutable_normalize()->set_mean(kMean);
    spec->mutable_normalize()->set_std(kStd);
    spec->set_max_samples(kSamples);
    spec->set_calib_size(256);
    v1::SearchOptions* search = spec->mutable_search();
    for (int b : {8, 6, 4, 2}) search->add_bits(b);
    search->mutable_budget()->set_avg_bits(4);
    search->set_candidates(4);
    search->set_finetune_steps(10);
    search->set_seed(3);
    return request;
  }

  std::string SubmitAndWait(const v1::SubmitJobRequest& request) {
    return testing::SubmitAndWatch(*stub_, request, &events_);
  }

  v1::GetResultsResponse Results(const std::string& job_id) {
    grpc::ClientContext context;
    v1::GetResultsRequest request;
    request.set_job_id(job_id);
    v1::GetResultsResponse response;
    EXPECT_TRUE(stub_->GetResults(&context, request, &response).ok());
    return response;
  }

  grpc::Status Export(const std::string& job_id, const std::string& policy_id,
                      std::string* data, std::string* filename = nullptr) {
    v1::ExportModelRequest request;
    request.set_job_id(job_id);
    request.set_policy_id(policy_id);
    v1::ExportChunk first;
    const grpc::Status status =
        testing::ReadExport(*stub_, request, data, &first);
    if (filename != nullptr) *filename = first.filename();
    return status;
  }

  // t10k samples [begin, end), normalised as the job normalises them.
  static search::LabeledData Samples(int begin, int end) {
    search::LabeledData data;
    absl::StatusOr<std::string> images =
        ReadFile(FashionPath("t10k-images-idx3-ubyte.gz"));
    absl::StatusOr<std::string> labels =
        ReadFile(FashionPath("t10k-labels-idx1-ubyte.gz"));
    EXPECT_TRUE(images.ok() && labels.ok());
    absl::StatusOr<engine::Tensor> inputs =
        engine::DecodeInputs(*images, "images");
    absl::StatusOr<std::vector<int64_t>> all_labels =
        engine::DecodeLabels(*labels, "labels");
    EXPECT_TRUE(inputs.ok() && all_labels.ok());
    data.inputs = inputs->Slice(begin, end);
    EXPECT_TRUE(engine::Normalize(kMean, kStd, &data.inputs).ok());
    EXPECT_TRUE(
        engine::ConformToModelInput({-1, 1, 28, 28}, &data.inputs).ok());
    data.labels.assign(all_labels->begin() + begin, all_labels->begin() + end);
    return data;
  }

  testing::ScopedTestDir dir_{"val"};
  std::unique_ptr<server::Server> server_;
  std::unique_ptr<v1::Mixq::Stub> stub_;
  std::vector<v1::JobEvent> events_;
};

TEST_F(ValidationTest, KeptPoliciesAreRankedByValidationAndExportExactly) {
  const std::string job_id = SubmitAndWait(DemoJob());
  const v1::GetResultsResponse results = Results(job_id);
  const v1::Job& job = results.job();
  ASSERT_EQ(job.state(), v1::SUCCEEDED) << job.error();
  // The default hold-out: the last 10 % of the 1500 samples used.
  EXPECT_EQ(job.val_samples(), 150);
  EXPECT_EQ(job.val_source(),
            "default: the last 10 % held out: samples [1350, 1500) of "
            "inputs");
  EXPECT_GT(job.fp32_val_accuracy(), 0.7);
  EXPECT_GT(job.fp32_val_loss(), 0);

  // Every kept policy has an id, an export and validation figures; no
  // candidate has any.
  std::vector<v1::Policy> kept;
  for (const v1::Step& step : results.steps()) {
    EXPECT_EQ(step.finetuned().policy_id(), absl::StrCat("step-", step.step()));
    EXPECT_FALSE(std::isnan(step.finetuned().val_accuracy()));
    kept.push_back(step.finetuned());
    for (const v1::Policy& candidate : step.candidates()) {
      EXPECT_TRUE(candidate.policy_id().empty());
      EXPECT_TRUE(std::isnan(candidate.val_accuracy()));
    }
  }
  ASSERT_TRUE(results.has_final_policy());
  EXPECT_EQ(results.final_policy().policy_id(), "final");
  kept.push_back(results.final_policy());
  ASSERT_GE(kept.size(), 3u);

  // The watch stream carried the figures and ended on the final policy.
  ASSERT_FALSE(events_.empty());
  EXPECT_EQ(events_.back().policy_id(), "final");
  EXPECT_DOUBLE_EQ(events_.back().val_accuracy(),
                   results.final_policy().val_accuracy());
  EXPECT_DOUBLE_EQ(events_.back().fp32_val_accuracy(), job.fp32_val_accuracy());
  // A watcher that comes after the end gets the same figures from the store.
  std::vector<v1::JobEvent> late;
  grpc::ClientContext late_context;
  ASSERT_TRUE(testing::WatchToEnd(*stub_, &late_context, job_id, &late).ok());
  ASSERT_EQ(late.size(), 1u);
  EXPECT_EQ(late[0].policy_id(), "final");
  EXPECT_DOUBLE_EQ(late[0].val_accuracy(),
                   results.final_policy().val_accuracy());
  EXPECT_DOUBLE_EQ(late[0].fp32_val_accuracy(), job.fp32_val_accuracy());

  // Each export, run by the engine on the held-out samples, gives exactly
  // the figures reported for it.
  const search::LabeledData val = Samples(1350, 1500);
  for (const v1::Policy& policy : kept) {
    SCOPED_TRACE(policy.policy_id());
    std::string onnx;
    ASSERT_TRUE(Export(job_id, policy.policy_id(), &onnx).ok());
    absl::StatusOr<engine::ClassifierScore> score =
        server::MeasureExport(onnx, val);
    ASSERT_TRUE(score.ok()) << score.status();
    EXPECT_EQ(score->accuracy, policy.val_accuracy());
    EXPECT_EQ(score->loss, policy.val_loss());
  }

  // mixq-run on the final export, given the job's files, normalisation and
  // held-out range, prints those same numbers.
  std::string onnx, filename;
  ASSERT_TRUE(Export(job_id, "", &onnx, &filename).ok());
  EXPECT_EQ(filename, absl::StrCat(job_id, ".qdq.onnx"));
  ASSERT_TRUE(WriteFile(dir_.Path("final.onnx"), onnx).ok());
  const testing::RunResult run = testing::RunProgram(
      kMixqRun,
      {"--model", dir_.Path("final.onnx"), "--inputs",
       FashionPath("t10k-images-idx3-ubyte.gz"), "--labels",
       FashionPath("t10k-labels-idx1-ubyte.gz"), "--normalize",
       absl::StrCat(kMean, ",", kStd), "--samples", "1350:1500"},
      dir_.path().string());
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out,
              HasSubstr(absl::StrFormat("accuracy %.17g loss %.17g samples 150",
                                        results.final_policy().val_accuracy(),
                                        results.final_policy().val_loss())));

  // best: only exportable policies, by validation accuracy.
  grpc::ClientContext best_context;
  v1::QueryBestPoliciesRequest best_request;
  best_request.set_job_id(job_id);
  best_request.set_top_k(100);
  best_request.set_max_avg_bits(8);
  v1::QueryBestPoliciesResponse best;
  ASSERT_TRUE(
      stub_->QueryBestPolicies(&best_context, best_request, &best).ok());
  ASSERT_GT(best.policies_size(), 0);
  std::set<std::string> kept_ids;
  for (const v1::Policy& policy : kept) kept_ids.insert(policy.policy_id());
  for (int i = 0; i < best.policies_size(); ++i) {
    EXPECT_TRUE(kept_ids.count(best.policies(i).policy_id()))
        << best.policies(i).policy_id();
    if (i > 0) {
      EXPECT_GE(best.policies(i - 1).val_accuracy(),
                best.policies(i).val_accuracy());
    }
  }

  // The Pareto front: kept policies by size, with the FP32 point.
  grpc::ClientContext pareto_context;
  v1::GetParetoFrontRequest pareto_request;
  pareto_request.set_job_id(job_id);
  v1::GetParetoFrontResponse pareto;
  ASSERT_TRUE(
      stub_->GetParetoFront(&pareto_context, pareto_request, &pareto).ok());
  ASSERT_GT(pareto.policies_size(), 0);
  EXPECT_DOUBLE_EQ(pareto.fp32_val_accuracy(), job.fp32_val_accuracy());
  EXPECT_DOUBLE_EQ(pareto.fp32_size_bytes(), job.fp32_size_bytes());
  EXPECT_GT(pareto.fp32_bops(), 0);
  for (int i = 0; i < pareto.policies_size(); ++i) {
    EXPECT_TRUE(kept_ids.count(pareto.policies(i).policy_id()));
    if (i > 0) {
      EXPECT_LE(pareto.policies(i - 1).size_bytes(),
                pareto.policies(i).size_bytes());
      // Larger on the front means more accurate.
      EXPECT_LT(pareto.policies(i - 1).val_accuracy(),
                pareto.policies(i).val_accuracy());
    }
  }
}

TEST_F(ValidationTest, ValidationFilesAreMeasuredAndUnknownPoliciesRefused) {
  v1::SubmitJobRequest request = DemoJob();
  const search::LabeledData raw = [] {
    // The validation files as a user has them: raw images and labels.
    search::LabeledData data;
    absl::StatusOr<std::string> images =
        ReadFile(FashionPath("t10k-images-idx3-ubyte.gz"));
    absl::StatusOr<std::string> labels =
        ReadFile(FashionPath("t10k-labels-idx1-ubyte.gz"));
    data.inputs =
        engine::DecodeInputs(*images, "images")->Slice(kValBegin, kValEnd);
    const std::vector<int64_t> all = *engine::DecodeLabels(*labels, "labels");
    data.labels.assign(all.begin() + kValBegin, all.begin() + kValEnd);
    return data;
  }();
  request.mutable_spec()->mutable_val_inputs()->set_content(
      engine::EncodeNpy(raw.inputs));
  request.mutable_spec()->mutable_val_inputs()->set_filename("val_x.npy");
  request.mutable_spec()->mutable_val_labels()->set_content(
      testing::NpyInt64(raw.labels));
  request.mutable_spec()->mutable_val_labels()->set_filename("val_y.npy");
  request.mutable_spec()->mutable_search()->set_strategy("knapsack");

  const std::string job_id = SubmitAndWait(request);
  const v1::GetResultsResponse results = Results(job_id);
  ASSERT_EQ(results.job().state(), v1::SUCCEEDED) << results.job().error();
  EXPECT_EQ(results.job().val_samples(), kValEnd - kValBegin);
  EXPECT_EQ(results.job().val_source(), "files: val_x.npy (600 samples)");
  // The stored spec names the files by SHA-256, not by their bytes.
  EXPECT_EQ(results.job().spec().val_inputs().artifact_sha256().size(), 64u);
  EXPECT_TRUE(results.job().spec().val_inputs().content().empty());

  const search::LabeledData val = Samples(kValBegin, kValEnd);
  for (const v1::Policy* policy :
       {&results.steps(1).finetuned(), &results.final_policy()}) {
    std::string onnx;
    ASSERT_TRUE(Export(job_id, policy->policy_id(), &onnx).ok());
    absl::StatusOr<engine::ClassifierScore> score =
        server::MeasureExport(onnx, val);
    ASSERT_TRUE(score.ok()) << score.status();
    EXPECT_EQ(score->accuracy, policy->val_accuracy());
  }

  std::string onnx, filename;
  ASSERT_TRUE(Export(job_id, "step-1", &onnx, &filename).ok());
  EXPECT_EQ(filename, absl::StrCat(job_id, ".step-1.qdq.onnx"));
  EXPECT_EQ(Export(job_id, "step-99", &onnx).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Export(job_id, "step-x", &onnx).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Export(job_id, std::string(1000, 's'), &onnx).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace mixq
