#include "engine/model.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/import_graph.h"
#include "engine/model_impl.h"
#include "engine/ops.h"
#include "engine/ops_util.h"
#include "engine/tensor_pool.h"
#include "onnx/onnx_pb.h"
#include "util/check.h"
#include "util/file.h"
#include "util/status_macros.h"

namespace mixq::engine {
namespace {

// The payload of IsInputValueError's statuses.
constexpr absl::string_view kInputValueErrorUrl =
    "type.mixq.dev/mixq.engine.InputValueError";

using SlotKind = Model::Impl::SlotKind;

absl::Status Invalid(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

// Input pointers a node keeps inline (Gemm: 3, BatchNormalization: 5).
constexpr size_t kInlineInputs = 6;
// *into += from (same size), split between the OpenMP threads: residual
// networks sum activation-sized gradients at every skip connection.
void AddInto(const Tensor& from, Tensor* into) {
  const float* src = from.data();
  float* dst = into->data();
  ParallelBlocks(into->size(), [&](int64_t begin, int64_t n) {
    ArrayMap(dst + begin, n) += ConstArrayMap(src + begin, n);
  });
}

}  // namespace

absl::Status Model::Impl::CheckParams(
    absl::Span<const Tensor* const> values) const {
  if (values.size() != params.size()) {
    return Invalid(absl::StrCat("expected ", params.size(), " parameters, got ",
                                values.size()));
  }
  for (size_t p = 0; p < params.size(); ++p) {
    const Tensor* value = values[p];
    if (value == nullptr) {
      return Invalid(absl::StrCat("parameter '", params[p].name, "' is null"));
    }
    if (value->shape() != params[p].shape ||
        value->size() != NumElements(params[p].shape)) {
      return Invalid(absl::StrCat("parameter '", params[p].name, "' has shape ",
                                  ShapeToString(value->shape()), " (",
                                  value->size(), " values); expected ",
                                  ShapeToString(params[p].shape)));
    }
  }
  return absl::OkStatus();
}

absl::Status Model::Impl::CheckInput(const Tensor& input) const {
  bool ok = input.shape().size() == input_shape.size() &&
            input.size() == NumElements(input.shape()) && input.dim(0) > 0;
  for (size_t d = 1; ok && d < input_shape.size(); ++d) {
    ok = input.shape()[d] == input_shape[d];
  }
  if (ok && fixed_batch > 0 && input.dim(0) != fixed_batch) {
    return Invalid(absl::StrCat(
        "input has batch ", input.dim(0), "; model input '", input_name,
        "' only runs at batch ", fixed_batch,
        " (its graph computes shapes that hold only for the batch it "
        "declares)"));
  }
  if (ok) return absl::OkStatus();
  // Several graph inputs: name them all, as the packed input holds them.
  std::string what = absl::StrCat("model input '", input_name, "'");
  if (inputs.size() > 1) {
    what =
        absl::StrCat("model inputs ",
                     absl::StrJoin(inputs, ", ",
                                   [](std::string* out, const GraphInput& i) {
                                     absl::StrAppend(out, "'", i.name, "'");
                                   }),
                     " packed per sample");
  }
  return Invalid(absl::StrCat(
      "input has shape ", ShapeToString(input.shape()), "; ", what, " expects ",
      ShapeToString(input_shape), " (dim 0 is the batch, >= 1)"));
}

absl::Status Model::Impl::CheckTraceInputs(
    const std::vector<Tensor>& values) const {
  if (values.size() != static_cast<size_t>(num_slots())) {
    return Invalid("the trace was not filled by Forward of this model");
  }
  if (input_slots.size() == 1) return CheckInput(values[input_slots[0]]);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& value = values[input_slots[i]];
    const Shape& shape = inputs[i].shape;
    bool ok = value.rank() == static_cast<int>(shape.size()) &&
              value.rank() > 0 && value.dim(0) > 0;
    for (size_t d = 1; ok && d < shape.size(); ++d) {
      ok = value.shape()[d] == shape[d];
    }
    if (!ok) {
      return Invalid(absl::StrCat(
          "the trace holds input '", inputs[i].name, "' of shape ",
          ShapeToString(value.shape()), "; the model expects ",
          ShapeToString(shape), " (was it filled by Forward of this model?)"));
    }
  }
  return absl::OkStatus();
}

void Model::Impl::Unpack(const Tensor& input,
                         std::vector<Tensor>* values) const {
  using RowMajor =
      Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const int64_t batch = input.dim(0);
  const int64_t packed = input.size() / batch;
  const Eigen::Map<const RowMajor> all(input.data(), batch, packed);
  int64_t offset = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const int64_t size = inputs[i].sample_size;
    Shape shape = inputs[i].shape;
    shape[0] = batch;
    Tensor& value = (*values)[input_slots[i]];
    value.Resize(std::move(shape));
    Eigen::Map<RowMajor>(value.data(), batch, size) =
        all.middleCols(offset, size);
    offset += size;
  }
}

