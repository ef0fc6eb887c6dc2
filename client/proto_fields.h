// A protobuf message as rows of "field path: value" text, for showing a
// message whose fields grow with the API (the job spec in `mixq report`)
// without a hand-written line per field. gRPC-free; pure, thread-safe.
#ifndef MIXQ_CLIENT_PROTO_FIELDS_H_
#define MIXQ_CLIENT_PROTO_FIELDS_H_

#include <string>
#include <utility>
#include <vector>

#include "google/protobuf/message.h"

namespace mixq::client {

// One row per set scalar field of `message` and of its set sub-messages, in
// field-number order, depth first. The path joins field names with "." and
// indexes repeated messages ("search.layers[0].name"); repeated scalars are
// one row with the values joined by ", ". Values: numbers with up to six
// significant digits ("0.286", "10000", "1e-05"), bools "true"/"false", enums
// by name, strings as they are, bytes as "<N bytes>". Fields at their default
// value are not "set" in proto3 unless declared `optional`, so they have no
// row.
std::vector<std::pair<std::string, std::string>> SetFieldRows(
    const google::protobuf::Message& message);

}  // namespace mixq::client

#endif  // MIXQ_CLIENT_PROTO_FIELDS_H_
