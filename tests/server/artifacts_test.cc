// Artifacts and exports end to end: UploadArtifact (chunks, checksum,
// deduplication, size limit), jobs that name uploaded files, server paths
// confined to --allow-path roots, and ExportModel (QDQ ONNX that mixq's
// engine runs, policy JSON), on a real server on 127.0.0.1:0, driven by a
// gRPC stub and the `mixq` CLI in-process.
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "client/cli.h"
#include "engine/model.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "proto/mixq.grpc.pb.h"
#include "server/server.h"
#include "tests/support/npy.h"
#include "tests/support/onnx_mlp.h"
#include "tests/support/server_testing.h"
#include "util/file.h"
#include "util/sha256.h"

namespace mixq {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kMaxArtifactBytes = 64 << 10;
constexpr int kMaxMessageBytes = 1 << 20;
constexpr int kSamples = 200;
constexpr int kCalibSize = 50;

struct CliResult {
  int exit_code;
  std::string out;
  std::string err;
};

struct Upload {
  grpc::Status status;
  v1::Artifact artifact;
  std::string existing_metadata;  // "mixq-artifact-existing", if sent
};

// The classes `onnx` (run by mixq's engine) predicts for `inputs`; empty
// after a test failure.
std::vector<int64_t> Predict(const std::string& onnx,
                             const engine::Tensor& inputs) {
  auto model = engine::Model::FromOnnxBytes(onnx);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return {};
  std::vector<const engine::Tensor*> params;
  for (const engine::Tensor& t : (*model)->initial_params()) {
    params.push_back(&t);
  }
  auto logits = (*model)->Forward(inputs, params, nullptr);
  EXPECT_TRUE(logits.ok()) << logits.status();
  if (!logits.ok()) return {};
  const int64_t classes = logits->dim(1);
  std::vector<int64_t> predicted;
  for (int64_t i = 0; i < logits->dim(0); ++i) {
    const float* row = logits->data() + i * classes;
    predicted.push_back(std::max_element(row, row + classes) - row);
  }
  return predicted;
}

// The bytes of a small job: a tiny MLP and Gaussian inputs labelled by the
// MLP itself (FP32 accuracy 100 %, so quantization visibly costs accuracy).
struct JobFiles {
  JobFiles() {
    data.labels = Predict(model, data.inputs);
    labels = testing::NpyInt64(data.labels);
  }
  std::string model = testing::MakeMlpOnnx({12, 16, 3}, 1);
  search::LabeledData data = testing::MakeTeacherData(kSamples, 12, 3, 2);
  std::string inputs = testing::NpyFloat32(data.inputs);
  std::string labels;
};

// Flips one byte in the middle of stored artifact `sha256` in the database
// at `path`, as a failing disk might (the file stays a valid database).
void DamageStoredArtifact(const std::filesystem::path& path,
                          const std::string& sha256) {
  sqlite3* handle = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &handle), SQLITE_OK);
  const std::unique_ptr<sqlite3, decltype(&sqlite3_close)> db(handle,
                                                              &sqlite3_close);
  sqlite3_stmt* raw = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db.get(),
                               "SELECT data FROM artifacts WHERE sha256 = ?1",
                               -1, &raw, nullptr),
            SQLITE_OK);
  std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> select(
      raw, &sqlite3_finalize);
  sqlite3_bind_text(select.get(), 1, sha256.c_str(), -1, SQLITE_TRANSIENT);
  ASSERT_EQ(sqlite3_step(select.get()), SQLITE_ROW);
  std::string data(
      static_cast<const char*>(sqlite3_column_blob(select.get(), 0)),
      sqlite3_column_bytes(select.get(), 0));
  select.reset();
  data[data.size() / 2] ^= 0x10;
  ASSERT_EQ(sqlite3_prepare_v2(
                db.get(), "UPDATE artifacts SET data = ?2 WHERE sha256 = ?1",
                -1, &raw, nullptr),
            SQLITE_OK);
  std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> update(
      raw, &sqlite3_finalize);
  sqlite3_bind_text(update.get(), 1, sha256.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_blob(update.get(), 2, data.data(), static_cast<int>(data.size()),
                    SQLITE_TRANSIENT);
  ASSERT_EQ(sqlite3_step(update.get()), SQLITE_DONE);
  ASSERT_EQ(sqlite3_changes(db.get()), 1);
}

