#include "engine/model.h"

#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <queue>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/int4.h"
#include "engine/ops.h"
#include "engine/ops_util.h"
#include "engine/rnn_import.h"
#include "engine/tensor_proto.h"
#include "engine/validate.h"
#include "onnx/onnx_pb.h"
#include "util/check.h"
#include "util/file.h"
#include "util/status_macros.h"

namespace mixq::engine {

// raw_data in ONNX is little-endian and is copied as is.
static_assert(std::endian::native == std::endian::little);

struct Model::Impl {
  enum class SlotKind { kInput, kParam, kConstant, kNode };

  struct Node {
    std::string name;   // as in the file (may be empty)
    std::string label;  // for messages: the name, or "#<index>"
    std::string op_type;
    std::unique_ptr<Kernel> kernel;
    std::vector<int> inputs;  // data input slots
    int output = -1;
    int layer = -1;  // index into layers when a quantizable layer
    // With a layer: index into ForwardTrace::layer_inputs and hooked (one per
    // node reading a layer's weight).
    int site = -1;
  };

  // One pointer per slot to its value for one call: input and node slots
  // point into the trace, parameters to the caller's tensors, constants into
  // `constants`.
  using Bound = std::vector<const Tensor*>;

  std::string input_name;
  Shape input_shape;
  // > 0 when the graph's shapes only hold at the batch its input declares:
  // Forward accepts no other.
  int64_t fixed_batch = -1;
  std::string output_name;
  Shape output_shape;
  std::vector<ParamInfo> params;
  std::vector<Tensor> initial_params;
  std::vector<QuantizableLayer> layers;
  int num_sites = 0;  // nodes with a layer (Node::site)

  int input_slot = -1;
  int output_slot = -1;
  std::vector<SlotKind> kinds;     // per slot
  std::vector<int> param_of_slot;  // per slot: index into params, or -1
  std::vector<int> param_slots;    // per param
  std::vector<Tensor> constants;   // per slot; filled for live constants
  std::vector<bool> needs_grad;    // per slot: depends on a parameter
  std::vector<Node> nodes;         // in execution order
  // A Conv and the BatchNormalization that is its only reader run as one
  // node (FuseConvBatchNorm): for the Conv at n, fused_at[n] indexes
  // `fused`, and node n + 1 is skipped. The Conv's output slot then holds no
  // value, in a trace either.
  std::vector<Node> fused;
  std::vector<int> fused_at;  // per node: index into `fused`, or -1

  // The node that runs at `n` (nodes[n], or the fused pair starting there),
  // and in `count` how many nodes of `nodes` it stands for.
  const Node& RunAt(size_t n, int* count) const {
    *count = fused_at[n] >= 0 ? 2 : 1;
    return fused_at[n] >= 0 ? fused[fused_at[n]] : nodes[n];
  }
  // `n` moved back to the start of the fused pair it is the second node of.
  int PairStart(int n) const {
    return n > 0 && n < static_cast<int>(nodes.size()) && fused_at[n - 1] >= 0
               ? n - 1
               : n;
  }

