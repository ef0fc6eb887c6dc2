#include "search/qdq_export.h"

#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/int4.h"
#include "engine/validate.h"
#include "onnx/checker.h"
#include "onnx/onnx_pb.h"
#include "onnx/version_converter/convert.h"
#include "search/onnx_names.h"
#include "search/opset_raise.h"
#include "util/status_macros.h"

namespace mixq::search {
namespace {

// TensorProto.raw_data is little-endian; the exporter copies host floats.
static_assert(std::endian::native == std::endian::little);

// The first default-domain opsets with QuantizeLinear/DequantizeLinear, with
// their per-axis form, and with Clip's bounds as inputs.
constexpr int64_t kQdqOpset = 10;
constexpr int64_t kPerAxisQdqOpset = 13;
constexpr int64_t kClipInputsOpset = 11;
// Up to this IR version every initializer must also be a graph input.
constexpr int64_t kLastIrVersionWithInitializerInputs = 3;

// An integer container of QuantizeLinear/DequantizeLinear.
struct Container {
  int32_t lo;
  int32_t hi;
  int32_t data_type;
  const char* name;
};

constexpr Container kInt8 = {-128, 127, onnx::TensorProto::INT8, "int8"};
constexpr Container kUint8 = {0, 255, onnx::TensorProto::UINT8, "uint8"};
constexpr Container kInt4 = {engine::kInt4Min, engine::kInt4Max,
                             engine::kOnnxInt4, "int4"};
constexpr Container kUint4 = {engine::kUint4Min, engine::kUint4Max,
                              engine::kOnnxUint4, "uint4"};

const Container& ContainerOf(bool is_signed) {
  return is_signed ? kInt8 : kUint8;
}

bool IsPacked(const QdqWeight& w) { return w.bits <= kMaxPackedWeightBits; }

// Where a weight's integers end up: a 4-bit container when packed.
const Container& ContainerOf(const QdqWeight& w) {
  if (!IsPacked(w)) return ContainerOf(w.is_signed);
  return w.is_signed ? kInt4 : kUint4;
}

bool InContainer(int32_t v, const Container& c) {
  return v >= c.lo && v <= c.hi;
}

std::string OutsideContainer(absl::string_view what, int32_t v,
                             const Container& c) {
  return absl::StrFormat("%s = %d is outside the %s range [%d, %d]", what, v,
                         c.name, c.lo, c.hi);
}

bool IsDefaultDomain(const std::string& domain) {
  return domain.empty() || domain == "ai.onnx";
}

onnx::OperatorSetIdProto* DefaultOpset(onnx::ModelProto* model) {
  for (onnx::OperatorSetIdProto& opset : *model->mutable_opset_import()) {
    if (IsDefaultDomain(opset.domain())) return &opset;
  }
  return nullptr;
}

absl::StatusOr<onnx::ModelProto> ParseModel(absl::string_view bytes) {
  onnx::ModelProto model;
  if (bytes.size() > static_cast<size_t>(INT_MAX) ||
      !model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError("not a serialized ONNX ModelProto");
  }
  return model;
}

// onnx::checker reports problems by throwing (ValidationError); nothing may
// escape into mixq.
absl::Status CheckModel(const onnx::ModelProto& model) {
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("ONNX checker: ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status RejectExternalData(const onnx::GraphProto& graph) {
  for (const onnx::TensorProto& t : graph.initializer()) {
    if (t.data_location() == onnx::TensorProto::EXTERNAL ||
        t.external_data_size() > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("initializer '", t.name(),
                       "' uses external data, which mixq does "
                       "not read; embed the tensors in the model"));
    }
  }
  return absl::OkStatus();
}

// Where the spec's items are in the graph.
struct SpecIndex {
  std::vector<int> weight_initializers;  // per spec.weights
  std::vector<int> activation_nodes;     // per spec.activations
  std::vector<int> update_initializers;  // per spec.float_updates
};

absl::StatusOr<int64_t> ElementCount(const onnx::TensorProto& t) {
  int64_t count = 1;
  for (int64_t d : t.dims()) {
    if (d < 0 || (d > 0 && count > std::numeric_limits<int64_t>::max() / d)) {
      return absl::InvalidArgumentError(
          absl::StrCat("initializer '", t.name(), "' has an invalid dim ", d));
    }
    count *= d;
  }
  return count;
}

absl::Status CheckFloatInitializer(const onnx::TensorProto& t) {
  if (t.data_type() != onnx::TensorProto::FLOAT) {
    return absl::InvalidArgumentError(absl::StrCat(
        "initializer '", t.name(), "' has data type ",
        onnx::TensorProto::DataType_Name(
            static_cast<onnx::TensorProto::DataType>(t.data_type())),
        ", not FLOAT"));
  }
  return absl::OkStatus();
}

absl::Status ValidateWeight(const QdqWeight& w, const onnx::TensorProto& t) {
  MIXQ_RETURN_IF_ERROR(CheckFloatInitializer(t));
  if (w.bits < 1 || w.bits > kMaxQdqWeightBits) {
    return absl::InvalidArgumentError(
        absl::StrCat("bits = ", w.bits, " is outside 1..", kMaxQdqWeightBits));
  }
  MIXQ_ASSIGN_OR_RETURN(const int64_t count, ElementCount(t));
  if (static_cast<int64_t>(w.q.size()) != count) {
    return absl::InvalidArgumentError(absl::StrCat(
        w.q.size(), " integers for an initializer of ", count, " elements"));
  }
  const int rank = t.dims_size();
  if (w.axis < -1 || w.axis >= rank) {
    return absl::InvalidArgumentError(absl::StrCat(
        "axis ", w.axis, " is not -1 (per tensor) or an axis of a rank-", rank,
        " weight"));
  }
  const int64_t channels = w.axis < 0 ? 1 : t.dims(w.axis);
  if (static_cast<int64_t>(w.scale.size()) != channels) {
    return absl::InvalidArgumentError(
        w.axis < 0
            ? absl::StrCat(w.scale.size(),
                           " scales for a per-tensor weight (axis -1), not 1")
            : absl::StrCat(w.scale.size(), " scales, but axis ", w.axis,
                           " has dim ", channels));
  }
  if (w.zero_point.size() != w.scale.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        w.zero_point.size(), " zero points for ", w.scale.size(), " scales"));
  }
  const Container& c = ContainerOf(w);
  for (size_t i = 0; i < w.scale.size(); ++i) {
    if (!std::isfinite(w.scale[i]) || w.scale[i] <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "scale[", i, "] = ", w.scale[i], " is not positive and finite"));
    }
    if (!InContainer(w.zero_point[i], c)) {
      return absl::InvalidArgumentError(OutsideContainer(
          absl::StrCat("zero_point[", i, "]"), w.zero_point[i], c));
    }
  }
  for (size_t i = 0; i < w.q.size(); ++i) {
    if (!InContainer(w.q[i], c)) {
      return absl::InvalidArgumentError(
          OutsideContainer(absl::StrCat("q[", i, "]"), w.q[i], c));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateActivation(const QdqActivation& a,
                                const onnx::NodeProto& node) {
  if (a.input_index < 0 || a.input_index >= node.input_size() ||
      node.input(a.input_index).empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("node has no input ", a.input_index));
  }
  if (!std::isfinite(a.scale) || a.scale <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("scale ", a.scale, " is not positive and finite"));
  }
  const Container& c = ContainerOf(a.is_signed);
  if (!InContainer(a.zero_point, c)) {
    return absl::InvalidArgumentError(
        OutsideContainer("zero_point", a.zero_point, c));
  }
  if (!InContainer(a.qmin, c)) {
    return absl::InvalidArgumentError(OutsideContainer("qmin", a.qmin, c));
  }
  if (!InContainer(a.qmax, c)) {
    return absl::InvalidArgumentError(OutsideContainer("qmax", a.qmax, c));
  }
  if (a.qmin > a.qmax) {
    return absl::InvalidArgumentError(
        absl::StrCat("qmin ", a.qmin, " > qmax ", a.qmax));
  }
  return absl::OkStatus();
}