// `bytes` split into `parts` nearly equal chunks.
std::vector<std::string> Split(const std::string& bytes, size_t parts) {
  std::vector<std::string> chunks;
  const size_t size = (bytes.size() + parts - 1) / parts;
  for (size_t offset = 0; offset < bytes.size(); offset += size) {
    chunks.push_back(bytes.substr(offset, size));
  }
  return chunks;
}

v1::ArtifactInfo Info(const std::string& bytes) {
  v1::ArtifactInfo info;
  info.set_sha256(Sha256Hex(bytes));
  info.set_size_bytes(static_cast<int64_t>(bytes.size()));
  info.set_filename("file.bin");
  return info;
}

class ArtifactsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           absl::StrCat(
               "mixq_artifacts_",
               ::testing::UnitTest::GetInstance()->current_test_info()->name(),
               "_", getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ / "root");
    std::filesystem::create_directories(dir_ / "outside");
    ASSERT_NO_FATAL_FAILURE(StartServer(kMaxArtifactBytes));
  }

  // The test's options, with `max_artifact_bytes` (0: the store's limit).
  server::ServerOptions Options(int64_t max_artifact_bytes) const {
    server::ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.data_dir = (dir_ / "data").string();
    options.workers = 1;
    options.allow_paths = {(dir_ / "root").string()};
    options.max_artifact_bytes = max_artifact_bytes;
    options.max_message_bytes = kMaxMessageBytes;
    return options;
  }

  // (Re)starts the server on the test's data dir and connects.
  void StartServer(int64_t max_artifact_bytes) {
    stub_.reset();
    server_.reset();
    auto server = server::Server::Start(Options(max_artifact_bytes));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(64 << 20);  // the server's limit applies
    stub_ = v1::Mixq::NewStub(grpc::CreateCustomChannel(
        address_, grpc::InsecureChannelCredentials(), args));
  }

  void TearDown() override {
    stub_.reset();
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Sends `info` (unless null), then `chunks` while the server reads them.
  Upload UploadRaw(const v1::ArtifactInfo* info,
                   const std::vector<std::string>& chunks) {
    Upload result;
    grpc::ClientContext context;
    auto writer = stub_->UploadArtifact(&context, &result.artifact);
    v1::UploadArtifactRequest message;
    bool open = true;
    if (info != nullptr) {
      *message.mutable_info() = *info;
      open = writer->Write(message);
      writer->WaitForInitialMetadata();
      const auto& metadata = context.GetServerInitialMetadata();
      if (auto it = metadata.find("mixq-artifact-existing");
          it != metadata.end()) {
        result.existing_metadata =
            std::string(it->second.data(), it->second.size());
      }
    }
    for (const std::string& chunk : chunks) {
      if (!open) break;
      message.set_chunk(chunk);
      open = writer->Write(message);
    }
    writer->WritesDone();
    result.status = writer->Finish();
    return result;
  }

  Upload UploadBytes(const std::string& bytes, size_t parts = 3) {
    const v1::ArtifactInfo info = Info(bytes);
    return UploadRaw(&info, Split(bytes, parts));
  }

  // A job on the three files given as DataSources.
  static v1::SubmitJobRequest JobOn(const v1::DataSource& model,
                                    const v1::DataSource& inputs,
                                    const v1::DataSource& labels) {
    v1::SubmitJobRequest request;
    v1::JobSpec* spec = request.mutable_spec();
    *spec->mutable_model() = model;
    *spec->mutable_inputs() = inputs;
    *spec->mutable_labels() = labels;
    spec->set_calib_size(kCalibSize);
    v1::SearchOptions* search = spec->mutable_search();
    for (int b : {8, 4, 2}) search->add_bits(b);
    search->mutable_budget()->set_avg_bits(3);
    search->set_finetune_steps(3);
    return request;
  }

  static v1::DataSource Content(const std::string& bytes) {
    v1::DataSource source;
    source.set_content(bytes);
    return source;
  }
  static v1::DataSource Artifact(const std::string& sha256) {
    v1::DataSource source;
    source.set_artifact_sha256(sha256);
    return source;
  }
  static v1::DataSource ServerPath(const std::filesystem::path& path) {
    v1::DataSource source;
    source.set_server_path(path.string());
    return source;
  }

  grpc::Status Submit(const v1::SubmitJobRequest& request,
                      v1::SubmitJobResponse* response) {
    grpc::ClientContext context;
    return stub_->SubmitJob(&context, request, response);
  }

  // Reads the job's watch stream to the end; returns its last state.
  v1::JobState WaitForEnd(const std::string& job_id) {
    grpc::ClientContext context;
    std::vector<v1::JobEvent> events;
    EXPECT_TRUE(testing::WatchToEnd(*stub_, &context, job_id, &events).ok());
    return events.empty() ? v1::JOB_STATE_UNSPECIFIED : events.back().state();
  }

  // Submits the job and waits until it succeeded; returns its id.
  std::string RunJob(const v1::SubmitJobRequest& request) {
    v1::SubmitJobResponse response;
    const grpc::Status status = Submit(request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(WaitForEnd(response.job().id()), v1::SUCCEEDED);
    return response.job().id();
  }

  // ExportModel's chunks, concatenated; `first` gets the first chunk.
  grpc::Status Export(const std::string& job_id, const std::string& format,
                      std::string* data, v1::ExportChunk* first = nullptr) {
    v1::ExportModelRequest request;
    request.set_job_id(job_id);
    request.set_format(format);
    return testing::ReadExport(*stub_, request, data, first);
  }

  CliResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), {"--server", address_});
    std::ostringstream out, err;
    const int code = client::RunCli(args, out, err);
    return {code, out.str(), err.str()};
  }

  std::filesystem::path dir_;
  std::unique_ptr<server::Server> server_;
  std::string address_;
  std::unique_ptr<v1::Mixq::Stub> stub_;
};