  int num_slots() const { return static_cast<int>(kinds.size()); }
  absl::Status CheckParams(absl::Span<const Tensor* const> values) const;
  absl::Status CheckInput(const Tensor& input) const;
  Bound Bind(absl::Span<const Tensor* const> values,
             const std::vector<Tensor>& trace) const;
  // The node's output shape for the values in `bound`; errors name the node.
  absl::StatusOr<Shape> NodeOutputShape(const Node& node,
                                        const Bound& bound) const;
  // Runs nodes [first_node, end) on `bound` (which points into
  // state->values), calling `hook` on quantizable layers' inputs, and returns
  // the graph output.
  absl::StatusOr<Tensor> RunNodes(int first_node, const Bound& bound,
                                  ForwardTrace* state,
                                  LayerInputHook* hook) const;
};

namespace {

using SlotKind = Model::Impl::SlotKind;

// Constant folding results larger than this stay runtime nodes.
constexpr int64_t kMaxFoldedElements = int64_t{1} << 22;
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
      return absl::InvalidArgumentError(absl::StrCat(
          "node '", label, "' (", op, "): legacy broadcasting along 'axis' "
          "(opset ", opset, ") is not supported"));
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

// Input pointers a node keeps inline (Gemm: 3, BatchNormalization: 5).
constexpr size_t kInlineInputs = 6;
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
// *into += from (same size), split between the OpenMP threads: residual
// networks sum activation-sized gradients at every skip connection.
void AddInto(const Tensor& from, Tensor* into) {
  const float* src = from.data();
  float* dst = into->data();
  ParallelBlocks(into->size(), [&](int64_t begin, int64_t n) {
    ArrayMap(dst + begin, n) += ConstArrayMap(src + begin, n);
  });
}

// Importer::BatchAxis of a shape that depends on the batch in another way.
constexpr int kMixedBatch = -2;
// Integers up to this are exact in float (FoldMovement's element numbers).
constexpr size_t kMaxExactFloatInt = size_t{1} << 24;

// Operators without a kernel: evaluated at import, on constants and shapes.
struct FoldOnlyOp {
  absl::string_view op_type;
  int min_inputs;
  int max_inputs;
};
constexpr FoldOnlyOp kFoldOnlyOps[] = {
    {"Shape", 1, 1}, {"Size", 1, 1},    {"ConstantOfShape", 1, 1},
    {"Range", 3, 3}, {"Add", 2, 2},     {"Sub", 2, 2},
    {"Mul", 2, 2},   {"Div", 2, 2},     {"Equal", 2, 2},
    {"Less", 2, 2},  {"Greater", 2, 2}, {"Where", 3, 3},
    {"Not", 1, 1},   {"Mod", 2, 2},
};
const FoldOnlyOp* FindFoldOnlyOp(absl::string_view op_type) {
  for (const FoldOnlyOp& op : kFoldOnlyOps) {
    if (op.op_type == op_type) return &op;
  }
  return nullptr;
}
// The int64 operators the importer evaluates element-wise.
constexpr absl::string_view kIntArithmeticOps[] = {
    "Add",  "Sub",     "Mul",   "Div", "Equal",
    "Less", "Greater", "Where", "Not", "Mod"};
// Operators that only move elements: on int64 tensors, evaluated through
// their float kernel (Importer::FoldMovement).
constexpr absl::string_view kMovementOps[] = {
    "Gather",   "Slice",   "Concat",    "Unsqueeze", "Squeeze", "Reshape",
    "Identity", "Flatten", "Transpose", "Expand",    "Dropout"};

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

Attribute ConvertAttribute(const onnx::AttributeProto& proto) {
  Attribute attr;
  switch (proto.type()) {
    case onnx::AttributeProto::INT:
      attr.type = Attribute::Type::kInt;
      attr.i = proto.i();
      break;
    case onnx::AttributeProto::FLOAT:
      attr.type = Attribute::Type::kFloat;
      attr.f = proto.f();
      break;
    case onnx::AttributeProto::INTS:
      attr.type = Attribute::Type::kInts;
      attr.ints.assign(proto.ints().begin(), proto.ints().end());
      break;
    case onnx::AttributeProto::FLOATS:
      attr.type = Attribute::Type::kFloats;
      attr.floats.assign(proto.floats().begin(), proto.floats().end());
      break;
    case onnx::AttributeProto::STRING:
      attr.type = Attribute::Type::kString;
      attr.s = proto.s();
      break;
    default:
      break;
  }
  return attr;
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
    MIXQ_RETURN_IF_ERROR(AddInput());
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
  // Import-time state of a value.
  struct Slot {
    std::string name;
    SlotKind kind = SlotKind::kNode;
    bool float_initializer = false;  // becomes a parameter when read
    int initializer = -1;            // index in the graph's initializers
    bool is_int = false;             // an int64 constant
    Tensor value;                    // float constants and initializers
    std::vector<int64_t> ints;       // int64 constants
    Shape shape;                     // for the import batch
    absl::Status usable;             // why the value cannot be read
    int producer = -1;               // graph node index (not Constant)
    // The same at the probe batch; probe_ok is false when the graph cannot
    // compute the value at that batch.
    Shape probe_shape;
    std::vector<int64_t> probe_ints;
    bool probe_ok = true;
    // Constants: the ONNX element type they were given or cast to, UNDEFINED
    // when computed otherwise.
    int data_type = onnx::TensorProto::UNDEFINED;
  };

  // A constant computed at import: float data, or int64 data at the import
  // and probe batches.
  struct Folded {
    bool is_int = false;
    int data_type = onnx::TensorProto::UNDEFINED;  // as Slot::data_type
    Shape shape;
    std::vector<float> floats;
    std::vector<int64_t> ints;
    std::vector<int64_t> probe_ints;
  };

  // Per compiled node: the weight's output-channel axis if it is a Gemm,
  // MatMul, Conv or ConvTranspose.
  struct NodeExtra {
    int channel_axis = -1;
    // > 0 when each weight is used this many times per sample (a recurrent
    // node's time steps); else MACs follow from the output shape.
    int64_t uses_per_weight = 0;
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

  absl::Status AddInput() {
    std::vector<const onnx::ValueInfoProto*> inputs;
    for (const onnx::ValueInfoProto& input : graph_.input()) {
      const auto it = slot_of_.find(input.name());
      if (it == slot_of_.end() || slots_[it->second].initializer < 0) {
        inputs.push_back(&input);
      }
    }
    if (inputs.size() != 1) {
      std::vector<std::string> names;
      for (const auto* input : inputs) names.push_back(input->name());
      return Invalid(absl::StrCat("the graph has ", inputs.size(),
                                  " inputs that are not initializers (",
                                  absl::StrJoin(names, ", "),
                                  "); exactly one is supported"));
    }
    const onnx::ValueInfoProto& input = *inputs[0];
    const std::string& name = input.name();
    if (name.empty()) return Invalid("the graph input has no name");
    if (!input.type().has_tensor_type()) {
      return Invalid(absl::StrCat("graph input '", name, "' is not a tensor"));
    }
    const onnx::TypeProto::Tensor& type = input.type().tensor_type();
    if (type.elem_type() != onnx::TensorProto::FLOAT) {
      return Invalid(absl::StrCat("graph input '", name, "' has element type ",
                                  type.elem_type(),
                                  "; only float (1) is supported"));
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
    if (NumElements(slot.shape) / std::max<int64_t>(batch_, 1) >
        kMaxValuesPerSample) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "graph input '", name, "' of shape ", ShapeToString(shape),
          " holds more than ", kMaxValuesPerSample, " values per sample"));
    }
    MIXQ_ASSIGN_OR_RETURN(input_slot_, AddSlot(std::move(slot)));
    input_name_ = name;
    input_shape_ = std::move(shape);
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
    Slot& out = slots_[slot_of_.at(proto.output(0))];
    if (!fold) return CompileKernelNode(proto, label, *schema);
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

  OpConfig AttributeConfig(const onnx::NodeProto& proto,
                           const std::string& label) const {
    OpConfig config;
    config.op_type = proto.op_type();
    config.node_name = label;
    config.opset = opset_;
    for (const onnx::AttributeProto& attr : proto.attribute()) {
      config.attributes[attr.name()] = ConvertAttribute(attr);
    }
    return config;
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
    } else if (node.op_type == "RNN" || node.op_type == "LSTM" ||
               node.op_type == "GRU") {
      // W [dirs, gates * hidden, input]: the gate rows are the output
      // channels, and each weight multiplies once per time step. R stays
      // float: its input, the hidden state, never reaches a LayerInputHook.
      extra.channel_axis = 1;
      extra.uses_per_weight = (*shapes[0])[0];
    }
    node.kernel = std::move(kernel);
    nodes_.push_back(std::move(node));
    extras_.push_back(extra);
    return absl::OkStatus();
  }

