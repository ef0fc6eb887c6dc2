// Quantization-aware training and scoring of bit-width policies.
#ifndef MIXQ_SEARCH_QAT_H_
#define MIXQ_SEARCH_QAT_H_

#include <atomic>
#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/adam.h"
#include "engine/loss.h"
#include "engine/model.h"
#include "engine/tensor.h"
#include "search/activation_quant.h"
#include "search/cost_model.h"
#include "search/quantizer.h"

namespace mixq::internal {
class SessionState;  // proto/checkpoint.proto
class FineTuneProgressState;
}  // namespace mixq::internal

namespace mixq::search {

// Samples to train and score on; inputs are [N, ...] like the model input.
// The objective follows from what the data carries (engine::Objective):
// with `teacher` set (distill) the loss is engine::DistillLoss against it and
// `labels` are optional (they give the accuracy); without, the loss is
// softmax cross-entropy against `labels` (one per sample).
struct LabeledData {
  engine::Tensor inputs;
  std::vector<int64_t> labels;  // empty: none (distill only)
  // The FP32 model's outputs on `inputs` ([N, ...]), computed once
  // (search/teacher.h) since the data is fixed; empty (no shape) unless
  // distilling.
  engine::Tensor teacher;

  int64_t size() const { return inputs.shape().empty() ? 0 : inputs.dim(0); }
  bool distill() const { return !teacher.shape().empty(); }
  bool has_labels() const { return !labels.empty(); }
  // Samples [begin, end), copied.
  LabeledData Slice(int64_t begin, int64_t end) const;
};

struct Evaluation {
  double loss = 0;      // mean loss of the data's objective (LabeledData)
  double accuracy = 0;  // top-1, in [0, 1]; NaN for data without labels
};

// How weights and activations are quantized (docs/design.md §1.2, §1.3).
struct QuantOptions {
  QuantScheme weight_scheme = QuantScheme::kSymmetric;
  Granularity weight_granularity = Granularity::kPerChannel;
  ActivationOptions activations;
};

// INVALID_ARGUMENT naming the field when `options` is unusable.
absl::Status ValidateQuantOptions(const QuantOptions& options);

// How a fine-tune schedules Adam's learning rate and which weights it ends
// with (docs/design.md §4: more fine-tuning must never end worse than
// less). The defaults are the search's recipe; Constant() is
// plain Adam at the session's rate, every mini-batch, the last weights kept.
//
// With a cycle C > 0, the rate and the evaluation points of mini-batch s
// depend on s and C only, never on the fine-tune's length: a fine-tune of
// n·C mini-batches is the first part of any longer one with the same start
// and seed, so (with restore_best) the longer one never ends with a higher
// held-out loss — it saw every evaluation the shorter one saw.
struct FineTuneOptions {
  // Cosine annealing with warm restarts (SGDR): within each cycle of C
  // mini-batches (0: one cycle, the whole fine-tune) the rate falls from the
  // session's rate (Adam's) at its first to lr_floor times it at its last,
  // after a linear rise over its first warmup_fraction. The rate depends
  // only on the position in the fine-tune, so a resumed fine-tune goes on
  // exactly.
  bool schedule = true;
  int cycle = 0;                 // >= 0
  double lr_floor = 0.1;         // in (0, 1]
  double warmup_fraction = 0.0;  // in [0, 1)
  // With a held-out set: the loss on it is measured before the first
  // mini-batch, after every E-th of each cycle and its last, and after the
  // fine-tune's last, where E = min(C, max(1, C / evaluations, A)) and A is
  // the number of mini-batches whose training costs eval_cost⁻¹ held-out
  // forward passes (a training sample costs about 3 forward ones): the
  // periodic evaluations cost about eval_cost of the training's compute.
  int evaluations = 8;      // >= 1, per cycle at most
  double eval_cost = 0.05;  // > 0
  // Stops after this many evaluations in a row without a lower held-out
  // loss than the best so far (0: never stops early).
  int patience = 3;
  // At the end, the master weights and activation ranges return to those of
  // the best evaluation (Adam's moments and the sampler stay as trained:
  // they are the search's sensitivity estimate).
  bool restore_best = true;

