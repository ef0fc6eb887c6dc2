// Model::Impl: the executable form of an imported model (engine/model.h):
// its values as slots, the compiled nodes in execution order, the parameters
// and the quantizable layers. Built by the importer (engine/import_graph.h),
// rewritten by FuseConvBatchNorms (engine/conv_bn_fusion.h) and run by Model
// (engine/model.cc). Internal to the engine.
#ifndef MIXQ_ENGINE_MODEL_IMPL_H_
#define MIXQ_ENGINE_MODEL_IMPL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model.h"
#include "engine/ops.h"
#include "engine/tensor.h"

namespace mixq::engine {

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

  std::vector<GraphInput> inputs;
  std::string input_name;
  Shape input_shape;  // packed when several (Model::inputs())
  // > 0 when the graph's shapes only hold at the batch its input declares:
  // Forward accepts no other.
  int64_t fixed_batch = -1;
  std::string output_name;
  Shape output_shape;
  std::vector<ParamInfo> params;
  std::vector<Tensor> initial_params;
  std::vector<QuantizableLayer> layers;
  int num_sites = 0;  // nodes with a layer (Node::site)

  std::vector<int> input_slots;  // per graph input
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
  // Checks the graph inputs a Forward left in `values` (ForwardFrom,
  // Backward): INVALID_ARGUMENT when the trace was not filled by this model.
  absl::Status CheckTraceInputs(const std::vector<Tensor>& values) const;
  // Writes the graph inputs of packed `input` (CheckInput accepted it) into
  // their slots of `values`.
  void Unpack(const Tensor& input, std::vector<Tensor>* values) const;
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

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_MODEL_IMPL_H_