  // Evaluates a node over constants (and Shape over any value): shape
  // computations, int64 arithmetic, Cast and the data-movement operators on
  // int64 tensors. Errors name the node.
  absl::StatusOr<Folded> FoldNode(const onnx::NodeProto& proto,
                                  const std::string& label) {
    const std::string& op = proto.op_type();
    const auto error = [&](absl::string_view message) {
      return Invalid(absl::StrCat("node '", label, "' (", op, "): ", message));
    };
    if (op == "DequantizeLinear") return FoldDequantize(proto, label, error);
    std::vector<const Slot*> in;
    for (int i = 0; i < proto.input_size(); ++i) {
      if (proto.input(i).empty()) {
        in.push_back(nullptr);
        continue;
      }
      const Slot& slot = slots_[slot_of_.at(proto.input(i))];
      MIXQ_RETURN_IF_ERROR(slot.usable);
      if (op != "Shape" && op != "Size" && slot.kind != SlotKind::kConstant) {
        for (const std::string& name : proto.input()) {
          const auto it = slot_of_.find(name);
          if (it != slot_of_.end() && slots_[it->second].is_int) {
            return Invalid(absl::StrCat(
                "input '", name, "' of node '", label, "' (", op,
                ") is an int64 tensor; int64 tensors are only supported in "
                "shape computations over constants"));
          }
        }
        return error(absl::StrCat(
            "input '", slot.name,
            "' is not a constant; mixq evaluates this operator only in shape "
            "computations over constants"));
      }
      in.push_back(&slot);
    }
    const bool movement =
        std::find(std::begin(kMovementOps), std::end(kMovementOps), op) !=
        std::end(kMovementOps);
    if (movement) return FoldMovement(proto, label, error);
    // The remaining operators have no optional inputs.
    for (size_t i = 0; i < in.size(); ++i) {
      if (in[i] == nullptr) {
        return error(absl::StrCat("input ", i, " is missing"));
      }
    }
    const OpConfig config = AttributeConfig(proto, label);
    if (op == "Shape") return FoldShape(config, *in[0], error);
    if (op == "Size") {
      MIXQ_ASSIGN_OR_RETURN(Folded f, FoldShape(config, *in[0], error));
      f.shape = {};
      f.ints = {NumElements(f.ints)};
      f.probe_ints = {NumElements(f.probe_ints)};
      return f;
    }
    if (op == "Cast") return FoldCast(config, *in[0], error);
    if (op == "ConstantOfShape") {
      return FoldConstantOfShape(proto, *in[0], label, error);
    }
    if (op == "Range") return FoldRange(in, error);
    for (absl::string_view name : kIntArithmeticOps) {
      if (op == name) return FoldArithmetic(config, in, error);
    }
    return error(
        "int64 inputs are only supported in shape computations (Shape, "
        "Gather, Slice, Concat, Reshape, arithmetic, ...)");
  }