  static FineTuneOptions Constant() {
    FineTuneOptions options;
    options.schedule = false;
    options.patience = 0;
    options.restore_best = false;
    return options;
  }
};

// INVALID_ARGUMENT naming the field ("finetune.lr_floor", ...) when
// `options` is unusable.
absl::Status ValidateFineTuneOptions(const FineTuneOptions& options);

// The learning rate of mini-batch `step` (0-based) of a fine-tune of `steps`
// mini-batches with base rate `base` under `options` (base when
// !options.schedule); `steps` matters only when options.cycle is 0.
double ScheduledLearningRate(const FineTuneOptions& options, double base,
                             int step, int steps);

// Where a fine-tune is, and the best held-out evaluation so far: all a
// fine-tune stopped between two mini-batches needs to go on exactly
// (QatSession::SaveProgress / RestoreProgress carry it through a checkpoint).
struct FineTuneProgress {
  int steps = 0;  // mini-batches of the whole fine-tune
  int done = 0;   // of them, run
  // Mini-batches done at the last held-out evaluation (-1: none yet).
  int last_evaluation = -1;
  int evaluations = 0;  // held-out evaluations FineTune ran
  // The best held-out evaluation (lowest loss; NaN never counts), where it
  // was (-1: none yet), and the master weights and activation ranges then.
  Evaluation best;
  int best_at = -1;
  std::vector<engine::Tensor> best_weights;
  ActivationQuantizer::State best_ranges;
  int since_best = 0;    // evaluations since the best, none lower
  bool stopped = false;  // early stopping ended it before `steps`

  explicit FineTuneProgress(int total_steps = 0) : steps(total_steps) {}
  bool finished() const { return stopped || done >= steps; }
};

// QatSession owns a model's float master weights and Adam state, and trains
// and evaluates them with fake-quantized weights: forward with Q_b(w), the
// straight-through estimator passes dL/dQ_b(w) to w unchanged (weight grids
// span every weight, so none is clamped), Adam updates w. Adam's bias-corrected
// second moments v̂ serve as the diagonal Hessian for Ω. Unless activations stay
// in float, the input of every quantized layer is fake-quantized too
// (ActivationQuantizer): ranges are calibrated on data (Calibrate) and follow
// the data by a moving average while fine-tuning.
//
// Borrows `model`, which must outlive the session. Not thread-safe (the
// engine parallelises inside each forward/backward).
class QatSession {
 public:
  // `quant` must be valid (ValidateQuantOptions).
  QatSession(const engine::Model& model, const engine::AdamOptions& adam,
             int batch_size, uint64_t seed, const QuantOptions& quant = {});

  // Post-training static calibration: runs `data` through the model with
  // weights quantized under `policy`, observing each quantized layer's input,
  // and fixes the activation ranges from the observers. No-op when
  // activations stay in float or are dynamic.
  absl::Status Calibrate(const Policy& policy, const LabeledData& data);

  // Loss and accuracy of the current weights fake-quantized under `policy`
  // (and activations, with the current ranges), over all of `data` (in
  // batches). Ranges not yet set (no Calibrate, no FineTune) are calibrated
  // on `data` first.
  absl::StatusOr<Evaluation> Evaluate(const Policy& policy,
                                      const LabeledData& data);

  // Evaluate for a base policy and policies that each differ from it in a
  // few layers (a search step's neighbours), with the same numbers as
  // Evaluate gives each of them, but cheaper: every batch runs `base` in full
  // once, then each candidate only from the first node its changed layers
  // affect (Model::ForwardFrom), reusing the shared prefix of activations.
  // Candidates must have base's length; one equal to base costs nothing.
  // `activation_bits` (optional, one per candidate) scores each candidate
  // with its own activation bits (SetActivationBits) instead of the
  // session's; a candidate whose bits differ re-runs from the first
  // quantizable layer.
  struct NeighbourScores {
    Evaluation base;
    std::vector<Evaluation> candidates;  // in the order given
    int64_t node_runs = 0;  // graph nodes executed, base passes included
    // Nodes that Evaluate on every candidate would have executed.
    int64_t naive_node_runs = 0;
  };
  absl::StatusOr<NeighbourScores> EvaluateNeighbours(
      const Policy& base, absl::Span<const Policy> candidates,
      const LabeledData& data, absl::Span<const int> activation_bits = {});

