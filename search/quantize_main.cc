// mixq-quantize: post-training static quantization of an ONNX model, as ONNX
// Runtime's quantize_static does, written as a QDQ ONNX model:
//
//   mixq-quantize --model M.onnx --inputs X.npy [--calib-size N]
//                 (--bits B | --policy P.json) [--activation-bits 8]
//                 --output Q.onnx [--report R.json] [--labels Y.npy]
//
// BatchNormalization is folded into the preceding Conv/Gemm, weights are
// quantized per output channel (symmetric by default), and the input of every
// quantized layer gets a QuantizeLinear/DequantizeLinear pair whose range the
// observer took from the first N inputs (the calibration set). Weights of 4
// bits or fewer are stored packed, two per byte (INT4/UINT4, opset 21); the
// summary line and the report (onnx_bytes, fp32_onnx_bytes) give the written
// and the input file's sizes. P.json holds
// `{"layers": [{"name": ..., "bits": ...}]}` — what `mixq best --json` prints
// (its first policy is used); layers it does not list stay in float.
// `mixq-run` runs the result. With --labels, the top-1 accuracy of the FP32
// model and of the written quantized model (re-imported) over all inputs is
// printed.
//
// Exit codes: 0 success, 1 failure (bad model, data, policy or output path;
// the message on stderr names the file), 2 usage error.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/dataset.h"
#include "engine/model.h"
#include "engine/model_inputs.h"
#include "engine/threads.h"
#include "google/protobuf/util/json_util.h"
#include "proto/mixq.pb.h"
#include "proto/quantization.pb.h"
#include "search/qdq_export.h"
#include "search/quantize.h"
#include "util/command_line.h"
#include "util/file.h"
#include "util/status_macros.h"

namespace mixq::search {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

struct Options {
  std::string model;
  std::string inputs;
  std::string labels;
  std::string output;
  std::string report;
  std::string policy;
  int bits = 0;
  int64_t calib_size = 512;
  int activation_bits = 8;
  std::string weight_scheme = "symmetric";
  bool per_tensor = false;
  std::string observer = "minmax";
  bool dynamic = false;
  std::optional<double> mean;
  std::optional<double> stddev;
  int threads = 0;
};

// The layers of `model` at the bits `path` (a JSON policy) gives them.
absl::StatusOr<Policy> ReadPolicy(const std::string& path,
                                  const engine::Model& model) {
  MIXQ_ASSIGN_OR_RETURN(const std::string json, ReadFile(path));
  google::protobuf::util::JsonParseOptions parse;
  parse.ignore_unknown_fields = true;
  v1::Policy policy;
  if (!google::protobuf::util::JsonStringToMessage(json, &policy, parse).ok()) {
    policy.Clear();
  }
  if (policy.layers_size() == 0) {
    // `mixq best --json` output: take the best policy.
    v1::QueryBestPoliciesResponse best;
    if (google::protobuf::util::JsonStringToMessage(json, &best, parse).ok() &&
        best.policies_size() > 0) {
      policy = best.policies(0);
    }
  }
  if (policy.layers_size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        ": not a policy: expected JSON with \"layers\": [{\"name\": ..., "
        "\"bits\": ...}] (or `mixq best --json` output)"));
  }
  const auto& layers = model.quantizable_layers();
  absl::flat_hash_map<std::string, int> index;
  for (size_t l = 0; l < layers.size(); ++l) index[layers[l].name] = l;
  Policy result(layers.size(), kFloatBits);
  std::vector<bool> seen(layers.size(), false);
  for (const v1::LayerBits& entry : policy.layers()) {
    auto it = index.find(entry.name());
    if (it == index.end()) {
      std::vector<std::string> names;
      for (const auto& layer : layers) names.push_back(layer.name);
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": no quantizable layer '", entry.name(),
          "' in the model; its layers are: ", absl::StrJoin(names, ", ")));
    }
    if (seen[it->second]) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": layer '", entry.name(), "' is listed twice"));
    }
    if (entry.bits() != kFloatBits &&
        (entry.bits() < kMinWeightBits || entry.bits() > kMaxWeightBits)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": layer '", entry.name(), "' has bits ",
                       entry.bits(), "; expected 1..8 or 32 (float)"));
    }
    seen[it->second] = true;
    result[it->second] = entry.bits();
  }
  return result;
}