  // DequantizeLinear of an integer constant (a quantized weight or bias):
  // its kernel run at import on the integers converted to float, which is
  // how ONNX defines it. The result has the input's size, so no folding
  // limit applies.
  template <typename E>
  absl::StatusOr<Folded> FoldDequantize(const onnx::NodeProto& proto,
                                        const std::string& label,
                                        const E& error) const {
    const OpSchema& schema = *FindOp(proto.op_type());
    MIXQ_ASSIGN_OR_RETURN(const OpConfig config,
                          BuildConfig(proto, label, schema.data_inputs));
    MIXQ_ASSIGN_OR_RETURN(std::unique_ptr<Kernel> kernel,
                          schema.create(config));
    const Slot& x = slots_[slot_of_.at(proto.input(0))];
    MIXQ_RETURN_IF_ERROR(x.usable);
    if (x.ints != x.probe_ints) {
      return error(
          "shape computation depends on the batch size in a way mixq cannot "
          "represent (the batch size is dequantized)");
    }
    Tensor integers(x.shape);
    for (int64_t k = 0; k < integers.size(); ++k) {
      integers.data()[k] = static_cast<float>(x.ints[k]);
    }
    const Shape* shapes[] = {&integers.shape()};
    absl::StatusOr<Shape> shape = kernel->OutputShape(shapes);
    if (!shape.ok()) {
      return Annotate(shape.status(), absl::StrCat("node '", label, "'"));
    }
    Tensor out(*shape);
    const Tensor* inputs[] = {&integers};
    kernel->Forward(inputs, &out);
    Folded f;
    f.data_type = onnx::TensorProto::FLOAT;
    f.shape = *std::move(shape);
    f.floats = out.ToVector();
    return f;
  }

  template <typename E>
  absl::StatusOr<Folded> FoldShape(const OpConfig& config, const Slot& x,
                                   const E& error) const {
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    MIXQ_ASSIGN_OR_RETURN(int64_t start, config.GetInt("start", 0));
    MIXQ_ASSIGN_OR_RETURN(int64_t end, config.GetInt("end", rank));
    const auto clamp = [&](int64_t v) {
      return std::clamp<int64_t>(v < 0 ? v + rank : v, 0, rank);
    };
    start = clamp(start);
    end = std::max(start, clamp(end));
    if (!x.probe_ok) {
      return error(absl::StrCat(
          "the shape of '", x.name, "' is only known at batch ", batch_,
          "; shape computation depends on the batch size in a way mixq "
          "cannot represent"));
    }
    Folded f;
    f.is_int = true;
    f.shape = {end - start};
    f.ints.assign(x.shape.begin() + start, x.shape.begin() + end);
    f.probe_ints.assign(x.probe_shape.begin() + start,
                        x.probe_shape.begin() + end);
    return f;
  }

  template <typename E>
  absl::StatusOr<Folded> FoldCast(const OpConfig& config, const Slot& x,
                                  const E& error) const {
    MIXQ_ASSIGN_OR_RETURN(const int64_t to, config.GetInt("to", 0));
    Folded f;
    f.shape = x.shape;
    f.data_type = static_cast<int>(to);
    switch (to) {
      case onnx::TensorProto::FLOAT:
      case onnx::TensorProto::DOUBLE:
      case onnx::TensorProto::FLOAT16:
        if (!x.is_int) {
          f.floats = x.value.ToVector();
          return f;
        }
        if (x.ints != x.probe_ints) {
          return error(
              "shape computation depends on the batch size in a way mixq "
              "cannot represent (the batch size is cast to float)");
        }
        f.floats.assign(x.ints.begin(), x.ints.end());
        return f;
      case onnx::TensorProto::INT64:
      case onnx::TensorProto::INT32:
      case onnx::TensorProto::INT16:
      case onnx::TensorProto::INT8:
      case onnx::TensorProto::UINT8:
      case onnx::TensorProto::UINT16:
      case onnx::TensorProto::UINT32:
      case onnx::TensorProto::UINT64:
      case onnx::TensorProto::BOOL:
        break;
      default:
        return error(absl::StrCat("unsupported attribute value to=", to));
    }
    f.is_int = true;
    if (x.is_int) {
      f.ints = x.ints;
      f.probe_ints = x.probe_ints;
    } else {
      // Exactly representable floats convert; the rest would overflow.
      constexpr float kLimit = 9.2e18f;
      for (float v : x.value.values()) {
        if (!(std::abs(v) < kLimit)) {
          return error(absl::StrCat("cannot cast ", v, " to an integer"));
        }
        f.ints.push_back(static_cast<int64_t>(v));
      }
      f.probe_ints = f.ints;
    }
    if (to == onnx::TensorProto::BOOL) {
      for (int64_t& v : f.ints) v = v != 0;
      for (int64_t& v : f.probe_ints) v = v != 0;
    }
    return f;
  }

