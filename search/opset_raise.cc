#include "search/opset_raise.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "onnx/onnx_pb.h"
#include "search/onnx_names.h"

namespace mixq::search {
namespace {

// TensorProto.raw_data is little-endian; the axes are copied from the host.
static_assert(std::endian::native == std::endian::little);

// What raising a node from opset 13..17 to 21 takes.
enum class Raise {
  kSame,              // nothing
  kAxesToInput,       // Reduce*-18: attribute `axes` -> input 1
  kSplitNumOutputs,   // Split-18: `num_outputs` when there is no split input
  kInferenceOutputs,  // BatchNormalization: the same with one output only
};

struct RaisableOp {
  absl::string_view op_type;
  Raise raise;
};

// Sorted by op_type (looked up by binary search).
constexpr RaisableOp kRaisableOps[] = {
    {"Abs", Raise::kSame},
    {"Add", Raise::kSame},
    {"ArgMax", Raise::kSame},
    {"AveragePool", Raise::kSame},
    {"BatchNormalization", Raise::kInferenceOutputs},
    {"Cast", Raise::kSame},
    {"Clip", Raise::kSame},
    {"Concat", Raise::kSame},
    {"Constant", Raise::kSame},
    {"ConstantOfShape", Raise::kSame},
    {"Conv", Raise::kSame},
    {"ConvTranspose", Raise::kSame},
    {"DepthToSpace", Raise::kSame},
    {"DequantizeLinear", Raise::kSame},
    {"Div", Raise::kSame},
    {"Dropout", Raise::kSame},
    {"Elu", Raise::kSame},
    {"Equal", Raise::kSame},
    {"Erf", Raise::kSame},
    {"Exp", Raise::kSame},
    {"Expand", Raise::kSame},
    {"Flatten", Raise::kSame},
    // RNN-14, LSTM-14 and GRU-14 only added `layout` (default 0, the
    // earlier behaviour); later versions only add element types.
    {"GRU", Raise::kSame},
    {"Gather", Raise::kSame},
    {"Gelu", Raise::kSame},
    {"Gemm", Raise::kSame},
    {"GlobalAveragePool", Raise::kSame},
    {"GlobalMaxPool", Raise::kSame},
    {"Greater", Raise::kSame},
    {"HardSigmoid", Raise::kSame},
    {"HardSwish", Raise::kSame},
    {"Identity", Raise::kSame},
    {"LSTM", Raise::kSame},
    {"LayerNormalization", Raise::kSame},
    {"LeakyRelu", Raise::kSame},
    {"Less", Raise::kSame},
    {"Log", Raise::kSame},
    {"LogSoftmax", Raise::kSame},
    {"MatMul", Raise::kSame},
    {"Max", Raise::kSame},
    {"MaxPool", Raise::kSame},
    {"Mean", Raise::kSame},
    {"Min", Raise::kSame},
    {"Mod", Raise::kSame},
    {"Mul", Raise::kSame},
    {"Neg", Raise::kSame},
    {"Not", Raise::kSame},
    {"PRelu", Raise::kSame},
    {"Pad", Raise::kSame},
    {"Pow", Raise::kSame},
    {"QuantizeLinear", Raise::kSame},
    {"RNN", Raise::kSame},
    {"Range", Raise::kSame},
    {"Reciprocal", Raise::kSame},
    {"ReduceL1", Raise::kAxesToInput},
    {"ReduceL2", Raise::kAxesToInput},
    {"ReduceLogSum", Raise::kAxesToInput},
    {"ReduceLogSumExp", Raise::kAxesToInput},
    {"ReduceMax", Raise::kAxesToInput},
    {"ReduceMean", Raise::kAxesToInput},
    {"ReduceMin", Raise::kAxesToInput},
    {"ReduceProd", Raise::kAxesToInput},
    {"ReduceSum", Raise::kSame},
    {"ReduceSumSquare", Raise::kAxesToInput},
    {"Relu", Raise::kSame},
    {"Reshape", Raise::kSame},
    {"Resize", Raise::kSame},
    // ScatterND-16 added `reduction` (default none), ScatterND-18 the values
    // max and min.
    {"ScatterND", Raise::kSame},
    {"Shape", Raise::kSame},
    {"Sigmoid", Raise::kSame},
    {"Size", Raise::kSame},
    {"Slice", Raise::kSame},
    {"Softmax", Raise::kSame},
    {"Softplus", Raise::kSame},
    {"SpaceToDepth", Raise::kSame},
    {"Split", Raise::kSplitNumOutputs},
    {"Sqrt", Raise::kSame},
    {"Squeeze", Raise::kSame},
    {"Sub", Raise::kSame},
    {"Sum", Raise::kSame},
    {"Tanh", Raise::kSame},
    {"Tile", Raise::kSame},
    {"Transpose", Raise::kSame},
    {"Unsqueeze", Raise::kSame},
    {"Where", Raise::kSame},
};

constexpr bool IsSorted() {
  for (size_t i = 1; i < std::size(kRaisableOps); ++i) {
    if (!(kRaisableOps[i - 1].op_type < kRaisableOps[i].op_type)) return false;
  }
  return true;
}
static_assert(IsSorted(), "kRaisableOps must be sorted by op_type");

const RaisableOp* FindRaisableOp(absl::string_view op_type) {
  const auto* end = std::end(kRaisableOps);
  const auto* it = std::lower_bound(
      std::begin(kRaisableOps), end, op_type,
      [](const RaisableOp& op, absl::string_view t) { return op.op_type < t; });
  return it != end && it->op_type == op_type ? it : nullptr;
}

bool IsDefaultDomain(const std::string& domain) {
  return domain.empty() || domain == "ai.onnx";
}

constexpr char kAxes[] = "axes";
constexpr char kNumOutputs[] = "num_outputs";
// Split's optional second input, the part sizes.
constexpr int kSplitSizesInput = 1;

std::string NodeLabel(const onnx::NodeProto& node, int index) {
  return absl::StrCat(
      "operator ", node.op_type(), " (node '",
      node.name().empty() ? absl::StrCat("#", index) : node.name(), "')");
}

// Why `node` cannot be raised, or "" when it can.
std::string Unraisable(const onnx::NodeProto& node) {
  if (!IsDefaultDomain(node.domain())) {
    return absl::StrCat("domain '", node.domain(), "' is not raised");
  }
  const RaisableOp* op = FindRaisableOp(node.op_type());
  if (op == nullptr) {
    return "mixq does not know whether it changed between the model's opset "
           "and 21";
  }
  if (op->raise == Raise::kInferenceOutputs && node.output_size() > 1) {
    return "its training-mode outputs changed at opset 14";
  }
  return "";
}

// Moves attribute `axes` of a Reduce node into a new int64 initializer that
// becomes input 1.
void MoveAxesToInput(onnx::NodeProto* node, NameTable* names,
                     onnx::GraphProto* graph) {
  auto* attrs = node->mutable_attribute();
  const auto it = std::find_if(
      attrs->begin(), attrs->end(),
      [](const onnx::AttributeProto& a) { return a.name() == kAxes; });
  if (it == attrs->end()) return;  // reduce over every axis, at 21 too
  const std::vector<int64_t> axes(it->ints().begin(), it->ints().end());
  attrs->erase(it);
  onnx::TensorProto* t = graph->add_initializer();
  t->set_name(names->Fresh(absl::StrCat(
      node->name().empty() ? node->output(0) : node->name(), "_axes")));
  t->set_data_type(onnx::TensorProto::INT64);
  t->add_dims(static_cast<int64_t>(axes.size()));
  t->set_raw_data(std::string(reinterpret_cast<const char*>(axes.data()),
                              axes.size() * sizeof(int64_t)));
  // The node took only its data input before opset 18.
  node->mutable_input()->DeleteSubrange(1, node->input_size() - 1);
  node->add_input(t->name());
}

void AddNumOutputs(onnx::NodeProto* node) {
  const bool has_sizes = node->input_size() > kSplitSizesInput &&
                         !node->input(kSplitSizesInput).empty();
  const bool has_count = std::any_of(
      node->attribute().begin(), node->attribute().end(),
      [](const onnx::AttributeProto& a) { return a.name() == kNumOutputs; });
  if (has_sizes || has_count) return;
  onnx::AttributeProto* attr = node->add_attribute();
  attr->set_name(kNumOutputs);
  attr->set_type(onnx::AttributeProto::INT);
  attr->set_i(node->output_size());
}

}  // namespace

absl::Status RaiseToOpset21(onnx::ModelProto* model) {
  onnx::OperatorSetIdProto* opset = nullptr;
  for (onnx::OperatorSetIdProto& entry : *model->mutable_opset_import()) {
    if (IsDefaultDomain(entry.domain())) opset = &entry;
  }
  if (opset == nullptr) {
    return absl::FailedPreconditionError(
        "the model imports no opset of the default ONNX domain");
  }
  if (opset->version() < kMinRaisableOpset || opset->version() > kOpset21) {
    return absl::FailedPreconditionError(absl::StrCat(
        "opset ", opset->version(), " cannot be raised to ", kOpset21,
        " (mixq raises from ", kMinRaisableOpset, " to ", kOpset21, ")"));
  }
  onnx::GraphProto* graph = model->mutable_graph();
  if (opset->version() < kOpset21) {
    for (int i = 0; i < graph->node_size(); ++i) {
      const std::string why = Unraisable(graph->node(i));
      if (!why.empty()) {
        return absl::FailedPreconditionError(absl::StrCat(
            NodeLabel(graph->node(i), i), " cannot be raised from opset ",
            opset->version(), " to ", kOpset21, ": ", why));
      }
    }
    NameTable names(*graph);
    for (onnx::NodeProto& node : *graph->mutable_node()) {
      switch (FindRaisableOp(node.op_type())->raise) {
        case Raise::kAxesToInput:
          MoveAxesToInput(&node, &names, graph);
          break;
        case Raise::kSplitNumOutputs:
          AddNumOutputs(&node);
          break;
        case Raise::kSame:
        case Raise::kInferenceOutputs:
          break;
      }
    }
    opset->set_version(kOpset21);
  }
  model->set_ir_version(std::max(model->ir_version(), kIrVersionOfOpset21));
  return absl::OkStatus();
}

}  // namespace mixq::search
