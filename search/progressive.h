// The mixed-precision search. Its heart is the progressive search
// (docs/design.md §2.3): start every layer at its highest bits, repeatedly
// score n neighbouring policies (each lowers 1..k layers by one level of their
// candidate bits) with the index I = L_C + λ·½·Ω — Ω the perturbation
// weighted by Adam's v̂ — keep the best, fine-tune it (QAT), and stop once the
// budget is met, with a final fine-tune. Beside it, with the same warm-up,
// scorer, fine-tuning and reports: `uniform` (one bit-width everywhere),
// `knapsack` (the exact allocation minimising Σ Ω_l(b_l) under the budget)
// and `hawq` (the same allocation with Ω from Hutchinson Hessian traces).
#ifndef MIXQ_SEARCH_PROGRESSIVE_H_
#define MIXQ_SEARCH_PROGRESSIVE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/model.h"
#include "search/allocation.h"
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

// kAuto: after the warm-up, uniform's and knapsack's allocations on the
// budget are scored on the calibration set, and the one of lower
// calibration loss is fine-tuned. Ω's quadratic model misjudges large
// perturbations (2 bits on a layer holding most of the weights): there the
// least-Ω allocation loses to uniform, and the measured loss says so, for
// two forward passes over the calibration set.
enum class Strategy { kProgressive, kUniform, kKnapsack, kHawq, kAuto };
// "progressive", "uniform", "knapsack", "hawq", "auto".
std::string StrategyName(Strategy strategy);
// INVALID_ARGUMENT "strategy: unknown 'x' (progressive, uniform, knapsack,
// hawq, auto)".
absl::StatusOr<Strategy> ParseStrategy(absl::string_view name);

// How the progressive search picks among a step's candidates.
enum class Selection {
  kMinIndex,      // the lowest index I (docs/design.md §2.3)
  kPerCostSaved,  // the lowest (I − I_current) / (cost saved), budget units
};

struct ProgressiveOptions {
  Strategy strategy = Strategy::kProgressive;
  Selection selection = Selection::kMinIndex;
  // Progressive: Ω from a fresh diagonal Fisher measured on the calibration
  // set after each fine-tune (QatSession::FisherDiagonal) instead of Adam's
  // running v̂.
  bool refresh_fisher = false;
  // Progressive: the step whose kept candidate meets the budget keeps
  // instead the policy of least Ω (knapsack) among those that meet the
  // budget and raise no layer above the current policy: it lands on the
  // budget instead of overshooting it.
  bool land_on_budget = false;
  // Progressive: each step's candidates lower only layers that the
  // least-Ω policy on the budget from the current one (knapsack on this
  // step's Ω) lowers; the search walks towards that allocation, re-solved
  // after every fine-tune.
  bool knapsack_guided = false;
  // When > 0, the total number of fine-tune steps (warm-up, search steps and
  // final): the final fine-tune gets what the search left, at least
  // final_finetune_steps. Lets strategies be compared at equal training.
  int total_finetune_steps = 0;
  // hawq: Rademacher vectors per trace estimate, and the calibration samples
  // the Hessian is measured on (the first ones).
  int hutchinson_samples = 16;
  int hessian_samples = 512;
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
  // Progressive: searches the activation bits too. Non-empty: candidate
  // activation bits (each 2..8, any order; activation_bits is then
  // ignored); the search starts at the highest and a candidate may lower
  // the activation bits (of every quantized layer's input) by one level in
  // place of a layer. Ω has no activation term: the calibration loss and
  // the cost (BOPs) decide.
  std::vector<int> activation_levels;
  Budget budget;
  int candidates = 8;  // n
  int max_layers = 2;  // k
  int warmup_steps = 50;
  int finetune_steps = 50;
  int final_finetune_steps = 50;
  double learning_rate = 1e-4;
  // How every fine-tune (warm-up, each step's, final) runs. By default the
  // rate falls by a cosine from learning_rate to a tenth of it within each
  // cycle of finetune.cycle mini-batches (0: finetune_steps, so each search
  // step's fine-tune is one cycle, and the warm-up and the final restart it
  // every finetune_steps); the loss on the calibration set (scored on,
  // never trained on) is measured at fixed points; a fine-tune stops after
  // 3 of them without improvement and ends with the weights and activation
  // ranges of the best. So no fine-tune ends with a higher calibration loss
  // than it started with, and a longer one never ends higher than a shorter
  // one of whole cycles (same start and seed).
  // FineTuneOptions::Constant() is the earlier recipe: the constant rate,
  // the last weights. Steps count as configured (total_finetune_steps,
  // StepReport::finetune_steps) even when a fine-tune stops early.
  FineTuneOptions finetune;
  int batch_size = 64;
  double lambda = 1.0;
  uint64_t seed = 0;
};

