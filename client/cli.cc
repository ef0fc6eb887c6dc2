#include "client/cli.h"

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <exception>
#include <utility>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "client/commands.h"
#include "client/usage_check.h"
#include "proto/spec_defaults.h"
#include "util/sha256.h"
#include "util/status_macros.h"

namespace mixq::client {
namespace {

constexpr char kFooter[] =
    "Exit codes: 0 ok; 1 the watched job failed or was cancelled;\n"
    "2 usage error, or the server answered INVALID_ARGUMENT,\n"
    "FAILED_PRECONDITION or PERMISSION_DENIED; 3 NOT_FOUND (unknown job);\n"
    "4 any other RPC failure (e.g. server unreachable).\n";

// OK for an address gRPC can dial: host:port, [v6]:port, or a URI with a
// scheme (unix:/path, dns:///host:port). A host alone would dial port 0.
absl::Status CheckServerAddress(absl::string_view address) {
  if (absl::StrContains(address, ":/") || absl::StartsWith(address, "unix:"))
    return absl::OkStatus();
  const size_t bracket = address.rfind(']');
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == absl::string_view::npos ||
      (bracket != absl::string_view::npos && colon < bracket) ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 1 ||
      port > 65535 || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--server: '", address, "' is not host:port (e.g. ", kDefaultServer,
        "; from --server, else $", kServerEnvVar, ")"));
  }
  return absl::OkStatus();
}

// A job state as typed on the command line, for `list --state`.
struct StateName {
  const char* name;
  v1::JobState state;
};
constexpr StateName kStateNames[] = {
    {"queued", v1::QUEUED},       {"running", v1::RUNNING},
    {"succeeded", v1::SUCCEEDED}, {"failed", v1::FAILED},
    {"cancelled", v1::CANCELLED},
};

// A flag that may be absent: CLI11 binds `value`; `option` tells whether the
// user gave it.
template <typename T>
struct OptionalFlag {
  T value{};
  CLI::Option* option = nullptr;

  std::optional<T> Get() const {
    if (option->count() == 0) return std::nullopt;
    return value;
  }
};

// Adds `name` to `command`, bound to `flag`.
template <typename T>
CLI::Option* AddOptional(CLI::App* command, const std::string& name,
                         OptionalFlag<T>& flag, const std::string& help) {
  flag.option = command->add_option(name, flag.value, help);
  return flag.option;
}

absl::StatusOr<std::vector<int>> ParseBits(absl::string_view text,
                                           absl::string_view flag = "--bits") {
  std::vector<int> bits;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int value = 0;
    if (!absl::SimpleAtoi(part, &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": \"", part,
                       "\" is not an integer (expected a list like 8,6,4,2)"));
    }
    bits.push_back(value);
  }
  return bits;
}

absl::StatusOr<SubmitOptions::Normalize> ParseNormalize(
    absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, ',');
  SubmitOptions::Normalize normalize;
  if (parts.size() != 2 || !absl::SimpleAtod(parts[0], &normalize.mean) ||
      !absl::SimpleAtod(parts[1], &normalize.std)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--normalize: expected \"MEAN,STD\" (two numbers), got \"",
                     text, "\""));
  }
  return normalize;
}

// Checks the model selection of `best` and `pareto` (`command`): exactly one
// of JOB and --model-sha256, the hash as 64 hex digits (lowercased, as the
// server stores it).
absl::Status FinishModelSelection(absl::string_view command,
                                  const std::string& job_id,
                                  std::string& model_sha256) {
  if (job_id.empty() && model_sha256.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(command, ": job is required (or --model-sha256 HASH)"));
  }
  if (!job_id.empty() && !model_sha256.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(command, ": give a job or --model-sha256, not both"));
  }
  if (model_sha256.empty()) return absl::OkStatus();
  const std::string given = model_sha256;
  absl::AsciiStrToLower(&model_sha256);
  if (!IsSha256Hex(model_sha256)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--model-sha256: \"", given,
                     "\" is not 64 hex digits (see a job's model_sha256 in "
                     "`mixq --json status JOB`)"));
  }
  return absl::OkStatus();
}

// Adds --model-sha256 to `command` (`best`, `pareto`), bound to `hash`.
void AddModelSha256(CLI::App* command, std::string* hash) {
  command->add_option("--model-sha256", *hash,
                      "Every job on the model with this content hash "
                      "(instead of a job; see `mixq --json status JOB`)");
}

// Adds the positional JOB argument to `command`.
void AddJobId(CLI::App* command, std::string* job_id) {
  command->add_option("job", *job_id, "Job id")->required();
}

