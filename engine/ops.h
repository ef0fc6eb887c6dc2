// Operator kernels: one class per ONNX operator with its forward and backward
// pass, registered by op type. Private to engine/: the importer
// (import_graph.cc) converts ONNX attributes into an OpConfig, so no protobuf
// type reaches a kernel.
//
// Thread-safety: kernels are immutable after creation (caches of values
// derived from their inputs, such as Conv's transformed weights, are
// internally synchronised and never change a result); Forward and Backward
// are const and may run concurrently on different tensors.
#ifndef MIXQ_ENGINE_OPS_H_
#define MIXQ_ENGINE_OPS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/tensor.h"

namespace mixq::engine {

// The largest tensor an operator may produce (elements); bigger shapes are an
// INVALID_ARGUMENT instead of an allocation failure.
inline constexpr int64_t kMaxTensorElements = int64_t{1} << 31;

// Limits of the sliding windows of Conv, MaxPool and AveragePool, far above
// what real models use; a node beyond them is refused at import, naming it,
// instead of costing unbounded memory or time:
//  - every kernel_shape, strides, dilations and pads value is at most
//    kMaxWindowAttribute (INVALID_ARGUMENT naming the attribute);
//  - per sample, the padded input plane of a window (channels excluded), and
//    every buffer a Conv derives from its input (its padded, stride-split
//    copy, its im2col matrix, the padded dY of its backward) hold at most
//    kMaxWindowBufferValues floats (RESOURCE_EXHAUSTED);
//  - per sample, a Conv's multiply-adds and a pool's window taps (output
//    elements x kernel taps) are at most kMaxWindowWork (RESOURCE_EXHAUSTED).
// A stride that leaves a single output along a dim is treated as stride 1
// there (the outputs are the same).
inline constexpr int64_t kMaxWindowAttribute = int64_t{1} << 20;
inline constexpr int64_t kMaxWindowBufferValues = int64_t{1} << 28;
inline constexpr int64_t kMaxWindowWork = int64_t{1} << 34;

// Element count of `shape`, or INVALID_ARGUMENT if a dim is negative or the
// product of its non-zero dims exceeds kMaxTensorElements.
absl::StatusOr<int64_t> CheckedNumElements(const Shape& shape);

// A node attribute, converted from ONNX.
struct Attribute {
  enum class Type { kInt, kFloat, kInts, kFloats, kString, kOther };
  Type type = Type::kOther;
  int64_t i = 0;
  float f = 0;
  std::vector<int64_t> ints;
  std::vector<float> floats;
  std::string s;
};

// The value of a constant (initializer, Constant node or folded subgraph)
// that configures a kernel, e.g. Reshape's shape or Clip's min.
struct ConstantInput {
  bool is_int = false;  // int64 data in `ints`, else float data in `floats`
  Shape shape;
  std::vector<int64_t> ints;
  std::vector<float> floats;
  // Per element of `ints`, or empty when there are none: k > 0 where the
  // value is k times the runtime batch size (k = 1 for `x.size(0)` in a
  // Reshape's shape, the number of heads for attention's batch x heads), 0
  // for the others. `ints` holds such values only for the batch the model was
  // imported at. Only kernels that document it accept such elements
  // (Reshape, Expand, Tile, through BatchShape; Resize's sizes); the importer
  // rejects them for every other input.
  std::vector<int64_t> batch_factor;

  bool has_batch() const;
};

// Dim `axis` of data input `input` holds `factor` times the runtime batch
// size; input -1 when no input does.
struct BatchSource {
  int input = -1;
  int axis = -1;
  int64_t factor = 1;
};

// What a kernel is built from.
struct OpConfig {
  std::string op_type;
  std::string node_name;
  // The model's opset of the default domain (e.g. 13): operators whose
  // semantics changed between opsets (Softmax, Squeeze, Clip, ...) read it.
  int64_t opset = 0;
  absl::flat_hash_map<std::string, Attribute> attributes;
  // The node's inputs after its data inputs (e.g. Reshape's shape, Clip's
  // min/max), up to its last non-empty input: their values, nullopt for an
  // empty (omitted) input. The importer rejects inputs that are not constants
  // (initializers, Constant nodes or folded subgraphs).
  std::vector<std::optional<ConstantInput>> constant_inputs;
  // Where the runtime batch size can be read: a data input's dim that holds
  // the batch times a factor (the graph input's dim 0 flows into it, maybe
  // multiplied), or none. When a constant input holds batch elements and no
  // data input of the node carries the batch, the importer passes the graph
  // input as an extra data input after the node's own (input == the number
  // of the node's data inputs, axis 0, factor 1); kernels read only its
  // shape. Lets a kernel resolve ConstantInput::batch_factor elements.
  BatchSource batch_source;
  // The node's number of outputs, and the one this kernel computes
  // (OpSchema::kernel_per_output; 0 otherwise).
  int num_outputs = 1;
  int output_index = 0;

