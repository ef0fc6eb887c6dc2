// Model: an ONNX graph imported into mixq's engine, able to run forward and
// backward on batches with caller-supplied parameter values (so the search
// can substitute fake-quantized weights without touching the model).
//
// Thread-safety: a Model is immutable after import; Forward and Backward are
// const and may run concurrently from several threads, each with its own
// ForwardTrace.
#ifndef MIXQ_ENGINE_MODEL_H_
#define MIXQ_ENGINE_MODEL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/tensor.h"

namespace mixq::engine {

// A float initializer of the graph: training may update it.
struct ParamInfo {
  std::string name;
  Shape shape;
};

// A graph input that is not an initializer. Integer inputs (token ids,
// attention masks) are carried as floats, exactly: their values must lie
// within +-2^24 (DecodeModelInputs, engine/model_inputs.h, checks it).
struct GraphInput {
  enum class Type { kFloat, kInt64, kInt32 };
  std::string name;
  Type type = Type::kFloat;
  // As declared; dim 0 is the batch (-1 when symbolic).
  Shape shape;
  // Values per sample: the product of shape[1:].
  int64_t sample_size = 0;
};

// A layer whose weight can be quantized: a Gemm, MatMul, Conv or
// ConvTranspose whose weight input is a parameter (directly or through
// Identity/Dropout), an RNN, LSTM or GRU whose input weight W is (channel
// axis 1, the gate rows), the recurrent weight R of such a node (a layer of
// its own, "<node>/R" when the exporter named it generically: channel axis
// 1, quantize_input false, as no LayerInputHook sees the hidden state it
// multiplies), or an embedding: a
// Gather along axis 0 whose data (input 0) is a parameter and whose indices
// are computed at run time (channel axis 0, the rows; no MACs). A weight read
// by several such nodes of one kind (tied, or de-duplicated by the exporter
// into Identity nodes) is one layer: one bit-width, every node reading the
// same quantized weight, MACs summed over the nodes, and each node's data
// input hooked as the layer's. A reader of another kind (an embedding tied
// to an output projection) reads the same quantized weight but is not one of
// the layer's nodes.
struct QuantizableLayer {
  // The weight initializer's name, e.g. "fc1.weight"; the node's name (e.g.
  // "/layers.0/linear1/MatMul") when the exporter named the initializer
  // generically ("onnx::MatMul_123"). params()[weight_param].name is the
  // initializer's.
  std::string name;
  std::string node_name;  // the ONNX node's name (may be empty)
  // Every node reading the weight, in execution order (node_names[0] is
  // node_name); more than one for a tied weight.
  std::vector<std::string> node_names;
  // "Gemm", "MatMul", "Conv", "ConvTranspose", "RNN", "LSTM", "GRU", "Gather"
  std::string op_type;
  int weight_param = -1;  // index into Model::params()
  // Axis of the weight that indexes output channels: 0 (Conv, Gemm with
  // transB, Gather's rows), 1 (ConvTranspose) or the last (MatMul, Gemm).
  int channel_axis = 0;
  int64_t num_weights = 0;
  // Multiply-accumulates per sample, from the shapes inferred at import
  // (output elements per sample x weights per output channel; RNN/LSTM/GRU:
  // time steps x weights), summed over node_names. 0 for an embedding, which
  // only copies rows.
  int64_t macs = 0;
  // Whether the layer's data input (input 0) is an activation a
  // LayerInputHook transforms. False for an embedding: its input 0 is the
  // table (the weight) and its other input the ids, neither an activation;
  // Forward never calls the hook for it.
  bool quantize_input = true;
};

// Transforms the data input (input 0) of quantizable layers (those with
// quantize_input) as Forward and
// Backward run: activation fake quantization, or observers that only look.
// Forward and Backward call it from the calling thread only, once per node of
// the layer (QuantizableLayer::node_names; several for a tied weight, with
// the same `layer`), in execution order (Backward: in reverse).
class LayerInputHook {
 public:
  virtual ~LayerInputHook() = default;
  // `x` is the data input of quantizable layer `layer` (index into
  // Model::quantizable_layers()). Either return false (the layer reads `x`),
  // or write the value the layer should read into `*out` (already shaped
  // like `x`) and return true. An error (e.g. `x` is not finite, so no
  // quantization grid fits it) ends the Forward call, which returns it with
  // the node named.
  virtual absl::StatusOr<bool> Forward(int layer, const Tensor& x,
                                       Tensor* out) = 0;
  // For a layer whose Forward returned true: `grad` holds dLoss/d(out) and
  // must become dLoss/dx in place (for fake quantization, the
  // straight-through estimator: zero where x was clamped).
  virtual void Backward(int layer, const Tensor& x, Tensor* grad) const = 0;
};

// Activations kept by Forward for Backward. Opaque to callers; reusable
// across calls (buffers are recycled).
struct ForwardTrace {
  std::vector<Tensor> values;  // one per graph value slot
  // Per node reading a quantizable layer's weight: what a LayerInputHook
  // made of its input, and whether it did.
  std::vector<Tensor> layer_inputs;
  std::vector<bool> hooked;
};

class Model {
 public:
  // Parses a serialized ONNX ModelProto and validates it: first the proto's
  // structure (ValidateModel, engine/validate.h), then the import. Errors are
  // INVALID_ARGUMENT with a message naming the problem: not an ONNX model, an
  // unsupported operator ("unsupported operator 'Foo' (node 'n')"), an
  // unsupported attribute value, a cycle, a missing input, a graph input
  // that is not float, int64 or int32, or no graph input; or
  // RESOURCE_EXHAUSTED for a model over ModelLimits, a graph input or a node
  // output that would hold more than 2^28 values per sample, node outputs
  // computed at run time that together would hold more than 2^28 values per
  // sample (Forward keeps them all), constants folded at import holding more
  // than 2^28 values together, or a Conv or pooling window over its limits
  // (engine/ops.h).
  //
  // Sub-graphs that only compute constants or shapes (Shape, Gather, Slice,
  // Concat, Cast, Range, int64 arithmetic, ... as exporters emit them) are
  // evaluated at import. Dim 0 of the graph input is the batch, and the model
  // runs at any batch: where a multiple of the batch size flows into a shape
  // (e.g. `x.view(x.size(0), -1)`, attention's `view(T, batch * heads, -1)`,
  // a class token expanded or repeated to the batch, or a Reshape to the
  // example batch spelled out when the input declares a fixed batch),
  // Reshape, Expand and Tile re-read the batch at run time from an input that
  // carries it (or from the graph input). A shape computation that depends on
  // the batch in any other way (batch + 1, batch squared, a tensor shaped by
  // the batch) is an INVALID_ARGUMENT naming the node ("shape computation
  // depends on the batch size ..."), never a constant folded for one batch.
  // A graph that only
  // imports at the fixed batch its input declares (e.g. a Reshape to a
  // literal shape holding that batch's element count) runs at that batch
  // only: Forward at other batches is an INVALID_ARGUMENT.
  static absl::StatusOr<std::unique_ptr<Model>> FromOnnxBytes(
      absl::string_view bytes);
  // Reads `path` and calls FromOnnxBytes; file errors name the path.
  static absl::StatusOr<std::unique_ptr<Model>> FromOnnxFile(
      const std::string& path);

  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // The graph inputs that are not initializers, in graph order.
  //
  // Packed inputs: Forward takes ONE tensor. For a model with one graph
  // input it is that input, [batch, shape[1:]...] (input_shape()). For a
  // model with several (ids and an attention mask) it is [batch, D]: each
  // sample's inputs flattened and concatenated in graph-input order, D the
  // sum of their sample_size; Forward unpacks it into the graph inputs.
  // Integer inputs are carried as floats (GraphInput).
  const std::vector<GraphInput>& inputs() const;
  // The first graph input's name; the packed shape Forward takes (see
  // inputs()); dim 0 is the batch (reported as -1 when symbolic).
  const std::string& input_name() const;
  const Shape& input_shape() const;
  // Whether any graph input holds integers (ids): such inputs are not
  // normalised.
  bool has_integer_inputs() const;
  // > 0: the batch the graph was exported for, when its shapes hold only at
  // that batch (see FromOnnxBytes; Forward refuses any other); -1 when the
  // model runs at any batch.
  int64_t fixed_batch() const;
  // The first graph output; its shape for a batch of one, e.g. {1, 10}.
  const std::string& output_name() const;
  const Shape& output_shape() const;

