#include "engine/rnn_import.h"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "engine/ops.h"
#include "engine/tensor_proto.h"

namespace mixq::engine {
namespace {

// Input and output positions of RNN, LSTM and GRU (ONNX).
constexpr int kX = 0;
constexpr int kSequenceLens = 4;
constexpr int kInitialH = 5;
constexpr int kInitialC = 6;
constexpr int kY = 0;
// Slice takes starts/ends/axes as inputs from this opset on.
constexpr int64_t kSliceInputsOpset = 10;
// [T, B, I] <-> [B, T, I] (X, and the [D, B, H] <-> [B, D, H] states).
const std::vector<int64_t> kSwapFirstAxes = {1, 0, 2};
// Y: [T, D, B, H] -> [B, T, D, H].
const std::vector<int64_t> kBatchFirstY = {2, 0, 1, 3};

// Operators that only move (or repeat) elements: zeros stay zeros.
constexpr absl::string_view kZeroPreservingOps[] = {
    "Slice",     "Expand",   "Reshape", "Unsqueeze", "Squeeze",
    "Transpose", "Identity", "Tile",    "Gather"};

struct RecurrentOp {
  absl::string_view op_type;
  // Final states after Y: Y_h (and Y_c).
  int states;
  // The default activations of one direction.
  std::vector<absl::string_view> activations;
};
const RecurrentOp* FindRecurrentOp(const onnx::NodeProto& node) {
  static const RecurrentOp kOps[] = {
      {"LSTM", 2, {"Sigmoid", "Tanh", "Tanh"}},
      {"GRU", 1, {"Sigmoid", "Tanh"}},
      {"RNN", 1, {"Tanh"}},
  };
  if (!node.domain().empty() && node.domain() != "ai.onnx") return nullptr;
  for (const RecurrentOp& op : kOps) {
    if (node.op_type() == op.op_type) return &op;
  }
  return nullptr;
}

bool AllZero(const onnx::TensorProto& t) {
  for (char c : t.raw_data()) {
    if (c != 0) return false;
  }
  for (float v : t.float_data()) {
    if (v != 0.0f) return false;
  }
  for (double v : t.double_data()) {
    if (v != 0.0) return false;
  }
  for (int32_t v : t.int32_data()) {
    if (v != 0) return false;
  }
  for (int64_t v : t.int64_data()) {
    if (v != 0) return false;
  }
  return true;
}

class Lowering {
 public:
  Lowering(int64_t opset, onnx::GraphProto* graph)
      : opset_(opset), graph_(*graph) {
    for (const onnx::ValueInfoProto& v : graph_.input())
      names_.insert(v.name());
    for (const onnx::ValueInfoProto& v : graph_.output()) {
      names_.insert(v.name());
      graph_outputs_.insert(v.name());
    }
    for (const onnx::TensorProto& t : graph_.initializer()) {
      names_.insert(t.name());
    }
    for (const onnx::NodeProto& node : graph_.node()) {
      for (const std::string& out : node.output()) names_.insert(out);
    }
  }

  absl::Status Run() {
    const int n = graph_.node_size();
    for (int j = 0; j < n; ++j) {
      const RecurrentOp* op = FindRecurrentOp(graph_.node(j));
      if (op == nullptr) continue;
      absl::Status status = Lower(*op, j);
      if (!status.ok()) return status;
    }
    RemoveDeadNodes();
    return absl::OkStatus();
  }