  // The attribute's value, `default_value` when absent; INVALID_ARGUMENT
  // naming the attribute and node when it has another type.
  absl::StatusOr<int64_t> GetInt(absl::string_view name,
                                 int64_t default_value) const;
  absl::StatusOr<float> GetFloat(absl::string_view name,
                                 float default_value) const;
  absl::StatusOr<std::string> GetString(absl::string_view name,
                                        absl::string_view default_value) const;
  // An INTS attribute, nullopt when absent.
  absl::StatusOr<std::optional<std::vector<int64_t>>> GetInts(
      absl::string_view name) const;
  // An int64 list that older opsets give as attribute `name` and newer ones
  // as constant input `input` (an index into constant_inputs), e.g.
  // Unsqueeze's axes. Either form is accepted at any opset; nullopt when
  // neither is present. INVALID_ARGUMENT naming the
  // node when both are, or when the input is not a constant int64 tensor.
  absl::StatusOr<std::optional<std::vector<int64_t>>> GetIntsAttrOrInput(
      absl::string_view name, int input) const;
};

class Kernel {
 public:
  virtual ~Kernel() = default;

  // The output shape for data inputs of `inputs` shapes; INVALID_ARGUMENT
  // describing the mismatch otherwise. Forward and Backward may only be called
  // with shapes this accepted.
  virtual absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const = 0;

  // Writes the output into `output`, already resized to OutputShape.
  virtual void Forward(absl::Span<const Tensor* const> inputs,
                       Tensor* output) const = 0;

  // Checks the values (not only the shapes) of inputs OutputShape accepted,
  // for kernels whose inputs carry indices read at run time (a Gather on
  // token ids): INVALID_ARGUMENT naming the offending value, and Forward is
  // then not called. Most kernels accept any values.
  virtual absl::Status CheckInputs(
      absl::Span<const Tensor* const> /*inputs*/) const {
    return absl::OkStatus();
  }

  // Whether Backward computes a gradient. Operators whose output is not a
  // differentiable function of their input (ArgMax's indices) say false;
  // Model::Backward then refuses a gradient that would flow through them,
  // naming the node, and never calls their Backward.
  virtual bool has_gradient() const { return true; }

  // Overwrites grad_inputs[i] (already resized to the shape of inputs[i])
  // with dLoss/dInput i, given dLoss/dOutput. A null grad_inputs[i] is not
  // wanted and is skipped.
  virtual void Backward(absl::Span<const Tensor* const> inputs,
                        const Tensor& grad_output,
                        absl::Span<Tensor* const> grad_inputs) const = 0;
};

// A shape given as a constant input (Reshape's, Expand's) whose elements may
// be multiples of the runtime batch size (ConstantInput::batch_factor):
// resolved on every call from the shape of the input the batch is read from
// (OpConfig::batch_source), so attention's [batch x heads, T, D/H] runs at any
// batch.
class BatchShape {
 public:
  // INVALID_ARGUMENT naming the node when `shape` holds batch elements and
  // the node has no batch source.
  static absl::StatusOr<BatchShape> Create(const OpConfig& config,
                                           const ConstantInput& shape);

  // The values at the batch the data inputs `inputs` carry (literal elements
  // as given); INVALID_ARGUMENT when the batch source is not among them or
  // its dim is not a multiple of its factor.
  absl::StatusOr<std::vector<int64_t>> Resolve(
      absl::Span<const Shape* const> inputs) const;

  // Element i is a multiple of the batch.
  bool is_batch(size_t i) const { return factors_[i] > 0; }
  size_t size() const { return values_.size(); }
  // The values as imported (for messages).
  const std::vector<int64_t>& values() const { return values_; }

 private:
  BatchShape(std::vector<int64_t> values, std::vector<int64_t> factors,
             BatchSource source)
      : values_(std::move(values)),
        factors_(std::move(factors)),
        source_(source) {}

