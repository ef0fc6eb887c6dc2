// From an FP32 ONNX model to a deployable quantized one: the steps shared by
// `mixq-quantize` (post-training static quantization) and the service's
// export of a searched, fine-tuned policy.
//
//   PrepareModel      BN folded into Conv/Gemm, every node named
//   QatSession        weights (maybe fine-tuned) and calibrated activations
//   ExportQuantized   QDQ ONNX + a per-layer report (bits, grids, costs)
#ifndef MIXQ_SEARCH_QUANTIZE_H_
#define MIXQ_SEARCH_QUANTIZE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/model.h"
#include "search/cost_model.h"
#include "search/qat.h"
#include "search/quantizer.h"

namespace mixq::search {

struct PreparedModel {
  std::string onnx;  // serialized; what the engine imports and export rewrites
  int folded_batch_norms = 0;
  std::vector<std::string> unfolded_batch_norms;  // "node: why"
};

// Folds BatchNormalization into the preceding Conv/Gemm (engine's
// FoldBatchNorm) and names unnamed nodes ("<op_type>_<index>", unique), so
// quantized layers can be addressed by node name on export. The model is
// validated first (engine/validate.h), so folding never reads what the
// validator refuses. Errors: ValidateModel's (INVALID_ARGUMENT, e.g. not an
// ONNX model; RESOURCE_EXHAUSTED over a limit).
absl::StatusOr<PreparedModel> PrepareModel(absl::string_view onnx_bytes);

// One layer of a quantized model.
struct QuantizedLayer {
  std::string name;       // weight initializer
  std::string node_name;  // the Conv/Gemm/MatMul node
  std::string op_type;
  int bits = kFloatBits;  // weight bits; kFloatBits = left in float
  QuantParams weight;     // when bits < kFloatBits
  bool activation_quantized = false;
  QuantParams activation;  // when activation_quantized
  int64_t num_weights = 0;
  int64_t macs = 0;       // per sample
  double size_bytes = 0;  // the weights at their bits
};

struct QuantizedModel {
  std::string onnx;  // QDQ form (search/qdq_export.h)
  std::vector<QuantizedLayer> layers;
  double avg_bits = 0;         // over the quantizable weights
  double size_bytes = 0;       // every parameter, quantized ones at their bits
  double fp32_size_bytes = 0;  // every parameter in FP32
  double bops = 0;             // Σ MACs · weight bits · activation bits
  int activation_bits = kFloatBits;
};

// Exports `session`'s current weights quantized under `policy` (one entry
// per quantizable layer of `model`) and its activation grids as QDQ ONNX.
// `prepared_onnx` must be the bytes `model` was imported from (PrepareModel's
// output). Activations must be calibrated (or dynamic: then only weights are
// exported, as runtimes quantize dynamic activations themselves).
// FAILED_PRECONDITION if static activations have no ranges yet; errors of
// ExportQdq otherwise.
absl::StatusOr<QuantizedModel> ExportQuantized(absl::string_view prepared_onnx,
                                               const engine::Model& model,
                                               const QatSession& session,
                                               const Policy& policy);

}  // namespace mixq::search

#endif  // MIXQ_SEARCH_QUANTIZE_H_
