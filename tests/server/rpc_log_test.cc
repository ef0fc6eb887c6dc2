// The failure log records every failed RPC, cancelled ones too: a real
// mixq-server process, its stderr in a file, streams the client cancels (an
// upload waiting for its chunks, a watch of a running job) and a call whose
// deadline passes while its handler runs.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/server_process.h"
#include "tests/support/server_testing.h"
#include "util/file.h"
#include "util/sha256.h"

namespace mixq {
namespace {

class RpcLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           absl::StrCat("mixq_rpc_log_", getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    log_ = dir_ / "server.log";
  }
  void TearDown() override {
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  // Whether the server's log gets a line holding `text` within 20 s.
  bool LogGets(const std::string& text) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      if (absl::StrContains(ReadFile(log_.string()).value_or(""), text)) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "no log line with \"" << text << "\" in\n"
                  << ReadFile(log_.string()).value_or("");
    return false;
  }

  std::filesystem::path dir_;
  std::filesystem::path log_;
};

TEST_F(RpcLogTest, CancelledCallsAreLoggedAsFailedRpcs) {
  testing::ServerProcess server(MIXQ_SERVER_PATH, dir_ / "data", log_);
  ASSERT_TRUE(server.Start());

  // An upload the server is reading chunks for.
  {
    const std::string bytes(1000, 'b');
    grpc::ClientContext context;
    v1::Artifact artifact;
    auto writer = server.stub().UploadArtifact(&context, &artifact);
    v1::UploadArtifactRequest info;
    info.mutable_info()->set_sha256(Sha256Hex(bytes));
    info.mutable_info()->set_size_bytes(static_cast<int64_t>(bytes.size()));
    ASSERT_TRUE(writer->Write(info));
    writer->WaitForInitialMetadata();  // the server waits for chunks now
    context.TryCancel();
    EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  EXPECT_TRUE(LogGets("RPC failed method=UploadArtifact code=CANCELLED"));

  // A watch of a job that runs for minutes.
  v1::SubmitJobRequest request = testing::TinyJobRequest(1'000'000);
  grpc::ClientContext submit_context;
  v1::SubmitJobResponse submitted;
  ASSERT_TRUE(
      server.stub().SubmitJob(&submit_context, request, &submitted).ok());
  {
    grpc::ClientContext context;
    v1::WatchJobRequest watch;
    watch.set_job_id(submitted.job().id());
    auto reader = server.stub().WatchJob(&context, watch);
    v1::JobEvent event;
    ASSERT_TRUE(reader->Read(&event));
    context.TryCancel();
    while (reader->Read(&event)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  EXPECT_TRUE(LogGets(absl::StrCat(
      "RPC failed method=WatchJob code=CANCELLED job=", submitted.job().id())));

  // A unary call whose deadline passes while its handler runs: the handler
  // finishes, the client is gone.
  v1::EvaluatePolicyRequest evaluate;
  *evaluate.mutable_spec() = testing::TinyJobRequest().spec();
  evaluate.mutable_spec()->clear_search();
  evaluate.set_default_bits(4);
  evaluate.set_mode("qat");
  evaluate.set_finetune_steps(20'000);
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(50));
    v1::EvaluatePolicyResponse evaluated;
    EXPECT_EQ(server.stub()
                  .EvaluatePolicy(&context, evaluate, &evaluated)
                  .error_code(),
              grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  EXPECT_TRUE(LogGets("RPC failed method=EvaluatePolicy code=CANCELLED"));
  EXPECT_EQ(server.Kill(SIGTERM), 0);
}

}  // namespace
}  // namespace mixq
