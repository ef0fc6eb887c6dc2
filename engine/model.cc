#include "engine/model.h"

#include <algorithm>
#include <array>
#include <bit>
#include <climits>
#include <cstring>
#include <functional>
#include <optional>
#include <queue>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/ops.h"
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
  };

  // One pointer per slot to its value for one call: input and node slots
  // point into the trace, parameters to the caller's tensors, constants into
  // `constants`.
  using Bound = std::vector<const Tensor*>;

  std::string input_name;
  Shape input_shape;
  std::string output_name;
  Shape output_shape;
  std::vector<ParamInfo> params;
  std::vector<Tensor> initial_params;
  std::vector<QuantizableLayer> layers;

  int input_slot = -1;
  int output_slot = -1;
  std::vector<SlotKind> kinds;     // per slot
  std::vector<int> param_of_slot;  // per slot: index into params, or -1
  std::vector<int> param_slots;    // per param
  std::vector<Tensor> constants;   // per slot; filled for live constants
  std::vector<bool> needs_grad;    // per slot: depends on a parameter
  std::vector<Node> nodes;         // in execution order

  int num_slots() const { return static_cast<int>(kinds.size()); }
  absl::Status CheckParams(absl::Span<const Tensor* const> values) const;
  absl::Status CheckInput(const Tensor& input) const;
  Bound Bind(absl::Span<const Tensor* const> values,
             const std::vector<Tensor>& trace) const;
  // The node's output shape for the values in `bound`; errors name the node.
  absl::StatusOr<Shape> NodeOutputShape(const Node& node,
                                        const Bound& bound) const;
};