// --server-paths and --upload, of `submit` and `eval`: how the files travel.
void AddFileTransferFlags(CLI::App* command, SubmitOptions& options) {
  CLI::Option* server_paths = command->add_flag(
      "--server-paths", options.server_paths,
      "Send absolute paths for the server to read instead of the files' "
      "bytes");
  command
      ->add_flag("--upload", options.upload,
                 "Upload the files first (in chunks, each stored once) and "
                 "send their SHA-256s: no message size limit applies")
      ->excludes(server_paths);
}

// `--inputs`-like flags: one file (a path or sha256:HEX), or NAME=FILE for
// each graph input of a model with several, repeated.
CLI::Option* AddInputsFlag(CLI::App* command, const std::string& flag,
                           std::vector<std::string>& values,
                           const std::string& description) {
  return command->add_option(
      flag, values,
      absl::StrCat(description,
                   "; or NAME=FILE.npy per graph input (repeat the flag; "
                   "packed into one .npz keyed by NAME)"));
}

// The values of an AddInputsFlag flag: one plain file into `*path`, or
// NAME=FILE pairs into `*named`. INVALID_ARGUMENT naming `flag` when plain
// files are repeated or mixed with NAME=FILE.
absl::Status FinishInputsFlag(absl::string_view flag,
                              const std::vector<std::string>& values,
                              std::string* path,
                              std::vector<NamedFile>* named) {
  if (values.size() == 1 && !ParseNamedFile(values[0]).has_value()) {
    *path = values[0];
    return absl::OkStatus();
  }
  for (const std::string& value : values) {
    std::optional<NamedFile> file = ParseNamedFile(value);
    if (!file.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          flag, ": '", value,
          "' is not NAME=FILE; give one file, or NAME=FILE for every graph "
          "input"));
    }
    named->push_back(*std::move(file));
  }
  return absl::OkStatus();
}

// --val-inputs, --val-labels and --val-size, of `submit` and `eval`: the
// validation set. `val_size` receives --val-size; `without` says what the
// command measures with neither.
void AddValidationFlags(CLI::App* command, std::vector<std::string>& val_inputs,
                        SubmitOptions& options, OptionalFlag<int>& val_size,
                        absl::string_view without) {
  AddInputsFlag(command, "--val-inputs", val_inputs,
                "Validation inputs, never trained or scored on (with "
                "--val-labels; a path or sha256:HEX, as --inputs)");
  command->add_option("--val-labels", options.val_labels,
                      "Validation labels (with --val-inputs)");
  AddOptional(command, "--val-size", val_size,
              absl::StrCat("Hold out the last N samples as the validation "
                           "set instead of files (without either: ",
                           without, ")"))
      ->check(CLI::PositiveNumber);
}

// --objective, of `submit` and `eval`.
void AddObjectiveFlag(CLI::App* command, SubmitOptions& options) {
  command
      ->add_option("--objective", options.objective,
                   "What the search scores and fine-tunes on: cross_entropy "
                   "(needs --labels; the default with them) or distill (the "
                   "distance to the FP32 model's outputs; labels optional; "
                   "the default without them)")
      ->check(CLI::IsMember({"cross_entropy", "distill"}));
}

// Whether the job distils (README "Objectives"): --objective distill, or no
// objective and no labels.
bool Distills(const SubmitOptions& options) {
  return options.objective == "distill" ||
         (options.objective.empty() && options.labels.empty());
}

// Checks and stores the validation flags: both files or neither (validation
// inputs alone when distilling), and not with --val-size.
absl::Status FinishValidation(const OptionalFlag<int>& val_size,
                              const std::vector<std::string>& val_inputs,
                              SubmitOptions& options) {
  MIXQ_RETURN_IF_ERROR(FinishInputsFlag("--val-inputs", val_inputs,
                                        &options.val_inputs,
                                        &options.val_inputs_by_name));
  const bool has_val_inputs =
      !options.val_inputs.empty() || !options.val_inputs_by_name.empty();
  const bool inputs_alone = Distills(options) && options.val_labels.empty();
  if (!inputs_alone && !has_val_inputs != options.val_labels.empty()) {
    return absl::InvalidArgumentError(
        !has_val_inputs
            ? "--val-labels: needs --val-inputs (the validation inputs)"
            : "--val-inputs: needs --val-labels (the validation labels)");
  }
  options.val_size = val_size.Get();
  if (options.val_size.has_value() && has_val_inputs) {
    return absl::InvalidArgumentError(
        "--val-size: give validation files (--val-inputs, --val-labels) or "
        "--val-size, not both");
  }
  return absl::OkStatus();
}

