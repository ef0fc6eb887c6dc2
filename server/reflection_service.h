// grpc.reflection.v1.ServerReflection, which Debian's gRPC 1.51 lacks (its
// reflection plugin serves v1alpha only): tools that ask v1 first (grpcurl,
// Postman) get their answers without falling back.
#ifndef MIXQ_SERVER_REFLECTION_SERVICE_H_
#define MIXQ_SERVER_REFLECTION_SERVICE_H_

#include <string>
#include <utility>
#include <vector>

#include "grpc/reflection/v1/reflection.grpc.pb.h"

namespace mixq::server {

// Streams AnswerReflection's answers, one per request, with the callback API
// so an open stream holds no server thread. Thread-safe; register it before
// the server starts and keep it until the server is shut down.
class ReflectionService final
    : public grpc::reflection::v1::ServerReflection::CallbackService {
 public:
  // `services`: the full names list_services answers with.
  explicit ReflectionService(std::vector<std::string> services)
      : services_(std::move(services)) {}

  grpc::ServerBidiReactor<grpc::reflection::v1::ServerReflectionRequest,
                          grpc::reflection::v1::ServerReflectionResponse>*
  ServerReflectionInfo(grpc::CallbackServerContext* context) override;

 private:
  const std::vector<std::string> services_;
};

}  // namespace mixq::server

#endif  // MIXQ_SERVER_REFLECTION_SERVICE_H_