absl::Status ValidateUpdate(const engine::Tensor& value,
                            const onnx::TensorProto& t) {
  MIXQ_RETURN_IF_ERROR(CheckFloatInitializer(t));
  if (!std::equal(value.shape().begin(), value.shape().end(), t.dims().begin(),
                  t.dims().end())) {
    return absl::InvalidArgumentError(
        absl::StrCat("value shaped ", engine::ShapeToString(value.shape()),
                     " for an initializer shaped ",
                     engine::ShapeToString(
                         engine::Shape(t.dims().begin(), t.dims().end()))));
  }
  if (!value.flat().allFinite()) {
    return absl::InvalidArgumentError("value is not finite");
  }
  return absl::OkStatus();
}

// Resolves and validates every spec item against `graph`; errors name the
// item ("weights[2] ('fc.weight'): ...").
absl::StatusOr<SpecIndex> IndexSpec(const onnx::GraphProto& graph,
                                    const QdqExportSpec& spec) {
  std::unordered_map<std::string, int> initializers;
  for (int i = 0; i < graph.initializer_size(); ++i) {
    initializers.emplace(graph.initializer(i).name(), i);
  }
  std::unordered_map<std::string, int> nodes;
  std::unordered_set<std::string> ambiguous_nodes;
  for (int i = 0; i < graph.node_size(); ++i) {
    if (!nodes.emplace(graph.node(i).name(), i).second) {
      ambiguous_nodes.insert(graph.node(i).name());
    }
  }
  const auto find_initializer = [&](const std::string& name) -> int {
    const auto it = initializers.find(name);
    return it == initializers.end() ? -1 : it->second;
  };

  SpecIndex index;
  std::set<std::string> weights;
  for (size_t i = 0; i < spec.weights.size(); ++i) {
    const QdqWeight& w = spec.weights[i];
    const std::string label =
        absl::StrCat("weights[", i, "] ('", w.initializer, "')");
    const int init = find_initializer(w.initializer);
    if (init < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": no initializer of that name"));
    }
    if (!weights.insert(w.initializer).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": the initializer is listed twice"));
    }
    MIXQ_RETURN_IF_ERROR(
        Annotate(ValidateWeight(w, graph.initializer(init)), label));
    index.weight_initializers.push_back(init);
  }

  std::set<std::pair<std::string, int>> activations;
  for (size_t i = 0; i < spec.activations.size(); ++i) {
    const QdqActivation& a = spec.activations[i];
    const std::string label =
        absl::StrCat("activations[", i, "] (node '", a.node_name, "' input ",
                     a.input_index, ")");
    const auto it = nodes.find(a.node_name);
    if (a.node_name.empty() || it == nodes.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": no node of that name"));
    }
    if (ambiguous_nodes.contains(a.node_name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": several nodes have that name"));
    }
    if (!activations.emplace(a.node_name, a.input_index).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": the input is listed twice"));
    }
    MIXQ_RETURN_IF_ERROR(
        Annotate(ValidateActivation(a, graph.node(it->second)), label));
    index.activation_nodes.push_back(it->second);
  }

  std::set<std::string> updates;
  for (size_t i = 0; i < spec.float_updates.size(); ++i) {
    const auto& [name, value] = spec.float_updates[i];
    const std::string label =
        absl::StrCat("float_updates[", i, "] ('", name, "')");
    const int init = find_initializer(name);
    if (init < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": no initializer of that name"));
    }
    if (weights.contains(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": the initializer is also a quantized weight"));
    }
    if (!updates.insert(name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": the initializer is listed twice"));
    }
    MIXQ_RETURN_IF_ERROR(
        Annotate(ValidateUpdate(value, graph.initializer(init)), label));
    index.update_initializers.push_back(init);
  }
  return index;
}

