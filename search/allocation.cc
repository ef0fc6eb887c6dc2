#include "search/allocation.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>
#include <utility>

#include "util/check.h"
#include "util/status_macros.h"

namespace mixq::search {

bool CandidateBits::all_pinned() const {
  return std::all_of(
      per_layer.begin(), per_layer.end(),
      [](const std::vector<int>& bits) { return bits.size() == 1; });
}

Policy CandidateBits::Highest() const {
  Policy policy;
  for (const auto& bits : per_layer) policy.push_back(bits.front());
  return policy;
}

Policy CandidateBits::Lowest() const {
  Policy policy;
  for (const auto& bits : per_layer) policy.push_back(bits.back());
  return policy;
}

std::vector<int> CandidateBits::AllBits() const {
  std::set<int, std::greater<int>> all;
  for (const auto& layer_bits : per_layer)
    all.insert(layer_bits.begin(), layer_bits.end());
  return std::vector<int>(all.begin(), all.end());
}

Allocator::Allocator(const CostModel& cost, const CandidateBits& bits,
                     Budget::Kind kind, std::vector<int> omega_bits)
    : cost_(cost),
      bits_(bits),
      budget_{.kind = kind},
      omega_bits_(std::move(omega_bits)) {}

double Allocator::CostUnits(int l, int bits, int act_bits) const {
  const bool bops = budget_.kind == Budget::Kind::kBops;
  return static_cast<double>(bops ? cost_.layer_macs(l) * act_bits
                                  : cost_.layer_weights(l)) *
         bits;
}

absl::StatusOr<KnapsackSolution> Allocator::Solve(
    const Table& table, const std::vector<int>& min_level,
    const std::vector<int>& max_level, double capacity, int act_bits,
    KnapsackRounding rounding) const {
  std::vector<std::vector<KnapsackOption>> groups(cost_.num_layers());
  for (int l = 0; l < cost_.num_layers(); ++l) {
    const auto& layer_bits = bits_.per_layer[l];
    for (int i = min_level[l]; i <= max_level[l]; ++i) {
      groups[l].push_back(KnapsackOption{CostUnits(l, layer_bits[i], act_bits),
                                         table[l][Column(layer_bits[i])]});
    }
  }
  return SolveMultipleChoiceKnapsack(groups, capacity, kMaxAllocationResolution,
                                     rounding);
}

absl::StatusOr<std::vector<int>> Allocator::Allocate(
    const Table& table, const std::vector<int>& min_level,
    const std::vector<int>& max_level, double limit, int act_bits) const {
  double cheapest = 0;
  double per_unit = 0;  // the budget's measure of one unit
  for (int l = 0; l < cost_.num_layers(); ++l) {
    const auto& layer_bits = bits_.per_layer[l];
    cheapest += CostUnits(l, layer_bits[max_level[l]], act_bits);
    const double top_units = CostUnits(l, layer_bits[0], act_bits);
    if (per_unit == 0 && top_units > 0) {
      per_unit =
          budget_.LayerTerm(cost_, l, layer_bits[0], act_bits) / top_units;
    }
  }
  // IsMet's slack: a policy landing exactly on the limit is allowed.
  double capacity = cheapest;
  if (per_unit > 0) {
    capacity = std::max(
        cheapest,
        std::floor((limit * (1 + 1e-9) - budget_.FixedTerm(cost_)) / per_unit +
                   1e-6));
  }
  MIXQ_ASSIGN_OR_RETURN(const KnapsackSolution solution,
                        Solve(table, min_level, max_level, capacity, act_bits,
                              KnapsackRounding::kUp));
  std::vector<int> level(cost_.num_layers());
  for (int l = 0; l < cost_.num_layers(); ++l)
    level[l] = min_level[l] + solution.choice[l];
  return level;
}

std::vector<int> Allocator::TopLevels() const {
  return std::vector<int>(cost_.num_layers(), 0);
}

std::vector<int> Allocator::BottomLevels() const {
  std::vector<int> level(cost_.num_layers());
  for (int l = 0; l < cost_.num_layers(); ++l)
    level[l] = static_cast<int>(bits_.per_layer[l].size()) - 1;
  return level;
}

Policy Allocator::PolicyAt(const std::vector<int>& level) const {
  // A candidate's level vector may carry its activation level last.
  Policy policy(cost_.num_layers());
  for (size_t l = 0; l < policy.size(); ++l)
    policy[l] = bits_.per_layer[l][level[l]];
  return policy;
}

double Allocator::Omega(const Table& table, const Policy& policy) const {
  double omega = 0;
  for (size_t l = 0; l < policy.size(); ++l)
    omega += table[l][Column(policy[l])];
  return omega;
}

int Allocator::Column(int bits) const {
  const auto it = std::find(omega_bits_.begin(), omega_bits_.end(), bits);
  MIXQ_CHECK(it != omega_bits_.end());
  return static_cast<int>(it - omega_bits_.begin());
}

}  // namespace mixq::search
