// Allocation (docs/design.md §2.2, §3.1): the least-Ω bit-width policy
// under a budget, from a table of per-layer sensitivities Ω_l(b), solved as a
// multiple-choice knapsack (search/knapsack.h) over each layer's candidate
// bits. The search allocates with it (the knapsack and hawq strategies, the
// progressive search's oracle, land_on_budget and knapsack_guided), and the
// server re-solves a new budget from the table a job stored after its
// warm-up.
#ifndef MIXQ_SEARCH_ALLOCATION_H_
#define MIXQ_SEARCH_ALLOCATION_H_

#include <vector>

#include "absl/status/statusor.h"
#include "search/cost_model.h"
#include "search/knapsack.h"

namespace mixq::search {

// Each quantizable layer's candidate bits, distinct and highest first: its
// entry in ProgressiveOptions::layers, else bit_levels; a pinned layer has
// one entry (see ResolveCandidateBits in search/progressive.h).
struct CandidateBits {
  std::vector<std::vector<int>> per_layer;

  bool pinned(int l) const { return per_layer[l].size() == 1; }
  bool all_pinned() const;
  // Every layer at its highest / lowest candidate bits.
  Policy Highest() const;
  Policy Lowest() const;
  // Every bit-width any layer may take, distinct, highest first: the
  // columns of the Ω table the search measures.
  std::vector<int> AllBits() const;
};

// Ω_l(b) = Σ_i v̂_i · (Q_b(w_i) − w_i)² of every quantizable layer l (rows,
// model order) at every bit-width of `bits` (columns): the sensitivities an
// allocation minimises the sum of.
struct SensitivityTable {
  std::vector<int> bits;                   // the columns' bit-widths
  std::vector<std::vector<double>> omega;  // omega[l][column]
};

// Beyond this many units of slack the allocation's knapsack rounds costs
// (bounding its table to layers × 2^17 entries).
inline constexpr int kMaxAllocationResolution = 1 << 17;

// Solves allocations for one model, one set of candidate bits, one budget
// unit and one table layout. Immutable; thread-safe. Borrows `cost` and
// `bits`, which must outlive it.
class Allocator {
 public:
  // Ω per layer (rows) and column of `omega_bits`.
  using Table = std::vector<std::vector<double>>;

  // `omega_bits` holds every bit-width of `bits` (checked when used); the
  // budget's value is not read (allocations take their limit).
  Allocator(const CostModel& cost, const CandidateBits& bits, Budget::Kind kind,
            std::vector<int> omega_bits);

  // Layer l's cost at `bits` in whole units: weight bits n_l·b for size and
  // average-bit budgets, BOPs MAC_l·act_bits·b for BOPs. Integers, so that
  // the knapsack divides them by their gcd and solves exactly whenever the
  // slack holds at most kMaxAllocationResolution multiples of it.
  double CostUnits(int l, int bits, int act_bits) const;

  // The knapsack over the policies with layer l at a level in
  // [min_level[l], max_level[l]] of its candidates (choice: the level minus
  // min_level[l]) costing at most `capacity` CostUnits, minimising Σ Ω from
  // `table`. Beyond kMaxAllocationResolution units of slack the DP rounds
  // costs as `rounding` says. Callers pass a capacity the policy at
  // max_level meets.
  absl::StatusOr<KnapsackSolution> Solve(const Table& table,
                                         const std::vector<int>& min_level,
                                         const std::vector<int>& max_level,
                                         double capacity, int act_bits,
                                         KnapsackRounding rounding) const;

  // The least-Ω policy whose cost in the budget's unit is at most `limit`,
  // layer l at a level in [min_level[l], max_level[l]] of its candidates; as
  // levels. Exact when the costs' gcd allows (Solve), else the best on costs
  // rounded up, so the policy always meets `limit`. Callers pass a limit the
  // policy at max_level meets.
  absl::StatusOr<std::vector<int>> Allocate(const Table& table,
                                            const std::vector<int>& min_level,
                                            const std::vector<int>& max_level,
                                            double limit, int act_bits) const;

  // Every layer at its highest (level 0) / lowest candidate bits, as levels.
  std::vector<int> TopLevels() const;
  std::vector<int> BottomLevels() const;
  // The bits of each layer at `level` (index into its candidates).
  Policy PolicyAt(const std::vector<int>& level) const;
  // Σ_l Ω_l(policy[l]) from `table`.
  double Omega(const Table& table, const Policy& policy) const;
  // Index of `bits` in omega_bits (checked).
  int Column(int bits) const;

 private:
  const CostModel& cost_;
  const CandidateBits& bits_;
  const Budget budget_;  // the kind; its value unused
  const std::vector<int> omega_bits_;
};

}  // namespace mixq::search

#endif  // MIXQ_SEARCH_ALLOCATION_H_
