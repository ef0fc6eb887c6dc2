// CostModel: what a bit-width policy costs. A policy assigns weight bits to
// each quantizable layer (in the model's layer order); every other parameter
// (biases, non-quantized weights) stays in FP32. Per layer l with n_l weights
// and MAC_l multiply-accumulates per sample (docs/design.md §1.7):
//   size = Σ n_l·b_l bits (+ 32 bits per other parameter),
//   BOPs = Σ MAC_l·b_l·b_a, b_a the activation bits (32 when left in float).
// Immutable; thread-safe.
#ifndef MIXQ_SEARCH_COST_MODEL_H_
#define MIXQ_SEARCH_COST_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/model.h"

namespace mixq::search {

// One bit-width per quantizable layer.
using Policy = std::vector<int>;

// "8/6/4/4".
std::string PolicyToString(const Policy& policy);

// What one policy costs, in every unit a budget can be given in.
struct PolicyCost {
  double avg_bits = 0;       // Σ n_l·b_l / Σ n_l
  double size_bytes = 0;     // the whole model, other parameters in FP32
  double size_fraction = 0;  // size_bytes / the FP32 size
  int64_t bops = 0;          // Σ MAC_l·b_l·b_a, per sample
};

class CostModel {
 public:
  struct Layer {
    int64_t weights = 0;  // n_l
    int64_t macs = 0;     // MAC_l per sample
  };

  // `layers` in model order; `total_params` counts every float parameter of
  // the model (layers included).
  CostModel(std::vector<Layer> layers, int64_t total_params);
  static CostModel ForModel(const engine::Model& model);

  int num_layers() const { return static_cast<int>(layers_.size()); }
  int64_t layer_weights(int l) const { return layers_[l].weights; }
  int64_t layer_macs(int l) const { return layers_[l].macs; }
  int64_t quantizable_weights() const { return quantizable_weights_; }
  int64_t total_params() const { return total_params_; }

  // Bytes of layer l's weights at `bits`: n_l·bits/8.
  double LayerBytes(int l, int bits) const;

  // The methods below take a policy with one entry per layer (checked).
  // Σ n_l·b_l / Σ n_l over the quantizable layers.
  double AvgBits(const Policy& policy) const;
  // Bytes of the model: quantized layers at their bits, the rest in FP32.
  double SizeBytes(const Policy& policy) const;
  // Bytes of the model with everything in FP32.
  double Fp32SizeBytes() const;
  // Σ MAC_l·b_l·activation_bits (exact). `activation_bits` is positive; 32
  // (kFloatBits) when activations stay in float.
  int64_t Bops(const Policy& policy, int activation_bits) const;
  // All of the above for `policy`.
  PolicyCost Cost(const Policy& policy, int activation_bits) const;

 private:
  std::vector<Layer> layers_;
  int64_t total_params_;
  int64_t quantizable_weights_;
};

// The cost a final policy must meet: an upper limit in one unit.
struct Budget {
  enum class Kind {
    kAvgBits,       // average weight bits
    kSizeFraction,  // fraction of the FP32 size, in (0, 1]
    kBytes,         // absolute model size in bytes
    kBops,          // bit operations per sample
  };
  Kind kind = Kind::kAvgBits;
  double value = 0;  // the limit, in the unit of `kind`

  // `cost` in this budget's unit.
  double Measure(const PolicyCost& cost) const;
  // Measure(cost) <= value (with a relative slack of 1e-9 so that a policy
  // landing exactly on the budget is not rejected by float rounding).
  bool IsMet(const PolicyCost& cost) const;
  // Every budget unit is additive over layers:
  //   Measure(cost.Cost(policy, a)) = FixedTerm(cost) + Σ_l LayerTerm(cost, l,
  //   b_l, a)
  // (up to float rounding), which lets allocation treat the budget as a
  // knapsack capacity: value − FixedTerm.
  double LayerTerm(const CostModel& cost, int layer, int bits,
                   int activation_bits) const;
  // What the parameters outside the quantizable layers cost (size budgets);
  // 0 for kAvgBits and kBops.
  double FixedTerm(const CostModel& cost) const;
  // The budget as an upper limit on bytes (+inf for kAvgBits and kBops).
  double MaxSizeBytes(const CostModel& cost) const;
  // E.g. "4 average weight bits", "0.25 of the FP32 size", "50000 bytes",
  // "1.2e+09 BOPs".
  std::string ToString() const;
};

// INVALID_ARGUMENT unless `budget` is met by `lowest` (every layer at its
// lowest candidate bits) with activations at `activation_bits`. The message
// gives the lowest reachable cost in the budget's unit first, then in the
// other units.
absl::Status CheckBudgetReachable(const CostModel& cost, const Budget& budget,
                                  const Policy& lowest, int activation_bits);

}  // namespace mixq::search

#endif  // MIXQ_SEARCH_COST_MODEL_H_
