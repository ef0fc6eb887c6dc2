// Re-solving budgets a job never targeted (QueryBestPoliciesRequest.resolve)
// from the sensitivities its search stored after the warm-up: a real server
// on 127.0.0.1:0 runs a small job, then answers two new budgets; the answers
// meet them, are the least-Ω policies of the stored table (brute force), and
// are where knapsack jobs with those budgets and the same seed land.
#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/mixq.grpc.pb.h"
#include "search/cost_model.h"
#include "server/server.h"
#include "storage/store.h"
#include "tests/support/npy.h"
#include "tests/support/onnx_mlp.h"
#include "tests/support/server_testing.h"
#include "tests/support/test_dir.h"

namespace mixq {
namespace {

using ::testing::HasSubstr;

constexpr int kActivationBits = 8;  // the jobs' default
constexpr uint64_t kSeed = 7;

class ResolveTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(StartServer()); }
  void TearDown() override { StopServer(); }

  void StartServer() {
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
  void StopServer() {
    stub_.reset();
    server_.reset();
  }
  std::string DatabasePath() const { return dir_.Path("data/mixq.db"); }

  // A 12-16-16-3 MLP (three quantizable layers) at 8/6/4/2 bits.
  static v1::SubmitJobRequest Job(const std::string& strategy,
                                  const v1::Budget& budget) {
    v1::SubmitJobRequest request = testing::TinyJobRequest();
    v1::JobSpec* spec = request.mutable_spec();
    spec->mutable_model()->set_content(
        testing::MakeMlpOnnx({12, 16, 16, 3}, 1));
    v1::SearchOptions* search = spec->mutable_search();
    search->clear_bits();
    for (int b : {8, 6, 4, 2}) search->add_bits(b);
    *search->mutable_budget() = budget;
    search->set_strategy(strategy);
    search->set_seed(kSeed);
    return request;
  }

  // Submits `request` and waits for the job to end; its id.
  std::string Run(const v1::SubmitJobRequest& request) {
    const std::string job_id = testing::SubmitAndWatch(*stub_, request);
    grpc::ClientContext get;
    v1::GetJobRequest get_request;
    get_request.set_job_id(job_id);
    v1::Job job;
    EXPECT_TRUE(stub_->GetJob(&get, get_request, &job).ok());
    EXPECT_EQ(job.state(), v1::SUCCEEDED) << job.error();
    return job_id;
  }

  grpc::Status Resolve(const v1::QueryBestPoliciesRequest& request,
                       v1::QueryBestPoliciesResponse* response) {
    grpc::ClientContext context;
    return stub_->QueryBestPolicies(&context, request, response);
  }

  static v1::QueryBestPoliciesRequest ResolveRequest(const std::string& job_id,
                                                     double max_avg_bits,
                                                     double max_bops) {
    v1::QueryBestPoliciesRequest request;
    request.set_job_id(job_id);
    request.set_resolve(true);
    request.set_max_avg_bits(max_avg_bits);
    request.set_max_bops(max_bops);
    return request;
  }

  // The kept allocation of a knapsack job (its step 1's only candidate).
  v1::Policy KnapsackAllocation(const std::string& job_id) {
    grpc::ClientContext context;
    v1::GetResultsRequest request;
    request.set_job_id(job_id);
    v1::GetResultsResponse results;
    EXPECT_TRUE(stub_->GetResults(&context, request, &results).ok());
    EXPECT_EQ(results.steps_size(), 2);
    if (results.steps_size() < 2 || results.steps(1).candidates_size() < 1)
      return {};
    return results.steps(1).candidates(0);
  }

  testing::ScopedTestDir dir_{"resolve"};
  std::unique_ptr<server::Server> server_;
  std::unique_ptr<v1::Mixq::Stub> stub_;
};

std::vector<int> Bits(const v1::Policy& policy) {
  std::vector<int> bits;
  for (const v1::LayerBits& layer : policy.layers())
    bits.push_back(layer.bits());
  return bits;
}

struct Best {
  search::Policy policy;
  double omega = std::numeric_limits<double>::infinity();
};

// The least Σ Ω over every policy of {8, 6, 4, 2}^layers meeting `budget`.
Best BruteForce(const storage::SensitivityRecord& table,
                const search::CostModel& cost, const search::Budget& budget) {
  Best best;
  const int layers = cost.num_layers();
  std::vector<int> column(layers, 0);
  while (true) {
    search::Policy policy(layers);
    double omega = 0;
    for (int l = 0; l < layers; ++l) {
      policy[l] = table.bits[column[l]];
      omega += table.omega[l][column[l]];
    }
    if (budget.IsMet(cost.Cost(policy, kActivationBits)) &&
        omega < best.omega) {
      best = {policy, omega};
    }
    int l = 0;
    while (l < layers && ++column[l] == static_cast<int>(table.bits.size())) {
      column[l++] = 0;
    }
    if (l == layers) return best;
  }
}

TEST_F(ResolveTest, NewBudgetsAreTheLeastOmegaAllocationsOfTheStoredTable) {
  auto model =
      engine::Model::FromOnnxBytes(testing::MakeMlpOnnx({12, 16, 16, 3}, 1));
  ASSERT_TRUE(model.ok()) << model.status();
  const search::CostModel cost = search::CostModel::ForModel(**model);
  ASSERT_EQ(cost.num_layers(), 3);

  v1::Budget five_bits;
  five_bits.set_avg_bits(5);
  const std::string job_id = Run(Job("progressive", five_bits));

  // Two budgets the job never targeted: 3.5 average bits, and 40 % of the
  // way from the lowest BOPs to the highest.
  const double max_avg_bits = 3.5;
  const double low = cost.Bops({2, 2, 2}, kActivationBits);
  const double high = cost.Bops({8, 8, 8}, kActivationBits);
  const double max_bops = std::floor(low + 0.4 * (high - low));
  const std::vector<search::Budget> budgets = {
      {search::Budget::Kind::kAvgBits, max_avg_bits},
      {search::Budget::Kind::kBops, max_bops}};
  std::vector<v1::Policy> predicted;
  for (const search::Budget& budget : budgets) {
    const bool bits = budget.kind == search::Budget::Kind::kAvgBits;
    v1::QueryBestPoliciesResponse response;
    const grpc::Status status = Resolve(
        ResolveRequest(job_id, bits ? max_avg_bits : 0, bits ? 0 : max_bops),
        &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.policies_size(), 1);
    const v1::Policy& policy = response.policies(0);
    EXPECT_EQ(policy.kind(), "predicted");
    EXPECT_EQ(policy.policy_id(), "");
    EXPECT_EQ(policy.job_id(), job_id);
    EXPECT_TRUE(std::isnan(policy.accuracy()));
    EXPECT_TRUE(std::isnan(policy.val_accuracy()));
    EXPECT_EQ(policy.activation_bits(), kActivationBits);
    ASSERT_EQ(policy.layers_size(), 3);
    EXPECT_EQ(policy.layers(0).name(), "fc0.weight");
    // Its cost is the cost model's, and meets the budget.
    const search::PolicyCost own = cost.Cost(Bits(policy), kActivationBits);
    EXPECT_DOUBLE_EQ(policy.avg_bits(), own.avg_bits);
    EXPECT_DOUBLE_EQ(policy.size_bytes(), own.size_bytes);
    EXPECT_EQ(policy.bops(), static_cast<double>(own.bops));
    EXPECT_TRUE(budget.IsMet(own)) << budget.ToString();
    predicted.push_back(policy);

    // A knapsack job with that budget and seed allocates the same policy on
    // the same warm-up table.
    v1::Budget job_budget;
    if (bits) {
      job_budget.set_avg_bits(max_avg_bits);
    } else {
      job_budget.set_bops(max_bops);
    }
    const v1::Policy allocation =
        KnapsackAllocation(Run(Job("knapsack", job_budget)));
    EXPECT_EQ(Bits(allocation), Bits(policy)) << budget.ToString();
    EXPECT_DOUBLE_EQ(allocation.omega(), policy.omega());
  }
  EXPECT_NE(Bits(predicted[0]), Bits(predicted[1]));

  // Bad requests.
  struct BadCase {
    v1::QueryBestPoliciesRequest request;
    grpc::StatusCode code;
    std::vector<std::string> message;
  };
  v1::QueryBestPoliciesRequest by_model = ResolveRequest(job_id, 4, 0);
  by_model.set_same_model(true);
  v1::QueryBestPoliciesRequest unknown = ResolveRequest("job-0000", 4, 0);
  const BadCase bad[] = {
      {ResolveRequest(job_id, 0, 0),
       grpc::StatusCode::INVALID_ARGUMENT,
       {"max_avg_bits, max_size_bytes, max_bops", "exactly one"}},
      {ResolveRequest(job_id, 4, max_bops),
       grpc::StatusCode::INVALID_ARGUMENT,
       {"max_avg_bits, max_size_bytes, max_bops", "got 2"}},
      {ResolveRequest(job_id, 1.5, 0),
       grpc::StatusCode::INVALID_ARGUMENT,
       {"max_avg_bits", "lowest reachable cost", "2 average weight bits"}},
      {ResolveRequest(job_id, 0, low - 1),
       grpc::StatusCode::INVALID_ARGUMENT,
       {"max_bops", "lowest reachable cost"}},
      {by_model, grpc::StatusCode::INVALID_ARGUMENT, {"resolve"}},
      {unknown, grpc::StatusCode::NOT_FOUND, {}},
  };
  for (const BadCase& c : bad) {
    v1::QueryBestPoliciesResponse response;
    const grpc::Status status = Resolve(c.request, &response);
    EXPECT_EQ(status.error_code(), c.code)
        << c.request.ShortDebugString() << ": " << status.error_message();
    for (const std::string& part : c.message)
      EXPECT_THAT(status.error_message(), HasSubstr(part));
  }

  // The stored table, read with the server stopped: each answer is the
  // least Ω under its budget over every policy.
  StopServer();
  {
    auto store = storage::Store::Open(DatabasePath());
    ASSERT_TRUE(store.ok()) << store.status();
    auto table = (*store)->GetSensitivities(job_id);
    ASSERT_TRUE(table.ok() && table->has_value()) << table.status();
    EXPECT_THAT((*table)->bits, ::testing::ElementsAre(8, 6, 4, 2));
    for (size_t i = 0; i < budgets.size(); ++i) {
      const Best best = BruteForce(**table, cost, budgets[i]);
      EXPECT_EQ(Bits(predicted[i]), best.policy) << budgets[i].ToString();
      EXPECT_DOUBLE_EQ(predicted[i].omega(), best.omega);
    }
    // A job from before mixq stored sensitivities: the same job, no steps.
    auto job = (*store)->GetJob(job_id);
    ASSERT_TRUE(job.ok()) << job.status();
    auto layers = (*store)->GetLayers(job_id);
    ASSERT_TRUE(layers.ok()) << layers.status();
    job->id = "job-legacy";
    job->request_id.clear();
    ASSERT_TRUE((*store)->CreateJob(*job, *layers).ok());
  }
  ASSERT_NO_FATAL_FAILURE(StartServer());
  v1::QueryBestPoliciesResponse response;
  const grpc::Status status =
      Resolve(ResolveRequest("job-legacy", 4, 0), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("no stored sensitivities"));
}

// A job stopped by a shutdown after its warm-up resumes from its
// checkpoint (its step 0 is not run again) and still ends with its table.
TEST_F(ResolveTest, AResumedJobKeepsItsTable) {
  v1::Budget two_bits;
  two_bits.set_avg_bits(2.5);
  v1::SubmitJobRequest request = Job("progressive", two_bits);
  request.mutable_spec()->mutable_search()->set_finetune_steps(5000);
  grpc::ClientContext submit;
  v1::SubmitJobResponse submitted;
  ASSERT_TRUE(stub_->SubmitJob(&submit, request, &submitted).ok());
  const std::string job_id = submitted.job().id();
  {
    // Step 0 (and its table) is recorded once the search phase starts.
    grpc::ClientContext watch;
    v1::WatchJobRequest watch_request;
    watch_request.set_job_id(job_id);
    auto reader = stub_->WatchJob(&watch, watch_request);
    v1::JobEvent event;
    while (reader->Read(&event) && event.phase() != "search") {
    }
    EXPECT_EQ(event.phase(), "search");
    watch.TryCancel();
    (void)reader->Finish();
  }
  StopServer();
  ASSERT_NO_FATAL_FAILURE(StartServer());
  grpc::ClientContext get;
  v1::GetJobRequest get_request;
  get_request.set_job_id(job_id);
  v1::Job job;
  ASSERT_TRUE(stub_->GetJob(&get, get_request, &job).ok());
  EXPECT_NE(job.state(), v1::SUCCEEDED) << "the job ended before the stop";
  grpc::ClientContext watch;
  ASSERT_TRUE(testing::WatchToEnd(*stub_, &watch, job_id).ok());

  v1::QueryBestPoliciesResponse response;
  const grpc::Status status = Resolve(ResolveRequest(job_id, 4, 0), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.policies_size(), 1);
  EXPECT_LE(response.policies(0).avg_bits(), 4);
}

}  // namespace
}  // namespace mixq
