// Multiple-choice knapsack: pick exactly one option from every group so that
// the summed cost stays within a limit and the summed value is minimal. The
// one-shot `knapsack` search strategy and the progressive search's oracle use
// it with one group per quantizable layer, one option per candidate bit-width
// (cost: the layer's share of the budget; value: Ω_l(b)).
#ifndef MIXQ_SEARCH_KNAPSACK_H_
#define MIXQ_SEARCH_KNAPSACK_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace mixq::search {

struct KnapsackOption {
  double cost = 0;   // >= 0, finite
  double value = 0;  // >= 0, finite
};

struct KnapsackSolution {
  std::vector<int> choice;  // per group, the index of the chosen option
  double cost = 0;          // Σ of the chosen options' real (undiscretised) costs
  double value = 0;         // Σ of the chosen options' values
};

// Default number of cost units the slack above the cheapest selection is
// discretised into.
inline constexpr int kDefaultKnapsackResolution = 8192;
// The largest resolution accepted.
inline constexpr int kMaxKnapsackResolution = 1 << 20;

// Minimises Σ value subject to Σ cost <= limit by dynamic programming over a
// discretised cost. Each group's cheapest option is the zero point: the slack
// `limit - Σ_g min cost` is split into `resolution` units and every option's
// extra cost over its group's cheapest is rounded UP to whole units, so the
// returned selection meets the real limit (up to float rounding: an extra
// cost within 1e-9 unit above a whole number of units rounds down, so that
// exact multiples stay exact), and it is optimal among the selections whose
// rounded costs fit (exact when costs are multiples of the unit; any
// selection costing at most `limit - groups.size() * unit` fits). A limit
// within 1e-12 (relative) of Σ_g min cost leaves no slack: only each group's
// cheapest options are allowed. Ties in value are broken towards lower cost,
// then towards the lexicographically smallest `choice` (lower option index in
// the first group that differs), so the result is deterministic.
// Takes O(Σ_g options · resolution) time and groups.size() · (resolution + 1)
// choice entries of 1, 2 or 4 bytes (by the largest group's size).
// Errors: INVALID_ARGUMENT for no group, an empty group ("group 3: no
// option"), a negative or non-finite cost or value, a non-finite limit,
// resolution < 1 or > 1<<20; OUT_OF_RANGE when even the cheapest selection
// costs more than `limit` beyond that 1e-12 (the message gives both numbers).
absl::StatusOr<KnapsackSolution> SolveMultipleChoiceKnapsack(
    absl::Span<const std::vector<KnapsackOption>> groups, double limit,
    int resolution = kDefaultKnapsackResolution);

}  // namespace mixq::search

#endif  // MIXQ_SEARCH_KNAPSACK_H_