// Top-1 accuracy of `model` with its stored parameters, everything in float
// (QatSession::Evaluate's batched loop; a QDQ model has its quantization in
// the graph).
absl::StatusOr<double> Accuracy(const engine::Model& model,
                                const LabeledData& data) {
  QuantOptions float_activations;
  float_activations.activations.bits = kFloatBits;
  QatSession session(model, engine::AdamOptions{}, /*batch_size=*/1,
                     /*seed=*/0, float_activations);
  MIXQ_ASSIGN_OR_RETURN(
      const Evaluation evaluation,
      session.Evaluate(Policy(model.quantizable_layers().size(), kFloatBits),
                       data));
  return evaluation.accuracy;
}

// The element type the file stores `p`'s integers in (search/qdq_export.h):
// weights of kMaxPackedWeightBits or fewer are packed into 4 bits.
std::string Container(const QuantParams& p, bool weight) {
  const bool packed = weight && p.bits <= kMaxPackedWeightBits;
  return absl::StrCat(p.is_signed() ? "" : "u", "int", packed ? 4 : 8);
}

v1::QuantGrid ToGrid(const QuantParams& p, bool weight) {
  v1::QuantGrid grid;
  grid.set_bits(p.bits);
  grid.set_scheme(p.binary                              ? "binary"
                  : p.scheme == QuantScheme::kSymmetric ? "symmetric"
                                                        : "asymmetric");
  grid.set_axis(p.axis);
  for (float s : p.scale) grid.add_scale(s);
  for (int32_t z : p.zero_point) grid.add_zero_point(z);
  grid.set_qmin(p.qmin);
  grid.set_qmax(p.qmax);
  grid.set_container(Container(p, weight));
  return grid;
}

