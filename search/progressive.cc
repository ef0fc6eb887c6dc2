#include "search/progressive.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "search/quantizer.h"
#include "util/status_macros.h"

namespace mixq::search {
namespace {

// Sampling gives up on finding n distinct candidates after this many draws
// per requested candidate (small models have few distinct neighbours).
constexpr int kDrawsPerCandidate = 20;
constexpr int kMaxCandidates = 1024;
constexpr int kMaxSteps = 1000000;
constexpr int kMaxBatch = 1 << 16;

bool Cancelled(const SearchObserver& observer) {
  return observer.cancel != nullptr && observer.cancel->load();
}

// A uniform integer in [lo, hi] from the search's own engine, so results do
// not depend on a standard library's distribution implementation.
int UniformInt(std::mt19937_64& rng, int lo, int hi) {
  const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
  return lo + static_cast<int>(rng() % span);
}

class ProgressiveSearch {
 public:
  ProgressiveSearch(const engine::Model& model, const LabeledData& calib,
                    const LabeledData& train, const ProgressiveOptions& options,
                    const SearchObserver& observer)
      : calib_(calib),
        train_(train),
        options_(options),
        observer_(observer),
        cost_(CostModel::ForModel(model)),
        levels_(options.bit_levels),
        session_(model,
                 engine::AdamOptions{.learning_rate = static_cast<float>(
                                         options.learning_rate)},
                 options.batch_size, options.seed),
        rng_(options.seed ^ 0x9e3779b97f4a7c15ULL) {
    // Levels from highest to lowest bits, duplicates removed.
    std::sort(levels_.begin(), levels_.end(), std::greater<int>());
    levels_.erase(std::unique(levels_.begin(), levels_.end()), levels_.end());
    level_.assign(cost_.num_layers(), 0);
  }

  absl::StatusOr<SearchResult> Run() {
    if (cost_.num_layers() == 0) {
      return absl::InvalidArgumentError(
          "the model has no quantizable layer (Gemm/MatMul weight)");
    }
    Policy lowest(cost_.num_layers(), levels_.back());
    MIXQ_RETURN_IF_ERROR(CheckBudgetReachable(cost_, options_.budget, lowest));

    // Step 0: warm-up at the highest bits so Adam holds second moments.
    Notify(Phase::kWarmup, 0);
    auto start = Clock::now();
    MIXQ_RETURN_IF_ERROR(session_.FineTune(
        CurrentPolicy(), train_, options_.warmup_steps, observer_.cancel));
    StepReport warmup;
    warmup.step = 0;
    MIXQ_ASSIGN_OR_RETURN(warmup.finetuned, Score(CurrentPolicy()));
    warmup.elapsed_seconds = Seconds(start);
    MIXQ_RETURN_IF_ERROR(Report(warmup));

    int step = 0;
    while (!options_.budget.IsMet(cost_, CurrentPolicy())) {
      if (Cancelled(observer_)) return absl::CancelledError("job cancelled");
      if (++step > kMaxSteps)
        return absl::InternalError("search did not converge");
      Notify(Phase::kSearch, step);
      start = Clock::now();
      MIXQ_ASSIGN_OR_RETURN(StepReport report, SearchStep(step));
      report.elapsed_seconds = Seconds(start);
      MIXQ_RETURN_IF_ERROR(Report(report));
    }

    if (Cancelled(observer_)) return absl::CancelledError("job cancelled");
    Notify(Phase::kFinal, step + 1);
    MIXQ_RETURN_IF_ERROR(session_.FineTune(CurrentPolicy(), train_,
                                           options_.final_finetune_steps,
                                           observer_.cancel));
    SearchResult result;
    MIXQ_ASSIGN_OR_RETURN(result.final_policy, Score(CurrentPolicy()));
    result.steps = step;
    return result;
  }

 private:
  using Clock = std::chrono::steady_clock;

  static double Seconds(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
  }

  void Notify(Phase phase, int step) {
    if (observer_.on_phase) observer_.on_phase(phase, step);
  }
  absl::Status Report(const StepReport& report) {
    return observer_.on_step ? observer_.on_step(report) : absl::OkStatus();
  }

  Policy PolicyAt(const std::vector<int>& level) const {
    Policy policy(level.size());
    for (size_t l = 0; l < level.size(); ++l) policy[l] = levels_[level[l]];
    return policy;
  }
  Policy CurrentPolicy() const { return PolicyAt(level_); }

  // Cost and calibration scores of `policy` with the current weights.
  absl::StatusOr<ScoredPolicy> Score(const Policy& policy) {
    ScoredPolicy scored;
    scored.policy = policy;
    scored.avg_bits = cost_.AvgBits(policy);
    scored.size_bytes = cost_.SizeBytes(policy);
    MIXQ_ASSIGN_OR_RETURN(Evaluation eval, session_.Evaluate(policy, calib_));
    scored.loss = eval.loss;
    scored.accuracy = eval.accuracy;
    return scored;
  }