// Values bound to the `submit` flags that need conversion after parsing.
struct SubmitFlags {
  SubmitOptions options;
  std::vector<std::string> inputs;      // --inputs (FinishInputsFlag)
  std::vector<std::string> val_inputs;  // --val-inputs
  std::string bits;
  std::string activation_levels;
  OptionalFlag<std::string> normalize;
  OptionalFlag<double> target_avg_bits;
  OptionalFlag<double> target_size_fraction;
  OptionalFlag<int64_t> target_size_bytes;
  OptionalFlag<double> target_bops;
  OptionalFlag<int> activation_bits;
  std::vector<std::string> layer_bits;
  std::vector<std::string> pins;
  OptionalFlag<int> candidates;
  OptionalFlag<int> max_layers;
  OptionalFlag<int> finetune_steps;
  OptionalFlag<int> warmup_steps;
  OptionalFlag<int> final_steps;
  OptionalFlag<double> learning_rate;
  OptionalFlag<int> batch_size;
  OptionalFlag<double> lambda;
  OptionalFlag<int> total_finetune_steps;
  OptionalFlag<int> hutchinson_samples;
  OptionalFlag<int> max_samples;
  OptionalFlag<int> val_size;
};

CLI::App* AddSubmit(CLI::App& app, SubmitFlags& f) {
  CLI::App* cmd =
      app.add_subcommand("submit", "Submit a quantization search job");
  SubmitOptions& o = f.options;
  // Required unless --from-job (FinishSubmit checks).
  cmd->add_option("--model", o.model,
                  "ONNX model (FP32 initializers); a path, or sha256:HEX for "
                  "a file uploaded before (`mixq upload`), as for --inputs "
                  "and --labels");
  AddInputsFlag(cmd, "--inputs", f.inputs,
                "Inputs: .npy float32 [N, ...] (int64/int32 token ids) or "
                "IDX images");
  cmd->add_option("--labels", o.labels,
                  "Labels: .npy integers [N] or IDX labels (optional with "
                  "--objective distill)");
  AddObjectiveFlag(cmd, o);
  cmd->add_option("--calib-size", o.calib_size,
                  "The first N samples score candidates; the rest, but the "
                  "held-out validation samples, fine-tune")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--from-job", o.from_job,
                  "Start from job JOB's state after its warm-up (skipping "
                  "the warm-up): its model, data, validation set, batch "
                  "size, learning rate and activation bits; give the search "
                  "flags (--bits, a budget, --strategy, ...) only");
  AddValidationFlags(
      cmd, f.val_inputs, o, f.val_size,
      absl::StrCat("the last ", spec_defaults::kValidationPercent, " %"));
  cmd->add_option("--bits", f.bits,
                  "Candidate bit-widths per layer, e.g. 8,6,4,2")
      ->required();
  AddOptional(cmd, "--target-avg-bits", f.target_avg_bits,
              "Budget: parameter-weighted mean weight bits")
      ->check(CLI::PositiveNumber);
  AddOptional(cmd, "--target-size-fraction", f.target_size_fraction,
              "Budget: model size as a fraction of its FP32 size, in (0, 1]")
      ->check(CLI::PositiveNumber)
      ->excludes(f.target_avg_bits.option);
  AddOptional(cmd, "--target-size-bytes", f.target_size_bytes,
              "Budget: model size in bytes (quantized weights at their bits, "
              "other parameters in FP32)")
      ->check(CLI::PositiveNumber)
      ->excludes(f.target_avg_bits.option)
      ->excludes(f.target_size_fraction.option);
  AddOptional(cmd, "--target-bops", f.target_bops,
              "Budget: bit operations per sample, sum of MACs x weight bits x "
              "activation bits")
      ->check(CLI::PositiveNumber)
      ->excludes(f.target_avg_bits.option)
      ->excludes(f.target_size_fraction.option)
      ->excludes(f.target_size_bytes.option);
  cmd->add_option("--layer-bits", f.layer_bits,
                  "A layer's own candidate bits, NAME=8,6,4 (repeatable)");
  cmd->add_option("--pin", f.pins,
                  "Keep layer NAME at the highest of its --layer-bits, else of "
                  "--bits (repeatable)");
  cmd->add_flag("--pin-first-last", o.pin_first_last,
                "Keep the first and last quantizable layers at their highest "
                "bits");
  cmd->add_option("--activation-levels", f.activation_levels,
                  "Progressive: also search the activation bits among these, "
                  "e.g. 8,6,4 (with a BOPs budget)");
  AddOptional(cmd, "--activation-bits", f.activation_bits,
              absl::StrCat("Bits of the quantized layers' inputs, 2..8 or 32 "
                           "= float (server default ",
                           spec_defaults::kActivationBits, ")"))
      ->check(CLI::PositiveNumber);
  // For --candidates, --max-layers, --lr and --batch-size zero means "server
  // default" in the API, so zero is not accepted there.
  AddOptional(cmd, "--candidates", f.candidates,
              absl::StrCat("Candidate policies per step (server default ",
                           spec_defaults::kCandidates, ")"))
      ->check(CLI::PositiveNumber);
  AddOptional(cmd, "--max-layers", f.max_layers,
              absl::StrCat("At most this many layers lowered per candidate "
                           "(server default ",
                           spec_defaults::kMaxLayers, ")"))
      ->check(CLI::PositiveNumber);
  AddOptional(cmd, "--finetune-steps", f.finetune_steps,
              absl::StrCat("QAT steps after each search step (server "
                           "default ",
                           spec_defaults::kFinetuneSteps, ")"))
      ->check(CLI::NonNegativeNumber);
  AddOptional(cmd, "--warmup-steps", f.warmup_steps,
              "QAT steps before the first search step (default: "
              "--finetune-steps)")
      ->check(CLI::NonNegativeNumber);
  AddOptional(cmd, "--final-steps", f.final_steps,
              "QAT steps once the budget is met (default: --finetune-steps)")
      ->check(CLI::NonNegativeNumber);
  AddOptional(cmd, "--lr", f.learning_rate,
              absl::StrCat("Adam learning rate (server default ",
                           spec_defaults::kLearningRate, ")"))
      ->check(CLI::PositiveNumber);
  AddOptional(cmd, "--batch-size", f.batch_size,
              absl::StrCat("Fine-tuning mini-batch (server default ",
                           spec_defaults::kBatchSize, ")"))
      ->check(CLI::PositiveNumber);
  AddOptional(cmd, "--lambda", f.lambda,
              absl::StrCat("Weight of Omega in the performance index "
                           "(server default ",
                           spec_defaults::kLambda, ")"))
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--strategy", o.strategy,
                  absl::StrCat("Search strategy: auto, knapsack, "
                               "progressive, uniform or hawq (server default ",
                               spec_defaults::kStrategy, ")"))
      ->check(CLI::IsMember(
          {"auto", "progressive", "uniform", "knapsack", "hawq"}));
  cmd->add_option("--selection", o.selection,
                  absl::StrCat("Progressive: how a step picks its "
                               "candidate, min_index or per_cost_saved "
                               "(server default ",
                               spec_defaults::kSelection, ")"))
      ->check(CLI::IsMember({"min_index", "per_cost_saved"}));
  cmd->add_flag("--refresh-fisher", o.refresh_fisher,
                "Progressive: Omega from a fresh diagonal Fisher after each "
                "fine-tune instead of Adam's second moments");
  cmd->add_flag("--land-on-budget", o.land_on_budget,
                "Progressive: the step that meets the budget keeps the "
                "least-Omega policy that meets it");
  cmd->add_flag("--knapsack-guided", o.knapsack_guided,
                "Progressive: candidates only lower layers that the "
                "least-Omega allocation on the budget lowers (re-solved "
                "each step)");
  // Zero means "unset" in the API for both.
  AddOptional(cmd, "--total-finetune-steps", f.total_finetune_steps,
              "Fine-tune steps of the whole job; the final fine-tune gets "
              "what the search left, at least --final-steps")
      ->check(CLI::PositiveNumber);
  AddOptional(cmd, "--hutchinson-samples", f.hutchinson_samples,
              absl::StrCat("hawq: Rademacher vectors per Hessian trace "
                           "(server default ",
                           spec_defaults::kHutchinsonSamples, ")"))
      ->check(CLI::PositiveNumber);
  cmd->add_option("--seed", o.seed, "Random seed (fixes the job's result)");
  AddOptional(cmd, "--normalize", f.normalize,
              "Input normalisation MEAN,STD: (x - mean) / std");
  AddOptional(cmd, "--max-samples", f.max_samples,
              "Use only the first N samples")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--name", o.name, "Job label");
  cmd->add_option("--request-id", o.request_id,
                  "Idempotency key: resubmitting returns the first job");
  AddFileTransferFlags(cmd, o);
  cmd->add_flag("--watch", o.watch, "Watch the job after submitting it");
  return cmd;
}