// The default-domain opset the model must be converted to with onnx's
// version converter (0: none), why, and whether per-tensor weights would
// need less.
struct ConvertedOpset {
  int64_t opset = 0;
  std::string reason;
  bool per_tensor_suffices = false;
};

ConvertedOpset RequiredOpset(const QdqExportSpec& spec) {
  for (const QdqWeight& w : spec.weights) {
    if (IsPacked(w)) {
      // The converter stops at 17; mixq raises 13+ to 21 itself.
      return {kMinRaisableOpset,
              absl::StrCat("a 4-bit weight ('", w.initializer, "', ", w.bits,
                           " bits, stored as ", ContainerOf(w).name,
                           " at opset ", kOpset21, ")"),
              false};
    }
  }
  for (const QdqWeight& w : spec.weights) {
    if (w.axis >= 0) {
      return {kPerAxisQdqOpset,
              absl::StrCat("per-channel DequantizeLinear (weight '",
                           w.initializer, "', axis ", w.axis, ")"),
              true};
    }
  }
  if (!spec.weights.empty() || !spec.activations.empty()) {
    return {kQdqOpset, "QuantizeLinear/DequantizeLinear", false};
  }
  return {};
}

// Raises the default-domain opset of `model` from `from` to `to` with onnx's
// version converter, which adapts every operator whose definition changed
// and throws when it cannot (e.g. an adapter that needs a shape nobody
// inferred).
absl::StatusOr<onnx::ModelProto> RaiseOpset(const onnx::ModelProto& model,
                                            int64_t from,
                                            const ConvertedOpset& need) {
  const int64_t to = need.opset;
  const auto fail = [&](absl::string_view why) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the model imports opset %d of the default domain, %s needs opset %d, "
        "and onnx's version converter could not raise it (%s); re-export the "
        "model at opset %d or later%s",
        from, need.reason, to, why, to,
        need.per_tensor_suffices
            ? absl::StrFormat(", or quantize every weight per tensor (axis "
                              "-1; opset %d suffices)",
                              kQdqOpset)
            : ""));
  };
  onnx::ModelProto converted;
  try {
    converted =
        onnx::version_conversion::ConvertVersion(model, static_cast<int>(to));
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  const onnx::OperatorSetIdProto* opset = DefaultOpset(&converted);
  if (opset == nullptr || opset->version() != to) {
    return fail("it returned the model unconverted");
  }
  const absl::Status valid = CheckModel(converted);
  if (!valid.ok()) return fail(valid.message());
  return converted;
}