  // Up to n distinct level vectors, each lowering 1..k random lowerable
  // layers of the current one by one level.
  std::vector<std::vector<int>> SampleCandidates() {
    std::vector<int> lowerable;
    for (int l = 0; l < cost_.num_layers(); ++l) {
      if (level_[l] + 1 < static_cast<int>(levels_.size()))
        lowerable.push_back(l);
    }
    std::vector<std::vector<int>> candidates;
    if (lowerable.empty()) return candidates;
    std::set<std::vector<int>> seen;
    const int k_max =
        std::min<int>(options_.max_layers, static_cast<int>(lowerable.size()));
    for (int draw = 0;
         draw < options_.candidates * kDrawsPerCandidate &&
         static_cast<int>(candidates.size()) < options_.candidates;
         ++draw) {
      const int k = UniformInt(rng_, 1, k_max);
      std::vector<int> pool = lowerable;
      std::vector<int> level = level_;
      // Partial Fisher-Yates: the first k entries of `pool` are the choice.
      for (int i = 0; i < k; ++i) {
        const int j = UniformInt(rng_, i, static_cast<int>(pool.size()) - 1);
        std::swap(pool[i], pool[j]);
        ++level[pool[i]];
      }
      if (seen.insert(level).second) candidates.push_back(std::move(level));
    }
    return candidates;
  }

  absl::StatusOr<StepReport> SearchStep(int step) {
    StepReport report;
    report.step = step;
    const std::vector<std::vector<int>> candidates = SampleCandidates();
    if (candidates.empty()) {
      return absl::InternalError(
          "no layer can be lowered but the budget is not met");
    }
    // Ω_l(b) for every layer and level, from the current weights and v̂.
    const auto omega_table = session_.LayerOmegaTable(levels_);
    for (const auto& level : candidates) {
      if (Cancelled(observer_)) return absl::CancelledError("job cancelled");
      MIXQ_ASSIGN_OR_RETURN(ScoredPolicy scored, Score(PolicyAt(level)));
      for (size_t l = 0; l < level.size(); ++l)
        scored.omega += omega_table[l][level[l]];
      scored.index = scored.loss + options_.lambda * 0.5 * scored.omega;
      report.candidates.push_back(std::move(scored));
    }
    // Rank by index; ties keep sampling order (stable) for determinism.
    std::vector<size_t> order(candidates.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return report.candidates[a].index < report.candidates[b].index;
    });
    std::vector<ScoredPolicy> ranked;
    for (size_t i : order) ranked.push_back(std::move(report.candidates[i]));
    report.candidates = std::move(ranked);
    level_ = candidates[order[0]];

    MIXQ_RETURN_IF_ERROR(session_.FineTune(
        CurrentPolicy(), train_, options_.finetune_steps, observer_.cancel));
    MIXQ_ASSIGN_OR_RETURN(report.finetuned, Score(CurrentPolicy()));
    return report;
  }

  const LabeledData& calib_;
  const LabeledData& train_;
  const ProgressiveOptions& options_;
  const SearchObserver& observer_;
  const CostModel cost_;
  std::vector<int> levels_;  // distinct bits, highest first
  std::vector<int> level_;   // current level index per layer
  QatSession session_;
  std::mt19937_64 rng_;
};

}  // namespace

absl::Status ValidateOptions(const ProgressiveOptions& options) {
  if (options.bit_levels.empty())
    return absl::InvalidArgumentError("bits: no candidate bit-width");
  for (int bits : options.bit_levels) {
    if (bits < kMinWeightBits || bits > kMaxWeightBits) {
      return absl::InvalidArgumentError(
          absl::StrCat("bits: ", bits, " is outside ", kMinWeightBits, "..",
                       kMaxWeightBits));
    }
  }
  if (options.candidates < 1 || options.candidates > kMaxCandidates) {
    return absl::InvalidArgumentError(absl::StrCat("candidates: must be in 1..",
                                                   kMaxCandidates, ", got ",
                                                   options.candidates));
  }
  if (options.max_layers < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_layers: must be at least 1, got ", options.max_layers));
  }
  if (options.warmup_steps < 0 || options.finetune_steps < 0 ||
      options.final_finetune_steps < 0) {
    return absl::InvalidArgumentError(
        "finetune_steps/warmup_steps/final_finetune_steps: negative");
  }
  if (options.batch_size < 1 || options.batch_size > kMaxBatch) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch_size: must be in 1..", kMaxBatch, ", got ", options.batch_size));
  }
  if (!(options.learning_rate > 0) || !(options.learning_rate < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "learning_rate: must be in (0, 1), got ", options.learning_rate));
  }
  if (!(options.lambda >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("lambda: must be >= 0, got ", options.lambda));
  }
  switch (options.budget.kind) {
    case Budget::Kind::kAvgBits:
      if (!(options.budget.value > 0)) {
        return absl::InvalidArgumentError("budget.avg_bits: must be positive");
      }
      break;
    case Budget::Kind::kSizeFraction:
      if (!(options.budget.value > 0 && options.budget.value <= 1)) {
        return absl::InvalidArgumentError(
            "budget.size_fraction: must be in (0, 1]");
      }
      break;
  }
  return absl::OkStatus();
}

absl::StatusOr<SearchResult> RunProgressiveSearch(
    const engine::Model& model, const LabeledData& calib,
    const LabeledData& train, const ProgressiveOptions& options,
    const SearchObserver& observer) {
  MIXQ_RETURN_IF_ERROR(ValidateOptions(options));
  if (calib.size() == 0)
    return absl::InvalidArgumentError(
        "calib_size: the calibration set is empty");
  ProgressiveSearch search(model, calib, train, options, observer);
  return search.Run();
}

}  // namespace mixq::search
