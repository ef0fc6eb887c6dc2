// The client's bearer token and TLS flags: parsing, and what reaches a server
// (a fake Mixq service that records each call's authorization metadata).
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "client/cli.h"
#include "client/commands.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/mixq.grpc.pb.h"
#include "util/file.h"

namespace mixq::client {
namespace {

using ::testing::HasSubstr;

constexpr char kServer[] = "env-server:1234";
constexpr char kNoHeader[] = "(none)";

TEST(ParseCommandLineTest, TokenAndTlsFlags) {
  auto plain = ParseCommandLine({"list"}, kServer);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->global.token_file, "");
  EXPECT_FALSE(plain->global.tls);

  // Before or after the command, like every global flag.
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--token-file", "t", "--tls-ca", "ca.pem", "--tls-cert", "c.pem",
            "--tls-key", "c.key", "list"},
           {"list", "--token-file", "t", "--tls-ca", "ca.pem", "--tls-cert",
            "c.pem", "--tls-key", "c.key"}}) {
    auto parsed = ParseCommandLine(args, kServer);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->global.token_file, "t");
    EXPECT_TRUE(parsed->global.tls);
    EXPECT_EQ(parsed->global.tls_ca_file, "ca.pem");
    EXPECT_EQ(parsed->global.tls_cert_file, "c.pem");
    EXPECT_EQ(parsed->global.tls_key_file, "c.key");
  }
  // --tls alone: the system's roots.
  auto tls = ParseCommandLine({"--tls", "list"}, kServer);
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_TRUE(tls->global.tls);
  EXPECT_EQ(tls->global.tls_ca_file, "");
}

TEST(ParseCommandLineTest, ClientCertificateNeedsItsKey) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--tls-cert", "c.pem", "list"}, {"--tls-key", "c.key", "list"}}) {
    auto parsed = ParseCommandLine(args, kServer);
    ASSERT_FALSE(parsed.ok()) << args[0];
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(parsed.status().message()),
                HasSubstr("--tls-cert and --tls-key"));
  }
}

// Answers ListJobs and WatchJob, recording the authorization header of each
// call (kNoHeader when absent).
class RecordingMixq final : public v1::Mixq::Service {
 public:
  grpc::Status ListJobs(grpc::ServerContext* context,
                        const v1::ListJobsRequest*,
                        v1::ListJobsResponse*) override {
    Record(*context);
    return grpc::Status::OK;
  }
  grpc::Status WatchJob(grpc::ServerContext* context,
                        const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override {
    Record(*context);
    v1::JobEvent event;
    event.set_job_id(request->job_id());
    event.set_state(v1::SUCCEEDED);
    writer->Write(event);
    return grpc::Status::OK;
  }

  std::vector<std::string> headers() {
    absl::MutexLock lock(&mu_);
    return headers_;
  }

 private:
  void Record(const grpc::ServerContext& context) {
    const auto it = context.client_metadata().find("authorization");
    absl::MutexLock lock(&mu_);
    headers_.push_back(it == context.client_metadata().end()
                           ? kNoHeader
                           : std::string(it->second.data(), it->second.size()));
  }

  absl::Mutex mu_;
  std::vector<std::string> headers_ ABSL_GUARDED_BY(mu_);
};

class TokenRoundTripTest : public testing::Test {
 protected:
  void SetUp() override {
    unsetenv(kTokenEnvVar);
    dir_ = std::filesystem::path(testing::TempDir()) /
           (std::string("client_auth_") +
            testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    address_ = "127.0.0.1:" + std::to_string(port);
  }
  void TearDown() override {
    unsetenv(kTokenEnvVar);
    if (server_ != nullptr) server_->Shutdown();
    std::filesystem::remove_all(dir_);
  }

  std::string WriteToken(const std::string& content) {
    const std::string path = (dir_ / "token").string();
    EXPECT_TRUE(WriteFile(path, content).ok());
    return path;
  }

  // Runs `mixq --server <fake> args...`, returning the exit code.
  int Run(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    args.insert(args.begin(), {"--server", address_, "--timeout", "10"});
    return RunCli(args, out_, err_);
  }

  std::filesystem::path dir_;
  RecordingMixq service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::ostringstream out_;
  std::ostringstream err_;
};

TEST_F(TokenRoundTripTest, EveryRpcCarriesTheTokenFromTheFile) {
  // The file's surrounding whitespace (its newline) is not sent.
  const std::string file = WriteToken("  tok-1\n");
  EXPECT_EQ(Run({"--token-file", file, "list"}), kExitOk) << err_.str();
  EXPECT_EQ(Run({"--token-file", file, "watch", "job-1"}), kExitOk)
      << err_.str();
  EXPECT_THAT(service_.headers(),
              testing::ElementsAre("Bearer tok-1", "Bearer tok-1"));
}

TEST_F(TokenRoundTripTest, EnvironmentUnlessTheFlagIsGiven) {
  ASSERT_EQ(setenv(kTokenEnvVar, "from-env", /*overwrite=*/1), 0);
  EXPECT_EQ(Run({"list"}), kExitOk) << err_.str();
  const std::string file = WriteToken("from-file");
  EXPECT_EQ(Run({"list", "--token-file", file}), kExitOk) << err_.str();
  unsetenv(kTokenEnvVar);
  EXPECT_EQ(Run({"list"}), kExitOk) << err_.str();
  EXPECT_THAT(
      service_.headers(),
      testing::ElementsAre("Bearer from-env", "Bearer from-file", kNoHeader));
}

TEST_F(TokenRoundTripTest, BadTokenFilesAreUsageErrors) {
  EXPECT_EQ(Run({"--token-file", (dir_ / "missing").string(), "list"}),
            kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("--token-file"));
  EXPECT_THAT(err_.str(), HasSubstr("missing"));

  EXPECT_EQ(Run({"--token-file", WriteToken("\n"), "list"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("empty"));

  EXPECT_EQ(Run({"--token-file", WriteToken("two words"), "list"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("printable ASCII"));

  EXPECT_EQ(Run({"--tls-ca", (dir_ / "ca.pem").string(), "list"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("--tls-ca"));
  // Nothing reached the server.
  EXPECT_TRUE(service_.headers().empty());
}

}  // namespace
}  // namespace mixq::client
