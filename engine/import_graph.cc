#include "engine/import_graph.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/constant_folding.h"
#include "engine/conv_bn_fusion.h"
#include "engine/ops.h"
#include "engine/ops_util.h"
#include "engine/rnn_import.h"
#include "engine/tensor_proto.h"
#include "engine/validate.h"
#include "util/status_macros.h"

namespace mixq::engine {

// raw_data in ONNX is little-endian and is copied as is.
static_assert(std::endian::native == std::endian::little);

namespace {

using SlotKind = Model::Impl::SlotKind;

// The oldest ONNX opset accepted. Opset 6 differs from 7 in attributes that
// CheckLegacyAttributes refuses when they would change the result.
constexpr int64_t kMinOpset = 6;

// Before opset 7, binary arithmetic broadcast with `broadcast`/`axis`
// attributes (B aligned at `axis`, not numpy-style) and Dropout /
// BatchNormalization took `is_test`. The numpy-compatible cases (no axis,
// is_test=1) compute the same as in later opsets; the rest are refused rather
// than computed differently.
absl::Status CheckLegacyAttributes(const onnx::NodeProto& node,
                                   const std::string& label, int64_t opset) {
  if (opset >= 7) return absl::OkStatus();
  const absl::string_view op = node.op_type();
  const bool arithmetic = op == "Add" || op == "Sub" || op == "Mul" ||
                          op == "Div" || op == "Pow" || op == "PRelu";
  for (const onnx::AttributeProto& attr : node.attribute()) {
    if (arithmetic && attr.name() == "axis") {
      return absl::InvalidArgumentError(
          absl::StrCat("node '", label, "' (", op,
                       "): legacy broadcasting along 'axis' "
                       "(opset ",
                       opset, ") is not supported"));
    }
    if ((op == "Dropout" || op == "BatchNormalization") &&
        attr.name() == "is_test" && attr.i() == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "node '", label, "' (", op, "): training mode (is_test=0, opset ",
          opset, ") is not supported"));
    }
  }
  return absl::OkStatus();
}

// The second batch shapes are evaluated at to track the batch (Importer).
constexpr int64_t kProbeBatch = 7;
// The most values a node's output may hold per sample (1 GiB of floats): a
// model whose shapes need more (a hostile Pad to 2^31 elements, say) is
// refused at import rather than at its first Forward's allocation.
constexpr int64_t kMaxValuesPerSample = int64_t{1} << 28;
// The most values all node outputs computed at run time may hold together
// per sample (Forward keeps every one for Backward): a chain of nodes each
// just under kMaxValuesPerSample would otherwise cost gigabytes per sample.
constexpr int64_t kMaxGraphValuesPerSample = int64_t{1} << 28;
// The most values all constants folded at import may hold together (1 GiB
// of floats, as ModelLimits::max_total_tensor_bytes; dequantized weights
// count): a chain of folded nodes of kMaxFoldedElements each would otherwise
// cost gigabytes at import.
constexpr int64_t kMaxFoldedValues = int64_t{1} << 28;
// Importer::BatchAxis of a shape that depends on the batch in another way.
constexpr int kMixedBatch = -2;

