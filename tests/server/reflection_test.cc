// A client that knows nothing but server reflection (v1alpha, then v1) drives
// a real mixq-server process, as grpcurl, Postman and grpcui do: it lists the
// services, fetches the files defining grpc.health.v1.Health and
// mixq.v1.Mixq with their imports, builds a DescriptorPool from them and
// calls Health/Check and Mixq/ListJobs with dynamic messages. This binary
// links the reflection messages only (proto/grpc/reflection/v1), none of
// mixq's API or health protos.
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/descriptor_database.h"
#include "google/protobuf/dynamic_message.h"
#include "grpc/reflection/v1/reflection.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/impl/rpc_method.h"
#include "grpcpp/support/sync_stream.h"
#include "gtest/gtest.h"
#include "tests/support/subprocess.h"
#include "tests/support/test_dir.h"
#include "util/file.h"

namespace mixq {
namespace {

using google::protobuf::DescriptorPool;
using google::protobuf::DynamicMessageFactory;
using google::protobuf::FieldDescriptor;
using google::protobuf::FileDescriptorProto;
using google::protobuf::Message;
using google::protobuf::MethodDescriptor;
using google::protobuf::SimpleDescriptorDatabase;
using grpc::reflection::v1::ServerReflectionRequest;
using grpc::reflection::v1::ServerReflectionResponse;
using ::testing::UnorderedElementsAre;

constexpr char kV1Alpha[] = "grpc.reflection.v1alpha.ServerReflection";
constexpr char kV1[] = "grpc.reflection.v1.ServerReflection";
constexpr auto kRpcDeadline = std::chrono::seconds(10);
constexpr auto kStartDeadline = std::chrono::seconds(30);

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + kRpcDeadline);
  return context;
}

// One reflection stream to `channel`'s server: each call sends a request and
// reads its answer. The files received are added to a database
// that pool() is built over. Not thread-safe; `channel` must outlive it.
class ReflectionClient {
 public:
  // `service` is the reflection service's full name. v1alpha's messages are
  // v1's field for field, so v1's serve for both.
  ReflectionClient(grpc::Channel* channel, const std::string& service)
      : method_(absl::StrCat("/", service, "/ServerReflectionInfo")),
        context_(Context()),
        stream_(grpc::internal::ClientReaderWriterFactory<
                ServerReflectionRequest, ServerReflectionResponse>::
                    Create(channel,
                           grpc::internal::RpcMethod(
                               method_.c_str(),
                               grpc::internal::RpcMethod::BIDI_STREAMING),
                           context_.get())) {}
  ReflectionClient(const ReflectionClient&) = delete;
  ReflectionClient& operator=(const ReflectionClient&) = delete;
  ~ReflectionClient() {
    stream_->WritesDone();
    EXPECT_TRUE(stream_->Finish().ok());
  }

  // The full names of the services the server lists.
  absl::StatusOr<std::vector<std::string>> ListServices() {
    ServerReflectionRequest request;
    request.set_list_services("");
    auto response = Ask(request);
    if (!response.ok()) return response.status();
    std::vector<std::string> names;
    for (const auto& service : response->list_services_response().service()) {
      names.push_back(service.name());
    }
    return names;
  }

  // Adds the file defining `symbol` and the files it imports, all sent in
  // one answer, to pool()'s database. The server's error code if it has no
  // such symbol.
  absl::Status FetchFileContainingSymbol(const std::string& symbol) {
    ServerReflectionRequest request;
    request.set_file_containing_symbol(symbol);
    auto response = Ask(request);
    if (!response.ok()) return response.status();
    if (response->has_error_response()) {
      return absl::Status(static_cast<absl::StatusCode>(
                              response->error_response().error_code()),
                          response->error_response().error_message());
    }
    for (const std::string& bytes :
         response->file_descriptor_response().file_descriptor_proto()) {
      // Each answer carries all the imports: keep a file's first copy.
      FileDescriptorProto file;
      FileDescriptorProto known;
      if (!file.ParseFromString(bytes) ||
          (!files_.FindFileByName(file.name(), &known) && !files_.Add(file))) {
        return absl::DataLossError(
            absl::StrCat("a bad file descriptor for ", symbol));
      }
    }
    return absl::OkStatus();
  }

  const DescriptorPool& pool() const { return pool_; }

 private:
  // The answer to `request`; UNAVAILABLE if the stream has ended.
  absl::StatusOr<ServerReflectionResponse> Ask(
      const ServerReflectionRequest& request) {
    ServerReflectionResponse response;
    if (!stream_->Write(request) || !stream_->Read(&response)) {
      return absl::UnavailableError("the reflection stream ended");
    }
    return response;
  }

  std::string method_;  // the stream's RpcMethod points into it
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReaderWriter<ServerReflectionRequest,
                                           ServerReflectionResponse>>
      stream_;
  SimpleDescriptorDatabase files_;
  DescriptorPool pool_{&files_};
};

