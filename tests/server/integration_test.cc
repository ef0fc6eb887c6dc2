// End to end: a real mixq server on 127.0.0.1:0 with a temporary data dir,
// driven by the real client (the `mixq` CLI, in-process) and a gRPC stub.
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/cli.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/field_comparator.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "proto/mixq.grpc.pb.h"
#include "server/server.h"
#include "tests/support/npy.h"
#include "tests/support/onnx_mlp.h"
#include "tests/support/server_testing.h"
#include "util/file.h"

namespace mixq {
namespace {

using ::testing::HasSubstr;

constexpr char kFashionDir[] = "/usr/share/datasets/fashion-mnist";
constexpr double kBudgetBits = 4.0;

struct CliResult {
  int exit_code;
  std::string out;
  std::string err;
};

class IntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_dir_ =
        std::filesystem::path(::testing::TempDir()) /
        absl::StrCat(
            "mixq_it_",
            ::testing::UnitTest::GetInstance()->current_test_info()->name(),
            "_", getpid());
    std::filesystem::remove_all(data_dir_);
    StartServer();
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove_all(data_dir_);
  }

  void StartServer(int max_evaluations = 2) {
    server::ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.data_dir = data_dir_.string();
    options.workers = 1;
    options.max_evaluations = max_evaluations;
    auto server = server::Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(64 << 20);
    stub_ = v1::Mixq::NewStub(grpc::CreateCustomChannel(
        address_, grpc::InsecureChannelCredentials(), args));
  }

  void StopServer() {
    stub_.reset();
    server_.reset();
  }

  CliResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), {"--server", address_});
    std::ostringstream out, err;
    const int code = client::RunCli(args, out, err);
    return {code, out.str(), err.str()};
  }

  // A small synthetic job (tiny MLP, teacher labels) as a request.
  static v1::SubmitJobRequest TinyJob() { return testing::TinyJobRequest(); }

  grpc::Status Submit(const v1::SubmitJobRequest& request,
                      v1::SubmitJobResponse* response) {
    grpc::ClientContext context;
    return stub_->SubmitJob(&context, request, response);
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

  // Reads a job's watch stream to the end; returns its events.
  std::vector<v1::JobEvent> Watch(const std::string& job_id) {
    grpc::ClientContext context;
    std::vector<v1::JobEvent> events;
    EXPECT_TRUE(testing::WatchToEnd(*stub_, &context, job_id, &events).ok());
    return events;
  }

  std::filesystem::path data_dir_;
  std::unique_ptr<server::Server> server_;
  std::string address_;
  std::unique_ptr<v1::Mixq::Stub> stub_;
};

