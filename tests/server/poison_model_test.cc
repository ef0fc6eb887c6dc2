// Poison models over gRPC: models whose numbers, not their structure, are
// hostile, sent to one real server on 127.0.0.1:0.
//  - Non-finite operator attributes (Gemm alpha = inf, LeakyRelu alpha =
//    NaN) are refused at submission, naming the node and the attribute.
//  - Finite weights and attributes whose forward pass overflows float32
//    (weights of 3e38, a Gemm alpha of 1e38) are accepted; the job then ends
//    FAILED with a message naming the node, and EvaluatePolicy (dynamic,
//    static, qat) is INVALID_ARGUMENT naming it. Before, a quantizer's
//    MIXQ_CHECK aborted the server.
//  - Memory bombs (a BatchNormalization whose mean declares 2^31 - 1 values
//    over 64 bytes of data) are refused without the memory their dims ask
//    for: the process's peak RSS grows by less than kBombRssBudgetBytes.
// After every row the server still serves: a good job runs to SUCCEEDED.
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "proto/mixq.grpc.pb.h"
#include "server/server.h"
#include "tests/support/npy.h"
#include "tests/support/onnx_builder.h"
#include "tests/support/onnx_mlp.h"
#include "tests/support/peak_rss.h"
#include "tests/support/poison_mlp.h"
#include "tests/support/server_testing.h"

namespace mixq {
namespace {

using ::mixq::testing::FillFloatData;
using ::mixq::testing::InitializerNamed;
using ::mixq::testing::kHugeWeight;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr int64_t kHidden = testing::kPoisonHidden;
constexpr int kClientMessageBytes = 64 << 20;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr char kOverflow[] = "the forward pass overflowed float32";
// A bomb is refused in well under this (it once took most of a minute).
constexpr auto kBombDeadline = std::chrono::seconds(5);

using Stub = v1::Mixq::Stub;
using Mutation = std::function<void(onnx::ModelProto*)>;

onnx::NodeProto& Node(onnx::ModelProto* m, int index) {
  return *m->mutable_graph()->mutable_node(index);
}

// A BatchNormalization "/bn0" between "/fc0/Gemm" and "/relu0", with
// per-channel statistics; `mean_dims` replaces the mean's dims.
void InsertBatchNorm(onnx::ModelProto* m, int64_t mean_dims) {
  onnx::GraphProto& graph = *m->mutable_graph();
  const std::vector<std::pair<std::string, float>> stats = {{"bn0.scale", 1.0f},
                                                            {"bn0.bias", 0.0f},
                                                            {"bn0.mean", 0.0f},
                                                            {"bn0.var", 1.0f}};
  for (const auto& [name, value] : stats) {
    testing::OnnxBuilder::FillFloat(graph.add_initializer(), name, {kHidden},
                                    std::vector<float>(kHidden, value));
  }
  InitializerNamed(m, "bn0.mean").set_dims(0, mean_dims);
  Node(m, 0).set_output(0, "gemm0_raw");
  onnx::NodeProto* bn = graph.add_node();
  bn->set_op_type("BatchNormalization");
  bn->set_name("/bn0");
  for (const char* input :
       {"gemm0_raw", "bn0.scale", "bn0.bias", "bn0.mean", "bn0.var"}) {
    bn->add_input(input);
  }
  bn->add_output("gemm0");
}

std::string Serialized(const Mutation& mutate) {
  onnx::ModelProto model = testing::PoisonableMlp();
  mutate(&model);
  return model.SerializeAsString();
}

// The tiny job (a few fine-tune steps) with its model replaced.
v1::SubmitJobRequest JobWithModel(const std::string& model) {
  v1::SubmitJobRequest request = testing::TinyJobRequest(2);
  request.mutable_spec()->mutable_model()->set_content(model);
  return request;
}

class PoisonModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_dir_ = std::filesystem::path(::testing::TempDir()) /
                absl::StrCat("mixq_poison_", getpid());
    std::filesystem::remove_all(data_dir_);
    server::ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.data_dir = data_dir_.string();
    options.threads = 1;
    auto server = server::Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(kClientMessageBytes);
    args.SetMaxReceiveMessageSize(kClientMessageBytes);
    stub_ = v1::Mixq::NewStub(
        grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                  grpc::InsecureChannelCredentials(), args));
  }

  static void TearDownTestSuite() {
    stub_.reset();
    server_.reset();
    std::filesystem::remove_all(data_dir_);
  }

  // Runs `request` to its end; the final job.
  static v1::Job RunJob(const v1::SubmitJobRequest& request) {
    const std::string id = testing::SubmitAndWatch(*stub_, request);
    grpc::ClientContext context;
    v1::GetJobRequest get;
    get.set_job_id(id);
    v1::Job job;
    const grpc::Status status = stub_->GetJob(&context, get, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }

  // The server still runs a good job to the end.
  static void ExpectAGoodJobSucceeds() {
    const v1::Job job = RunJob(testing::TinyJobRequest(2));
    EXPECT_EQ(job.state(), v1::SUCCEEDED) << job.error();
  }

  static grpc::Status Submit(const v1::SubmitJobRequest& request) {
    grpc::ClientContext context;
    v1::SubmitJobResponse response;
    return stub_->SubmitJob(&context, request, &response);
  }

  static inline std::filesystem::path data_dir_;
  static inline std::unique_ptr<server::Server> server_;
  static inline std::unique_ptr<Stub> stub_;
};

