#include "search/knapsack.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "util/status_macros.h"

namespace mixq::search {
namespace {

constexpr int kMaxResolution = 1 << 20;
// An extra cost that lands this close (in units) above a whole number of
// units counts as that number: costs that are exact multiples of the unit
// must not be pushed into the next unit by the division's rounding error.
constexpr double kUnitRoundingSlack = 1e-9;
// A limit this close (relative) to the cheapest selection's cost leaves no
// slack. Callers compute the limit and the costs separately, so the two sums
// may differ in their last bits even when they are meant to be equal.
constexpr double kZeroSlackTolerance = 1e-12;
// Every integer up to this is exact in a double.
constexpr double kMaxExactInteger = 0x1p53;
// Marks an option whose extra cost alone exceeds the slack.
constexpr int kDoesNotFit = -1;
constexpr double kInf = std::numeric_limits<double>::infinity();

absl::Status CheckNumber(size_t group, size_t option, const char* field,
                         double x) {
  if (std::isfinite(x) && x >= 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("group ", group, ", option ", option, ": ", field,
                   " must be finite and >= 0, got ", x));
}

absl::Status CheckArguments(
    absl::Span<const std::vector<KnapsackOption>> groups, double limit,
    int resolution) {
  if (groups.empty()) return absl::InvalidArgumentError("no group");
  if (resolution < 1 || resolution > kMaxResolution) {
    return absl::InvalidArgumentError(absl::StrCat(
        "resolution: must be in 1..", kMaxResolution, ", got ", resolution));
  }
  if (!std::isfinite(limit)) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit: must be finite, got ", limit));
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    if (groups[g].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("group ", g, ": no option"));
    }
    for (size_t o = 0; o < groups[g].size(); ++o) {
      MIXQ_RETURN_IF_ERROR(CheckNumber(g, o, "cost", groups[g][o].cost));
      MIXQ_RETURN_IF_ERROR(CheckNumber(g, o, "value", groups[g][o].value));
    }
  }
  return absl::OkStatus();
}

double MinCost(const std::vector<KnapsackOption>& group) {
  double min_cost = kInf;
  for (const KnapsackOption& option : group)
    min_cost = std::min(min_cost, option.cost);
  return min_cost;
}

// The greatest common divisor of every option's extra cost over its group's
// cheapest when every cost is an integer exact in a double (0 when no option
// costs more than its group's cheapest); nullopt otherwise.
std::optional<int64_t> ExtraCostGcd(
    absl::Span<const std::vector<KnapsackOption>> groups) {
  int64_t gcd = 0;
  for (const std::vector<KnapsackOption>& group : groups) {
    const double min_cost = MinCost(group);
    for (const KnapsackOption& option : group) {
      if (option.cost > kMaxExactInteger ||
          std::floor(option.cost) != option.cost) {
        return std::nullopt;
      }
      gcd = std::gcd(gcd, static_cast<int64_t>(option.cost - min_cost));
    }
  }
  return gcd;
}

// The discretised instance: every option's extra cost over its group's
// cheapest in whole units, or kDoesNotFit when that exceeds `grid` units.
struct Grid {
  int grid = 0;     // units in the slack
  double unit = 0;  // 0: no slack, only the cheapest options fit (at 0 units)
  std::vector<std::vector<int>> units;
  // No option that fits was moved by more than kUnitRoundingSlack units.
  bool whole = true;
};

// Fills `grid->units` (and `whole`) for `grid->unit` and `grid->grid`.
void Discretise(absl::Span<const std::vector<KnapsackOption>> groups,
                KnapsackRounding rounding, Grid* grid) {
  grid->units.assign(groups.size(), {});
  for (size_t g = 0; g < groups.size(); ++g) {
    const double min_cost = MinCost(groups[g]);
    std::vector<int>& units = grid->units[g];
    units.reserve(groups[g].size());
    for (const KnapsackOption& option : groups[g]) {
      const double extra = option.cost - min_cost;
      if (grid->unit == 0) {
        units.push_back(extra == 0 ? 0 : kDoesNotFit);
        continue;
      }
      const double exact = extra / grid->unit;
      const double rounded =
          rounding == KnapsackRounding::kUp
              ? std::max(0.0, std::ceil(exact - kUnitRoundingSlack))
              : std::max(0.0, std::floor(exact + kUnitRoundingSlack));
      // Compared as a double first: a tiny unit can make the quotient
      // larger than any int (or infinite).
      if (rounded > grid->grid) {
        units.push_back(kDoesNotFit);
        continue;
      }
      units.push_back(static_cast<int>(rounded));
      if (std::abs(rounded - exact) > kUnitRoundingSlack) grid->whole = false;
    }
  }
}

// The grid for `slack` > 0: the costs' gcd as the unit when the slack holds
// at most `resolution` of it (every extra cost a whole number of units), else
// `resolution` units of slack / resolution.
Grid MakeGrid(absl::Span<const std::vector<KnapsackOption>> groups,
              double slack, int resolution, KnapsackRounding rounding) {
  Grid grid;
  grid.grid = resolution;
  grid.unit = slack / resolution;
  if (const std::optional<int64_t> gcd = ExtraCostGcd(groups)) {
    if (*gcd == 0) {
      grid.grid = 0;
      grid.unit = 0;
    } else {
      // A selection's extra cost is a multiple of the gcd: it fits the slack
      // iff it fits the whole multiples of the gcd in it.
      const double whole_units =
          std::floor(slack / static_cast<double>(*gcd) + kUnitRoundingSlack);
      if (whole_units <= resolution) {
        grid.grid = static_cast<int>(whole_units);
        grid.unit = static_cast<double>(*gcd);
      }
    }
  }
  Discretise(groups, rounding, &grid);
  return grid;
}