Model::Impl::Bound Model::Impl::Bind(absl::Span<const Tensor* const> values,
                                     const std::vector<Tensor>& trace) const {
  Bound bound(num_slots(), nullptr);
  for (int s = 0; s < num_slots(); ++s) {
    switch (kinds[s]) {
      case SlotKind::kInput:
      case SlotKind::kNode:
        bound[s] = &trace[s];
        break;
      case SlotKind::kParam:
        bound[s] = values[param_of_slot[s]];
        break;
      case SlotKind::kConstant:
        bound[s] = &constants[s];
        break;
    }
  }
  return bound;
}

absl::StatusOr<Shape> Model::Impl::NodeOutputShape(const Node& node,
                                                   const Bound& bound) const {
  absl::InlinedVector<const Shape*, kInlineInputs> shapes;
  for (int s : node.inputs) shapes.push_back(&bound[s]->shape());
  absl::StatusOr<Shape> shape = node.kernel->OutputShape(shapes);
  if (!shape.ok()) {
    return Annotate(shape.status(), absl::StrCat("node '", node.label, "'"));
  }
  return shape;
}

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

absl::StatusOr<std::unique_ptr<Model>> Model::FromOnnxBytes(
    absl::string_view bytes) {
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {
    return Invalid("not an ONNX model: larger than 2 GiB");
  }
  onnx::ModelProto proto;
  if (!proto.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return Invalid("not an ONNX model (protobuf parsing failed)");
  }
  if (!proto.has_graph()) return Invalid("not an ONNX model: it has no graph");
  absl::StatusOr<std::unique_ptr<Impl>> impl = ImportModel(&proto);
  if (!impl.ok()) return impl.status();
  return absl::WrapUnique(new Model(*std::move(impl)));
}

absl::StatusOr<std::unique_ptr<Model>> Model::FromOnnxFile(
    const std::string& path) {
  MIXQ_ASSIGN_OR_RETURN(const std::string bytes, ReadFile(path));
  absl::StatusOr<std::unique_ptr<Model>> model = FromOnnxBytes(bytes);
  if (!model.ok()) return Annotate(model.status(), path);
  return model;
}

const std::vector<GraphInput>& Model::inputs() const { return impl_->inputs; }
const std::string& Model::input_name() const { return impl_->input_name; }
bool Model::has_integer_inputs() const {
  return std::any_of(impl_->inputs.begin(), impl_->inputs.end(),
                     [](const GraphInput& input) {
                       return input.type != GraphInput::Type::kFloat;
                     });
}
const Shape& Model::input_shape() const { return impl_->input_shape; }
int64_t Model::fixed_batch() const { return impl_->fixed_batch; }
const std::string& Model::output_name() const { return impl_->output_name; }
const Shape& Model::output_shape() const { return impl_->output_shape; }
const std::vector<ParamInfo>& Model::params() const { return impl_->params; }
const std::vector<Tensor>& Model::initial_params() const {
  return impl_->initial_params;
}
const std::vector<QuantizableLayer>& Model::quantizable_layers() const {
  return impl_->layers;
}

