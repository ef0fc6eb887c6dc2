// mixq-run: runs an ONNX model's forward pass, with the parameters stored in
// the model, on a file of inputs; writes the first graph output as .npy
// and, given labels, prints the classifier's accuracy and loss:
//
//   mixq-run --model M.onnx --inputs X [--output Y.npy] [--labels L]
//   mixq-run --model M.onnx --inputs input_ids=I.npy
//            --inputs attention_mask=A.npy ...       (several graph inputs)
//            [--normalize MEAN,STD] [--samples BEGIN:END]
//            [--batch-size N] [--threads T]
//
// It lets users check mixq's engine on their own models against their
// framework's outputs, and measure an exported policy: on a job's
// validation data (the same files, normalisation and sample range) it
// prints exactly the validation accuracy and loss the service reported for
// that export (both go through engine/predict.h). Inputs are read as the
// service reads them (DecodeModelInputs: .npy/.npz float32, float64, uint8
// scaled to [0, 1], int64/int32 ids, or IDX images, raw or gzip; a .npz
// keyed by input name for a model with several inputs), shaped [N, ...] with
// the per-sample size of the model input (reshaped to it, so [N, 784] feeds a
// [batch, 1, 28, 28] model). The samples run in batches of --batch-size, so
// only one batch's activations are in memory; the output is the
// concatenation of the batches' outputs along dim 0. Like the service, it
// runs any model at any batch size, also one whose input declares a fixed
// batch (the engine's contract, see Model::Forward).
//
// Exit codes: 0 success, 1 failure (bad model, inputs, labels or output
// path; the message on stderr names the file), 2 usage error.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/dataset.h"
#include "engine/model.h"
#include "engine/model_inputs.h"
#include "engine/npy.h"
#include "engine/predict.h"
#include "engine/tensor.h"
#include "engine/threads.h"
#include "util/command_line.h"
#include "util/file.h"
#include "util/npz_writer.h"
#include "util/status_macros.h"

namespace mixq::engine {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

struct Options {
  std::string model;
  std::vector<std::string> inputs;  // one file, or NAME=FILE per graph input
  std::string output;               // empty: not written
  std::string labels;               // empty: no score
  std::string normalize;            // "MEAN,STD", empty: none
  std::string samples;              // "BEGIN:END", empty: all
  int64_t batch_size = kDefaultPredictBatch;
  int threads = 0;  // 0: all cores
};

// What Run did, for the closing lines.
struct RunSummary {
  Shape output_shape;
  int64_t batches = 0;
  std::optional<ClassifierScore> score;
};

// "A,B" → {A, B}; INVALID_ARGUMENT naming `flag` otherwise.
absl::StatusOr<std::pair<std::string, std::string>> SplitPair(
    const std::string& text, char separator, absl::string_view flag) {
  const size_t at = text.find(separator);
  if (at == std::string::npos ||
      text.find(separator, at + 1) != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": expected two values separated by '",
                     std::string(1, separator), "', got '", text, "'"));
  }
  return std::make_pair(text.substr(0, at), text.substr(at + 1));
}

// Samples [begin, end) of `count` from "BEGIN:END" (either may be empty:
// 0 and count).
absl::StatusOr<std::pair<int64_t, int64_t>> ParseRange(const std::string& text,
                                                       int64_t count) {
  MIXQ_ASSIGN_OR_RETURN(const auto parts, SplitPair(text, ':', "--samples"));
  int64_t begin = 0;
  int64_t end = count;
  if ((!parts.first.empty() && !absl::SimpleAtoi(parts.first, &begin)) ||
      (!parts.second.empty() && !absl::SimpleAtoi(parts.second, &end)) ||
      begin < 0 || end > count || begin >= end) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--samples: '", text, "' is not a range BEGIN:END within [0, ", count,
        "] with BEGIN < END"));
  }
  return std::make_pair(begin, end);
}

