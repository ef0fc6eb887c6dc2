#include "client/commands.h"

#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/cli.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/mixq.grpc.pb.h"
#include "tests/client/text_proto.h"
#include "util/file.h"
#include "util/sha256.h"

namespace mixq::client {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// A fresh directory under the test temp dir, removed on destruction.
class TempDir {
 public:
  TempDir() {
    const auto* info = testing::UnitTest::GetInstance()->current_test_info();
    path_ =
        std::filesystem::path(testing::TempDir()) /
        (std::string("client_") + info->test_suite_name() + "_" + info->name());
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

TEST(ExitCodeForTest, Table) {
  const std::vector<std::pair<grpc::StatusCode, int>> cases = {
      {grpc::StatusCode::OK, kExitOk},
      {grpc::StatusCode::INVALID_ARGUMENT, kExitUsage},
      {grpc::StatusCode::FAILED_PRECONDITION, kExitUsage},
      {grpc::StatusCode::PERMISSION_DENIED, kExitUsage},
      {grpc::StatusCode::NOT_FOUND, kExitNotFound},
      {grpc::StatusCode::UNAVAILABLE, kExitRpcError},
      {grpc::StatusCode::DEADLINE_EXCEEDED, kExitRpcError},
      {grpc::StatusCode::RESOURCE_EXHAUSTED, kExitRpcError},
      {grpc::StatusCode::INTERNAL, kExitRpcError},
      {grpc::StatusCode::UNKNOWN, kExitRpcError},
      {grpc::StatusCode::CANCELLED, kExitRpcError},
      {grpc::StatusCode::UNAUTHENTICATED, kExitRpcError},
      {grpc::StatusCode::ALREADY_EXISTS, kExitRpcError},
      {grpc::StatusCode::UNIMPLEMENTED, kExitRpcError},
  };
  for (const auto& [code, exit_code] : cases) {
    EXPECT_EQ(ExitCodeFor(code), exit_code) << code;
  }
}

TEST(DescribeRpcErrorTest, NamesTheCode) {
  EXPECT_EQ(
      DescribeRpcError(grpc::Status(grpc::StatusCode::NOT_FOUND, "no job x"),
                       "h:1", 60, false),
      "error: NOT_FOUND: no job x\n");
  EXPECT_EQ(
      DescribeRpcError(grpc::Status(grpc::StatusCode::UNAVAILABLE, "refused"),
                       "h:1", 60, false),
      "error: UNAVAILABLE: cannot reach mixq server at h:1: refused\n");
  EXPECT_EQ(DescribeRpcError(
                grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "late"),
                "h:1", 2.5, true),
            "error: DEADLINE_EXCEEDED: no answer from mixq server at h:1 "
            "within 2.5 s (see --timeout): "
            "late\n");
}

// What gRPC 1.51 says for each transport mismatch, in words.
TEST(DescribeRpcErrorTest, ExplainsTransportMismatches) {
  const grpc::Status socket_closed(
      grpc::StatusCode::UNAVAILABLE,
      "failed to connect to all addresses; last error: UNAVAILABLE: "
      "ipv4:127.0.0.1:45701: Socket closed");
  EXPECT_EQ(DescribeRpcError(socket_closed, "h:1", 60, false),
            "error: UNAVAILABLE: the server at h:1 closed the connection: if "
            "it serves TLS, add --tls (or --tls-ca FILE for a private CA)\n");
  const grpc::Status untrusted(
      grpc::StatusCode::UNAVAILABLE,
      "failed to connect to all addresses; last error: UNKNOWN: "
      "ipv4:127.0.0.1:45701: Ssl handshake failed: SSL_ERROR_SSL: "
      "error:0A000086:SSL routines::certificate verify failed");
  EXPECT_EQ(DescribeRpcError(untrusted, "h:1", 60, true),
            "error: UNAVAILABLE: the TLS certificate of the server at h:1 is "
            "not signed by a CA this client trusts: give the CA that signed "
            "it with --tls-ca FILE\n");
  const grpc::Status plaintext_server(
      grpc::StatusCode::UNAVAILABLE,
      "failed to connect to all addresses; last error: UNKNOWN: "
      "ipv4:127.0.0.1:39619: Ssl handshake failed: SSL_ERROR_SSL: "
      "error:0A00010B:SSL routines::wrong version number");
  EXPECT_EQ(DescribeRpcError(plaintext_server, "h:1", 60, true),
            "error: UNAVAILABLE: the server at h:1 does not speak TLS: "
            "connect without --tls, --tls-ca and --tls-cert\n");
  // A closed socket with TLS on is not a plaintext client's mistake.
  EXPECT_THAT(DescribeRpcError(socket_closed, "h:1", 60, true),
              HasSubstr("cannot reach mixq server at h:1: failed to connect"));
}

SubmitOptions MinimalSubmit(const std::filesystem::path& dir) {
  SubmitOptions options;
  options.model = (dir / "model.onnx").string();
  options.inputs = (dir / "x.npy").string();
  options.labels = (dir / "y.npy").string();
  options.calib_size = 100;
  options.bits = {8, 6, 4, 2};
  options.target_avg_bits = 4;
  return options;
}

void WriteInputs(const std::filesystem::path& dir) {
  ASSERT_TRUE(WriteFile((dir / "model.onnx").string(), "MODEL").ok());
  ASSERT_TRUE(WriteFile((dir / "x.npy").string(), "INPUTS").ok());
  ASSERT_TRUE(WriteFile((dir / "y.npy").string(), "LABELS").ok());
}

// The validation files next to WriteInputs' files.
void WriteValidationFiles(const std::filesystem::path& dir) {
  ASSERT_TRUE(WriteFile((dir / "vx.npy").string(), "VAL_INPUTS").ok());
  ASSERT_TRUE(WriteFile((dir / "vy.npy").string(), "VAL_LABELS").ok());
}

TEST(BuildSubmitRequestTest, FromJobSendsNoModelOrData) {
  SubmitOptions options;
  options.from_job = "job-7";
  options.bits = {8, 4};
  options.target_avg_bits = 5;
  auto request = BuildSubmitRequest(options);
  ASSERT_TRUE(request.ok()) << request.status();
  const v1::JobSpec& spec = request->spec();
  EXPECT_EQ(spec.from_job(), "job-7");
  EXPECT_FALSE(spec.has_model());
  EXPECT_FALSE(spec.has_inputs());
  EXPECT_FALSE(spec.has_labels());
  EXPECT_FALSE(spec.has_val_inputs());
  EXPECT_FALSE(spec.has_val_labels());
  EXPECT_EQ(spec.calib_size(), 0);
  EXPECT_EQ(spec.search().budget().avg_bits(), 5);
}

TEST(BuildSubmitRequestTest, SendsContentByDefault) {
  TempDir dir;
  WriteInputs(dir.path());
  auto request = BuildSubmitRequest(MinimalSubmit(dir.path()));
  ASSERT_TRUE(request.ok()) << request.status();
  const v1::JobSpec& spec = request->spec();
  EXPECT_EQ(spec.model().content(), "MODEL");
  EXPECT_EQ(spec.model().filename(), "model.onnx");
  EXPECT_EQ(spec.inputs().content(), "INPUTS");
  EXPECT_EQ(spec.inputs().filename(), "x.npy");
  EXPECT_EQ(spec.labels().content(), "LABELS");
  EXPECT_EQ(spec.labels().filename(), "y.npy");
  EXPECT_EQ(spec.calib_size(), 100);
  EXPECT_FALSE(spec.has_normalize());
  EXPECT_EQ(spec.max_samples(), 0);
  EXPECT_EQ(spec.name(), "");
  EXPECT_EQ(request->request_id(), "");
  const v1::SearchOptions& search = spec.search();
  EXPECT_THAT(search.bits(), ::testing::ElementsAre(8, 6, 4, 2));
  EXPECT_EQ(search.budget().target_case(), v1::Budget::kAvgBits);
  EXPECT_EQ(search.budget().avg_bits(), 4);
  // Unset options stay zero: the server's documented defaults apply.
  EXPECT_EQ(search.candidates(), 0);
  EXPECT_EQ(search.max_layers(), 0);
  EXPECT_FALSE(search.has_finetune_steps());
  EXPECT_FALSE(search.has_warmup_steps());
  EXPECT_FALSE(search.has_final_finetune_steps());
  EXPECT_EQ(search.learning_rate(), 0);
  EXPECT_EQ(search.batch_size(), 0);
  EXPECT_FALSE(search.has_lambda());
  EXPECT_EQ(search.strategy(), "");
  EXPECT_EQ(search.selection(), "");
  EXPECT_FALSE(search.refresh_fisher());
  EXPECT_FALSE(search.land_on_budget());
  EXPECT_EQ(search.total_finetune_steps(), 0);
  EXPECT_EQ(search.hutchinson_samples(), 0);
  EXPECT_EQ(search.seed(), 0u);
  // No validation flags: the server's default hold-out.
  EXPECT_FALSE(spec.has_val_inputs());
  EXPECT_FALSE(spec.has_val_labels());
  EXPECT_EQ(spec.val_size(), 0);
}

TEST(BuildSubmitRequestTest, ValidationFilesTravelLikeTheOthers) {
  TempDir dir;
  WriteInputs(dir.path());
  WriteValidationFiles(dir.path());
  SubmitOptions options = MinimalSubmit(dir.path());
  options.val_inputs = (dir.path() / "vx.npy").string();
  options.val_labels = (dir.path() / "vy.npy").string();
  auto request = BuildSubmitRequest(options);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->spec().val_inputs().content(), "VAL_INPUTS");
  EXPECT_EQ(request->spec().val_inputs().filename(), "vx.npy");
  EXPECT_EQ(request->spec().val_labels().content(), "VAL_LABELS");
  EXPECT_EQ(request->spec().val_labels().filename(), "vy.npy");
  EXPECT_EQ(request->spec().val_size(), 0);