// INVALID_ARGUMENT naming the field if `options` is unusable on any model
// (bits outside 1..8, no bits, an empty, unnamed or repeated entry of
// `layers` ("layers[1].bits: ..."), activation bits other than 2..8 or 32,
// n/k/steps/batch out of range, non-positive budget, activation_levels
// outside 2..8 or with a strategy other than progressive, negative
// total_finetune_steps, hutchinson_samples outside 1..4096, finetune
// options out of range: "finetune.lr_floor: ...").
absl::Status ValidateOptions(const ProgressiveOptions& options);

// Resolves `options` (already valid, see ValidateOptions) against `model`'s
// quantizable layers. INVALID_ARGUMENT "layers[i].name: no quantizable layer
// 'x'; layers are: a, b" for a name the model does not have.
absl::StatusOr<CandidateBits> ResolveCandidateBits(
    const ProgressiveOptions& options, const engine::Model& model);
// The same against the names of a model's quantizable layers, in order
// (e.g. a stored job's layers).
absl::StatusOr<CandidateBits> ResolveCandidateBits(
    const ProgressiveOptions& options,
    const std::vector<std::string>& layer_names);

// A policy with its cost and its calibration scores.
struct ScoredPolicy {
  Policy policy;
  double avg_bits = 0;
  double size_bytes = 0;
  int64_t bops = 0;         // at activation_bits
  int activation_bits = 0;  // of the quantized layers' inputs (32: float)
  double loss = 0;
  double accuracy = 0;
  double omega = 0;  // candidates only
  double index = 0;  // candidates only
  // Kept policies only: loss and accuracy on held-out validation data, set
  // by SearchObserver::on_kept (the search never sees that data); NaN when
  // not measured.
  double val_loss = std::numeric_limits<double>::quiet_NaN();
  double val_accuracy = std::numeric_limits<double>::quiet_NaN();
};

// How a step's scoring went. Node runs and seconds: progressive steps only
// (zeros elsewhere); oracle_omega: every search step.
struct ScoringStats {
  int64_t node_runs = 0;        // graph nodes executed, shared prefixes reused
  int64_t naive_node_runs = 0;  // a full forward pass per candidate
  double seconds = 0;           // scoring the candidates
  // A lower bound on the least Ω any policy of the search space reaches at
  // no more than the kept policy's cost, from the same Ω table and cost the
  // kept policy is measured with (knapsack on costs rounded down; exactly
  // that least Ω whenever the allocation is exact, as on every README model):
  // never above the kept candidate's omega, and their difference is how far
  // the step is from the optimum at its cost.
  double oracle_omega = 0;
};

// One search step. Step 0 is the warm-up (no candidates).
struct StepReport {
  int step = 0;
  std::vector<ScoredPolicy> candidates;  // ranked by index; [0] was kept
  ScoredPolicy finetuned;                // the kept policy after fine-tuning
  ScoringStats scoring;
  int finetune_steps = 0;  // fine-tune steps this step ran
  double elapsed_seconds = 0;
  // With SearchObserver::checkpoints: the search's state after this step
  // (opaque bytes; weights, optimizer, RNGs, policy, step) to resume from.
  std::string checkpoint;
  // Step 0 only (empty elsewhere): Ω_l(b) from Adam's v̂ after the warm-up
  // for every layer and every candidate bit-width of any layer (columns
  // highest first), whatever the strategy: the table the knapsack strategy
  // allocates on, from which a new budget can be re-solved (Allocator).
  SensitivityTable sensitivities;
};

enum class Phase { kWarmup, kSearch, kFinal };

