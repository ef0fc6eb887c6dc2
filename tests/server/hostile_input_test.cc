// Hostile input over gRPC: one real server on 127.0.0.1:0 and a table of
// malformed requests — models crafted against the validator, bad search
// options, impossible budgets, bad calibration data, malformed ids — sent
// with a gRPC stub. Each row expects a status code and a part of the
// message, and after every row the server must still answer. A second
// server with a small message limit refuses an oversize request.
#include <unistd.h>

#include <cmath>
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
#include "tests/support/onnx_mlp.h"
#include "tests/support/server_testing.h"

namespace mixq {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kFeatures = 12;
constexpr int64_t kClasses = 3;
constexpr int64_t kSamples = 200;
constexpr int32_t kCalibSize = 50;
constexpr int kClientMessageBytes = 64 << 20;
// The second server's message limit, and a model larger than it.
constexpr int kSmallMessageBytes = 64 << 10;
constexpr size_t kOversizeBytes = 128 << 10;

using Stub = v1::Mixq::Stub;
using Call = std::function<grpc::Status(Stub&)>;

// The test model: input [batch, 12] -> fc0 (Gemm) -> relu -> fc1 -> logits.
onnx::ModelProto Mlp() {
  onnx::ModelProto model;
  model.ParseFromString(testing::MakeMlpOnnx({kFeatures, 16, kClasses}, 1));
  return model;
}

onnx::TensorProto& Weight(onnx::ModelProto* m) {
  return *m->mutable_graph()->mutable_initializer(0);  // fc0.weight [16, 12]
}

std::string Serialized(const std::function<void(onnx::ModelProto*)>& mutate) {
  onnx::ModelProto model = Mlp();
  mutate(&model);
  return model.SerializeAsString();
}

// A small job the server accepts.
v1::JobSpec TinySpec() {
  v1::JobSpec spec;
  spec.mutable_model()->set_content(Serialized([](onnx::ModelProto*) {}));
  const search::LabeledData data =
      testing::MakeTeacherData(kSamples, kFeatures, kClasses, 2);
  spec.mutable_inputs()->set_content(testing::NpyFloat32(data.inputs));
  spec.mutable_labels()->set_content(testing::NpyInt64(data.labels));
  spec.set_calib_size(kCalibSize);
  v1::SearchOptions* search = spec.mutable_search();
  for (int b : {8, 4, 2}) search->add_bits(b);
  search->mutable_budget()->set_avg_bits(3);
  search->set_finetune_steps(2);
  return spec;
}

engine::Tensor TinyInputs() {
  return testing::MakeTeacherData(kSamples, kFeatures, kClasses, 2).inputs;
}

// ---- Calls, each building its request from the tiny job.

Call Submit(std::function<void(v1::JobSpec*)> mutate) {
  return [mutate](Stub& stub) {
    v1::SubmitJobRequest request;
    *request.mutable_spec() = TinySpec();
    mutate(request.mutable_spec());
    grpc::ClientContext context;
    v1::SubmitJobResponse response;
    return stub.SubmitJob(&context, request, &response);
  };
}

Call SubmitModel(std::function<void(onnx::ModelProto*)> mutate) {
  return Submit([mutate](v1::JobSpec* spec) {
    spec->mutable_model()->set_content(Serialized(mutate));
  });
}

Call Evaluate(std::function<void(v1::EvaluatePolicyRequest*)> mutate) {
  return [mutate](Stub& stub) {
    v1::EvaluatePolicyRequest request;
    *request.mutable_spec() = TinySpec();
    request.mutable_spec()->clear_search();
    request.set_default_bits(4);
    mutate(&request);
    grpc::ClientContext context;
    v1::EvaluatePolicyResponse response;
    return stub.EvaluatePolicy(&context, request, &response);
  };
}

Call GetJob(std::string id) {
  return [id](Stub& stub) {
    v1::GetJobRequest request;
    request.set_job_id(id);
    grpc::ClientContext context;
    v1::Job job;
    return stub.GetJob(&context, request, &job);
  };
}

Call CancelJob(std::function<std::string()> id) {
  return [id](Stub& stub) {
    v1::CancelJobRequest request;
    request.set_job_id(id());
    grpc::ClientContext context;
    v1::Job job;
    return stub.CancelJob(&context, request, &job);
  };
}

Call GetResults(std::string id) {
  return [id](Stub& stub) {
    v1::GetResultsRequest request;
    request.set_job_id(id);
    grpc::ClientContext context;
    v1::GetResultsResponse response;
    return stub.GetResults(&context, request, &response);
  };
}

Call WatchJob(std::string id) {
  return [id](Stub& stub) {
    grpc::ClientContext context;
    return testing::WatchToEnd(stub, &context, id);
  };
}

Call QueryBest(std::function<void(v1::QueryBestPoliciesRequest*)> fill) {
  return [fill](Stub& stub) {
    v1::QueryBestPoliciesRequest request;
    fill(&request);
    grpc::ClientContext context;
    v1::QueryBestPoliciesResponse response;
    return stub.QueryBestPolicies(&context, request, &response);
  };
}

// The id of a job that ran to the end (set up once for the suite).
std::string& FinishedJobId() {
  static std::string id;
  return id;
}

struct HostileCase {
  std::string name;
  Call call;
  grpc::StatusCode code;
  std::string message;  // a part of the status message
};

void PrintTo(const HostileCase& c, std::ostream* os) { *os << c.name; }

constexpr grpc::StatusCode kInvalid = grpc::StatusCode::INVALID_ARGUMENT;
constexpr grpc::StatusCode kExhausted = grpc::StatusCode::RESOURCE_EXHAUSTED;

std::vector<HostileCase> Cases() {
  const std::string long_id(10000, 'j');
  return {
      // ---- Models crafted against the validator (SubmitJob).
      {"ModelNegativeDim",
       SubmitModel([](onnx::ModelProto* m) { Weight(m).set_dims(0, -16); }),
       kInvalid,
       "spec.model: initializer 'fc0.weight' has a negative dimension"},
      {"ModelHugeDeclaredDim", SubmitModel([](onnx::ModelProto* m) {
         m->mutable_graph()
             ->mutable_output(0)
             ->mutable_type()
             ->mutable_tensor_type()
             ->mutable_shape()
             ->mutable_dim(1)
             ->set_dim_value(int64_t{1} << 40);
       }),
       kExhausted, "spec.model: graph output 'logits': dim 1 is 1099511627776"},
      {"ModelOverflowingElementCount", SubmitModel([](onnx::ModelProto* m) {
         Weight(m).set_dims(0, int64_t{1} << 40);
         Weight(m).set_dims(1, int64_t{1} << 40);
       }),
       kInvalid,
       "initializer 'fc0.weight' of shape [1099511627776, "
       "1099511627776] is too large"},
      {"ModelRawDataShort", SubmitModel([](onnx::ModelProto* m) {
         Weight(m).clear_float_data();
         Weight(m).set_raw_data(std::string(100, '\0'));
       }),
       kInvalid,
       "initializer 'fc0.weight' of shape [16, 12] needs 192 "
       "values, has 25 (raw_data of 100 bytes"},
      {"ModelExternalData", SubmitModel([](onnx::ModelProto* m) {
         Weight(m).clear_float_data();
         Weight(m).set_data_location(onnx::TensorProto::EXTERNAL);
         auto* entry = Weight(m).add_external_data();
         entry->set_key("location");
         entry->set_value("../../../etc/shadow");
       }),
       kInvalid,
       "initializer 'fc0.weight' uses external data (location "
       "'../../../etc/shadow'), which is rejected"},
      {"ModelCycle", SubmitModel([](onnx::ModelProto* m) {
         m->mutable_graph()->mutable_node(0)->set_input(0, "logits");
       }),
       kInvalid, "the graph has a cycle"},
      {"ModelDuplicateOutputName", SubmitModel([](onnx::ModelProto* m) {
         m->mutable_graph()->mutable_node(1)->set_output(0, "logits");
       }),
       kInvalid, "value 'logits' is defined more than once"},
      {"ModelOutputShadowsInitializer", SubmitModel([](onnx::ModelProto* m) {
         m->mutable_graph()->mutable_node(1)->set_output(0, "fc1.bias");
       }),
       kInvalid, "value 'fc1.bias' is defined more than once"},
      {"ModelUnknownOperator", SubmitModel([](onnx::ModelProto* m) {
         m->mutable_graph()->mutable_node(1)->set_op_type("NoSuchOp");
       }),
       kInvalid, "unsupported operator 'NoSuchOp'"},
      {"ModelUnknownDomain", SubmitModel([](onnx::ModelProto* m) {
         m->mutable_graph()->mutable_node(1)->set_domain("com.evil");
       }),
       kInvalid, "unsupported operator 'com.evil.Relu'"},
      {"ModelNaNWeight", SubmitModel([](onnx::ModelProto* m) {
         Weight(m).set_float_data(5, std::numeric_limits<float>::quiet_NaN());
       }),
       kInvalid, "initializer 'fc0.weight' holds NaN at element 5"},
      {"ModelInfWeight", SubmitModel([](onnx::ModelProto* m) {
         m->mutable_graph()->mutable_initializer(1)->set_float_data(
             0, -std::numeric_limits<float>::infinity());
       }),
       kInvalid, "initializer 'fc0.bias' holds an infinite value"},
      {"ModelAbsurdNodeCount", SubmitModel([](onnx::ModelProto* m) {
         for (int i = 0; i < 100'001; ++i) {
           onnx::NodeProto* node = m->mutable_graph()->add_node();
           node->set_op_type("Relu");
           node->add_input("logits");
           node->add_output(absl::StrCat("r", i));
         }
       }),
       kExhausted, "nodes; the limit is 100000 (ModelLimits::max_nodes)"},
      // Pads a [1, 12] input to [1, 2^31 - 88]: the importer built Pad's
      // index maps (16 GB) to learn the shape before the fuzzer found it.
      {"ModelPadToHugeDim", SubmitModel([](onnx::ModelProto* m) {
         onnx::GraphProto& g = *m->mutable_graph();
         onnx::TensorProto* pads = g.add_initializer();
         pads->set_name("pads");
         pads->set_data_type(onnx::TensorProto::INT64);
         pads->add_dims(4);
         for (int64_t p :
              {int64_t{0}, int64_t{0}, int64_t{0}, (int64_t{1} << 31) - 100}) {
           pads->add_int64_data(p);
         }
         onnx::NodeProto* pad = g.add_node();
         pad->set_op_type("Pad");
         pad->set_name("pad");
         pad->add_input("input");
         pad->add_input("pads");
         pad->add_output("padded");
         g.mutable_node(0)->set_input(0, "padded");
       }),
       kExhausted, "spec.model: node 'pad' (Pad): its output [1, 2147483560]"},
      {"ModelSubgraph", SubmitModel([](onnx::ModelProto* m) {
         onnx::AttributeProto* attr =
             m->mutable_graph()->mutable_node(1)->add_attribute();
         attr->set_name("body");
         attr->set_type(onnx::AttributeProto::GRAPH);
         attr->mutable_g()->set_name("inner");
       }),
       kInvalid, "attribute 'body' of node '/relu0' (Relu) holds a subgraph"},
      {"ModelWithoutIrVersion",
       SubmitModel([](onnx::ModelProto* m) { m->clear_ir_version(); }),
       kInvalid, "spec.model: ir_version 0 is not supported"},
      {"ModelTruncated", Submit([](v1::JobSpec* spec) {
         const std::string bytes = spec->model().content();
         spec->mutable_model()->set_content(bytes.substr(0, bytes.size() / 2));
       }),
       kInvalid, "spec.model: not an ONNX model"},
      {"ModelGarbage", Submit([](v1::JobSpec* spec) {
         spec->mutable_model()->set_content(std::string(4096, '\xff'));
       }),
       kInvalid, "spec.model: not an ONNX model"},
      {"ModelEmpty", Submit([](v1::JobSpec* spec) {
         spec->mutable_model()->set_content("");
       }),
       kInvalid, "spec.model.content: empty"},

      // ---- Search options.
      {"Bits0",
       Submit([](v1::JobSpec* s) { s->mutable_search()->set_bits(2, 0); }),
       kInvalid, "spec.search.bits: 0 is outside 1..8"},
      {"Bits9",
       Submit([](v1::JobSpec* s) { s->mutable_search()->set_bits(0, 9); }),
       kInvalid, "spec.search.bits: 9 is outside 1..8"},
      {"BitsNegative",
       Submit([](v1::JobSpec* s) { s->mutable_search()->set_bits(1, -1); }),
       kInvalid, "spec.search.bits: -1 is outside 1..8"},
      {"BitsEmpty",
       Submit([](v1::JobSpec* s) { s->mutable_search()->clear_bits(); }),
       kInvalid, "spec.search.bits: no candidate bit-width"},
      {"LayerBitsEmpty", Submit([](v1::JobSpec* s) {
         s->mutable_search()->add_layers()->set_name("fc0.weight");
       }),
       kInvalid, "spec.search.layers[0].bits: no candidate bit-width"},
      {"BudgetBelowLowestBits", Submit([](v1::JobSpec* s) {
         s->mutable_search()->clear_bits();
         for (int b : {8, 4}) s->mutable_search()->add_bits(b);
         s->mutable_search()->mutable_budget()->set_avg_bits(0.5);
       }),
       kInvalid, "spec.search.budget"},
      {"BudgetNegative", Submit([](v1::JobSpec* s) {
         s->mutable_search()->mutable_budget()->set_avg_bits(-2);
       }),
       kInvalid, "spec.search.budget.avg_bits: must be positive"},
      {"BudgetNaN", Submit([](v1::JobSpec* s) {
         s->mutable_search()->mutable_budget()->set_avg_bits(std::nan(""));
       }),
       kInvalid, "spec.search.budget.avg_bits: must be positive"},
      {"BudgetMissing",
       Submit([](v1::JobSpec* s) { s->mutable_search()->clear_budget(); }),
       kInvalid, "spec.search.budget: required"},

      // ---- Strings and lists beyond the request limits: refused naming the
      // field, never echoed (a 10 MB strategy was quoted whole).
      {"StrategyTenMegabytes", Submit([](v1::JobSpec* s) {
         s->mutable_search()->set_strategy(std::string(10 << 20, 'k'));
       }),
       kInvalid, "spec.search.strategy: 10485760 bytes, above the limit of 32"},
      {"NameTenMegabytes",
       Submit([](v1::JobSpec* s) { s->set_name(std::string(10 << 20, 'n')); }),
       kInvalid, "spec.name: 10485760 bytes, above the limit of 256"},
      {"FilenameTooLong", Submit([](v1::JobSpec* s) {
         s->mutable_model()->set_filename(std::string(5000, 'f'));
       }),
       kInvalid, "spec.model.filename: 5000 bytes, above the limit of 1024"},
      {"BitsListTooLong", Submit([](v1::JobSpec* s) {
         for (int i = 0; i < 100'000; ++i) s->mutable_search()->add_bits(4);
       }),
       kInvalid, "spec.search.bits: 100003 entries, above the limit of 32"},
      {"EvaluateLayerNameTooLong", Evaluate([](v1::EvaluatePolicyRequest* r) {
         v1::LayerBits* layer = r->add_layers();
         layer->set_name(std::string(1 << 20, 'l'));
         layer->set_bits(4);
       }),
       kInvalid, "layers[0].name: 1048576 bytes, above the limit of 256"},

      // ---- Calibration data.
      {"LabelCountMismatch", Submit([](v1::JobSpec* s) {
         s->mutable_labels()->set_content(
             testing::NpyInt64(std::vector<int64_t>(150, 0)));
       }),
       kInvalid, "spec.labels: labels has 150 labels but inputs has 200"},
      {"LabelOutOfRange", Submit([](v1::JobSpec* s) {
         std::vector<int64_t> labels(kSamples, 0);
         labels[7] = 3;
         s->mutable_labels()->set_content(testing::NpyInt64(labels));
       }),
       kInvalid, "label 3 at index 7 is outside the model's 3 classes"},
      {"LabelNegative", Submit([](v1::JobSpec* s) {
         std::vector<int64_t> labels(kSamples, 0);
         labels[9] = -1;
         s->mutable_labels()->set_content(testing::NpyInt64(labels));
       }),
       kInvalid, "spec.labels"},
      {"InputsNaN", Submit([](v1::JobSpec* s) {
         engine::Tensor inputs = TinyInputs();
         inputs.data()[31] = std::numeric_limits<float>::quiet_NaN();
         s->mutable_inputs()->set_content(testing::NpyFloat32(inputs));
       }),
       kInvalid, "NaN"},
      {"InputsTruncatedNpy", Submit([](v1::JobSpec* s) {
         const std::string npy = testing::NpyFloat32(TinyInputs());
         s->mutable_inputs()->set_content(npy.substr(0, npy.size() - 100));
       }),
       kInvalid, "spec.inputs"},
      {"InputsWrongShape", Submit([](v1::JobSpec* s) {
         s->mutable_inputs()->set_content(
             testing::NpyFloat32(engine::Tensor({kSamples, 5})));
       }),
       kInvalid, "spec.inputs"},
      {"CalibSizeAllSamples",
       Submit([](v1::JobSpec* s) { s->set_calib_size(kSamples); }), kInvalid,
       "spec.calib_size: 200 leaves no fine-tuning samples"},
      {"CalibSizeMissing", Submit([](v1::JobSpec* s) { s->set_calib_size(0); }),
       kInvalid, "spec.calib_size: required"},
      {"MaxSamplesNegative",
       Submit([](v1::JobSpec* s) { s->set_max_samples(-1); }), kInvalid,
       "spec.max_samples: must not be negative"},

      // ---- EvaluatePolicy.
      {"EvaluateNaNWeight", Evaluate([](v1::EvaluatePolicyRequest* r) {
         r->mutable_spec()->mutable_model()->set_content(
             Serialized([](onnx::ModelProto* m) {
               Weight(m).set_float_data(0,
                                        std::numeric_limits<float>::infinity());
             }));
       }),
       kInvalid,
       "spec.model: initializer 'fc0.weight' holds an infinite value"},
      {"EvaluateLayerBits9", Evaluate([](v1::EvaluatePolicyRequest* r) {
         v1::LayerBits* layer = r->add_layers();
         layer->set_name("fc0.weight");
         layer->set_bits(9);
       }),
       kInvalid, "layers[0].bits: 9 is not 1..8 or 32"},
      {"EvaluateDefaultBitsNegative",
       Evaluate([](v1::EvaluatePolicyRequest* r) { r->set_default_bits(-1); }),
       kInvalid, "default_bits: -1 is not 1..8 or 32"},
      {"EvaluateUnknownLayer", Evaluate([](v1::EvaluatePolicyRequest* r) {
         v1::LayerBits* layer = r->add_layers();
         layer->set_name("../fc9.weight");
         layer->set_bits(4);
       }),
       kInvalid, "layers[0].name: no quantizable layer '../fc9.weight'"},
      {"EvaluateUnknownMode",
       Evaluate([](v1::EvaluatePolicyRequest* r) { r->set_mode("turbo"); }),
       kInvalid, "mode"},
      {"EvaluateCalibSizeAllSamples",
       Evaluate([](v1::EvaluatePolicyRequest* r) {
         r->mutable_spec()->set_calib_size(kSamples);
       }),
       kInvalid, "spec.calib_size"},
      {"EvaluateTruncatedLabels", Evaluate([](v1::EvaluatePolicyRequest* r) {
         const std::string npy =
             testing::NpyInt64(std::vector<int64_t>(kSamples, 0));
         r->mutable_spec()->mutable_labels()->set_content(npy.substr(0, 90));
       }),
       kInvalid, "spec.labels"},

      // ---- Job ids.
      {"GetJobPathId", GetJob("../x"), kInvalid, "job_id: malformed"},
      {"GetJobLongId", GetJob(long_id), kInvalid,
       "job_id: 10000 bytes, above the limit of 64"},
      {"GetJobEmptyId", GetJob(""), kInvalid, "job_id: required"},
      {"GetJobUnknownId", GetJob("job-000000000000"),
       grpc::StatusCode::NOT_FOUND, "job-000000000000"},
      {"GetResultsPathId", GetResults("../../mixq.db"), kInvalid,
       "job_id: malformed"},
      {"WatchJobLongId", WatchJob(long_id), kInvalid,
       "job_id: 10000 bytes, above the limit of 64"},
      {"CancelPathId", CancelJob([] { return std::string("../x"); }), kInvalid,
       "job_id: malformed"},
      {"CancelLongId", CancelJob([long_id] { return long_id; }), kInvalid,
       "job_id: 10000 bytes, above the limit of 64"},
      {"CancelEmptyId", CancelJob([] { return std::string(); }), kInvalid,
       "job_id: required"},
      {"CancelFinishedJob", CancelJob([] { return FinishedJobId(); }),
       grpc::StatusCode::FAILED_PRECONDITION, "already ended"},
      {"QueryPathId",
       QueryBest([](v1::QueryBestPoliciesRequest* r) { r->set_job_id("a/b"); }),
       kInvalid, "job_id: malformed"},
      {"QueryEmptyId", QueryBest([](v1::QueryBestPoliciesRequest*) {}),
       kInvalid, "job_id: required"},
      {"QueryLongId", QueryBest([long_id](v1::QueryBestPoliciesRequest* r) {
         r->set_job_id(long_id);
       }),
       kInvalid, "job_id: 10000 bytes, above the limit of 64"},
      {"QueryMalformedSha", QueryBest([](v1::QueryBestPoliciesRequest* r) {
         r->set_model_sha256("' OR 1=1 --");
       }),
       kInvalid, "model_sha256: must be 64 lowercase hex digits"},
      {"QueryNegativeLimit", QueryBest([](v1::QueryBestPoliciesRequest* r) {
         r->set_job_id(FinishedJobId());
         r->set_max_avg_bits(-1);
       }),
       kInvalid, "must not be negative"},
  };
}

class HostileInputTest : public ::testing::TestWithParam<HostileCase> {
 protected:
  // One server for the whole table, and one job run to its end.
  static void SetUpTestSuite() {
    data_dir_ = std::filesystem::path(::testing::TempDir()) /
                absl::StrCat("mixq_hostile_", getpid());
    std::filesystem::remove_all(data_dir_);
    server::ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.data_dir = data_dir_.string();
    options.threads = 1;
    auto server = server::Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = Connect(server_->port());

    v1::SubmitJobRequest request;
    *request.mutable_spec() = TinySpec();
    grpc::ClientContext context;
    v1::SubmitJobResponse response;
    const grpc::Status status = stub_->SubmitJob(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    FinishedJobId() = response.job().id();
    ASSERT_TRUE(WatchJob(FinishedJobId())(*stub_).ok());
  }

  static void TearDownTestSuite() {
    stub_.reset();
    server_.reset();
    std::filesystem::remove_all(data_dir_);
  }

  static std::unique_ptr<Stub> Connect(int port) {
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(kClientMessageBytes);
    args.SetMaxReceiveMessageSize(kClientMessageBytes);
    return v1::Mixq::NewStub(
        grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                  grpc::InsecureChannelCredentials(), args));
  }

  // The server answers a plain request.
  static void ExpectServing(Stub& stub) {
    grpc::ClientContext context;
    v1::ListJobsRequest request;
    v1::ListJobsResponse response;
    const grpc::Status status = stub.ListJobs(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
  }

  static inline std::filesystem::path data_dir_;
  static inline std::unique_ptr<server::Server> server_;
  static inline std::unique_ptr<Stub> stub_;
};

TEST_P(HostileInputTest, RefusedWithCodeAndMessageAndTheServerKeepsServing) {
  ASSERT_NE(stub_, nullptr);
  const HostileCase& c = GetParam();
  const grpc::Status status = c.call(*stub_);
  EXPECT_EQ(status.error_code(), c.code) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr(c.message));
  // An error quotes at most a short excerpt of what the client sent.
  EXPECT_LE(status.error_message().size(), 1024u);
  ExpectServing(*stub_);
}

INSTANTIATE_TEST_SUITE_P(Table, HostileInputTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<HostileCase>& info) {
                           return info.param.name;
                         });

// A request above the server's message limit is RESOURCE_EXHAUSTED, and the
// server keeps serving.
TEST(HostileInputSizeTest, OversizeMessageIsResourceExhausted) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) /
      absl::StrCat("mixq_hostile_small_", getpid());
  std::filesystem::remove_all(dir);
  server::ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.data_dir = dir.string();
  options.max_message_bytes = kSmallMessageBytes;
  auto server = server::Server::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(kClientMessageBytes);
  auto stub = v1::Mixq::NewStub(
      grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", (*server)->port()),
                                grpc::InsecureChannelCredentials(), args));

  const grpc::Status status = Submit([](v1::JobSpec* spec) {
    spec->mutable_model()->set_content(std::string(kOversizeBytes, 'x'));
  })(*stub);
  EXPECT_EQ(status.error_code(), kExhausted) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("larger than max"));

  grpc::ClientContext context;
  v1::ListJobsResponse response;
  EXPECT_TRUE(stub->ListJobs(&context, v1::ListJobsRequest(), &response).ok());
  server->reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace mixq
