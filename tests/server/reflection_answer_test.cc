// AnswerReflection without a channel: each kind of request against the
// descriptors linked into this binary, and the error codes tools rely on.
#include "server/reflection_answer.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.pb.h"
#include "gtest/gtest.h"
#include "proto/mixq.pb.h"
#include "tests/client/text_proto.h"

namespace mixq::server {
namespace {

using client::ParseText;
using grpc::reflection::v1::ServerReflectionRequest;
using grpc::reflection::v1::ServerReflectionResponse;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

const std::vector<std::string> kServices = {"mixq.v1.Mixq",
                                            "grpc.health.v1.Health"};

// The names of the files in `response`, in order.
std::vector<std::string> FileNames(const ServerReflectionResponse& response) {
  std::vector<std::string> names;
  for (const std::string& bytes :
       response.file_descriptor_response().file_descriptor_proto()) {
    google::protobuf::FileDescriptorProto file;
    EXPECT_TRUE(file.ParseFromString(bytes));
    names.push_back(file.name());
  }
  return names;
}

struct FileCase {
  std::string name;
  std::string request;  // a ServerReflectionRequest in text format
  absl::StatusCode code;
  std::vector<std::string> files;  // when code is kOk
};

TEST(ReflectionAnswerTest, FileRequests) {
  const std::string reflection = "grpc/reflection/v1/reflection.proto";
  const std::vector<FileCase> cases = {
      {"by name",
       "file_by_filename: 'grpc/reflection/v1/reflection.proto'",
       absl::StatusCode::kOk,
       {reflection}},
      {"unknown name",
       "file_by_filename: 'no/such.proto'",
       absl::StatusCode::kNotFound,
       {}},
      {"service",
       "file_containing_symbol: 'grpc.reflection.v1.ServerReflection'",
       absl::StatusCode::kOk,
       {reflection}},
      {"method",
       "file_containing_symbol: "
       "'grpc.reflection.v1.ServerReflection.ServerReflectionInfo'",
       absl::StatusCode::kOk,
       {reflection}},
      {"nested message field",
       "file_containing_symbol: "
       "'grpc.reflection.v1.ExtensionRequest.containing_type'",
       absl::StatusCode::kOk,
       {reflection}},
      {"unknown symbol",
       "file_containing_symbol: 'no.Such'",
       absl::StatusCode::kNotFound,
       {}},
      {"unknown extension",
       "file_containing_extension { containing_type: "
       "'google.protobuf.FileOptions' extension_number: 54321 }",
       absl::StatusCode::kNotFound,
       {}},
      {"extension of an unknown type",
       "file_containing_extension { containing_type: 'no.Such' "
       "extension_number: 1 }",
       absl::StatusCode::kNotFound,
       {}},
      {"unknown type's extensions",
       "all_extension_numbers_of_type: 'no.Such'",
       absl::StatusCode::kNotFound,
       {}},
      {"nothing set",
       "host: 'localhost'",
       absl::StatusCode::kUnimplemented,
       {}},
  };
  for (const FileCase& c : cases) {
    SCOPED_TRACE(c.name);
    const auto request = ParseText<ServerReflectionRequest>(c.request);
    const ServerReflectionResponse response =
        AnswerReflection(request, kServices);
    EXPECT_EQ(response.original_request().SerializeAsString(),
              request.SerializeAsString());
    EXPECT_EQ(response.error_response().error_code(), static_cast<int>(c.code));
    EXPECT_THAT(FileNames(response), ElementsAreArray(c.files));
  }
}

TEST(ReflectionAnswerTest, AFileComesWithItsImports) {
  const ServerReflectionResponse response =
      AnswerReflection(ParseText<ServerReflectionRequest>(
                           "file_containing_symbol: 'mixq.v1.Mixq'"),
                       kServices);
  EXPECT_THAT(FileNames(response),
              ElementsAre(v1::Job::descriptor()->file()->name(),
                          "google/protobuf/timestamp.proto"));
}

TEST(ReflectionAnswerTest, ListsTheServicesItIsGiven) {
  const ServerReflectionResponse response = AnswerReflection(
      ParseText<ServerReflectionRequest>("list_services: ''"), kServices);
  std::vector<std::string> names;
  for (const auto& service : response.list_services_response().service()) {
    names.push_back(service.name());
  }
  EXPECT_EQ(names, kServices);
}

TEST(ReflectionAnswerTest, ExtensionNumbersOfAKnownType) {
  const ServerReflectionResponse response = AnswerReflection(
      ParseText<ServerReflectionRequest>("all_extension_numbers_of_type: "
                                         "'google.protobuf.FileOptions'"),
      kServices);
  ASSERT_TRUE(response.has_all_extension_numbers_response());
  EXPECT_EQ(response.all_extension_numbers_response().base_type_name(),
            "google.protobuf.FileOptions");
}

}  // namespace
}  // namespace mixq::server