std::string FloatBytes(const float* data, size_t n) {
  return std::string(reinterpret_cast<const char*>(data), n * sizeof(float));
}

// One byte per integer; the caller checked that each fits the container.
std::string ByteValues(const std::vector<int32_t>& values) {
  std::string bytes(values.size(), '\0');
  for (size_t i = 0; i < values.size(); ++i) {
    bytes[i] = static_cast<char>(static_cast<uint8_t>(values[i]));
  }
  return bytes;
}

onnx::AttributeProto* AddAttribute(onnx::NodeProto* node,
                                   const std::string& name,
                                   onnx::AttributeProto::AttributeType type) {
  onnx::AttributeProto* attr = node->add_attribute();
  attr->set_name(name);
  attr->set_type(type);
  return attr;
}

// A 4-bit weight's integers or zero points: written by the Rewriter in the
// 8-bit container of the same signedness, which onnx 1.12's checker knows,
// and packed after the check (PackInitializers).
struct PackedInitializer {
  std::string name;
  const Container* container;  // kInt4 or kUint4
};

// Builds the graph's new nodes and initializers.
class Rewriter {
 public:
  Rewriter(onnx::ModelProto* model, int64_t opset)
      : graph_(model->mutable_graph()),
        names_(*graph_),
        opset_(opset),
        initializers_are_inputs_(model->ir_version() <=
                                 kLastIrVersionWithInitializerInputs) {}

  // Replaces the initializer named w.initializer by its integers, scales and
  // zero points, and emits the DequantizeLinear that recomputes it.
  void QuantizeWeight(const QdqWeight& w, const onnx::TensorProto& original) {
    const Container& c = ContainerOf(w.is_signed);
    const std::vector<int64_t> dims(original.dims().begin(),
                                    original.dims().end());
    const std::vector<int64_t> param_dims =
        w.axis < 0 ? std::vector<int64_t>{}
                   : std::vector<int64_t>{static_cast<int64_t>(w.scale.size())};
    const std::string q =
        AddInitializer(absl::StrCat(w.initializer, "_quantized"), c.data_type,
                       dims, ByteValues(w.q));
    const std::string scale = AddInitializer(
        absl::StrCat(w.initializer, "_scale"), onnx::TensorProto::FLOAT,
        param_dims, FloatBytes(w.scale.data(), w.scale.size()));
    const std::string zero_point =
        AddInitializer(absl::StrCat(w.initializer, "_zero_point"), c.data_type,
                       param_dims, ByteValues(w.zero_point));
    onnx::NodeProto* dq = AddNode(&prologue_, "DequantizeLinear", w.initializer,
                                  {q, scale, zero_point}, w.initializer);
    if (w.axis >= 0) {
      AddAttribute(dq, "axis", onnx::AttributeProto::INT)->set_i(w.axis);
    }
    if (IsPacked(w)) {
      packed_.push_back({q, &ContainerOf(w)});
      packed_.push_back({zero_point, &ContainerOf(w)});
    }
  }

