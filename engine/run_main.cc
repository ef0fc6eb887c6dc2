// mixq-run: runs an ONNX model's forward pass, with the parameters stored in
// the model, on a .npy of inputs and writes the first graph output as .npy:
//
//   mixq-run --model M.onnx --inputs X.npy --output Y.npy [--batch-size N]
//            [--threads T]
//
// It lets users check mixq's engine on their own models against their
// framework's outputs. Inputs are read as the service reads them
// (DecodeInputs): float32, float64 (converted) or uint8 (scaled to [0, 1]),
// shaped [N, ...] with the per-sample size of the model input (reshaped to
// it, so [N, 784] feeds a [batch, 1, 28, 28] model). The samples run in
// batches of --batch-size, so only one batch's activations are in memory;
// the output is the concatenation of the batches' outputs along dim 0. Like
// the service, it runs any model at any batch size, also one whose input
// declares a fixed batch (the engine's contract, see Model::Forward).
//
// Exit codes: 0 success, 1 failure (bad model, inputs or output path; the
// message on stderr names the file), 2 usage error.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/dataset.h"
#include "engine/model.h"
#include "engine/npy.h"
#include "engine/threads.h"
#include "engine/tensor.h"
#include "util/file.h"
#include "util/status_macros.h"

namespace mixq::engine {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int64_t kDefaultBatchSize = 64;

struct Options {
  std::string model;
  std::string inputs;
  std::string output;
  int64_t batch_size = kDefaultBatchSize;
  int threads = 0;  // 0: all cores
};

// What Run did, for the closing line.
struct RunSummary {
  Shape output_shape;
  int64_t batches = 0;
};

absl::StatusOr<RunSummary> Run(const Options& options) {
  SetEngineThreads(options.threads);
  MIXQ_ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                        Model::FromOnnxFile(options.model));
  MIXQ_ASSIGN_OR_RETURN(const std::string bytes, ReadFile(options.inputs));
  MIXQ_ASSIGN_OR_RETURN(Tensor inputs, DecodeInputs(bytes, options.inputs));
  absl::Status conformed = ConformToModelInput(model->input_shape(), &inputs);
  if (!conformed.ok()) return Annotate(conformed, options.inputs);
  const int64_t num_samples = inputs.dim(0);

  std::vector<const Tensor*> params;
  for (const Tensor& p : model->initial_params()) params.push_back(&p);
  RunSummary summary;
  FloatBuffer values;
  for (int64_t begin = 0; begin < num_samples; begin += options.batch_size) {
    const int64_t end = std::min(num_samples, begin + options.batch_size);
    absl::StatusOr<Tensor> forward =
        model->Forward(inputs.Slice(begin, end), params, nullptr);
    if (!forward.ok()) {
      return Annotate(forward.status(),
                      absl::StrCat("samples [", begin, ", ", end, ")"));
    }
    const Tensor& output = *forward;
    const Shape& shape = output.shape();
    if (shape.empty() || shape[0] != end - begin) {
      return absl::InvalidArgumentError(absl::StrCat(
          "output '", model->output_name(), "' has shape ",
          ShapeToString(shape), " for a batch of ", end - begin,
          "; mixq-run needs the batch as its dim 0 to concatenate batches"));
    }
    if (summary.batches == 0) {
      summary.output_shape = shape;
      summary.output_shape[0] = num_samples;
      values.reserve(NumElements(summary.output_shape));
    } else if (!std::equal(shape.begin() + 1, shape.end(),
                           summary.output_shape.begin() + 1,
                           summary.output_shape.end())) {
      return absl::InternalError(absl::StrCat(
          "output '", model->output_name(), "' changed shape between batches (",
          ShapeToString(shape), " vs ", ShapeToString(summary.output_shape),
          " overall)"));
    }
    values.insert(values.end(), output.values().begin(), output.values().end());
    ++summary.batches;
  }
  const Tensor result(summary.output_shape, std::move(values));
  MIXQ_RETURN_IF_ERROR(WriteFile(options.output, EncodeNpy(result)));
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
  app.add_option("--inputs", options.inputs, ".npy of inputs [N, ...]")
      ->required();
  app.add_option("--output", options.output,
                 ".npy to write the output [N, ...] to")
      ->required();
  app.add_option("--batch-size", options.batch_size, "samples per forward pass")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--threads", options.threads, "engine threads (0 = all cores)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help is a success; anything else is a usage error.
    const int code = app.exit(e);
    return code == 0 ? mixq::engine::kExitOk : mixq::engine::kExitUsage;
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
  std::cout << "mixq-run: wrote " << options.output << ": float32 "
            << mixq::engine::ShapeToString(summary->output_shape) << " in "
            << summary->batches << " batch"
            << (summary->batches == 1 ? "" : "es") << " (" << std::fixed
            << std::setprecision(3) << seconds << " s)\n";
  return mixq::engine::kExitOk;
}
