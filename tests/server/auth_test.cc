// Bearer-token authentication, TLS and mutual TLS of the mixq server, checked
// with real servers on 127.0.0.1:0 and the real client (MakeChannel, RunCli).
// The certificates are tests/fixtures/tls/ (scripts/make_test_certs.sh).
#include "server/auth.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "client/cli.h"
#include "client/commands.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/mixq.grpc.pb.h"
#include "server/server.h"
#include "tests/support/npy.h"
#include "tests/support/onnx_mlp.h"
#include "tests/support/server_testing.h"
#include "tests/support/test_dir.h"
#include "util/file.h"

namespace mixq::server {
namespace {

using ::testing::HasSubstr;

constexpr char kToken[] = "s3cret-Token_0123456789";
// Long enough for any local call; failures to connect fail fast anyway.
constexpr auto kDeadline = std::chrono::seconds(20);

std::string Fixture(const std::string& name) {
  return absl::StrCat(MIXQ_SOURCE_DIR, "/tests/fixtures/tls/", name);
}

std::unique_ptr<grpc::ClientContext> Context(const std::string& token = "") {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + kDeadline);
  if (!token.empty()) {
    context->AddMetadata(kAuthorizationKey, absl::StrCat("Bearer ", token));
  }
  return context;
}

// Calls every RPC of mixq.v1.Mixq but WatchJob with the given token (none if
// empty) and returns their statuses, named. The requests are empty or name an
// unknown job.
std::vector<std::pair<std::string, grpc::Status>> CallEveryRpcButWatch(
    v1::Mixq::Stub& stub, const std::string& token) {
  std::vector<std::pair<std::string, grpc::Status>> statuses;
  {
    v1::SubmitJobResponse response;
    statuses.emplace_back("SubmitJob",
                          stub.SubmitJob(Context(token).get(),
                                         v1::SubmitJobRequest(), &response));
  }
  {
    v1::GetJobRequest request;
    request.set_job_id("job-x");
    v1::Job response;
    statuses.emplace_back(
        "GetJob", stub.GetJob(Context(token).get(), request, &response));
  }
  {
    v1::ListJobsResponse response;
    statuses.emplace_back(
        "ListJobs",
        stub.ListJobs(Context(token).get(), v1::ListJobsRequest(), &response));
  }
  {
    v1::GetResultsRequest request;
    request.set_job_id("job-x");
    v1::GetResultsResponse response;
    statuses.emplace_back("GetResults", stub.GetResults(Context(token).get(),
                                                        request, &response));
  }
  {
    v1::QueryBestPoliciesRequest request;
    request.set_job_id("job-x");
    v1::QueryBestPoliciesResponse response;
    statuses.emplace_back(
        "QueryBestPolicies",
        stub.QueryBestPolicies(Context(token).get(), request, &response));
  }
  {
    v1::CancelJobRequest request;
    request.set_job_id("job-x");
    v1::Job response;
    statuses.emplace_back(
        "CancelJob", stub.CancelJob(Context(token).get(), request, &response));
  }
  {
    v1::EvaluatePolicyResponse response;
    statuses.emplace_back(
        "EvaluatePolicy",
        stub.EvaluatePolicy(Context(token).get(), v1::EvaluatePolicyRequest(),
                            &response));
  }
  {
    std::unique_ptr<grpc::ClientContext> context = Context(token);
    v1::Artifact response;
    auto writer = stub.UploadArtifact(context.get(), &response);
    writer->WritesDone();
    statuses.emplace_back("UploadArtifact", writer->Finish());
  }
  {
    std::unique_ptr<grpc::ClientContext> context = Context(token);
    v1::ExportModelRequest request;
    request.set_job_id("job-x");
    auto reader = stub.ExportModel(context.get(), request);
    v1::ExportChunk chunk;
    while (reader->Read(&chunk)) {
    }
    statuses.emplace_back("ExportModel", reader->Finish());
  }
  return statuses;
}

// Reads a WatchJob stream to its end with `token`; returns the events and
// the status.
grpc::Status WatchToEnd(v1::Mixq::Stub& stub, const std::string& job_id,
                        const std::string& token,
                        std::vector<v1::JobEvent>* events) {
  return testing::WatchToEnd(stub, Context(token).get(), job_id, events);
}

// The health and reflection protos are not installed: their messages are
// hand-encoded and sent as raw bytes.
grpc::ByteBuffer ToByteBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string FromByteBuffer(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (!buffer.Dump(&slices).ok()) return bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return bytes;
}

// A length-delimited protobuf field (`tag` = field number << 3 | 2) holding a
// short string.
std::string StringField(char tag, const std::string& value) {
  return std::string{tag, static_cast<char>(value.size())} + value;
}

// grpc.health.v1.Health/Check for `service`. Returns the call's status;
// *serving tells whether the answer was SERVING.
grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel,
                         const std::string& service, bool* serving) {
  // HealthCheckRequest{service = 1}.
  const grpc::ByteBuffer request = ToByteBuffer(StringField(0x0a, service));
  grpc::ByteBuffer response;
  grpc::GenericStub stub(channel);
  std::unique_ptr<grpc::ClientContext> context = Context();
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(context.get(), "/grpc.health.v1.Health/Check",
                 grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  // HealthCheckResponse{status = 1: SERVING (1)}.
  *serving =
      status.ok() && FromByteBuffer(response) == std::string("\x08\x01", 2);
  return status;
}

// Asks server reflection to list the services; returns the raw answer (it
// names each service) in *answer.
grpc::Status ListServicesByReflection(
    const std::shared_ptr<grpc::Channel>& channel, std::string* answer) {
  std::unique_ptr<grpc::ClientContext> context = Context();
  const grpc::internal::RpcMethod method(
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      grpc::internal::RpcMethod::BIDI_STREAMING);
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>>
      stream(grpc::internal::ClientReaderWriterFactory<
             grpc::ByteBuffer, grpc::ByteBuffer>::Create(channel.get(), method,
                                                         context.get()));
  // ServerReflectionRequest{list_services = 7: ""}.
  stream->Write(ToByteBuffer(StringField(0x3a, "")));
  stream->WritesDone();
  grpc::ByteBuffer response;
  while (stream->Read(&response)) *answer += FromByteBuffer(response);
  return stream->Finish();
}

v1::SubmitJobRequest TinyJob() { return testing::TinyJobRequest(); }

struct CliResult {
  int exit_code;
  std::string out;
  std::string err;
};

CliResult Cli(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  const int code = client::RunCli(args, out, err);
  return {code, out.str(), err.str()};
}

class AuthServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    token_file_ = dir_.Path("token");
    // Surrounding whitespace is not part of the token.
    ASSERT_TRUE(WriteFile(token_file_, absl::StrCat("  ", kToken, "\n")).ok());
  }

  // Starts a server on 127.0.0.1:0 with `options` (listen and data dir set
  // here).
  void Start(ServerOptions options) {
    options.listen = "127.0.0.1:0";
    options.data_dir = dir_.Path("data");
    auto server = Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }
  std::string Address() const {
    return absl::StrCat("127.0.0.1:", server_->port());
  }
  std::shared_ptr<grpc::Channel> InsecureChannel() const {
    return grpc::CreateChannel(Address(), grpc::InsecureChannelCredentials());
  }
  // A channel made by the real client from `global` (server filled in).
  std::shared_ptr<grpc::Channel> ClientChannel(client::GlobalOptions global) {
    global.server = Address();
    auto channel = client::MakeChannel(global);
    EXPECT_TRUE(channel.ok()) << channel.status();
    return channel.ok() ? *channel : nullptr;
  }
  static grpc::Status ListJobs(const std::shared_ptr<grpc::Channel>& channel,
                               const std::string& token = "") {
    v1::ListJobsResponse response;
    return v1::Mixq::NewStub(channel)->ListJobs(
        Context(token).get(), v1::ListJobsRequest(), &response);
  }
  ServerOptions TlsOptions() const {
    ServerOptions options;
    options.tls_cert_file = Fixture("server.pem");
    options.tls_key_file = Fixture("server.key");
    return options;
  }

  testing::ScopedTestDir dir_{"auth"};
  std::string token_file_;
  std::unique_ptr<Server> server_;
};

