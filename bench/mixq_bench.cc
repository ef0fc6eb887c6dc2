// mixq-bench: throughput of mixq's engine on ONNX models.
//
//   mixq-bench [--batch 128] [--threads 2] [--min-time 2] [--no-layers]
//              [--no-train] MODEL.onnx...
//
// For each model, on seeded Gaussian inputs:
//  - inference (Forward without a trace) and train-step (Forward with trace +
//    softmax cross-entropy + Backward + Adam over all parameters but the BN
//    statistics) throughput in samples/s, from the median batch time;
//  - per Conv node, the forward time and achieved GFLOP/s of a Conv-only
//    model with the node's weights, attributes and input shape (Model has no
//    per-node timing hook), and their sum against the whole forward;
//  - the process's peak RSS so far (run one model per process for per-model
//    numbers, as scripts/bench.sh does).
// Besides the report it prints lines that scripts/bench.sh joins with
// bench/torch_bench.py's:
//   RESULT mixq <model> inference|train|peak_rss_mib <value>
// Never run by ctest.
#include <omp.h>
#include <sys/resource.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "engine/adam.h"
#include "engine/loss.h"
#include "engine/model.h"
#include "engine/tensor.h"
#include "onnx/onnx_pb.h"
#include "util/file.h"
#include "util/status_macros.h"

namespace mixq::bench {
namespace {

using engine::Model;
using engine::Shape;
using engine::Tensor;

constexpr int kWarmupIterations = 2;
constexpr int kMinIterations = 3;
constexpr uint32_t kSeed = 1;
constexpr double kFlopsPerMac = 2.0;
constexpr double kGiga = 1e9;
constexpr double kMsPerSecond = 1e3;
constexpr double kKiBPerMiB = 1024.0;
// BatchNormalization inputs 3 and 4 (running mean and variance) are
// statistics, not trained: the optimizer skips them, as PyTorch's does.
constexpr int kBatchNormFirstStatistic = 3;
// Initializer names torch.onnx makes up for tensors it rewrote.
constexpr char kExporterPrefix[] = "onnx::";

struct Options {
  std::vector<std::string> models;
  int64_t batch = 128;
  int threads = 2;
  double min_seconds = 2.0;
  bool layers = true;
  bool train = true;
};

struct Timing {
  std::vector<double> seconds;  // per iteration, in run order
  int iterations() const { return static_cast<int>(seconds.size()); }
  // The median: robust to the preemptions of a shared machine, which stall
  // a whole OpenMP team at its next barrier.
  double PerIteration() const {
    std::vector<double> sorted = seconds;
    std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2,
                     sorted.end());
    return sorted[sorted.size() / 2];
  }
};

// Runs `step` kWarmupIterations times (once if that one run took
// `min_seconds`), then repeatedly until `min_seconds` have passed and at
// least kMinIterations ran (one if that one took `min_seconds`: a ResNet-50
// train step at batch 32 takes tens of seconds), timing each run. Stops at the
// first error.
template <typename Step>
absl::StatusOr<Timing> TimeLoop(double min_seconds, Step&& step) {
  using Clock = std::chrono::steady_clock;
  const auto seconds = [](Clock::time_point from, Clock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
  };
  const Clock::time_point warmup_start = Clock::now();
  for (int i = 0; i < kWarmupIterations; ++i) {
    MIXQ_RETURN_IF_ERROR(step());
    if (seconds(warmup_start, Clock::now()) >= min_seconds) break;
  }
  const Clock::time_point start = Clock::now();
  Timing timing;
  Clock::time_point last = start;
  do {
    MIXQ_RETURN_IF_ERROR(step());
    const Clock::time_point now = Clock::now();
    timing.seconds.push_back(seconds(last, now));
    last = now;
  } while (seconds(start, last) < min_seconds ||
           (timing.iterations() < kMinIterations &&
            timing.seconds.front() < min_seconds));
  return timing;
}

// The model's input shape with the batch set to `batch`.
Shape BatchShape(const Shape& shape, int64_t batch) {
  Shape s = shape;
  s[0] = batch;
  return s;
}

double PeakRssMiB() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / kKiBPerMiB;  // ru_maxrss is KiB
}