// The DP proper over `grid` + 1 unit counts. `Index` is the narrowest type
// that holds every option index, as the choice table (groups × (grid + 1)) is
// the one big allocation. Returns the chosen option per group.
template <typename Index>
std::vector<int> SolveOnGrid(
    absl::Span<const std::vector<KnapsackOption>> groups,
    const std::vector<std::vector<int>>& units, int grid) {
  const size_t width = static_cast<size_t>(grid) + 1;
  std::vector<Index> choice(groups.size() * width);
  // Best (value, cost) of the groups added so far at exactly c units; +inf
  // where no selection lands on c.
  std::vector<double> value(width, kInf), cost(width, kInf);
  std::vector<double> next_value(width), next_cost(width);
  value[0] = 0;
  cost[0] = 0;
  int reach = 0;  // the highest unit count reached so far
  // Groups are added last to first so that backtracking walks first to last:
  // among equal (value, cost) the lowest index of the earliest group wins,
  // i.e. the lexicographically smallest choice.
  for (size_t g = groups.size(); g-- > 0;) {
    const std::vector<KnapsackOption>& options = groups[g];
    const std::vector<int>& option_units = units[g];
    const int next_reach = std::min(
        grid,
        reach + *std::max_element(option_units.begin(), option_units.end()));
    std::fill_n(next_value.begin(), next_reach + 1, kInf);
    std::fill_n(next_cost.begin(), next_reach + 1, kInf);
    Index* row = choice.data() + g * width;
    for (size_t o = 0; o < options.size(); ++o) {
      const int u = option_units[o];
      if (u == kDoesNotFit) continue;
      const double v = options[o].value;
      const double k = options[o].cost;
      const int last = std::min(grid, reach + u);
      // Options in index order, replacing only on a strict improvement: the
      // lower index keeps an exact tie.
      for (int c = u; c <= last; ++c) {
        const double candidate_value = value[c - u] + v;
        const double candidate_cost = cost[c - u] + k;
        if (candidate_value < next_value[c] ||
            (candidate_value == next_value[c] &&
             candidate_cost < next_cost[c])) {
          next_value[c] = candidate_value;
          next_cost[c] = candidate_cost;
          row[c] = static_cast<Index>(o);
        }
      }
    }
    std::swap(value, next_value);
    std::swap(cost, next_cost);
    reach = next_reach;
  }

  // Every group's cheapest option sits at 0 units, so c = 0 is reachable.
  int best = 0;
  for (int c = 1; c <= reach; ++c) {
    if (value[c] < value[best] ||
        (value[c] == value[best] && cost[c] < cost[best])) {
      best = c;
    }
  }
  std::vector<int> chosen(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    chosen[g] = choice[g * width + best];
    best -= units[g][chosen[g]];
  }
  return chosen;
}

}  // namespace

absl::StatusOr<KnapsackSolution> SolveMultipleChoiceKnapsack(
    absl::Span<const std::vector<KnapsackOption>> groups, double limit,
    int resolution, KnapsackRounding rounding) {
  MIXQ_RETURN_IF_ERROR(CheckArguments(groups, limit, resolution));
  double min_total = 0;
  size_t max_options = 0;
  for (const std::vector<KnapsackOption>& group : groups) {
    min_total += MinCost(group);
    max_options = std::max(max_options, group.size());
  }
  const double tolerance =
      kZeroSlackTolerance * std::max(std::abs(limit), min_total);
  if (min_total - limit > tolerance) {
    return absl::OutOfRangeError(absl::StrFormat(
        "the cheapest selection costs %.10g, more than the limit %.10g",
        min_total, limit));
  }
  Grid grid;
  if (limit - min_total <= tolerance) {
    Discretise(groups, rounding, &grid);  // no slack: unit 0
  } else {
    grid = MakeGrid(groups, limit - min_total, resolution, rounding);
  }

  KnapsackSolution solution;
  if (max_options <= size_t{std::numeric_limits<uint8_t>::max()} + 1) {
    solution.choice = SolveOnGrid<uint8_t>(groups, grid.units, grid.grid);
  } else if (max_options <= size_t{std::numeric_limits<uint16_t>::max()} + 1) {
    solution.choice = SolveOnGrid<uint16_t>(groups, grid.units, grid.grid);
  } else {
    solution.choice = SolveOnGrid<int32_t>(groups, grid.units, grid.grid);
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    const KnapsackOption& option = groups[g][solution.choice[g]];
    solution.cost += option.cost;
    solution.value += option.value;
  }
  // Rounded down, a selection that meets the limit anyway is optimal: no
  // selection within the limit is worth less than the relaxation's optimum.
  solution.exact = grid.whole || (rounding == KnapsackRounding::kDown &&
                                  solution.cost - limit <= tolerance);
  return solution;
}

}  // namespace mixq::search
