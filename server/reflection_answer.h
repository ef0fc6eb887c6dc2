// Answers to gRPC server reflection v1 requests from protobuf's generated
// descriptor pool (every message and service linked into the process): the
// files and error codes gRPC's own v1alpha service answers with. gRPC-free:
// the service in server/reflection_service.h streams them.
#ifndef MIXQ_SERVER_REFLECTION_ANSWER_H_
#define MIXQ_SERVER_REFLECTION_ANSWER_H_

#include <string>
#include <vector>

#include "grpc/reflection/v1/reflection.pb.h"

namespace mixq::server {

// The answer to `request`: list_services names `services`; a file request
// gets the file and, transitively, the files it imports; an unknown file,
// symbol, type or extension gets an error_response with NOT_FOUND, and a
// request with nothing set one with UNIMPLEMENTED. Never blocks;
// thread-safe.
grpc::reflection::v1::ServerReflectionResponse AnswerReflection(
    const grpc::reflection::v1::ServerReflectionRequest& request,
    const std::vector<std::string>& services);

}  // namespace mixq::server

#endif  // MIXQ_SERVER_REFLECTION_ANSWER_H_
