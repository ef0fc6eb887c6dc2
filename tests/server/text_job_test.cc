// Jobs on a model with integer and several inputs: the BERT-style fixture
// (tests/fixtures/text_bert_opset13.onnx, input_ids and attention_mask, int64)
// through a real server on 127.0.0.1:0, with one .npz keyed by input name as
// its data. A label-free (distill) and a labelled job both succeed; the
// export quantizes the token table per row (a DequantizeLinear on axis 0
// feeding the Gather) and puts no Q/DQ on the ids; the engine imports it, and
// ONNX Runtime (tools/ort/run_model.js) computes the same logits from int64
// ids and mask.
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model.h"
#include "engine/model_inputs.h"
#include "engine/npy.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "proto/mixq.grpc.pb.h"
#include "server/server.h"
#include "tests/support/fixtures.h"
#include "tests/support/server_testing.h"
#include "tests/support/subprocess.h"
#include "tests/support/tensor_compare.h"
#include "util/file.h"
#include "util/npz_writer.h"

namespace mixq::server {
namespace {

using ::mixq::testing::Pointers;

constexpr char kNode[] = MIXQ_NODE_PATH;
constexpr char kOrtDir[] = MIXQ_ORT_DIR;
constexpr int64_t kSamples = 64;
constexpr int64_t kTokens = 12;
constexpr int64_t kVocab = 200;
constexpr int64_t kClasses = 3;
constexpr int kCalibSize = 16;
// ORT (optimizations off) against the engine on the same QDQ file: both
// compute it in float, summing in another order.
constexpr float kOrtTolerance = 0.05f;

// Seeded ids [N, 12] in [0, 200) and masks with 4..12 leading ones.
struct TextData {
  std::vector<int64_t> ids;
  std::vector<int64_t> mask;
  std::vector<int64_t> labels;
};

TextData MakeTextData() {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int64_t> token(0, kVocab - 1);
  std::uniform_int_distribution<int64_t> length(4, kTokens);
  std::uniform_int_distribution<int64_t> label(0, kClasses - 1);
  TextData data;
  for (int64_t n = 0; n < kSamples; ++n) {
    const int64_t len = length(rng);
    for (int64_t t = 0; t < kTokens; ++t) {
      data.ids.push_back(t < len ? token(rng) : 0);
      data.mask.push_back(t < len ? 1 : 0);
    }
    data.labels.push_back(label(rng));
  }
  return data;
}

class TextJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           absl::StrCat(
               "mixq_text_job_",
               ::testing::UnitTest::GetInstance()->current_test_info()->name(),
               "_", getpid());
    std::filesystem::remove_all(dir_);
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.data_dir = (dir_ / "data").string();
    options.workers = 1;
    auto server = Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = v1::Mixq::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                            grpc::InsecureChannelCredentials()));
    absl::StatusOr<std::string> model =
        ReadFile(testing::FixturePath("text_bert_opset13.onnx"));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    data_ = MakeTextData();
    ids_npy_ = engine::EncodeNpyInt64(data_.ids, {kSamples, kTokens});
    mask_npy_ = engine::EncodeNpyInt64(data_.mask, {kSamples, kTokens});
    absl::StatusOr<std::string> npz =
        EncodeNpz({{"input_ids", ids_npy_}, {"attention_mask", mask_npy_}});
    ASSERT_TRUE(npz.ok()) << npz.status();
    npz_ = *std::move(npz);
  }

  void TearDown() override {
    stub_.reset();
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  v1::SubmitJobRequest Request(bool labelled) const {
    v1::SubmitJobRequest request;
    v1::JobSpec* spec = request.mutable_spec();
    spec->mutable_model()->set_content(model_);
    spec->mutable_inputs()->set_content(npz_);
    if (labelled) {
      spec->mutable_labels()->set_content(engine::EncodeNpyInt64(data_.labels));
    }
    spec->set_calib_size(kCalibSize);
    v1::SearchOptions* search = spec->mutable_search();
    for (int b : {8, 4}) search->add_bits(b);
    search->mutable_budget()->set_avg_bits(6);
    search->set_finetune_steps(2);
    return request;
  }

  // Runs the job to its end and returns its final export.
  std::string RunAndExport(const v1::SubmitJobRequest& request) {
    const std::string id = testing::SubmitAndWatch(*stub_, request);
    grpc::ClientContext context;
    v1::GetJobRequest get;
    get.set_job_id(id);
    v1::Job job;
    EXPECT_TRUE(stub_->GetJob(&context, get, &job).ok());
    EXPECT_EQ(job.state(), v1::SUCCEEDED) << job.error();
    EXPECT_TRUE(std::isfinite(job.final_policy().loss()));
    v1::ExportModelRequest export_request;
    export_request.set_job_id(id);
    std::string onnx;
    const grpc::Status exported =
        testing::ReadExport(*stub_, export_request, &onnx);
    EXPECT_TRUE(exported.ok()) << exported.error_message();
    return onnx;
  }

  // The export quantizes the token table per row and leaves the ids alone.
  void ExpectTableQuantizedPerRow(const std::string& onnx) {
    onnx::ModelProto proto;
    ASSERT_TRUE(proto.ParseFromString(onnx));
    const onnx::GraphProto& graph = proto.graph();
    bool found = false;
    for (const onnx::NodeProto& node : graph.node()) {
      if (node.op_type() != "Gather" || node.input(1) != "input_ids") continue;
      for (const onnx::NodeProto& producer : graph.node()) {
        if (producer.output(0) != node.input(0)) continue;
        ASSERT_EQ(producer.op_type(), "DequantizeLinear") << node.name();
        int64_t axis = 1;
        for (const auto& attr : producer.attribute()) {
          if (attr.name() == "axis") axis = attr.i();
        }
        EXPECT_EQ(axis, 0) << "the table is quantized per row";
        found = true;
      }
    }
    EXPECT_TRUE(found) << "no Gather on input_ids reads a DequantizeLinear";
    for (const onnx::NodeProto& node : graph.node()) {
      if (node.op_type() == "QuantizeLinear") {
        EXPECT_NE(node.input(0), "input_ids");
        EXPECT_NE(node.input(0), "attention_mask");
      }
    }
  }

  // The engine's logits for the export on the first samples, and ORT's
  // (graph optimizations off) from the same int64 files.
  void ExpectOrtAgrees(const std::string& onnx) {
    absl::StatusOr<std::unique_ptr<engine::Model>> model =
        engine::Model::FromOnnxBytes(onnx);
    ASSERT_TRUE(model.ok()) << model.status();
    ASSERT_EQ((*model)->inputs().size(), 2u);
    absl::StatusOr<engine::Tensor> packed =
        engine::DecodeModelInputs((*model)->inputs(), npz_, "inputs.npz");
    ASSERT_TRUE(packed.ok()) << packed.status();
    absl::StatusOr<engine::Tensor> ours = (*model)->Forward(
        *packed, Pointers((*model)->initial_params()), nullptr);
    ASSERT_TRUE(ours.ok()) << ours.status();

    std::filesystem::create_directories(dir_);
    const std::string model_path = (dir_ / "export.onnx").string();
    ASSERT_TRUE(WriteFile(model_path, onnx).ok());
    ASSERT_TRUE(WriteFile((dir_ / "ids.npy").string(), ids_npy_).ok());
    ASSERT_TRUE(WriteFile((dir_ / "mask.npy").string(), mask_npy_).ok());
    const std::string out = (dir_ / "ort.npy").string();
    const testing::RunResult run = testing::RunProgram(
        kNode,
        {absl::StrCat(kOrtDir, "/run_model.js"), model_path,
         absl::StrCat("input_ids=", (dir_ / "ids.npy").string(),
                      ",attention_mask=", (dir_ / "mask.npy").string()),
         out, "--no-optimize"},
        dir_.string());
    ASSERT_EQ(run.exit_code, 0) << run.err;
    testing::ExpectClose(*ours, testing::ReadFloatNpy(out), "ORT vs engine",
                         kOrtTolerance);
  }

  std::filesystem::path dir_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<v1::Mixq::Stub> stub_;
  std::string model_;
  TextData data_;
  std::string ids_npy_;
  std::string mask_npy_;
  std::string npz_;
};