std::vector<const Tensor*> ConstPointers(const std::vector<Tensor>& tensors) {
  std::vector<const Tensor*> pointers;
  for (const Tensor& t : tensors) pointers.push_back(&t);
  return pointers;
}

absl::StatusOr<onnx::ModelProto> ParseOnnx(const std::string& bytes,
                                           const std::string& path) {
  onnx::ModelProto proto;
  if (!proto.ParseFromString(bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not an ONNX model"));
  }
  return proto;
}

const onnx::TensorProto* FindInitializer(const onnx::GraphProto& graph,
                                         const std::string& name) {
  for (const onnx::TensorProto& t : graph.initializer()) {
    if (t.name() == name) return &t;
  }
  return nullptr;
}

// The shape (batch 1) of value `name` of `proto`: the graph re-rooted at that
// value and imported.
absl::StatusOr<Shape> ValueShape(const onnx::ModelProto& proto,
                                 const std::string& name) {
  onnx::ModelProto truncated = proto;
  truncated.mutable_graph()->clear_output();
  AddFloatValue(name, {}, truncated.mutable_graph()->mutable_output());
  MIXQ_ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                        Model::FromOnnxBytes(truncated.SerializeAsString()));
  return model->output_shape();
}

struct ConvLayer {
  std::string label;  // node name, else the weight's name
  Shape input;        // batch 1
  Shape output;       // batch 1
  double flops_per_sample = 0;
  std::unique_ptr<Model> model;  // the Conv alone
};

// A model holding only `node` (a Conv of `proto`) with its weight and bias
// initializers and input shape.
absl::StatusOr<ConvLayer> IsolateConv(const onnx::ModelProto& proto,
                                      const onnx::NodeProto& node) {
  ConvLayer layer;
  // PyTorch's weight name is the shortest label; folded exports rename the
  // weights (onnx::Conv_81), so they are labelled by node name.
  const bool renamed = absl::StartsWith(node.input(1), kExporterPrefix);
  layer.label = renamed && !node.name().empty() ? node.name() : node.input(1);
  MIXQ_ASSIGN_OR_RETURN(layer.input, ValueShape(proto, node.input(0)));
  onnx::ModelProto conv;
  conv.set_ir_version(proto.ir_version());
  *conv.mutable_opset_import() = proto.opset_import();
  onnx::GraphProto* graph = conv.mutable_graph();
  graph->set_name(layer.label);
  onnx::NodeProto* copy = graph->add_node();
  *copy = node;
  copy->set_input(0, "x");
  copy->clear_output();
  copy->add_output("y");
  for (int i = 1; i < node.input_size(); ++i) {
    const onnx::TensorProto* init =
        FindInitializer(proto.graph(), node.input(i));
    if (init == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("Conv '", layer.label, "': input '", node.input(i),
                       "' is not an initializer"));
    }
    *graph->add_initializer() = *init;
  }
  AddFloatValue("x", layer.input, graph->mutable_input());
  AddFloatValue("y", {}, graph->mutable_output());
  MIXQ_ASSIGN_OR_RETURN(layer.model,
                        Model::FromOnnxBytes(conv.SerializeAsString()));
  layer.output = layer.model->output_shape();
  // 2 · outputs · (input channels per group · kernel area) = 2 · outputs ·
  // (weight elements per output channel).
  const Shape& weight = layer.model->params()[0].shape;
  layer.flops_per_sample =
      kFlopsPerMac * static_cast<double>(engine::NumElements(layer.output)) *
      static_cast<double>(engine::NumElements(weight) / weight[0]);
  return layer;
}