TEST_F(IntegrationTest, DemoMlpSearchEndToEndAndAfterRestart) {
  const std::string model =
      absl::StrCat(MIXQ_SOURCE_DIR, "/tests/fixtures/mlp_fmnist.onnx");
  const CliResult submit =
      Cli({"submit",
           "--model",
           model,
           "--inputs",
           absl::StrCat(kFashionDir, "/t10k-images-idx3-ubyte.gz"),
           "--labels",
           absl::StrCat(kFashionDir, "/t10k-labels-idx1-ubyte.gz"),
           "--normalize",
           "0.2860,0.3530",
           "--max-samples",
           "3000",
           "--calib-size",
           "512",
           "--bits",
           "8,6,4,2",
           "--target-avg-bits",
           "4",
           "--candidates",
           "6",
           "--max-layers",
           "2",
           "--finetune-steps",
           "20",
           "--seed",
           "0",
           "--watch"});
  ASSERT_EQ(submit.exit_code, 0) << submit.out << submit.err;
  const std::string job_id =
      std::vector<std::string>(absl::StrSplit(submit.out, '\n'))[0];
  ASSERT_THAT(job_id, ::testing::StartsWith("job-"));

  const v1::GetResultsResponse results = Results(job_id);
  EXPECT_EQ(results.job().state(), v1::SUCCEEDED);
  ASSERT_EQ(results.job().layers_size(), 3);
  ASSERT_TRUE(results.has_final_policy());
  EXPECT_LE(results.final_policy().avg_bits(), kBudgetBits + 1e-9);
  EXPECT_GT(results.final_policy().accuracy(),
            0.5);  // 10 classes: chance is 0.1
  ASSERT_GE(results.steps_size(), 2);
  EXPECT_EQ(results.steps(0).step(), 0);  // warm-up
  for (int s = 1; s < results.steps_size(); ++s) {
    const v1::Step& step = results.steps(s);
    ASSERT_GT(step.candidates_size(), 0);
    const v1::Policy& chosen = step.candidates(0);
    EXPECT_TRUE(chosen.chosen());
    EXPECT_EQ(chosen.rank(), 1);
    for (const v1::Policy& candidate : step.candidates()) {
      EXPECT_LE(chosen.index(), candidate.index()) << "step " << s;
    }
    ASSERT_EQ(step.finetuned().layers_size(), chosen.layers_size());
    for (int l = 0; l < chosen.layers_size(); ++l) {
      EXPECT_EQ(step.finetuned().layers(l).bits(), chosen.layers(l).bits());
    }
  }

  // `mixq best --json` prints the ranked policies under the job's budget.
  const CliResult best = Cli({"best", job_id, "--json"});
  ASSERT_EQ(best.exit_code, 0) << best.err;
  v1::QueryBestPoliciesResponse parsed;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(best.out, &parsed).ok())
      << best.out;
  ASSERT_GT(parsed.policies_size(), 0);
  EXPECT_THAT(best.out, HasSubstr("\"avg_bits\""));
  EXPECT_THAT(best.out, HasSubstr("\"size_bytes\""));
  for (const v1::Policy& policy : parsed.policies()) {
    EXPECT_LE(policy.avg_bits(), kBudgetBits + 1e-9);
    EXPECT_EQ(policy.layers_size(), 3);
  }
  for (int p = 1; p < parsed.policies_size(); ++p) {
    EXPECT_GE(parsed.policies(p - 1).val_accuracy(),
              parsed.policies(p).val_accuracy());
  }

  // The same results read back identically after a restart on the data dir.
  StopServer();
  StartServer();
  const v1::GetResultsResponse reread = Results(job_id);
  // Candidates' validation figures are NaN (never measured): equal here.
  google::protobuf::util::DefaultFieldComparator nan_equal;
  nan_equal.set_treat_nan_as_equal(true);
  google::protobuf::util::MessageDifferencer differencer;
  differencer.set_field_comparator(&nan_equal);
  EXPECT_TRUE(differencer.Compare(results, reread))
      << results.ShortDebugString() << "\n vs \n"
      << reread.ShortDebugString();
  const CliResult status = Cli({"status", job_id});
  EXPECT_EQ(status.exit_code, 0);
  EXPECT_THAT(status.out, HasSubstr("SUCCEEDED"));
}

struct BadRequest {
  const char* name;
  void (*mutate)(v1::SubmitJobRequest*);
  const char* message;
};

std::string ModelWithUnsupportedOp() {
  onnx::ModelProto model;
  model.ParseFromString(testing::MakeMlpOnnx({12, 16, 3}, 1));
  model.mutable_graph()->mutable_node(1)->set_op_type("Hardmax");
  return model.SerializeAsString();
}