  // The bits of the quantized layers' inputs from now on (2..8), when
  // activations are quantized (ranges are kept; grids re-derived).
  void SetActivationBits(int bits) { activations_.SetBits(bits); }

  // The model's output on `inputs` ([N, ...], one forward pass) with the
  // current weights and activation ranges fake-quantized under `policy`,
  // as the exported model computes it. FAILED_PRECONDITION if static
  // activation ranges are not set.
  absl::StatusOr<engine::Tensor> Predict(const Policy& policy,
                                         const engine::Tensor& inputs);

  // Runs the mini-batches [progress->done, progress->steps) of a fine-tune
  // of `policy` (`options` valid: ValidateFineTuneOptions): Adam steps on
  // mini-batches of `data` drawn without replacement in a reshuffled order
  // each epoch (seeded), at the rate `options` schedules. With `held_out`
  // (optional, borrowed for the call; never trained on), evaluates there as
  // `options` says, keeps the best evaluation in *progress, stops early
  // after `patience` evaluations without improvement, and at the end
  // (finished or stopped) restores the best weights and ranges when
  // options.restore_best: the session then evaluates on `held_out` exactly
  // to progress->best.
  // A progress returned with CANCELLED, or saved and restored, continues
  // bit for bit as if never stopped. INVALID_ARGUMENT if `data` is empty
  // while mini-batches remain, or `held_out` is empty; CANCELLED as soon as
  // `*cancel` (optional) is true between two mini-batches.
  absl::Status FineTune(const Policy& policy, const LabeledData& data,
                        const LabeledData* held_out,
                        const FineTuneOptions& options,
                        FineTuneProgress* progress,
                        const std::atomic<bool>* cancel = nullptr);
  // A fine-tune of `steps` mini-batches whose evaluation before the first
  // one the caller already has: `start`, the current weights' evaluation on
  // the held-out set under the policy to tune (e.g. from scoring it;
  // EvaluateNeighbours gives Evaluate's numbers). Saves that evaluation.
  FineTuneProgress BeginFineTune(int steps, const Evaluation& start,
                                 const FineTuneOptions& options) const;
  // `steps` mini-batches at the session's constant rate, nothing evaluated:
  // FineTuneOptions::Constant().
  absl::Status FineTune(const Policy& policy, const LabeledData& data,
                        int steps, const std::atomic<bool>* cancel = nullptr);

  // A fine-tune's progress into `state`, and back (checked against this
  // session's model: INVALID_ARGUMENT naming what does not fit).
  void SaveProgress(const FineTuneProgress& progress,
                    internal::FineTuneProgressState* state) const;
  absl::StatusOr<FineTuneProgress> RestoreProgress(
      const internal::FineTuneProgressState& state, int steps, int done) const;

  // For each layer l and each entry b of `bit_levels`:
  //   Ω_l(b) = Σ_i v̂_i · (Q_b(w_i) − w_i)²
  // with the current weights and Adam state. Ω(policy) = Σ_l Ω_l(b_l).
  // `hessian` (optional) replaces v̂: one diagonal per parameter, shaped like
  // it (FisherDiagonal), or just the quantizable layers' weights filled.
  std::vector<std::vector<double>> LayerOmegaTable(
      const std::vector<int>& bit_levels,
      const std::vector<engine::Tensor>* hessian = nullptr) const;

  // A fresh diagonal empirical Fisher at the current weights quantized under
  // `policy`: the mean over consecutive mini-batches of `data` (the session's
  // batch size) of the squared mini-batch gradient — what Adam's v̂ estimates
  // by a running average, measured now. One per parameter. Weights and Adam
  // state are unchanged.
  absl::StatusOr<std::vector<engine::Tensor>> FisherDiagonal(
      const Policy& policy, const LabeledData& data);

