// The progressive mixed-precision search of DESIGN.md §2: start every layer
// at its highest bits, then repeatedly score n neighbouring policies (each
// lowers 1..k layers by one level) with the index I = L_C + λ·½·Ω — Ω the
// perturbation weighted by Adam's v̂ — keep the best, fine-tune it (QAT), and
// stop once the budget is met, with a final fine-tune.
#ifndef MIXQ_SEARCH_PROGRESSIVE_H_
#define MIXQ_SEARCH_PROGRESSIVE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model.h"
#include "search/cost_model.h"
#include "search/qat.h"

namespace mixq::search {

struct ProgressiveOptions {
  std::vector<int> bit_levels;  // candidate bits, any order, each 1..8
  Budget budget;
  int candidates = 8;  // n
  int max_layers = 2;  // k
  int warmup_steps = 50;
  int finetune_steps = 50;
  int final_finetune_steps = 50;
  double learning_rate = 1e-4;
  int batch_size = 64;
  double lambda = 1.0;
  uint64_t seed = 0;
};

// INVALID_ARGUMENT naming the field if `options` is unusable (bits outside
// 1..8, no bits, n/k/steps/batch out of range, non-positive budget).
absl::Status ValidateOptions(const ProgressiveOptions& options);

// A policy with its cost and its calibration scores.
struct ScoredPolicy {
  Policy policy;
  double avg_bits = 0;
  double size_bytes = 0;
  double loss = 0;
  double accuracy = 0;
  double omega = 0;  // candidates only
  double index = 0;  // candidates only
};

// One search step. Step 0 is the warm-up (no candidates).
struct StepReport {
  int step = 0;
  std::vector<ScoredPolicy> candidates;  // ranked by index; [0] was kept
  ScoredPolicy finetuned;                // the kept policy after fine-tuning
  double elapsed_seconds = 0;
};

enum class Phase { kWarmup, kSearch, kFinal };

// How the caller observes and controls a search. All members optional.
struct SearchObserver {
  // Called when a phase starts (`step` is the step about to run).
  std::function<void(Phase phase, int step)> on_phase;
  // Called after each step (warm-up included); an error aborts the search
  // with that error (e.g. the store failed).
  std::function<absl::Status(const StepReport& report)> on_step;
  // Checked between steps, candidates and fine-tuning mini-batches; when
  // true the search returns CANCELLED.
  const std::atomic<bool>* cancel = nullptr;
};

struct SearchResult {
  ScoredPolicy final_policy;  // after the final fine-tune
  int steps = 0;              // search steps run (warm-up excluded)
};

// Runs the search on `model` (borrowed for the call), scoring on `calib` and
// fine-tuning on `train`. Deterministic for given options and data.
// Errors: INVALID_ARGUMENT for bad options or an unreachable budget;
// CANCELLED; errors from the engine or the observer.
absl::StatusOr<SearchResult> RunProgressiveSearch(
    const engine::Model& model, const LabeledData& calib,
    const LabeledData& train, const ProgressiveOptions& options,
    const SearchObserver& observer);

}  // namespace mixq::search

#endif  // MIXQ_SEARCH_PROGRESSIVE_H_