// The model and data flags: all of them, or none with --from-job.
absl::Status CheckDataFlags(const SubmitOptions& o) {
  const std::pair<const char*, bool> data[] = {
      {"--model", !o.model.empty()},
      {"--inputs", !o.inputs.empty() || !o.inputs_by_name.empty()},
      {"--labels", !o.labels.empty()},
      {"--objective", !o.objective.empty()},
      {"--calib-size", o.calib_size != 0}};
  // Labels are optional (the distill objective); the server says when the
  // objective needs them.
  const auto optional = [](absl::string_view flag) {
    return flag == "--labels" || flag == "--objective";
  };
  for (const auto& [flag, set] : data) {
    if (o.from_job.empty() && !set && !optional(flag)) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " is required (or --from-job JOB)"));
    }
    if (!o.from_job.empty() && set) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": not with --from-job (the job uses job ",
                       o.from_job, "'s model and data)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<SubmitOptions> FinishSubmit(SubmitFlags& f) {
  SubmitOptions o = std::move(f.options);
  if (absl::Status status =
          FinishInputsFlag("--inputs", f.inputs, &o.inputs, &o.inputs_by_name);
      !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckDataFlags(o); !status.ok()) return status;
  if (absl::Status status = FinishValidation(f.val_size, f.val_inputs, o);
      !status.ok()) {
    return status;
  }
  absl::StatusOr<std::vector<int>> bits = ParseBits(f.bits);
  if (!bits.ok()) return bits.status();
  o.bits = *std::move(bits);
  if (!f.activation_levels.empty()) {
    absl::StatusOr<std::vector<int>> levels =
        ParseBits(f.activation_levels, "--activation-levels");
    if (!levels.ok()) return levels.status();
    o.activation_levels = *std::move(levels);
  }
  o.target_avg_bits = f.target_avg_bits.Get();
  o.target_size_fraction = f.target_size_fraction.Get();
  o.target_size_bytes = f.target_size_bytes.Get();
  o.target_bops = f.target_bops.Get();
  if (!o.target_avg_bits && !o.target_size_fraction && !o.target_size_bytes &&
      !o.target_bops) {
    return absl::InvalidArgumentError(
        "one of --target-avg-bits, --target-size-fraction, "
        "--target-size-bytes or --target-bops is required");
  }
  for (const std::string& entry : f.layer_bits) {
    const size_t eq = entry.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--layer-bits: \"", entry, "\" is not NAME=BITS,BITS,..."));
    }
    absl::StatusOr<std::vector<int>> layer = ParseBits(entry.substr(eq + 1));
    if (!layer.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--layer-bits ", entry, ": ", layer.status().message()));
    }
    o.layers.push_back({entry.substr(0, eq), *std::move(layer)});
  }
  // A pinned layer keeps only the highest of its own --layer-bits, else of
  // --bits; the API takes one entry per layer.
  for (const std::string& name : f.pins) {
    auto listed = std::find_if(
        o.layers.begin(), o.layers.end(),
        [&name](const SubmitOptions::LayerBits& l) { return l.name == name; });
    const std::vector<int>& from =
        listed != o.layers.end() ? listed->bits : o.bits;
    const int highest = *std::max_element(from.begin(), from.end());
    if (listed != o.layers.end()) {
      listed->bits = {highest};
    } else {
      o.layers.push_back({name, {highest}});
    }
  }
  o.activation_bits = f.activation_bits.Get();
  o.candidates = f.candidates.Get();
  o.max_layers = f.max_layers.Get();
  o.finetune_steps = f.finetune_steps.Get();
  o.warmup_steps = f.warmup_steps.Get();
  o.final_steps = f.final_steps.Get();
  o.learning_rate = f.learning_rate.Get();
  o.batch_size = f.batch_size.Get();
  o.lambda = f.lambda.Get();
  o.total_finetune_steps = f.total_finetune_steps.Get();
  o.hutchinson_samples = f.hutchinson_samples.Get();
  o.max_samples = f.max_samples.Get();
  if (std::optional<std::string> text = f.normalize.Get()) {
    absl::StatusOr<SubmitOptions::Normalize> normalize = ParseNormalize(*text);
    if (!normalize.ok()) return normalize.status();
    o.normalize = *normalize;
  }
  return o;
}

}  // namespace

