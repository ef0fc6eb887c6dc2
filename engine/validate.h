// ValidateModel: mixq's own structural check of an untrusted ONNX model,
// run on the parsed protobuf before anything else reads it (onnx 1.12's
// checker is not one: it accepts negative or 2^62 dims, short raw_data,
// external-data paths and NaN weights). It reads nothing outside the proto,
// allocates nothing proportional to declared sizes, and its work is linear in
// the size of the proto.
//
// Thread-safety: a pure function; it may run concurrently.
#ifndef MIXQ_ENGINE_VALIDATE_H_
#define MIXQ_ENGINE_VALIDATE_H_

#include <cstdint>

#include "absl/status/status.h"

namespace onnx {
class ModelProto;
}  // namespace onnx

namespace mixq::engine {

// Resource limits of a model. The defaults admit real models of a few hundred
// MB (the largest tensor of VGG-16 has 103 M elements).
struct ModelLimits {
  int64_t max_nodes = 100'000;
  int64_t max_initializers = 100'000;
  // Per node; variadic operators (Concat, Sum) take many inputs.
  int64_t max_node_inputs = 10'000;
  int64_t max_node_outputs = 1'000;
  // Bytes of every name: values (graph inputs and outputs, initializers,
  // node outputs, value_info) and nodes. Names reach stored policies and RPC
  // replies (a quantizable layer is named by its weight), so they are
  // bounded like every other field a client sends.
  int64_t max_name_bytes = 4'096;
  // Of every tensor and declared shape.
  int64_t max_rank = 16;
  // Of a declared shape (graph inputs and outputs, value_info).
  int64_t max_dim = int64_t{1} << 31;
  // Of a tensor holding data (initializer, Constant or attribute tensor):
  // elements, and the product of its non-zero dims.
  int64_t max_tensor_elements = int64_t{1} << 28;
  // Of all tensors holding data together, in their element type's bytes.
  int64_t max_total_tensor_bytes = int64_t{1} << 30;
};

// OK if `model` is well-formed and within `limits`. Checks:
//  - the model: ir_version >= 3, one opset_import entry for the default
//    domain ("" or "ai.onnx") with a positive version, a graph, no local
//    functions;
//  - the graph: node and initializer counts; no sparse initializers; every
//    initializer, graph input, graph output and value_info named, none
//    listed twice; every node with an op_type in the default domain, within
//    the input/output limits, producing at least one named value, with named,
//    distinct attributes, finite float attributes (alpha, beta, epsilon,
//    Clip bounds, ...; Constant's value_float(s) excepted: they are data), and
//    no subgraph (If/Loop/Scan bodies) or sparse tensor attributes; every value
//    defined once (graph input or initializer, or one node output: two nodes,
//    or a node and an initializer or graph input, writing one name is an
//    error); every node input and graph output defined; no cycle;
//  - every tensor holding data (initializers, tensors in node attributes such
//    as Constant's value): a known element type, dims >= 0, no external or
//    segmented data (rejected outright: mixq never reads files a model
//    names), data in exactly one field — raw_data, or the typed field of its
//    element type — with exactly the element count its dims give (the
//    product computed without int64 overflow); INT4 and UINT4 (data types 22
//    and 21, engine/int4.h) pack two values per byte, so they need exactly
//    ceil(n / 2) bytes of raw_data or ceil(n / 2) int32_data entries, each a
//    byte (0..255); float initializers (FLOAT,
//    DOUBLE, FLOAT16, BFLOAT16, complex) hold no NaN or infinity;
//  - every value and node name at most max_name_bytes;
//  - every declared shape (graph inputs and outputs, value_info): known
//    element type, dims >= 0 and <= max_dim, product without overflow.
// Errors name the model field, tensor, node or value:
//  - INVALID_ARGUMENT for a malformed model, e.g. "initializer 'w' of shape
//    [2, 2] needs 4 values, has 3 (raw_data of 12 bytes)", "unsupported
//    operator 'com.x.Op' (node 'n'): ...", "value 'y' is defined more than
//    once: ...", "the graph has a cycle (through node 'n')", "initializer
//    'w' of shape [3] needs 3 values, two per byte: raw_data of 2 bytes, has
//    3 (INT4)", "attribute 'alpha' of node 'fc' (Gemm) is inf; float
//    attributes must be finite". A tensor whose
//    dims overflow int64 cannot match its data: INVALID_ARGUMENT "... is too
//    large ...".
//  - RESOURCE_EXHAUSTED for a well-formed model over a limit, e.g. "the graph
//    has 200000 nodes; the limit is 100000 (ModelLimits::max_nodes)".
absl::Status ValidateModel(const onnx::ModelProto& model,
                           const ModelLimits& limits = {});

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_VALIDATE_H_