  options.server_paths = true;
  request = BuildSubmitRequest(options);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->spec().val_inputs().server_path(),
            (dir.path() / "vx.npy").string());
  EXPECT_EQ(request->spec().val_labels().source_case(),
            v1::DataSource::kServerPath);

  options.server_paths = false;
  options.val_labels = "sha256:" + std::string(64, 'E');
  request = BuildSubmitRequest(options);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->spec().val_labels().artifact_sha256(),
            std::string(64, 'e'));

  // A missing file names its flag.
  options.val_inputs = (dir.path() / "absent.npy").string();
  request = BuildSubmitRequest(options);
  ASSERT_FALSE(request.ok());
  EXPECT_THAT(std::string(request.status().message()),
              StartsWith("--val-inputs: "));
  options.val_inputs = "sha256:12";
  request = BuildSubmitRequest(options);
  ASSERT_FALSE(request.ok());
  EXPECT_THAT(std::string(request.status().message()),
              StartsWith("--val-inputs: \"sha256:12\" is not sha256:"));
}

TEST(BuildSubmitRequestTest, ValidationSizeHoldsOutSamples) {
  SubmitOptions options = MinimalSubmit("data");
  options.server_paths = true;
  options.val_size = 500;
  auto request = BuildSubmitRequest(options);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->spec().val_size(), 500);
  EXPECT_FALSE(request->spec().has_val_inputs());
  EXPECT_FALSE(request->spec().has_val_labels());
}

TEST(BuildEvalRequestTest, SendsTheValidationSet) {
  EvalOptions options;
  options.data = MinimalSubmit("data");
  options.data.server_paths = true;
  options.data.val_inputs = "data/vx.npy";
  options.data.val_labels = "data/vy.npy";
  auto request = BuildEvalRequest(options);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->spec().val_inputs().filename(), "vx.npy");
  EXPECT_EQ(request->spec().val_labels().filename(), "vy.npy");
  EXPECT_FALSE(request->spec().has_search());

  options.data.val_inputs.clear();
  options.data.val_labels.clear();
  options.data.val_size = 64;
  request = BuildEvalRequest(options);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->spec().val_size(), 64);
  EXPECT_FALSE(request->spec().has_val_inputs());
}

TEST(BuildSubmitRequestTest, ExplicitZeroIsSentForOptionalFields) {
  SubmitOptions options = MinimalSubmit("data");
  options.server_paths = true;
  options.warmup_steps = 0;
  options.lambda = 0;
  auto request = BuildSubmitRequest(options);
  ASSERT_TRUE(request.ok()) << request.status();
  const v1::SearchOptions& search = request->spec().search();
  EXPECT_TRUE(search.has_warmup_steps());
  EXPECT_EQ(search.warmup_steps(), 0);
  EXPECT_TRUE(search.has_lambda());
  EXPECT_EQ(search.lambda(), 0);
  EXPECT_FALSE(search.has_finetune_steps());
}

TEST(BuildSubmitRequestTest, ServerPathsAreAbsoluteAndNotRead) {
  SubmitOptions options =
      MinimalSubmit("data/../data");  // relative, files absent
  options.server_paths = true;
  options.target_avg_bits.reset();
  options.target_size_fraction = 0.25;
  options.candidates = 6;
  options.max_layers = 3;
  options.finetune_steps = 40;
  options.warmup_steps = 100;
  options.final_steps = 200;
  options.learning_rate = 3e-4;
  options.batch_size = 32;
  options.lambda = 0.5;
  options.seed = 42;
  options.normalize = SubmitOptions::Normalize{0.286, 0.353};
  options.max_samples = 5000;
  options.name = "mlp";
  options.request_id = "r-1";
  auto request = BuildSubmitRequest(options);
  ASSERT_TRUE(request.ok()) << request.status();
  const v1::JobSpec& spec = request->spec();
  const std::string cwd = std::filesystem::current_path().string();
  EXPECT_EQ(spec.model().source_case(), v1::DataSource::kServerPath);
  EXPECT_EQ(spec.model().server_path(), cwd + "/data/model.onnx");
  EXPECT_EQ(spec.model().filename(), "model.onnx");
  EXPECT_EQ(spec.inputs().server_path(), cwd + "/data/x.npy");
  EXPECT_EQ(spec.labels().server_path(), cwd + "/data/y.npy");
  EXPECT_EQ(spec.labels().filename(), "y.npy");
  EXPECT_EQ(spec.name(), "mlp");
  EXPECT_EQ(request->request_id(), "r-1");
  EXPECT_EQ(spec.normalize().mean(), 0.286);
  EXPECT_EQ(spec.normalize().std(), 0.353);
  EXPECT_EQ(spec.max_samples(), 5000);
  const v1::SearchOptions& search = spec.search();
  EXPECT_EQ(search.budget().target_case(), v1::Budget::kSizeFraction);
  EXPECT_EQ(search.budget().size_fraction(), 0.25);
  EXPECT_EQ(search.candidates(), 6);
  EXPECT_EQ(search.max_layers(), 3);
  EXPECT_EQ(search.finetune_steps(), 40);
  EXPECT_EQ(search.warmup_steps(), 100);
  EXPECT_EQ(search.final_finetune_steps(), 200);
  EXPECT_EQ(search.learning_rate(), 3e-4);
  EXPECT_EQ(search.batch_size(), 32);
  EXPECT_EQ(search.lambda(), 0.5);
  EXPECT_EQ(search.seed(), 42u);
}