TEST_F(ArtifactsTest, ChunkedUploadIsDeduplicatedAndJobsReferenceIt) {
  const JobFiles files;
  const Upload model = UploadBytes(files.model, 3);
  ASSERT_TRUE(model.status.ok()) << model.status.error_message();
  EXPECT_EQ(model.artifact.sha256(), Sha256Hex(files.model));
  EXPECT_EQ(model.artifact.size_bytes(),
            static_cast<int64_t>(files.model.size()));
  EXPECT_FALSE(model.artifact.existing());
  EXPECT_EQ(model.existing_metadata, "false");

  // The same file again: known at once, no chunk needed.
  const v1::ArtifactInfo info = Info(files.model);
  const Upload again = UploadRaw(&info, {});
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_TRUE(again.artifact.existing());
  EXPECT_EQ(again.existing_metadata, "true");
  EXPECT_EQ(again.artifact.size_bytes(),
            static_cast<int64_t>(files.model.size()));

  const Upload inputs = UploadBytes(files.inputs, 4);
  const Upload labels = UploadBytes(files.labels, 1);
  ASSERT_TRUE(inputs.status.ok()) << inputs.status.error_message();
  ASSERT_TRUE(labels.status.ok()) << labels.status.error_message();
  const std::string job_id = RunJob(JobOn(Artifact(model.artifact.sha256()),
                                          Artifact(inputs.artifact.sha256()),
                                          Artifact(labels.artifact.sha256())));
  grpc::ClientContext context;
  v1::GetJobRequest get;
  get.set_job_id(job_id);
  v1::Job job;
  ASSERT_TRUE(stub_->GetJob(&context, get, &job).ok());
  EXPECT_EQ(job.model_sha256(), model.artifact.sha256());
  EXPECT_EQ(job.spec().model().artifact_sha256(), model.artifact.sha256());

  // EvaluatePolicy takes references too.
  v1::EvaluatePolicyRequest evaluate;
  *evaluate.mutable_spec() = JobOn(Artifact(model.artifact.sha256()),
                                   Artifact(inputs.artifact.sha256()),
                                   Artifact(labels.artifact.sha256()))
                                 .spec();
  evaluate.set_default_bits(4);
  evaluate.set_mode("dynamic");
  grpc::ClientContext evaluate_context;
  v1::EvaluatePolicyResponse evaluated;
  const grpc::Status status =
      stub_->EvaluatePolicy(&evaluate_context, evaluate, &evaluated);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(evaluated.eval_samples(), kSamples - kCalibSize);
}