TEST_F(IntegrationTest, BadInputIsInvalidArgumentAndTheServerKeepsServing) {
  const std::vector<BadRequest> cases = {
      {"not_onnx",
       [](v1::SubmitJobRequest* r) {
         r->mutable_spec()->mutable_model()->set_content("definitely not onnx");
       },
       "spec.model"},
      {"unsupported_op",
       [](v1::SubmitJobRequest* r) {
         r->mutable_spec()->mutable_model()->set_content(
             ModelWithUnsupportedOp());
       },
       "Hardmax"},
      {"bits_9",
       [](v1::SubmitJobRequest* r) {
         r->mutable_spec()->mutable_search()->set_bits(0, 9);
       },
       "bits: 9"},
      {"bits_0",
       [](v1::SubmitJobRequest* r) {
         r->mutable_spec()->mutable_search()->set_bits(2, 0);
       },
       "bits: 0"},
      {"budget_below_lowest",
       [](v1::SubmitJobRequest* r) {
         r->mutable_spec()->mutable_search()->mutable_budget()->set_avg_bits(1);
       },
       "cannot be met"},
      {"label_count",
       [](v1::SubmitJobRequest* r) {
         r->mutable_spec()->mutable_labels()->set_content(
             testing::NpyInt64(std::vector<int64_t>(150, 0)));
       },
       "150 labels"},
      {"input_shape",
       [](v1::SubmitJobRequest* r) {
         r->mutable_spec()->mutable_inputs()->set_content(
             testing::NpyFloat32(engine::Tensor({200, 5})));
       },
       "spec.inputs"},
      {"missing_model",
       [](v1::SubmitJobRequest* r) { r->mutable_spec()->clear_model(); },
       "spec.model"},
  };
  for (const BadRequest& bad : cases) {
    v1::SubmitJobRequest request = TinyJob();
    bad.mutate(&request);
    v1::SubmitJobResponse response;
    const grpc::Status status = Submit(request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << bad.name;
    EXPECT_THAT(status.error_message(), HasSubstr(bad.message)) << bad.name;
  }
  // Server paths are refused unless allowed.
  v1::SubmitJobRequest path_request = TinyJob();
  path_request.mutable_spec()->mutable_model()->set_server_path("/etc/passwd");
  v1::SubmitJobResponse response;
  EXPECT_EQ(Submit(path_request, &response).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  // Still serving: a valid job runs to completion.
  ASSERT_TRUE(Submit(TinyJob(), &response).ok());
  const std::vector<v1::JobEvent> events = Watch(response.job().id());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::SUCCEEDED);

  // Unknown and malformed ids; cancelling a finished job.
  grpc::ClientContext c1, c2, c3;
  v1::GetJobRequest get;
  v1::Job job;
  get.set_job_id("job-000000000000");
  EXPECT_EQ(stub_->GetJob(&c1, get, &job).error_code(),
            grpc::StatusCode::NOT_FOUND);
  get.set_job_id("../etc");
  EXPECT_EQ(stub_->GetJob(&c2, get, &job).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::CancelJobRequest cancel;
  cancel.set_job_id(response.job().id());
  EXPECT_EQ(stub_->CancelJob(&c3, cancel, &job).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Cli({"status", "job-000000000000"}).exit_code, 3);
}

TEST_F(IntegrationTest, EvaluationsBeyondTheLimitAreResourceExhausted) {
  StopServer();
  StartServer(/*max_evaluations=*/1);
  v1::EvaluatePolicyRequest request;
  *request.mutable_spec() = TinyJob().spec();
  request.mutable_spec()->clear_search();
  request.set_default_bits(4);
  request.set_mode("qat");
  const auto evaluate = [&](int finetune_steps) {
    v1::EvaluatePolicyRequest copy = request;  // each thread its own
    copy.set_finetune_steps(finetune_steps);
    v1::EvaluatePolicyResponse response;
    grpc::ClientContext context;
    return stub_->EvaluatePolicy(&context, copy, &response);
  };
  // A long evaluation holds the only slot; others are turned away until
  // it ends, and the server keeps answering everything else.
  // (The long one retries while a short probe holds the slot.)
  grpc::Status long_status;
  std::thread long_evaluation([&] {
    do {
      long_status = evaluate(200000);
    } while (long_status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  });
  bool refused = false;
  for (int attempt = 0; attempt < 200 && !refused; ++attempt) {
    const grpc::Status status = evaluate(1);
    if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      refused = true;
      EXPECT_THAT(status.error_message(), HasSubstr("--max-evaluations"));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  EXPECT_TRUE(refused);
  v1::ListJobsResponse jobs;
  grpc::ClientContext list_context;
  EXPECT_TRUE(stub_->ListJobs(&list_context, {}, &jobs).ok());
  long_evaluation.join();
  EXPECT_TRUE(long_status.ok()) << long_status.error_message();
  EXPECT_TRUE(evaluate(1).ok());
}

TEST_F(IntegrationTest, EvaluatePolicyModesOverRpcAndTheCli) {
  v1::EvaluatePolicyRequest request;
  *request.mutable_spec() = TinyJob().spec();
  request.mutable_spec()->clear_search();
  request.set_default_bits(4);
  v1::LayerBits* layer = request.add_layers();
  layer->set_name("fc1.weight");
  layer->set_bits(2);
  std::vector<double> losses;
  for (const char* mode : {"dynamic", "static", "qat"}) {
    request.set_mode(mode);
    request.set_finetune_steps(60);
    v1::EvaluatePolicyResponse response;
    grpc::ClientContext context;
    const grpc::Status status =
        stub_->EvaluatePolicy(&context, request, &response);
    ASSERT_TRUE(status.ok()) << mode << ": " << status.error_message();
    EXPECT_EQ(response.mode(), mode);
    EXPECT_EQ(response.eval_samples(), 150);
    ASSERT_EQ(response.layers_size(), 2);
    EXPECT_EQ(response.layers(0).bits(), 4);
    EXPECT_EQ(response.layers(1).bits(), 2);
    EXPECT_DOUBLE_EQ(response.avg_bits(),
                     (16.0 * 12 * 4 + 3.0 * 16 * 2) / (16 * 12 + 3 * 16));
    EXPECT_GT(response.bops(), 0);
    EXPECT_GT(response.fp32_accuracy(), 0);
    losses.push_back(response.loss());
  }
  EXPECT_LT(losses[2], losses[1]);  // QAT adapts to the grid

  // Bad requests name the field; the server keeps serving.
  for (const auto& [mutate, field] :
       std::vector<std::pair<std::function<void(v1::EvaluatePolicyRequest*)>,
                             std::string>>{
           {[](v1::EvaluatePolicyRequest* r) { r->set_mode("fast"); }, "mode"},
           {[](v1::EvaluatePolicyRequest* r) { r->set_default_bits(9); },
            "default_bits"},
           {[](v1::EvaluatePolicyRequest* r) {
              r->mutable_layers(0)->set_name("fc9.weight");
            },
            "layers[0].name"},
           {[](v1::EvaluatePolicyRequest* r) { r->set_activation_bits(1); },
            "activation_bits"},
           {[](v1::EvaluatePolicyRequest* r) { r->clear_spec(); }, "spec"}}) {
    v1::EvaluatePolicyRequest bad = request;
    bad.set_mode("static");
    mutate(&bad);
    v1::EvaluatePolicyResponse response;
    grpc::ClientContext context;
    const grpc::Status status = stub_->EvaluatePolicy(&context, bad, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_THAT(status.error_message(), ::testing::HasSubstr(field));
  }

  // The CLI, from files.
  const std::string dir = data_dir_.string();
  const search::LabeledData data = testing::MakeTeacherData(200, 12, 3, 2);
  ASSERT_TRUE(
      WriteFile(dir + "/m.onnx", testing::MakeMlpOnnx({12, 16, 3}, 1)).ok());
  ASSERT_TRUE(WriteFile(dir + "/x.npy", testing::NpyFloat32(data.inputs)).ok());
  ASSERT_TRUE(WriteFile(dir + "/y.npy", testing::NpyInt64(data.labels)).ok());
  const CliResult cli =
      Cli({"eval", "--model", dir + "/m.onnx", "--inputs", dir + "/x.npy",
           "--labels", dir + "/y.npy", "--calib-size", "50", "--bits", "8",
           "--layer-bits", "fc1.weight=4", "--mode", "static"});
  EXPECT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_THAT(cli.out,
              ::testing::HasSubstr("static evaluation on 150 samples"));
  EXPECT_THAT(cli.out, ::testing::HasSubstr("fc1.weight"));
}

TEST_F(IntegrationTest, StrategiesOnOneModelAreQueriedTogether) {
  // The same model and data searched by three strategies.
  std::vector<std::string> ids;
  for (const char* strategy : {"progressive", "knapsack", "uniform"}) {
    v1::SubmitJobRequest request = TinyJob();
    request.mutable_spec()->mutable_search()->set_strategy(strategy);
    request.mutable_spec()->mutable_search()->set_total_finetune_steps(40);
    v1::SubmitJobResponse response;
    const grpc::Status status = Submit(request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ids.push_back(response.job().id());
  }
  for (const std::string& id : ids) Watch(id);
  for (size_t i = 0; i < ids.size(); ++i) {
    const v1::GetResultsResponse results = Results(ids[i]);
    ASSERT_EQ(results.job().state(), v1::SUCCEEDED) << results.job().error();
    EXPECT_LE(results.final_policy().avg_bits(), 3 + 1e-9);
    ASSERT_GE(results.steps_size(), 2);
    int finetune = 0;
    for (const v1::Step& step : results.steps())
      finetune += step.finetune_steps();
    EXPECT_LE(finetune, 40);
    if (i == 0) {
      // Progressive steps report their scoring work and the oracle.
      EXPECT_GT(results.steps(1).naive_node_runs(), 0);
      EXPECT_LE(results.steps(1).oracle_omega(),
                results.steps(1).candidates(0).omega() * (1 + 1e-9));
    } else {
      EXPECT_EQ(results.steps_size(), 2);  // warm-up, allocation
    }
  }
  grpc::ClientContext context;
  v1::QueryBestPoliciesRequest query;
  query.set_job_id(ids[1]);
  query.set_same_model(true);
  query.set_max_avg_bits(3);
  query.set_top_k(50);
  v1::QueryBestPoliciesResponse best;
  grpc::Status status = stub_->QueryBestPolicies(&context, query, &best);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(best.model_sha256().size(), 64u);
  // Each bit assignment appears once, from the job that scored it best: on
  // a two-layer model strategies share assignments, so at least two of the
  // three jobs contribute.
  const std::map<std::string, std::string> strategy_of = {
      {ids[0], "progressive"}, {ids[1], "knapsack"}, {ids[2], "uniform"}};
  std::set<std::string> jobs;
  for (const v1::Policy& policy : best.policies()) {
    EXPECT_LE(policy.avg_bits(), 3 + 1e-9);
    ASSERT_EQ(strategy_of.count(policy.job_id()), 1u) << policy.job_id();
    EXPECT_EQ(policy.strategy(), strategy_of.at(policy.job_id()));
    jobs.insert(policy.job_id());
  }
  EXPECT_GE(jobs.size(), 2u);
  for (int i = 1; i < best.policies_size(); ++i) {
    EXPECT_GE(best.policies(i - 1).accuracy(), best.policies(i).accuracy());
  }
  // The model's hash alone gives the same answer.
  grpc::ClientContext by_hash_context;
  v1::QueryBestPoliciesRequest by_hash;
  by_hash.set_model_sha256(best.model_sha256());
  by_hash.set_max_avg_bits(3);
  by_hash.set_top_k(50);
  v1::QueryBestPoliciesResponse same;
  status = stub_->QueryBestPolicies(&by_hash_context, by_hash, &same);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(same.policies_size(), best.policies_size());
  // Bad strategy and bad hash: INVALID_ARGUMENT naming the field.
  v1::SubmitJobRequest bad = TinyJob();
  bad.mutable_spec()->mutable_search()->set_strategy("greedy");
  v1::SubmitJobResponse ignored;
  status = Submit(bad, &ignored);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("spec.search.strategy"));
  grpc::ClientContext bad_hash_context;
  by_hash.set_model_sha256("xyz");
  status = stub_->QueryBestPolicies(&bad_hash_context, by_hash, &same);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("model_sha256"));
}

TEST_F(IntegrationTest, SubmitIsIdempotentPerRequestId) {
  v1::SubmitJobRequest request = TinyJob();
  request.set_request_id("pipeline-run-42");
  v1::SubmitJobResponse first, second;
  ASSERT_TRUE(Submit(request, &first).ok());
  ASSERT_TRUE(Submit(request, &second).ok());
  EXPECT_FALSE(first.existing());
  EXPECT_TRUE(second.existing());
  EXPECT_EQ(first.job().id(), second.job().id());
  Watch(first.job().id());
}

TEST_F(IntegrationTest, CancelStopsARunningJob) {
  v1::SubmitJobRequest request = TinyJob();
  testing::MakeEndless(&request);
  v1::SubmitJobResponse response;
  ASSERT_TRUE(Submit(request, &response).ok());
  const std::string job_id = response.job().id();

  grpc::ClientContext context;
  v1::WatchJobRequest watch;
  watch.set_job_id(job_id);
  auto reader = stub_->WatchJob(&context, watch);
  v1::JobEvent event;
  bool cancelled = false;
  v1::JobState last = v1::JOB_STATE_UNSPECIFIED;
  while (reader->Read(&event)) {
    last = event.state();
    if (!cancelled && event.phase() == "warmup") {
      const CliResult cancel = Cli({"cancel", job_id});
      EXPECT_EQ(cancel.exit_code, 0) << cancel.err;
      cancelled = true;
    }
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(cancelled);
  EXPECT_EQ(last, v1::CANCELLED);
  EXPECT_EQ(Cli({"watch", job_id}).exit_code, 1);
}

TEST_F(IntegrationTest, UnfinishedJobsResumeAfterRestart) {
  v1::SubmitJobRequest request = TinyJob();
  testing::MakeEndless(&request);
  v1::SubmitJobResponse long_job;
  ASSERT_TRUE(Submit(request, &long_job).ok());
  v1::SubmitJobResponse queued;
  ASSERT_TRUE(Submit(TinyJob(), &queued).ok());
  StopServer();  // the long job is interrupted, the second never started
  StartServer();
  // Both are queued again; the second finishes after we cancel the first.
  grpc::ClientContext context;
  v1::CancelJobRequest cancel;
  cancel.set_job_id(long_job.job().id());
  v1::Job job;
  ASSERT_TRUE(stub_->CancelJob(&context, cancel, &job).ok());
  const std::vector<v1::JobEvent> events = Watch(queued.job().id());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::SUCCEEDED);
}

}  // namespace
}  // namespace mixq
