#include "search/evaluate.h"

#include "absl/strings/str_cat.h"
#include "util/status_macros.h"

namespace mixq::search {

absl::StatusOr<EvalMode> ParseEvalMode(absl::string_view name) {
  if (name == "dynamic") return EvalMode::kDynamic;
  if (name == "static") return EvalMode::kStatic;
  if (name == "qat") return EvalMode::kQat;
  return absl::InvalidArgumentError(absl::StrCat(
      "evaluation mode '", name, "' is not one of dynamic, static, qat"));
}

absl::string_view EvalModeName(EvalMode mode) {
  switch (mode) {
    case EvalMode::kDynamic:
      return "dynamic";
    case EvalMode::kStatic:
      return "static";
    case EvalMode::kQat:
      return "qat";
  }
  return "?";
}

absl::StatusOr<PolicyEvaluation> EvaluatePolicy(
    const engine::Model& model, const Policy& policy, const LabeledData& calib,
    const LabeledData& eval, const PolicyEvalOptions& options) {
  const size_t num_layers = model.quantizable_layers().size();
  if (policy.size() != num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the policy has ", policy.size(), " entries; the model has ",
        num_layers, " quantizable layers"));
  }
  for (size_t l = 0; l < num_layers; ++l) {
    if (policy[l] != kFloatBits &&
        (policy[l] < kMinWeightBits || policy[l] > kMaxWeightBits)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer '", model.quantizable_layers()[l].name, "' has bits ",
          policy[l], "; expected 1..8 or 32 (float)"));
    }
  }
  QuantOptions quant = options.quant;
  quant.activations.dynamic = options.mode == EvalMode::kDynamic;
  MIXQ_RETURN_IF_ERROR(ValidateQuantOptions(quant));
  if (eval.size() == 0) {
    return absl::InvalidArgumentError("the evaluation set is empty");
  }
  if (options.mode != EvalMode::kDynamic && calib.size() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the calibration set is empty (",
                     EvalModeName(options.mode), " mode needs it)"));
  }
  if (options.mode == EvalMode::kQat &&
      (options.finetune_steps <= 0 || options.batch_size <= 0)) {
    return absl::InvalidArgumentError(
        "qat mode needs finetune_steps > 0 and batch_size > 0");
  }

  engine::AdamOptions adam;
  adam.learning_rate = options.learning_rate;
  PolicyEvaluation result;
  {
    QuantOptions float_options;
    float_options.activations.bits = kFloatBits;
    QatSession fp32(model, adam, options.batch_size, options.seed,
                    float_options);
    MIXQ_ASSIGN_OR_RETURN(result.fp32,
                          fp32.Evaluate(Policy(num_layers, kFloatBits), eval));
  }
  QatSession session(model, adam, options.batch_size, options.seed, quant);
  if (options.mode == EvalMode::kStatic) {
    MIXQ_RETURN_IF_ERROR(session.Calibrate(policy, calib));
  } else if (options.mode == EvalMode::kQat) {
    MIXQ_RETURN_IF_ERROR(session.Calibrate(policy, calib));
    MIXQ_RETURN_IF_ERROR(
        session.FineTune(policy, calib, options.finetune_steps));
  }
  MIXQ_ASSIGN_OR_RETURN(result.quantized, session.Evaluate(policy, eval));
  const int activation_bits =
      quant.activations.enabled() ? quant.activations.bits : kFloatBits;
  result.cost = CostModel::ForModel(model).Cost(policy, activation_bits);
  return result;
}

}  // namespace mixq::search
