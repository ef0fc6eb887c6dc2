// Jobs started from another job's warm-up (JobSpec.from_job): the spec they
// run is the submitted one with the source's model and data filled in
// (ResolveFromJob), refused by field when it contradicts the source; on a
// real server such a job runs no warm-up and ends exactly where a job that
// did the same warm-up itself ends.
#include "server/from_job.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/mixq.grpc.pb.h"
#include "server/server.h"
#include "storage/store.h"
#include "tests/support/server_testing.h"
#include "tests/support/test_dir.h"

namespace mixq {
namespace {

using ::testing::HasSubstr;

// A source job as the store holds it: content stripped, files by SHA-256.
struct Source {
  storage::JobRecord record;
  v1::JobSpec spec;
};

Source MakeSource() {
  Source source;
  source.record.id = "job-src";
  source.record.model_sha256 = std::string(64, 'a');
  source.record.inputs_sha256 = std::string(64, 'b');
  source.record.labels_sha256 = std::string(64, 'c');
  v1::JobSpec& spec = source.spec;
  spec.mutable_model()->set_filename("cnn.onnx");
  spec.mutable_inputs()->set_filename("x.npy");
  spec.mutable_labels()->set_filename("y.npy");
  spec.mutable_normalize()->set_mean(0.5);
  spec.mutable_normalize()->set_std(0.25);
  spec.set_max_samples(900);
  spec.set_calib_size(100);
  spec.set_val_size(80);
  spec.mutable_search()->set_batch_size(32);
  spec.mutable_search()->set_learning_rate(1e-3);
  spec.mutable_search()->set_activation_bits(6);
  spec.mutable_search()->set_warmup_steps(200);
  spec.mutable_search()->set_seed(3);
  return source;
}

v1::JobSpec FromSource() {
  v1::JobSpec spec;
  spec.set_from_job("job-src");
  spec.set_name("re-run");
  for (int b : {8, 4, 2}) spec.mutable_search()->add_bits(b);
  spec.mutable_search()->mutable_budget()->set_avg_bits(2.5);
  spec.mutable_search()->set_strategy("knapsack");
  return spec;
}

TEST(ResolveFromJobTest, FillsInTheSourcesModelDataAndSession) {
  const Source source = MakeSource();
  auto resolved =
      server::ResolveFromJob(FromSource(), source.record, source.spec);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->from_job(), "job-src");
  EXPECT_EQ(resolved->name(), "re-run");
  EXPECT_EQ(resolved->model().artifact_sha256(), std::string(64, 'a'));
  EXPECT_EQ(resolved->model().filename(), "cnn.onnx");
  EXPECT_EQ(resolved->inputs().artifact_sha256(), std::string(64, 'b'));
  EXPECT_EQ(resolved->labels().artifact_sha256(), std::string(64, 'c'));
  EXPECT_EQ(resolved->normalize().std(), 0.25);
  EXPECT_EQ(resolved->max_samples(), 900);
  EXPECT_EQ(resolved->calib_size(), 100);
  EXPECT_EQ(resolved->val_size(), 80);
  const v1::SearchOptions& search = resolved->search();
  EXPECT_EQ(search.batch_size(), 32);
  EXPECT_EQ(search.learning_rate(), 1e-3);
  EXPECT_EQ(search.activation_bits(), 6);
  ASSERT_TRUE(search.has_warmup_steps());
  EXPECT_EQ(search.warmup_steps(), 0);
  // The search's own fields stay the new job's.
  EXPECT_EQ(search.strategy(), "knapsack");
  EXPECT_EQ(search.budget().avg_bits(), 2.5);
  EXPECT_EQ(search.bits_size(), 3);
  EXPECT_EQ(search.seed(), 0u);
}

TEST(ResolveFromJobTest, SessionSettingsEqualToTheSourcesAreAccepted) {
  const Source source = MakeSource();
  v1::JobSpec spec = FromSource();
  spec.mutable_search()->set_batch_size(32);
  spec.mutable_search()->set_learning_rate(1e-3);
  spec.mutable_search()->set_activation_bits(6);
  EXPECT_TRUE(server::ResolveFromJob(spec, source.record, source.spec).ok());
}

TEST(ResolveFromJobTest, RefusesWhatContradictsTheSourceByField) {
  const Source source = MakeSource();
  const struct {
    void (*edit)(v1::JobSpec*);
    const char* field;
  } cases[] = {
      {[](v1::JobSpec* s) { s->mutable_model()->set_content("x"); },
       "spec.model: must be unset with from_job"},
      {[](v1::JobSpec* s) { s->mutable_inputs()->set_filename("x"); },
       "spec.inputs:"},
      {[](v1::JobSpec* s) { s->mutable_labels()->set_server_path("/y"); },
       "spec.labels:"},
      {[](v1::JobSpec* s) { s->mutable_normalize()->set_std(1); },
       "spec.normalize:"},
      {[](v1::JobSpec* s) { s->set_max_samples(5); }, "spec.max_samples:"},
      {[](v1::JobSpec* s) { s->set_calib_size(5); }, "spec.calib_size:"},
      {[](v1::JobSpec* s) { s->mutable_val_inputs()->set_filename("v"); },
       "spec.val_inputs:"},
      {[](v1::JobSpec* s) { s->mutable_val_labels()->set_filename("v"); },
       "spec.val_labels:"},
      {[](v1::JobSpec* s) { s->set_val_size(3); }, "spec.val_size:"},
      {[](v1::JobSpec* s) { s->mutable_search()->set_warmup_steps(0); },
       "spec.search.warmup_steps: must be unset"},
      {[](v1::JobSpec* s) { s->mutable_search()->set_batch_size(64); },
       "spec.search.batch_size: differs from job job-src's"},
      {[](v1::JobSpec* s) { s->mutable_search()->set_learning_rate(1e-4); },
       "spec.search.learning_rate:"},
      {[](v1::JobSpec* s) { s->mutable_search()->set_activation_bits(8); },
       "spec.search.activation_bits:"},
  };
  for (const auto& c : cases) {
    v1::JobSpec spec = FromSource();
    c.edit(&spec);
    auto resolved = server::ResolveFromJob(spec, source.record, source.spec);
    EXPECT_EQ(resolved.status().code(), absl::StatusCode::kInvalidArgument)
        << c.field;
    EXPECT_THAT(std::string(resolved.status().message()), HasSubstr(c.field));
  }
}

class FromJobServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server::ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.data_dir = dir_.Path("data");
    auto server = server::Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = v1::Mixq::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                            grpc::InsecureChannelCredentials()));
  }

  v1::GetResultsResponse Results(const std::string& job_id) {
    grpc::ClientContext context;
    v1::GetResultsRequest request;
    request.set_job_id(job_id);
    v1::GetResultsResponse response;
    const grpc::Status status = stub_->GetResults(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  grpc::Status Submit(const v1::SubmitJobRequest& request,
                      v1::SubmitJobResponse* response) {
    grpc::ClientContext context;
    return stub_->SubmitJob(&context, request, response);
  }

  // The new search: knapsack at 2.5 bits, seed 9.
  static void NewSearch(v1::SearchOptions* search) {
    search->mutable_budget()->set_avg_bits(2.5);
    search->set_strategy("knapsack");
  }

  testing::ScopedTestDir dir_{"from-job"};
  std::unique_ptr<server::Server> server_;
  std::unique_ptr<v1::Mixq::Stub> stub_;
};

TEST_F(FromJobServerTest, SkipsTheWarmUpAndEndsWhereAFullRunEnds) {
  v1::SubmitJobRequest source = testing::TinyJobRequest();
  source.mutable_spec()->mutable_search()->set_seed(9);
  const std::string source_id = testing::SubmitAndWatch(*stub_, source);
  ASSERT_FALSE(source_id.empty());

  v1::SubmitJobRequest warm;
  warm.mutable_spec()->set_from_job(source_id);
  for (int b : {8, 4, 2}) warm.mutable_spec()->mutable_search()->add_bits(b);
  warm.mutable_spec()->mutable_search()->set_finetune_steps(5);
  warm.mutable_spec()->mutable_search()->set_seed(9);
  NewSearch(warm.mutable_spec()->mutable_search());
  const std::string warm_id = testing::SubmitAndWatch(*stub_, warm);
  ASSERT_FALSE(warm_id.empty());

  // The same search from scratch, warm-up included.
  v1::SubmitJobRequest full = source;
  NewSearch(full.mutable_spec()->mutable_search());
  const std::string full_id = testing::SubmitAndWatch(*stub_, full);
  ASSERT_FALSE(full_id.empty());

  const v1::GetResultsResponse a = Results(source_id);
  const v1::GetResultsResponse w = Results(warm_id);
  const v1::GetResultsResponse f = Results(full_id);
  ASSERT_EQ(w.job().state(), v1::SUCCEEDED) << w.job().error();
  ASSERT_EQ(f.job().state(), v1::SUCCEEDED) << f.job().error();
  // The job's spec says what it inherited.
  EXPECT_EQ(w.job().model_sha256(), a.job().model_sha256());
  EXPECT_EQ(w.job().spec().from_job(), source_id);
  EXPECT_EQ(w.job().spec().model().artifact_sha256(), a.job().model_sha256());
  EXPECT_EQ(w.job().spec().calib_size(), 50);
  EXPECT_EQ(w.job().spec().search().warmup_steps(), 0);
  EXPECT_EQ(w.job().val_samples(), a.job().val_samples());
  // No warm-up ran; the rest is the full run's, to the bit.
  ASSERT_FALSE(w.steps().empty());
  EXPECT_EQ(w.steps(0).finetune_steps(), 0);
  EXPECT_EQ(f.steps(0).finetune_steps(), 5);
  EXPECT_EQ(w.steps(0).finetuned().loss(), a.steps(0).finetuned().loss());
  ASSERT_EQ(w.steps_size(), f.steps_size());
  for (int i = 1; i < w.steps_size(); ++i) {
    EXPECT_EQ(w.steps(i).finetuned().loss(), f.steps(i).finetuned().loss());
  }
  EXPECT_EQ(w.final_policy().loss(), f.final_policy().loss());
  EXPECT_EQ(w.final_policy().val_accuracy(), f.final_policy().val_accuracy());
  EXPECT_LE(w.final_policy().avg_bits(), 2.5);
}

TEST_F(FromJobServerTest, RefusesUnknownMalformedOrContradictedSources) {
  const std::string source_id =
      testing::SubmitAndWatch(*stub_, testing::TinyJobRequest());
  ASSERT_FALSE(source_id.empty());
  const struct {
    std::string from_job;
    bool with_model;
    grpc::StatusCode code;
    const char* message;
  } cases[] = {
      {"job-nope", false, grpc::StatusCode::NOT_FOUND, "job-nope"},
      {"../etc", false, grpc::StatusCode::INVALID_ARGUMENT,
       "spec.from_job: job_id: malformed"},
      {source_id, true, grpc::StatusCode::INVALID_ARGUMENT, "spec.model:"},
  };
  for (const auto& c : cases) {
    v1::SubmitJobRequest request;
    request.mutable_spec()->set_from_job(c.from_job);
    if (c.with_model)
      *request.mutable_spec()->mutable_model() =
          testing::TinyJobRequest().spec().model();
    request.mutable_spec()->mutable_search()->add_bits(4);
    request.mutable_spec()->mutable_search()->mutable_budget()->set_avg_bits(4);
    v1::SubmitJobResponse response;
    const grpc::Status status = Submit(request, &response);
    EXPECT_EQ(status.error_code(), c.code) << c.from_job;
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
  }
}

TEST_F(FromJobServerTest, ASourceStillQueuedHasNoWarmStartYet) {
  // One worker: a long job runs, the next waits in the queue.
  v1::SubmitJobResponse running;
  ASSERT_TRUE(Submit(testing::TinyJobRequest(1000000), &running).ok());
  v1::SubmitJobResponse queued;
  ASSERT_TRUE(Submit(testing::TinyJobRequest(1000000), &queued).ok());

  v1::SubmitJobRequest request;
  request.mutable_spec()->set_from_job(queued.job().id());
  request.mutable_spec()->mutable_search()->add_bits(4);
  request.mutable_spec()->mutable_search()->mutable_budget()->set_avg_bits(4);
  v1::SubmitJobResponse response;
  const grpc::Status status = Submit(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("no warm-up state yet"));

  for (const auto* job : {&queued, &running}) {
    grpc::ClientContext context;
    v1::CancelJobRequest cancel;
    cancel.set_job_id(job->job().id());
    v1::Job ignored;
    EXPECT_TRUE(stub_->CancelJob(&context, cancel, &ignored).ok());
  }
}

}  // namespace
}  // namespace mixq
