// Raising an ONNX model's default-domain opset to 21 without onnx's version
// converter, which in Debian's onnx 1.12 stops at opset 17 (its checker does
// not know opsets 18+ either). The QDQ exporter needs opset 21 for 4-bit
// weights (search/qdq_export.h): it converts and checks at 13 or later, then
// calls this.
//
// Only operators known to mean the same at 21, or rewritable to, are
// accepted: every operator mixq's engine runs or folds (engine/ops*.cc,
// engine/constant_folding.cc), plus Split, Resize and the whole Reduce family.
// Rewritten:
//  - ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceSumSquare, ReduceL1,
//    ReduceL2, ReduceLogSum, ReduceLogSumExp (opset 18): the `axes`
//    attribute becomes input 1, a new int64 initializer. (ReduceSum moved at
//    13 already.)
//  - Split (opset 18): without a `split` input, the number of equal parts is
//    the new attribute `num_outputs` (the node's output count).
// Accepted only in a form that kept its meaning:
//  - BatchNormalization in inference form (one output; the training outputs
//    changed at 14).
// The others keep their signature and meaning for what a model at opset
// 13..17 can give them: the attributes added since default to the old
// behaviour (Reshape `allowzero` 14, Shape `start`/`end` 15, Pad `axes`
// input 18, Resize `antialias`/`axes`/`keep_aspect_ratio_policy` 18,
// AveragePool `dilations` 19, Cast `saturate` 19, Quantize/DequantizeLinear
// `saturate` 19 and `output_dtype`/`block_size` 21), and the rest of the
// changes only add element types.
//
// Pure function; thread-safe.
#ifndef MIXQ_SEARCH_OPSET_RAISE_H_
#define MIXQ_SEARCH_OPSET_RAISE_H_

#include <cstdint>

#include "absl/status/status.h"

namespace onnx {
class ModelProto;
}  // namespace onnx

namespace mixq::search {

// The opset this raises to, the IR version that goes with it, and the
// oldest opset it raises from.
inline constexpr int64_t kOpset21 = 21;
inline constexpr int64_t kIrVersionOfOpset21 = 10;
inline constexpr int64_t kMinRaisableOpset = 13;

// Rewrites `model` to default-domain opset 21 as above and sets its IR
// version to at least kIrVersionOfOpset21; a model at opset 21 only gets the
// IR version. Nothing is checked beyond the operators: the caller checks the
// model before (onnx's checker cannot check the result). Errors, with
// `model` left unchanged:
//  - FAILED_PRECONDITION naming the operator and node for an operator not in
//    the list above, one of another domain, or a BatchNormalization with
//    training outputs; and for a model at an opset below kMinRaisableOpset or
//    above 21, or with no default-domain opset.
absl::Status RaiseToOpset21(onnx::ModelProto* model);

}  // namespace mixq::search

#endif  // MIXQ_SEARCH_OPSET_RAISE_H_
