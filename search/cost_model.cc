#include "search/cost_model.h"

#include <limits>
#include <numeric>

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

}  // namespace

std::string PolicyToString(const Policy& policy) {
  return absl::StrJoin(policy, "/");
}

CostModel::CostModel(std::vector<int64_t> layer_weights, int64_t total_params)
    : layer_weights_(std::move(layer_weights)),
      total_params_(total_params),
      quantizable_weights_(std::accumulate(layer_weights_.begin(),
                                           layer_weights_.end(), int64_t{0})) {
  MIXQ_CHECK(quantizable_weights_ <= total_params_);
}

CostModel CostModel::ForModel(const engine::Model& model) {
  std::vector<int64_t> layer_weights;
  for (const auto& layer : model.quantizable_layers())
    layer_weights.push_back(layer.num_weights);
  int64_t total = 0;
  for (const auto& param : model.params())
    total += engine::NumElements(param.shape);
  return CostModel(std::move(layer_weights), total);
}

double CostModel::AvgBits(const Policy& policy) const {
  MIXQ_CHECK(policy.size() == layer_weights_.size());
  if (quantizable_weights_ == 0) return kFp32Bits;
  double bits = 0;
  for (size_t l = 0; l < policy.size(); ++l) {
    bits += static_cast<double>(layer_weights_[l]) * policy[l];
  }
  return bits / static_cast<double>(quantizable_weights_);
}

double CostModel::SizeBytes(const Policy& policy) const {
  MIXQ_CHECK(policy.size() == layer_weights_.size());
  double bits =
      static_cast<double>(total_params_ - quantizable_weights_) * kFp32Bits;
  for (size_t l = 0; l < policy.size(); ++l) {
    bits += static_cast<double>(layer_weights_[l]) * policy[l];
  }
  return bits / kBitsPerByte;
}

double CostModel::Fp32SizeBytes() const {
  return static_cast<double>(total_params_) * kFp32Bits / kBitsPerByte;
}

bool Budget::IsMet(const CostModel& cost, const Policy& policy) const {
  switch (kind) {
    case Kind::kAvgBits:
      return cost.AvgBits(policy) <= value + kBudgetSlack;
    case Kind::kSizeFraction:
      return cost.SizeBytes(policy) <=
             value * cost.Fp32SizeBytes() * (1 + kBudgetSlack);
  }
  return false;
}

double Budget::MaxAvgBits() const {
  return kind == Kind::kAvgBits ? value
                                : std::numeric_limits<double>::infinity();
}

double Budget::MaxSizeBytes(const CostModel& cost) const {
  return kind == Kind::kSizeFraction ? value * cost.Fp32SizeBytes()
                                     : std::numeric_limits<double>::infinity();
}

std::string Budget::ToString() const {
  return kind == Kind::kAvgBits
             ? absl::StrFormat("%.4g average weight bits", value)
             : absl::StrFormat("%.4g of the FP32 size", value);
}

absl::Status CheckBudgetReachable(const CostModel& cost, const Budget& budget,
                                  const Policy& lowest) {
  if (budget.IsMet(cost, lowest)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "budget %s cannot be met: with every layer at its lowest bits the model "
      "has %.4g "
      "average weight bits and %.0f bytes (%.4g of the FP32 size)",
      budget.ToString(), cost.AvgBits(lowest), cost.SizeBytes(lowest),
      cost.SizeBytes(lowest) / cost.Fp32SizeBytes()));
}

}  // namespace mixq::search
