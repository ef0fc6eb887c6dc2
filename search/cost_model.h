// CostModel: what a bit-width policy costs. A policy assigns weight bits to
// each quantizable layer (in the model's layer order); every other parameter
// (biases, non-quantized weights) stays in FP32. Immutable; thread-safe.
#ifndef MIXQ_SEARCH_COST_MODEL_H_
#define MIXQ_SEARCH_COST_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/model.h"

namespace mixq::search {

// One bit-width per quantizable layer.
using Policy = std::vector<int>;

// "8/6/4/4".
std::string PolicyToString(const Policy& policy);

class CostModel {
 public:
  // `layer_weights[l]` is the weight count of layer l; `total_params` counts
  // every float parameter of the model (layers included).
  CostModel(std::vector<int64_t> layer_weights, int64_t total_params);
  static CostModel ForModel(const engine::Model& model);

  int num_layers() const { return static_cast<int>(layer_weights_.size()); }
  int64_t layer_weights(int l) const { return layer_weights_[l]; }
  int64_t quantizable_weights() const { return quantizable_weights_; }

  // Σ n_l·b_l / Σ n_l over the quantizable layers.
  double AvgBits(const Policy& policy) const;
  // Bytes of the model: quantized layers at their bits, the rest in FP32.
  double SizeBytes(const Policy& policy) const;
  // Bytes of the model with everything in FP32.
  double Fp32SizeBytes() const;

 private:
  std::vector<int64_t> layer_weights_;
  int64_t total_params_;
  int64_t quantizable_weights_;
};

// The cost a final policy must meet.
struct Budget {
  enum class Kind { kAvgBits, kSizeFraction };
  Kind kind = Kind::kAvgBits;
  double value = 0;  // average bits, or a fraction of the FP32 size

  bool IsMet(const CostModel& cost, const Policy& policy) const;
  // The budget as an upper limit on average bits / on bytes (the other unit
  // is unconstrained: +inf).
  double MaxAvgBits() const;
  double MaxSizeBytes(const CostModel& cost) const;
  std::string ToString() const;
};

// INVALID_ARGUMENT unless `budget` is met by `lowest` (every layer at its
// lowest candidate bits); the message gives the lowest reachable cost.
absl::Status CheckBudgetReachable(const CostModel& cost, const Budget& budget,
                                  const Policy& lowest);

}  // namespace mixq::search

#endif  // MIXQ_SEARCH_COST_MODEL_H_