TEST(BuildSubmitRequestTest, BudgetUnitsLayersPinsAndActivationBits) {
  SubmitOptions options = MinimalSubmit("data");
  options.server_paths = true;
  options.target_avg_bits.reset();
  options.target_bops = 2.5e9;
  options.layers = {{"fc1.weight", {8, 6}}, {"fc3.weight", {8}}};
  options.pin_first_last = true;
  options.activation_bits = 32;
  auto request = BuildSubmitRequest(options);
  ASSERT_TRUE(request.ok()) << request.status();
  const v1::SearchOptions& search = request->spec().search();
  EXPECT_EQ(search.budget().target_case(), v1::Budget::kBops);
  EXPECT_EQ(search.budget().bops(), 2.5e9);
  ASSERT_EQ(search.layers_size(), 2);
  EXPECT_EQ(search.layers(0).name(), "fc1.weight");
  EXPECT_THAT(search.layers(0).bits(), ::testing::ElementsAre(8, 6));
  EXPECT_EQ(search.layers(1).name(), "fc3.weight");
  EXPECT_THAT(search.layers(1).bits(), ::testing::ElementsAre(8));
  EXPECT_TRUE(search.pin_first_last());
  ASSERT_TRUE(search.has_activation_bits());
  EXPECT_EQ(search.activation_bits(), 32);

  options.target_bops.reset();
  options.target_size_bytes = 50000;
  options.activation_bits.reset();
  request = BuildSubmitRequest(options);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->spec().search().budget().target_case(),
            v1::Budget::kSizeBytes);
  EXPECT_EQ(request->spec().search().budget().size_bytes(), 50000);
  EXPECT_FALSE(request->spec().search().has_activation_bits());  // server: 8
}

TEST(BuildSubmitRequestTest, StrategyOptions) {
  SubmitOptions options = MinimalSubmit("data");
  options.server_paths = true;
  options.strategy = "hawq";
  options.selection = "per_cost_saved";
  options.refresh_fisher = true;
  options.land_on_budget = true;
  options.knapsack_guided = true;
  options.activation_levels = {8, 4};
  options.total_finetune_steps = 600;
  options.hutchinson_samples = 32;
  auto request = BuildSubmitRequest(options);
  ASSERT_TRUE(request.ok()) << request.status();
  const v1::SearchOptions& search = request->spec().search();
  EXPECT_EQ(search.strategy(), "hawq");
  EXPECT_EQ(search.selection(), "per_cost_saved");
  EXPECT_TRUE(search.refresh_fisher());
  EXPECT_TRUE(search.land_on_budget());
  EXPECT_TRUE(search.knapsack_guided());
  ASSERT_EQ(search.activation_levels_size(), 2);
  EXPECT_EQ(search.activation_levels(1), 4);
  EXPECT_EQ(search.total_finetune_steps(), 600);
  EXPECT_EQ(search.hutchinson_samples(), 32);
}

TEST(BuildSubmitRequestTest, MissingFileNamesTheFlag) {
  TempDir dir;
  WriteInputs(dir.path());
  std::filesystem::remove(dir.path() / "x.npy");
  auto request = BuildSubmitRequest(MinimalSubmit(dir.path()));
  ASSERT_FALSE(request.ok());
  EXPECT_EQ(request.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(request.status().message()),
              StartsWith("--inputs: "));
  EXPECT_THAT(std::string(request.status().message()), HasSubstr("x.npy"));
}

TEST(BuildSubmitRequestTest, ArtifactReferencesAreSentAsHashes) {
  SubmitOptions options = MinimalSubmit("absent");  // no file is read
  options.model = "sha256:" + std::string(64, 'A');
  options.inputs = "sha256:" + Sha256Hex("x");
  options.labels = "sha256:" + Sha256Hex("y");
  auto request = BuildSubmitRequest(options);
  ASSERT_TRUE(request.ok()) << request.status();
  const v1::JobSpec& spec = request->spec();
  EXPECT_EQ(spec.model().source_case(), v1::DataSource::kArtifactSha256);
  EXPECT_EQ(spec.model().artifact_sha256(), std::string(64, 'a'));
  EXPECT_EQ(spec.model().filename(), "");
  EXPECT_EQ(spec.inputs().artifact_sha256(), Sha256Hex("x"));
  EXPECT_EQ(spec.labels().artifact_sha256(), Sha256Hex("y"));

  for (const std::string& bad : std::vector<std::string>{
           "sha256:", "sha256:abc", "sha256:" + std::string(64, 'g')}) {
    options.model = bad;
    request = BuildSubmitRequest(options);
    ASSERT_FALSE(request.ok()) << bad;
    EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(request.status().message()),
                StartsWith("--model: \"" + bad + "\" is not sha256:"));
  }
}

TEST(BuildRequestTest, ListAndBest) {
  ListOptions list;
  list.state = v1::FAILED;
  list.limit = 3;
  const v1::ListJobsRequest list_request = BuildListRequest(list);
  EXPECT_EQ(list_request.state(), v1::FAILED);
  EXPECT_EQ(list_request.limit(), 3);
  EXPECT_EQ(BuildListRequest(ListOptions()).limit(), 0);

  BestOptions best;
  best.job_id = "j";
  best.max_avg_bits = 4.5;
  const v1::QueryBestPoliciesRequest best_request = BuildBestRequest(best);
  EXPECT_EQ(best_request.job_id(), "j");
  EXPECT_EQ(best_request.top_k(), 0);
  EXPECT_EQ(best_request.max_avg_bits(), 4.5);
  EXPECT_EQ(best_request.max_size_bytes(), 0);
  EXPECT_EQ(best_request.max_bops(), 0);
  EXPECT_FALSE(best_request.same_model());
  EXPECT_EQ(best_request.model_sha256(), "");
  EXPECT_FALSE(best_request.resolve());
  BestOptions resolve = best;
  resolve.resolve = true;
  EXPECT_TRUE(BuildBestRequest(resolve).resolve());

  best.same_model = true;
  best.max_bops = 2.5e8;
  const v1::QueryBestPoliciesRequest same = BuildBestRequest(best);
  EXPECT_EQ(same.job_id(), "j");
  EXPECT_TRUE(same.same_model());
  EXPECT_EQ(same.max_bops(), 2.5e8);

  // A model hash always asks for the model's jobs.
  BestOptions by_hash;
  by_hash.model_sha256 = std::string(64, 'f');
  const v1::QueryBestPoliciesRequest hash_request = BuildBestRequest(by_hash);
  EXPECT_EQ(hash_request.job_id(), "");
  EXPECT_EQ(hash_request.model_sha256(), std::string(64, 'f'));
  EXPECT_TRUE(hash_request.same_model());
}

TEST(BuildRequestTest, Pareto) {
  ParetoOptions pareto;
  pareto.job_id = "j";
  v1::GetParetoFrontRequest request = BuildParetoRequest(pareto);
  EXPECT_EQ(request.job_id(), "j");
  EXPECT_FALSE(request.same_model());
  EXPECT_EQ(request.model_sha256(), "");

  pareto.same_model = true;
  EXPECT_TRUE(BuildParetoRequest(pareto).same_model());

  // A model hash always asks for the model's jobs.
  ParetoOptions by_hash;
  by_hash.model_sha256 = std::string(64, 'f');
  request = BuildParetoRequest(by_hash);
  EXPECT_EQ(request.job_id(), "");
  EXPECT_EQ(request.model_sha256(), std::string(64, 'f'));
  EXPECT_TRUE(request.same_model());
}

// A scripted stand-in for the mixq server: job "job-1" exists; WatchJob plays
// the events scripted for the job id; CancelJob refuses (job finished).
constexpr char kExported[] = "EXPORTED:";