absl::StatusOr<RunSummary> Run(const Options& options) {
  SetEngineThreads(options.threads);
  MIXQ_ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                        Model::FromOnnxFile(options.model));
  // One file, or NAME=FILE per graph input packed into one .npz keyed by
  // name, as the mixq client sends them.
  std::string bytes;
  std::string inputs_name = "--inputs";
  std::vector<NamedFile> named;
  for (const std::string& value : options.inputs) {
    std::optional<NamedFile> file = ParseNamedFile(value);
    if (options.inputs.size() == 1 && !file.has_value()) {
      MIXQ_ASSIGN_OR_RETURN(bytes, ReadFile(value));
      inputs_name = value;
    } else if (!file.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--inputs: '", value,
                       "' is not NAME=FILE; give one file, or NAME=FILE for "
                       "every graph input"));
    } else {
      named.push_back(*std::move(file));
    }
  }
  if (!named.empty()) {
    MIXQ_ASSIGN_OR_RETURN(bytes, PackNamedFiles(named, "--inputs"));
  }
  MIXQ_ASSIGN_OR_RETURN(Tensor inputs,
                        DecodeModelInputs(model->inputs(), bytes, inputs_name));
  int64_t num_samples = inputs.shape().empty() ? 0 : inputs.dim(0);
  std::vector<int64_t> labels;
  if (!options.labels.empty()) {
    MIXQ_ASSIGN_OR_RETURN(const std::string label_bytes,
                          ReadFile(options.labels));
    MIXQ_ASSIGN_OR_RETURN(labels, DecodeLabels(label_bytes, options.labels));
    if (static_cast<int64_t>(labels.size()) != num_samples) {
      return absl::InvalidArgumentError(
          absl::StrCat(options.labels, " has ", labels.size(), " labels but ",
                       inputs_name, " has ", num_samples, " samples"));
    }
  }
  if (!options.samples.empty()) {
    MIXQ_ASSIGN_OR_RETURN(const auto range,
                          ParseRange(options.samples, num_samples));
    inputs = inputs.Slice(range.first, range.second);
    if (!labels.empty()) {
      labels = std::vector<int64_t>(labels.begin() + range.first,
                                    labels.begin() + range.second);
    }
    num_samples = range.second - range.first;
  }
  if (!options.normalize.empty()) {
    MIXQ_ASSIGN_OR_RETURN(const auto parts,
                          SplitPair(options.normalize, ',', "--normalize"));
    float mean = 0, stddev = 0;
    if (!absl::SimpleAtof(parts.first, &mean) ||
        !absl::SimpleAtof(parts.second, &stddev)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--normalize: '", options.normalize, "' is not MEAN,STD"));
    }
    MIXQ_RETURN_IF_ERROR(NormalizeModelInputs(model->inputs(), mean, stddev,
                                              "--normalize", &inputs));
  }

  RunSummary summary;
  MIXQ_ASSIGN_OR_RETURN(const Tensor output,
                        PredictInBatches(*model, inputs, options.batch_size));
  summary.output_shape = output.shape();
  summary.batches = (num_samples + options.batch_size - 1) / options.batch_size;
  if (!labels.empty()) {
    absl::StatusOr<ClassifierScore> score = ScoreLogits(output, labels);
    if (!score.ok()) return Annotate(score.status(), options.labels);
    summary.score = *score;
  }
  if (!options.output.empty())
    MIXQ_RETURN_IF_ERROR(WriteFile(options.output, EncodeNpy(output)));
  return summary;
}

}  // namespace
}  // namespace mixq::engine

int main(int argc, char** argv) {
  using mixq::engine::Options;
  Options options;
  CLI::App app{
      "mixq-run: run an ONNX model's forward pass with mixq's engine on a .npy "
      "of inputs and write the first output as .npy (float32). Inputs: "
      "float32, float64 or uint8 (scaled to [0, 1]), shaped [N, ...] with the "
      "model input's per-sample size."};
  app.add_option("--model", options.model, "the ONNX model")->required();
  app.add_option(
         "--inputs", options.inputs,
         "inputs [N, ...]: .npy, .npz or IDX (raw or gzip); int64/int32 "
         "token ids; or NAME=FILE.npy per graph input (repeat the "
         "flag) for a model with several")
      ->required();
  app.add_option("--output", options.output,
                 ".npy to write the output [N, ...] to (optional)");
  app.add_option("--labels", options.labels,
                 "integer class labels (.npy, .npz or IDX): print top-1 "
                 "accuracy and mean cross-entropy");
  app.add_option("--normalize", options.normalize,
                 "MEAN,STD: inputs become (x - MEAN) / STD, as a job's "
                 "spec.normalize");
  app.add_option("--samples", options.samples,
                 "BEGIN:END: only samples [BEGIN, END) of the inputs (and "
                 "labels), e.g. a job's held-out validation samples");
  app.add_option("--batch-size", options.batch_size, "samples per forward pass")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--threads", options.threads, "engine threads (0 = all cores)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  if (const std::optional<int> exit_code =
          mixq::util::ParseFlags(app, "mixq-run", argc, argv)) {
    return *exit_code;
  }

  if (options.output.empty() && options.labels.empty()) {
    std::cerr << "mixq-run: nothing to do: give --output and/or --labels\n";
    return mixq::engine::kExitUsage;
  }
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<mixq::engine::RunSummary> summary = mixq::engine::Run(options);
  if (!summary.ok()) {
    std::cerr << "mixq-run: " << summary.status().message() << "\n";
    return mixq::engine::kExitFailure;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  std::cout << "mixq-run: "
            << mixq::engine::ShapeToString(summary->output_shape)
            << " float32 in " << summary->batches << " batch"
            << (summary->batches == 1 ? "" : "es") << " (" << std::fixed
            << std::setprecision(3) << seconds << " s)";
  if (!options.output.empty()) std::cout << ", wrote " << options.output;
  std::cout << "\n";
  if (summary->score.has_value()) {
    // Full precision: the service's validation figures for an export are
    // these numbers, to the bit.
    std::cout << absl::StrFormat("accuracy %.17g loss %.17g samples %d\n",
                                 summary->score->accuracy, summary->score->loss,
                                 summary->score->samples);
  }
  return mixq::engine::kExitOk;
}