absl::StatusOr<v1::QuantizationReport> Run(const Options& options) {
  engine::SetEngineThreads(options.threads);
  MIXQ_ASSIGN_OR_RETURN(const std::string original, ReadFile(options.model));
  absl::StatusOr<PreparedModel> prepared = PrepareModel(original);
  if (!prepared.ok()) return Annotate(prepared.status(), options.model);
  absl::StatusOr<std::unique_ptr<engine::Model>> imported =
      engine::Model::FromOnnxBytes(prepared->onnx);
  if (!imported.ok()) return Annotate(imported.status(), options.model);
  const engine::Model& model = **imported;
  if (model.quantizable_layers().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        options.model,
        ": no quantizable layer (Conv, ConvTranspose, Gemm or MatMul with a "
        "weight initializer)"));
  }

  MIXQ_ASSIGN_OR_RETURN(const std::string input_bytes,
                        ReadFile(options.inputs));
  MIXQ_ASSIGN_OR_RETURN(
      engine::Tensor inputs,
      engine::DecodeModelInputs(model.inputs(), input_bytes, options.inputs));
  if (options.mean.has_value() || options.stddev.has_value()) {
    absl::Status normalized = engine::NormalizeModelInputs(
        model.inputs(), static_cast<float>(options.mean.value_or(0.0)),
        static_cast<float>(options.stddev.value_or(1.0)), "--mean/--std",
        &inputs);
    if (!normalized.ok()) return Annotate(normalized, options.inputs);
  }

  Policy policy;
  if (!options.policy.empty()) {
    MIXQ_ASSIGN_OR_RETURN(policy, ReadPolicy(options.policy, model));
  } else {
    policy.assign(model.quantizable_layers().size(), options.bits);
  }

  QuantOptions quant;
  quant.weight_scheme = options.weight_scheme == "asymmetric"
                            ? QuantScheme::kAsymmetric
                            : QuantScheme::kSymmetric;
  quant.weight_granularity =
      options.per_tensor ? Granularity::kPerTensor : Granularity::kPerChannel;
  quant.activations.bits = options.activation_bits;
  quant.activations.dynamic = options.dynamic;
  quant.activations.observer = options.observer;
  MIXQ_RETURN_IF_ERROR(ValidateQuantOptions(quant));

  const int64_t calib_size = std::min(options.calib_size, inputs.dim(0));
  LabeledData calib;
  calib.inputs = inputs.Slice(0, calib_size);
  calib.labels.assign(calib_size, 0);  // calibration reads inputs only
  QatSession session(model, engine::AdamOptions{}, /*batch_size=*/64,
                     /*seed=*/0, quant);
  MIXQ_RETURN_IF_ERROR(session.Calibrate(policy, calib));
  MIXQ_ASSIGN_OR_RETURN(
      QuantizedModel quantized,
      ExportQuantized(prepared->onnx, model, session, policy));
  MIXQ_RETURN_IF_ERROR(WriteFile(options.output, quantized.onnx));

  v1::QuantizationReport report;
  report.set_model(options.model);
  for (const QuantizedLayer& layer : quantized.layers) {
    v1::QuantizedLayerReport* out = report.add_layers();
    out->set_name(layer.name);
    out->set_node(layer.node_name);
    out->set_op_type(layer.op_type);
    out->set_bits(layer.bits);
    out->set_num_weights(layer.num_weights);
    out->set_macs(layer.macs);
    out->set_size_bytes(layer.size_bytes);
    if (layer.bits < kFloatBits) {
      *out->mutable_weight() = ToGrid(layer.weight, /*weight=*/true);
    }
    if (layer.activation_quantized) {
      *out->mutable_activation() = ToGrid(layer.activation, /*weight=*/false);
    }
  }
  report.set_avg_bits(quantized.avg_bits);
  report.set_size_bytes(quantized.size_bytes);
  report.set_fp32_size_bytes(quantized.fp32_size_bytes);
  report.set_size_fraction(quantized.size_bytes / quantized.fp32_size_bytes);
  report.set_bops(quantized.bops);
  report.set_activation_bits(quantized.activation_bits);
  report.set_activation_mode(!quant.activations.enabled() ? "float"
                             : options.dynamic            ? "dynamic"
                                                          : "static");
  report.set_observer(options.observer);
  report.set_calib_samples(static_cast<int32_t>(calib_size));
  report.set_folded_batch_norms(prepared->folded_batch_norms);
  report.set_onnx_bytes(static_cast<int64_t>(quantized.onnx.size()));
  report.set_fp32_onnx_bytes(static_cast<int64_t>(original.size()));

  if (!options.labels.empty()) {
    MIXQ_ASSIGN_OR_RETURN(const std::string label_bytes,
                          ReadFile(options.labels));
    MIXQ_ASSIGN_OR_RETURN(std::vector<int64_t> labels,
                          engine::DecodeLabels(label_bytes, options.labels));
    if (static_cast<int64_t>(labels.size()) != inputs.dim(0)) {
      return absl::InvalidArgumentError(
          absl::StrCat(options.labels, ": ", labels.size(), " labels for ",
                       inputs.dim(0), " inputs"));
    }
    LabeledData labelled;
    labelled.inputs = std::move(inputs);
    labelled.labels = std::move(labels);
    absl::StatusOr<double> fp32 = Accuracy(model, labelled);
    if (!fp32.ok()) return Annotate(fp32.status(), options.labels);
    report.set_fp32_accuracy(*fp32);
    MIXQ_ASSIGN_OR_RETURN(std::unique_ptr<engine::Model> written,
                          engine::Model::FromOnnxBytes(quantized.onnx));
    MIXQ_ASSIGN_OR_RETURN(double q, Accuracy(*written, labelled));
    report.set_quantized_accuracy(q);
  }
  if (!options.report.empty()) {
    google::protobuf::util::JsonPrintOptions print;
    print.add_whitespace = true;
    print.always_print_primitive_fields = true;
    std::string json;
    if (!google::protobuf::util::MessageToJsonString(report, &json, print)
             .ok()) {
      return absl::InternalError("cannot print the report as JSON");
    }
    MIXQ_RETURN_IF_ERROR(WriteFile(options.report, json));
  }
  return report;
}

