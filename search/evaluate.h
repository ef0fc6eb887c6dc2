// Evaluating a bit-width policy without a search: the three classic modes of
// docs/design.md §1.5, against the FP32 model on the same data.
//   dynamic  weights quantized; activations quantized with each batch's own
//            range (as runtimes do on the fly)
//   static   weights quantized; activation ranges calibrated on `calib`
//            (post-training static)
//   qat      `finetune_steps` of quantization-aware training on `calib`,
//            then evaluated like static (ranges tracked while training)
// Activations stay in float in every mode when activation bits are 32.
#ifndef MIXQ_SEARCH_EVALUATE_H_
#define MIXQ_SEARCH_EVALUATE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/model.h"
#include "search/cost_model.h"
#include "search/qat.h"

namespace mixq::search {

enum class EvalMode { kDynamic, kStatic, kQat };

// "dynamic", "static", "qat" (INVALID_ARGUMENT otherwise, naming the value).
absl::StatusOr<EvalMode> ParseEvalMode(absl::string_view name);
absl::string_view EvalModeName(EvalMode mode);

struct PolicyEvalOptions {
  EvalMode mode = EvalMode::kStatic;
  QuantOptions quant;        // activations.dynamic is set from `mode`
  int finetune_steps = 100;  // qat only
  float learning_rate = 1e-4f;
  int batch_size = 64;
  uint64_t seed = 0;
};

struct PolicyEvaluation {
  Evaluation fp32;       // the model as imported, on `eval`
  Evaluation quantized;  // under the policy, on `eval`
  PolicyCost cost;       // of the policy (BOPs with the activation bits)
};

// Evaluates `policy` (one entry per quantizable layer: 1..8, or 32 = float)
// on `eval`, calibrating/fine-tuning on `calib` as the mode says.
// INVALID_ARGUMENT for a policy of the wrong length or bits, bad options, or
// empty data sets (calib may be empty in dynamic mode).
absl::StatusOr<PolicyEvaluation> EvaluatePolicy(
    const engine::Model& model, const Policy& policy, const LabeledData& calib,
    const LabeledData& eval, const PolicyEvalOptions& options);

}  // namespace mixq::search

#endif  // MIXQ_SEARCH_EVALUATE_H_
