// The client's RPC side: builds requests from parsed options, calls the mixq
// server, prints the answers (through format.h) and maps outcomes to exit
// codes (see cli.h).
//
// Thread-safety: all functions may be called concurrently.
#ifndef MIXQ_CLIENT_COMMANDS_H_
#define MIXQ_CLIENT_COMMANDS_H_

#include <cstddef>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "client/cli.h"
#include "grpcpp/support/status.h"
#include "proto/mixq.pb.h"

namespace mixq::client {

// The largest message the client sends or accepts (also the bound on the
// files `submit` uploads together).
inline constexpr size_t kMaxMessageBytes = size_t{512} << 20;

// The exit code for an RPC that ended with `code` (cli.h's table): OK → 0;
// INVALID_ARGUMENT, FAILED_PRECONDITION, PERMISSION_DENIED → 2; NOT_FOUND → 3;
// anything else → 4.
int ExitCodeFor(grpc::StatusCode code);

// The line printed for a failed RPC to `server` (with its newline):
// "error: <CODE_NAME>: <message>", explaining UNAVAILABLE as "cannot reach
// mixq server at <server>: ..." and DEADLINE_EXCEEDED with the timeout.
std::string DescribeRpcError(const grpc::Status& status,
                             const std::string& server, double timeout_seconds);

// The SubmitJobRequest for `options`. Each DataSource's filename is the path's
// basename. By default the files are read and sent as content; with
// options.server_paths their absolute paths are sent as server_path and
// nothing is read. Unset optional options stay zero (the server's default).
// Errors (the message names the flag): the files' own errors from
// mixq::ReadFile (NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED), and
// INVALID_ARGUMENT if together they exceed kMaxMessageBytes. Blocks on I/O.
absl::StatusOr<v1::SubmitJobRequest> BuildSubmitRequest(
    const SubmitOptions& options);

v1::ListJobsRequest BuildListRequest(const ListOptions& options);
// same_model is set with options.same_model or a model_sha256.
v1::QueryBestPoliciesRequest BuildBestRequest(const BestOptions& options);
// The EvaluatePolicyRequest for `options`; files as in BuildSubmitRequest.
absl::StatusOr<v1::EvaluatePolicyRequest> BuildEvalRequest(
    const EvalOptions& options);

// Connects to invocation.global.server (insecure, messages up to
// kMaxMessageBytes), runs invocation.command, prints its result to `out` and
// errors to `err`, and returns the exit code. Blocks until the RPCs finish:
// unary RPCs within global.timeout_seconds, a watch until its stream ends.
// `invocation.help` must be empty.
int RunInvocation(const Invocation& invocation, std::ostream& out,
                  std::ostream& err);

}  // namespace mixq::client

#endif  // MIXQ_CLIENT_COMMANDS_H_