absl::StatusOr<Invocation> ParseCommandLine(
    const std::vector<std::string>& args, const std::string& default_server) {
  Invocation invocation;
  GlobalOptions& global = invocation.global;
  global.server = default_server;

  CLI::App app(
      "mixq: search mixed-precision (per-layer bit-width) quantization "
      "policies\n"
      "for ONNX models on a mixq server.",
      "mixq");
  app.footer(kFooter);
  // Global flags are accepted after the command too.
  app.fallthrough();
  // At most one command; a missing one is reported below with the list.
  app.require_subcommand(0, 1);
  app.add_option("--server", global.server,
                 absl::StrCat("Server address host:port (default: $",
                              kServerEnvVar, ", else ", kDefaultServer, ")"));
  app.add_flag("--json", global.json,
               "Print responses in protobuf's JSON mapping");
  app.add_option(
         "--timeout", global.timeout_seconds,
         "Deadline in seconds for each request (not for watching; default 60)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--tty,!--no-tty", global.tty,
               "Draw `watch` progress as one updating bar (default: when "
               "stdout is a terminal)");
  app.add_option("--token-file", global.token_file,
                 absl::StrCat("Send the bearer token in this file (default: $",
                              kTokenEnvVar, ")"));
  app.add_flag("--tls", global.tls,
               "Connect with TLS, trusting the system's root certificates "
               "(implied by --tls-ca, --tls-cert)");
  app.add_option("--tls-ca", global.tls_ca_file,
                 "Connect with TLS, trusting this PEM CA for the server");
  app.add_option("--tls-cert", global.tls_cert_file,
                 "Mutual TLS: this PEM client certificate chain (with "
                 "--tls-key)");
  app.add_option("--tls-key", global.tls_key_file,
                 "Mutual TLS: the PEM private key of --tls-cert");

  SubmitFlags submit;
  CLI::App* submit_cmd = AddSubmit(app, submit);

  StatusOptions status;
  CLI::App* status_cmd = app.add_subcommand("status", "Show a job");
  AddJobId(status_cmd, &status.job_id);

  ListOptions list;
  std::string state_name;
  OptionalFlag<int> limit;
  CLI::App* list_cmd = app.add_subcommand("list", "List jobs, newest first");
  std::vector<std::string> state_names;
  for (const StateName& s : kStateNames) state_names.push_back(s.name);
  list_cmd->add_option("--state", state_name, "Only jobs in this state")
      ->check(CLI::IsMember(state_names, CLI::ignore_case));
  AddOptional(list_cmd, "--limit", limit, "At most N jobs (server default 100)")
      ->check(CLI::PositiveNumber);

  WatchOptions watch;
  CLI::App* watch_cmd =
      app.add_subcommand("watch",
                         "Follow a job's progress until it ends (exit 1 if it "
                         "failed or was cancelled)");
  AddJobId(watch_cmd, &watch.job_id);

  ResultsOptions results;
  CLI::App* results_cmd = app.add_subcommand(
      "results",
      "Show every search step's ranked candidates and the final policy");
  AddJobId(results_cmd, &results.job_id);

  BestOptions best;
  OptionalFlag<int> top_k;
  CLI::App* best_cmd = app.add_subcommand(
      "best",
      "Show the best exportable policies of a job, or of every job on a "
      "model, under a cost limit, by validation accuracy");
  best_cmd->add_option("job", best.job_id, "Job id (not with --model-sha256)");
  AddOptional(best_cmd, "--top-k", top_k,
              "At most K policies (server default 5)")
      ->check(CLI::PositiveNumber);
  best_cmd
      ->add_option("--max-avg-bits", best.max_avg_bits,
                   "Only policies with at most this mean weight bits")
      ->check(CLI::PositiveNumber);
  best_cmd
      ->add_option("--max-size-bytes", best.max_size_bytes,
                   "Only policies of at most this many bytes")
      ->check(CLI::PositiveNumber);
  best_cmd
      ->add_option("--max-bops", best.max_bops,
                   "Only policies of at most this many bit operations per "
                   "sample")
      ->check(CLI::PositiveNumber);
  best_cmd->add_flag("--same-model", best.same_model,
                     "Rank the policies of every job on the job's model, any "
                     "strategy (limits then default to none)");
  AddModelSha256(best_cmd, &best.model_sha256);
  best_cmd->add_flag(
      "--resolve", best.resolve,
      "Predict the job's least-Omega policy under the one --max-* limit "
      "given, from the sensitivities its warm-up stored (nothing measured)");

  ParetoOptions pareto;
  CLI::App* pareto_cmd = app.add_subcommand(
      "pareto",
      "Show the accuracy-vs-cost front: the kept policies no other beats on "
      "size, BOPs and validation accuracy at once, with the FP32 model");
  pareto_cmd->add_option("job", pareto.job_id,
                         "Job id (not with --model-sha256)");
  pareto_cmd->add_flag("--same-model", pareto.same_model,
                       "The front over every job on the job's model");
  AddModelSha256(pareto_cmd, &pareto.model_sha256);

  EvalOptions eval;
  std::vector<std::string> eval_layer_bits;
  OptionalFlag<std::string> eval_normalize;
  OptionalFlag<int> eval_max_samples;
  OptionalFlag<int> eval_activation_bits;
  OptionalFlag<int> eval_finetune_steps;
  CLI::App* eval_cmd = app.add_subcommand(
      "eval",
      "Evaluate one policy without a search (dynamic, static or QAT) "
      "against FP32");
  eval_cmd
      ->add_option("--model", eval.data.model,
                   "ONNX model; a path, or sha256:HEX for an uploaded file "
                   "(also for --inputs and --labels)")
      ->required();
  std::vector<std::string> eval_inputs;
  std::vector<std::string> eval_val_inputs;
  AddInputsFlag(eval_cmd, "--inputs", eval_inputs, "Inputs (.npy/.npz/IDX)")
      ->required();
  eval_cmd->add_option("--labels", eval.data.labels,
                       "Labels (.npy/.npz/IDX; optional with --objective "
                       "distill)");
  AddObjectiveFlag(eval_cmd, eval.data);
  eval_cmd
      ->add_option("--calib-size", eval.data.calib_size,
                   "The first N samples calibrate (static) or fine-tune "
                   "(qat); the validation set is evaluated, else the rest")
      ->required()
      ->check(CLI::PositiveNumber);
  OptionalFlag<int> eval_val_size;
  AddValidationFlags(eval_cmd, eval_val_inputs, eval.data, eval_val_size,
                     "every sample after --calib-size");
  eval_cmd
      ->add_option("--bits", eval.default_bits,
                   "Weight bits of every layer not in --layer-bits (1..8, 32 "
                   "= float)")
      ->check(CLI::IsMember({1, 2, 3, 4, 5, 6, 7, 8, 32}))
      ->capture_default_str();
  eval_cmd->add_option("--layer-bits", eval_layer_bits,
                       "A layer's weight bits, NAME=B (repeatable)");
  eval_cmd->add_option("--mode", eval.mode, "dynamic, static or qat")
      ->check(CLI::IsMember({"dynamic", "static", "qat"}))
      ->capture_default_str();
  AddOptional(eval_cmd, "--activation-bits", eval_activation_bits,
              absl::StrCat("2..8, or 32 = float (server default ",
                           spec_defaults::kActivationBits, ")"))
      ->check(CLI::PositiveNumber);
  AddOptional(eval_cmd, "--finetune-steps", eval_finetune_steps,
              "QAT steps in qat mode (server default 100)")
      ->check(CLI::PositiveNumber);
  AddOptional(eval_cmd, "--normalize", eval_normalize,
              "Input normalisation MEAN,STD: (x - mean) / std");
  AddOptional(eval_cmd, "--max-samples", eval_max_samples,
              "Use only the first N samples")
      ->check(CLI::PositiveNumber);
  eval_cmd->add_option("--seed", eval.data.seed, "Random seed");
  AddFileTransferFlags(eval_cmd, eval.data);

  UploadOptions upload;
  CLI::App* upload_cmd = app.add_subcommand(
      "upload",
      "Upload a file to the server in chunks; prints sha256:HEX, which "
      "--model/--inputs/--labels/--val-inputs/--val-labels accept");
  upload_cmd->add_option("file", upload.path, "The file")->required();

  ExportOptions export_options;
  std::string export_format = "onnx";
  CLI::App* export_cmd = app.add_subcommand(
      "export",
      "Save a job's kept policy (default: the final one of a succeeded job): "
      "the quantized model as QDQ ONNX, or the policy as JSON");
  AddJobId(export_cmd, &export_options.job_id);
  export_cmd->add_option("--policy-id", export_options.policy_id,
                         "The kept policy: step-N or final, as `best` and "
                         "`pareto` list them (default: final)");
  export_cmd
      ->add_option("--format", export_format,
                   "onnx (QuantizeLinear/DequantizeLinear model) or "
                   "policy-json (also spelt policy_json)")
      ->check(CLI::IsMember({"onnx", "policy-json", "policy_json"}))
      ->capture_default_str();
  export_cmd->add_option("--output,-o", export_options.output,
                         "File to write, - for stdout (default: the "
                         "server's name, e.g. <job>.qdq.onnx, "
                         "<job>.step-3.qdq.onnx, <job>.policy.json)");

  ReportOptions report;
  CLI::App* report_cmd = app.add_subcommand(
      "report",
      "Write a job's results as one self-contained HTML page: the spec, the "
      "bits per layer, the trajectory, the Pareto front and every step's "
      "candidates");
  AddJobId(report_cmd, &report.job_id);
  report_cmd->add_option("--output,-o", report.output,
                         "File to write, - for stdout (default: "
                         "<job>.report.html)");

  CancelOptions cancel;
  CLI::App* cancel_cmd =
      app.add_subcommand("cancel", "Cancel a queued or running job");
  AddJobId(cancel_cmd, &cancel.job_id);

  app.set_version_flag("--version", absl::StrCat("mixq ", MIXQ_VERSION));

  // Typos are named as such before CLI11 reports what follows from them.
  MIXQ_RETURN_IF_ERROR(CheckNames(app, args));
  // CLI11 reports errors and help requests by throwing; keep them inside.
  try {
    std::vector<std::string> reversed(args.rbegin(), args.rend());
    app.parse(reversed);
  } catch (const CLI::CallForVersion& version) {
    invocation.help = absl::StrCat(version.what(), "\n");
    return invocation;
  } catch (const CLI::CallForHelp&) {
    invocation.help = app.help();
    return invocation;
  } catch (const CLI::CallForAllHelp&) {
    invocation.help = app.help("", CLI::AppFormatMode::All);
    return invocation;
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(e.what());
  }

  MIXQ_RETURN_IF_ERROR(CheckServerAddress(global.server));
  if (global.tls_cert_file.empty() != global.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key: give both (the client certificate for "
        "mutual TLS and its private key) or neither");
  }
  global.tls = global.tls || !global.tls_ca_file.empty() ||
               !global.tls_cert_file.empty();

  if (submit_cmd->parsed()) {
    absl::StatusOr<SubmitOptions> options = FinishSubmit(submit);
    if (!options.ok()) return options.status();
    invocation.command = *std::move(options);
  } else if (status_cmd->parsed()) {
    invocation.command = std::move(status);
  } else if (list_cmd->parsed()) {
    state_name = absl::AsciiStrToLower(state_name);
    for (const StateName& s : kStateNames) {
      if (state_name == s.name) list.state = s.state;
    }
    list.limit = limit.Get();
    invocation.command = std::move(list);
  } else if (watch_cmd->parsed()) {
    invocation.command = std::move(watch);
  } else if (results_cmd->parsed()) {
    invocation.command = std::move(results);
  } else if (best_cmd->parsed()) {
    best.top_k = top_k.Get();
    if (absl::Status status =
            FinishModelSelection("best", best.job_id, best.model_sha256);
        !status.ok()) {
      return status;
    }
    if (best.resolve) {
      if (best.same_model || !best.model_sha256.empty()) {
        return absl::InvalidArgumentError(
            "--resolve: re-solves one job; not with --same-model or "
            "--model-sha256");
      }
      const int limits = (best.max_avg_bits > 0) + (best.max_size_bytes > 0) +
                         (best.max_bops > 0);
      if (limits != 1) {
        return absl::InvalidArgumentError(
            "--resolve: give exactly one of --max-avg-bits, --max-size-bytes "
            "and --max-bops");
      }
    }
    invocation.command = std::move(best);
  } else if (pareto_cmd->parsed()) {
    if (absl::Status status =
            FinishModelSelection("pareto", pareto.job_id, pareto.model_sha256);
        !status.ok()) {
      return status;
    }
    invocation.command = std::move(pareto);
  } else if (cancel_cmd->parsed()) {
    invocation.command = std::move(cancel);
  } else if (eval_cmd->parsed()) {
    if (absl::Status status =
            FinishInputsFlag("--inputs", eval_inputs, &eval.data.inputs,
                             &eval.data.inputs_by_name);
        !status.ok()) {
      return status;
    }
    if (absl::Status status =
            FinishValidation(eval_val_size, eval_val_inputs, eval.data);
        !status.ok()) {
      return status;
    }
    for (const std::string& entry : eval_layer_bits) {
      const size_t eq = entry.find('=');
      int bits = 0;
      if (eq == std::string::npos || eq == 0 ||
          !absl::SimpleAtoi(entry.substr(eq + 1), &bits)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--layer-bits: \"", entry, "\" is not NAME=BITS"));
      }
      eval.layers.push_back({entry.substr(0, eq), {bits}});
    }
    if (std::optional<std::string> text = eval_normalize.Get()) {
      absl::StatusOr<SubmitOptions::Normalize> normalize =
          ParseNormalize(*text);
      if (!normalize.ok()) return normalize.status();
      eval.data.normalize = *normalize;
    }
    eval.data.max_samples = eval_max_samples.Get();
    eval.activation_bits = eval_activation_bits.Get();
    eval.finetune_steps = eval_finetune_steps.Get();
    invocation.command = std::move(eval);
  } else if (upload_cmd->parsed()) {
    invocation.command = std::move(upload);
  } else if (export_cmd->parsed()) {
    // The API spells it policy_json; the CLI's flags use dashes.
    export_options.format =
        export_format == "policy-json" ? "policy_json" : export_format;
    invocation.command = std::move(export_options);
  } else if (report_cmd->parsed()) {
    invocation.command = std::move(report);
  } else {
    return absl::InvalidArgumentError(
        "a command is required: submit, status, list, watch, results, best, "
        "pareto, cancel, eval, upload, export or report");
  }
  return invocation;
}

int RunCli(const std::vector<std::string>& args, std::ostream& out,
           std::ostream& err) {
  const char* env_server = std::getenv(kServerEnvVar);
  absl::StatusOr<Invocation> invocation = ParseCommandLine(
      args, env_server != nullptr && *env_server != '\0' ? env_server
                                                         : kDefaultServer);
  if (!invocation.ok()) {
    err << "error: " << invocation.status().message() << "\n"
        << "Run 'mixq --help' for usage.\n";
    return kExitUsage;
  }
  if (!invocation->help.empty()) {
    out << invocation->help;
    return kExitOk;
  }
  // --token-file wins over the environment.
  const char* env_token = std::getenv(kTokenEnvVar);
  if (invocation->global.token_file.empty() && env_token != nullptr) {
    invocation->global.token = env_token;
  }
  return RunInvocation(*invocation, out, err);
}

}  // namespace mixq::client