  std::vector<int64_t> values_;
  std::vector<int64_t> factors_;  // per element, 0 when literal
  BatchSource source_;
};

// OpSchema::max_inputs and data_inputs of variadic operators (Concat).
inline constexpr int kVariadic = 1 << 20;

// How the importer wires a node to its kernel.
struct OpSchema {
  int min_inputs = 1;
  int max_inputs = 1;
  // The first `data_inputs` inputs are float tensors passed to the kernel; the
  // rest configure it (OpConfig::constant_inputs). Any number (kVariadic).
  int data_inputs = 1;
  // Outputs after the first are accepted but never produced (Dropout's mask),
  // unless kernel_per_output.
  int max_outputs = 1;
  absl::StatusOr<std::unique_ptr<Kernel>> (*create)(const OpConfig& config);
  // Data inputs may be omitted (an empty name) before the last given one:
  // the kernel then reads an IsOmittedInput tensor there, which has no
  // gradient. Otherwise an omitted data input is an import error.
  bool optional_data_inputs = false;
  // The importer creates one kernel per output of a node (Split), with
  // OpConfig::output_index saying which; each runs as its own node.
  bool kernel_per_output = false;
};

// Whether a data input of this shape stands for an omitted one (a rank-1
// tensor of no elements; see OpSchema::optional_data_inputs).
bool IsOmittedInput(const Shape& shape);

// Operators that only change the shape (or nothing): the output has the
// input's data in the same order, the gradient is copied back. Subclasses
// define OutputShape.
class CopyKernel : public Kernel {
 public:
  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override;
  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override;
};

// A supported operator of the default ONNX domain. Each family of kernels
// (ops_*.cc) lists its operators in a table; FindOp searches them all.
struct OpEntry {
  absl::string_view op_type;
  OpSchema schema;
};
absl::Span<const OpEntry> ElementwiseOps();    // ops_elementwise.cc
absl::Span<const OpEntry> ConvOps();           // ops_conv.cc
absl::Span<const OpEntry> ShapeOps();          // ops_shape.cc
absl::Span<const OpEntry> QuantOps();          // ops_quant.cc
absl::Span<const OpEntry> ConvTransposeOps();  // ops_conv_transpose.cc
absl::Span<const OpEntry> ResizeOps();         // ops_resize.cc
absl::Span<const OpEntry> DepthToSpaceOps();   // ops_depth_to_space.cc
// RNN, LSTM and GRU. Their kernels write every output of the node packed into
// one tensor (engine/ops_rnn.cc); the importer slices them apart.
absl::Span<const OpEntry> RecurrentOps();  // ops_rnn.cc
// The attribute by which the importer tells a recurrent kernel that a
// constant sequence_lens gave every sequence this length: the kernel refuses
// inputs of another seq_length (variable lengths are not supported).
inline constexpr absl::string_view kSequenceLengthAttribute =
    "mixq_sequence_length";
absl::Span<const OpEntry> TransformerOps();  // ops_transformer.cc
absl::Span<const OpEntry> ScatterOps();      // ops_scatter.cc

// Equal and Where on runtime tensors (masks; booleans are 1 and 0), with
// numpy broadcasting (ops_index.cc). Over constants (shape computations) the
// importer folds them itself.
absl::Span<const OpEntry> MaskOps();  // ops_index.cc
// Gather whose indices are a runtime tensor (two data inputs: data, indices
// carried as floats, e.g. token ids from an int64 graph input): the importer
// uses this schema instead of FindOp("Gather")'s, whose indices are constants
// (ops_index.cc). Out-of-range indices are refused by CheckInputs.
const OpSchema& IndexGatherSchema();
// Cast of a runtime tensor to an integer type (truncation toward zero) or,
// with `to_bool`, to BOOL (1 where non-zero); zero gradient (ops_index.cc).
std::unique_ptr<Kernel> MakeCastToIntegerKernel(bool to_bool);

// One kernel for a Conv node and the inference-form BatchNormalization that
// is its only consumer (kernels created for them by FindOp): the convolution
// on BN-folded weights, the same function up to float rounding without the
// intermediate tensor. Its inputs are the Conv's (X, W, and B when
// `conv_bias`) followed by BN's scale, bias, mean and var; its output and
// gradients are those of the pair. nullptr when the kernels are not a Conv
// and a BatchNormalization. Keeps a reference to `conv`.
std::unique_ptr<Kernel> FuseConvBatchNorm(const Kernel& conv,
                                          const Kernel& batch_norm,
                                          bool conv_bias);

// The schema of a supported operator of the default ONNX domain, or nullptr.
const OpSchema* FindOp(absl::string_view op_type);

// Every operator FindOp finds, in registry order (for the operator-test
// table's coverage check and documentation).
std::vector<absl::string_view> RegisteredOpTypes();

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_OPS_H_