 private:
  absl::Status Lower(const RecurrentOp& op, int index) {
    onnx::NodeProto& node = *graph_.mutable_node(index);
    const std::string label =
        node.name().empty() ? absl::StrCat("#", index) : node.name();
    const auto error = [&](absl::string_view message) {
      return absl::InvalidArgumentError(
          absl::StrCat("node '", label, "' (", node.op_type(), "): ", message));
    };
    if (node.output_size() > 1 + op.states) {
      return error(absl::StrCat("has ", node.output_size(),
                                " outputs; expected at most ", 1 + op.states));
    }
    if (node.input_size() > kSequenceLens &&
        !node.input(kSequenceLens).empty()) {
      const std::optional<int64_t> length =
          CommonLength(node.input(kSequenceLens));
      if (!length.has_value()) {
        return error(
            "sequence_lens must be a constant holding one length for every "
            "sequence (variable lengths are not supported)");
      }
      onnx::AttributeProto* attr = node.add_attribute();
      attr->set_name(std::string(kSequenceLengthAttribute));
      attr->set_type(onnx::AttributeProto::INT);
      attr->set_i(*length);
      node.set_input(kSequenceLens, "");
    }
    int64_t layout = 0;
    for (int a = node.attribute_size(); a-- > 0;) {
      const onnx::AttributeProto& attr = node.attribute(a);
      if (attr.name() == "activations") {
        if (!DefaultActivations(op, attr)) {
          return error(absl::StrCat("activations ",
                                    absl::StrJoin(attr.strings(), ", "),
                                    " are not supported (only the defaults ",
                                    absl::StrJoin(op.activations, ", "), ")"));
        }
        node.mutable_attribute()->DeleteSubrange(a, 1);
      } else if (attr.name() == "layout" &&
                 attr.type() == onnx::AttributeProto::INT && attr.i() == 1) {
        layout = 1;
        node.mutable_attribute()->DeleteSubrange(a, 1);
      }
    }
    for (int i : {kInitialH, kInitialC}) {
      if (i < node.input_size() && !node.input(i).empty() &&
          IsZeros(node.input(i))) {
        dead_candidates_.insert(node.input(i));
        node.set_input(i, "");
      }
    }
    std::vector<onnx::NodeProto> added;
    if (layout == 1) {
      for (int i : {kX, kInitialH, kInitialC}) {
        if (i >= node.input_size() || node.input(i).empty()) continue;
        const std::string moved =
            Fresh(absl::StrCat(node.input(i), "_time_major"));
        added.push_back(Transpose(absl::StrCat(label, "/to_time_major_", i),
                                  node.input(i), moved, kSwapFirstAxes));
        node.set_input(i, moved);
      }
    }
    const std::vector<std::string> outputs(node.output().begin(),
                                           node.output().end());
    const std::string packed = Fresh(absl::StrCat(
        outputs.empty() || outputs[0].empty() ? label : outputs[0], "_packed"));
    node.clear_output();
    node.add_output(packed);
    for (int k = 0; k < static_cast<int>(outputs.size()); ++k) {
      if (outputs[k].empty()) continue;
      const std::string part_name =
          layout == 1 ? Fresh(absl::StrCat(outputs[k], "_time_major"))
                      : outputs[k];
      const std::string prefix = absl::StrCat(label, "/output_", k);
      if (k == kY) {
        Slice(prefix, packed, part_name, -op.states, &added);
      } else {
        // Y_h is step T of the packed output, Y_c step T + 1.
        const std::string index = Fresh(absl::StrCat(prefix, "_index"));
        added.push_back(IntConstant(absl::StrCat(prefix, "_index"), index, {},
                                    {k - 1 - op.states}));
        onnx::NodeProto gather =
            NewNode("Gather", prefix, {packed, index}, part_name);
        added.push_back(std::move(gather));
      }
      if (layout == 1) {
        added.push_back(Transpose(absl::StrCat(prefix, "_batch_first"),
                                  part_name, outputs[k],
                                  k == kY ? kBatchFirstY : kSwapFirstAxes));
      }
    }
    for (onnx::NodeProto& extra : added) *graph_.add_node() = std::move(extra);
    return absl::OkStatus();
  }

  static bool DefaultActivations(const RecurrentOp& op,
                                 const onnx::AttributeProto& attr) {
    const int per_direction = static_cast<int>(op.activations.size());
    if (attr.strings_size() == 0 || attr.strings_size() % per_direction != 0) {
      return false;
    }
    for (int i = 0; i < attr.strings_size(); ++i) {
      if (!absl::EqualsIgnoreCase(attr.strings(i),
                                  op.activations[i % per_direction])) {
        return false;
      }
    }
    return true;
  }

  // The value of every element of a constant sequence_lens (an initializer
  // or Constant node), nullopt when it is not one or they differ.
  std::optional<int64_t> CommonLength(const std::string& name) const {
    const onnx::TensorProto* tensor = nullptr;
    for (const onnx::TensorProto& t : graph_.initializer()) {
      if (t.name() == name) tensor = &t;
    }
    const onnx::NodeProto* producer = Producer(name);
    if (producer != nullptr && producer->op_type() == "Constant" &&
        producer->attribute_size() == 1 &&
        producer->attribute(0).name() == "value") {
      tensor = &producer->attribute(0).t();
    }
    if (tensor == nullptr) return std::nullopt;
    const absl::StatusOr<ConstValue> value =
        ParseTensor(*tensor, "sequence_lens");
    if (!value.ok() || !value->is_int || value->ints.empty()) {
      return std::nullopt;
    }
    for (int64_t v : value->ints) {
      if (v != value->ints[0]) return std::nullopt;
    }
    return value->ints[0];
  }

  // Whether `name` is computed from a ConstantOfShape of zeros by operators
  // that only move elements.
  bool IsZeros(const std::string& name) const {
    const onnx::NodeProto* producer = Producer(name);
    while (producer != nullptr) {
      if (producer->op_type() == "ConstantOfShape") {
        for (const onnx::AttributeProto& attr : producer->attribute()) {
          if (attr.name() == "value" && !AllZero(attr.t())) return false;
        }
        return true;
      }
      bool movement = false;
      for (absl::string_view op : kZeroPreservingOps)
        movement |= producer->op_type() == op;
      if (!movement || producer->input_size() == 0) return false;
      producer = Producer(producer->input(0));
    }
    return false;
  }