absl::StatusOr<Tensor> Model::Forward(const Tensor& input,
                                      absl::Span<const Tensor* const> params,
                                      ForwardTrace* trace,
                                      LayerInputHook* hook) const {
  const Impl& m = *impl_;
  MIXQ_RETURN_IF_ERROR(m.CheckParams(params));
  MIXQ_RETURN_IF_ERROR(m.CheckInput(input));
  // Without a caller's trace the activations go to a per-thread scratch
  // trace: reusing its buffers instead of allocating (and page-faulting) every
  // activation on every call halves the cost of evaluation batches. It holds
  // the largest activations the thread has computed until the thread exits.
  thread_local ForwardTrace scratch;
  ForwardTrace& state = trace != nullptr ? *trace : scratch;
  state.values.resize(m.num_slots());
  state.layer_inputs.resize(m.num_sites);
  state.hooked.assign(m.num_sites, false);
  Impl::Bound bound = m.Bind(params, state.values);
  if (m.input_slots.size() > 1) {
    m.Unpack(input, &state.values);
  } else if (trace != nullptr) {
    // Backward (and ForwardFrom) need the input after the caller's tensor is
    // gone.
    state.values[m.input_slots[0]] = input;
  } else {
    bound[m.input_slots[0]] = &input;
  }
  return m.RunNodes(0, bound, &state, hook);
}

bool IsInputValueError(const absl::Status& status) {
  return status.GetPayload(kInputValueErrorUrl).has_value();
}

absl::StatusOr<Tensor> Model::Impl::RunNodes(int first_node, const Bound& bound,
                                             ForwardTrace* state,
                                             LayerInputHook* hook) const {
  std::vector<Tensor>& values = state->values;
  absl::InlinedVector<const Tensor*, kInlineInputs> inputs;
  int count = 1;
  for (size_t n = PairStart(first_node); n < nodes.size(); n += count) {
    const Node& node = RunAt(n, &count);
    MIXQ_ASSIGN_OR_RETURN(Shape shape, NodeOutputShape(node, bound));
    inputs.clear();
    for (int s : node.inputs) inputs.push_back(bound[s]);
    if (absl::Status valid = node.kernel->CheckInputs(inputs); !valid.ok()) {
      valid.SetPayload(kInputValueErrorUrl, absl::Cord());
      return Annotate(
          valid, absl::StrCat("node '", node.label, "' (", node.op_type, ")"));
    }
    if (node.layer >= 0) state->hooked[node.site] = false;
    if (hook != nullptr && node.layer >= 0 &&
        layers[node.layer].quantize_input) {
      Tensor& hooked = state->layer_inputs[node.site];
      hooked.Resize(inputs[0]->shape());
      absl::StatusOr<bool> transformed =
          hook->Forward(node.layer, *inputs[0], &hooked);
      if (!transformed.ok()) {
        return Annotate(
            transformed.status(),
            absl::StrCat("node '", node.label, "' (", node.op_type, ")"));
      }
      if (*transformed) {
        MIXQ_CHECK(hooked.shape() == inputs[0]->shape(),
                   "LayerInputHook changed the shape of a layer input");
        inputs[0] = &hooked;
        state->hooked[node.site] = true;
      }
    }
    Tensor& output = values[node.output];
    output.Resize(std::move(shape));
    node.kernel->Forward(inputs, &output);
  }
  return *bound[output_slot];
}

std::string Model::FirstNonFiniteNode(
    const Tensor& input, absl::Span<const Tensor* const> params) const {
  const Impl& m = *impl_;
  ForwardTrace trace;
  if (!Forward(input, params, &trace).ok()) return "";
  int count = 1;
  for (size_t n = 0; n < m.nodes.size(); n += count) {
    const Impl::Node& node = m.RunAt(n, &count);
    if (!trace.values[node.output].flat().allFinite()) {
      return absl::StrCat("node '", node.label, "' (", node.op_type, ")");
    }
  }
  return "";
}

int Model::num_nodes() const { return static_cast<int>(impl_->nodes.size()); }

