#include "search/cost_model.h"

#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "util/check.h"

namespace mixq::search {
namespace {

constexpr double kBitsPerByte = 8.0;
constexpr double kFp32Bits = 32.0;
// Budgets compare with a little slack so that a policy landing exactly on
// the budget is not rejected by float rounding.
constexpr double kBudgetSlack = 1e-9;
constexpr int64_t kMaxInt64 = std::numeric_limits<int64_t>::max();

// a·b, saturating at INT64_MAX (operands are non-negative). MAC counts come
// from a user's model, and an absurd one must not wrap around to a small
// cost that meets any budget.
int64_t SaturatingMul(int64_t a, int64_t b) {
  int64_t product;
  return __builtin_mul_overflow(a, b, &product) ? kMaxInt64 : product;
}

int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t sum;
  return __builtin_add_overflow(a, b, &sum) ? kMaxInt64 : sum;
}

}  // namespace

std::string PolicyToString(const Policy& policy) {
  return absl::StrJoin(policy, "/");
}

CostModel::CostModel(std::vector<Layer> layers, int64_t total_params)
    : layers_(std::move(layers)),
      total_params_(total_params),
      quantizable_weights_(std::accumulate(layers_.begin(), layers_.end(),
                                           int64_t{0},
                                           [](int64_t sum, const Layer& layer) {
                                             return sum + layer.weights;
                                           })) {
  MIXQ_CHECK(quantizable_weights_ <= total_params_);
  for (const Layer& layer : layers_)
    MIXQ_CHECK(layer.weights >= 0 && layer.macs >= 0);
}

CostModel CostModel::ForModel(const engine::Model& model) {
  std::vector<Layer> layers;
  for (const auto& layer : model.quantizable_layers())
    layers.push_back({layer.num_weights, layer.macs});
  int64_t total = 0;
  for (const auto& param : model.params())
    total += engine::NumElements(param.shape);
  return CostModel(std::move(layers), total);
}

double CostModel::LayerBytes(int l, int bits) const {
  return static_cast<double>(layers_[l].weights) * bits / kBitsPerByte;
}

double CostModel::AvgBits(const Policy& policy) const {
  MIXQ_CHECK(policy.size() == layers_.size());
  if (quantizable_weights_ == 0) return kFp32Bits;
  double bits = 0;
  for (size_t l = 0; l < policy.size(); ++l) {
    bits += static_cast<double>(layers_[l].weights) * policy[l];
  }
  return bits / static_cast<double>(quantizable_weights_);
}

double CostModel::SizeBytes(const Policy& policy) const {
  MIXQ_CHECK(policy.size() == layers_.size());
  double bytes = static_cast<double>(total_params_ - quantizable_weights_) *
                 kFp32Bits / kBitsPerByte;
  for (size_t l = 0; l < policy.size(); ++l) {
    bytes += LayerBytes(static_cast<int>(l), policy[l]);
  }
  return bytes;
}

double CostModel::Fp32SizeBytes() const {
  return static_cast<double>(total_params_) * kFp32Bits / kBitsPerByte;
}

int64_t CostModel::Bops(const Policy& policy, int activation_bits) const {
  MIXQ_CHECK(policy.size() == layers_.size());
  MIXQ_CHECK(activation_bits > 0);
  int64_t bops = 0;
  for (size_t l = 0; l < policy.size(); ++l) {
    const int64_t bits_product = int64_t{policy[l]} * activation_bits;
    bops = SaturatingAdd(bops, SaturatingMul(layers_[l].macs, bits_product));
  }
  return bops;
}

PolicyCost CostModel::Cost(const Policy& policy, int activation_bits) const {
  PolicyCost cost;
  cost.avg_bits = AvgBits(policy);
  cost.size_bytes = SizeBytes(policy);
  const double fp32 = Fp32SizeBytes();
  cost.size_fraction = fp32 > 0 ? cost.size_bytes / fp32 : 0;
  cost.bops = Bops(policy, activation_bits);
  return cost;
}

