// QDQ export: writes a quantized model as standard ONNX, in the
// QuantizeLinear/DequantizeLinear ("QDQ") form that ONNX Runtime, TensorRT
// and other int8 runtimes read. The exporter is mechanical: the caller
// supplies every integer, scale and zero point (see search/quantizer.h for
// the maths), and the model to rewrite (with BatchNormalization already
// folded into the Convs if that is wanted, engine/graph_rewrite.h). Pure
// functions; thread-safe.
//
// What the output holds:
//  - Each quantized weight W: an integer initializer "W_quantized"
//    (raw_data), "W_scale" (float; one per channel along `axis`, or a
//    scalar) and "W_zero_point" (same element type, the scale's shape), and
//    a DequantizeLinear node (with `axis` when per-channel) whose output is
//    named W, so W's consumers are unchanged. The float W is removed (from
//    the initializers and, where listed, the graph inputs). The element
//    type: a weight of more than kMaxPackedWeightBits bits is int8
//    (is_signed) or uint8; one of kMaxPackedWeightBits or fewer ("4-bit",
//    also 1..3 bits) is INT4 (data type 22) or UINT4 (21), two values per
//    byte, low nibble first, raw_data of ceil(n / 2) bytes (engine/int4.h),
//    so a 4-bit weight takes half the bytes of an 8-bit one.
//  - Each quantized activation: QuantizeLinear → DequantizeLinear inserted on
//    one input of one node only (other consumers of the same value still read
//    the float value). QuantizeLinear saturates to the container (0..255 or
//    −128..127), so when [qmin, qmax] is narrower (fewer bits), a Clip to
//    [s·(qmin − z), s·(qmax − z)] precedes it.
//  - Float initializers overwritten with the caller's values (fine-tuned
//    biases and other trained parameters).
//
// Rounding: QuantizeLinear divides by the scale and rounds half to even, and
// so does mixq's activation fake quantization (search/quantizer.h,
// Rounding::kHalfToEven), s·(clamp(round_half_even(x / s) + z, qmin, qmax) −
// z): the exported model computes exactly what the fake-quantized model did.
// Weights are exported as the caller's integers, so the rule they were
// rounded by does not matter here.
//
// Opsets: QuantizeLinear/DequantizeLinear need opset 10 of the default
// domain, per-channel DequantizeLinear (`axis`) opset 13. When the model
// imports a lower opset, the exporter raises it with onnx's own version
// converter (which rewrites operators whose definition changed between the
// opsets). The converter refuses graphs it cannot convert safely (e.g. a
// Softmax whose input shape is unknown): the export then fails with
// FAILED_PRECONDITION naming both opsets; re-export the model at opset 13 or
// later, or quantize its weights per tensor (opset 10 suffices). Clip takes
// its bounds as inputs from opset 11, as attributes before. A model without
// 4-bit weights keeps its opset (if high enough) and IR version.
//
// 4-bit weights: INT4/UINT4 need opset 21 and IR version 10, which Debian's
// onnx 1.12 (converter and checker) does not know. So the exporter converts
// the model to opset 13 or later as above, rewrites it with the 4-bit
// weights in int8/uint8 containers, runs onnx's checker on that graph, then
// packs the weights and raises the opset to 21 itself (search/opset_raise.h:
// the Reduce family's `axes` attribute becomes an input, Split gets
// `num_outputs`) and sets IR version 10 (a higher one stays). onnx's checker
// cannot check the opset-21 output; mixq's own validator (engine/validate.h)
// checks it instead, and the input too. A model holding an operator the
// raise does not know to be safe fails with FAILED_PRECONDITION naming the
// operator and node (no silent fallback to int8 containers): quantize such a
// model at 5 bits or more. Activation QuantizeLinear/DequantizeLinear stay
// uint8/int8 in either case.
#ifndef MIXQ_SEARCH_QDQ_EXPORT_H_
#define MIXQ_SEARCH_QDQ_EXPORT_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/tensor.h"