  template <typename E>
  absl::StatusOr<Folded> FoldConstantOfShape(const onnx::NodeProto& proto,
                                             const Slot& shape,
                                             const std::string& label,
                                             const E& error) const {
    if (!shape.is_int || shape.shape.size() != 1) {
      return error("the shape must be a 1-D int64 tensor");
    }
    if (shape.ints != shape.probe_ints) {
      return error(
          "shape computation depends on the batch size in a way mixq cannot "
          "represent (a constant tensor shaped by the batch size)");
    }
    Folded f;
    f.shape = shape.ints;
    absl::StatusOr<int64_t> n = CheckedNumElements(f.shape);
    if (!n.ok()) {
      return Annotate(n.status(), absl::StrCat("node '", label, "'"));
    }
    if (*n > kMaxFoldedElements) {
      return error("the result is too large to fold");
    }
    ConstValue value;
    value.floats = {0.0f};
    for (const onnx::AttributeProto& attr : proto.attribute()) {
      if (attr.name() != "value") continue;
      MIXQ_ASSIGN_OR_RETURN(
          value,
          ParseTensor(attr.t(), absl::StrCat("value of node '", label, "'")));
      if (value.floats.size() + value.ints.size() != 1) {
        return error("the value must have exactly one element");
      }
    }
    f.is_int = value.is_int;
    if (f.is_int) {
      f.ints.assign(*n, value.ints[0]);
      f.probe_ints = f.ints;
    } else {
      f.floats.assign(*n, value.floats[0]);
    }
    return f;
  }

  template <typename E>
  absl::StatusOr<Folded> FoldRange(const std::vector<const Slot*>& in,
                                   const E& error) const {
    for (const Slot* slot : in) {
      if (NumElements(slot->shape) != 1 || slot->is_int != in[0]->is_int) {
        return error("start, limit and delta must be scalars of one type");
      }
    }
    Folded f;
    f.is_int = in[0]->is_int;
    if (!f.is_int) {
      const float start = in[0]->value.data()[0];
      const float limit = in[1]->value.data()[0];
      const float delta = in[2]->value.data()[0];
      const double count = std::ceil((double{limit} - start) / delta);
      if (delta == 0 || !(count < kMaxFoldedElements)) {
        return error("delta is 0 or the range is too long");
      }
      for (int64_t i = 0; i < count; ++i) f.floats.push_back(start + i * delta);
      f.shape = {static_cast<int64_t>(f.floats.size())};
      return f;
    }
    const auto range = [&](const std::vector<int64_t>& start,
                           const std::vector<int64_t>& limit,
                           const std::vector<int64_t>& delta,
                           std::vector<int64_t>* out) -> absl::Status {
      if (delta[0] == 0) return error("delta is 0");
      // In 128 bits: limit - start may not fit in 64.
      const __int128 span = static_cast<__int128>(limit[0]) - start[0];
      const __int128 count = std::max<__int128>(
          0, span / delta[0] + (span % delta[0] != 0 ? 1 : 0));
      if (count > kMaxFoldedElements) return error("the range is too long");
      for (int64_t i = 0; i < count; ++i) {
        out->push_back(start[0] + i * delta[0]);
      }
      return absl::OkStatus();
    };
    MIXQ_RETURN_IF_ERROR(range(in[0]->ints, in[1]->ints, in[2]->ints, &f.ints));
    MIXQ_RETURN_IF_ERROR(range(in[0]->probe_ints, in[1]->probe_ints,
                               in[2]->probe_ints, &f.probe_ints));
    if (f.ints.size() != f.probe_ints.size()) {
      return error(
          "shape computation depends on the batch size in a way mixq cannot "
          "represent (a range whose length is the batch size)");
    }
    f.shape = {static_cast<int64_t>(f.ints.size())};
    return f;
  }

  // Element-wise int64 operators with numpy broadcasting, evaluated at both
  // batches. Mod's remainder has the divisor's sign (Python's %), or with
  // fmod=1 the dividend's (C's fmod), as ONNX defines them.
  template <typename E>
  absl::StatusOr<Folded> FoldArithmetic(const OpConfig& config,
                                        const std::vector<const Slot*>& in,
                                        const E& error) const {
    const std::string& op = config.op_type;
    MIXQ_ASSIGN_OR_RETURN(const int64_t fmod, config.GetInt("fmod", 0));
    if (fmod != 0 && fmod != 1) {
      return error(absl::StrCat("unsupported attribute value fmod=", fmod));
    }
    const bool any_float = std::any_of(
        in.begin(), in.end(), [](const Slot* s) { return !s->is_int; });
    if (any_float) return FoldFloatLogic(op, in, error);
    Shape shape;
    for (const Slot* slot : in) {
      absl::StatusOr<Shape> s = BroadcastShapes(shape, slot->shape);
      if (!s.ok()) return error(s.status().message());
      shape = *std::move(s);
    }
    MIXQ_ASSIGN_OR_RETURN(const int64_t n, CheckedNumElements(shape));
    if (n > kMaxFoldedElements) return error("the result is too large to fold");
    std::vector<std::vector<int64_t>> index;
    for (const Slot* slot : in)
      index.push_back(BroadcastIndex(slot->shape, shape));
    Folded f;
    f.is_int = true;
    f.shape = shape;
    for (bool probe : {false, true}) {
      std::vector<int64_t>& out = probe ? f.probe_ints : f.ints;
      out.resize(n);
      for (int64_t j = 0; j < n; ++j) {
        const auto arg = [&](size_t k) {
          return (probe ? in[k]->probe_ints : in[k]->ints)[index[k][j]];
        };
        const int64_t a = arg(0);
        if (op == "Not") {
          out[j] = a == 0;
          continue;
        }
        const int64_t b = arg(1);
        bool overflow = false;
        if (op == "Add") {
          overflow = __builtin_add_overflow(a, b, &out[j]);
        } else if (op == "Sub") {
          overflow = __builtin_sub_overflow(a, b, &out[j]);
        } else if (op == "Mul") {
          overflow = __builtin_mul_overflow(a, b, &out[j]);
        } else if (op == "Div" || op == "Mod") {
          if (b == 0) return error("integer division by zero");
          overflow = a == INT64_MIN && b == -1;
          if (!overflow) out[j] = op == "Div" ? a / b : a % b;
          if (op == "Mod" && fmod == 0 && out[j] != 0 &&
              (out[j] < 0) != (b < 0)) {
            out[j] += b;
          }
        } else if (op == "Equal") {
          out[j] = a == b;
        } else if (op == "Less") {
          out[j] = a < b;
        } else if (op == "Greater") {
          out[j] = a > b;
        } else {  // Where
          out[j] = a != 0 ? b : arg(2);
        }
        if (overflow) return error("int64 overflow");
      }
    }
    return f;
  }