// How the caller observes and controls a search. All members optional.
struct SearchObserver {
  // Called when a phase starts (`step` is the step about to run).
  std::function<void(Phase phase, int step)> on_phase;
  // Called after each step (warm-up included); an error aborts the search
  // with that error (e.g. the store failed).
  std::function<absl::Status(const StepReport& report)> on_step;
  // Fill StepReport::checkpoint (serializing the weights and Adam's
  // moments costs about 12 bytes per parameter per step).
  bool checkpoints = false;
  // With checkpoints: called when `cancel` stops a fine-tune (warm-up, a
  // search step's, or the final one) between two mini-batches, just before
  // the search returns CANCELLED, with a checkpoint of that point and the
  // last step recorded (-1: none, the warm-up stopped). Resumed from it, the
  // search finishes that fine-tune (and step) and goes on bit for bit as if
  // never stopped.
  std::function<void(std::string checkpoint, int recorded_step)> on_interrupted;
  // Checked between steps, candidates and fine-tuning mini-batches; when
  // true the search returns CANCELLED.
  const std::atomic<bool>* cancel = nullptr;
  // Called for every kept policy — each step's after its fine-tune (the
  // warm-up's, step 0, included) and the final one (`step` = the last
  // search step + 1) — with the session holding the weights and activation
  // ranges it was scored with, before on_step reports it (or before the
  // search returns the final one): e.g. to export it and measure it on
  // validation data (`kept->val_loss`, `val_accuracy`). An error fails the
  // search.
  std::function<absl::Status(const QatSession& session, int step,
                             ScoredPolicy* kept)>
      on_kept;
  // Called once after the final fine-tune (and on_kept) with the session
  // holding the fine-tuned weights and activation ranges, and the final
  // policy: e.g. to evaluate it on test data. An error fails the search.
  std::function<absl::Status(QatSession& session, const Policy& policy)>
      on_finish;
};

struct SearchResult {
  ScoredPolicy final_policy;  // after the final fine-tune
  int steps = 0;              // search steps run (warm-up excluded)
  int finetune_steps = 0;     // all fine-tune steps, warm-up and final included
  int64_t node_runs = 0;      // summed over the steps' ScoringStats
  int64_t naive_node_runs = 0;
};

// Runs options.strategy on `model` (borrowed for the call), scoring on
// `calib` and fine-tuning on `train`. All strategies warm up at the highest
// bits (step 0). Progressive: every layer starts at its highest candidate
// bits and is only ever lowered along its own list; pinned layers never
// change; it stops once the budget is met (or nothing can be lowered). The
// others report one step holding their allocation (within each layer's
// candidates and the budget), then fine-tune it.
// Deterministic for given options and data.
// `resume_from` (optional): a StepReport::checkpoint of a search with the
// same model, data and options; the search continues after that step, and
// every later report and the result (its final policy and scores, to the
// bit) are those the uninterrupted search gives.
// `warm_start` (optional, ignored when resuming): the StepReport::checkpoint
// of another search's step 0 on the same model and data (any strategy,
// seed and candidate bits): this search starts from its weights, Adam state,
// mini-batch sampler and activation ranges and runs no warm-up — its step 0
// reports the restored weights at this search's highest bits, with
// finetune_steps 0 and the Ω table from the restored v̂. Deterministic for
// given options, data and warm start.
// Errors: INVALID_ARGUMENT for bad options, an unknown layer name, an
// unreachable budget or a checkpoint that does not parse or fit (the last
// marked with the kUnusableCheckpointUrl payload: see IsUnusableCheckpoint;
// "warm start: ..." for a warm start that does not, unmarked); CANCELLED;
// errors from the engine or the observer.
// The payload type URL (its value empty) that marks RunProgressiveSearch's
// error for a `resume_from` that does not parse or fit the search, e.g. one
// written by another mixq version: the caller may start over instead.
inline constexpr absl::string_view kUnusableCheckpointUrl =
    "type.mixq.dev/mixq.search.UnusableCheckpoint";
bool IsUnusableCheckpoint(const absl::Status& status);

absl::StatusOr<SearchResult> RunProgressiveSearch(
    const engine::Model& model, const LabeledData& calib,
    const LabeledData& train, const ProgressiveOptions& options,
    const SearchObserver& observer, absl::string_view resume_from = {},
    absl::string_view warm_start = {});

}  // namespace mixq::search

#endif  // MIXQ_SEARCH_PROGRESSIVE_H_