class FakeMixq final : public v1::Mixq::Service {
 public:
  grpc::Status SubmitJob(grpc::ServerContext*,
                         const v1::SubmitJobRequest* request,
                         v1::SubmitJobResponse* response) override {
    absl::MutexLock lock(&mutex_);
    last_submit_ = *request;
    response->mutable_job()->set_id("job-1");
    response->mutable_job()->set_state(v1::QUEUED);
    return grpc::Status::OK;
  }

  grpc::Status GetJob(grpc::ServerContext*, const v1::GetJobRequest* request,
                      v1::Job* job) override {
    if (request->job_id() != "job-1") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          "job \"" + request->job_id() + "\" not found");
    }
    *job = ParseText<v1::Job>(R"pb(
      id: "job-1"
      name: "mlp"
      state: RUNNING
      steps_done: 2
      val_samples: 100
      val_source: "default: the last 10 % held out: samples [900, 1000) of "
                  "x.npy"
      fp32_val_accuracy: 0.93
    )pb");
    return grpc::Status::OK;
  }

  grpc::Status ListJobs(grpc::ServerContext*,
                        const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override {
    absl::MutexLock lock(&mutex_);
    last_list_ = *request;
    *response->add_jobs() =
        ParseText<v1::Job>(R"pb(id: "job-1" state: RUNNING)pb");
    return grpc::Status::OK;
  }

  grpc::Status WatchJob(grpc::ServerContext*,
                        const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override {
    const auto script = kScripts.find(request->job_id());
    if (script == kScripts.end()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such job");
    }
    for (const std::string& text : script->second) {
      v1::JobEvent event = ParseText<v1::JobEvent>(text);
      event.set_job_id(request->job_id());
      writer->Write(event);
    }
    return grpc::Status::OK;
  }

  grpc::Status GetResults(grpc::ServerContext*,
                          const v1::GetResultsRequest* request,
                          v1::GetResultsResponse* response) override {
    if (request->job_id() != "job-1") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such job");
    }
    *response = ParseText<v1::GetResultsResponse>(
        R"pb(job { id: "job-1" state: SUCCEEDED }
             final_policy {
               layers { name: "w" bits: 4 }
               avg_bits: 4
             })pb");
    return grpc::Status::OK;
  }

  grpc::Status QueryBestPolicies(
      grpc::ServerContext*, const v1::QueryBestPoliciesRequest* request,
      v1::QueryBestPoliciesResponse* response) override {
    absl::MutexLock lock(&mutex_);
    last_best_ = *request;
    *response = ParseText<v1::QueryBestPoliciesResponse>(R"pb(
      job_id: "job-1"
      policies {
        layers { name: "w1" bits: 8 }
        layers { name: "w2" bits: 4 }
        avg_bits: 5.5
        size_bytes: 4096
        accuracy: 0.9
        loss: 0.25
        kind: "final"
        step: 4
        val_accuracy: 0.875
        policy_id: "final"
      }
    )pb");
    return grpc::Status::OK;
  }

  // "job-1" has a two-policy front; any other job is unknown.
  grpc::Status GetParetoFront(grpc::ServerContext*,
                              const v1::GetParetoFrontRequest* request,
                              v1::GetParetoFrontResponse* response) override {
    {
      absl::MutexLock lock(&mutex_);
      last_pareto_ = *request;
    }
    if (request->job_id() != "job-1" && request->model_sha256().empty()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such job");
    }
    *response = ParseText<v1::GetParetoFrontResponse>(R"pb(
      job_id: "job-1"
      policies {
        policy_id: "final"
        strategy: "progressive"
        avg_bits: 3
        size_bytes: 2048
        bops: 30000
        accuracy: 0.8
        val_accuracy: 0.78
      }
      policies {
        policy_id: "step-1"
        strategy: "progressive"
        avg_bits: 6
        size_bytes: 4096
        bops: 60000
        accuracy: 0.9
        val_accuracy: 0.88
      }
      fp32_size_bytes: 16384
      fp32_bops: 320000
      fp32_val_accuracy: 0.9
    )pb");
    if (request->same_model()) {
      response->set_model_sha256(std::string(64, 'c'));
      response->mutable_policies(0)->set_job_id("job-1");
      response->mutable_policies(1)->set_job_id("job-0");
    }
    return grpc::Status::OK;
  }

  grpc::Status EvaluatePolicy(grpc::ServerContext*,
                              const v1::EvaluatePolicyRequest* request,
                              v1::EvaluatePolicyResponse* response) override {
    absl::MutexLock lock(&mutex_);
    last_eval_ = *request;
    response->set_mode(request->mode());
    response->set_eval_samples(10);
    response->set_activation_bits(8);
    return grpc::Status::OK;
  }

  grpc::Status CancelJob(grpc::ServerContext*, const v1::CancelJobRequest*,
                         v1::Job*) override {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "job job-1 already finished");
  }

  // Knows the file "KNOWN" (no chunks wanted); records every upload.
  grpc::Status UploadArtifact(
      grpc::ServerContext* context,
      grpc::ServerReader<v1::UploadArtifactRequest>* reader,
      v1::Artifact* artifact) override {
    v1::UploadArtifactRequest message;
    if (!reader->Read(&message) || !message.has_info()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "info: required");
    }
    const v1::ArtifactInfo info = message.info();
    const bool known = info.sha256() == Sha256Hex("KNOWN");
    context->AddInitialMetadata("mixq-artifact-existing",
                                known ? "true" : "false");
    std::vector<size_t> chunks;
    if (!known) {
      reader->SendInitialMetadata();
      while (reader->Read(&message)) chunks.push_back(message.chunk().size());
    }
    absl::MutexLock lock(&mutex_);
    uploads_.push_back({info, chunks});
    artifact->set_sha256(info.sha256());
    artifact->set_size_bytes(info.size_bytes());
    artifact->set_existing(known);
    return grpc::Status::OK;
  }

  // "job-1" exports kExported in two chunks, named as the server names them;
  // "job-damaged" the same with a wrong checksum; any other job has not
  // succeeded.
  grpc::Status ExportModel(
      grpc::ServerContext*, const v1::ExportModelRequest* request,
      grpc::ServerWriter<v1::ExportChunk>* writer) override {
    {
      absl::MutexLock lock(&mutex_);
      last_export_ = *request;
    }
    if (request->job_id() != "job-1" && request->job_id() != "job-damaged") {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "job is RUNNING");
    }
    const std::string data = absl::StrCat(kExported, request->format());
    v1::ExportChunk chunk;
    chunk.set_total_bytes(static_cast<int64_t>(data.size()));
    chunk.set_sha256(request->job_id() == "job-1" ? Sha256Hex(data)
                                                  : Sha256Hex("other"));
    chunk.set_filename(request->policy_id().empty()
                           ? request->job_id() + ".qdq.onnx"
                           : absl::StrCat(request->job_id(), ".",
                                          request->policy_id(), ".qdq.onnx"));
    chunk.set_data(data.substr(0, 3));
    writer->Write(chunk);
    v1::ExportChunk rest;
    rest.set_data(data.substr(3));
    writer->Write(rest);
    return grpc::Status::OK;
  }

  struct Upload {
    v1::ArtifactInfo info;
    std::vector<size_t> chunks;  // their sizes
  };
  std::vector<Upload> uploads() {
    absl::MutexLock lock(&mutex_);
    return uploads_;
  }

  v1::SubmitJobRequest last_submit() {
    absl::MutexLock lock(&mutex_);
    return last_submit_;
  }
  v1::ListJobsRequest last_list() {
    absl::MutexLock lock(&mutex_);
    return last_list_;
  }
  v1::QueryBestPoliciesRequest last_best() {
    absl::MutexLock lock(&mutex_);
    return last_best_;
  }
  v1::GetParetoFrontRequest last_pareto() {
    absl::MutexLock lock(&mutex_);
    return last_pareto_;
  }
  v1::EvaluatePolicyRequest last_eval() {
    absl::MutexLock lock(&mutex_);
    return last_eval_;
  }
  v1::ExportModelRequest last_export() {
    absl::MutexLock lock(&mutex_);
    return last_export_;
  }

 private:
  inline static const std::map<std::string, std::vector<std::string>>
      kScripts =
          {
              {"job-1",
               {R"pb(state: QUEUED phase: "queued")pb",
                R"pb(state: RUNNING
                     phase: "warmup"
                     avg_bits: 8
                     target_avg_bits: 4
                     val_accuracy: nan
                     fp32_val_accuracy: 0.91
                     progress: 0.1)pb",
                R"pb(state: RUNNING
                     phase: "search"
                     step: 1
                     avg_bits: 6
                     target_avg_bits: 4
                     accuracy: 0.9
                     val_accuracy: 0.89
                     fp32_val_accuracy: 0.91
                     policy_id: "step-1"
                     progress: 0.5)pb",
                R"pb(state: SUCCEEDED
                     phase: "done"
                     step: 2
                     avg_bits: 4
                     size_bytes: 4096
                     target_avg_bits: 4
                     accuracy: 0.88
                     val_accuracy: 0.87
                     fp32_val_accuracy: 0.91
                     policy_id: "final"
                     progress: 1)pb"}},
              {"job-failed",
               {R"pb(state: RUNNING phase: "loading")pb",
                R"pb(state: FAILED
                     phase: "done"
                     error: "inputs: expected float32")pb"}},
              {"job-cancelled", {R"pb(state: CANCELLED phase: "done")pb"}},
              {"job-cut", {R"pb(state: RUNNING phase: "search" step: 1)pb"}},
          };

  absl::Mutex mutex_;
  v1::SubmitJobRequest last_submit_ ABSL_GUARDED_BY(mutex_);
  v1::ListJobsRequest last_list_ ABSL_GUARDED_BY(mutex_);
  v1::QueryBestPoliciesRequest last_best_ ABSL_GUARDED_BY(mutex_);
  v1::GetParetoFrontRequest last_pareto_ ABSL_GUARDED_BY(mutex_);
  v1::EvaluatePolicyRequest last_eval_ ABSL_GUARDED_BY(mutex_);
  v1::ExportModelRequest last_export_ ABSL_GUARDED_BY(mutex_);
  std::vector<Upload> uploads_ ABSL_GUARDED_BY(mutex_);
};

