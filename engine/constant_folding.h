// The import-time interpreter: evaluates the nodes of an ONNX graph that
// compute constants or shapes (Shape, Gather, Slice, Concat, Cast, Range,
// ConstantOfShape, int64 arithmetic, DequantizeLinear of integer weights,
// ...), as exporters emit them, at the import batch and at a second "probe"
// batch, so that the importer (engine/import_graph.cc) can tell which
// elements of a shape computation are multiples of the batch. Internal to
// the engine.
#ifndef MIXQ_ENGINE_CONSTANT_FOLDING_H_
#define MIXQ_ENGINE_CONSTANT_FOLDING_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/model_impl.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "onnx/onnx_pb.h"

namespace mixq::engine {

// Constant folding results larger than this stay runtime nodes.
inline constexpr int64_t kMaxFoldedElements = int64_t{1} << 22;

// Import-time state of a value (engine/import_graph.cc).
struct ImportSlot {
  std::string name;
  Model::Impl::SlotKind kind = Model::Impl::SlotKind::kNode;
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
  int data_type = onnx::TensorProto::UNDEFINED;  // as ImportSlot::data_type
  Shape shape;
  std::vector<float> floats;
  std::vector<int64_t> ints;
  std::vector<int64_t> probe_ints;
};

// Operators without a kernel, evaluated only here: the input counts they
// take; nullptr for any other operator.
struct FoldOnlyOp {
  absl::string_view op_type;
  int min_inputs;
  int max_inputs;
};
const FoldOnlyOp* FindFoldOnlyOp(absl::string_view op_type);

// A kernel's configuration from a node's attributes alone (no inputs).
OpConfig AttributeConfig(const onnx::NodeProto& proto, const std::string& label,
                         int64_t opset);

// What folding reads: the values so far, `slots` (borrowed; `slot_of` maps
// value names to them), at the import batch `batch` and the probe batch
// `probe` (== batch when the batch is not tracked), and `build_config`,
// which makes the kernel configuration of a node whose first `num_data`
// inputs are data and the rest constants (the importer's, which knows where
// the batch is).
struct FoldContext {
  using ConfigBuilder = std::function<absl::StatusOr<OpConfig>(
      const onnx::NodeProto& proto, const std::string& label, int num_data)>;

  const std::vector<ImportSlot>& slots;
  const absl::flat_hash_map<std::string, int>& slot_of;
  int64_t opset;
  int64_t batch;
  int64_t probe;
  ConfigBuilder build_config;
};

// Evaluates node `proto` (named `label` in errors) over constants (and Shape
// over any value): shape computations, int64 arithmetic, Cast,
// ConstantOfShape, Range, DequantizeLinear of integer constants and the
// data-movement operators on int64 tensors. INVALID_ARGUMENT naming the node
// when it reads a value computed at run time (other than Shape's), when its
// result would be too large to fold, or when it depends on the batch in a
// way the probe batch cannot tell.
absl::StatusOr<Folded> FoldNode(const onnx::NodeProto& proto,
                                const std::string& label,
                                const FoldContext& context);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_CONSTANT_FOLDING_H_