  // Comparisons of float constants (Equal, Less, Greater -> bool) and Where
  // choosing between float constants, with numpy broadcasting: exporters
  // write masked_fill on a constant mask so (Swin's shifted-window mask,
  // `mask.masked_fill(mask != 0, -100)`). Float constants are the same at
  // every batch; a condition that depends on the batch is refused.
  template <typename E>
  absl::StatusOr<Folded> FoldFloatLogic(const std::string& op,
                                        const std::vector<const Slot*>& in,
                                        const E& error) const {
    const bool is_where = op == "Where";
    const bool is_comparison = op == "Equal" || op == "Less" || op == "Greater";
    if (!is_where && !is_comparison) {
      return error("only int64 constants are evaluated at import");
    }
    // Where's condition is a bool (int64 here), its other inputs floats;
    // a comparison's inputs are both floats.
    for (size_t k = 0; k < in.size(); ++k) {
      const bool want_int = is_where && k == 0;
      if (in[k]->is_int != want_int) {
        return error("mixes int64 and float inputs");
      }
    }
    if (is_where && in[0]->ints != in[0]->probe_ints) {
      return error("the condition depends on the batch size");
    }
    Shape shape;
    for (const Slot* slot : in) {
      absl::StatusOr<Shape> s = BroadcastShapes(shape, slot->shape);
      if (!s.ok()) return error(s.status().message());
      shape = *std::move(s);
    }
    MIXQ_ASSIGN_OR_RETURN(const int64_t n, CheckedNumElements(shape));
    if (n > kMaxFoldedElements) return error("the result is too large to fold");
    std::vector<std::vector<int64_t>> index;
    for (const Slot* slot : in) {
      index.push_back(BroadcastIndex(slot->shape, shape));
    }
    const auto value = [&](size_t k, int64_t j) {
      return in[k]->value.data()[index[k][j]];
    };
    Folded f;
    f.shape = shape;
    if (is_where) {
      f.data_type = onnx::TensorProto::FLOAT;
      f.floats.resize(n);
      for (int64_t j = 0; j < n; ++j) {
        f.floats[j] = in[0]->ints[index[0][j]] != 0 ? value(1, j) : value(2, j);
      }
      return f;
    }
    f.is_int = true;
    f.data_type = onnx::TensorProto::BOOL;
    f.ints.resize(n);
    for (int64_t j = 0; j < n; ++j) {
      const float a = value(0, j);
      const float b = value(1, j);
      f.ints[j] = op == "Equal" ? a == b : op == "Less" ? a < b : a > b;
    }
    f.probe_ints = f.ints;
    return f;
  }

  // For every element of `out`, the element of `in` (broadcast to `out`)
  // it reads.
  static std::vector<int64_t> BroadcastIndex(const Shape& in,
                                             const Shape& out) {
    std::vector<int64_t> index(NumElements(out));
    BroadcastRuns(in, out).ForEach(
        [&](int64_t out_offset, int64_t in_offset, int64_t n, int64_t stride) {
          for (int64_t k = 0; k < n; ++k) {
            index[out_offset + k] = in_offset + k * stride;
          }
        });
    return index;
  }

