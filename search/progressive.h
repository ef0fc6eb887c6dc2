// The progressive mixed-precision search of DESIGN.md §2: start every layer
// at its highest bits, then repeatedly score n neighbouring policies (each
// lowers 1..k layers by one level of their candidate bits) with the index I =
// L_C + λ·½·Ω — Ω the perturbation weighted by Adam's v̂ — keep the best,
// fine-tune it (QAT), and stop once the budget is met, with a final fine-tune.
#ifndef MIXQ_SEARCH_PROGRESSIVE_H_
#define MIXQ_SEARCH_PROGRESSIVE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model.h"
#include "search/cost_model.h"
#include "search/qat.h"
#include "search/quantizer.h"

namespace mixq::search {

// Activation bits when a job does not say; kMinActivationBits..
// kMaxActivationBits or kFloatBits (search/quantizer.h).
inline constexpr int kDefaultActivationBits = 8;

// One layer's own candidate bits, overriding ProgressiveOptions::bit_levels.
struct LayerCandidates {
  std::string name;       // a quantizable layer's name (its weight initializer)
  std::vector<int> bits;  // any order, each 1..8; one entry pins the layer
};

struct ProgressiveOptions {
  // Candidate bits of every layer not in `layers`, any order, each 1..8.
  std::vector<int> bit_levels;
  // Per-layer candidate lists; each name at most once.
  std::vector<LayerCandidates> layers;
  // Pins the first and the last quantizable layer at their highest bits.
  bool pin_first_last = false;
  // Bits of the quantizable layers' input activations: 2..8, or kFloatBits
  // (left in float). Scoring and fine-tuning fake-quantize them, and BOPs
  // count them.
  int activation_bits = kDefaultActivationBits;
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

// INVALID_ARGUMENT naming the field if `options` is unusable on any model
// (bits outside 1..8, no bits, an empty, unnamed or repeated entry of
// `layers` ("layers[1].bits: ..."), activation bits other than 2..8 or 32,
// n/k/steps/batch out of range, non-positive budget).
absl::Status ValidateOptions(const ProgressiveOptions& options);

// Each quantizable layer's candidate bits, distinct and highest first: its
// entry in `layers`, else `bit_levels`; a pinned layer has one entry.
struct CandidateBits {
  std::vector<std::vector<int>> per_layer;

  bool pinned(int l) const { return per_layer[l].size() == 1; }
  bool all_pinned() const;
  // Every layer at its highest / lowest candidate bits.
  Policy Highest() const;
  Policy Lowest() const;
};

// Resolves `options` (already valid, see ValidateOptions) against `model`'s
// quantizable layers. INVALID_ARGUMENT "layers[i].name: no quantizable layer
// 'x'; layers are: a, b" for a name the model does not have.
absl::StatusOr<CandidateBits> ResolveCandidateBits(
    const ProgressiveOptions& options, const engine::Model& model);

// A policy with its cost and its calibration scores.
struct ScoredPolicy {
  Policy policy;
  double avg_bits = 0;
  double size_bytes = 0;
  int64_t bops = 0;  // at ProgressiveOptions::activation_bits
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
// fine-tuning on `train`. Every layer starts at its highest candidate bits and
// is only ever lowered along its own list; pinned layers never change. The
// search stops once the budget is met (or nothing can be lowered).
// Deterministic for given options and data.
// Errors: INVALID_ARGUMENT for bad options, an unknown layer name or an
// unreachable budget; CANCELLED; errors from the engine or the observer.
absl::StatusOr<SearchResult> RunProgressiveSearch(
    const engine::Model& model, const LabeledData& calib,
    const LabeledData& train, const ProgressiveOptions& options,
    const SearchObserver& observer);

}  // namespace mixq::search

#endif  // MIXQ_SEARCH_PROGRESSIVE_H_