// ---- Refused at submission: non-finite operator attributes.

struct RefusedCase {
  std::string name;
  Mutation poison;
  std::string message;  // a part of the INVALID_ARGUMENT message
};

void PrintTo(const RefusedCase& c, std::ostream* os) { *os << c.name; }

class RefusedPoisonTest : public PoisonModelTest,
                          public ::testing::WithParamInterface<RefusedCase> {};

TEST_P(RefusedPoisonTest, IsInvalidArgumentNamingNodeAndAttribute) {
  const grpc::Status status =
      Submit(JobWithModel(Serialized(GetParam().poison)));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr(GetParam().message));
  ExpectAGoodJobSucceeds();
}

INSTANTIATE_TEST_SUITE_P(
    Attributes, RefusedPoisonTest,
    ::testing::Values(
        RefusedCase{"GemmAlphaInfinite",
                    [](onnx::ModelProto* m) {
                      testing::SetFloat(&Node(m, 0), "alpha", kInf);
                    },
                    "attribute 'alpha' of node '/fc0/Gemm' (Gemm) is inf"},
        RefusedCase{"GemmBetaNaN",
                    [](onnx::ModelProto* m) {
                      testing::SetFloat(&Node(m, 2), "beta", kNaN);
                    },
                    "attribute 'beta' of node '/fc1/Gemm' (Gemm) is NaN"},
        RefusedCase{"LeakyReluAlphaNaN",
                    [](onnx::ModelProto* m) {
                      Node(m, 1).set_op_type("LeakyRelu");
                      testing::SetFloat(&Node(m, 1), "alpha", kNaN);
                    },
                    "attribute 'alpha' of node '/relu0' (LeakyRelu) is NaN"},
        RefusedCase{"BatchNormEpsilonInfinite",
                    [](onnx::ModelProto* m) {
                      InsertBatchNorm(m, kHidden);
                      testing::SetFloat(&Node(m, 3), "epsilon", kInf);
                    },
                    "attribute 'epsilon' of node '/bn0' (BatchNormalization) "
                    "is inf"}),
    [](const ::testing::TestParamInfo<RefusedCase>& info) {
      return info.param.name;
    });

// ---- Accepted, then failed: finite numbers that overflow.

struct OverflowCase {
  std::string name;
  Mutation poison;
  std::string node;  // the node the job's error names
};

void PrintTo(const OverflowCase& c, std::ostream* os) { *os << c.name; }