  // The trainable float initializers, in graph order, and their values as
  // stored in the file.
  const std::vector<ParamInfo>& params() const;
  const std::vector<Tensor>& initial_params() const;
  const std::vector<QuantizableLayer>& quantizable_layers() const;

  // Runs the graph on `input` ([batch, ...] matching input_shape except the
  // batch, see FromOnnxBytes and inputs()) with `params` (one per params(),
  // same shapes; borrowed for the call). Returns the first graph output. When
  // `trace` is non-null it keeps what Backward needs. INVALID_ARGUMENT on a
  // shape mismatch, and naming the node for an index outside its table (a
  // Gather on token ids beyond the vocabulary; such errors, which depend on the
  // input's values, carry the payload IsInputValueError looks for). `hook`
  // (optional, borrowed for the call) transforms the inputs of quantizable
  // layers; its errors are returned prefixed with the node ("node 'fc2' (Gemm):
  // ...").
  absl::StatusOr<Tensor> Forward(const Tensor& input,
                                 absl::Span<const Tensor* const> params,
                                 ForwardTrace* trace,
                                 LayerInputHook* hook = nullptr) const;

  // Diagnoses an overflowed forward pass: runs `input` with `params` (no
  // hook) and names the first node, in execution order, whose output holds a
  // NaN or an infinity ("node 'fc0' (Gemm)"); empty when every value is
  // finite or the pass fails. Costs a Forward with a trace: for error paths.
  std::string FirstNonFiniteNode(const Tensor& input,
                                 absl::Span<const Tensor* const> params) const;