double Budget::Measure(const PolicyCost& cost) const {
  switch (kind) {
    case Kind::kAvgBits:
      return cost.avg_bits;
    case Kind::kSizeFraction:
      return cost.size_fraction;
    case Kind::kBytes:
      return cost.size_bytes;
    case Kind::kBops:
      return static_cast<double>(cost.bops);
  }
  return std::numeric_limits<double>::infinity();
}

double Budget::LayerTerm(const CostModel& cost, int layer, int bits,
                         int activation_bits) const {
  switch (kind) {
    case Kind::kAvgBits:
      return static_cast<double>(cost.layer_weights(layer)) * bits /
             static_cast<double>(cost.quantizable_weights());
    case Kind::kSizeFraction:
      return cost.LayerBytes(layer, bits) / cost.Fp32SizeBytes();
    case Kind::kBytes:
      return cost.LayerBytes(layer, bits);
    case Kind::kBops:
      return static_cast<double>(cost.layer_macs(layer)) * bits *
             activation_bits;
  }
  return std::numeric_limits<double>::infinity();
}

double Budget::FixedTerm(const CostModel& cost) const {
  const double other_bytes =
      static_cast<double>(cost.total_params() - cost.quantizable_weights()) *
      kFp32Bits / kBitsPerByte;
  switch (kind) {
    case Kind::kSizeFraction:
      return other_bytes / cost.Fp32SizeBytes();
    case Kind::kBytes:
      return other_bytes;
    case Kind::kAvgBits:
    case Kind::kBops:
      return 0;
  }
  return 0;
}

bool Budget::IsMet(const PolicyCost& cost) const {
  return Measure(cost) <= value * (1 + kBudgetSlack);
}

double Budget::MaxSizeBytes(const CostModel& cost) const {
  switch (kind) {
    case Kind::kSizeFraction:
      return value * cost.Fp32SizeBytes();
    case Kind::kBytes:
      return value;
    case Kind::kAvgBits:
    case Kind::kBops:
      break;
  }
  return std::numeric_limits<double>::infinity();
}

std::string Budget::ToString() const {
  switch (kind) {
    case Kind::kAvgBits:
      return absl::StrFormat("%.4g average weight bits", value);
    case Kind::kSizeFraction:
      return absl::StrFormat("%.4g of the FP32 size", value);
    case Kind::kBytes:
      return absl::StrFormat("%.0f bytes", value);
    case Kind::kBops:
      return absl::StrFormat("%.6g BOPs", value);
  }
  return "unknown budget";
}

absl::Status CheckBudgetReachable(const CostModel& cost, const Budget& budget,
                                  const Policy& lowest, int activation_bits) {
  const PolicyCost lowest_cost = cost.Cost(lowest, activation_bits);
  if (budget.IsMet(lowest_cost)) return absl::OkStatus();
  // The lowest cost in every unit, the budget's own first.
  const std::pair<Budget::Kind, std::string> units[] = {
      {Budget::Kind::kAvgBits,
       absl::StrFormat("%.4g average weight bits", lowest_cost.avg_bits)},
      {Budget::Kind::kSizeFraction,
       absl::StrFormat("%.4g of the FP32 size", lowest_cost.size_fraction)},
      {Budget::Kind::kBytes,
       absl::StrFormat("%.0f bytes", lowest_cost.size_bytes)},
      {Budget::Kind::kBops,
       absl::StrCat(lowest_cost.bops, " BOPs (activations at ", activation_bits,
                    " bits)")},
  };
  std::string own;
  std::vector<std::string> others;
  for (const auto& [kind, text] : units) {
    if (kind == budget.kind) {
      own = text;
    } else {
      others.push_back(text);
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "budget ", budget.ToString(),
      " cannot be met: the lowest reachable cost (every layer at its lowest "
      "candidate bits) is ",
      own, "; also ", absl::StrJoin(others, ", ")));
}

}  // namespace mixq::search