  // Emits [Clip →] QuantizeLinear → DequantizeLinear on `node`'s input
  // a.input_index into `nodes`, and points that input at the result.
  void QuantizeActivation(
      const QdqActivation& a, onnx::NodeProto* node,
      google::protobuf::RepeatedPtrField<onnx::NodeProto>* nodes) {
    const Container& c = ContainerOf(a.is_signed);
    const std::string value = node->input(a.input_index);
    std::string x = value;
    if (a.qmin > c.lo || a.qmax < c.hi) {
      // QuantizeLinear only saturates to the container: clip to the
      // restricted grid's range first.
      const float lo = a.scale * static_cast<float>(a.qmin - a.zero_point);
      const float hi = a.scale * static_cast<float>(a.qmax - a.zero_point);
      const std::string clipped = names_.Fresh(absl::StrCat(value, "_clipped"));
      if (opset_ >= kClipInputsOpset) {
        const std::string min =
            AddInitializer(absl::StrCat(value, "_clip_min"),
                           onnx::TensorProto::FLOAT, {}, FloatBytes(&lo, 1));
        const std::string max =
            AddInitializer(absl::StrCat(value, "_clip_max"),
                           onnx::TensorProto::FLOAT, {}, FloatBytes(&hi, 1));
        AddNode(nodes, "Clip", value, {x, min, max}, clipped);
      } else {
        onnx::NodeProto* clip = AddNode(nodes, "Clip", value, {x}, clipped);
        AddAttribute(clip, "min", onnx::AttributeProto::FLOAT)->set_f(lo);
        AddAttribute(clip, "max", onnx::AttributeProto::FLOAT)->set_f(hi);
      }
      x = clipped;
    }
    const std::string scale =
        AddInitializer(absl::StrCat(value, "_scale"), onnx::TensorProto::FLOAT,
                       {}, FloatBytes(&a.scale, 1));
    const std::string zero_point =
        AddInitializer(absl::StrCat(value, "_zero_point"), c.data_type, {},
                       ByteValues({a.zero_point}));
    const std::string quantized =
        names_.Fresh(absl::StrCat(value, "_quantized"));
    AddNode(nodes, "QuantizeLinear", value, {x, scale, zero_point}, quantized);
    const std::string dequantized =
        names_.Fresh(absl::StrCat(value, "_dequantized"));
    AddNode(nodes, "DequantizeLinear", value, {quantized, scale, zero_point},
            dequantized);
    node->set_input(a.input_index, dequantized);
  }

  // The DequantizeLinear nodes of the weights, which must precede every
  // node (their inputs are all initializers).
  google::protobuf::RepeatedPtrField<onnx::NodeProto>* prologue() {
    return &prologue_;
  }

  // The initializers of 4-bit weights, still in 8-bit containers.
  std::vector<PackedInitializer> TakePacked() { return std::move(packed_); }

  // Appends the new initializers (and, for IR versions that require it,
  // their graph inputs).
  void Finish() {
    for (onnx::TensorProto& t : new_initializers_) {
      if (initializers_are_inputs_) AddGraphInput(t);
      *graph_->add_initializer() = std::move(t);
    }
    new_initializers_.clear();
  }

 private:
  std::string AddInitializer(absl::string_view base, int32_t data_type,
                             const std::vector<int64_t>& dims,
                             std::string raw_data) {
    onnx::TensorProto& t = new_initializers_.emplace_back();
    t.set_name(names_.Fresh(base));
    t.set_data_type(data_type);
    for (int64_t d : dims) t.add_dims(d);
    t.set_raw_data(std::move(raw_data));
    return t.name();
  }

