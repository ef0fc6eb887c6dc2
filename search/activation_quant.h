// Activation quantization of the inputs of quantized layers, as a deployed
// integer model computes it: each quantized layer reads its input through a
// per-tensor QuantizeLinear -> DequantizeLinear pair. Ranges come from
// observers run over calibration data (post-training static), from each batch
// itself (dynamic), and track the data by a moving average while fine-tuning
// (quantization-aware training). Not thread-safe: one per QatSession.
#ifndef MIXQ_SEARCH_ACTIVATION_QUANT_H_
#define MIXQ_SEARCH_ACTIVATION_QUANT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/model.h"
#include "engine/tensor.h"
#include "search/observer.h"
#include "search/quantizer.h"

namespace mixq::search {

// How the inputs of quantized layers are treated.
struct ActivationOptions {
  // 2..8, or kFloatBits (32): activations stay in float.
  int bits = 8;
  // Asymmetric (uint8, zero point from the range) by default: after a ReLU
  // the range is [0, max] and every level is used.
  QuantScheme scheme = QuantScheme::kAsymmetric;
  // Ranges from each batch's own min/max instead of calibrated ones.
  bool dynamic = false;
  // The calibration observer: "minmax", "moving_average" or
  // "percentile:<p>" (see search/observer.h).
  std::string observer = "minmax";
  // While fine-tuning, each range moves toward the batch's min/max by this
  // fraction (PyTorch's moving-average observer default).
  float momentum = 0.01f;

  bool enabled() const { return bits < kFloatBits; }
};

// INVALID_ARGUMENT naming the field ("activation bits", "observer") when
// `options` is unusable.
absl::Status ValidateActivationOptions(const ActivationOptions& options);

class ActivationQuantizer : public engine::LayerInputHook {
 public:
  enum class Mode {
    kOff,       // layers read their float inputs
    kObserve,   // observers record the inputs; nothing changes
    kQuantize,  // fake quantization with the current ranges
    kTrain,     // moving-average range update, then fake quantization
  };

  // `num_layers` quantizable layers, all reading activations; `options`
  // must be valid.
  ActivationQuantizer(int num_layers, const ActivationOptions& options);
  // The quantizable layers of a model: those without quantize_input (an
  // embedding, whose input 0 is its table) never have their input quantized
  // nor need a range.
  ActivationQuantizer(const std::vector<engine::QuantizableLayer>& layers,
                      const ActivationOptions& options);

  // Layers whose weights stay in float (bits >= 32 in the policy) keep their
  // inputs in float too, as do layers without an activation input. Call
  // before every Forward with the policy used.
  void SetPolicy(const std::vector<int>& weight_bits);
  void set_mode(Mode mode) { mode_ = mode; }
  // Changes the activation bits (2..8; activations must be enabled) and
  // re-derives every grid from its kept range.
  void SetBits(int bits);
  int bits() const { return options_.bits; }
  Mode mode() const { return mode_; }

  // Fresh observers for every layer (then run forward passes in kObserve).
  void ResetObservers();
  // Ranges from the observers. FAILED_PRECONDITION if a quantized layer's
  // observer saw nothing; INVALID_ARGUMENT (engine/finite.h) if a range is
  // not finite.
  absl::Status FinishCalibration();
  // True once every quantized layer has a range (calibrated, or dynamic).
  bool ready() const;

  // The current grid of layer `l` (per-tensor), when it has a range.
  const QuantParams* params(int layer) const;

  // What a checkpoint keeps: the bits and each layer's range (min/max
  // meaningful where has_range).
  struct State {
    int bits = 0;
    std::vector<bool> has_range;
    std::vector<float> min, max;
  };
  State state() const;
  // Restores a state() of a quantizer with the same layers and options
  // (grids re-derived). INVALID_ARGUMENT if it does not fit or holds a range
  // that is not finite and ordered.
  absl::Status Restore(const State& state);

  // In every mode but kOff, a quantized layer's input must be finite: NaN or
  // infinity there means the forward pass overflowed, and no grid fits it.
  // INVALID_ARGUMENT (engine/finite.h) then, never an abort.
  absl::StatusOr<bool> Forward(int layer, const engine::Tensor& x,
                               engine::Tensor* out) override;
  void Backward(int layer, const engine::Tensor& x,
                engine::Tensor* grad) const override;

 private:
  bool Active(int layer) const;
  // INVALID_ARGUMENT naming `layer` unless min and max are finite and
  // ordered.
  absl::Status SetRange(int layer, float min, float max);

  ActivationOptions options_;
  Mode mode_ = Mode::kOff;
  std::vector<bool> has_input_;  // per layer: reads an activation
  std::vector<bool> quantized_;  // per layer, from the policy
  std::vector<std::unique_ptr<Observer>> observers_;
  std::vector<bool> has_range_;
  std::vector<float> min_, max_;
  std::vector<QuantParams> params_;
};

}  // namespace mixq::search

#endif  // MIXQ_SEARCH_ACTIVATION_QUANT_H_