absl::Status BenchConvLayers(const onnx::ModelProto& proto,
                             const Options& options, double forward_seconds,
                             std::mt19937* rng) {
  const bool has_conv = std::any_of(
      proto.graph().node().begin(), proto.graph().node().end(),
      [](const onnx::NodeProto& node) { return node.op_type() == "Conv"; });
  if (!has_conv) return absl::OkStatus();
  std::printf("  %-40s %-16s %-16s %9s %9s %9s\n", "Conv layer", "input",
              "output", "MFLOP/smp", "ms", "GFLOP/s");
  double total_seconds = 0;
  double total_flops = 0;
  for (const onnx::NodeProto& node : proto.graph().node()) {
    if (node.op_type() != "Conv") continue;
    MIXQ_ASSIGN_OR_RETURN(ConvLayer layer, IsolateConv(proto, node));
    const Tensor x = RandomTensor(BatchShape(layer.input, options.batch), rng);
    const std::vector<const Tensor*> params =
        ConstPointers(layer.model->initial_params());
    MIXQ_ASSIGN_OR_RETURN(
        const Timing timing,
        TimeLoop(options.min_seconds / 10, [&]() -> absl::Status {
          return layer.model->Forward(x, params, nullptr).status();
        }));
    const double flops =
        layer.flops_per_sample * static_cast<double>(options.batch);
    total_seconds += timing.PerIteration();
    total_flops += flops;
    std::printf("  %-40s %-16s %-16s %9.2f %9.3f %9.1f\n", layer.label.c_str(),
                engine::ShapeToString(layer.input).c_str(),
                engine::ShapeToString(layer.output).c_str(),
                layer.flops_per_sample / 1e6,
                timing.PerIteration() * kMsPerSecond,
                flops / timing.PerIteration() / kGiga);
  }
  std::printf(
      "  all Conv layers: %.3f ms, %.1f GFLOP/s, %.0f%% of the model's forward "
      "time\n",
      total_seconds * kMsPerSecond, total_flops / total_seconds / kGiga,
      100 * total_seconds / forward_seconds);
  return absl::OkStatus();
}

// Indices of the parameters the optimizer updates: all but BatchNormalization
// statistics.
std::vector<int> TrainableParams(const Model& model,
                                 const onnx::ModelProto& proto) {
  absl::flat_hash_set<std::string> statistics;
  for (const onnx::NodeProto& node : proto.graph().node()) {
    if (node.op_type() != "BatchNormalization") continue;
    for (int i = kBatchNormFirstStatistic; i < node.input_size(); ++i) {
      statistics.insert(node.input(i));
    }
  }
  std::vector<int> trainable;
  for (size_t p = 0; p < model.params().size(); ++p) {
    if (!statistics.contains(model.params()[p].name)) trainable.push_back(p);
  }
  return trainable;
}

// Times train steps (Forward with trace, softmax cross-entropy, Backward,
// Adam over the trainable parameters) on `x` and `labels`, updating `params`.
absl::StatusOr<Timing> TimeTrainStep(const Model& model,
                                     const onnx::ModelProto& proto,
                                     const Tensor& x,
                                     const std::vector<int64_t>& labels,
                                     double min_seconds,
                                     std::vector<Tensor>* params) {
  const std::vector<const Tensor*> const_params = ConstPointers(*params);
  const std::vector<int> trainable = TrainableParams(model, proto);
  std::vector<Shape> shapes;
  std::vector<Tensor*> trained;
  for (int p : trainable) {
    shapes.push_back((*params)[p].shape());
    trained.push_back(&(*params)[p]);
  }
  engine::Adam adam(engine::AdamOptions{}, shapes);
  engine::ForwardTrace trace;
  Tensor grad_logits;
  std::vector<Tensor> grads;
  std::vector<Tensor> trained_grads(trainable.size());
  return TimeLoop(min_seconds, [&]() -> absl::Status {
    MIXQ_ASSIGN_OR_RETURN(const Tensor logits,
                          model.Forward(x, const_params, &trace));
    MIXQ_RETURN_IF_ERROR(
        engine::SoftmaxCrossEntropy(logits, labels, &grad_logits).status());
    MIXQ_RETURN_IF_ERROR(
        model.Backward(trace, const_params, grad_logits, &grads));
    // Moved out and back so that Backward reuses the buffers next time.
    for (size_t k = 0; k < trainable.size(); ++k) {
      trained_grads[k] = std::move(grads[trainable[k]]);
    }
    adam.Step(trained, trained_grads);
    for (size_t k = 0; k < trainable.size(); ++k) {
      grads[trainable[k]] = std::move(trained_grads[k]);
    }
    return absl::OkStatus();
  });
}

