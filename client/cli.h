// The `mixq` command-line client: argument parsing into one Options struct per
// command, and the entry point that runs a command against a mixq server.
//
// Usage: mixq [--server ADDR] [--json] [--timeout SECONDS] [--tty|--no-tty]
//             [--token-file F] [--tls] [--tls-ca F] [--tls-cert F --tls-key F]
//             <submit|status|list|watch|results|best|pareto|cancel|eval|
//              upload|export|report> ...
// (`mixq --help`, `mixq <command> --help`). Global options may also follow the
// command.
//
// Accuracies are named for the data they were measured on: "calib acc" on
// the job's calibration set (what the search scores with), "val acc" on its
// validation set (never trained or scored on; --val-inputs/--val-labels or
// --val-size, else the last 10 % of the samples), "-" where not measured.
// `best` ranks and `pareto` plots the kept policies by validation accuracy;
// `export --policy-id` saves any of them (`watch` names the final one).
//
// Authentication: with --token-file F (else $MIXQ_TOKEN) every RPC carries
// `authorization: Bearer <token>`, the token being F's content without
// surrounding whitespace. Transport: plaintext unless --tls, --tls-ca (the CA
// that signed the server's certificate; --tls alone trusts the system's
// roots) or a client certificate (--tls-cert with --tls-key, for mutual TLS)
// is given.
//
// Exit codes:
//   0  success (also for --help);
//   1  the watched job (`watch`, `submit --watch`) ended FAILED or CANCELLED;
//   2  usage error (bad flags, unreadable file), or the server answered
//      INVALID_ARGUMENT, FAILED_PRECONDITION or PERMISSION_DENIED;
//   3  the server answered NOT_FOUND (unknown job id);
//   4  any other RPC failure (server unreachable, deadline exceeded, ...).
// RPC errors print `error: <CODE_NAME>: <message>` to the error stream.
//
// Thread-safety: every function here may be called concurrently; RunCli
// shares no state between calls.
#ifndef MIXQ_CLIENT_CLI_H_
#define MIXQ_CLIENT_CLI_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/mixq.pb.h"
#include "util/npz_writer.h"