  // Data-movement operators (Gather, Slice, Concat, ...) on int64 tensors run
  // their float kernel on the element numbers of the inputs and then move
  // the int64 values (at both batches) where the numbers went: one
  // implementation of their semantics serves both types.
  template <typename E>
  absl::StatusOr<Folded> FoldMovement(const onnx::NodeProto& proto,
                                      const std::string& label,
                                      const E& error) const {
    const OpSchema& schema = *FindOp(proto.op_type());
    const int num_data = std::min(proto.input_size(), schema.data_inputs);
    MIXQ_ASSIGN_OR_RETURN(const OpConfig config,
                          BuildConfig(proto, label, num_data));
    MIXQ_ASSIGN_OR_RETURN(std::unique_ptr<Kernel> kernel,
                          schema.create(config));
    std::vector<Tensor> numbers;
    std::vector<int64_t> ints;
    std::vector<int64_t> probe_ints;
    // The moved values keep their element type when the inputs share one.
    std::optional<int> data_type;
    for (int i = 0; i < num_data; ++i) {
      if (proto.input(i).empty()) {
        return error(absl::StrCat("input ", i, " is missing"));
      }
      const Slot& slot = slots_[slot_of_.at(proto.input(i))];
      if (!slot.is_int) return error("mixes int64 and float inputs");
      if (!data_type) data_type = slot.data_type;
      if (*data_type != slot.data_type) {
        data_type = onnx::TensorProto::UNDEFINED;
      }
      Tensor t(slot.shape);
      for (int64_t k = 0; k < t.size(); ++k) {
        t.data()[k] = static_cast<float>(ints.size() + k + 1);
      }
      ints.insert(ints.end(), slot.ints.begin(), slot.ints.end());
      probe_ints.insert(probe_ints.end(), slot.probe_ints.begin(),
                        slot.probe_ints.end());
      if (ints.size() >= kMaxExactFloatInt) {
        return error("the int64 inputs are too large to evaluate at import");
      }
      numbers.push_back(std::move(t));
    }
    std::vector<const Shape*> shapes;
    std::vector<const Tensor*> pointers;
    for (const Tensor& t : numbers) {
      shapes.push_back(&t.shape());
      pointers.push_back(&t);
    }
    absl::StatusOr<Shape> shape = kernel->OutputShape(shapes);
    if (!shape.ok()) {
      return Annotate(shape.status(), absl::StrCat("node '", label, "'"));
    }
    MIXQ_ASSIGN_OR_RETURN(const int64_t n, CheckedNumElements(*shape));
    if (n > kMaxFoldedElements) return error("the result is too large to fold");
    Tensor moved(*shape);
    kernel->Forward(pointers, &moved);
    Folded f;
    f.is_int = true;
    f.data_type = data_type.value_or(onnx::TensorProto::UNDEFINED);
    f.shape = *std::move(shape);
    for (float v : moved.values()) {
      const int64_t k = static_cast<int64_t>(v) - 1;
      MIXQ_CHECK(k >= 0 && k < static_cast<int64_t>(ints.size()));
      f.ints.push_back(ints[k]);
      f.probe_ints.push_back(probe_ints[k]);
    }
    return f;
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
    m.input_name = input_name_;
    m.input_shape = input_shape_;
    m.fixed_batch = probe_ == batch_ ? batch_ : -1;
    m.output_name = slots_[output_slot_].name;
    m.output_shape = slots_[output_slot_].shape;
    m.input_slot = input_slot_;
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
      m.nodes.push_back(std::move(node));
    }
    FuseConvBatchNorms();
  }

  // Pairs each Conv with the inference-form BatchNormalization right after it
  // when that is the only reader of its output (Impl::fused).
  void FuseConvBatchNorms() {
    Model::Impl& m = *impl_;
    m.fused_at.assign(m.nodes.size(), -1);
    std::vector<int> readers(m.num_slots(), 0);
    for (const Model::Impl::Node& node : m.nodes) {
      for (int s : node.inputs) ++readers[s];
    }
    for (size_t n = 0; n + 1 < m.nodes.size(); ++n) {
      const Model::Impl::Node& conv = m.nodes[n];
      const Model::Impl::Node& bn = m.nodes[n + 1];
      if (conv.op_type != "Conv" || bn.op_type != "BatchNormalization" ||
          bn.inputs[0] != conv.output || readers[conv.output] != 1 ||
          conv.output == m.output_slot) {
        continue;
      }
      std::unique_ptr<Kernel> kernel = FuseConvBatchNorm(
          *conv.kernel, *bn.kernel, /*conv_bias=*/conv.inputs.size() == 3);
      if (kernel == nullptr) continue;
      Model::Impl::Node node;
      node.name = conv.name;
      node.label = absl::StrCat(conv.label, "' + '", bn.label);
      node.op_type = "Conv+BatchNormalization";
      node.kernel = std::move(kernel);
      node.inputs = conv.inputs;
      node.inputs.insert(node.inputs.end(), bn.inputs.begin() + 1,
                         bn.inputs.end());
      node.output = bn.output;
      node.layer = conv.layer;
      node.site = conv.site;
      m.fused_at[n] = static_cast<int>(m.fused.size());
      m.fused.push_back(std::move(node));
      ++n;
    }
  }

