// Request limits and ListJobs paging. Without a channel: the limits table
// covers every string and repeated field of every request the service
// takes; a table of requests at and above their limits; excerpts; stored
// specs clamped; JobPage within its byte budget. On a real server on
// 127.0.0.1:0: a request over a limit is refused naming the field and
// without echoing it, and jobs stored before the limits (a 30 MB name,
// megabytes of layer names) list through clients with gRPC's default 4 MiB
// receive limit, page by page, and through `mixq list`.
#include "server/request_limits.h"

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/cli.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/mixq.grpc.pb.h"
#include "server/job_page.h"
#include "server/server.h"
#include "storage/store.h"
#include "tests/support/server_testing.h"

namespace mixq {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::SizeIs;

constexpr size_t kDefaultClientReceiveBytes = size_t{4} << 20;

bool InTable(const std::string& field) {
  for (const server::FieldLimit& limit : server::RequestFieldLimits()) {
    if (limit.field == field) return true;
  }
  return false;
}

void CollectUnlimited(const Descriptor& message,
                      std::set<const Descriptor*>* seen,
                      std::vector<std::string>* unlimited) {
  if (!seen->insert(&message).second) return;
  for (int i = 0; i < message.field_count(); ++i) {
    const FieldDescriptor& field = *message.field(i);
    const bool text = field.type() == FieldDescriptor::TYPE_STRING;
    if ((text || field.is_repeated()) && !InTable(field.name())) {
      unlimited->push_back(field.full_name());
    }
    if (field.message_type() != nullptr) {
      CollectUnlimited(*field.message_type(), seen, unlimited);
    }
  }
}

TEST(RequestLimitsTest, EveryStringAndRepeatedFieldOfEveryRequestIsInTheTable) {
  const google::protobuf::ServiceDescriptor& service =
      *v1::SubmitJobRequest::descriptor()->file()->FindServiceByName("Mixq");
  std::set<const Descriptor*> seen;
  std::vector<std::string> unlimited;
  for (int i = 0; i < service.method_count(); ++i) {
    CollectUnlimited(*service.method(i)->input_type(), &seen, &unlimited);
  }
  EXPECT_THAT(unlimited, ::testing::IsEmpty());
}

struct LimitCase {
  std::string name;
  std::function<std::unique_ptr<google::protobuf::Message>()> request;
  std::string error;  // empty: within the limits
};

void PrintTo(const LimitCase& c, std::ostream* os) { *os << c.name; }

template <typename Request>
std::function<std::unique_ptr<google::protobuf::Message>()> Make(
    std::function<void(Request*)> fill) {
  return [fill] {
    auto request = std::make_unique<Request>();
    fill(request.get());
    return request;
  };
}

std::vector<LimitCase> LimitCases() {
  using v1::SubmitJobRequest;
  const std::string ten_mb(10 << 20, 's');
  return {
      {"NameAtTheLimit", Make<SubmitJobRequest>([](auto* r) {
         r->mutable_spec()->set_name(std::string(256, 'n'));
       }),
       ""},
      {"NameAbove", Make<SubmitJobRequest>([](auto* r) {
         r->mutable_spec()->set_name(std::string(257, 'n'));
       }),
       "spec.name: 257 bytes, above the limit of 256"},
      {"LayerNameAbove", Make<SubmitJobRequest>([](auto* r) {
         auto* search = r->mutable_spec()->mutable_search();
         for (int i = 0; i < 3; ++i) search->add_layers()->set_name("fc");
         search->mutable_layers(2)->set_name(std::string(300, 'l'));
       }),
       "spec.search.layers[2].name: 300 bytes, above the limit of 256"},
      {"TooManyBits", Make<SubmitJobRequest>([](auto* r) {
         for (int i = 0; i < 33; ++i)
           r->mutable_spec()->mutable_search()->add_bits(8);
       }),
       "spec.search.bits: 33 entries, above the limit of 32"},
      {"TooManyLayerBits", Make<SubmitJobRequest>([](auto* r) {
         auto* layer = r->mutable_spec()->mutable_search()->add_layers();
         for (int i = 0; i < 33; ++i) layer->add_bits(4);
       }),
       "spec.search.layers[0].bits: 33 entries"},
      {"TooManyActivationLevels", Make<SubmitJobRequest>([](auto* r) {
         for (int i = 0; i < 40; ++i)
           r->mutable_spec()->mutable_search()->add_activation_levels(4);
       }),
       "spec.search.activation_levels: 40 entries"},
      {"HugeStrategy", Make<SubmitJobRequest>([ten_mb](auto* r) {
         r->mutable_spec()->mutable_search()->set_strategy(ten_mb);
       }),
       "spec.search.strategy: 10485760 bytes, above the limit of 32"},
      {"LongSelection", Make<SubmitJobRequest>([](auto* r) {
         r->mutable_spec()->mutable_search()->set_selection(
             std::string(33, 'x'));
       }),
       "spec.search.selection: 33 bytes"},
      {"LongFilename", Make<SubmitJobRequest>([](auto* r) {
         r->mutable_spec()->mutable_val_inputs()->set_filename(
             std::string(1025, 'f'));
       }),
       "spec.val_inputs.filename: 1025 bytes, above the limit of 1024"},
      {"LongServerPath", Make<SubmitJobRequest>([](auto* r) {
         r->mutable_spec()->mutable_labels()->set_server_path(
             std::string(4097, 'p'));
       }),
       "spec.labels.server_path: 4097 bytes, above the limit of 4096"},
      {"LongArtifactSha", Make<SubmitJobRequest>([](auto* r) {
         r->mutable_spec()->mutable_model()->set_artifact_sha256(
             std::string(65, 'a'));
       }),
       "spec.model.artifact_sha256: 65 bytes"},
      {"LongRequestId", Make<SubmitJobRequest>([](auto* r) {
         r->set_request_id(std::string(129, 'r'));
       }),
       "request_id: 129 bytes, above the limit of 128"},
      {"ContentIsAFileNotLimitedHere", Make<SubmitJobRequest>([](auto* r) {
         r->mutable_spec()->mutable_model()->set_content(
             std::string(1 << 20, '\0'));
       }),
       ""},
      {"EvaluateTooManyLayers", Make<v1::EvaluatePolicyRequest>([](auto* r) {
         for (int i = 0; i < 4097; ++i) r->add_layers()->set_name("fc");
       }),
       "layers: 4097 entries, above the limit of 4096"},
      {"EvaluateLongMode", Make<v1::EvaluatePolicyRequest>([](auto* r) {
         r->set_mode(std::string(33, 'm'));
       }),
       "mode: 33 bytes"},
      {"GetJobLongId", Make<v1::GetJobRequest>([](auto* r) {
         r->set_job_id(std::string(65, 'j'));
       }),
       "job_id: 65 bytes, above the limit of 64"},
      {"ListLongPageToken", Make<v1::ListJobsRequest>([](auto* r) {
         r->set_page_token(std::string(65, 't'));
       }),
       "page_token: 65 bytes"},
      {"QueryLongModelSha", Make<v1::QueryBestPoliciesRequest>([](auto* r) {
         r->set_model_sha256(std::string(65, 'a'));
       }),
       "model_sha256: 65 bytes"},
      {"ParetoLongJobId", Make<v1::GetParetoFrontRequest>([](auto* r) {
         r->set_job_id(std::string(100, 'j'));
       }),
       "job_id: 100 bytes"},
      {"UploadLongFilename", Make<v1::UploadArtifactRequest>([](auto* r) {
         r->mutable_info()->set_filename(std::string(2000, 'f'));
       }),
       "info.filename: 2000 bytes, above the limit of 1024"},
      {"UploadLongSha", Make<v1::UploadArtifactRequest>([](auto* r) {
         r->mutable_info()->set_sha256(std::string(65, 'a'));
       }),
       "info.sha256: 65 bytes"},
      {"ExportLongPolicyId", Make<v1::ExportModelRequest>([](auto* r) {
         r->set_policy_id(std::string(33, 'p'));
       }),
       "policy_id: 33 bytes, above the limit of 32"},
      {"ExportLongFormat", Make<v1::ExportModelRequest>([](auto* r) {
         r->set_format(std::string(33, 'o'));
       }),
       "format: 33 bytes"},
  };
}

class RequestLimitCaseTest : public ::testing::TestWithParam<LimitCase> {};

TEST_P(RequestLimitCaseTest, CheckedWithoutQuotingTheValue) {
  const LimitCase& c = GetParam();
  const absl::Status status = server::CheckRequestLimits(*c.request());
  if (c.error.empty()) {
    EXPECT_TRUE(status.ok()) << status;
    return;
  }
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_THAT(status.message(), HasSubstr(c.error));
  EXPECT_LT(status.message().size(), 100u) << status;
}

INSTANTIATE_TEST_SUITE_P(Table, RequestLimitCaseTest,
                         ::testing::ValuesIn(LimitCases()),
                         [](const ::testing::TestParamInfo<LimitCase>& info) {
                           return info.param.name;
                         });

TEST(ExcerptTest, CutsLongValuesAtACharacterBoundary) {
  EXPECT_EQ(server::Excerpt("short"), "short");
  EXPECT_EQ(server::Excerpt(std::string(64, 'x')), std::string(64, 'x'));
  const std::string cut = server::Excerpt(std::string(10 << 20, 'x'));
  EXPECT_EQ(cut, std::string(61, 'x') + "…");
  // Two-byte characters: the cut never splits one.
  std::string accents;
  for (int i = 0; i < 100; ++i) accents += "é";
  const std::string cut_accents = server::Excerpt(accents, 10);
  EXPECT_LE(cut_accents.size(), 10u);
  EXPECT_EQ(cut_accents, "ééé…");
}

TEST(ClampTest, StoredSpecStringsComeBackWithinTheLimits) {
  v1::JobSpec spec;
  spec.set_name(std::string(30 << 20, 'n'));
  spec.mutable_model()->set_filename(std::string(5000, 'f'));
  spec.mutable_search()->set_strategy("knapsack");
  server::ClampToRequestLimits(&spec);
  EXPECT_THAT(spec.name(), SizeIs(256));
  EXPECT_THAT(spec.name(), EndsWith("…"));
  EXPECT_THAT(spec.model().filename(), SizeIs(1024));
  EXPECT_EQ(spec.search().strategy(), "knapsack");
  v1::SubmitJobRequest request;
  *request.mutable_spec() = spec;
  EXPECT_TRUE(server::CheckRequestLimits(request).ok());
}

v1::Job JobWithLayerBytes(const std::string& id, size_t bytes) {
  v1::Job job;
  job.set_id(id);
  job.mutable_spec()->set_name(id);
  constexpr size_t kNameBytes = 1000;
  for (size_t done = 0; done < bytes; done += kNameBytes) {
    job.add_layers()->set_name(std::string(kNameBytes, 'l'));
  }
  return job;
}

TEST(JobPageTest, StopsBeforeTheByteBudgetAndContinuesWithTheNextJob) {
  server::JobPage page(100, size_t{3} << 20);
  EXPECT_TRUE(page.Add(JobWithLayerBytes("job-1", 1 << 20)));
  EXPECT_TRUE(page.Add(JobWithLayerBytes("job-2", 1 << 20)));
  EXPECT_FALSE(page.Add(JobWithLayerBytes("job-3", 1 << 20)));
  EXPECT_FALSE(page.Add(JobWithLayerBytes("job-4", 10)));  // ended
  const v1::ListJobsResponse reply = std::move(page).Finish();
  EXPECT_THAT(reply.jobs(), SizeIs(2));
  EXPECT_EQ(reply.next_page_token(), "job-2");
  EXPECT_LE(reply.ByteSizeLong(), (size_t{3} << 20) + 100);
}

TEST(JobPageTest, StopsAtTheCountWithATokenOnlyWhenMoreFollow) {
  server::JobPage full(2, size_t{3} << 20);
  EXPECT_TRUE(full.Add(JobWithLayerBytes("job-1", 10)));
  EXPECT_TRUE(full.Add(JobWithLayerBytes("job-2", 10)));
  EXPECT_FALSE(full.Add(JobWithLayerBytes("job-3", 10)));
  EXPECT_EQ(std::move(full).Finish().next_page_token(), "job-2");

  server::JobPage last(2, size_t{3} << 20);
  EXPECT_TRUE(last.Add(JobWithLayerBytes("job-1", 10)));
  EXPECT_TRUE(last.Add(JobWithLayerBytes("job-2", 10)));
  EXPECT_EQ(std::move(last).Finish().next_page_token(), "");
}

TEST(JobPageTest, AJobLargerThanTheBudgetIsListedWithoutSpecAndLayers) {
  server::JobPage page(100, size_t{3} << 20);
  EXPECT_TRUE(page.Add(JobWithLayerBytes("job-huge", 6 << 20)));
  EXPECT_TRUE(page.Add(JobWithLayerBytes("job-next", 10)));
  const v1::ListJobsResponse reply = std::move(page).Finish();
  ASSERT_THAT(reply.jobs(), SizeIs(2));
  EXPECT_EQ(reply.jobs(0).id(), "job-huge");
  EXPECT_FALSE(reply.jobs(0).has_spec());
  EXPECT_THAT(reply.jobs(0).layers(), ::testing::IsEmpty());
  EXPECT_THAT(reply.jobs(1).layers(), SizeIs(1));
  EXPECT_EQ(reply.next_page_token(), "");
  EXPECT_LE(reply.ByteSizeLong(), size_t{3} << 20);
}

// ---- End to end, on a real server.

class ServerLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           absl::StrCat(
               "mixq_limits_",
               ::testing::UnitTest::GetInstance()->current_test_info()->name(),
               "_", getpid());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override {
    stub_.reset();
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  void StartServer() {
    server::ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.data_dir = dir_.string();
    options.threads = 1;
    auto server = server::Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
    // gRPC's default channel: unlimited sends, 4 MiB receives.
    stub_ = v1::Mixq::NewStub(
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }

  grpc::Status List(const v1::ListJobsRequest& request,
                    v1::ListJobsResponse* response) {
    grpc::ClientContext context;
    return stub_->ListJobs(&context, request, response);
  }

  std::filesystem::path dir_;
  std::unique_ptr<server::Server> server_;
  std::string address_;
  std::unique_ptr<v1::Mixq::Stub> stub_;
};

TEST_F(ServerLimitsTest,
       ARequestOverALimitIsRefusedNamingTheFieldNotEchoingIt) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const std::string ten_mb(10 << 20, 'x');
  struct Case {
    std::function<void(v1::JobSpec*)> fill;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[&](v1::JobSpec* s) { s->mutable_search()->set_strategy(ten_mb); },
       "spec.search.strategy: 10485760 bytes"},
      {[&](v1::JobSpec* s) { s->set_name(ten_mb); },
       "spec.name: 10485760 bytes"},
      {[&](v1::JobSpec* s) { s->mutable_inputs()->set_filename(ten_mb); },
       "spec.inputs.filename: 10485760 bytes"},
  };
  for (const Case& c : cases) {
    v1::SubmitJobRequest request;
    c.fill(request.mutable_spec());
    grpc::ClientContext context;
    v1::SubmitJobResponse response;
    const grpc::Status status = stub_->SubmitJob(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << status.error_message().substr(0, 200);
    EXPECT_THAT(status.error_message(), HasSubstr(c.field));
    EXPECT_LT(status.error_message().size(), 100u);
  }
  // An unknown strategy within the limit is quoted, briefly.
  v1::SubmitJobRequest request = testing::TinyJobRequest();
  request.mutable_spec()->mutable_search()->set_strategy(std::string(32, 'q'));
  grpc::ClientContext context;
  v1::SubmitJobResponse response;
  const grpc::Status status = stub_->SubmitJob(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("spec.search.strategy"));
  EXPECT_LT(status.error_message().size(), 200u);

  v1::ListJobsResponse listed;
  EXPECT_TRUE(List(v1::ListJobsRequest(), &listed).ok());
  EXPECT_THAT(listed.jobs(), ::testing::IsEmpty());
}

// Jobs as a server without the limits stored them: a 30 MB name, and models
// with megabytes of layer names (kept: they are the model's).
void StoreLegacyJobs(const std::filesystem::path& dir,
                     std::vector<std::string>* newest_first) {
  auto store = storage::Store::Open((dir / "mixq.db").string());
  ASSERT_TRUE(store.ok()) << store.status();
  struct Legacy {
    std::string id;
    size_t name_bytes;
    size_t layer_name_bytes;
    int layers;
  };
  const std::vector<Legacy> jobs = {
      {"job-name30mb", size_t{30} << 20, 10, 2},
      {"job-layers-a", 10, 600, 2500},  // 1.5 MB of layer names each
      {"job-layers-b", 10, 600, 2500},
      {"job-layers-c", 10, 600, 2500},
      {"job-layers6mb", 10, 1000, 6000},  // alone above a page
      {"job-small", 10, 10, 2},
  };
  int64_t created_ms = 1'000'000;
  for (const Legacy& legacy : jobs) {
    storage::JobRecord record;
    record.id = legacy.id;
    v1::JobSpec spec;
    spec.set_name(std::string(legacy.name_bytes, 'n'));
    std::string json;
    ASSERT_TRUE(google::protobuf::util::MessageToJsonString(spec, &json).ok());
    record.spec = std::move(json);
    record.state = storage::JobState::kFailed;  // not run again at start
    record.error = "interrupted";
    record.created_ms = created_ms += 1000;
    std::vector<storage::LayerRecord> layers;
    for (int l = 0; l < legacy.layers; ++l) {
      layers.push_back(
          {absl::StrCat(l, std::string(legacy.layer_name_bytes, 'l')), 10, 10});
    }
    ASSERT_TRUE((*store)->CreateJob(record, layers).ok());
    newest_first->insert(newest_first->begin(), legacy.id);
  }
}

TEST_F(ServerLimitsTest, JobsStoredBeforeTheLimitsListPageByPage) {
  std::filesystem::create_directories(dir_);
  std::vector<std::string> expected;
  ASSERT_NO_FATAL_FAILURE(StoreLegacyJobs(dir_, &expected));
  ASSERT_NO_FATAL_FAILURE(StartServer());

  std::vector<std::string> listed;
  v1::ListJobsRequest request;
  int pages = 0;
  do {
    v1::ListJobsResponse page;
    const grpc::Status status = List(request, &page);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_LE(page.ByteSizeLong(), kDefaultClientReceiveBytes);
    ASSERT_GT(page.jobs_size(), 0);
    for (const v1::Job& job : page.jobs()) {
      listed.push_back(job.id());
      EXPECT_LE(job.name().size(), 256u);
    }
    request.set_page_token(page.next_page_token());
    ++pages;
  } while (!request.page_token().empty() && pages < 20);
  EXPECT_EQ(listed, expected);
  EXPECT_GE(pages, 3);

  // --limit 1, and the 30 MB name's own job, fit too.
  request.Clear();
  request.set_limit(1);
  request.set_state(v1::FAILED);
  v1::ListJobsResponse one;
  ASSERT_TRUE(List(request, &one).ok());
  ASSERT_THAT(one.jobs(), SizeIs(1));
  EXPECT_EQ(one.next_page_token(), one.jobs(0).id());
  grpc::ClientContext context;
  v1::GetJobRequest get;
  get.set_job_id("job-name30mb");
  v1::Job job;
  const grpc::Status got = stub_->GetJob(&context, get, &job);
  ASSERT_TRUE(got.ok()) << got.error_message();
  EXPECT_THAT(job.name(), SizeIs(256));
  EXPECT_THAT(job.name(), EndsWith("…"));

  // A token no page gave.
  request.Clear();
  request.set_page_token("job-nosuchjob");
  v1::ListJobsResponse none;
  const grpc::Status bad = List(request, &none);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad.error_message(), HasSubstr("page_token"));

  // `mixq list` follows the pages.
  std::ostringstream out, err;
  EXPECT_EQ(client::RunCli({"--server", address_, "list"}, out, err), 0)
      << err.str();
  for (const std::string& id : expected) {
    EXPECT_THAT(out.str(), HasSubstr(id));
  }
}

}  // namespace
}  // namespace mixq