  onnx::NodeProto* AddNode(
      google::protobuf::RepeatedPtrField<onnx::NodeProto>* nodes,
      const std::string& op_type, const std::string& name_base,
      const std::vector<std::string>& inputs, const std::string& output) {
    onnx::NodeProto* node = nodes->Add();
    node->set_op_type(op_type);
    node->set_name(names_.Fresh(absl::StrCat(name_base, "_", op_type)));
    for (const std::string& input : inputs) node->add_input(input);
    node->add_output(output);
    return node;
  }

  void AddGraphInput(const onnx::TensorProto& t) {
    onnx::ValueInfoProto* input = graph_->add_input();
    input->set_name(t.name());
    auto* type = input->mutable_type()->mutable_tensor_type();
    type->set_elem_type(t.data_type());
    auto* shape = type->mutable_shape();
    for (int64_t d : t.dims()) shape->add_dim()->set_dim_value(d);
  }

  onnx::GraphProto* graph_;
  NameTable names_;
  int64_t opset_;
  bool initializers_are_inputs_;
  std::vector<onnx::TensorProto> new_initializers_;
  google::protobuf::RepeatedPtrField<onnx::NodeProto> prologue_;
  std::vector<PackedInitializer> packed_;
};

// Removes the items of `field` whose name is in `names`.
template <typename T>
void DropNamed(const std::unordered_set<std::string>& names,
               google::protobuf::RepeatedPtrField<T>* field) {
  google::protobuf::RepeatedPtrField<T> kept;
  for (T& item : *field) {
    if (!names.contains(item.name())) *kept.Add() = std::move(item);
  }
  field->Swap(&kept);
}

// Rewrites `model` into QDQ form (at `opset`) and returns the initializers
// PackInitializers must still pack.
std::vector<PackedInitializer> Rewrite(const QdqExportSpec& spec,
                                       const SpecIndex& index, int64_t opset,
                                       onnx::ModelProto* model) {
  onnx::GraphProto* graph = model->mutable_graph();
  for (size_t i = 0; i < spec.float_updates.size(); ++i) {
    onnx::TensorProto* t =
        graph->mutable_initializer(index.update_initializers[i]);
    const engine::Tensor& value = spec.float_updates[i].second;
    t->clear_float_data();
    t->set_raw_data(FloatBytes(value.data(), value.size()));
  }

  Rewriter rewriter(model, opset);
  std::unordered_set<std::string> replaced;
  for (size_t i = 0; i < spec.weights.size(); ++i) {
    rewriter.QuantizeWeight(spec.weights[i],
                            graph->initializer(index.weight_initializers[i]));
    replaced.insert(spec.weights[i].initializer);
  }

  std::multimap<int, const QdqActivation*> activations_by_node;
  for (size_t i = 0; i < spec.activations.size(); ++i) {
    activations_by_node.emplace(index.activation_nodes[i],
                                &spec.activations[i]);
  }
  google::protobuf::RepeatedPtrField<onnx::NodeProto> nodes =
      std::move(*rewriter.prologue());
  for (int n = 0; n < graph->node_size(); ++n) {
    onnx::NodeProto* node = graph->mutable_node(n);
    const auto [begin, end] = activations_by_node.equal_range(n);
    for (auto it = begin; it != end; ++it) {
      rewriter.QuantizeActivation(*it->second, node, &nodes);
    }
    *nodes.Add() = std::move(*node);
  }
  graph->mutable_node()->Swap(&nodes);

  // The quantized weights are node outputs now, neither initializers nor
  // graph inputs.
  DropNamed(replaced, graph->mutable_initializer());
  DropNamed(replaced, graph->mutable_input());
  rewriter.Finish();
  return rewriter.TakePacked();
}