TEST_F(AuthServerTest, NoTokenIsUnauthenticatedOnEveryRpc) {
  ServerOptions options;
  options.auth_token_file = token_file_;
  Start(options);
  auto stub = v1::Mixq::NewStub(InsecureChannel());
  const auto statuses = CallEveryRpcButWatch(*stub, "");
  ASSERT_EQ(statuses.size(), 9u);
  for (const auto& [method, status] : statuses) {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << method;
    EXPECT_THAT(status.error_message(), HasSubstr("missing bearer token"))
        << method;
  }
  std::vector<v1::JobEvent> events;
  const grpc::Status watch = WatchToEnd(*stub, "job-x", "", &events);
  EXPECT_EQ(watch.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(watch.error_message(), HasSubstr("missing bearer token"));
  EXPECT_TRUE(events.empty());
}

TEST_F(AuthServerTest, WrongTokenIsUnauthenticated) {
  ServerOptions options;
  options.auth_token_file = token_file_;
  Start(options);
  auto stub = v1::Mixq::NewStub(InsecureChannel());
  // A prefix, a longer token, another scheme, the right token in lower case.
  for (const std::string& token :
       {std::string("s3cret"), absl::StrCat(kToken, "x"), std::string("wrong"),
        std::string("S3CRET-TOKEN_0123456789")}) {
    for (const auto& [method, status] : CallEveryRpcButWatch(*stub, token)) {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
          << method << " " << token;
      EXPECT_EQ(status.error_message(), "invalid bearer token") << method;
    }
    std::vector<v1::JobEvent> events;
    EXPECT_EQ(WatchToEnd(*stub, "job-x", token, &events).error_code(),
              grpc::StatusCode::UNAUTHENTICATED)
        << token;
  }
  auto context = Context();
  context->AddMetadata(kAuthorizationKey, absl::StrCat("Basic ", kToken));
  v1::ListJobsResponse response;
  EXPECT_EQ(stub->ListJobs(context.get(), v1::ListJobsRequest(), &response)
                .error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(AuthServerTest, RightTokenPassesEveryRpc) {
  ServerOptions options;
  options.auth_token_file = token_file_;
  Start(options);
  auto stub = v1::Mixq::NewStub(InsecureChannel());
  // Past authentication each RPC answers for itself: the empty requests are
  // invalid, job-x does not exist.
  for (const auto& [method, status] : CallEveryRpcButWatch(*stub, kToken)) {
    EXPECT_NE(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << method << ": " << status.error_message();
  }
  v1::SubmitJobResponse submitted;
  ASSERT_TRUE(
      stub->SubmitJob(Context(kToken).get(), TinyJob(), &submitted).ok());
  std::vector<v1::JobEvent> events;
  const grpc::Status watch =
      WatchToEnd(*stub, submitted.job().id(), kToken, &events);
  ASSERT_TRUE(watch.ok()) << watch.error_message();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::SUCCEEDED);
}

TEST_F(AuthServerTest, HealthAndReflectionNeedNoToken) {
  ServerOptions options;
  options.auth_token_file = token_file_;
  Start(options);
  for (const std::string& service :
       {std::string(""), std::string("mixq.v1.Mixq")}) {
    bool serving = false;
    const grpc::Status status =
        HealthCheck(InsecureChannel(), service, &serving);
    EXPECT_TRUE(status.ok()) << service << ": " << status.error_message();
    EXPECT_TRUE(serving) << service;
  }
  // Reflection shows the API's schema, which is public (proto/mixq.proto).
  std::string services;
  const grpc::Status reflection =
      ListServicesByReflection(InsecureChannel(), &services);
  EXPECT_TRUE(reflection.ok()) << reflection.error_message();
  EXPECT_THAT(services, HasSubstr("mixq.v1.Mixq"));
  EXPECT_THAT(services, HasSubstr("grpc.health.v1.Health"));
}

TEST_F(AuthServerTest, CliSendsTheTokenFromTheFileOrTheEnvironment) {
  ServerOptions options;
  options.auth_token_file = token_file_;
  Start(options);
  const std::vector<std::string> list = {"--server", Address(), "--timeout",
                                         "20", "list"};

  unsetenv(client::kTokenEnvVar);
  const CliResult none = Cli(list);
  EXPECT_EQ(none.exit_code, client::kExitRpcError);
  EXPECT_THAT(none.err, HasSubstr("error: UNAUTHENTICATED: missing bearer"));

  std::vector<std::string> with_file = list;
  with_file.insert(with_file.end(), {"--token-file", token_file_});
  const CliResult from_file = Cli(with_file);
  EXPECT_EQ(from_file.exit_code, client::kExitOk) << from_file.err;

  ASSERT_EQ(setenv(client::kTokenEnvVar, kToken, /*overwrite=*/1), 0);
  const CliResult from_env = Cli(list);
  EXPECT_EQ(from_env.exit_code, client::kExitOk) << from_env.err;

  // The flag wins over the environment.
  ASSERT_EQ(setenv(client::kTokenEnvVar, "wrong", /*overwrite=*/1), 0);
  const CliResult flag_wins = Cli(with_file);
  const CliResult env_wrong = Cli(list);
  unsetenv(client::kTokenEnvVar);
  EXPECT_EQ(flag_wins.exit_code, client::kExitOk) << flag_wins.err;
  EXPECT_EQ(env_wrong.exit_code, client::kExitRpcError);
  EXPECT_THAT(env_wrong.err, HasSubstr("invalid bearer token"));
}

TEST_F(AuthServerTest, TlsClientTrustingTheCaConnects) {
  Start(TlsOptions());
  client::GlobalOptions global;
  global.tls = true;
  global.tls_ca_file = Fixture("ca.pem");
  const grpc::Status status = ListJobs(ClientChannel(global));
  EXPECT_TRUE(status.ok()) << status.error_message();

  // Through the CLI, by name (the certificate names localhost and 127.0.0.1).
  const CliResult cli =
      Cli({"--server", absl::StrCat("localhost:", server_->port()), "--tls-ca",
           Fixture("ca.pem"), "--timeout", "20", "list"});
  EXPECT_EQ(cli.exit_code, client::kExitOk) << cli.err;
}

TEST_F(AuthServerTest, InsecureOrUntrustingClientCannotTalkToTls) {
  Start(TlsOptions());
  EXPECT_EQ(ListJobs(InsecureChannel()).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // TLS, but trusting the client's own certificate chain instead of the CA.
  client::GlobalOptions global;
  global.tls = true;
  global.tls_ca_file = Fixture("client.pem");
  EXPECT_EQ(ListJobs(ClientChannel(global)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(AuthServerTest, MutualTlsNeedsTheClientCertificate) {
  ServerOptions options = TlsOptions();
  options.tls_client_ca_file = Fixture("ca.pem");
  options.auth_token_file = token_file_;
  Start(options);
  client::GlobalOptions global;
  global.tls = true;
  global.tls_ca_file = Fixture("ca.pem");
  EXPECT_EQ(ListJobs(ClientChannel(global), kToken).error_code(),
            grpc::StatusCode::UNAVAILABLE);

  global.tls_cert_file = Fixture("client.pem");
  global.tls_key_file = Fixture("client.key");
  const grpc::Status with_cert = ListJobs(ClientChannel(global), kToken);
  EXPECT_TRUE(with_cert.ok()) << with_cert.error_message();
  // A client certificate does not replace the token.
  EXPECT_EQ(ListJobs(ClientChannel(global)).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  const CliResult cli =
      Cli({"--server", Address(), "--tls-ca", Fixture("ca.pem"), "--tls-cert",
           Fixture("client.pem"), "--tls-key", Fixture("client.key"),
           "--token-file", token_file_, "--timeout", "20", "list"});
  EXPECT_EQ(cli.exit_code, client::kExitOk) << cli.err;
}

TEST(ServerStartTest, BadAuthOrTlsOptionsFailNamingTheFlag) {
  testing::ScopedTestDir dir("auth");
  const std::string empty_token = dir.Path("empty");
  ASSERT_TRUE(WriteFile(empty_token, " \n").ok());
  const std::string not_pem = dir.Path("not.pem");
  ASSERT_TRUE(WriteFile(not_pem, "not a certificate\n").ok());
  struct Case {
    const char* name;
    std::string token, cert, key, client_ca;
    absl::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"missing token file", dir.Path("nope"), "", "", "",
       absl::StatusCode::kNotFound, "--auth-token-file"},
      {"empty token file", empty_token, "", "", "",
       absl::StatusCode::kInvalidArgument, "--auth-token-file"},
      {"cert without key", "", Fixture("server.pem"), "", "",
       absl::StatusCode::kInvalidArgument, "--tls-cert and --tls-key"},
      {"key without cert", "", "", Fixture("server.key"), "",
       absl::StatusCode::kInvalidArgument, "--tls-cert and --tls-key"},
      {"client CA without TLS", "", "", "", Fixture("ca.pem"),
       absl::StatusCode::kInvalidArgument, "--tls-client-ca"},
      {"missing cert", "", dir.Path("nope.pem"), Fixture("server.key"), "",
       absl::StatusCode::kNotFound, "--tls-cert"},
      {"missing key", "", Fixture("server.pem"), dir.Path("nope.key"), "",
       absl::StatusCode::kNotFound, "--tls-key"},
      {"missing client CA", "", Fixture("server.pem"), Fixture("server.key"),
       dir.Path("nope.pem"), absl::StatusCode::kNotFound, "--tls-client-ca"},
      {"cert not PEM", "", not_pem, Fixture("server.key"), "",
       absl::StatusCode::kUnavailable, "--tls-cert"},
  };
  for (const Case& c : cases) {
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.data_dir = dir.Path(absl::StrCat("data-", c.name));
    options.auth_token_file = c.token;
    options.tls_cert_file = c.cert;
    options.tls_key_file = c.key;
    options.tls_client_ca_file = c.client_ca;
    const auto server = Server::Start(options);
    ASSERT_FALSE(server.ok()) << c.name;
    EXPECT_EQ(server.status().code(), c.code)
        << c.name << ": " << server.status();
    EXPECT_THAT(std::string(server.status().message()), HasSubstr(c.message))
        << c.name;
  }
  // Flags are checked before the data dir is created.
  EXPECT_FALSE(std::filesystem::exists(dir.Path("data-missing token file")));
}

TEST(TokenAuthenticatorTest, TokensMustBePrintableAsciiWithoutSpaces) {
  EXPECT_TRUE(TokenAuthenticator::FromToken(kToken).ok());
  for (const char* bad : {"", "two words", "tab\there", "caf\xc3\xa9"}) {
    const auto authenticator = TokenAuthenticator::FromToken(bad);
    EXPECT_EQ(authenticator.status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

}  // namespace
}  // namespace mixq::server