  // Records `node` as quantizable when its weight input (input 1: Gemm's and
  // MatMul's B, Conv's and ConvTranspose's W, a recurrent node's W) is a
  // parameter, possibly through Identity/Dropout nodes. A parameter several
  // nodes read (tied, or de-duplicated into Identity nodes) is one layer,
  // named and typed after the first node; the others add their names and
  // MACs. Sets node->layer and node->site.
  void AddLayer(const NodeExtra& extra, const std::vector<int>& producer,
                std::vector<int>* layer_of_param, Model::Impl::Node* node_ptr) {
    Model::Impl& m = *impl_;
    Model::Impl::Node& node = *node_ptr;
    int s = node.inputs[1];
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
      m.layers.push_back(std::move(layer));
    }
    node.layer = (*layer_of_param)[p];
    node.site = m.num_sites++;
    QuantizableLayer& layer = m.layers[node.layer];
    layer.node_names.push_back(node.name);
    layer.macs += NodeMacs(extra, node, m.params[p].shape);
  }

  // Multiply-accumulates per sample of `node`, which reads a weight of shape
  // `weight` (QuantizableLayer::macs).
  int64_t NodeMacs(const NodeExtra& extra, const Model::Impl::Node& node,
                   const Shape& weight) const {
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
  int input_slot_ = -1;
  int output_slot_ = -1;
  std::string input_name_;
  Shape input_shape_;
  std::vector<Model::Impl::Node> nodes_;  // compiled, in topological order
  std::vector<NodeExtra> extras_;         // parallel to nodes_
  // Values of the node outputs compiled so far (CountNodeValues): computed
  // at run time (per sample), and folded at import.
  int64_t run_values_ = 0;
  int64_t folded_values_ = 0;
};

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
  return Invalid(absl::StrCat("input has shape ", ShapeToString(input.shape()),
                              "; model input '", input_name, "' expects ",
                              ShapeToString(input_shape),
                              " (dim 0 is the batch, >= 1)"));
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
  MIXQ_RETURN_IF_ERROR(ValidateModel(proto));
  int64_t opset = 0;
  for (const onnx::OperatorSetIdProto& opset_id : proto.opset_import()) {
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
  MIXQ_RETURN_IF_ERROR(LowerRecurrentNodes(opset, proto.mutable_graph()));
  Importer importer(proto.graph(), opset, 1, /*track_batch=*/true);
  absl::StatusOr<std::unique_ptr<Impl>> impl = importer.Run();
  // A graph exported for a fixed batch may only be valid at that batch (e.g.
  // a Reshape to [batch, -1] with the batch spelled out); its shapes are then
  // the ones at that batch.
  if (!impl.ok() && importer.declared_batch() > 1) {
    absl::StatusOr<std::unique_ptr<Impl>> retry =
        Importer(proto.graph(), opset, importer.declared_batch(),
                 /*track_batch=*/false)
            .Run();
    if (retry.ok()) impl = std::move(retry);
  }
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

const std::string& Model::input_name() const { return impl_->input_name; }
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
  if (trace != nullptr) {
    // Backward (and ForwardFrom) need the input after the caller's tensor is
    // gone.
    state.values[m.input_slot] = input;
  } else {
    bound[m.input_slot] = &input;
  }
  return m.RunNodes(0, bound, &state, hook);
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
    if (node.layer >= 0) state->hooked[node.site] = false;
    if (hook != nullptr && node.layer >= 0) {
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

absl::StatusOr<Tensor> Model::ForwardFrom(int first_node,
                                          absl::Span<const Tensor* const> params,
                                          ForwardTrace* trace,
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
  MIXQ_RETURN_IF_ERROR(m.CheckInput(trace->values[m.input_slot]));
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
  if (hook == nullptr &&
      std::any_of(m.nodes.begin(), m.nodes.end(), hooked)) {
    return Invalid(
        "the trace was filled with a LayerInputHook; Backward needs it too");
  }
  MIXQ_RETURN_IF_ERROR(m.CheckInput(trace.values[m.input_slot]));
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
  // live in per-thread scratch, like Forward's: allocating (and
  // page-faulting) every gradient on every call cost nearly half of a ResNet
  // train step. They hold the largest gradients the thread has computed until
  // the thread exits. `scratch` has one buffer per input position of a node
  // (any number: Concat is variadic).
  thread_local std::vector<Tensor> grads;
  thread_local std::vector<Tensor> scratch;
  grads.resize(m.num_slots());
  std::vector<bool> has_grad(m.num_slots(), false);
  param_grads->resize(m.params.size());
  for (size_t p = 0; p < m.params.size(); ++p) {
    grads[m.param_slots[p]] = std::move((*param_grads)[p]);
  }
  grads[m.output_slot] = grad_output;
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
      targets[i] = accumulate ? &scratch[i] : &grads[s];
      targets[i]->Resize(bound[s]->shape());
    }
    node.kernel->Backward(inputs, grads[node.output], absl::MakeSpan(targets));
    for (size_t i = 0; i < n; ++i) {
      if (targets[i] == nullptr) continue;
      const int s = node.inputs[i];
      if (i == 0 && node_hooked) {
        hook->Backward(node.layer, *bound[s], &scratch[0]);
        if (!has_grad[s]) {
          std::swap(grads[s], scratch[0]);
          has_grad[s] = true;
          continue;
        }
      }
      if (targets[i] == &scratch[i]) AddInto(scratch[i], &grads[s]);
      has_grad[s] = true;
    }
  }

  for (size_t p = 0; p < m.params.size(); ++p) {
    Tensor& grad = grads[m.param_slots[p]];
    if (!has_grad[m.param_slots[p]]) {
      grad.Resize(m.params[p].shape);
      grad.SetZero();
    }
    (*param_grads)[p] = std::move(grad);
  }
  return absl::OkStatus();
}

}  // namespace mixq::engine