// Calls the unary `method` with `request`, a message of its input type;
// blocks for the answer, parsed into `response`.
grpc::Status CallUnary(const std::shared_ptr<grpc::Channel>& channel,
                       const MethodDescriptor& method, const Message& request,
                       Message* response) {
  grpc::TemplatedGenericStub<Message, Message> stub(channel);
  std::unique_ptr<grpc::ClientContext> context = Context();
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(
      context.get(),
      absl::StrCat("/", method.service()->full_name(), "/", method.name()),
      grpc::StubOptions(), &request, response, [&](grpc::Status s) {
        status = std::move(s);
        done.Notify();
      });
  done.WaitForNotification();
  return status;
}

// A mixq-server process (default flags but one worker and one engine thread)
// and a channel to it. The parameter is the reflection service to ask.
class ReflectionTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    const std::string port_file = dir_.Path("port");
    const std::string log = dir_.Path("server.log");
    pid_ = testing::StartProgram(
        MIXQ_SERVER_PATH,
        {"--listen", "127.0.0.1:0", "--port-file", port_file, "--data-dir",
         dir_.Path("data"), "--workers", "1", "--threads", "1"},
        log, log);
    ASSERT_NE(pid_, 0);
    const int port = testing::WaitForPortFile(port_file, kStartDeadline);
    // A server that aborts at startup (e.g. a descriptor registered twice:
    // "File already exists in database") says why in its log.
    ASSERT_GT(port, 0) << ReadFile(log).value_or("");
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials());
  }
  // SIGTERM: the server stops cleanly.
  void TearDown() override {
    if (pid_ == 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    ASSERT_EQ(waitpid(pid_, &status, 0), pid_);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "wait status " << status;
  }

  testing::ScopedTestDir dir_{"reflection"};
  pid_t pid_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_P(ReflectionTest, ListsMixqHealthAndBothReflections) {
  ReflectionClient reflection(channel_.get(), GetParam());
  auto services = reflection.ListServices();
  ASSERT_TRUE(services.ok()) << services.status();
  // Every service the server registers, whichever version is asked.
  EXPECT_THAT(*services,
              UnorderedElementsAre("mixq.v1.Mixq", "grpc.health.v1.Health",
                                   kV1Alpha, kV1));
}

TEST_P(ReflectionTest, HealthIsCallableFromItsReflectedDescriptor) {
  ReflectionClient reflection(channel_.get(), GetParam());
  const absl::Status fetched =
      reflection.FetchFileContainingSymbol("grpc.health.v1.Health");
  ASSERT_TRUE(fetched.ok()) << fetched;
  const auto* health =
      reflection.pool().FindServiceByName("grpc.health.v1.Health");
  ASSERT_NE(health, nullptr);
  EXPECT_EQ(health->file()->name(), "grpc/health/v1/health.proto");
  const MethodDescriptor* check = health->FindMethodByName("Check");
  ASSERT_NE(check, nullptr);

  DynamicMessageFactory factory(&reflection.pool());
  // "": the whole server.
  for (const std::string service : {"", "mixq.v1.Mixq"}) {
    SCOPED_TRACE(service);
    std::unique_ptr<Message> request(
        factory.GetPrototype(check->input_type())->New());
    request->GetReflection()->SetString(
        request.get(), check->input_type()->FindFieldByName("service"),
        service);
    std::unique_ptr<Message> response(
        factory.GetPrototype(check->output_type())->New());
    const grpc::Status status =
        CallUnary(channel_, *check, *request, response.get());
    ASSERT_TRUE(status.ok()) << status.error_message();
    const FieldDescriptor* field =
        check->output_type()->FindFieldByName("status");
    EXPECT_EQ(response->GetReflection()->GetEnum(*response, field)->name(),
              "SERVING");
  }
}

TEST_P(ReflectionTest, MixqIsCallableFromItsReflectedDescriptor) {
  ReflectionClient reflection(channel_.get(), GetParam());
  const absl::Status fetched =
      reflection.FetchFileContainingSymbol("mixq.v1.Mixq");
  ASSERT_TRUE(fetched.ok()) << fetched;
  const auto* mixq = reflection.pool().FindServiceByName("mixq.v1.Mixq");
  ASSERT_NE(mixq, nullptr);
  const MethodDescriptor* list_jobs = mixq->FindMethodByName("ListJobs");
  ASSERT_NE(list_jobs, nullptr);

  DynamicMessageFactory factory(&reflection.pool());
  std::unique_ptr<Message> request(
      factory.GetPrototype(list_jobs->input_type())->New());
  std::unique_ptr<Message> response(
      factory.GetPrototype(list_jobs->output_type())->New());
  const grpc::Status status =
      CallUnary(channel_, *list_jobs, *request, response.get());
  ASSERT_TRUE(status.ok()) << status.error_message();
  // A fresh server has no jobs.
  const FieldDescriptor* jobs =
      list_jobs->output_type()->FindFieldByName("jobs");
  ASSERT_NE(jobs, nullptr);
  EXPECT_EQ(response->GetReflection()->FieldSize(*response, jobs), 0);
}

INSTANTIATE_TEST_SUITE_P(Versions, ReflectionTest,
                         ::testing::Values(kV1Alpha, kV1),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return info.index == 0 ? "V1Alpha" : "V1";
                         });

}  // namespace
}  // namespace mixq