namespace mixq::client {

enum ExitCode : int {
  kExitOk = 0,
  kExitJobFailed = 1,
  kExitUsage = 2,
  kExitNotFound = 3,
  kExitRpcError = 4,
};

inline constexpr char kDefaultServer[] = "127.0.0.1:50051";
inline constexpr char kServerEnvVar[] = "MIXQ_SERVER";
inline constexpr char kTokenEnvVar[] = "MIXQ_TOKEN";
inline constexpr double kDefaultTimeoutSeconds = 60;

// Options shared by all commands.
struct GlobalOptions {
  std::string server = kDefaultServer;  // host:port
  bool json = false;                    // print responses as protobuf JSON
  double timeout_seconds = kDefaultTimeoutSeconds;  // deadline of unary RPCs
  // `watch` draws one updating progress bar instead of one line per event.
  // Set by --tty; `main` passes --tty when stdout is a terminal (unless the
  // user gave --no-tty).
  bool tty = false;
  // Bearer token: the content of token_file (--token-file) if set, else
  // `token` (RunCli copies $MIXQ_TOKEN into it). Empty both: none is sent.
  std::string token_file;
  std::string token;
  // Whether to use TLS: --tls, or implied by any of the files (see the usage
  // above).
  bool tls = false;
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
};

// A --model/--inputs/--labels/--val-inputs/--val-labels value naming a file
// uploaded before (`mixq upload` prints it): "sha256:" and the file's SHA-256
// in hex. Any other value is a local path ("./sha256:x" for a file really named
// so).
inline constexpr char kArtifactPrefix[] = "sha256:";

// `submit`: the job spec. Unset optionals leave the proto field zero, which
// the server reads as its documented default.
struct SubmitOptions {
  // Paths, or kArtifactPrefix references to uploaded files.
  std::string model;   // the ONNX model
  std::string inputs;  // the inputs (.npy or IDX)
  // Or, for a model with several graph inputs (or to name its one input):
  // `--inputs NAME=FILE` repeated, one .npy per graph input, which the
  // command packs into one .npz keyed by NAME before sending it.
  std::vector<NamedFile> inputs_by_name;
  std::string labels;  // the labels (.npy or IDX); optional (distill)
  // JobSpec.objective: "cross_entropy", "distill", or empty (the server's
  // default: cross_entropy with labels, distill without).
  std::string objective;
  int calib_size = 0;
  // Instead of model, inputs, labels and calib_size (empty: unset): start
  // from this job's warm-up state (JobSpec.from_job).
  std::string from_job;
  // The validation set: both files (as inputs/labels, empty = none), or
  // val_size samples held out from the end of the data, or neither (the
  // server holds out 10 %).
  std::string val_inputs;
  std::vector<NamedFile> val_inputs_by_name;  // as inputs_by_name
  std::string val_labels;
  std::optional<int> val_size;
  std::vector<int> bits;
  // Exactly one of the budgets is set.
  std::optional<double> target_avg_bits;
  std::optional<double> target_size_fraction;
  std::optional<int64_t> target_size_bytes;
  std::optional<double> target_bops;
  // Per-layer candidate bits (--layer-bits NAME=8,6,4; --pin NAME is NAME
  // at the highest of --bits).
  struct LayerBits {
    std::string name;
    std::vector<int> bits;
  };
  std::vector<LayerBits> layers;
  bool pin_first_last = false;
  std::optional<int> activation_bits;
  std::optional<int> candidates;
  std::optional<int> max_layers;
  std::optional<int> finetune_steps;
  std::optional<int> warmup_steps;
  std::optional<int> final_steps;
  std::optional<double> learning_rate;
  std::optional<int> batch_size;
  std::optional<double> lambda;
  // SearchOptions.strategy and .selection; empty = the server's default
  // ("auto", "min_index").
  std::string strategy;
  std::string selection;
  bool refresh_fisher = false;
  bool land_on_budget = false;
  bool knapsack_guided = false;
  std::vector<int> activation_levels;  // empty: activation bits not searched
  std::optional<int> total_finetune_steps;
  std::optional<int> hutchinson_samples;
  uint64_t seed = 0;
  struct Normalize {
    double mean = 0;
    double std = 1;
  };
  std::optional<Normalize> normalize;
  std::optional<int> max_samples;
  std::string name;
  std::string request_id;
  // Send absolute paths (DataSource.server_path) instead of file contents.
  bool server_paths = false;
  // Upload the files first (UploadArtifact, in chunks; the server keeps
  // each file once) and name them by SHA-256: no message size limit applies.
  bool upload = false;
  // After submitting, watch the job like `watch`.
  bool watch = false;
};

struct StatusOptions {
  std::string job_id;
};

struct ListOptions {
  v1::JobState state = v1::JOB_STATE_UNSPECIFIED;  // unspecified = all
  std::optional<int> limit;
};

struct WatchOptions {
  std::string job_id;
};

struct ResultsOptions {
  std::string job_id;
};

// `best`: exactly one of job_id and model_sha256 is set. same_model ranks
// the policies of every job on job_id's model; a model_sha256 query always
// does. resolve: job_id's least-Ω policy under the one limit set, predicted
// from the job's stored sensitivities (QueryBestPoliciesRequest.resolve).
struct BestOptions {
  std::string job_id;
  std::optional<int> top_k;
  double max_avg_bits = 0;    // 0 = no limit
  double max_size_bytes = 0;  // 0 = no limit
  double max_bops = 0;        // 0 = no limit
  bool same_model = false;
  std::string model_sha256;
  bool resolve = false;
};

// `pareto`: the accuracy-vs-cost front (GetParetoFront). Exactly one of
// job_id and model_sha256 is set, as for `best`; same_model (implied by
// model_sha256) spans every job on the model.
struct ParetoOptions {
  std::string job_id;
  bool same_model = false;
  std::string model_sha256;
};

struct CancelOptions {
  std::string job_id;
};

// `eval`: one policy evaluated without a search (EvaluatePolicy). `data`
// holds the model and data flags (as for submit; its search fields are
// unused): the first --calib-size samples calibrate/fine-tune; the
// validation set is evaluated (--val-inputs/--val-labels or --val-size),
// else the samples after the first --calib-size.
struct EvalOptions {
  SubmitOptions data;
  int default_bits = 32;  // --bits: every layer not in --layer-bits
  std::vector<SubmitOptions::LayerBits> layers;  // one entry each
  std::string mode = "static";
  std::optional<int> activation_bits;
  std::optional<int> finetune_steps;
};

// `upload`: one file sent to the server's artifact store.
struct UploadOptions {
  std::string path;
};

// `export`: a kept policy of a job saved to a file.
struct ExportOptions {
  std::string job_id;
  std::string format = "onnx";  // the API's ExportModelRequest.format
  // Policy.policy_id ("step-N", "final"); empty = the final policy of a
  // succeeded job.
  std::string policy_id;
  // Where to write it: a path, "-" for stdout, empty for the name in the
  // server's first chunk ("<job>.qdq.onnx", "<job>.step-3.policy.json", ...)
  // in the working directory.
  std::string output;
};

// `report`: a job's results as one self-contained HTML page
// (client/report_html.h), written to a file.
struct ReportOptions {
  std::string job_id;
  // A path, "-" for stdout, or empty for "<job>.report.html" in the working
  // directory.
  std::string output;
};

using CommandOptions =
    std::variant<SubmitOptions, StatusOptions, ListOptions, WatchOptions,
                 ResultsOptions, BestOptions, ParetoOptions, CancelOptions,
                 EvalOptions, UploadOptions, ExportOptions, ReportOptions>;

// A parsed command line: either a request for help (print `help`, exit 0) or a
// command to run.
struct Invocation {
  std::string help;  // non-empty: the usage text the user asked for
  GlobalOptions global;
  CommandOptions command;
};

// Parses `args` (without argv[0]). `default_server` is the --server default
// (the caller resolves MIXQ_SERVER). Returns INVALID_ARGUMENT with a message
// naming the flag for usage errors: unknown or missing flags or command, bad
// numbers, --bits not a comma-separated list of integers, --normalize not
// "MEAN,STD", both or neither budget given, --strategy or --selection not one
// of its values, `best` or `pareto` with neither or both of JOB and
// --model-sha256, `best --resolve` without exactly one of --max-avg-bits,
// --max-size-bytes and --max-bops or with --same-model or --model-sha256,
// --tls-cert without --tls-key or the reverse, --upload with
// --server-paths, only one of --val-inputs and --val-labels, either of them
// with --val-size, `export --format` not onnx, policy-json or policy_json.
// Does not touch files.
absl::StatusOr<Invocation> ParseCommandLine(
    const std::vector<std::string>& args, const std::string& default_server);

// Parses and runs one command, writing results to `out` and diagnostics to
// `err`; returns the exit code documented above. Blocks until the command
// finishes (for `watch`, until the job's event stream ends). Reads the
// MIXQ_SERVER and (without --token-file) MIXQ_TOKEN environment variables.
// Never throws.
int RunCli(const std::vector<std::string>& args, std::ostream& out,
           std::ostream& err);

}  // namespace mixq::client

#endif  // MIXQ_CLIENT_CLI_H_