// RunCli against FakeMixq on 127.0.0.1:0.
class RunCliFakeServerTest : public testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port, 0);
    address_ = "127.0.0.1:" + std::to_string(port);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  // Runs `mixq --server <fake> args...`, returning the exit code.
  int Run(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    args.insert(args.begin(), {"--server", address_, "--timeout", "10"});
    return RunCli(args, out_, err_);
  }

  FakeMixq service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::ostringstream out_;
  std::ostringstream err_;
};

TEST_F(RunCliFakeServerTest, SubmitPrintsTheJobId) {
  TempDir dir;
  WriteInputs(dir.path());
  const SubmitOptions o = MinimalSubmit(dir.path());
  EXPECT_EQ(Run({"submit", "--model", o.model, "--inputs", o.inputs, "--labels",
                 o.labels, "--calib-size", "10", "--bits", "8,4",
                 "--target-avg-bits", "5", "--name", "n"}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(out_.str(), "job-1\n");
  const v1::SubmitJobRequest request = service_.last_submit();
  EXPECT_EQ(request.spec().model().content(), "MODEL");
  EXPECT_EQ(request.spec().name(), "n");
  EXPECT_EQ(request.spec().search().budget().avg_bits(), 5);
}

// A model with several inputs: one .npy per input, packed into one .npz keyed
// by input name (stored members, each file's bytes as they are).
TEST_F(RunCliFakeServerTest, SubmitPacksNamedInputsIntoOneNpz) {
  TempDir dir;
  WriteInputs(dir.path());
  WriteValidationFiles(dir.path());
  const SubmitOptions o = MinimalSubmit(dir.path());
  const std::string mask = (dir.path() / "vx.npy").string();
  EXPECT_EQ(
      Run({"submit", "--model", o.model, "--inputs", "input_ids=" + o.inputs,
           "--inputs", "attention_mask=" + mask, "--labels", o.labels,
           "--calib-size", "10", "--bits", "8,4", "--target-avg-bits", "5"}),
      kExitOk)
      << err_.str();
  const v1::SubmitJobRequest submitted = service_.last_submit();
  const v1::DataSource& inputs = submitted.spec().inputs();
  const std::string& npz = inputs.content();
  EXPECT_EQ(npz.substr(0, 4), std::string("PK\x03\x04", 4));
  const size_t ids = npz.find("input_ids.npy");
  const size_t masks = npz.find("attention_mask.npy");
  ASSERT_NE(ids, std::string::npos);
  ASSERT_NE(masks, std::string::npos);
  EXPECT_LT(ids, masks);
  EXPECT_NE(npz.find("INPUTS"), std::string::npos);
  EXPECT_NE(npz.find("VAL_INPUTS"), std::string::npos);
  EXPECT_EQ(inputs.filename(), "inputs.npz");
  // A missing file names the flag and the path.
  EXPECT_EQ(
      Run({"submit", "--model", o.model, "--inputs", "input_ids=" + o.inputs,
           "--inputs", "attention_mask=nope.npy", "--labels", o.labels,
           "--calib-size", "10", "--bits", "8,4", "--target-avg-bits", "5"}),
      kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("--inputs"));
  EXPECT_THAT(err_.str(), HasSubstr("nope.npy"));
}

TEST_F(RunCliFakeServerTest, SubmitSendsTheStrategy) {
  TempDir dir;
  WriteInputs(dir.path());
  const SubmitOptions o = MinimalSubmit(dir.path());
  EXPECT_EQ(
      Run({"submit", "--model", o.model, "--inputs", o.inputs, "--labels",
           o.labels, "--calib-size", "10", "--bits", "8,4", "--target-avg-bits",
           "5", "--strategy", "knapsack", "--total-finetune-steps", "300"}),
      kExitOk)
      << err_.str();
  const v1::SearchOptions search = service_.last_submit().spec().search();
  EXPECT_EQ(search.strategy(), "knapsack");
  EXPECT_EQ(search.total_finetune_steps(), 300);
  EXPECT_EQ(search.selection(), "");
  EXPECT_EQ(search.hutchinson_samples(), 0);
}

TEST_F(RunCliFakeServerTest, SubmitJsonAndWatch) {
  TempDir dir;
  WriteInputs(dir.path());
  const SubmitOptions o = MinimalSubmit(dir.path());
  EXPECT_EQ(Run({"--json", "submit", "--model", o.model, "--inputs", o.inputs,
                 "--labels", o.labels, "--calib-size", "10", "--bits", "8,4",
                 "--target-avg-bits", "5", "--watch"}),
            kExitOk)
      << err_.str();
  // JSON Lines: the response, then one object per event.
  std::vector<std::string> lines;
  std::istringstream in(out_.str());
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  // No summary after the last event: every line is JSON.
  ASSERT_EQ(lines.size(), 5u) << out_.str();
  EXPECT_THAT(lines[0], HasSubstr("\"existing\":false"));
  EXPECT_THAT(lines[0], HasSubstr("\"id\":\"job-1\""));
  EXPECT_THAT(lines[1], HasSubstr("\"state\":\"QUEUED\""));
  EXPECT_THAT(lines[2], HasSubstr("\"val_accuracy\":\"NaN\""));
  EXPECT_THAT(lines[4], HasSubstr("\"state\":\"SUCCEEDED\""));
  EXPECT_THAT(lines[4], HasSubstr("\"policy_id\":\"final\""));
}

TEST_F(RunCliFakeServerTest, Status) {
  EXPECT_EQ(Run({"status", "job-1"}), kExitOk) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("state:           RUNNING\n"));
  EXPECT_THAT(out_.str(),
              HasSubstr("validation:      100 samples (default: the last 10 % "
                        "held out: samples [900, 1000) of x.npy), FP32 val acc "
                        "93.0%\n"));
  EXPECT_EQ(Run({"status", "job-1", "--json"}), kExitOk) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("\"steps_done\": 2"));
  EXPECT_THAT(out_.str(), HasSubstr("\"val_samples\": 100"));
}