TEST_F(ArtifactsTest, BadUploadsAreRefusedAndTheServerKeepsServing) {
  const JobFiles files;
  // Checksum mismatch: DATA_LOSS giving both hashes; nothing stored.
  v1::ArtifactInfo wrong = Info(files.model);
  wrong.set_sha256(Sha256Hex("something else"));
  Upload upload = UploadRaw(&wrong, Split(files.model, 2));
  EXPECT_EQ(upload.status.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_THAT(upload.status.error_message(), HasSubstr(wrong.sha256()));
  EXPECT_THAT(upload.status.error_message(), HasSubstr(Sha256Hex(files.model)));
  v1::SubmitJobResponse response;
  grpc::Status status =
      Submit(JobOn(Artifact(wrong.sha256()), Content(files.inputs),
                   Content(files.labels)),
             &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(),
              HasSubstr("spec.model.artifact_sha256: no artifact"));

  // Over the limit, declared: refused before any chunk is read.
  const std::string big(kMaxArtifactBytes + 1, 'x');
  const v1::ArtifactInfo big_info = Info(big);
  upload = UploadRaw(&big_info, Split(big, 8));
  EXPECT_EQ(upload.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(upload.status.error_message(),
              HasSubstr(absl::StrCat(kMaxArtifactBytes, " bytes")));
  EXPECT_THAT(upload.status.error_message(), HasSubstr("--max-artifact-bytes"));
  EXPECT_EQ(upload.existing_metadata, "");
  // ... and undeclared: a small size, then more bytes than the limit.
  v1::ArtifactInfo lying = big_info;
  lying.set_size_bytes(10);
  upload = UploadRaw(&lying, {big});
  EXPECT_EQ(upload.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  // Malformed uploads: INVALID_ARGUMENT naming the problem.
  struct Case {
    const char* name;
    v1::ArtifactInfo info;
    bool send_info;
    std::vector<std::string> chunks;
    const char* message;
  };
  v1::ArtifactInfo upper = Info(files.model);
  upper.set_sha256(absl::AsciiStrToUpper(upper.sha256()));
  v1::ArtifactInfo empty = Info(files.model);
  empty.set_size_bytes(0);
  const std::vector<Case> cases = {
      {"no_info", {}, false, {files.model}, "info: required"},
      {"bad_sha", upper, true, {files.model}, "info.sha256"},
      {"empty", empty, true, {}, "info.size_bytes"},
      {"short", Info(files.model), true, {files.model.substr(1)}, "received"},
      {"long", Info(files.model), true, {files.model, "x"}, "more bytes"},
  };
  for (const Case& c : cases) {
    upload = UploadRaw(c.send_info ? &c.info : nullptr, c.chunks);
    EXPECT_EQ(upload.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.name;
    EXPECT_THAT(upload.status.error_message(), HasSubstr(c.message)) << c.name;
  }

  // A request above the message size limit: RESOURCE_EXHAUSTED.
  status = Submit(JobOn(Content(std::string(kMaxMessageBytes + 1, 'x')),
                        Content(files.inputs), Content(files.labels)),
                  &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  // A malformed reference is INVALID_ARGUMENT naming the field.
  status = Submit(
      JobOn(Artifact("abc"), Content(files.inputs), Content(files.labels)),
      &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("spec.model.artifact_sha256"));

  // Still serving: the upload goes through.
  upload = UploadBytes(files.model);
  EXPECT_TRUE(upload.status.ok()) << upload.status.error_message();
  EXPECT_FALSE(upload.artifact.existing());
}

TEST_F(ArtifactsTest, ServerPathsStayInsideTheAllowedRoots) {
  const JobFiles files;
  const std::filesystem::path root = dir_ / "root";
  const std::filesystem::path outside = dir_ / "outside";
  ASSERT_TRUE(WriteFile((root / "model.onnx").string(), files.model).ok());
  ASSERT_TRUE(WriteFile((outside / "model.onnx").string(), files.model).ok());
  std::filesystem::create_directories(root / "sub");
  std::filesystem::create_symlink(outside / "model.onnx", root / "link.onnx");
  std::filesystem::create_symlink(outside, root / "dirlink");
  std::filesystem::create_symlink(root / "model.onnx",
                                  root / "sub" / "in.onnx");

  struct Case {
    const char* name;
    std::filesystem::path path;
    grpc::StatusCode code;
  };
  const std::vector<Case> cases = {
      {"inside", root / "model.onnx", grpc::StatusCode::OK},
      {"symlink_inside_to_inside", root / "sub" / "in.onnx",
       grpc::StatusCode::OK},
      {"dot_dot_back_inside", root / "sub" / ".." / "model.onnx",
       grpc::StatusCode::OK},
      {"dot_dot_escape", root / ".." / "outside" / "model.onnx",
       grpc::StatusCode::PERMISSION_DENIED},
      {"symlink_file_escape", root / "link.onnx",
       grpc::StatusCode::PERMISSION_DENIED},
      {"symlink_dir_escape", root / "dirlink" / "model.onnx",
       grpc::StatusCode::PERMISSION_DENIED},
      {"outside", outside / "model.onnx", grpc::StatusCode::PERMISSION_DENIED},
      // A missing file outside is refused like an existing one.
      {"missing_outside", outside / "none.onnx",
       grpc::StatusCode::PERMISSION_DENIED},
      {"missing_dot_dot_escape", root / "none" / ".." / ".." / "outside",
       grpc::StatusCode::PERMISSION_DENIED},
      {"missing_inside", root / "none.onnx",
       grpc::StatusCode::INVALID_ARGUMENT},
      {"relative", "root/model.onnx", grpc::StatusCode::INVALID_ARGUMENT},
  };
  for (const Case& c : cases) {
    v1::SubmitJobRequest request =
        JobOn(ServerPath(c.path), Content(files.inputs), Content(files.labels));
    request.mutable_spec()->mutable_search()->set_warmup_steps(0);
    request.mutable_spec()->mutable_search()->set_finetune_steps(0);
    v1::SubmitJobResponse response;
    const grpc::Status status = Submit(request, &response);
    EXPECT_EQ(status.error_code(), c.code)
        << c.name << ": " << status.error_message();
    if (c.code != grpc::StatusCode::OK) {
      EXPECT_THAT(status.error_message(), HasSubstr("spec.model.server_path"))
          << c.name;
    }
  }
}

TEST_F(ArtifactsTest, ExportsOnnxThatTheEngineRunsAndThePolicyJson) {
  const JobFiles files;
  const std::string job_id = RunJob(JobOn(
      Content(files.model), Content(files.inputs), Content(files.labels)));
  grpc::ClientContext results_context;
  v1::GetResultsRequest results_request;
  results_request.set_job_id(job_id);
  v1::GetResultsResponse results;
  ASSERT_TRUE(
      stub_->GetResults(&results_context, results_request, &results).ok());
  const v1::Policy& final_policy = results.final_policy();
  ASSERT_EQ(final_policy.layers_size(), 2);

  std::string onnx_bytes;
  v1::ExportChunk first;
  grpc::Status status = Export(job_id, "onnx", &onnx_bytes, &first);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(first.total_bytes(), static_cast<int64_t>(onnx_bytes.size()));
  EXPECT_EQ(first.sha256(), Sha256Hex(onnx_bytes));
  EXPECT_EQ(first.filename(), absl::StrCat(job_id, ".qdq.onnx"));
  onnx::ModelProto proto;
  ASSERT_TRUE(proto.ParseFromString(onnx_bytes));
  int quantize = 0, dequantize = 0;
  for (const onnx::NodeProto& node : proto.graph().node()) {
    quantize += node.op_type() == "QuantizeLinear";
    dequantize += node.op_type() == "DequantizeLinear";
  }
  EXPECT_EQ(quantize, 2);    // each layer's input (8-bit activations)
  EXPECT_EQ(dequantize, 4);  // and each layer's weight

  // mixq's engine runs it to the job's final accuracy on the calibration set
  // (it computes what the fake-quantized model did, up to rounding).
  const std::vector<int64_t> predicted =
      Predict(onnx_bytes, files.data.inputs.Slice(0, kCalibSize));
  ASSERT_EQ(predicted.size(), static_cast<size_t>(kCalibSize));
  int correct = 0;
  for (int i = 0; i < kCalibSize; ++i) {
    correct += predicted[i] == files.data.labels[i];
  }
  EXPECT_LT(final_policy.accuracy(), 1.0);  // quantization cost something
  EXPECT_NEAR(static_cast<double>(correct) / kCalibSize,
              final_policy.accuracy(), 1.0 / kCalibSize + 1e-9);

  // The policy document: the final policy's bits and costs.
  std::string json;
  status = Export(job_id, "policy_json", &json, &first);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(first.filename(), absl::StrCat(job_id, ".policy.json"));
  v1::PolicyDocument document;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &document).ok())
      << json;
  EXPECT_EQ(document.job_id(), job_id);
  EXPECT_EQ(document.model_sha256(), Sha256Hex(files.model));
  EXPECT_EQ(document.onnx_sha256(), Sha256Hex(onnx_bytes));
  EXPECT_EQ(document.strategy(), "auto");
  ASSERT_EQ(document.layers_size(), final_policy.layers_size());
  for (int l = 0; l < document.layers_size(); ++l) {
    EXPECT_EQ(document.layers(l).name(), final_policy.layers(l).name());
    EXPECT_EQ(document.layers(l).bits(), final_policy.layers(l).bits());
  }
  EXPECT_EQ(document.activation_bits(), 8);
  EXPECT_DOUBLE_EQ(document.avg_bits(), final_policy.avg_bits());
  EXPECT_DOUBLE_EQ(document.accuracy(), final_policy.accuracy());
  EXPECT_DOUBLE_EQ(document.bops(), final_policy.bops());
  EXPECT_GT(document.fp32_size_bytes(), document.size_bytes());

  // Unknown format and job.
  EXPECT_EQ(Export(job_id, "tflite", &json).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Export("job-000000000000", "onnx", &json).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(ArtifactsTest, ExportOfAnUnfinishedJobIsFailedPrecondition) {
  const JobFiles files;
  v1::SubmitJobRequest request =
      JobOn(Content(files.model), Content(files.inputs), Content(files.labels));
  testing::MakeEndless(&request);
  v1::SubmitJobResponse response;
  ASSERT_TRUE(Submit(request, &response).ok());
  std::string data;
  for (const char* format : {"onnx", "policy_json"}) {
    const grpc::Status status = Export(response.job().id(), format, &data);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
        << format;
    EXPECT_THAT(status.error_message(), HasSubstr("succeeded")) << format;
  }
  grpc::ClientContext context;
  v1::CancelJobRequest cancel;
  cancel.set_job_id(response.job().id());
  v1::Job job;
  ASSERT_TRUE(stub_->CancelJob(&context, cancel, &job).ok());
}

TEST_F(ArtifactsTest, CliUploadsSubmitsByReferenceAndExports) {
  const JobFiles files;
  const std::string model = (dir_ / "model.onnx").string();
  const std::string inputs = (dir_ / "x.npy").string();
  const std::string labels = (dir_ / "y.npy").string();
  ASSERT_TRUE(WriteFile(model, files.model).ok());
  ASSERT_TRUE(WriteFile(inputs, files.inputs).ok());
  ASSERT_TRUE(WriteFile(labels, files.labels).ok());

  CliResult upload = Cli({"upload", model});
  ASSERT_EQ(upload.exit_code, 0) << upload.err;
  const std::string model_ref = absl::StrCat("sha256:", Sha256Hex(files.model));
  EXPECT_EQ(upload.out, model_ref + "\n");
  upload = Cli({"--json", "upload", model});
  ASSERT_EQ(upload.exit_code, 0) << upload.err;
  EXPECT_THAT(upload.out, HasSubstr("\"existing\": true"));

  // --model by reference, the data uploaded by --upload.
  const CliResult submit =
      Cli({"submit", "--model", model_ref, "--inputs", inputs, "--labels",
           labels, "--upload", "--calib-size", "50", "--bits", "8,4,2",
           "--target-avg-bits", "3", "--finetune-steps", "3", "--watch"});
  ASSERT_EQ(submit.exit_code, 0) << submit.out << submit.err;
  EXPECT_THAT(submit.err, HasSubstr("uploaded " + inputs + ": sha256:"));
  const std::string job_id = submit.out.substr(0, submit.out.find('\n'));
  ASSERT_THAT(job_id, ::testing::StartsWith("job-"));

  const std::string onnx_path = (dir_ / "out.onnx").string();
  const CliResult exported =
      Cli({"export", job_id, "--format", "onnx", "--output", onnx_path});
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  EXPECT_THAT(exported.out, HasSubstr("bytes to " + onnx_path));
  std::string expected;
  ASSERT_TRUE(Export(job_id, "onnx", &expected).ok());
  auto written = ReadFile(onnx_path);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(*written, expected);

  const CliResult policy =
      Cli({"export", job_id, "--format", "policy-json", "-o", "-"});
  ASSERT_EQ(policy.exit_code, 0) << policy.err;
  v1::PolicyDocument document;
  EXPECT_TRUE(
      google::protobuf::util::JsonStringToMessage(policy.out, &document).ok())
      << policy.out;
  EXPECT_EQ(document.job_id(), job_id);

  // Errors map to exit codes: unknown reference 3, missing file 2.
  EXPECT_EQ(
      Cli({"eval", "--model", absl::StrCat("sha256:", std::string(64, 'a')),
           "--inputs", inputs, "--labels", labels, "--calib-size", "50"})
          .exit_code,
      3);
  EXPECT_EQ(Cli({"upload", (dir_ / "missing").string()}).exit_code, 2);
  EXPECT_EQ(Cli({"export", "job-000000000000"}).exit_code, 3);
}

// A stored artifact whose bytes changed on disk (quick_check cannot see it)
// is refused with DATA_LOSS when a job would read it, and dropped: uploading
// the file again stores it afresh, and jobs on it run.
TEST_F(ArtifactsTest, ADamagedStoredArtifactIsDataLossAndUploadingItHeals) {
  const JobFiles files;
  const std::string sha256 = Sha256Hex(files.model);
  ASSERT_TRUE(UploadBytes(files.model).status.ok());
  stub_.reset();
  server_.reset();
  ASSERT_NO_FATAL_FAILURE(
      DamageStoredArtifact(dir_ / "data" / "mixq.db", sha256));
  ASSERT_NO_FATAL_FAILURE(StartServer(kMaxArtifactBytes));

  const v1::SubmitJobRequest job =
      JobOn(Artifact(sha256), Content(files.inputs), Content(files.labels));
  v1::SubmitJobResponse response;
  grpc::Status status = Submit(job, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DATA_LOSS)
      << status.error_message();
  EXPECT_THAT(status.error_message(),
              HasSubstr(absl::StrCat("spec.model: stored artifact ", sha256,
                                     " is damaged")));
  EXPECT_THAT(status.error_message(),
              HasSubstr("upload or submit the file again"));
  // Dropped, not served again.
  status = Submit(job, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND)
      << status.error_message();

  const Upload again = UploadBytes(files.model);
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_FALSE(again.artifact.existing());
  RunJob(job);
}

// The same for a file a job sends inline: its damaged stored copy fails the
// job with DATA_LOSS (the submission cannot tell), and submitting it again
// heals it.
TEST_F(ArtifactsTest, AJobOnADamagedStoredCopyFailsAndResubmittingHeals) {
  const JobFiles files;
  const v1::SubmitJobRequest job =
      JobOn(Content(files.model), Content(files.inputs), Content(files.labels));
  RunJob(job);
  stub_.reset();
  server_.reset();
  ASSERT_NO_FATAL_FAILURE(
      DamageStoredArtifact(dir_ / "data" / "mixq.db", Sha256Hex(files.inputs)));
  ASSERT_NO_FATAL_FAILURE(StartServer(kMaxArtifactBytes));

  v1::SubmitJobResponse response;
  ASSERT_TRUE(Submit(job, &response).ok());
  EXPECT_EQ(WaitForEnd(response.job().id()), v1::FAILED);
  grpc::ClientContext context;
  v1::GetJobRequest get;
  get.set_job_id(response.job().id());
  v1::Job failed;
  ASSERT_TRUE(stub_->GetJob(&context, get, &failed).ok());
  EXPECT_THAT(failed.error(), HasSubstr("DATA_LOSS"));
  EXPECT_THAT(failed.error(), HasSubstr("spec.inputs: stored artifact"));
  RunJob(job);
}

// --max-artifact-bytes stays below what SQLite stores (1e9 bytes a blob),
// and an upload declaring more is refused before any of its bytes are read
// (it was received whole, 1.18 GB of memory, then refused by the store).
TEST_F(ArtifactsTest, UploadsAboveWhatTheStoreHoldsAreRefusedAtOnce) {
  stub_.reset();
  server_.reset();
  const auto too_large = server::Server::Start(Options(int64_t{1} << 30));
  EXPECT_EQ(too_large.status().code(), absl::StatusCode::kInvalidArgument)
      << too_large.status();
  EXPECT_THAT(too_large.status().message(),
              HasSubstr("--max-artifact-bytes: 1073741824 is above"));

  ASSERT_NO_FATAL_FAILURE(StartServer(0));  // the default
  v1::ArtifactInfo info;
  info.set_sha256(Sha256Hex("anything"));
  info.set_size_bytes(1'000'000'512);
  const Upload upload =
      UploadRaw(&info, std::vector<std::string>(16, std::string(1 << 20, 'x')));
  EXPECT_EQ(upload.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << upload.status.error_message();
  EXPECT_THAT(upload.status.error_message(), HasSubstr("--max-artifact-bytes"));
  EXPECT_EQ(upload.existing_metadata, "");  // refused before any chunk
}

}  // namespace
}  // namespace mixq