namespace {

using SlotKind = Model::Impl::SlotKind;

// Constant folding results larger than this stay runtime nodes.
constexpr int64_t kMaxFoldedElements = int64_t{1} << 22;
// The first ONNX opset whose Gemm/Add/Dropout semantics the kernels follow.
constexpr int64_t kMinOpset = 7;

absl::Status Invalid(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

std::string NodeLabel(const onnx::NodeProto& node, int index) {
  return node.name().empty() ? absl::StrCat("#", index) : node.name();
}

// A parsed initializer or Constant value: float data, or int64 data (shapes
// for Reshape).
struct ConstValue {
  bool is_int = false;
  Shape shape;
  std::vector<float> floats;
  std::vector<int64_t> ints;
};

bool IsSupportedType(int data_type) {
  return data_type == onnx::TensorProto::FLOAT ||
         data_type == onnx::TensorProto::INT64;
}

absl::StatusOr<ConstValue> ParseTensor(const onnx::TensorProto& tensor,
                                       absl::string_view what) {
  if (tensor.data_location() == onnx::TensorProto::EXTERNAL ||
      tensor.external_data_size() > 0) {
    return Invalid(
        absl::StrCat(what, " uses external data, which is not supported"));
  }
  if (tensor.has_segment()) {
    return Invalid(absl::StrCat(what, " is segmented, which is not supported"));
  }
  if (!IsSupportedType(tensor.data_type())) {
    return Invalid(
        absl::StrCat(what, " has data type ", tensor.data_type(),
                     "; only FLOAT (1) and INT64 (7) are supported"));
  }
  ConstValue value;
  value.shape.assign(tensor.dims().begin(), tensor.dims().end());
  const absl::StatusOr<int64_t> count = CheckedNumElements(value.shape);
  if (!count.ok()) return Annotate(count.status(), what);
  const size_t n = static_cast<size_t>(*count);
  const auto size_error = [&](size_t got) {
    return Invalid(absl::StrCat(what, " of shape ", ShapeToString(value.shape),
                                " needs ", n, " values, has ", got));
  };
  if (tensor.data_type() == onnx::TensorProto::FLOAT) {
    value.floats.resize(n);
    if (tensor.has_raw_data()) {
      if (tensor.raw_data().size() != n * sizeof(float)) {
        return size_error(tensor.raw_data().size() / sizeof(float));
      }
      std::memcpy(value.floats.data(), tensor.raw_data().data(),
                  n * sizeof(float));
    } else {
      if (static_cast<size_t>(tensor.float_data_size()) != n) {
        return size_error(tensor.float_data_size());
      }
      std::copy(tensor.float_data().begin(), tensor.float_data().end(),
                value.floats.begin());
    }
  } else {
    value.is_int = true;
    value.ints.resize(n);
    if (tensor.has_raw_data()) {
      if (tensor.raw_data().size() != n * sizeof(int64_t)) {
        return size_error(tensor.raw_data().size() / sizeof(int64_t));
      }
      std::memcpy(value.ints.data(), tensor.raw_data().data(),
                  n * sizeof(int64_t));
    } else {
      if (static_cast<size_t>(tensor.int64_data_size()) != n) {
        return size_error(tensor.int64_data_size());
      }
      std::copy(tensor.int64_data().begin(), tensor.int64_data().end(),
                value.ints.begin());
    }
  }
  return value;
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
    value.floats = {attr.f()};
  } else if (attr.name() == "value_floats") {
    value.shape = {attr.floats_size()};
    value.floats.assign(attr.floats().begin(), attr.floats().end());
  } else if (attr.name() == "value_int" && attr.has_i()) {
    value.is_int = true;
    value.ints = {attr.i()};
  } else if (attr.name() == "value_ints") {
    value.is_int = true;
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
  // Shapes are inferred for a batch of `batch`.
  Importer(const onnx::GraphProto& graph, int64_t opset, int64_t batch)
      : graph_(graph), opset_(opset), batch_(batch) {}

  // The batch the graph input declares, -1 when symbolic (or not yet known).
  int64_t declared_batch() const {
    return input_shape_.empty() ? -1 : input_shape_[0];
  }

  absl::StatusOr<std::unique_ptr<Model::Impl>> Run() {
    MIXQ_RETURN_IF_ERROR(AddInitializers());
    MIXQ_RETURN_IF_ERROR(AddInput());
    MIXQ_RETURN_IF_ERROR(AddNodeOutputs());
    MIXQ_ASSIGN_OR_RETURN(const std::vector<int> order, SortNodes());
    for (int index : order) MIXQ_RETURN_IF_ERROR(CompileNode(index));
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
    Shape shape;                     // for a batch of one
    absl::Status usable;             // why the value cannot be read
    int producer = -1;               // graph node index (not Constant)
  };

  // Per compiled node: the weight's output-channel axis if it is a Gemm or
  // MatMul.
  struct NodeExtra {
    int channel_axis = -1;
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
      } else if (!IsSupportedType(tensor.data_type())) {
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
    slot->shape = value.shape;
    if (value.is_int) {
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
    if (!CheckedNumElements(slot.shape).ok()) {
      return Invalid(absl::StrCat("graph input '", name, "' of shape ",
                                  ShapeToString(shape), " is too large"));
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
      if (schema == nullptr) {
        return Invalid(absl::StrCat("unsupported operator '", node.op_type(),
                                    "' (node '", label, "')"));
      }
      if (node.input_size() < schema->min_inputs ||
          node.input_size() > schema->max_inputs) {
        return Invalid(absl::StrCat(
            "node '", label, "' (", node.op_type(), ") has ", node.input_size(),
            " inputs; expected ", schema->min_inputs,
            schema->min_inputs == schema->max_inputs
                ? ""
                : absl::StrCat(" to ", schema->max_inputs)));
      }
      if (node.output_size() < 1 || node.output_size() > schema->max_outputs ||
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
        if (k > 0) {
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

  absl::Status CompileNode(int index) {
    const onnx::NodeProto& proto = graph_.node(index);
    const OpSchema& schema = *FindOp(proto.op_type());
    MIXQ_CHECK(schema.data_inputs <= kMaxDataInputs);
    OpConfig config;
    config.op_type = proto.op_type();
    config.node_name = NodeLabel(proto, index);
    config.opset = opset_;
    for (const onnx::AttributeProto& attr : proto.attribute()) {
      config.attributes[attr.name()] = ConvertAttribute(attr);
    }
    int num_data = std::min(proto.input_size(), schema.data_inputs);
    while (num_data > 0 && proto.input(num_data - 1).empty()) --num_data;
    for (int i = num_data; i < proto.input_size(); ++i) {
      std::optional<ConstantInput> value;
      if (!proto.input(i).empty()) {
        const Slot& slot = slots_[slot_of_.at(proto.input(i))];
        if (slot.kind == SlotKind::kConstant && slot.usable.ok()) {
          value.emplace();
          value->is_int = slot.is_int;
          value->shape = slot.shape;
          if (slot.is_int) {
            value->ints = slot.ints;
          } else {
            value->floats = slot.value.ToVector();
          }
        }
      }
      config.constant_inputs.push_back(std::move(value));
    }
    MIXQ_ASSIGN_OR_RETURN(std::unique_ptr<Kernel> kernel,
                          schema.create(config));

    Model::Impl::Node node;
    node.name = proto.name();
    node.label = config.node_name;
    node.op_type = proto.op_type();
    std::array<const Shape*, kMaxDataInputs> shapes{};
    std::array<const Tensor*, kMaxDataInputs> values{};
    bool all_constant = true;
    for (int i = 0; i < num_data; ++i) {
      const std::string& name = proto.input(i);
      if (name.empty()) {
        return Invalid(absl::StrCat("node '", node.label, "' (", node.op_type,
                                    "): input ", i, " is missing"));
      }
      const int s = slot_of_.at(name);
      const Slot& slot = slots_[s];
      MIXQ_RETURN_IF_ERROR(slot.usable);
      if (slot.is_int) {
        return Invalid(absl::StrCat("input '", name, "' of node '", node.label,
                                    "' (", node.op_type,
                                    ") is an int64 tensor; only float "
                                    "tensors are supported here"));
      }
      all_constant = all_constant && slot.kind == SlotKind::kConstant &&
                     !slot.float_initializer;
      node.inputs.push_back(s);
      shapes[i] = &slot.shape;
      values[i] = &slot.value;
    }
    if (num_data < std::min(schema.min_inputs, schema.data_inputs)) {
      return Invalid(absl::StrCat("node '", node.label, "' (", node.op_type,
                                  "): input ", num_data, " is missing"));
    }
    absl::StatusOr<Shape> shape =
        kernel->OutputShape(absl::MakeConstSpan(shapes.data(), num_data));
    if (!shape.ok()) {
      return Annotate(shape.status(), absl::StrCat("node '", node.label, "'"));
    }
    node.output = slot_of_.at(proto.output(0));
    Slot& out = slots_[node.output];
    out.shape = *shape;

    if (all_constant && NumElements(*shape) <= kMaxFoldedElements) {
      out.kind = SlotKind::kConstant;
      out.value = Tensor(*std::move(shape));
      kernel->Forward(absl::MakeConstSpan(values.data(), num_data), &out.value);
      return absl::OkStatus();
    }
    NodeExtra extra;
    if (node.op_type == "Gemm") {
      extra.channel_axis = *config.GetInt("transB", 0) != 0 ? 0 : 1;
    } else if (node.op_type == "MatMul") {
      extra.channel_axis = static_cast<int>(shapes[1]->size()) - 1;
    }
    node.kernel = std::move(kernel);
    nodes_.push_back(std::move(node));
    extras_.push_back(extra);
    return absl::OkStatus();
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
    std::vector<bool> layer_param(m.params.size(), false);
    for (size_t j = 0; j < nodes_.size(); ++j) {
      if (!live_node[j]) continue;
      Model::Impl::Node& node = nodes_[j];
      for (int s : node.inputs) {
        if (m.needs_grad[s]) m.needs_grad[node.output] = true;
      }
      producer[node.output] = static_cast<int>(m.nodes.size());
      if (extras_[j].channel_axis >= 0) {
        AddLayer(node, extras_[j].channel_axis, producer, &layer_param);
      }
      m.nodes.push_back(std::move(node));
    }
  }

  // Records `node` as quantizable when its weight input (B) is a parameter,
  // possibly through Identity/Dropout nodes. A parameter shared by several
  // layers counts once.
  void AddLayer(const Model::Impl::Node& node, int channel_axis,
                const std::vector<int>& producer,
                std::vector<bool>* layer_param) {
    Model::Impl& m = *impl_;
    int s = node.inputs[1];
    while (producer[s] >= 0 && (m.nodes[producer[s]].op_type == "Identity" ||
                                m.nodes[producer[s]].op_type == "Dropout")) {
      s = m.nodes[producer[s]].inputs[0];
    }
    const int p = m.param_of_slot[s];
    if (p < 0 || (*layer_param)[p]) return;
    (*layer_param)[p] = true;
    QuantizableLayer layer;
    layer.name = m.params[p].name;
    layer.node_name = node.name;
    layer.op_type = node.op_type;
    layer.weight_param = p;
    layer.channel_axis = channel_axis;
    layer.num_weights = NumElements(m.params[p].shape);
    m.layers.push_back(std::move(layer));
  }

  const onnx::GraphProto& graph_;
  const int64_t opset_;  // of the default domain
  const int64_t batch_;
  std::unique_ptr<Model::Impl> impl_ = std::make_unique<Model::Impl>();
  std::vector<Slot> slots_;
  absl::flat_hash_map<std::string, int> slot_of_;
  int input_slot_ = -1;
  int output_slot_ = -1;
  std::string input_name_;
  Shape input_shape_;
  std::vector<Model::Impl::Node> nodes_;  // compiled, in topological order
  std::vector<NodeExtra> extras_;         // parallel to nodes_
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
  std::array<const Shape*, kMaxDataInputs> shapes{};
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    shapes[i] = &bound[node.inputs[i]]->shape();
  }
  absl::StatusOr<Shape> shape = node.kernel->OutputShape(
      absl::MakeConstSpan(shapes.data(), node.inputs.size()));
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
  int64_t opset = 0;
  for (const onnx::OperatorSetIdProto& opset_id : proto.opset_import()) {
    if (opset_id.domain().empty() || opset_id.domain() == "ai.onnx") {
      opset = opset_id.version();
    }
  }
  if (opset < kMinOpset) {
    return Invalid(absl::StrCat("opset version ", opset,
                                " of the default domain is not supported (need ",
                                kMinOpset, " or later)"));
  }
  Importer importer(proto.graph(), opset, 1);
  absl::StatusOr<std::unique_ptr<Impl>> impl = importer.Run();
  // A graph exported for a fixed batch may only be valid at that batch (e.g.
  // a Reshape to [batch, -1] with the batch spelled out); its shapes are then
  // the ones at that batch.
  if (!impl.ok() && importer.declared_batch() > 1) {
    absl::StatusOr<std::unique_ptr<Impl>> retry =
        Importer(proto.graph(), opset, importer.declared_batch()).Run();
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
                                      ForwardTrace* trace) const {
  const Impl& m = *impl_;
  MIXQ_RETURN_IF_ERROR(m.CheckParams(params));
  MIXQ_RETURN_IF_ERROR(m.CheckInput(input));
  // Without a caller's trace the activations go to a per-thread scratch
  // trace: reusing its buffers instead of allocating (and page-faulting) every
  // activation on every call halves the cost of evaluation batches. It holds
  // the largest activations the thread has computed until the thread exits.
  thread_local ForwardTrace scratch;
  std::vector<Tensor>& values = (trace != nullptr ? trace : &scratch)->values;
  values.resize(m.num_slots());
  Impl::Bound bound = m.Bind(params, values);
  if (trace != nullptr) {
    // Backward needs the input after the caller's tensor is gone.
    values[m.input_slot] = input;
  } else {
    bound[m.input_slot] = &input;
  }
  std::array<const Tensor*, kMaxDataInputs> inputs{};
  for (const Impl::Node& node : m.nodes) {
    MIXQ_ASSIGN_OR_RETURN(Shape shape, m.NodeOutputShape(node, bound));
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      inputs[i] = bound[node.inputs[i]];
    }
    Tensor& output = values[node.output];
    output.Resize(std::move(shape));
    node.kernel->Forward(absl::MakeConstSpan(inputs.data(), node.inputs.size()),
                         &output);
  }
  return *bound[m.output_slot];
}

absl::Status Model::Backward(const ForwardTrace& trace,
                             absl::Span<const Tensor* const> params,
                             const Tensor& grad_output,
                             std::vector<Tensor>* param_grads) const {
  const Impl& m = *impl_;
  MIXQ_RETURN_IF_ERROR(m.CheckParams(params));
  if (trace.values.size() != static_cast<size_t>(m.num_slots())) {
    return Invalid("the trace was not filled by Forward of this model");
  }
  MIXQ_RETURN_IF_ERROR(m.CheckInput(trace.values[m.input_slot]));
  const Impl::Bound bound = m.Bind(params, trace.values);
  // Cheap (shapes only): catches a trace that does not match the parameters.
  for (const Impl::Node& node : m.nodes) {
    MIXQ_ASSIGN_OR_RETURN(const Shape shape, m.NodeOutputShape(node, bound));
    if (shape != bound[node.output]->shape()) {
      return Invalid(absl::StrCat("the trace does not match the parameters (",
                                  "node '", node.label, "')"));
    }
  }
  if (grad_output.shape() != bound[m.output_slot]->shape()) {
    return Invalid(absl::StrCat("grad_output has shape ",
                                ShapeToString(grad_output.shape()),
                                "; the output has shape ",
                                ShapeToString(bound[m.output_slot]->shape())));
  }

  // grads[s] is dLoss/d(slot s) once has_grad[s]; parameter slots borrow the
  // caller's buffers so their capacity is reused.
  std::vector<Tensor> grads(m.num_slots());
  std::vector<bool> has_grad(m.num_slots(), false);
  param_grads->resize(m.params.size());
  for (size_t p = 0; p < m.params.size(); ++p) {
    grads[m.param_slots[p]] = std::move((*param_grads)[p]);
  }
  grads[m.output_slot] = grad_output;
  has_grad[m.output_slot] = true;

  std::array<Tensor, kMaxDataInputs> scratch;
  std::array<const Tensor*, kMaxDataInputs> inputs{};
  std::array<Tensor*, kMaxDataInputs> targets{};
  for (auto it = m.nodes.rbegin(); it != m.nodes.rend(); ++it) {
    const Impl::Node& node = *it;
    if (!has_grad[node.output] || !m.needs_grad[node.output]) continue;
    const size_t n = node.inputs.size();
    for (size_t i = 0; i < n; ++i) {
      const int s = node.inputs[i];
      inputs[i] = bound[s];
      targets[i] = nullptr;
      if (!m.needs_grad[s]) continue;
      // A slot that already has a gradient (or gets one from an earlier input
      // of this node) accumulates through a scratch buffer.
      bool accumulate = has_grad[s];
      for (size_t k = 0; k < i; ++k) {
        accumulate =
            accumulate || (node.inputs[k] == s && targets[k] != nullptr);
      }
      targets[i] = accumulate ? &scratch[i] : &grads[s];
      targets[i]->Resize(bound[s]->shape());
    }
    node.kernel->Backward(absl::MakeConstSpan(inputs.data(), n),
                          grads[node.output],
                          absl::MakeSpan(targets.data(), n));
    for (size_t i = 0; i < n; ++i) {
      if (targets[i] == nullptr) continue;
      const int s = node.inputs[i];
      if (targets[i] == &scratch[i]) {
        grads[s].flat() += scratch[i].flat();
      }
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
