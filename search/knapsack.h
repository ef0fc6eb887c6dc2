// Multiple-choice knapsack: pick exactly one option from every group so that
// the summed cost stays within a limit and the summed value is minimal. The
// one-shot `knapsack` search strategy (rounding up: a policy that meets the
// budget) and the progressive search's oracle (rounding down: a lower bound
// on the least Ω at a policy's cost) use it with one group per quantizable
// layer, one option per candidate bit-width (cost: the layer's share of the
// budget in whole units; value: Ω_l(b)).
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
  double cost = 0;   // Σ of the chosen options' real (undiscretised) costs
  double value = 0;  // Σ of the chosen options' values
  // `value` is the least of all selections within the real limit and
  // `choice` one of them: no option's extra cost lost more than 1e-9 unit to
  // rounding, or (KnapsackRounding::kDown) the selection meets the limit
  // anyway. Otherwise `value` is only bounded as KnapsackRounding says.
  bool exact = false;
};

// How the DP turns an option's extra cost over its group's cheapest into
// whole units when the unit does not divide it.
enum class KnapsackRounding {
  // Up: the returned selection meets the real limit (a feasible selection,
  // the optimum up to the rounding loss). For allocating.
  kUp,
  // Down (the relaxation): every selection within the real limit fits, so
  // `value` is at most the least value within the limit (a lower bound); the
  // selection itself may exceed the limit by less than one unit per group.
  // For bounding how good any selection within the limit can be.
  kDown,
};

// Default for the most units the slack above the cheapest selection is
// discretised into.
inline constexpr int kDefaultKnapsackResolution = 8192;
// The largest resolution accepted.
inline constexpr int kMaxKnapsackResolution = 1 << 20;

// Minimises Σ value subject to Σ cost <= limit by dynamic programming over a
// discretised cost. Each group's cheapest option is the zero point, and the
// slack `limit - Σ_g min cost` is measured in units:
//   - When every cost is an integer (below 2^53) and the slack holds at most
//     `resolution` multiples of g, the greatest common divisor of all
//     options' extra costs over their group's cheapest, the unit is g: every
//     extra cost is a whole number of units and the result is exact
//     (KnapsackSolution::exact). Integer costs such as weight bits n_l·b or
//     BOPs often share a large factor (128 on the README MLP).
//   - Otherwise the slack is split into `resolution` units and every
//     option's extra cost is rounded to whole units as `rounding` says.
// Rounding treats an extra cost within 1e-9 unit of a whole number of units
// as that number, so that exact multiples stay exact. With kUp the returned
// selection meets the real limit (up to that 1e-9 unit per group), and it is
// optimal among the selections whose rounded costs fit (any selection
// costing at most `limit - groups.size() * unit` fits); with kDown every
// selection within the limit fits and `value` is a lower bound on theirs.
// A limit within 1e-12 (relative) of Σ_g min cost leaves no slack: only each
// group's cheapest options are allowed (exact). Ties in value are broken
// towards lower cost, then towards the lexicographically smallest `choice`
// (lower option index in the first group that differs), so the result is
// deterministic.
// Takes O(Σ_g options · grid) time and groups.size() · (grid + 1) choice
// entries of 1, 2 or 4 bytes (by the largest group's size), grid <=
// `resolution` the number of units in the slack.
// Errors: INVALID_ARGUMENT for no group, an empty group ("group 3: no
// option"), a negative or non-finite cost or value, a non-finite limit,
// resolution < 1 or > 1<<20; OUT_OF_RANGE when even the cheapest selection
// costs more than `limit` beyond that 1e-12 (the message gives both numbers).
absl::StatusOr<KnapsackSolution> SolveMultipleChoiceKnapsack(
    absl::Span<const std::vector<KnapsackOption>> groups, double limit,
    int resolution = kDefaultKnapsackResolution,
    KnapsackRounding rounding = KnapsackRounding::kUp);

}  // namespace mixq::search

#endif  // MIXQ_SEARCH_KNAPSACK_H_