int Model::FirstNodeReading(int param) const {
  const Impl& m = *impl_;
  MIXQ_CHECK(param >= 0 && param < static_cast<int>(m.param_slots.size()));
  const int slot = m.param_slots[param];
  for (size_t n = 0; n < m.nodes.size(); ++n) {
    const auto& inputs = m.nodes[n].inputs;
    if (std::find(inputs.begin(), inputs.end(), slot) != inputs.end())
      return static_cast<int>(n);
  }
  return num_nodes();
}

absl::StatusOr<Tensor> Model::ForwardFrom(
    int first_node, absl::Span<const Tensor* const> params, ForwardTrace* trace,
    LayerInputHook* hook) const {
  const Impl& m = *impl_;
  MIXQ_CHECK(trace != nullptr);
  if (first_node < 0 || first_node > num_nodes()) {
    return Invalid(absl::StrCat("first_node ", first_node, " is outside 0..",
                                num_nodes()));
  }
  MIXQ_RETURN_IF_ERROR(m.CheckParams(params));
  if (trace->values.size() != static_cast<size_t>(m.num_slots()) ||
      trace->hooked.size() != static_cast<size_t>(m.num_sites) ||
      trace->layer_inputs.size() != static_cast<size_t>(m.num_sites)) {
    return Invalid("the trace was not filled by Forward of this model");
  }
  MIXQ_RETURN_IF_ERROR(m.CheckTraceInputs(trace->values));
  const Impl::Bound bound = m.Bind(params, trace->values);
  return m.RunNodes(first_node, bound, trace, hook);
}

