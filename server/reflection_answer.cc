#include "server/reflection_answer.h"

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"

namespace mixq::server {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::DescriptorPool;
using google::protobuf::FieldDescriptor;
using google::protobuf::FileDescriptor;
using grpc::reflection::v1::ServerReflectionRequest;
using grpc::reflection::v1::ServerReflectionResponse;

// Adds `file` and the files it imports, each once, to `response`.
void AddFileAndImports(const FileDescriptor& file,
                       absl::flat_hash_set<std::string>* added,
                       ServerReflectionResponse* response) {
  if (!added->insert(file.name()).second) return;
  google::protobuf::FileDescriptorProto proto;
  file.CopyTo(&proto);
  proto.SerializeToString(response->mutable_file_descriptor_response()
                              ->add_file_descriptor_proto());
  for (int i = 0; i < file.dependency_count(); ++i) {
    AddFileAndImports(*file.dependency(i), added, response);
  }
}

// gRPC's status codes are Abseil's, number for number.
void SetError(absl::StatusCode code, const std::string& message,
              ServerReflectionResponse* response) {
  response->mutable_error_response()->set_error_code(static_cast<int>(code));
  response->mutable_error_response()->set_error_message(message);
}

// Fills `response` from `file`, or with NOT_FOUND naming `what` when it is
// null.
void AnswerWithFile(const FileDescriptor* file, const std::string& what,
                    ServerReflectionResponse* response) {
  if (file == nullptr) {
    SetError(absl::StatusCode::kNotFound, absl::StrCat(what, " not found"),
             response);
    return;
  }
  absl::flat_hash_set<std::string> added;
  AddFileAndImports(*file, &added, response);
}

}  // namespace

ServerReflectionResponse AnswerReflection(
    const ServerReflectionRequest& request,
    const std::vector<std::string>& services) {
  const DescriptorPool& pool = *DescriptorPool::generated_pool();
  ServerReflectionResponse response;
  response.set_valid_host(request.host());
  *response.mutable_original_request() = request;
  switch (request.message_request_case()) {
    case ServerReflectionRequest::kFileByFilename:
      AnswerWithFile(pool.FindFileByName(request.file_by_filename()),
                     absl::StrCat("file ", request.file_by_filename()),
                     &response);
      break;
    case ServerReflectionRequest::kFileContainingSymbol:
      AnswerWithFile(
          pool.FindFileContainingSymbol(request.file_containing_symbol()),
          absl::StrCat("symbol ", request.file_containing_symbol()), &response);
      break;
    case ServerReflectionRequest::kFileContainingExtension: {
      const auto& extension = request.file_containing_extension();
      const Descriptor* type =
          pool.FindMessageTypeByName(extension.containing_type());
      const FieldDescriptor* field =
          type == nullptr
              ? nullptr
              : pool.FindExtensionByNumber(type, extension.extension_number());
      AnswerWithFile(field == nullptr ? nullptr : field->file(),
                     absl::StrCat("extension ", extension.extension_number(),
                                  " of ", extension.containing_type()),
                     &response);
      break;
    }
    case ServerReflectionRequest::kAllExtensionNumbersOfType: {
      const Descriptor* type =
          pool.FindMessageTypeByName(request.all_extension_numbers_of_type());
      if (type == nullptr) {
        SetError(absl::StatusCode::kNotFound,
                 absl::StrCat("type ", request.all_extension_numbers_of_type(),
                              " not found"),
                 &response);
        break;
      }
      std::vector<const FieldDescriptor*> extensions;
      pool.FindAllExtensions(type, &extensions);
      auto* numbers = response.mutable_all_extension_numbers_response();
      numbers->set_base_type_name(type->full_name());
      for (const FieldDescriptor* field : extensions) {
        numbers->add_extension_number(field->number());
      }
      break;
    }
    case ServerReflectionRequest::kListServices:
      for (const std::string& name : services) {
        response.mutable_list_services_response()->add_service()->set_name(
            name);
      }
      break;
    case ServerReflectionRequest::MESSAGE_REQUEST_NOT_SET:
      SetError(absl::StatusCode::kUnimplemented,
               "the request sets none of its message_request fields",
               &response);
      break;
  }
  return response;
}

}  // namespace mixq::server