  const onnx::NodeProto* Producer(const std::string& name) const {
    for (const onnx::NodeProto& node : graph_.node()) {
      for (const std::string& out : node.output()) {
        if (out == name) return &node;
      }
    }
    return nullptr;
  }

  // Removes the producers of dead_candidates_ (and then of their inputs)
  // once nothing reads their outputs.
  void RemoveDeadNodes() {
    absl::flat_hash_map<std::string, int> readers;
    for (const onnx::NodeProto& node : graph_.node()) {
      for (const std::string& in : node.input()) ++readers[in];
    }
    bool changed = true;
    while (changed) {
      changed = false;
      for (int j = graph_.node_size(); j-- > 0;) {
        const onnx::NodeProto& node = graph_.node(j);
        bool candidate = false;
        bool read = false;
        for (const std::string& out : node.output()) {
          candidate |= dead_candidates_.contains(out);
          read |= readers[out] > 0 || graph_outputs_.contains(out);
        }
        if (!candidate || read) continue;
        for (const std::string& in : node.input()) {
          --readers[in];
          dead_candidates_.insert(in);
        }
        graph_.mutable_node()->DeleteSubrange(j, 1);
        changed = true;
      }
    }
  }

  // `base`, or `base` with a numeric suffix, unused by any value so far.
  std::string Fresh(const std::string& base) {
    std::string name = base;
    for (int k = 1; names_.contains(name); ++k)
      name = absl::StrCat(base, "_", k);
    names_.insert(name);
    return name;
  }

  static onnx::NodeProto NewNode(absl::string_view op_type,
                                 const std::string& name,
                                 const std::vector<std::string>& inputs,
                                 const std::string& output) {
    onnx::NodeProto node;
    node.set_op_type(std::string(op_type));
    node.set_name(name);
    for (const std::string& in : inputs) node.add_input(in);
    node.add_output(output);
    return node;
  }

  static void AddInts(const std::string& name,
                      const std::vector<int64_t>& values,
                      onnx::NodeProto* node) {
    onnx::AttributeProto* attr = node->add_attribute();
    attr->set_name(name);
    attr->set_type(onnx::AttributeProto::INTS);
    for (int64_t v : values) attr->add_ints(v);
  }

  static onnx::NodeProto Transpose(const std::string& name,
                                   const std::string& input,
                                   const std::string& output,
                                   const std::vector<int64_t>& perm) {
    onnx::NodeProto node = NewNode("Transpose", name, {input}, output);
    AddInts("perm", perm, &node);
    return node;
  }

  static onnx::NodeProto IntConstant(const std::string& name,
                                     const std::string& output,
                                     const std::vector<int64_t>& dims,
                                     const std::vector<int64_t>& values) {
    onnx::NodeProto node = NewNode("Constant", name, {}, output);
    onnx::AttributeProto* attr = node.add_attribute();
    attr->set_name("value");
    attr->set_type(onnx::AttributeProto::TENSOR);
    onnx::TensorProto* t = attr->mutable_t();
    t->set_data_type(onnx::TensorProto::INT64);
    for (int64_t d : dims) t->add_dims(d);
    for (int64_t v : values) t->add_int64_data(v);
    return node;
  }

  // output = input[0 : end] along axis 0, end < 0 counting from the end.
  void Slice(const std::string& name, const std::string& input,
             const std::string& output, int64_t end,
             std::vector<onnx::NodeProto>* added) {
    if (opset_ < kSliceInputsOpset) {
      onnx::NodeProto node = NewNode("Slice", name, {input}, output);
      AddInts("starts", {0}, &node);
      AddInts("ends", {end}, &node);
      AddInts("axes", {0}, &node);
      added->push_back(std::move(node));
      return;
    }
    std::vector<std::string> inputs = {input};
    for (const auto& [part, value] : {std::pair{"starts", int64_t{0}},
                                      {"ends", end},
                                      {"axes", int64_t{0}}}) {
      inputs.push_back(Fresh(absl::StrCat(name, "_", part)));
      added->push_back(IntConstant(absl::StrCat(name, "_", part), inputs.back(),
                                   {1}, {value}));
    }
    added->push_back(NewNode("Slice", name, inputs, output));
  }

  const int64_t opset_;
  onnx::GraphProto& graph_;
  absl::flat_hash_set<std::string> names_;
  absl::flat_hash_set<std::string> graph_outputs_;
  absl::flat_hash_set<std::string> dead_candidates_;
};

}  // namespace

absl::Status LowerRecurrentNodes(int64_t opset, onnx::GraphProto* graph) {
  const bool any = std::any_of(graph->node().begin(), graph->node().end(),
                               [](const onnx::NodeProto& node) {
                                 return FindRecurrentOp(node) != nullptr;
                               });
  if (!any) return absl::OkStatus();
  return Lowering(opset, graph).Run();
}

}  // namespace mixq::engine