TEST_F(RunCliFakeServerTest, NotFoundExitsThree) {
  EXPECT_EQ(Run({"status", "job-x"}), kExitNotFound);
  EXPECT_EQ(out_.str(), "");
  EXPECT_EQ(err_.str(), "error: NOT_FOUND: job \"job-x\" not found\n");
}

TEST_F(RunCliFakeServerTest, FailedPreconditionExitsTwo) {
  EXPECT_EQ(Run({"cancel", "job-1"}), kExitUsage);
  EXPECT_EQ(err_.str(),
            "error: FAILED_PRECONDITION: job job-1 already finished\n");
}

TEST_F(RunCliFakeServerTest, ListSendsTheFilter) {
  EXPECT_EQ(Run({"list", "--state", "running", "--limit", "5"}), kExitOk)
      << err_.str();
  EXPECT_THAT(out_.str(), StartsWith("ID     NAME  STATE"));
  EXPECT_EQ(service_.last_list().state(), v1::RUNNING);
  EXPECT_EQ(service_.last_list().limit(), 5);
}

TEST_F(RunCliFakeServerTest, Best) {
  EXPECT_EQ(Run({"best", "job-1", "--top-k", "2", "--max-size-bytes", "5000"}),
            kExitOk)
      << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("layers: w1/w2\n"));
  EXPECT_THAT(out_.str(), HasSubstr("8/4"));
  EXPECT_EQ(service_.last_best().top_k(), 2);
  EXPECT_EQ(service_.last_best().max_size_bytes(), 5000);

  EXPECT_EQ(Run({"--json", "best", "job-1"}), kExitOk) << err_.str();
  for (const char* key : {"\"job_id\"", "\"policies\"", "\"avg_bits\"",
                          "\"layers\"", "\"name\"", "\"bits\""}) {
    EXPECT_THAT(out_.str(), HasSubstr(key)) << key;
  }
}

TEST_F(RunCliFakeServerTest, BestShowsThePolicyAndBothAccuracies) {
  EXPECT_EQ(Run({"best", "job-1"}), kExitOk) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("RANK  POLICY  AVG BITS  SIZE (KiB)  BOPS  "
                                    "VAL ACC  CALIB ACC"));
  EXPECT_THAT(out_.str(), HasSubstr("   1  final       5.50         4.0     -  "
                                    "  87.5%      90.0%"));
}

TEST_F(RunCliFakeServerTest, BestByModelHash) {
  const std::string hash(64, 'c');
  EXPECT_EQ(Run({"best", "--model-sha256", hash, "--max-bops", "1e9"}), kExitOk)
      << err_.str();
  EXPECT_EQ(service_.last_best().job_id(), "");
  EXPECT_EQ(service_.last_best().model_sha256(), hash);
  EXPECT_TRUE(service_.last_best().same_model());
  EXPECT_EQ(service_.last_best().max_bops(), 1e9);

  EXPECT_EQ(Run({"best", "job-1", "--same-model"}), kExitOk) << err_.str();
  EXPECT_EQ(service_.last_best().job_id(), "job-1");
  EXPECT_TRUE(service_.last_best().same_model());
  EXPECT_EQ(service_.last_best().model_sha256(), "");
}

TEST_F(RunCliFakeServerTest, Pareto) {
  EXPECT_EQ(Run({"pareto", "job-1"}), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(),
            "POLICY  STRATEGY     AVG BITS  SIZE (KiB)  BOPS  VAL ACC  "
            "VAL LOSS  CALIB ACC\n"
            "fp32    -               32.00        16.0  320K    90.0%    "
            "0.0000          -\n"
            "final   progressive      3.00         2.0   30K    78.0%    "
            "0.0000      80.0%\n"
            "step-1  progressive      6.00         4.0   60K    88.0%    "
            "0.0000      90.0%\n");
  EXPECT_EQ(service_.last_pareto().job_id(), "job-1");
  EXPECT_FALSE(service_.last_pareto().same_model());

  EXPECT_EQ(Run({"pareto", "job-1", "--same-model"}), kExitOk) << err_.str();
  EXPECT_TRUE(service_.last_pareto().same_model());
  EXPECT_THAT(out_.str(), StartsWith("model: " + std::string(64, 'c') +
                                     "\nPOLICY  JOB    STRATEGY"));
  EXPECT_THAT(out_.str(), HasSubstr("step-1  job-0  progressive"));

  const std::string hash(64, 'c');
  EXPECT_EQ(Run({"pareto", "--model-sha256", hash}), kExitOk) << err_.str();
  EXPECT_EQ(service_.last_pareto().job_id(), "");
  EXPECT_EQ(service_.last_pareto().model_sha256(), hash);
  EXPECT_TRUE(service_.last_pareto().same_model());

  EXPECT_EQ(Run({"--json", "pareto", "job-1"}), kExitOk) << err_.str();
  for (const char* field :
       {"\"policies\"", "\"policy_id\": \"step-1\"", "\"val_accuracy\": 0.88",
        "\"fp32_size_bytes\": 16384", "\"fp32_val_accuracy\": 0.9"}) {
    EXPECT_THAT(out_.str(), HasSubstr(field)) << field;
  }

  EXPECT_EQ(Run({"pareto", "job-x"}), kExitNotFound);
  EXPECT_EQ(err_.str(), "error: NOT_FOUND: no such job\n");
}

TEST_F(RunCliFakeServerTest, Results) {
  EXPECT_EQ(Run({"results", "job-1"}), kExitOk) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("final: avg 4.00 bits"));
}

TEST_F(RunCliFakeServerTest, WatchSucceeded) {
  // The validation accuracy is "-" until the first kept policy is measured;
  // the end names the final policy and how to save it.
  EXPECT_EQ(Run({"watch", "job-1"}), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(),
            "QUEUED queued 0%\n"
            "RUNNING warmup 10% avg 8.00 bits → 4.00 calib acc 0.0% val acc - "
            "loss 0.0000\n"
            "RUNNING search 50% step 1 avg 6.00 bits → 4.00 calib acc 90.0% "
            "val acc 89.0% loss 0.0000\n"
            "SUCCEEDED done 100% step 2 avg 4.00 bits → 4.00 calib acc 88.0% "
            "val acc 87.0% loss 0.0000\n"
            "done: policy final, avg 4.00 bits, 4.0 KiB, val acc 87.0% (FP32 "
            "91.0%)\n"
            "export: mixq export job-1 -o job-1.qdq.onnx; every kept policy: "
            "mixq pareto job-1\n");
  EXPECT_EQ(err_.str(), "");

  EXPECT_EQ(Run({"--tty", "watch", "job-1"}), kExitOk) << err_.str();
  EXPECT_THAT(out_.str(),
              StartsWith("\r[..........] 0% queued\x1b[K\r[#.........] 10% "
                         "warmup avg 8.00 bits → 4.00 calib acc 0.0% val acc "
                         "-\x1b[K\r[#####.....] 50%"));
  // The bar's line ends before the summary.
  EXPECT_THAT(out_.str(), HasSubstr("val acc 87.0%\x1b[K\ndone: policy final"));
  EXPECT_EQ(out_.str().back(), '\n');
}