namespace mixq::search {

// Weights of at most this many bits are stored in 4-bit containers.
inline constexpr int kMaxPackedWeightBits = 4;
// QdqWeight::bits ranges over 1..kMaxQdqWeightBits.
inline constexpr int kMaxQdqWeightBits = 8;

// One quantized weight initializer: its integers and grid. The weight the
// exported model computes is scale[c] · (q − zero_point[c]), c the index
// along `axis` (or 0).
struct QdqWeight {
  std::string initializer;          // the float initializer to replace
  std::vector<int32_t> q;           // C order; as many as the initializer
  std::vector<float> scale;         // dim(axis) entries, or one (axis -1)
  std::vector<int32_t> zero_point;  // as many as `scale`
  int axis = -1;                    // per-channel axis of the weight, or -1
  bool is_signed = true;            // int8/int4 container; false: uint8/uint4
  // The grid's bit width: 1..kMaxPackedWeightBits picks the 4-bit container
  // (INT4/UINT4, opset 21), up to kMaxQdqWeightBits the 8-bit one.
  int bits = 8;
};

// Fake quantization of one input of one node (for a Gemm, MatMul or Conv
// layer: input 0, its data input):
//   x ↦ scale · (clamp(round_half_even(x / scale) + zero_point, qmin, qmax)
//                − zero_point).
struct QdqActivation {
  std::string node_name;  // the consuming node; must be unique in the graph
  int input_index = 0;
  float scale = 1.0f;
  int32_t zero_point = 0;
  int32_t qmin = 0;  // within the container (e.g. 0..15 for 4-bit uint8)
  int32_t qmax = 255;
  bool is_signed = false;  // int8 container; false: uint8
};

struct QdqExportSpec {
  std::vector<QdqWeight> weights;
  std::vector<QdqActivation> activations;
  // Float initializers to overwrite (fine-tuned biases, other trained
  // parameters), by name; each tensor's shape must equal the initializer's.
  std::vector<std::pair<std::string, engine::Tensor>> float_updates;
};

// Rewrites `onnx_bytes` (a serialized ONNX ModelProto) into QDQ form as
// described above and returns the serialized result, which passes
// CheckOnnxModel when no weight is 4-bit and engine::ValidateModel when one
// is. Errors:
//  - INVALID_ARGUMENT: not an ONNX model, or one the ONNX checker rejects;
//    external data; a spec item that does not fit the model, named in the
//    message (unknown or non-float initializer, a node name that is unknown
//    or not unique, an input index out of range, an element count, a scale
//    count that does not match dim(axis), an axis out of range, a scale that
//    is not positive and finite, bits outside 1..kMaxQdqWeightBits, an
//    integer or zero point outside the container (int4: −8..7, uint4:
//    0..15), qmin > qmax, an item listed twice, non-finite float updates);
//    with 4-bit weights also what engine::ValidateModel refuses in the input
//    (its code: INVALID_ARGUMENT, or RESOURCE_EXHAUSTED over its limits).
//  - FAILED_PRECONDITION: the model's opset is too low and onnx's version
//    converter cannot raise it (see above); with 4-bit weights, an operator
//    the raise to opset 21 does not know to be safe (named).
//  - INTERNAL: the rewritten model fails the ONNX checker, or the packed
//    opset-21 model mixq's validator (a bug in mixq).
absl::StatusOr<std::string> ExportQdq(absl::string_view onnx_bytes,
                                      const QdqExportSpec& spec);

// Runs onnx::checker::check_model (libonnx; no shape inference, which can
// crash on crafted models) on a serialized ModelProto. INVALID_ARGUMENT with
// the checker's message when it rejects the model or the bytes do not parse.
// The checker is not a full validator (docs/design.md §8.4).
absl::Status CheckOnnxModel(absl::string_view onnx_bytes);

}  // namespace mixq::search

#endif  // MIXQ_SEARCH_QDQ_EXPORT_H_