absl::Status Model::Backward(const ForwardTrace& trace,
                             absl::Span<const Tensor* const> params,
                             const Tensor& grad_output,
                             std::vector<Tensor>* param_grads,
                             const LayerInputHook* hook) const {
  const Impl& m = *impl_;
  MIXQ_RETURN_IF_ERROR(m.CheckParams(params));
  if (trace.values.size() != static_cast<size_t>(m.num_slots()) ||
      trace.hooked.size() != static_cast<size_t>(m.num_sites) ||
      trace.layer_inputs.size() != static_cast<size_t>(m.num_sites)) {
    return Invalid("the trace was not filled by Forward of this model");
  }
  const auto hooked = [&](const Impl::Node& node) {
    return node.layer >= 0 && trace.hooked[node.site];
  };
  if (hook == nullptr && std::any_of(m.nodes.begin(), m.nodes.end(), hooked)) {
    return Invalid(
        "the trace was filled with a LayerInputHook; Backward needs it too");
  }
  MIXQ_RETURN_IF_ERROR(m.CheckTraceInputs(trace.values));
  const Impl::Bound bound = m.Bind(params, trace.values);
  // Cheap (shapes only): catches a trace that does not match the parameters.
  int count = 1;
  for (size_t n = 0; n < m.nodes.size(); n += count) {
    const Impl::Node& node = m.RunAt(n, &count);
    MIXQ_ASSIGN_OR_RETURN(const Shape shape, m.NodeOutputShape(node, bound));
    if (shape != bound[node.output]->shape()) {
      return Invalid(absl::StrCat("the trace does not match the parameters (",
                                  "node '", node.label, "')"));
    }
    // Every node leads to the output, so a parameter's gradient would flow
    // through this one.
    if (m.needs_grad[node.output] && !node.kernel->has_gradient()) {
      return Invalid(absl::StrCat("node '", node.label, "' (", node.op_type,
                                  ") has no gradient; a loss cannot be "
                                  "back-propagated through it"));
    }
  }
  if (grad_output.shape() != bound[m.output_slot]->shape()) {
    return Invalid(absl::StrCat("grad_output has shape ",
                                ShapeToString(grad_output.shape()),
                                "; the output has shape ",
                                ShapeToString(bound[m.output_slot]->shape())));
  }

  // grads[s] is dLoss/d(slot s) once has_grad[s]; parameter slots borrow the
  // caller's buffers so their capacity is reused. The other slots' buffers
  // come from a per-thread pool and go back to it once the slot's producer
  // has used them, so a pass holds only the gradients alive at once (not one
  // per value: ResNet-50 at batch 32 held as much in gradients as in its
  // trace), and keeps their capacity between calls: allocating (and
  // page-faulting) every gradient on every call cost nearly half of a ResNet
  // train step. `scratch` has one buffer per input position of a node (any
  // number: Concat is variadic).
  thread_local TensorPool pool;
  thread_local std::vector<Tensor> scratch;
  std::vector<Tensor> grads(m.num_slots());
  std::vector<bool> has_grad(m.num_slots(), false);
  std::vector<bool> is_param(m.num_slots(), false);
  param_grads->resize(m.params.size());
  for (size_t p = 0; p < m.params.size(); ++p) {
    grads[m.param_slots[p]] = std::move((*param_grads)[p]);
    is_param[m.param_slots[p]] = true;
  }
  grads[m.output_slot] = pool.Take(grad_output.shape());
  std::copy(grad_output.values().begin(), grad_output.values().end(),
            grads[m.output_slot].values().begin());
  has_grad[m.output_slot] = true;

  absl::InlinedVector<const Tensor*, kInlineInputs> inputs;
  absl::InlinedVector<Tensor*, kInlineInputs> targets;
  for (int j = static_cast<int>(m.nodes.size()) - 1; j >= 0; --j) {
    // The second node of a fused pair stands for the pair.
    if (m.PairStart(j) != j) --j;
    const Impl::Node& node = m.RunAt(j, &count);
    if (!has_grad[node.output] || !m.needs_grad[node.output]) continue;
    const size_t n = node.inputs.size();
    if (scratch.size() < n) scratch.resize(n);
    inputs.resize(n);
    targets.resize(n);
    const bool node_hooked = hooked(node);
    for (size_t i = 0; i < n; ++i) {
      const int s = node.inputs[i];
      inputs[i] = bound[s];
      targets[i] = nullptr;
      if (i == 0 && node_hooked) inputs[0] = &trace.layer_inputs[node.site];
      if (!m.needs_grad[s]) continue;
      // A slot that already has a gradient (or gets one from an earlier input
      // of this node) accumulates through a scratch buffer, and so does a
      // hooked input (the hook maps the gradient before it is added).
      bool accumulate = has_grad[s] || (i == 0 && node_hooked);
      for (size_t k = 0; k < i; ++k) {
        accumulate =
            accumulate || (node.inputs[k] == s && targets[k] != nullptr);
      }
      if (accumulate) {
        targets[i] = &scratch[i];
        scratch[i].Resize(bound[s]->shape());
      } else {
        targets[i] = &grads[s];
        if (is_param[s]) {
          grads[s].Resize(bound[s]->shape());
        } else {
          grads[s] = pool.Take(bound[s]->shape());
        }
      }
    }
    node.kernel->Backward(inputs, grads[node.output], absl::MakeSpan(targets));
    for (size_t i = 0; i < n; ++i) {
      if (targets[i] == nullptr) continue;
      const int s = node.inputs[i];
      if (i == 0 && node_hooked) {
        hook->Backward(node.layer, *bound[s], &scratch[0]);
        if (!has_grad[s]) {
          // scratch[0] keeps a buffer for the next node.
          grads[s] = pool.Take(scratch[0].shape());
          std::swap(grads[s], scratch[0]);
          has_grad[s] = true;
          continue;
        }
      }
      if (targets[i] == &scratch[i]) AddInto(scratch[i], &grads[s]);
      has_grad[s] = true;
    }
    // Its producer was the last to read this gradient.
    pool.Give(std::move(grads[node.output]));
  }

  for (size_t p = 0; p < m.params.size(); ++p) {
    Tensor& grad = grads[m.param_slots[p]];
    if (!has_grad[m.param_slots[p]]) {
      grad.Resize(m.params[p].shape);
      grad.SetZero();
    }
    (*param_grads)[p] = std::move(grad);
  }
  for (size_t s = 0; s < grads.size(); ++s) {
    if (!is_param[s]) pool.Give(std::move(grads[s]));
  }
  return absl::OkStatus();
}

}  // namespace mixq::engine