  // Nodes in execution order, and the position of the first node that reads
  // parameter `param` (0 <= param < params().size()) directly: every value
  // Forward computes before that node is independent of the parameter.
  // num_nodes() when no node reads it.
  int num_nodes() const;
  int FirstNodeReading(int param) const;

  // Re-runs nodes [first_node, num_nodes()) of the Forward that last filled
  // `trace` (required), with `params`, and returns the graph output. The
  // caller guarantees that every parameter read by a node before first_node
  // has the value it had in that Forward (and that `hook` transforms those
  // nodes' inputs as it did): the prefix is reused, not recomputed. Values
  // from first_node on are overwritten, so callers re-running several
  // variants of one trace go from the latest first_node to the earliest.
  // The result and the trace are those of a full Forward with `params`.
  // INVALID_ARGUMENT for first_node outside 0..num_nodes() or a trace not
  // filled by Forward of this model.
  absl::StatusOr<Tensor> ForwardFrom(int first_node,
                                     absl::Span<const Tensor* const> params,
                                     ForwardTrace* trace,
                                     LayerInputHook* hook = nullptr) const;

  // Back-propagates `grad_output` (dLoss/dOutput, shaped like the output of
  // the Forward that filled `trace`). Resizes `param_grads` to params().size()
  // and writes dLoss/dParam for every parameter. `params` must be the same
  // values the Forward call used, and `hook` the same hook (required when
  // Forward's hook transformed any input; INVALID_ARGUMENT otherwise).
  // INVALID_ARGUMENT naming the node when a parameter's gradient would flow
  // through an operator without one (ArgMax).
  absl::Status Backward(const ForwardTrace& trace,
                        absl::Span<const Tensor* const> params,
                        const Tensor& grad_output,
                        std::vector<Tensor>* param_grads,
                        const LayerInputHook* hook = nullptr) const;

  struct Impl;

 private:
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Whether `status` is a Forward error caused by the input's values (an
// index outside a Gather's table) rather than by the model or the shapes:
// the input was wrong, not the model. Survives Annotate.
bool IsInputValueError(const absl::Status& status);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_MODEL_H_