TEST_F(RunCliFakeServerTest, WatchFailedPrintsNoSummary) {
  EXPECT_EQ(Run({"watch", "job-failed"}), kExitJobFailed);
  EXPECT_THAT(out_.str(), Not(HasSubstr("mixq export")));
}

TEST_F(RunCliFakeServerTest, WatchFailedOrCancelledExitsOne) {
  EXPECT_EQ(Run({"watch", "job-failed"}), kExitJobFailed);
  EXPECT_EQ(err_.str(),
            "error: job job-failed failed: inputs: expected float32\n");
  EXPECT_EQ(Run({"watch", "job-cancelled"}), kExitJobFailed);
  EXPECT_EQ(err_.str(), "job job-cancelled was cancelled\n");
}

TEST_F(RunCliFakeServerTest, WatchStreamEndingEarlyExitsFour) {
  EXPECT_EQ(Run({"watch", "job-cut"}), kExitRpcError);
  EXPECT_THAT(err_.str(), HasSubstr("ended in state RUNNING"));
  EXPECT_EQ(Run({"watch", "job-unknown"}), kExitNotFound);
  EXPECT_EQ(err_.str(), "error: NOT_FOUND: no such job\n");
}

TEST_F(RunCliFakeServerTest, UploadSendsMiBChunksAndPrintsTheReference) {
  TempDir dir;
  const std::string path = (dir.path() / "big.bin").string();
  const std::string content((5 << 20) / 2, 'z');  // 2.5 MiB
  ASSERT_TRUE(WriteFile(path, content).ok());
  EXPECT_EQ(Run({"upload", path}), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(), "sha256:" + Sha256Hex(content) + "\n");
  EXPECT_EQ(err_.str(), "");
  const auto uploads = service_.uploads();
  ASSERT_EQ(uploads.size(), 1u);
  EXPECT_EQ(uploads[0].info.sha256(), Sha256Hex(content));
  EXPECT_EQ(uploads[0].info.size_bytes(), 5 << 19);
  EXPECT_EQ(uploads[0].info.filename(), "big.bin");
  EXPECT_THAT(uploads[0].chunks,
              ::testing::ElementsAre(1 << 20, 1 << 20, 1 << 19));

  EXPECT_EQ(Run({"--json", "upload", path}), kExitOk) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("\"sha256\": \"" + Sha256Hex(content)));
}

TEST_F(RunCliFakeServerTest, UploadOfAKnownFileSendsNoChunks) {
  TempDir dir;
  const std::string path = (dir.path() / "known.bin").string();
  ASSERT_TRUE(WriteFile(path, "KNOWN").ok());
  EXPECT_EQ(Run({"upload", path}), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(), "sha256:" + Sha256Hex("KNOWN") + "\n");
  EXPECT_EQ(err_.str(), "note: the server had this file already\n");
  ASSERT_EQ(service_.uploads().size(), 1u);
  EXPECT_TRUE(service_.uploads()[0].chunks.empty());
}

