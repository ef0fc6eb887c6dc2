// libFuzzer target: untrusted model bytes through the validator, the
// importer and one forward/backward pass. See import_fuzzer.h.
#include "tests/fuzz/import_fuzzer.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/graph_rewrite.h"
#include "engine/model.h"
#include "engine/tensor.h"
#include "engine/threads.h"
#include "engine/validate.h"
#include "onnx/onnx_pb.h"
#include "search/evaluate.h"
#include "search/qat.h"

namespace mixq::fuzz {
namespace {

// Models run only when SizeBound stays below this many elements (16 M
// floats, 64 MB): the engine keeps scratch buffers per thread, and
// libFuzzer's RSS limit is 2 GB by default.
constexpr double kMaxRunElements = double{1 << 24};
// Integers at least this large are sentinels (Slice's INT64_MAX ends) or
// sizes every kernel refuses (CheckedNumElements' 2^31): no factor.
constexpr double kSentinel = double{int64_t{1} << 31};
// Float initializers this small may be scales (Resize, Upsample).
constexpr int kMaxScaleElements = 16;
// RunQuantized's samples (when the input's batch is symbolic), their seed,
// and the policy's bits.
constexpr int64_t kQuantSamples = 4;
constexpr uint32_t kQuantSeed = 7;
constexpr int kQuantBits = 4;

[[noreturn]] void Finding(const char* what, const absl::Status& status) {
  std::fprintf(stderr, "fuzz_import finding: %s: %s\n", what,
               status.ToString().c_str());
  std::fflush(stderr);
  std::abort();
}

// The codes a refused model may get (engine/validate.h, engine/model.h).
void CheckRefusal(const char* what, const absl::Status& status) {
  if (status.code() != absl::StatusCode::kInvalidArgument &&
      status.code() != absl::StatusCode::kResourceExhausted) {
    Finding(what, status);
  }
}

// Multiplies `*bound` by |v| for every size-like number v (1 < |v| <
// kSentinel).
void Grow(double v, double* bound) {
  const double a = std::fabs(v);
  if (a > 1 && a < kSentinel) *bound *= a;
}

template <typename T>
void GrowRaw(const std::string& raw, double* bound) {
  for (size_t i = 0; i + sizeof(T) <= raw.size(); i += sizeof(T)) {
    T v;
    std::memcpy(&v, raw.data() + i, sizeof(T));
    Grow(static_cast<double>(v), bound);
  }
}

// Integer tensors (shapes, repeats, pads) and small float ones (scales).
void GrowByTensor(const onnx::TensorProto& t, double* bound) {
  switch (t.data_type()) {
    case onnx::TensorProto::INT64:
      for (int64_t v : t.int64_data()) Grow(static_cast<double>(v), bound);
      GrowRaw<int64_t>(t.raw_data(), bound);
      break;
    case onnx::TensorProto::INT32:
      for (int32_t v : t.int32_data()) Grow(v, bound);
      GrowRaw<int32_t>(t.raw_data(), bound);
      break;
    case onnx::TensorProto::FLOAT:
      if (t.float_data_size() + t.raw_data().size() / sizeof(float) >
          kMaxScaleElements) {
        break;
      }
      for (float v : t.float_data()) Grow(v, bound);
      GrowRaw<float>(t.raw_data(), bound);
      break;
    default:
      break;
  }
}

// A rough bound on the elements of any tensor the graph computes at batch 1:
// the input's and the largest initializer's elements times every size-like
// number the model states (integer constants and attributes, float
// attributes, small float initializers) and every node's input count above
// two (Concat of one value many times). Not a proof: a guard that keeps the
// fuzzer on import and small graphs rather than on models that legitimately
// need gigabytes.
double SizeBound(const onnx::ModelProto& proto, const engine::Model& model) {
  double bound = 1;
  for (int64_t d : model.input_shape())
    bound *= static_cast<double>(d < 1 ? 1 : d);
  int64_t largest = 1;
  for (const engine::ParamInfo& p : model.params()) {
    largest = std::max(largest, engine::NumElements(p.shape));
  }
  bound *= static_cast<double>(largest);
  for (const onnx::TensorProto& t : proto.graph().initializer()) {
    GrowByTensor(t, &bound);
  }
  for (const onnx::NodeProto& node : proto.graph().node()) {
    if (node.input_size() > 2) bound *= node.input_size();
    for (const onnx::AttributeProto& attr : node.attribute()) {
      Grow(static_cast<double>(attr.i()), &bound);
      Grow(attr.f(), &bound);
      for (int64_t v : attr.ints()) Grow(static_cast<double>(v), &bound);
      for (float v : attr.floats()) Grow(v, &bound);
      if (attr.has_t()) GrowByTensor(attr.t(), &bound);
    }
  }
  return bound;
}

// Forward and Backward on a zero input at the batch the model was imported
// at: 1, or else the batch its input declares (engine/model.h).
void Run(const engine::Model& model) {
  std::vector<const engine::Tensor*> params;
  for (const engine::Tensor& p : model.initial_params()) params.push_back(&p);
  engine::ForwardTrace trace;
  const auto forward = [&](int64_t batch) {
    engine::Shape shape = model.input_shape();
    shape[0] = batch;
    return model.Forward(engine::Tensor(shape), params, &trace);
  };
  // A model may compute indices from its input that are out of range for a
  // zero input: a refusal of that input, not of the model. Such a refusal at
  // batch 1 also says the shapes work at batch 1, so the declared batch is
  // not tried then (a graph may be valid at one batch and not another).
  absl::StatusOr<engine::Tensor> output = forward(1);
  if (!output.ok() && !engine::IsInputValueError(output.status()) &&
      model.input_shape()[0] > 1) {
    output = forward(model.input_shape()[0]);
  }
  if (!output.ok() && engine::IsInputValueError(output.status())) return;
  if (!output.ok())
    Finding("Forward failed on an accepted model", output.status());
  engine::Tensor grad(output->shape());
  grad.flat().setOnes();
  std::vector<engine::Tensor> param_grads;
  const absl::Status backward =
      model.Backward(trace, params, grad, &param_grads);
  if (!backward.ok()) Finding("Backward failed on an accepted model", backward);
}

// Evaluates a 4-bit policy of a classifier (output [N, C]) in dynamic and
// static mode on a few seeded samples: quantizers, observers and the loss
// see whatever the model computes, an overflowed pass included. Any status
// is fine; an abort is a finding.
void RunQuantized(const engine::Model& model) {
  const engine::Shape& output = model.output_shape();
  if (output.size() != 2 || output[1] < 1 ||
      model.quantizable_layers().empty()) {
    return;
  }
  const int64_t batch =
      model.input_shape()[0] > 0 ? model.input_shape()[0] : kQuantSamples;
  engine::Shape shape = model.input_shape();
  shape[0] = batch;
  search::LabeledData data;
  data.inputs = engine::Tensor(shape);
  std::mt19937 rng(kQuantSeed);
  std::normal_distribution<float> normal;
  for (float& v : data.inputs.values()) v = normal(rng);
  data.labels.assign(batch, 0);
  const search::Policy policy(model.quantizable_layers().size(), kQuantBits);
  search::PolicyEvalOptions options;
  options.batch_size = static_cast<int>(batch);
  for (search::EvalMode mode :
       {search::EvalMode::kDynamic, search::EvalMode::kStatic}) {
    options.mode = mode;
    (void)search::EvaluatePolicy(model, policy, data, data, options);
  }
}

// Imports `bytes`; runs the model when its sizes are small.
Outcome ImportAndRun(absl::string_view bytes, const onnx::ModelProto& proto) {
  absl::StatusOr<std::unique_ptr<engine::Model>> model =
      engine::Model::FromOnnxBytes(bytes);
  if (!model.ok()) {
    CheckRefusal("the importer's refusal", model.status());
    return Outcome::kRejected;
  }
  if (SizeBound(proto, **model) > kMaxRunElements) return Outcome::kImported;
  Run(**model);
  RunQuantized(**model);
  return Outcome::kRan;
}

}  // namespace

Outcome RunImport(absl::string_view bytes) {
  // One engine thread: findings reproduce, and OpenMP's pool stays out of
  // the leak checker's way.
  static const bool kOneThread = (engine::SetEngineThreads(1), true);
  (void)kOneThread;
  if (bytes.size() > static_cast<size_t>(INT_MAX)) return Outcome::kNotAModel;
  // The service folds BatchNormalization before it imports: that code reads
  // the bytes before the validator has.
  engine::FoldReport report;
  absl::StatusOr<std::string> folded = engine::FoldBatchNorm(bytes, &report);
  onnx::ModelProto proto;
  if (!proto.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return Outcome::kNotAModel;
  }
  const absl::Status valid = engine::ValidateModel(proto);
  if (!valid.ok()) {
    CheckRefusal("the validator's refusal", valid);
    const absl::StatusOr<std::unique_ptr<engine::Model>> model =
        engine::Model::FromOnnxBytes(bytes);
    if (model.ok()) Finding("imported a model the validator refused", valid);
    return Outcome::kRejected;
  }
  Outcome outcome = ImportAndRun(bytes, proto);
  onnx::ModelProto folded_proto;
  if (folded.ok() && report.folded > 0 &&
      folded_proto.ParseFromString(*folded)) {
    const absl::Status folded_valid = engine::ValidateModel(folded_proto);
    if (!folded_valid.ok()) {
      CheckRefusal("the validator's refusal of a folded model", folded_valid);
    } else {
      outcome = std::max(outcome, ImportAndRun(*folded, folded_proto));
    }
  }
  return outcome;
}

}  // namespace mixq::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mixq::fuzz::RunImport(
      absl::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