absl::Status Invalid(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

// torch.onnx.export names the initializers it creates (a MatMul's
// transposed weight, a Conv with BatchNormalization folded in) "onnx::<Op>_N":
// names that say nothing to a user, so such layers take the node's name
// ("/layers.0/linear1/MatMul").
constexpr absl::string_view kGenericNamePrefix = "onnx::";
bool IsGenericName(absl::string_view name) {
  return absl::StartsWith(name, kGenericNamePrefix);
}

std::string NodeLabel(const onnx::NodeProto& node, int index) {
  return node.name().empty() ? absl::StrCat("#", index) : node.name();
}

// The value of a Constant node, from whichever value attribute it has.
absl::StatusOr<ConstValue> ParseConstant(const onnx::NodeProto& node,
                                         const std::string& label) {
  if (node.attribute_size() != 1) {
    return Invalid(absl::StrCat("Constant node '", label,
                                "' must have exactly one value attribute"));
  }
  const onnx::AttributeProto& attr = node.attribute(0);
  ConstValue value;
  if (attr.name() == "value" && attr.has_t()) {
    return ParseTensor(attr.t(),
                       absl::StrCat("value of Constant node '", label, "'"));
  } else if (attr.name() == "value_float" && attr.has_f()) {
    value.data_type = onnx::TensorProto::FLOAT;
    value.floats = {attr.f()};
  } else if (attr.name() == "value_floats") {
    value.data_type = onnx::TensorProto::FLOAT;
    value.shape = {attr.floats_size()};
    value.floats.assign(attr.floats().begin(), attr.floats().end());
  } else if (attr.name() == "value_int" && attr.has_i()) {
    value.is_int = true;
    value.data_type = onnx::TensorProto::INT64;
    value.ints = {attr.i()};
  } else if (attr.name() == "value_ints") {
    value.is_int = true;
    value.data_type = onnx::TensorProto::INT64;
    value.shape = {attr.ints_size()};
    value.ints.assign(attr.ints().begin(), attr.ints().end());
  } else {
    return Invalid(absl::StrCat("Constant node '", label, "': attribute '",
                                attr.name(), "' is not supported"));
  }
  return value;
}

// Builds a Model::Impl from a GraphProto. Values (graph input, initializers,
// constants, node outputs) become slots; nodes are sorted topologically,
// constant subgraphs folded, nodes that do not lead to the first output
// dropped, and the float initializers the remaining nodes read become the
// parameters.
class Importer {
 public:
  // Shapes are inferred for a batch of `batch`. With `track_batch`, every
  // value is also evaluated at a second "probe" batch, which tells which axis
  // of a tensor and which elements of a shape computation are the batch:
  // they are the ones that differ (and are `batch` vs the probe).
  Importer(const onnx::GraphProto& graph, int64_t opset, int64_t batch,
           bool track_batch)
      : graph_(graph),
        opset_(opset),
        batch_(batch),
        probe_(!track_batch           ? batch
               : batch == kProbeBatch ? kProbeBatch + 1
                                      : kProbeBatch) {}

  // The batch the graph input declares, -1 when symbolic (or not yet known).
  int64_t declared_batch() const {
    return input_shape_.empty() ? -1 : input_shape_[0];
  }

  absl::StatusOr<std::unique_ptr<Model::Impl>> Run() {
    MIXQ_RETURN_IF_ERROR(AddInitializers());
    MIXQ_RETURN_IF_ERROR(AddInputs());
    MIXQ_RETURN_IF_ERROR(AddNodeOutputs());
    MIXQ_ASSIGN_OR_RETURN(const std::vector<int> order, SortNodes());
    for (int index : order) {
      MIXQ_RETURN_IF_ERROR(CompileNode(index));
      MIXQ_RETURN_IF_ERROR(CountNodeValues(index));
    }
    MIXQ_RETURN_IF_ERROR(SetOutput());
    Finish();
    return std::move(impl_);
  }

 private:
  using Slot = ImportSlot;

  // Per compiled node: the weight's output-channel axis if it is a Gemm,
  // MatMul, Conv or ConvTranspose.
  struct NodeExtra {
    int channel_axis = -1;
    int weight_input = 1;    // the node input holding the weight
    bool embedding = false;  // a Gather of table rows (no MACs, no hook)
    // > 0 when each weight is used this many times per sample (a recurrent
    // node's time steps); else MACs follow from the output shape.
    int64_t uses_per_weight = 0;
    // A recurrent node's R (input 2), a layer of its own (AddRecurrentLayer).
    int recurrent_weight_input = -1;
  };

  absl::StatusOr<int> AddSlot(Slot slot) {
    const int index = static_cast<int>(slots_.size());
    if (!slot_of_.emplace(slot.name, index).second) {
      return Invalid(
          absl::StrCat("value '", slot.name, "' is defined more than once"));
    }
    slots_.push_back(std::move(slot));
    return index;
  }

  absl::Status AddInitializers() {
    for (int i = 0; i < graph_.initializer_size(); ++i) {
      const onnx::TensorProto& tensor = graph_.initializer(i);
      Slot slot;
      slot.name = tensor.name();
      if (slot.name.empty()) {
        return Invalid(absl::StrCat("initializer #", i, " has no name"));
      }
      slot.kind = SlotKind::kConstant;
      slot.initializer = i;
      absl::StatusOr<ConstValue> value =
          ParseTensor(tensor, absl::StrCat("initializer '", slot.name, "'"));
      if (value.ok()) {
        SetConstant(*std::move(value), &slot);
        slot.float_initializer = !slot.is_int;
      } else if (!IsSupportedTensorType(tensor.data_type())) {
        // Only an error if a node reads it.
        slot.usable = value.status();
      } else {
        return value.status();
      }
      MIXQ_RETURN_IF_ERROR(AddSlot(std::move(slot)).status());
    }
    return absl::OkStatus();
  }

  static void SetConstant(ConstValue value, Slot* slot) {
    slot->is_int = value.is_int;
    slot->data_type = value.data_type;
    slot->shape = value.shape;
    slot->probe_shape = value.shape;
    if (value.is_int) {
      slot->probe_ints = value.ints;
      slot->ints = std::move(value.ints);
    } else {
      slot->value = Tensor(std::move(value.shape), std::move(value.floats));
    }
  }

  absl::Status AddInputs() {
    std::vector<const onnx::ValueInfoProto*> inputs;
    for (const onnx::ValueInfoProto& input : graph_.input()) {
      const auto it = slot_of_.find(input.name());
      if (it == slot_of_.end() || slots_[it->second].initializer < 0) {
        inputs.push_back(&input);
      }
    }
    if (inputs.empty()) {
      return Invalid("the graph has no input that is not an initializer");
    }
    int64_t packed = 0;
    for (const onnx::ValueInfoProto* input : inputs) {
      MIXQ_RETURN_IF_ERROR(AddInput(*input));
      packed += graph_inputs_.back().sample_size;
    }
    input_shape_ = graph_inputs_[0].shape;
    if (graph_inputs_.size() > 1) {
      input_shape_ = {graph_inputs_[0].shape[0], packed};
      if (!CheckedNumElements({std::max<int64_t>(batch_, 1), packed}).ok() ||
          packed > kMaxValuesPerSample) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "the graph inputs hold ", packed, " values per sample, more than ",
            kMaxValuesPerSample));
      }
    }
    return absl::OkStatus();
  }

  absl::Status AddInput(const onnx::ValueInfoProto& input) {
    const std::string& name = input.name();
    if (name.empty()) return Invalid("a graph input has no name");
    if (!input.type().has_tensor_type()) {
      return Invalid(absl::StrCat("graph input '", name, "' is not a tensor"));
    }
    const onnx::TypeProto::Tensor& type = input.type().tensor_type();
    GraphInput info;
    switch (type.elem_type()) {
      case onnx::TensorProto::FLOAT:
        info.type = GraphInput::Type::kFloat;
        break;
      case onnx::TensorProto::INT64:
        info.type = GraphInput::Type::kInt64;
        break;
      case onnx::TensorProto::INT32:
        info.type = GraphInput::Type::kInt32;
        break;
      default:
        return Invalid(absl::StrCat(
            "graph input '", name, "' has element type ", type.elem_type(),
            "; only float (1), int64 (7) and int32 (6) are supported"));
    }
    if (!type.has_shape() || type.shape().dim_size() == 0) {
      return Invalid(absl::StrCat("graph input '", name,
                                  "' must have a shape of rank >= 1"));
    }
    Shape shape;
    for (int d = 0; d < type.shape().dim_size(); ++d) {
      const onnx::TensorShapeProto::Dimension& dim = type.shape().dim(d);
      const bool known = dim.has_dim_value() && dim.dim_value() > 0;
      if (d == 0) {
        shape.push_back(known ? dim.dim_value() : -1);
      } else if (known) {
        shape.push_back(dim.dim_value());
      } else {
        return Invalid(absl::StrCat(
            "graph input '", name, "' has a symbolic or invalid dim ", d,
            "; only the batch dim (0) may be symbolic"));
      }
    }
    if (!graph_inputs_.empty() && shape[0] != graph_inputs_[0].shape[0]) {
      return Invalid(absl::StrCat(
          "graph input '", name, "' declares batch ", shape[0], ", input '",
          graph_inputs_[0].name, "' ", graph_inputs_[0].shape[0],
          " (-1: symbolic); the inputs must share their batch dim"));
    }
    Slot slot;
    slot.name = name;
    slot.kind = SlotKind::kInput;
    slot.shape = shape;
    slot.shape[0] = batch_;
    slot.probe_shape = shape;
    slot.probe_shape[0] = probe_;
    if (!CheckedNumElements(slot.shape).ok()) {
      return Invalid(absl::StrCat("graph input '", name, "' of shape ",
                                  ShapeToString(shape), " is too large"));
    }
    // As a node output: kernels reading it (Slice, Gather) build index maps
    // as long as its dims while they infer their shapes.
    info.sample_size = NumElements(slot.shape) / std::max<int64_t>(batch_, 1);
    if (info.sample_size > kMaxValuesPerSample) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "graph input '", name, "' of shape ", ShapeToString(shape),
          " holds more than ", kMaxValuesPerSample, " values per sample"));
    }
    MIXQ_ASSIGN_OR_RETURN(const int index, AddSlot(std::move(slot)));
    if (input_slot_ < 0) input_slot_ = index;
    input_slots_.push_back(index);
    info.name = name;
    info.shape = std::move(shape);
    graph_inputs_.push_back(std::move(info));
    return absl::OkStatus();
  }

  // Checks every node's operator and adds slots for the values nodes produce.
  absl::Status AddNodeOutputs() {
    for (int j = 0; j < graph_.node_size(); ++j) {
      const onnx::NodeProto& node = graph_.node(j);
      const std::string label = NodeLabel(node, j);
      if (!node.domain().empty() && node.domain() != "ai.onnx") {
        return Invalid(absl::StrCat("unsupported operator '", node.domain(),
                                    ".", node.op_type(), "' (node '", label,
                                    "')"));
      }
      if (node.op_type() == "Constant") {
        if (node.input_size() != 0 || node.output_size() != 1 ||
            node.output(0).empty()) {
          return Invalid(absl::StrCat("Constant node '", label,
                                      "' must have no input and one output"));
        }
        MIXQ_ASSIGN_OR_RETURN(ConstValue value, ParseConstant(node, label));
        Slot slot;
        slot.name = node.output(0);
        slot.kind = SlotKind::kConstant;
        SetConstant(std::move(value), &slot);
        MIXQ_RETURN_IF_ERROR(AddSlot(std::move(slot)).status());
        continue;
      }
      const OpSchema* schema = FindOp(node.op_type());
      const FoldOnlyOp* fold_only = FindFoldOnlyOp(node.op_type());
      if (schema == nullptr && fold_only == nullptr) {
        return Invalid(absl::StrCat("unsupported operator '", node.op_type(),
                                    "' (node '", label, "')"));
      }
      const int min_inputs =
          schema != nullptr ? schema->min_inputs : fold_only->min_inputs;
      const int max_inputs =
          schema != nullptr ? schema->max_inputs : fold_only->max_inputs;
      const int max_outputs = schema != nullptr ? schema->max_outputs : 1;
      if (node.input_size() < min_inputs || node.input_size() > max_inputs) {
        return Invalid(absl::StrCat(
            "node '", label, "' (", node.op_type(), ") has ", node.input_size(),
            " inputs; expected ",
            max_inputs == kVariadic ? absl::StrCat("at least ", min_inputs)
            : min_inputs == max_inputs
                ? absl::StrCat(min_inputs)
                : absl::StrCat(min_inputs, " to ", max_inputs)));
      }
      if (node.output_size() < 1 || node.output_size() > max_outputs ||
          node.output(0).empty()) {
        return Invalid(absl::StrCat("node '", label, "' (", node.op_type(),
                                    ") has ", node.output_size(),
                                    " outputs or an unnamed first output"));
      }
      for (int k = 0; k < node.output_size(); ++k) {
        if (node.output(k).empty()) continue;
        Slot slot;
        slot.name = node.output(k);
        slot.producer = j;
        if (k > 0 && (schema == nullptr || !schema->kernel_per_output)) {
          slot.usable = Invalid(
              absl::StrCat("output '", slot.name, "' of node '", label, "' (",
                           node.op_type(), ") is not supported"));
        }
        MIXQ_RETURN_IF_ERROR(AddSlot(std::move(slot)).status());
      }
    }
    return absl::OkStatus();
  }

  // Kahn's algorithm, taking ready nodes in file order: a sorted graph keeps
  // its order.
  absl::StatusOr<std::vector<int>> SortNodes() {
    const int n = graph_.node_size();
    std::vector<int> pending(n, 0);
    std::vector<std::vector<int>> consumers(n);
    std::priority_queue<int, std::vector<int>, std::greater<int>> ready;
    int num_compute = 0;
    for (int j = 0; j < n; ++j) {
      const onnx::NodeProto& node = graph_.node(j);
      if (node.op_type() == "Constant") continue;
      ++num_compute;
      for (const std::string& input : node.input()) {
        if (input.empty()) continue;
        const auto it = slot_of_.find(input);
        if (it == slot_of_.end()) {
          return Invalid(absl::StrCat(
              "input '", input, "' of node '", NodeLabel(node, j),
              "' is not produced by any node, initializer or graph input"));
        }
        const int producer = slots_[it->second].producer;
        if (producer >= 0) {
          ++pending[j];
          consumers[producer].push_back(j);
        }
      }
      if (pending[j] == 0) ready.push(j);
    }
    std::vector<int> order;
    while (!ready.empty()) {
      const int j = ready.top();
      ready.pop();
      order.push_back(j);
      for (int consumer : consumers[j]) {
        if (--pending[consumer] == 0) ready.push(consumer);
      }
    }
    if (static_cast<int>(order.size()) != num_compute) {
      for (int j = 0; j < n; ++j) {
        if (pending[j] > 0) {
          return Invalid(absl::StrCat("the graph has a cycle (through node '",
                                      NodeLabel(graph_.node(j), j), "')"));
        }
      }
    }
    return order;
  }

  // k > 0 when `value` at the import batch and `probe` at the probe batch
  // are both k times their batch (the value is k x batch); 0 otherwise.
  int64_t BatchFactor(int64_t value, int64_t probe) const {
    if (value <= 0 || value % batch_ != 0) return 0;
    const int64_t k = value / batch_;
    int64_t expected = 0;
    if (__builtin_mul_overflow(k, probe_, &expected) || expected != probe) {
      return 0;
    }
    return k;
  }

  // Where a slot's shape depends on the batch: axis -1 when nowhere, >= 0
  // when that axis is `factor` x batch, kMixedBatch when the shape depends on
  // the batch otherwise, or is unknown at other batches.
  struct BatchDim {
    int axis = -1;
    int64_t factor = 0;
  };
  BatchDim BatchDimOf(const Slot& slot) const {
    if (!slot.probe_ok || slot.probe_shape.size() != slot.shape.size()) {
      return {kMixedBatch, 0};
    }
    BatchDim dim;
    for (size_t d = 0; d < slot.shape.size(); ++d) {
      if (slot.shape[d] == slot.probe_shape[d]) continue;
      const int64_t factor = BatchFactor(slot.shape[d], slot.probe_shape[d]);
      if (dim.axis >= 0 || factor == 0) return {kMixedBatch, 0};
      dim = {static_cast<int>(d), factor};
    }
    return dim;
  }

  // The axis that is the batch itself (factor 1), -1 when none is,
  // kMixedBatch as BatchDimOf.
  int BatchAxis(const Slot& slot) const {
    const BatchDim dim = BatchDimOf(slot);
    return dim.axis >= 0 && dim.factor != 1 ? -1 : dim.axis;
  }

  // Per element of an int64 constant: k where it is k x the batch size, else
  // 0 (CompileNode refused other batch-dependent values).
  std::vector<int64_t> BatchElements(const Slot& slot) const {
    std::vector<int64_t> factors(slot.ints.size(), 0);
    for (size_t i = 0; i < slot.ints.size(); ++i) {
      if (slot.ints[i] != slot.probe_ints[i]) {
        factors[i] = BatchFactor(slot.ints[i], slot.probe_ints[i]);
      }
    }
    return factors;
  }

  // Adds node `index`'s output to run_values_ (per sample) or
  // folded_values_ (a constant); RESOURCE_EXHAUSTED naming the node when
  // the total passes kMaxGraphValuesPerSample or kMaxFoldedValues.
  absl::Status CountNodeValues(int index) {
    const onnx::NodeProto& proto = graph_.node(index);
    const Slot& out = slots_[slot_of_.at(proto.output(0))];
    const bool folded = out.kind == SlotKind::kConstant;
    int64_t& total = folded ? folded_values_ : run_values_;
    const int64_t limit = folded ? kMaxFoldedValues : kMaxGraphValuesPerSample;
    total += folded ? NumElements(out.shape)
                    : NumElements(out.shape) / std::max<int64_t>(batch_, 1);
    if (total <= limit) return absl::OkStatus();
    return absl::ResourceExhaustedError(absl::StrCat(
        "node '", NodeLabel(proto, index), "' (", proto.op_type(), "): ",
        folded ? "the constants folded up to its output hold "
               : "the node outputs up to its own hold ",
        total, " values", folded ? "" : " per sample", ", more than ", limit,
        folded ? "" : " (Forward keeps them all)"));
  }

  absl::Status CompileNode(int index) {
    const onnx::NodeProto& proto = graph_.node(index);
    const std::string label = NodeLabel(proto, index);
    MIXQ_RETURN_IF_ERROR(CheckLegacyAttributes(proto, label, opset_));
    const OpSchema* schema = FindOp(proto.op_type());
    // Integer tensors only exist as constants: a node that reads one, or
    // that only computes shapes, is evaluated here rather than compiled.
    bool fold = schema == nullptr;
    const int num_data =
        schema == nullptr ? 0
                          : std::min(proto.input_size(), schema->data_inputs);
    for (int i = 0; i < num_data && !fold; ++i) {
      const auto it = slot_of_.find(proto.input(i));
      fold = it != slot_of_.end() && slots_[it->second].is_int;
    }
    if (proto.op_type() == "Cast" && proto.input_size() == 1 &&
        !proto.input(0).empty()) {
      fold = slots_[slot_of_.at(proto.input(0))].kind == SlotKind::kConstant;
    }
    // A mask compared with an int64 constant (attention_mask == 0) runs.
    if (fold && schema != nullptr && IsMaskOp(proto.op_type()) &&
        HasRuntimeInput(proto, num_data)) {
      fold = false;
    }
    // Over constants only (float initializers included, as in Swin's
    // shifted-window mask filled by masked_fill), they are folded: a kernel
    // would make the result a run-time value, and the fold-only operators
    // after it (Not) could not read it.
    if (!fold && schema != nullptr && IsMaskOp(proto.op_type()) &&
        !HasRuntimeInput(proto, num_data)) {
      fold = true;
    }
    if (proto.op_type() == "ConstantOfShape" && IsBatchShaped(proto)) {
      return CompileBatchShapedConstant(proto, label);
    }
    Slot& out = slots_[slot_of_.at(proto.output(0))];
    if (!fold) {
      return CompileKernelNode(
          proto, label,
          HasRuntimeIndices(proto) ? IndexGatherSchema() : *schema);
    }
    if (schema != nullptr && schema->kernel_per_output &&
        proto.output_size() > 1) {
      return Invalid(absl::StrCat("node '", label, "' (", proto.op_type(),
                                  "): several outputs of int64 tensors are "
                                  "not supported"));
    }
    absl::StatusOr<Folded> folded = FoldNode(proto, label);
    if (!folded.ok()) return folded.status();
    out.kind = SlotKind::kConstant;
    out.is_int = folded->is_int;
    out.data_type = folded->data_type;
    out.shape = folded->shape;
    out.probe_shape = folded->shape;
    if (folded->is_int) {
      // Each element is a constant or a multiple of the batch (batch x
      // heads): anything else (batch - 1, batch squared, batch == 1) would be
      // a value mixq cannot re-evaluate at another batch.
      for (size_t i = 0; i < folded->ints.size(); ++i) {
        const int64_t v = folded->ints[i];
        const int64_t p = folded->probe_ints[i];
        if (v != p && BatchFactor(v, p) == 0) {
          out.usable = Invalid(absl::StrCat(
              "node '", label, "' (", proto.op_type(),
              "): shape computation depends on the batch size in a way mixq "
              "cannot represent (element ",
              i, " of its output is ", v, " at batch ", batch_, " and ", p,
              " at batch ", probe_,
              "); only multiples of the batch size may flow into a shape"));
          break;
        }
      }
      out.ints = std::move(folded->ints);
      out.probe_ints = std::move(folded->probe_ints);
    } else {
      out.value = Tensor(folded->shape, std::move(folded->floats));
    }
    return absl::OkStatus();
  }

  // Whether ConstantOfShape node `proto`'s shape depends on the batch (the
  // Shape of a run-time tensor, as nn.MultiheadAttention's key padding mask
  // exports: zeros shaped [batch x heads, 1, T] filled by Where).
  bool IsBatchShaped(const onnx::NodeProto& proto) const {
    if (proto.input_size() != 1 || proto.input(0).empty()) return false;
    const auto it = slot_of_.find(proto.input(0));
    if (it == slot_of_.end()) return false;
    const Slot& shape = slots_[it->second];
    return shape.kind == SlotKind::kConstant && shape.is_int &&
           shape.ints != shape.probe_ints;
  }

  // Compiles a batch-shaped ConstantOfShape as an Expand of its value (a
  // scalar constant) to its shape, which Expand resolves at every batch
  // (BatchShape); a shape that depends on the batch in another way than
  // multiples of it is refused there, naming the node.
  absl::Status CompileBatchShapedConstant(const onnx::NodeProto& proto,
                                          const std::string& label) {
    float fill = 0.0f;
    for (const onnx::AttributeProto& attr : proto.attribute()) {
      if (attr.name() != "value") continue;
      MIXQ_ASSIGN_OR_RETURN(
          const ConstValue value,
          ParseTensor(attr.t(), absl::StrCat("value of node '", label, "'")));
      if (value.floats.size() + value.ints.size() != 1) {
        return Invalid(absl::StrCat("node '", label,
                                    "' (ConstantOfShape): the value must have "
                                    "exactly one element"));
      }
      fill = value.is_int ? static_cast<float>(value.ints[0]) : value.floats[0];
    }
    Slot value;
    value.name = absl::StrCat(proto.output(0), "#value");
    value.kind = SlotKind::kConstant;
    value.value = Tensor(Shape{}, {fill});
    MIXQ_RETURN_IF_ERROR(AddSlot(std::move(value)).status());
    onnx::NodeProto expand;
    expand.set_name(proto.name());
    expand.set_op_type("Expand");
    expand.add_input(absl::StrCat(proto.output(0), "#value"));
    expand.add_input(proto.input(0));
    expand.add_output(proto.output(0));
    return CompileKernelNode(expand, label, *FindOp("Expand"));
  }

  static bool IsMaskOp(absl::string_view op_type) {
    return op_type == "Equal" || op_type == "Where";
  }

  bool HasRuntimeInput(const onnx::NodeProto& proto, int num_data) const {
    for (int i = 0; i < num_data; ++i) {
      const auto it = slot_of_.find(proto.input(i));
      if (it != slot_of_.end() &&
          slots_[it->second].kind != SlotKind::kConstant) {
        return true;
      }
    }
    return false;
  }

  // An int64 constant read as a data input by a runtime kernel (Equal's 0
  // against a mask): its values as floats, exact within 2^24.
  absl::Status FloatValueOfIntConstant(Slot* slot, const std::string& label) {
    if (slot->ints != slot->probe_ints) {
      return Invalid(
          absl::StrCat("node '", label, "': int64 input '", slot->name,
                       "' depends on the batch size; only shapes may"));
    }
    std::vector<float> floats(slot->ints.begin(), slot->ints.end());
    slot->value = Tensor(slot->shape, std::move(floats));
    return absl::OkStatus();
  }

  // A Gather whose indices are computed at run time (token ids from a graph
  // input, maybe through Cast): it runs as IndexGatherSchema's kernel.
  bool HasRuntimeIndices(const onnx::NodeProto& proto) const {
    if (proto.op_type() != "Gather" || proto.input_size() != 2) return false;
    const auto it = slot_of_.find(proto.input(1));
    return it != slot_of_.end() &&
           slots_[it->second].kind != SlotKind::kConstant;
  }

  OpConfig AttributeConfig(const onnx::NodeProto& proto,
                           const std::string& label) const {
    return engine::AttributeConfig(proto, label, opset_);
  }

  // The kernel configuration of `proto`: attributes and the values of its
  // inputs after the first `num_data`, which must be constants.
  absl::StatusOr<OpConfig> BuildConfig(const onnx::NodeProto& proto,
                                       const std::string& label,
                                       int num_data) const {
    OpConfig config = AttributeConfig(proto, label);
    for (int i = 0; i < num_data && config.batch_source.input < 0; ++i) {
      const auto it = slot_of_.find(proto.input(i));
      if (it == slot_of_.end()) continue;
      const BatchDim dim = BatchDimOf(slots_[it->second]);
      if (dim.axis >= 0) config.batch_source = {i, dim.axis, dim.factor};
    }
    int last = proto.input_size();
    while (last > num_data && proto.input(last - 1).empty()) --last;
    for (int i = num_data; i < last; ++i) {
      std::optional<ConstantInput> value;
      if (!proto.input(i).empty()) {
        const Slot& slot = slots_[slot_of_.at(proto.input(i))];
        MIXQ_RETURN_IF_ERROR(slot.usable);
        if (slot.kind != SlotKind::kConstant) {
          return Invalid(absl::StrCat(
              "input ", i, " ('", slot.name, "') of node '", label, "' (",
              proto.op_type(),
              ") must be a constant (an initializer, a Constant or a shape "
              "computation mixq can fold)"));
        }
        value.emplace();
        value->is_int = slot.is_int;
        value->shape = slot.shape;
        if (slot.is_int) {
          value->ints = slot.ints;
          value->batch_factor = BatchElements(slot);
          MaybeMarkLiteralBatch(proto, num_data, &*value);
          if (value->has_batch() && proto.op_type() != "Reshape" &&
              proto.op_type() != "Expand" && proto.op_type() != "Tile" &&
              proto.op_type() != "Resize") {
            return Invalid(absl::StrCat(
                "input ", i, " ('", slot.name, "') of node '", label, "' (",
                proto.op_type(),
                "): shape computation depends on the batch size in a way mixq "
                "cannot represent (only Reshape and Expand shapes, Tile "
                "repeats and Resize sizes may hold the batch size)"));
          }
        } else {
          value->floats = slot.value.ToVector();
        }
      }
      config.constant_inputs.push_back(std::move(value));
    }
    // Read the batch from the graph input (CompileKernelNode passes it) when
    // no data input carries it, e.g. a class token expanded to the batch.
    const bool has_batch = std::any_of(
        config.constant_inputs.begin(), config.constant_inputs.end(),
        [](const auto& value) { return value && value->has_batch(); });
    if (has_batch && config.batch_source.input < 0 && probe_ != batch_) {
      config.batch_source = {num_data, 0, 1};
    }
    if (proto.op_type() == "QuantizeLinear") {
      MIXQ_RETURN_IF_ERROR(SetQuantizedType(proto, label, &config));
    }
    return config;
  }

  // QuantizeLinear's output has its zero point's element type (ONNX infers
  // it so; opset 21 also takes it as attribute `output_dtype`). Kernels see
  // no element types, so the importer passes it as that attribute.
  absl::Status SetQuantizedType(const onnx::NodeProto& proto,
                                const std::string& label,
                                OpConfig* config) const {
    constexpr int kZeroPoint = 2;
    if (proto.input_size() <= kZeroPoint || proto.input(kZeroPoint).empty()) {
      return absl::OkStatus();
    }
    const Slot& zero_point = slots_[slot_of_.at(proto.input(kZeroPoint))];
    if (zero_point.data_type == onnx::TensorProto::UNDEFINED) {
      return Invalid(absl::StrCat("node '", label,
                                  "' (QuantizeLinear): the element type of "
                                  "zero point '",
                                  zero_point.name,
                                  "' is unknown (give it as an initializer or "
                                  "a Constant)"));
    }
    constexpr char kOutputType[] = "output_dtype";
    const auto it = config->attributes.find(kOutputType);
    if (it != config->attributes.end() &&
        (it->second.type != Attribute::Type::kInt ||
         it->second.i != zero_point.data_type)) {
      return Invalid(
          absl::StrCat("node '", label, "' (QuantizeLinear): ", kOutputType,
                       " differs from the type of zero point '",
                       zero_point.name, "' (", zero_point.data_type, ")"));
    }
    Attribute type;
    type.type = Attribute::Type::kInt;
    type.i = zero_point.data_type;
    config->attributes[kOutputType] = type;
    return absl::OkStatus();
  }

  // torch.onnx.export without dynamic axes spells `x.view(x.size(0), -1)` as a
  // Reshape to the literal [B, -1] for the example's batch B, which the graph
  // input declares. mixq runs models at any batch, so such a literal, at the
  // position of the data's batch axis, is taken as the batch.
  void MaybeMarkLiteralBatch(const onnx::NodeProto& proto, int num_data,
                             ConstantInput* shape) const {
    if (probe_ == batch_ || proto.op_type() != "Reshape" || num_data != 1 ||
        declared_batch() <= 0 || proto.input(0).empty()) {
      return;
    }
    const int axis = BatchAxis(slots_[slot_of_.at(proto.input(0))]);
    if (axis >= 0 && static_cast<size_t>(axis) < shape->ints.size() &&
        shape->ints[axis] == declared_batch()) {
      shape->ints[axis] = batch_;
      shape->batch_factor[axis] = 1;
    }
  }

  // Adds, once, the slot an omitted optional data input reads
  // (IsOmittedInput): a constant of shape {0}, named "" as no other value
  // can be.
  absl::Status AddOmittedSlot() {
    if (slot_of_.contains("")) return absl::OkStatus();
    ConstValue omitted;
    omitted.shape = {0};
    Slot slot;
    slot.kind = SlotKind::kConstant;
    SetConstant(std::move(omitted), &slot);
    return AddSlot(std::move(slot)).status();
  }

  // A node of an operator with OpSchema::kernel_per_output compiles to one
  // kernel per named output; others to one kernel for output 0.
  absl::Status CompileKernelNode(const onnx::NodeProto& proto,
                                 const std::string& label,
                                 const OpSchema& schema) {
    const int outputs = schema.kernel_per_output ? proto.output_size() : 1;
    for (int k = 0; k < outputs; ++k) {
      if (proto.output(k).empty()) continue;
      MIXQ_RETURN_IF_ERROR(CompileKernelOutput(proto, label, schema, k));
    }
    return absl::OkStatus();
  }

  absl::Status CompileKernelOutput(const onnx::NodeProto& proto,
                                   const std::string& label,
                                   const OpSchema& schema, int output_index) {
    int num_data = std::min(proto.input_size(), schema.data_inputs);
    while (num_data > 0 && proto.input(num_data - 1).empty()) --num_data;
    MIXQ_ASSIGN_OR_RETURN(OpConfig config, BuildConfig(proto, label, num_data));
    config.num_outputs = proto.output_size();
    config.output_index = output_index;
    MIXQ_ASSIGN_OR_RETURN(std::unique_ptr<Kernel> kernel,
                          schema.create(config));

    Model::Impl::Node node;
    node.name = proto.name();
    node.label = label;
    node.op_type = proto.op_type();
    std::vector<const Shape*> shapes;
    std::vector<const Shape*> probe_shapes;
    std::vector<const Tensor*> values;
    bool all_constant = true;
    bool probe_ok = true;
    // Before the loop, which keeps pointers into slots_.
    for (int i = 0; i < num_data; ++i) {
      if (proto.input(i).empty()) continue;
      Slot& slot = slots_[slot_of_.at(proto.input(i))];
      if (slot.kind == SlotKind::kConstant && slot.is_int) {
        MIXQ_RETURN_IF_ERROR(FloatValueOfIntConstant(&slot, label));
      }
    }
    if (schema.optional_data_inputs &&
        std::any_of(proto.input().begin(), proto.input().begin() + num_data,
                    [](const std::string& name) { return name.empty(); })) {
      MIXQ_RETURN_IF_ERROR(AddOmittedSlot());
    }
    for (int i = 0; i < num_data; ++i) {
      const std::string& name = proto.input(i);
      if (name.empty() && !schema.optional_data_inputs) {
        return Invalid(absl::StrCat("node '", node.label, "' (", node.op_type,
                                    "): input ", i, " is missing"));
      }
      const int s = slot_of_.at(name);
      const Slot& slot = slots_[s];
      MIXQ_RETURN_IF_ERROR(slot.usable);
      all_constant = all_constant && slot.kind == SlotKind::kConstant &&
                     !slot.float_initializer;
      probe_ok = probe_ok && slot.probe_ok;
      node.inputs.push_back(s);
      shapes.push_back(&slot.shape);
      probe_shapes.push_back(&slot.probe_shape);
      values.push_back(&slot.value);
    }
    if (config.batch_source.input == num_data) {
      const Slot& input = slots_[input_slot_];
      node.inputs.push_back(input_slot_);
      shapes.push_back(&input.shape);
      probe_shapes.push_back(&input.probe_shape);
      values.push_back(&input.value);
      all_constant = false;
    }
    if (num_data < std::min(schema.min_inputs, schema.data_inputs)) {
      return Invalid(absl::StrCat("node '", node.label, "' (", node.op_type,
                                  "): input ", num_data, " is missing"));
    }
    absl::StatusOr<Shape> shape = kernel->OutputShape(shapes);
    if (!shape.ok()) {
      return Annotate(shape.status(), absl::StrCat("node '", node.label, "'"));
    }
    // Shapes here are at the import batch (batch_ samples).
    if (NumElements(*shape) / std::max<int64_t>(batch_, 1) >
        kMaxValuesPerSample) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "node '", node.label, "' (", node.op_type, "): its output ",
          ShapeToString(*shape), " holds more than ", kMaxValuesPerSample,
          " values per sample"));
    }
    node.output = slot_of_.at(proto.output(output_index));
    Slot& out = slots_[node.output];
    out.shape = *shape;
    // A failure at the probe batch only means the graph runs at the import
    // batch alone; shapes read from it later are rejected.
    absl::StatusOr<Shape> probe_shape =
        probe_ok ? kernel->OutputShape(probe_shapes) : absl::StatusOr<Shape>();
    out.probe_ok = probe_ok && probe_shape.ok();
    if (out.probe_ok) out.probe_shape = *std::move(probe_shape);

    if (all_constant && NumElements(*shape) <= kMaxFoldedElements) {
      out.kind = SlotKind::kConstant;
      out.probe_shape = *shape;
      out.value = Tensor(*std::move(shape));
      kernel->Forward(values, &out.value);
      return absl::OkStatus();
    }
    NodeExtra extra;
    if (node.op_type == "Gemm") {
      extra.channel_axis = *config.GetInt("transB", 0) != 0 ? 0 : 1;
    } else if (node.op_type == "MatMul") {
      extra.channel_axis = static_cast<int>(shapes[1]->size()) - 1;
    } else if (node.op_type == "Conv" && node.inputs.size() >= 2) {
      extra.channel_axis = 0;
    } else if (node.op_type == "ConvTranspose") {
      extra.channel_axis = 1;  // W is [C_in, C_out / group, k...]
    } else if (&schema == &IndexGatherSchema() && shapes[0]->size() > 0 &&
               *config.GetInt("axis", 0) %
                       static_cast<int64_t>(shapes[0]->size()) ==
                   0) {
      // An embedding: the table's rows are the channels.
      extra.channel_axis = 0;
      extra.weight_input = 0;
      extra.embedding = true;
    } else if (node.op_type == "RNN" || node.op_type == "LSTM" ||
               node.op_type == "GRU") {
      // W [dirs, gates * hidden, input]: the gate rows are the output
      // channels, and each weight multiplies once per time step. R stays
      // float: its input, the hidden state, never reaches a LayerInputHook.
      extra.channel_axis = 1;
      extra.uses_per_weight = (*shapes[0])[0];
      extra.recurrent_weight_input = 2;
    }
    node.kernel = std::move(kernel);
    nodes_.push_back(std::move(node));
    extras_.push_back(extra);
    return absl::OkStatus();
  }

  // Evaluates a node over constants (engine/constant_folding.h).
  absl::StatusOr<Folded> FoldNode(const onnx::NodeProto& proto,
                                  const std::string& label) const {
    return engine::FoldNode(
        proto, label,
        FoldContext{slots_, slot_of_, opset_, batch_, probe_,
                    [this](const onnx::NodeProto& node,
                           const std::string& node_label, int num_data) {
                      return BuildConfig(node, node_label, num_data);
                    }});
  }

  absl::Status SetOutput() {
    if (graph_.output_size() == 0) return Invalid("the graph has no output");
    const std::string& name = graph_.output(0).name();
    const auto it = slot_of_.find(name);
    if (it == slot_of_.end()) {
      return Invalid(absl::StrCat("graph output '", name,
                                  "' is not produced by any node"));
    }
    const Slot& slot = slots_[it->second];
    MIXQ_RETURN_IF_ERROR(slot.usable);
    if (slot.kind != SlotKind::kNode && slot.kind != SlotKind::kInput) {
      return Invalid(absl::StrCat("graph output '", name,
                                  "' is a constant; it must depend on the "
                                  "graph input"));
    }
    output_slot_ = it->second;
    return absl::OkStatus();
  }

  // Drops nodes the output does not need, picks the parameters and fills
  // impl_.
  void Finish() {
    const int num_slots = static_cast<int>(slots_.size());
    std::vector<bool> live(num_slots, false);
    live[output_slot_] = true;
    std::vector<bool> live_node(nodes_.size(), false);
    for (size_t j = nodes_.size(); j-- > 0;) {
      if (!live[nodes_[j].output]) continue;
      live_node[j] = true;
      for (int s : nodes_[j].inputs) live[s] = true;
    }

    Model::Impl& m = *impl_;
    m.inputs = graph_inputs_;
    m.input_name = graph_inputs_[0].name;
    m.input_shape = input_shape_;
    m.fixed_batch = probe_ == batch_ ? batch_ : -1;
    m.output_name = slots_[output_slot_].name;
    m.output_shape = slots_[output_slot_].shape;
    m.input_slots = input_slots_;
    m.output_slot = output_slot_;
    m.kinds.resize(num_slots);
    m.param_of_slot.assign(num_slots, -1);
    m.constants.resize(num_slots);
    // Parameters in initializer order; slots were created in that order.
    for (int s = 0; s < num_slots; ++s) {
      Slot& slot = slots_[s];
      m.kinds[s] = slot.kind;
      if (!live[s] || slot.kind != SlotKind::kConstant) continue;
      if (slot.float_initializer) {
        m.kinds[s] = SlotKind::kParam;
        m.param_of_slot[s] = static_cast<int>(m.params.size());
        m.param_slots.push_back(s);
        m.params.push_back({slot.name, slot.shape});
        m.initial_params.push_back(std::move(slot.value));
      } else {
        m.constants[s] = std::move(slot.value);
      }
    }

    m.needs_grad.assign(num_slots, false);
    for (int s : m.param_slots) m.needs_grad[s] = true;
    std::vector<int> producer(num_slots, -1);
    std::vector<int> layer_of_param(m.params.size(), -1);
    for (size_t j = 0; j < nodes_.size(); ++j) {
      if (!live_node[j]) continue;
      Model::Impl::Node& node = nodes_[j];
      for (int s : node.inputs) {
        if (m.needs_grad[s]) m.needs_grad[node.output] = true;
      }
      producer[node.output] = static_cast<int>(m.nodes.size());
      if (extras_[j].channel_axis >= 0) {
        AddLayer(extras_[j], producer, &layer_of_param, &node);
      }
      if (extras_[j].recurrent_weight_input >= 0) {
        AddRecurrentLayer(extras_[j], producer, &layer_of_param, node);
      }
      m.nodes.push_back(std::move(node));
    }
    FuseConvBatchNorms(impl_.get());
  }

  // Records `node` as quantizable when its weight input
  // (extra.weight_input: Gemm's and MatMul's B, Conv's and ConvTranspose's
  // W, a recurrent node's W, an embedding's table) is a parameter, possibly
  // through Identity/Dropout nodes. A parameter several nodes read (tied, or
  // de-duplicated into Identity nodes) is one layer, named and typed after
  // the first node; the others add their names and MACs. Sets node->layer
  // and node->site.
  void AddLayer(const NodeExtra& extra, const std::vector<int>& producer,
                std::vector<int>* layer_of_param, Model::Impl::Node* node_ptr) {
    Model::Impl& m = *impl_;
    Model::Impl::Node& node = *node_ptr;
    int s = node.inputs[extra.weight_input];
    while (producer[s] >= 0 && (m.nodes[producer[s]].op_type == "Identity" ||
                                m.nodes[producer[s]].op_type == "Dropout")) {
      s = m.nodes[producer[s]].inputs[0];
    }
    const int p = m.param_of_slot[s];
    if (p < 0) return;
    if ((*layer_of_param)[p] < 0) {
      (*layer_of_param)[p] = static_cast<int>(m.layers.size());
      QuantizableLayer layer;
      layer.name = IsGenericName(m.params[p].name) && !node.name.empty()
                       ? node.name
                       : m.params[p].name;
      layer.node_name = node.name;
      layer.op_type = node.op_type;
      layer.weight_param = p;
      layer.channel_axis = extra.channel_axis;
      layer.num_weights = NumElements(m.params[p].shape);
      layer.quantize_input = !extra.embedding;
      m.layers.push_back(std::move(layer));
    }
    // A reader that would quantize the weight along another axis, or treat
    // its input otherwise (an embedding tied to an output projection),
    // shares the quantized weight but not the layer's hooks or MACs.
    const QuantizableLayer& first = m.layers[(*layer_of_param)[p]];
    if (first.channel_axis != extra.channel_axis ||
        first.quantize_input == extra.embedding) {
      return;
    }
    node.layer = (*layer_of_param)[p];
    node.site = m.num_sites++;
    QuantizableLayer& layer = m.layers[node.layer];
    layer.node_names.push_back(node.name);
    layer.macs += NodeMacs(extra, node, m.params[p].shape);
  }

  // A recurrent node's R ([directions, gates x hidden, hidden]) as a layer of
  // its own, named `<node>/R` where the exporter named it generically:
  // quantized per gate row (axis 1) as W is, each weight used once per time
  // step, but with quantize_input false, as no LayerInputHook sees the hidden
  // state it multiplies (that activation stays float). Without it R, often
  // most of a recurrent model's weights, stayed float in every export. An R
  // that is already a layer (read by another node) is left as it is.
  void AddRecurrentLayer(const NodeExtra& extra,
                         const std::vector<int>& producer,
                         std::vector<int>* layer_of_param,
                         const Model::Impl::Node& node) {
    Model::Impl& m = *impl_;
    int s = node.inputs[extra.recurrent_weight_input];
    while (producer[s] >= 0 && (m.nodes[producer[s]].op_type == "Identity" ||
                                m.nodes[producer[s]].op_type == "Dropout")) {
      s = m.nodes[producer[s]].inputs[0];
    }
    const int p = m.param_of_slot[s];
    if (p < 0 || (*layer_of_param)[p] >= 0) return;
    (*layer_of_param)[p] = static_cast<int>(m.layers.size());
    QuantizableLayer layer;
    layer.name = IsGenericName(m.params[p].name) && !node.name.empty()
                     ? absl::StrCat(node.name, "/R")
                     : m.params[p].name;
    layer.node_name = node.name;
    layer.node_names = {node.name};
    layer.op_type = node.op_type;
    layer.weight_param = p;
    layer.channel_axis = extra.channel_axis;
    layer.num_weights = NumElements(m.params[p].shape);
    layer.macs = extra.uses_per_weight * layer.num_weights;
    layer.quantize_input = false;
    m.layers.push_back(std::move(layer));
  }

  // Multiply-accumulates per sample of `node`, which reads a weight of shape
  // `weight` (QuantizableLayer::macs): 0 for an embedding, which only copies
  // rows.
  int64_t NodeMacs(const NodeExtra& extra, const Model::Impl::Node& node,
                   const Shape& weight) const {
    if (extra.embedding) return 0;
    const int64_t num_weights = NumElements(weight);
    if (node.op_type == "ConvTranspose") {
      // Every input pixel of every channel meets its channel's weights once.
      const Shape& in = slots_[node.inputs[0]].shape;
      return in.size() > 2 && in[1] > 0
                 ? num_weights *
                       (NumElements(in) / std::max<int64_t>(batch_, 1) / in[1])
                 : 0;
    }
    if (extra.uses_per_weight > 0) return extra.uses_per_weight * num_weights;
    // Every output element is a dot product over one output channel's
    // weights (Conv: Cin/groups·kh·kw; Gemm/MatMul: K).
    const Shape& out = slots_[node.output].shape;
    const int64_t out_per_sample =
        NumElements(out) / std::max<int64_t>(batch_, 1);
    const int64_t channels = weight.empty() ? 1 : weight[extra.channel_axis];
    return channels > 0 ? out_per_sample * (num_weights / channels) : 0;
  }

  const onnx::GraphProto& graph_;
  const int64_t opset_;  // of the default domain
  const int64_t batch_;
  const int64_t probe_;  // the probe batch; batch_ when not tracking
  std::unique_ptr<Model::Impl> impl_ = std::make_unique<Model::Impl>();
  std::vector<Slot> slots_;
  absl::flat_hash_map<std::string, int> slot_of_;
  int input_slot_ = -1;  // the first graph input's (a batch source)
  std::vector<int> input_slots_;
  std::vector<GraphInput> graph_inputs_;
  int output_slot_ = -1;
  Shape input_shape_;                     // packed (Model::inputs())
  std::vector<Model::Impl::Node> nodes_;  // compiled, in topological order
  std::vector<NodeExtra> extras_;         // parallel to nodes_
  // Values of the node outputs compiled so far (CountNodeValues): computed
  // at run time (per sample), and folded at import.
  int64_t run_values_ = 0;
  int64_t folded_values_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Model::Impl>> ImportModel(
    onnx::ModelProto* proto) {
  MIXQ_RETURN_IF_ERROR(ValidateModel(*proto));
  int64_t opset = 0;
  for (const onnx::OperatorSetIdProto& opset_id : proto->opset_import()) {
    if (opset_id.domain().empty() || opset_id.domain() == "ai.onnx") {
      opset = opset_id.version();
    }
  }
  if (opset < kMinOpset) {
    return Invalid(
        absl::StrCat("opset version ", opset,
                     " of the default domain is not supported (need ",
                     kMinOpset, " or later)"));
  }
  MIXQ_RETURN_IF_ERROR(LowerRecurrentNodes(opset, proto->mutable_graph()));
  Importer importer(proto->graph(), opset, 1, /*track_batch=*/true);
  absl::StatusOr<std::unique_ptr<Model::Impl>> impl = importer.Run();
  // A graph exported for a fixed batch may only be valid at that batch (e.g.
  // a Reshape to [batch, -1] with the batch spelled out); its shapes are then
  // the ones at that batch.
  if (!impl.ok() && importer.declared_batch() > 1) {
    absl::StatusOr<std::unique_ptr<Model::Impl>> retry =
        Importer(proto->graph(), opset, importer.declared_batch(),
                 /*track_batch=*/false)
            .Run();
    if (retry.ok()) impl = std::move(retry);
  }
  return impl;
}

}  // namespace mixq::engine