TEST_F(RunCliFakeServerTest, SubmitUploadSendsReferencesWithFilenames) {
  TempDir dir;
  WriteInputs(dir.path());
  const SubmitOptions o = MinimalSubmit(dir.path());
  const std::string labels_ref = "sha256:" + Sha256Hex("given");
  EXPECT_EQ(Run({"submit", "--model", o.model, "--inputs", o.inputs, "--labels",
                 labels_ref, "--calib-size", "10", "--bits", "8,4",
                 "--target-avg-bits", "5", "--upload"}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(out_.str(), "job-1\n");
  EXPECT_THAT(err_.str(), HasSubstr("uploaded " + o.model +
                                    ": sha256:" + Sha256Hex("MODEL")));
  EXPECT_EQ(service_.uploads().size(), 2u);  // not the reference
  const v1::JobSpec spec = service_.last_submit().spec();
  EXPECT_EQ(spec.model().artifact_sha256(), Sha256Hex("MODEL"));
  EXPECT_EQ(spec.model().filename(), "model.onnx");
  EXPECT_EQ(spec.inputs().artifact_sha256(), Sha256Hex("INPUTS"));
  EXPECT_EQ(spec.inputs().filename(), "x.npy");
  EXPECT_EQ(spec.labels().artifact_sha256(), Sha256Hex("given"));
  EXPECT_EQ(spec.labels().filename(), "");
}

TEST_F(RunCliFakeServerTest, SubmitSendsTheValidationSet) {
  TempDir dir;
  WriteInputs(dir.path());
  WriteValidationFiles(dir.path());
  const SubmitOptions o = MinimalSubmit(dir.path());
  const std::string val_inputs = (dir.path() / "vx.npy").string();
  const std::string val_labels = (dir.path() / "vy.npy").string();
  EXPECT_EQ(
      Run({"submit", "--model", o.model, "--inputs", o.inputs, "--labels",
           o.labels, "--calib-size", "10", "--bits", "8,4", "--target-avg-bits",
           "5", "--val-inputs", val_inputs, "--val-labels", val_labels}),
      kExitOk)
      << err_.str();
  v1::JobSpec spec = service_.last_submit().spec();
  EXPECT_EQ(spec.val_inputs().content(), "VAL_INPUTS");
  EXPECT_EQ(spec.val_labels().content(), "VAL_LABELS");
  EXPECT_EQ(spec.val_size(), 0);

  EXPECT_EQ(Run({"submit", "--model", o.model, "--inputs", o.inputs, "--labels",
                 o.labels, "--calib-size", "10", "--bits", "8,4",
                 "--target-avg-bits", "5", "--val-size", "300"}),
            kExitOk)
      << err_.str();
  spec = service_.last_submit().spec();
  EXPECT_EQ(spec.val_size(), 300);
  EXPECT_FALSE(spec.has_val_inputs());
  EXPECT_FALSE(spec.has_val_labels());

  // Half a validation set never reaches the server.
  EXPECT_EQ(Run({"submit", "--model", o.model, "--inputs", o.inputs, "--labels",
                 o.labels, "--calib-size", "10", "--bits", "8,4",
                 "--target-avg-bits", "5", "--val-labels", val_labels}),
            kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("--val-labels: needs --val-inputs"));
}

TEST_F(RunCliFakeServerTest, UploadIncludesTheValidationFiles) {
  TempDir dir;
  WriteInputs(dir.path());
  WriteValidationFiles(dir.path());
  const SubmitOptions o = MinimalSubmit(dir.path());
  const std::string val_inputs = (dir.path() / "vx.npy").string();
  const std::string val_labels_ref = "sha256:" + Sha256Hex("given");
  EXPECT_EQ(Run({"submit", "--model", o.model, "--inputs", o.inputs, "--labels",
                 o.labels, "--calib-size", "10", "--bits", "8,4",
                 "--target-avg-bits", "5", "--val-inputs", val_inputs,
                 "--val-labels", val_labels_ref, "--upload"}),
            kExitOk)
      << err_.str();
  EXPECT_THAT(err_.str(), HasSubstr("uploaded " + val_inputs +
                                    ": sha256:" + Sha256Hex("VAL_INPUTS")));
  EXPECT_EQ(service_.uploads().size(), 4u);  // not the reference
  const v1::JobSpec spec = service_.last_submit().spec();
  EXPECT_EQ(spec.val_inputs().artifact_sha256(), Sha256Hex("VAL_INPUTS"));
  EXPECT_EQ(spec.val_inputs().filename(), "vx.npy");
  EXPECT_EQ(spec.val_labels().artifact_sha256(), Sha256Hex("given"));
  EXPECT_EQ(spec.val_labels().filename(), "");

  // Without validation files, --upload leaves them unset.
  EXPECT_EQ(Run({"submit", "--model", o.model, "--inputs", o.inputs, "--labels",
                 o.labels, "--calib-size", "10", "--bits", "8,4",
                 "--target-avg-bits", "5", "--upload"}),
            kExitOk)
      << err_.str();
  EXPECT_FALSE(service_.last_submit().spec().has_val_inputs());
  EXPECT_FALSE(service_.last_submit().spec().has_val_labels());
}

TEST_F(RunCliFakeServerTest, EvalUploadsTheValidationFiles) {
  TempDir dir;
  WriteInputs(dir.path());
  WriteValidationFiles(dir.path());
  const SubmitOptions o = MinimalSubmit(dir.path());
  EXPECT_EQ(Run({"eval", "--model", o.model, "--inputs", o.inputs, "--labels",
                 o.labels, "--calib-size", "10", "--val-inputs",
                 (dir.path() / "vx.npy").string(), "--val-labels",
                 (dir.path() / "vy.npy").string(), "--upload"}),
            kExitOk)
      << err_.str();
  const v1::JobSpec spec = service_.last_eval().spec();
  EXPECT_EQ(spec.val_inputs().artifact_sha256(), Sha256Hex("VAL_INPUTS"));
  EXPECT_EQ(spec.val_inputs().filename(), "vx.npy");
  EXPECT_EQ(spec.val_labels().artifact_sha256(), Sha256Hex("VAL_LABELS"));
  EXPECT_EQ(spec.val_labels().filename(), "vy.npy");
  EXPECT_THAT(out_.str(), HasSubstr("evaluation on 10 samples"));
}

TEST_F(RunCliFakeServerTest, ExportSendsThePolicyId) {
  EXPECT_EQ(Run({"export", "job-1", "--policy-id", "step-3", "--format",
                 "policy_json", "-o", "-"}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(service_.last_export().policy_id(), "step-3");
  EXPECT_EQ(service_.last_export().format(), "policy_json");
  EXPECT_EQ(out_.str(), std::string(kExported) + "policy_json");

  EXPECT_EQ(Run({"export", "job-1", "-o", "-"}), kExitOk) << err_.str();
  EXPECT_EQ(service_.last_export().policy_id(), "");  // the final policy
}

TEST_F(RunCliFakeServerTest, ExportDefaultsToTheServersFileName) {
  TempDir dir;
  const std::filesystem::path cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir.path());
  const int code = Run({"export", "job-1", "--policy-id", "step-3"});
  std::filesystem::current_path(cwd);
  EXPECT_EQ(code, kExitOk) << err_.str();
  const std::filesystem::path written = dir.path() / "job-1.step-3.qdq.onnx";
  auto content = ReadFile(written.string());
  ASSERT_TRUE(content.ok()) << content.status();
  EXPECT_EQ(*content, std::string(kExported) + "onnx");
  EXPECT_THAT(out_.str(), HasSubstr(" bytes to job-1.step-3.qdq.onnx "));
}

TEST_F(RunCliFakeServerTest, ExportWritesTheCheckedDownload) {
  TempDir dir;
  const std::string path = (dir.path() / "m.onnx").string();
  EXPECT_EQ(Run({"export", "job-1", "--output", path}), kExitOk) << err_.str();
  const std::string expected = std::string(kExported) + "onnx";
  auto written = ReadFile(path);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(*written, expected);
  EXPECT_EQ(out_.str(), "wrote " + std::to_string(expected.size()) +
                            " bytes to " + path + " (sha256 " +
                            Sha256Hex(expected) + ")\n");

  EXPECT_EQ(Run({"--json", "export", "job-1", "-o", path}), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("\"output\": \"" + path + "\""));
  EXPECT_THAT(out_.str(), HasSubstr("\"format\": \"onnx\""));

  EXPECT_EQ(Run({"export", "job-1", "--format", "policy-json", "-o", "-"}),
            kExitOk);
  EXPECT_EQ(out_.str(), std::string(kExported) + "policy_json");
}

TEST_F(RunCliFakeServerTest, DamagedOrRefusedExportsWriteNothing) {
  TempDir dir;
  const std::string path = (dir.path() / "m.onnx").string();
  EXPECT_EQ(Run({"export", "job-damaged", "-o", path}), kExitRpcError);
  EXPECT_THAT(err_.str(), HasSubstr("arrived damaged"));
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_EQ(Run({"export", "job-running", "-o", path}), kExitUsage);
  EXPECT_EQ(err_.str(), "error: FAILED_PRECONDITION: job is RUNNING\n");
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(RunCliFakeServerTest, ReportDefaultsToJobReportHtml) {
  TempDir dir;
  const std::filesystem::path cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir.path());
  const int code = Run({"report", "job-1"});
  std::filesystem::current_path(cwd);
  EXPECT_EQ(code, kExitOk) << err_.str();
  auto page = ReadFile((dir.path() / "job-1.report.html").string());
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(*page, StartsWith("<!DOCTYPE html>"));
  // GetResults' final policy and GetParetoFront's front are both on it.
  EXPECT_THAT(*page, HasSubstr("id=\"chart-bits\""));
  EXPECT_THAT(*page, HasSubstr("id=\"chart-pareto\""));
  EXPECT_THAT(*page, HasSubstr("<td>step-1</td>"));
  EXPECT_EQ(out_.str(), "wrote " + std::to_string(page->size()) +
                            " bytes to job-1.report.html\n");
}

TEST_F(RunCliFakeServerTest, ReportToAFileStdoutOrJson) {
  TempDir dir;
  const std::string path = (dir.path() / "r.html").string();
  EXPECT_EQ(Run({"--json", "report", "job-1", "-o", path}), kExitOk)
      << err_.str();
  auto page = ReadFile(path);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(out_.str(), HasSubstr("\"output\": \"" + path + "\""));
  EXPECT_THAT(out_.str(),
              HasSubstr("\"size_bytes\": " + std::to_string(page->size())));
  EXPECT_EQ(service_.last_pareto().job_id(), "job-1");
  EXPECT_FALSE(service_.last_pareto().same_model());
  // Every kept policy of the model's jobs, for the uniform reference points.
  EXPECT_EQ(service_.last_best().job_id(), "job-1");
  EXPECT_TRUE(service_.last_best().same_model());
  EXPECT_EQ(service_.last_best().top_k(), 1000);
  EXPECT_EQ(service_.last_best().max_avg_bits(), 0);

  EXPECT_EQ(Run({"report", "job-1", "--output", "-"}), kExitOk);
  EXPECT_EQ(out_.str(), *page);
}

TEST_F(RunCliFakeServerTest, ReportOfAnUnknownJobWritesNothing) {
  TempDir dir;
  const std::string path = (dir.path() / "r.html").string();
  EXPECT_EQ(Run({"report", "job-x", "-o", path}), kExitNotFound);
  EXPECT_EQ(err_.str(), "error: NOT_FOUND: no such job\n");
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_EQ(Run({"report", "job-1", "-o",
                 (dir.path() / "no-dir" / "r.html").string()}),
            kExitUsage);
  EXPECT_THAT(err_.str(), StartsWith("error: --output: "));
}

}  // namespace
}  // namespace mixq::client
