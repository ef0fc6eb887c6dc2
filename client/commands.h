// The client's RPC side: builds requests from parsed options, calls the mixq
// server, prints the answers (through format.h) and maps outcomes to exit
// codes (see cli.h).
//
// Thread-safety: all functions may be called concurrently.
#ifndef MIXQ_CLIENT_COMMANDS_H_
#define MIXQ_CLIENT_COMMANDS_H_

#include <cstddef>
#include <memory>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "client/cli.h"
#include "grpcpp/channel.h"
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
// mixq server at <server>: ..." and DEADLINE_EXCEEDED with the timeout. A
// transport mismatch is said in words instead of gRPC's: plaintext against
// a TLS server (the server closes the socket: "add --tls"), TLS against a
// plaintext server ("drop --tls"), and a certificate no trusted CA signed
// ("--tls-ca"). `tls`: whether the client connected with TLS.
std::string DescribeRpcError(const grpc::Status& status,
                             const std::string& server, double timeout_seconds,
                             bool tls);

// The SubmitJobRequest for `options`. Each DataSource's filename is the path's
// basename. By default the files are read and sent as content; with
// options.server_paths their absolute paths are sent as server_path and
// nothing is read. The validation files are sent like the others when given
// (else val_inputs/val_labels stay unset), and val_size as given (0 unset). A
// kArtifactPrefix reference ("sha256:HEX", any case) is sent as artifact_sha256
// (lower case, no filename). options.upload is not read here (RunInvocation
// uploads first). Unset optional options stay zero (the server's default).
// Errors (the message names the flag): the files' own errors from
// mixq::ReadFile (NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED),
// INVALID_ARGUMENT for a reference that is not 64 hex digits, and
// INVALID_ARGUMENT if together the files exceed kMaxMessageBytes. Blocks on
// I/O.
absl::StatusOr<v1::SubmitJobRequest> BuildSubmitRequest(
    const SubmitOptions& options);

v1::ListJobsRequest BuildListRequest(const ListOptions& options);
// same_model is set with options.same_model or a model_sha256.
v1::QueryBestPoliciesRequest BuildBestRequest(const BestOptions& options);
// Likewise.
v1::GetParetoFrontRequest BuildParetoRequest(const ParetoOptions& options);
// The EvaluatePolicyRequest for `options`; files as in BuildSubmitRequest.
absl::StatusOr<v1::EvaluatePolicyRequest> BuildEvalRequest(
    const EvalOptions& options);

// A channel to global.server: plaintext, or TLS when global.tls (trusting
// --tls-ca, else the system's roots; presenting --tls-cert/--tls-key for
// mutual TLS); messages up to kMaxMessageBytes; every call on it carries
// `authorization: Bearer <token>` when there is a token (cli.h: --token-file,
// else global.token, surrounding whitespace removed). Does not connect yet.
// Errors name the flag: the read error of a token or TLS file (NOT_FOUND,
// ...); INVALID_ARGUMENT for an empty --token-file or a token with spaces or
// non-ASCII characters. Blocks on file I/O.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(
    const GlobalOptions& global);

// Connects to invocation.global.server through MakeChannel (its errors are
// printed and exit 2), runs invocation.command, prints its result to `out` and
// errors to `err`, and returns the exit code. Blocks until the RPCs finish:
// unary RPCs and exports within global.timeout_seconds, uploads within it
// plus one second per MiB, a watch until its stream ends. `upload` and
// `--upload` read each file whole and hash it before sending it in 1 MiB
// chunks (none when the server has it); `export` checks the download's size
// and SHA-256 (else exit 4) before writing the file; a watch that ends
// SUCCEEDED prints FormatWatchSummary (not with --json); `report` reads the
// job's results, its Pareto front and the kept policies of every job on its
// model (three unary RPCs) and writes RenderReportHtml's page to --output,
// by default "<job>.report.html". `invocation.help` must be empty.
int RunInvocation(const Invocation& invocation, std::ostream& out,
                  std::ostream& err);

}  // namespace mixq::client

#endif  // MIXQ_CLIENT_COMMANDS_H_