void PrintSummary(const Options& options, const v1::QuantizationReport& r,
                  double seconds) {
  std::cout << std::fixed << std::setprecision(3) << "mixq-quantize: wrote "
            << options.output << " in " << seconds << " s\n"
            << "  file " << r.onnx_bytes() << " bytes, " << std::setprecision(1)
            << 100.0 * static_cast<double>(r.onnx_bytes()) /
                   static_cast<double>(
                       std::max<int64_t>(r.fp32_onnx_bytes(), 1))
            << "% of the FP32 file's " << r.fp32_onnx_bytes()
            << " bytes (weights of 4 bits or fewer packed two per byte)\n"
            << std::setprecision(3) << "  layers " << r.layers_size()
            << ", avg weight bits " << r.avg_bits() << ", activations "
            << r.activation_mode();
  if (r.activation_mode() != "float")
    std::cout << " " << r.activation_bits() << "-bit";
  std::cout << ", " << r.calib_samples() << " calibration samples, "
            << r.folded_batch_norms() << " BatchNormalization folded\n"
            << "  parameters " << static_cast<int64_t>(r.size_bytes())
            << " bytes (" << std::setprecision(1) << 100.0 * r.size_fraction()
            << "% of FP32 " << static_cast<int64_t>(r.fp32_size_bytes())
            << "), " << std::setprecision(4) << r.bops() / 1e9
            << " GBOPs per sample\n";
  if (r.has_fp32_accuracy()) {
    std::cout << std::setprecision(2) << "  top-1 accuracy: FP32 "
              << 100.0 * r.fp32_accuracy() << "%, quantized "
              << 100.0 * r.quantized_accuracy() << "%\n";
  }
}

}  // namespace
}  // namespace mixq::search

int main(int argc, char** argv) {
  using mixq::search::Options;
  Options options;
  CLI::App app{
      "mixq-quantize: post-training static quantization of an ONNX model into "
      "QDQ ONNX (QuantizeLinear/DequantizeLinear), BatchNormalization folded."};
  app.add_option("--model", options.model, "the FP32 ONNX model")->required();
  app.add_option(
         "--inputs", options.inputs,
         "calibration inputs: .npy/.npz/IDX [N, ...], as mixq-run reads")
      ->required();
  app.add_option("--output", options.output, "the QDQ ONNX model to write")
      ->required();
  app.add_option("--calib-size", options.calib_size,
                 "calibrate on the first N inputs")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40))
      ->capture_default_str();
  auto* bits = app.add_option("--bits", options.bits,
                              "weight bits of every layer (1..8; 1 = binary)")
                   ->check(CLI::Range(1, 8));
  auto* policy =
      app.add_option("--policy", options.policy,
                     "JSON policy: {\"layers\": [{\"name\", \"bits\"}]}");
  bits->excludes(policy);
  policy->excludes(bits);
  app.add_option("--activation-bits", options.activation_bits,
                 "bits of the quantized layers' inputs (2..8; 32 = float)")
      ->check(CLI::IsMember({2, 3, 4, 5, 6, 7, 8, 32}))
      ->capture_default_str();
  app.add_option("--weight-scheme", options.weight_scheme,
                 "symmetric (int8) or asymmetric (uint8) weights")
      ->check(CLI::IsMember({"symmetric", "asymmetric"}))
      ->capture_default_str();
  app.add_flag("--per-tensor", options.per_tensor,
               "one weight scale per tensor instead of per output channel");
  app.add_option("--observer", options.observer,
                 "activation range observer: minmax, moving_average, "
                 "percentile:<p>")
      ->capture_default_str();
  app.add_flag("--dynamic", options.dynamic,
               "dynamic activations (ranges per batch at run time): only "
               "weights are quantized in the file");
  app.add_option("--normalize-mean", options.mean,
                 "inputs: x = (x - mean) / std");
  app.add_option("--normalize-std", options.stddev,
                 "inputs: x = (x - mean) / std");
  app.add_option("--labels", options.labels,
                 "labels of the inputs: print FP32 and quantized accuracy");
  app.add_option(
      "--report", options.report,
      "write a JSON report: per-layer bits, scales, zero points, costs");
  app.add_option("--threads", options.threads, "engine threads (0 = all cores)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  if (const std::optional<int> exit_code =
          mixq::util::ParseFlags(app, "mixq-quantize", argc, argv)) {
    return *exit_code;
  }
  if (options.bits == 0 && options.policy.empty()) {
    std::cerr << "mixq-quantize: --bits or --policy is required\n"
              << "Run with --help for more information.\n";
    return mixq::search::kExitUsage;
  }

  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<mixq::v1::QuantizationReport> report =
      mixq::search::Run(options);
  if (!report.ok()) {
    std::cerr << "mixq-quantize: " << report.status().message() << "\n";
    return mixq::search::kExitFailure;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  mixq::search::PrintSummary(options, *report, seconds);
  return mixq::search::kExitOk;
}