absl::Status BenchModel(const std::string& path, const Options& options) {
  const std::string name = std::filesystem::path(path).stem().string();
  MIXQ_ASSIGN_OR_RETURN(const std::string bytes, ReadFile(path));
  MIXQ_ASSIGN_OR_RETURN(const onnx::ModelProto proto, ParseOnnx(bytes, path));
  MIXQ_ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                        Model::FromOnnxBytes(bytes));
  std::mt19937 rng(kSeed);
  const Tensor x =
      RandomTensor(BatchShape(model->input_shape(), options.batch), &rng);
  const int64_t classes = model->output_shape().back();
  std::vector<int64_t> labels(options.batch);
  std::uniform_int_distribution<int64_t> label(0, classes - 1);
  for (int64_t& l : labels) l = label(rng);

  std::vector<Tensor> params = model->initial_params();
  std::printf("%s: batch %lld, %d threads, %zu parameters\n", name.c_str(),
              static_cast<long long>(options.batch), options.threads,
              params.size());

  const std::vector<const Tensor*> const_params = ConstPointers(params);
  MIXQ_ASSIGN_OR_RETURN(
      const Timing inference,
      TimeLoop(options.min_seconds, [&]() -> absl::Status {
        return model->Forward(x, const_params, nullptr).status();
      }));
  const double batch = static_cast<double>(options.batch);
  std::printf("  inference   %10.1f samples/s  (median %.2f ms/batch of %d)\n",
              batch / inference.PerIteration(),
              inference.PerIteration() * kMsPerSecond, inference.iterations());
  std::fflush(stdout);
  std::optional<Timing> train;
  if (options.train) {
    MIXQ_ASSIGN_OR_RETURN(train, TimeTrainStep(*model, proto, x, labels,
                                               options.min_seconds, &params));
    std::printf(
        "  train step  %10.1f samples/s  (median %.2f ms/batch of %d)\n",
        batch / train->PerIteration(), train->PerIteration() * kMsPerSecond,
        train->iterations());
  }
  if (options.layers) {
    MIXQ_RETURN_IF_ERROR(
        BenchConvLayers(proto, options, inference.PerIteration(), &rng));
  }
  std::printf("  peak RSS    %10.1f MiB\n", PeakRssMiB());
  std::printf("RESULT mixq %s inference %.1f\n", name.c_str(),
              batch / inference.PerIteration());
  if (train.has_value()) {
    std::printf("RESULT mixq %s train %.1f\n", name.c_str(),
                batch / train->PerIteration());
  }
  std::printf("RESULT mixq %s peak_rss_mib %.1f\n", name.c_str(), PeakRssMiB());
  std::fflush(stdout);
  return absl::OkStatus();
}

int Run(const Options& options) {
  omp_set_num_threads(options.threads);
  Eigen::setNbThreads(options.threads);
  for (const std::string& path : options.models) {
    absl::Status status = BenchModel(path, options);
    if (!status.ok()) {
      std::fprintf(stderr, "mixq-bench: %s: %s\n", path.c_str(),
                   status.ToString().c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace mixq::bench

int main(int argc, char** argv) {
  mixq::bench::Options options;
  CLI::App app{
      "Throughput of mixq's engine on ONNX models (inference, train step, Conv "
      "layers)"};
  app.add_option("models", options.models, "ONNX model files")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--batch", options.batch, "samples per batch")
      ->check(CLI::PositiveNumber);
  app.add_option("--threads", options.threads, "OpenMP/Eigen threads")
      ->check(CLI::PositiveNumber);
  app.add_option("--min-time", options.min_seconds, "seconds per measurement")
      ->check(CLI::PositiveNumber);
  bool no_layers = false;
  app.add_flag("--no-layers", no_layers, "skip the per-Conv-layer table");
  bool no_train = false;
  app.add_flag("--no-train", no_train, "time inference only");
  CLI11_PARSE(app, argc, argv);
  options.layers = !no_layers;
  options.train = !no_train;
  return mixq::bench::Run(options);
}