// Repacks each of `packed` (raw_data of one int8/uint8 byte per value) two
// values per byte in its 4-bit container, and retypes a graph input of the
// same name (IR version 3 lists initializers as inputs).
void PackInitializers(const std::vector<PackedInitializer>& packed,
                      onnx::GraphProto* graph) {
  std::unordered_map<std::string, const Container*> containers;
  for (const PackedInitializer& p : packed) {
    containers.emplace(p.name, p.container);
  }
  for (onnx::TensorProto& t : *graph->mutable_initializer()) {
    const auto it = containers.find(t.name());
    if (it == containers.end()) continue;
    const bool is_signed = it->second->lo < 0;
    std::vector<int32_t> values(t.raw_data().size());
    for (size_t i = 0; i < values.size(); ++i) {
      const char byte = t.raw_data()[i];
      values[i] =
          is_signed ? static_cast<int8_t>(byte) : static_cast<uint8_t>(byte);
    }
    t.set_data_type(it->second->data_type);
    t.set_raw_data(engine::PackInt4(values));
  }
  for (onnx::ValueInfoProto& input : *graph->mutable_input()) {
    const auto it = containers.find(input.name());
    if (it == containers.end()) continue;
    input.mutable_type()->mutable_tensor_type()->set_elem_type(
        it->second->data_type);
  }
}

}  // namespace

absl::Status CheckOnnxModel(absl::string_view onnx_bytes) {
  MIXQ_ASSIGN_OR_RETURN(const onnx::ModelProto model, ParseModel(onnx_bytes));
  return CheckModel(model);
}

absl::StatusOr<std::string> ExportQdq(absl::string_view onnx_bytes,
                                      const QdqExportSpec& spec) {
  MIXQ_ASSIGN_OR_RETURN(onnx::ModelProto model, ParseModel(onnx_bytes));
  // Before the checker, which would look for the external files.
  MIXQ_RETURN_IF_ERROR(RejectExternalData(model.graph()));
  MIXQ_RETURN_IF_ERROR(Annotate(CheckModel(model), "input model"));
  MIXQ_ASSIGN_OR_RETURN(SpecIndex index, IndexSpec(model.graph(), spec));
  const bool packs =
      std::any_of(spec.weights.begin(), spec.weights.end(),
                  [](const QdqWeight& w) { return IsPacked(w); });
  if (packs) {
    // mixq's validator stands in for onnx's checker on the opset-21 output;
    // what it refuses in the input (NaN weights, say) is the input's fault.
    MIXQ_RETURN_IF_ERROR(Annotate(engine::ValidateModel(model), "input model"));
  }

  const onnx::OperatorSetIdProto* opset = DefaultOpset(&model);
  if (opset == nullptr) {
    return absl::InvalidArgumentError(
        "the model imports no opset of the default ONNX domain");
  }
  int64_t opset_version = opset->version();
  const ConvertedOpset need = RequiredOpset(spec);
  if (opset_version < need.opset) {
    MIXQ_ASSIGN_OR_RETURN(model, RaiseOpset(model, opset_version, need));
    opset_version = need.opset;
    // The converter rebuilds the graph: find the spec's items again.
    absl::StatusOr<SpecIndex> converted = IndexSpec(model.graph(), spec);
    if (!converted.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("after onnx's version converter raised the opset to ",
                       need.opset, ": ", converted.status().message()));
    }
    index = *std::move(converted);
  }

  const std::vector<PackedInitializer> packed =
      Rewrite(spec, index, opset_version, &model);
  // Checked before packing and the raise: onnx 1.12's checker knows neither
  // opset 21 nor INT4/UINT4.
  const absl::Status valid = CheckModel(model);
  if (!valid.ok()) {
    return absl::InternalError(
        absl::StrCat("the QDQ model mixq wrote is invalid: ", valid.message()));
  }
  if (packs) {
    PackInitializers(packed, model.mutable_graph());
    MIXQ_RETURN_IF_ERROR(
        Annotate(RaiseToOpset21(&model),
                 absl::StrCat("4-bit weights need opset ", kOpset21)));
    const absl::Status packed_valid = engine::ValidateModel(model);
    if (!packed_valid.ok()) {
      return absl::InternalError(absl::StrCat(
          "the packed opset-", kOpset21,
          " QDQ model mixq wrote is invalid: ", packed_valid.message()));
    }
  }
  std::string bytes;
  if (!model.SerializeToString(&bytes)) {
    return absl::InternalError("cannot serialize the QDQ model");
  }
  return bytes;
}

}  // namespace mixq::search