  // Per quantizable layer, Hutchinson's estimate of the trace of the float
  // model's loss Hessian block: mean over `samples` Rademacher vectors z of
  // z_lᵀ(Hz)_l, Hz by central differences of the gradient over all of `data`
  // (float weights, activations not quantized). Seeded; weights unchanged.
  // Finite differences see the kinks of ReLU-like activations that autograd's
  // Hessian ignores: the traces of layers before such a kink come out larger
  // (about +20 % on a small ReLU MLP) — a smoothed curvature.
  // INVALID_ARGUMENT for samples < 1 or empty data.
  absl::StatusOr<std::vector<double>> HessianTraces(const LabeledData& data,
                                                    int samples, uint64_t seed);

  // The training state — master weights, Adam's step and moments, the
  // mini-batch sampler (RNG, epoch order, cursor), activation ranges and
  // bits — into `state`, and back: a restored session trains, scores and
  // evaluates bit for bit as the saved one would have. RestoreState:
  // INVALID_ARGUMENT (nothing usable changed) if `state` does not fit this
  // session's model and options.
  void SaveState(internal::SessionState* state) const;
  absl::Status RestoreState(const internal::SessionState& state);

  const engine::Model& model() const { return model_; }
  const std::vector<engine::Tensor>& weights() const { return weights_; }
  const engine::Adam& adam() const { return adam_; }
  const QuantOptions& quant_options() const { return quant_; }
  const ActivationQuantizer& activations() const { return activations_; }
  // The weight grid of layer `l` at `bits` for the current weights.
  QuantParams WeightParams(int layer, int bits) const;

 private:
  // Points params_ at the master weights, with quantized layers replaced by
  // their fake-quantized copies under `policy`.
  void QuantizeWeights(const Policy& policy);
  void NextBatch(const LabeledData& data);
  // One Adam step at `learning_rate` on the next mini-batch of `data`.
  absl::Status TrainStep(const Policy& policy, const LabeledData& data,
                         float learning_rate);
  // Enters the held-out evaluation `eval` of the current weights at
  // progress->done: the best so far, early stopping.
  void RecordEvaluation(const Evaluation& eval, const FineTuneOptions& options,
                        FineTuneProgress* progress) const;
  // The loss of `logits`, the model's output on `inputs` under params_:
  // engine::DistillLoss against `teacher` when it is non-null (`labels`
  // optional), else SoftmaxCrossEntropy against `labels` (one per input).
  // When the logits are not finite, the error names the node whose output
  // first went non-finite in a float pass over `inputs` (engine/finite.h).
  absl::StatusOr<engine::LossResult> Loss(const engine::Tensor& inputs,
                                          const engine::Tensor& logits,
                                          absl::Span<const int64_t> labels,
                                          const engine::Tensor* teacher,
                                          engine::Tensor* grad) const;
  // Adds the gradient of the mean loss over `data` (in batches of at most
  // `batch`), weighted by batch size / data size, into *grads (resized and
  // zeroed first). Weights quantized under `policy`; activations as `mode`.
  absl::Status MeanGradient(const Policy& policy, const LabeledData& data,
                            int64_t batch, ActivationQuantizer::Mode mode,
                            std::vector<engine::Tensor>* grads);

  const engine::Model& model_;
  const int batch_size_;
  const QuantOptions quant_;
  ActivationQuantizer activations_;
  std::vector<engine::Tensor> weights_;  // float master weights, one per param
  std::vector<engine::Tensor> quantized_;  // one per quantizable layer
  std::vector<const engine::Tensor*> params_;
  engine::Adam adam_;
  const float learning_rate_;  // the base rate FineTune schedules from
  std::mt19937_64 rng_;
  // Mini-batch state.
  std::vector<int64_t> order_;
  int64_t cursor_ = 0;
  engine::Tensor batch_inputs_;
  std::vector<int64_t> batch_labels_;
  engine::Tensor batch_teacher_;  // distill only
  engine::ForwardTrace trace_;
  engine::ForwardTrace score_trace_;  // EvaluateNeighbours' shared prefix
  std::vector<engine::Tensor> grads_;
  engine::Tensor grad_logits_;
};

}  // namespace mixq::search

#endif  // MIXQ_SEARCH_QAT_H_