class OverflowPoisonTest : public PoisonModelTest,
                           public ::testing::WithParamInterface<OverflowCase> {
};

TEST_P(OverflowPoisonTest, JobFailsNamingTheNode) {
  const v1::Job job = RunJob(JobWithModel(Serialized(GetParam().poison)));
  EXPECT_EQ(job.state(), v1::FAILED);
  EXPECT_THAT(job.error(),
              AllOf(HasSubstr(kOverflow), HasSubstr(GetParam().node)));
  ExpectAGoodJobSucceeds();
}

TEST_P(OverflowPoisonTest, EvaluatePolicyIsInvalidArgumentInEveryMode) {
  for (const char* mode : {"dynamic", "static", "qat"}) {
    SCOPED_TRACE(mode);
    v1::EvaluatePolicyRequest request;
    *request.mutable_spec() =
        JobWithModel(Serialized(GetParam().poison)).spec();
    request.mutable_spec()->clear_search();
    request.set_default_bits(4);
    request.set_mode(mode);
    request.set_finetune_steps(2);
    grpc::ClientContext context;
    v1::EvaluatePolicyResponse response;
    const grpc::Status status =
        stub_->EvaluatePolicy(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << status.error_message();
    EXPECT_THAT(status.error_message(),
                AllOf(HasSubstr(kOverflow), HasSubstr(GetParam().node)));
  }
  ExpectAGoodJobSucceeds();
}

INSTANTIATE_TEST_SUITE_P(
    Numbers, OverflowPoisonTest,
    ::testing::Values(
        OverflowCase{"HugeFirstWeights",
                     [](onnx::ModelProto* m) {
                       FillFloatData(&InitializerNamed(m, "fc0.weight"),
                                     kHugeWeight);
                     },
                     "node '/fc0/Gemm' (Gemm)"},
        OverflowCase{"HugeLastWeights",
                     [](onnx::ModelProto* m) {
                       FillFloatData(&InitializerNamed(m, "fc1.weight"),
                                     kHugeWeight);
                     },
                     "node '/fc1/Gemm' (Gemm)"},
        OverflowCase{"GemmAlphaHuge",
                     [](onnx::ModelProto* m) {
                       testing::SetFloat(&Node(m, 0), "alpha", 1e38f);
                       FillFloatData(&InitializerNamed(m, "fc0.weight"), 1e3f);
                     },
                     "node '/fc0/Gemm' (Gemm)"}),
    [](const ::testing::TestParamInfo<OverflowCase>& info) {
      return info.param.name;
    });

// ---- Memory bombs: refused without the memory their dims declare.

TEST_F(PoisonModelTest, BatchNormStatisticsDeclaringTwoBillionValues) {
  const std::string bomb =
      Serialized([](onnx::ModelProto* m) { InsertBatchNorm(m, 2147483647); });
  const int64_t before = testing::PeakRssBytes();
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status status = Submit(JobWithModel(bomb));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  const int64_t grown = testing::PeakRssBytes() - before;
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << status.error_message();
  EXPECT_THAT(status.error_message(),
              HasSubstr("initializer 'bn0.mean' of shape [2147483647] needs "
                        "2147483647 values, has 16"));
  EXPECT_LT(grown, testing::kBombRssBudgetBytes)
      << "peak RSS grew by " << (grown >> 20) << " MiB for a " << bomb.size()
      << "-byte model";
  EXPECT_LT(elapsed, kBombDeadline);
  ExpectAGoodJobSucceeds();
}

// The same statistics with their true dims fold, and the job succeeds: the
// bomb is refused for its dims, not for having a BatchNormalization.
TEST_F(PoisonModelTest, TheSameBatchNormWithHonestDimsRuns) {
  const v1::Job job = RunJob(JobWithModel(
      Serialized([](onnx::ModelProto* m) { InsertBatchNorm(m, kHidden); })));
  EXPECT_EQ(job.state(), v1::SUCCEEDED) << job.error();
}

}  // namespace
}  // namespace mixq