TEST_F(TextJobTest, LabelFreeJobOnIdsAndMaskExportsATableQuantizedPerRow) {
  const std::string onnx = RunAndExport(Request(/*labelled=*/false));
  ASSERT_FALSE(onnx.empty());
  ExpectTableQuantizedPerRow(onnx);
  ExpectOrtAgrees(onnx);
}

TEST_F(TextJobTest, LabelledJobOnIdsAndMaskSucceeds) {
  const std::string onnx = RunAndExport(Request(/*labelled=*/true));
  ASSERT_FALSE(onnx.empty());
  ExpectTableQuantizedPerRow(onnx);
  ExpectOrtAgrees(onnx);
}

TEST_F(TextJobTest, DataWithoutAnArrayPerInputIsRefusedNamingTheInput) {
  v1::SubmitJobRequest request = Request(/*labelled=*/false);
  request.mutable_spec()->mutable_inputs()->set_content(ids_npy_);
  grpc::ClientContext context;
  v1::SubmitJobResponse response;
  grpc::Status status = stub_->SubmitJob(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              ::testing::HasSubstr("'input_ids', 'attention_mask'"));
  // Normalisation does not apply to ids.
  request = Request(/*labelled=*/false);
  request.mutable_spec()->mutable_normalize()->set_mean(0.5);
  request.mutable_spec()->mutable_normalize()->set_std(2);
  grpc::ClientContext again;
  status = stub_->SubmitJob(&again, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              ::testing::HasSubstr("spec.normalize: the model's graph input "
                                   "'input_ids' holds integers"));
}

}  // namespace
}  // namespace mixq::server
