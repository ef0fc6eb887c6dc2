#include "search/progressive.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "checkpoint.pb.h"
#include "search/knapsack.h"
#include "search/quantizer.h"
#include "search/rng_text.h"
#include "util/check.h"
#include "util/status_macros.h"

namespace mixq::search {
namespace {

// Weights symmetric per channel; the inputs of quantized layers at the job's
// activation bits (fake-quantized while scoring and fine-tuning).
QuantOptions SearchQuantOptions(const ProgressiveOptions& options) {
  QuantOptions quant;
  quant.activations.bits =
      options.activation_levels.empty()
          ? options.activation_bits
          : *std::max_element(options.activation_levels.begin(),
                              options.activation_levels.end());
  return quant;
}

// options.finetune with its cycle resolved: by default a search step's
// fine-tune is one cycle, and the warm-up and the final fine-tune run cycles
// of the same length (so a longer final fine-tune never ends worse).
FineTuneOptions FineTuneRecipe(const ProgressiveOptions& options) {
  FineTuneOptions recipe = options.finetune;
  if (recipe.cycle == 0) recipe.cycle = std::max(1, options.finetune_steps);
  return recipe;
}

// Sampling gives up on finding n distinct candidates after this many draws
// per requested candidate (small models have few distinct neighbours).
constexpr int kDrawsPerCandidate = 20;
constexpr int kMaxCandidates = 1024;
constexpr int kMaxSteps = 1000000;
constexpr int kMaxBatch = 1 << 16;
constexpr int kMaxHutchinsonSamples = 4096;
// SearchCheckpoint.version written, and the only one read.
constexpr uint32_t kCheckpointVersion = 1;

// INVALID_ARGUMENT "<field>: ..." unless `bits` is a non-empty list of
// supported weight bit-widths.
absl::Status CheckBits(absl::string_view field, const std::vector<int>& bits) {
  if (bits.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": no candidate bit-width"));
  }
  for (int b : bits) {
    if (b < kMinWeightBits || b > kMaxWeightBits) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": ", b, " is outside ", kMinWeightBits, "..",
                       kMaxWeightBits));
    }
  }
  return absl::OkStatus();
}

std::vector<int> DistinctHighestFirst(std::vector<int> bits) {
  std::sort(bits.begin(), bits.end(), std::greater<int>());
  bits.erase(std::unique(bits.begin(), bits.end()), bits.end());
  return bits;
}

bool Cancelled(const SearchObserver& observer) {
  return observer.cancel != nullptr && observer.cancel->load();
}

// A uniform integer in [lo, hi] from the search's own engine, so results do
// not depend on a standard library's distribution implementation.
int UniformInt(std::mt19937_64& rng, int lo, int hi) {
  const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
  return lo + static_cast<int>(rng() % span);
}

// Where a fine-tune stopped by a shutdown was (kNone: none stopped).
enum class TunePhase { kNone = 0, kWarmup = 1, kStep = 2, kFinal = 3 };
struct Interrupted {
  TunePhase phase = TunePhase::kNone;
  // Its length, mini-batches done and best held-out evaluation so far.
  FineTuneProgress progress;
  StepReport report;  // kStep: the step's report up to its fine-tune
};

class Search {
 public:
  Search(const engine::Model& model, const LabeledData& calib,
         const LabeledData& train, const ProgressiveOptions& options,
         CandidateBits bits, const SearchObserver& observer)
      : calib_(calib),
        train_(train),
        options_(options),
        observer_(observer),
        cost_(CostModel::ForModel(model)),
        bits_(std::move(bits)),
        omega_bits_(bits_.AllBits()),
        allocator_(cost_, bits_, options.budget.kind, omega_bits_),
        session_(model,
                 engine::AdamOptions{.learning_rate = static_cast<float>(
                                         options.learning_rate)},
                 options.batch_size, options.seed, SearchQuantOptions(options)),
        rng_(options.seed ^ 0x9e3779b97f4a7c15ULL),
        recipe_(FineTuneRecipe(options)) {
    level_.assign(cost_.num_layers(), 0);  // every layer at its highest
    act_levels_ = DistinctHighestFirst(options.activation_levels);
  }

  // From the beginning, or from `resume` (a StepReport::checkpoint) when
  // non-empty.
  absl::StatusOr<SearchResult> Run(absl::string_view resume,
                                   absl::string_view warm_start) {
    if (cost_.num_layers() == 0) {
      return absl::InvalidArgumentError(
          "the model has no quantizable layer (Gemm/MatMul weight)");
    }
    MIXQ_RETURN_IF_ERROR(CheckBudgetReachable(
        cost_, options_.budget, bits_.Lowest(),
        ActBits(act_levels_.empty()
                    ? 0
                    : static_cast<int>(act_levels_.size()) - 1)));

    SearchResult result;
    int step = 0;
    auto start = Clock::now();
    // A fine-tune interrupted at the last shutdown, resumed where it stopped.
    Interrupted interrupted;
    if (!resume.empty()) {
      absl::StatusOr<int> restored = Restore(resume, &interrupted);
      if (!restored.ok()) {
        absl::Status unusable = restored.status();
        unusable.SetPayload(kUnusableCheckpointUrl, absl::Cord());
        return unusable;
      }
      step = *restored;
    } else if (!warm_start.empty()) {
      MIXQ_RETURN_IF_ERROR(RestoreWarmStart(warm_start));
    }
    if (resume.empty() || interrupted.phase == TunePhase::kWarmup) {
      // Step 0: warm-up at the highest bits so Adam holds second moments
      // (none after a warm start: the restored state holds them).
      const int warmup_steps =
          warm_start.empty() ? std::max(options_.warmup_steps, 0) : 0;
      Notify(Phase::kWarmup, 0);
      if (resume.empty()) steps_run_ += warmup_steps;
      FineTuneProgress tune = interrupted.phase == TunePhase::kWarmup
                                  ? std::move(interrupted.progress)
                                  : FineTuneProgress(warmup_steps);
      MIXQ_RETURN_IF_ERROR(TuneFor(TunePhase::kWarmup, &tune, nullptr));
      StepReport warmup;
      warmup.step = 0;
      warmup.finetune_steps = warmup_steps;
      MIXQ_ASSIGN_OR_RETURN(warmup.finetuned, ScoreTuned(tune));
      warmup.sensitivities = {omega_bits_,
                              session_.LayerOmegaTable(omega_bits_)};
      warmup.elapsed_seconds = Seconds(start);
      MIXQ_RETURN_IF_ERROR(Report(warmup));
      step = 0;
    } else if (interrupted.phase == TunePhase::kStep) {
      // The step whose fine-tune stopped: finish it and record it.
      ++step;
      Notify(Phase::kSearch, step);
      MIXQ_ASSIGN_OR_RETURN(StepReport report,
                            FinishStep(std::move(interrupted.report),
                                       std::move(interrupted.progress)));
      report.elapsed_seconds = Seconds(start);
      node_runs_ += report.scoring.node_runs;
      naive_node_runs_ += report.scoring.naive_node_runs;
      MIXQ_RETURN_IF_ERROR(Report(report));
    }

    if (options_.strategy == Strategy::kProgressive) {
      // The budget is reachable, and lowering never raises a cost, so the
      // loop ends with the budget met at the latest when every layer is
      // lowest.
      while (!BudgetMet(CurrentPolicy(), CurrentActBits()) &&
             (!Lowerable().empty() || ActLowerable())) {
        if (Cancelled(observer_)) return absl::CancelledError("job cancelled");
        if (++step > kMaxSteps)
          return absl::InternalError("search did not converge");
        Notify(Phase::kSearch, step);
        start = Clock::now();
        MIXQ_ASSIGN_OR_RETURN(StepReport report, SearchStep(step));
        report.elapsed_seconds = Seconds(start);
        node_runs_ += report.scoring.node_runs;
        naive_node_runs_ += report.scoring.naive_node_runs;
        MIXQ_RETURN_IF_ERROR(Report(report));
      }
    } else if (step == 0 && interrupted.phase != TunePhase::kFinal) {
      // (not resumed after the allocation)
      step = 1;
      Notify(Phase::kSearch, step);
      start = Clock::now();
      MIXQ_ASSIGN_OR_RETURN(StepReport report, AllocationStep());
      report.elapsed_seconds = Seconds(start);
      MIXQ_RETURN_IF_ERROR(Report(report));
    }

    if (Cancelled(observer_)) return absl::CancelledError("job cancelled");
    Notify(Phase::kFinal, step + 1);
    FineTuneProgress final_tune;
    if (interrupted.phase == TunePhase::kFinal) {
      final_tune = std::move(interrupted.progress);  // in steps_run_ already
    } else {
      int final_steps = options_.final_finetune_steps;
      if (options_.total_finetune_steps > 0) {
        final_steps =
            std::max(final_steps, options_.total_finetune_steps - steps_run_);
      }
      steps_run_ += std::max(final_steps, 0);
      final_tune = FineTuneProgress(final_steps);
    }
    MIXQ_RETURN_IF_ERROR(TuneFor(TunePhase::kFinal, &final_tune, nullptr));
    MIXQ_ASSIGN_OR_RETURN(result.final_policy, ScoreTuned(final_tune));
    if (observer_.on_kept) {
      MIXQ_RETURN_IF_ERROR(
          observer_.on_kept(session_, step + 1, &result.final_policy));
    }
    if (observer_.on_finish)
      MIXQ_RETURN_IF_ERROR(observer_.on_finish(session_, CurrentPolicy()));
    result.steps = step;
    result.finetune_steps = steps_run_;
    result.node_runs = node_runs_;
    result.naive_node_runs = naive_node_runs_;
    return result;
  }

 private:
  using Clock = std::chrono::steady_clock;
  using OmegaTable = Allocator::Table;

  static double Seconds(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
  }

  void Notify(Phase phase, int step) {
    if (observer_.on_phase) observer_.on_phase(phase, step);
  }
  absl::Status Report(StepReport& report) {
    if (observer_.on_kept) {
      MIXQ_RETURN_IF_ERROR(
          observer_.on_kept(session_, report.step, &report.finetuned));
    }
    if (observer_.checkpoints) {
      report.checkpoint = CheckpointProto(report.step).SerializeAsString();
    }
    recorded_step_ = report.step;
    return observer_.on_step ? observer_.on_step(report) : absl::OkStatus();
  }

  // The state after step `step`: with the same options and data, Restore
  // continues exactly where this search is.
  internal::SearchCheckpoint CheckpointProto(int step) const {
    internal::SearchCheckpoint checkpoint;
    checkpoint.set_version(kCheckpointVersion);
    checkpoint.set_strategy(StrategyName(options_.strategy));
    checkpoint.set_seed(options_.seed);
    checkpoint.set_step(step);
    for (int level : level_) checkpoint.add_level(level);
    checkpoint.set_act_level(act_level_);
    checkpoint.set_rng(RngToText(rng_));
    checkpoint.set_finetune_steps_run(steps_run_);
    checkpoint.set_node_runs(node_runs_);
    checkpoint.set_naive_node_runs(naive_node_runs_);
    session_.SaveState(checkpoint.mutable_session());
    return checkpoint;
  }

  // The interrupted fine-tune of `checkpoint`, checked against this search.
  absl::StatusOr<Interrupted> ReadInterrupted(
      const internal::SearchCheckpoint& checkpoint) const {
    Interrupted interrupted;
    const bool recorded = checkpoint.step() >= 0;
    if (!checkpoint.has_interrupted()) {
      if (!recorded)
        return absl::InvalidArgumentError("checkpoint: no step recorded");
      return interrupted;
    }
    const internal::InterruptedFineTune& in = checkpoint.interrupted();
    const int phase = in.phase();
    const bool phase_fits =
        (phase == static_cast<int>(TunePhase::kWarmup) && !recorded) ||
        (phase == static_cast<int>(TunePhase::kStep) && recorded &&
         options_.strategy == Strategy::kProgressive) ||
        (phase == static_cast<int>(TunePhase::kFinal) && recorded);
    if (!phase_fits) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint: interrupted phase ", phase, " after step ",
                       checkpoint.step(), " does not fit"));
    }
    if (in.target() < 0 || in.done() < 0 || in.done() > in.target()) {
      return absl::InvalidArgumentError(
          "checkpoint: interrupted fine-tune progress out of range");
    }
    interrupted.phase = static_cast<TunePhase>(phase);
    // (Its held-out selection is read once the session is restored.)
    interrupted.progress = FineTuneProgress(in.target());
    interrupted.progress.done = in.done();
    StepReport& report = interrupted.report;
    report.step = checkpoint.step() + 1;
    for (const internal::ScoredPolicyState& state : in.candidates()) {
      if (state.policy_size() != cost_.num_layers()) {
        return absl::InvalidArgumentError(
            "checkpoint: an interrupted step's candidate does not fit");
      }
      ScoredPolicy scored;
      scored.policy.assign(state.policy().begin(), state.policy().end());
      scored.avg_bits = state.avg_bits();
      scored.size_bytes = state.size_bytes();
      scored.bops = state.bops();
      scored.activation_bits = state.activation_bits();
      scored.loss = state.loss();
      scored.accuracy = state.accuracy();
      scored.omega = state.omega();
      scored.index = state.index();
      report.candidates.push_back(std::move(scored));
    }
    report.scoring.node_runs = in.node_runs();
    report.scoring.naive_node_runs = in.naive_node_runs();
    report.scoring.seconds = in.scoring_seconds();
    report.scoring.oracle_omega = in.oracle_omega();
    return interrupted;
  }

  // The state inside an interrupted fine-tune (after recorded_step_).
  std::string InterruptedCheckpoint(const Interrupted& interrupted) const {
    internal::SearchCheckpoint checkpoint = CheckpointProto(recorded_step_);
    internal::InterruptedFineTune* out = checkpoint.mutable_interrupted();
    out->set_phase(static_cast<int>(interrupted.phase));
    out->set_target(interrupted.progress.steps);
    out->set_done(interrupted.progress.done);
    session_.SaveProgress(interrupted.progress, out->mutable_progress());
    const StepReport& report = interrupted.report;
    for (const ScoredPolicy& scored : report.candidates) {
      internal::ScoredPolicyState* state = out->add_candidates();
      for (int b : scored.policy) state->add_policy(b);
      state->set_avg_bits(scored.avg_bits);
      state->set_size_bytes(scored.size_bytes);
      state->set_bops(scored.bops);
      state->set_activation_bits(scored.activation_bits);
      state->set_loss(scored.loss);
      state->set_accuracy(scored.accuracy);
      state->set_omega(scored.omega);
      state->set_index(scored.index);
    }
    out->set_node_runs(report.scoring.node_runs);
    out->set_naive_node_runs(report.scoring.naive_node_runs);
    out->set_scoring_seconds(report.scoring.seconds);
    out->set_oracle_omega(report.scoring.oracle_omega);
    return checkpoint.SerializeAsString();
  }

  // Restores a checkpoint and returns its (last recorded) step; an
  // interrupted fine-tune goes to `*interrupted`. INVALID_ARGUMENT (naming
  // what does not fit) for bytes that do not parse, or a checkpoint of
  // another version, strategy, seed or model.
  absl::StatusOr<int> Restore(absl::string_view bytes,
                              Interrupted* interrupted) {
    internal::SearchCheckpoint checkpoint;
    if (!checkpoint.ParseFromArray(bytes.data(),
                                   static_cast<int>(bytes.size()))) {
      return absl::InvalidArgumentError("checkpoint: does not parse");
    }
    if (checkpoint.version() != kCheckpointVersion) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint: version ", checkpoint.version(),
                       ", expected ", kCheckpointVersion));
    }
    if (checkpoint.strategy() != StrategyName(options_.strategy) ||
        checkpoint.seed() != options_.seed) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint: of strategy ", checkpoint.strategy(),
                       " seed ", checkpoint.seed(), ", not of this search"));
    }
    if (checkpoint.step() < -1 || checkpoint.step() > kMaxSteps ||
        checkpoint.finetune_steps_run() < 0) {
      return absl::InvalidArgumentError("checkpoint: step out of range");
    }
    MIXQ_ASSIGN_OR_RETURN(*interrupted, ReadInterrupted(checkpoint));
    if (checkpoint.level_size() != cost_.num_layers()) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint: ", checkpoint.level_size(),
                       " layers, the model has ", cost_.num_layers()));
    }
    std::vector<int> level(checkpoint.level().begin(),
                           checkpoint.level().end());
    for (int l = 0; l < cost_.num_layers(); ++l) {
      if (level[l] < 0 ||
          level[l] >= static_cast<int>(bits_.per_layer[l].size())) {
        return absl::InvalidArgumentError(
            absl::StrCat("checkpoint: layer ", l, " level out of range"));
      }
    }
    const int act_levels = std::max<int>(1, act_levels_.size());
    if (checkpoint.act_level() < 0 || checkpoint.act_level() >= act_levels)
      return absl::InvalidArgumentError("checkpoint: act_level out of range");
    MIXQ_ASSIGN_OR_RETURN(const std::mt19937_64 rng,
                          RngFromText(checkpoint.rng(), "checkpoint rng"));
    MIXQ_RETURN_IF_ERROR(session_.RestoreState(checkpoint.session()));
    if (checkpoint.interrupted().has_progress()) {
      const int steps = interrupted->progress.steps;
      const int done = interrupted->progress.done;
      MIXQ_ASSIGN_OR_RETURN(
          interrupted->progress,
          session_.RestoreProgress(checkpoint.interrupted().progress(), steps,
                                   done));
    }
    level_ = std::move(level);
    act_level_ = checkpoint.act_level();
    rng_ = rng;
    recorded_step_ = checkpoint.step();
    steps_run_ = checkpoint.finetune_steps_run();
    node_runs_ = checkpoint.node_runs();
    naive_node_runs_ = checkpoint.naive_node_runs();
    return checkpoint.step();
  }

  // Restores the session from `bytes`, the checkpoint of a search's step 0
  // (see RunProgressiveSearch's warm_start). INVALID_ARGUMENT "warm start:
  // ..." when it does not parse, is not of a step 0, or does not fit the
  // model.
  absl::Status RestoreWarmStart(absl::string_view bytes) {
    internal::SearchCheckpoint checkpoint;
    if (!checkpoint.ParseFromArray(bytes.data(),
                                   static_cast<int>(bytes.size()))) {
      return absl::InvalidArgumentError("warm start: does not parse");
    }
    if (checkpoint.version() != kCheckpointVersion) {
      return absl::InvalidArgumentError(
          absl::StrCat("warm start: version ", checkpoint.version(),
                       ", expected ", kCheckpointVersion));
    }
    if (checkpoint.step() != 0 || checkpoint.has_interrupted()) {
      return absl::InvalidArgumentError(
          "warm start: not the state after a warm-up (step 0)");
    }
    const absl::Status restored = session_.RestoreState(checkpoint.session());
    if (!restored.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("warm start: ", restored.message()));
    }
    return absl::OkStatus();
  }

  // Fine-tunes the current policy from `*tune` to its end in `phase`
  // (`partial`: phase kStep's report so far), selecting weights on the
  // calibration set as options_.finetune says. Stopped by the cancel flag
  // between two mini-batches, it hands observer_.on_interrupted a
  // checkpoint of where it stopped (with checkpoints on) and returns
  // CANCELLED. Callers count tune->steps in steps_run_.
  absl::Status TuneFor(TunePhase phase, FineTuneProgress* tune,
                       const StepReport* partial) {
    // Without selection or early stopping evaluations would be wasted.
    const LabeledData* held_out =
        recipe_.restore_best || recipe_.patience > 0 ? &calib_ : nullptr;
    const absl::Status status = session_.FineTune(
        CurrentPolicy(), train_, held_out, recipe_, tune, observer_.cancel);
    if (absl::IsCancelled(status) && observer_.checkpoints &&
        observer_.on_interrupted) {
      Interrupted interrupted;
      interrupted.phase = phase;
      interrupted.progress = *tune;
      if (partial != nullptr) interrupted.report = *partial;
      observer_.on_interrupted(InterruptedCheckpoint(interrupted),
                               recorded_step_);
    }
    return status;
  }

  // A search step's end: the rest of its fine-tune (from `tune`), then the
  // kept policy's scores.
  absl::StatusOr<StepReport> FinishStep(StepReport report,
                                        FineTuneProgress tune) {
    MIXQ_RETURN_IF_ERROR(TuneFor(TunePhase::kStep, &tune, &report));
    report.finetune_steps = options_.finetune_steps;
    MIXQ_ASSIGN_OR_RETURN(report.finetuned, ScoreTuned(tune));
    return report;
  }

  // The current policy's scores after fine-tune `tune`: its best
  // calibration evaluation when the fine-tune returned to it (the session
  // evaluates to exactly that), else a fresh one.
  absl::StatusOr<ScoredPolicy> ScoreTuned(const FineTuneProgress& tune) {
    if (!recipe_.restore_best || tune.best_at < 0)
      return Score(CurrentPolicy());
    ScoredPolicy scored = WithCost(CurrentPolicy(), CurrentActBits());
    scored.loss = tune.best.loss;
    scored.accuracy = tune.best.accuracy;
    return scored;
  }

  Policy PolicyAt(const std::vector<int>& level) const {
    return allocator_.PolicyAt(level);
  }
  std::vector<int> TopLevels() const { return allocator_.TopLevels(); }
  std::vector<int> BottomLevels() const { return allocator_.BottomLevels(); }
  Policy CurrentPolicy() const { return PolicyAt(level_); }

  // `policy` in the budget's unit.
  double BudgetCost(const Policy& policy, int act_bits) const {
    return options_.budget.Measure(cost_.Cost(policy, act_bits));
  }
  bool BudgetMet(const Policy& policy, int act_bits) const {
    return options_.budget.IsMet(cost_.Cost(policy, act_bits));
  }

  // Activation bits at activation level `act_level` (always
  // options_.activation_bits unless activations are searched).
  int ActBits(int act_level) const {
    return act_levels_.empty() ? options_.activation_bits
                               : act_levels_[act_level];
  }
  int CurrentActBits() const { return ActBits(act_level_); }

  ScoredPolicy WithCost(const Policy& policy, int act_bits) const {
    ScoredPolicy scored;
    scored.policy = policy;
    scored.activation_bits = act_bits;
    const PolicyCost cost = cost_.Cost(policy, act_bits);
    scored.avg_bits = cost.avg_bits;
    scored.size_bytes = cost.size_bytes;
    scored.bops = cost.bops;
    return scored;
  }

  // Cost and calibration scores of `policy` with the current weights and
  // activation bits.
  absl::StatusOr<ScoredPolicy> Score(const Policy& policy) {
    ScoredPolicy scored = WithCost(policy, CurrentActBits());
    MIXQ_ASSIGN_OR_RETURN(Evaluation eval, session_.Evaluate(policy, calib_));
    scored.loss = eval.loss;
    scored.accuracy = eval.accuracy;
    return scored;
  }

  // Whether the activation bits are searched and can still go lower.
  bool ActLowerable() const {
    return act_level_ + 1 < static_cast<int>(act_levels_.size());
  }

  // The layers not yet at their lowest candidate bits (never a pinned one).
  std::vector<int> Lowerable() const {
    std::vector<int> lowerable;
    for (int l = 0; l < cost_.num_layers(); ++l) {
      if (level_[l] + 1 < static_cast<int>(bits_.per_layer[l].size()))
        lowerable.push_back(l);
    }
    return lowerable;
  }

  double Omega(const OmegaTable& table, const Policy& policy) const {
    return allocator_.Omega(table, policy);
  }

  // Sets `scored`'s Ω from `table` and its index I = L_C + λ·½·Ω.
  void SetIndex(const OmegaTable& table, ScoredPolicy* scored) const {
    scored->omega = Omega(table, scored->policy);
    scored->index = scored->loss + options_.lambda * 0.5 * scored->omega;
  }

  // The oracle: a lower bound on the least Ω any policy of the search space
  // reaches at no more than `policy`'s cost (at the current activation
  // bits), and that least Ω itself whenever the allocation is exact (the
  // costs' gcd leaves at most kMaxAllocationResolution units of slack, as on
  // the README models). The capacity is `policy`'s own cost in whole units
  // and the DP rounds costs down when it must discretise (the relaxation),
  // so `policy` is always among the selections it weighs: never above
  // Ω(policy). The min with Ω(policy) only absorbs the DP summing Ω in
  // another order than Omega.
  absl::StatusOr<double> OracleOmega(const OmegaTable& table,
                                     const Policy& policy) const {
    const int act_bits = CurrentActBits();
    double capacity = 0;
    for (int l = 0; l < cost_.num_layers(); ++l)
      capacity += allocator_.CostUnits(l, policy[l], act_bits);
    MIXQ_ASSIGN_OR_RETURN(
        const KnapsackSolution bound,
        allocator_.Solve(table, TopLevels(), BottomLevels(), capacity, act_bits,
                         KnapsackRounding::kDown));
    return std::min(Omega(table, PolicyAt(bound.choice)), Omega(table, policy));
  }

  // Ω_l(b) for every layer and bit-width of omega_bits_: from Adam's v̂, or
  // a fresh Fisher on the calibration set.
  absl::StatusOr<OmegaTable> CurrentOmegaTable() {
    if (!options_.refresh_fisher) return session_.LayerOmegaTable(omega_bits_);
    MIXQ_ASSIGN_OR_RETURN(std::vector<engine::Tensor> fisher,
                          session_.FisherDiagonal(CurrentPolicy(), calib_));
    return session_.LayerOmegaTable(omega_bits_, &fisher);
  }

  // Up to n distinct level vectors, each lowering 1..k random lowerable
  // layers of the current one by one level. Each has num_layers + 1
  // entries: the last is the activation level, lowered like a layer when
  // activations are searched.
  // `guide` (optional): only layers above their guide level are lowered,
  // when any is.
  std::vector<std::vector<int>> SampleCandidates(
      const std::vector<int>* guide) {
    std::vector<int> lowerable = Lowerable();
    if (guide != nullptr) {
      std::vector<int> guided;
      for (int l : lowerable)
        if (level_[l] < (*guide)[l]) guided.push_back(l);
      if (!guided.empty()) lowerable = std::move(guided);
    }
    if (ActLowerable()) lowerable.push_back(cost_.num_layers());
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
      level.push_back(act_level_);
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
    MIXQ_ASSIGN_OR_RETURN(const OmegaTable omega_table, CurrentOmegaTable());
    std::vector<int> guide;
    if (options_.knapsack_guided) {
      // The least-Ω policy on the budget from here: candidates only lower
      // layers it lowers, so the search walks towards it while fine-tuning
      // refreshes Ω at every step.
      MIXQ_ASSIGN_OR_RETURN(
          guide, allocator_.Allocate(omega_table, level_, BottomLevels(),
                                     options_.budget.value, CurrentActBits()));
    }
    // Run only while a layer is lowerable, so there is a candidate.
    const std::vector<std::vector<int>> candidates =
        SampleCandidates(options_.knapsack_guided ? &guide : nullptr);
    MIXQ_CHECK(!candidates.empty());
    if (Cancelled(observer_)) return absl::CancelledError("job cancelled");

    const auto scoring_start = Clock::now();
    const Policy current = CurrentPolicy();
    std::vector<Policy> policies;
    std::vector<int> act_bits;
    for (const auto& level : candidates) {
      policies.push_back(PolicyAt(level));
      act_bits.push_back(ActBits(level.back()));
    }
    MIXQ_ASSIGN_OR_RETURN(
        QatSession::NeighbourScores scores,
        session_.EvaluateNeighbours(current, policies, calib_, act_bits));
    report.scoring.seconds = Seconds(scoring_start);
    report.scoring.node_runs = scores.node_runs;
    report.scoring.naive_node_runs = scores.naive_node_runs;

    const double current_index =
        scores.base.loss + options_.lambda * 0.5 * Omega(omega_table, current);
    const double current_cost = BudgetCost(current, CurrentActBits());
    std::vector<double> key(policies.size());
    for (size_t c = 0; c < policies.size(); ++c) {
      ScoredPolicy scored = WithCost(policies[c], act_bits[c]);
      scored.loss = scores.candidates[c].loss;
      scored.accuracy = scores.candidates[c].accuracy;
      SetIndex(omega_table, &scored);
      key[c] = scored.index;
      if (options_.selection == Selection::kPerCostSaved) {
        const double saved =
            current_cost - BudgetCost(policies[c], act_bits[c]);
        key[c] = saved > 0 ? (scored.index - current_index) / saved
                           : std::numeric_limits<double>::infinity();
      }
      report.candidates.push_back(std::move(scored));
    }
    // Rank by the selection key; ties keep sampling order (stable).
    std::vector<size_t> order(candidates.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return key[a] < key[b]; });
    std::vector<ScoredPolicy> ranked;
    for (size_t i : order) ranked.push_back(std::move(report.candidates[i]));
    report.candidates = std::move(ranked);
    std::vector<int> chosen = candidates[order[0]];
    if (chosen.back() != act_level_) {
      act_level_ = chosen.back();
      session_.SetActivationBits(CurrentActBits());
    }
    chosen.pop_back();

    if (options_.land_on_budget &&
        BudgetMet(PolicyAt(chosen), CurrentActBits())) {
      // Among the policies below the current one, the least Ω within the
      // budget: the last step lands on the budget (the candidate may have
      // overshot it by lowering two big layers) with Ω deciding where the
      // last bits go.
      MIXQ_ASSIGN_OR_RETURN(
          std::vector<int> landed,
          allocator_.Allocate(omega_table, level_, BottomLevels(),
                              options_.budget.value, CurrentActBits()));
      if (landed != chosen) {
        MIXQ_ASSIGN_OR_RETURN(ScoredPolicy scored, Score(PolicyAt(landed)));
        SetIndex(omega_table, &scored);
        report.candidates.insert(report.candidates.begin(), std::move(scored));
        chosen = std::move(landed);
      }
    }
    MIXQ_ASSIGN_OR_RETURN(report.scoring.oracle_omega,
                          OracleOmega(omega_table, PolicyAt(chosen)));
    level_ = std::move(chosen);

    steps_run_ += std::max(options_.finetune_steps, 0);
    // The kept policy was just scored on the calibration set with these
    // weights: the fine-tune's evaluation before its first mini-batch.
    const ScoredPolicy& kept = report.candidates.front();
    FineTuneProgress tune = session_.BeginFineTune(
        options_.finetune_steps, Evaluation{kept.loss, kept.accuracy}, recipe_);
    return FinishStep(std::move(report), std::move(tune));
  }

  // uniform / knapsack / hawq: one allocation under the budget, scored as
  // the step's only candidate.
  absl::StatusOr<StepReport> AllocationStep() {
    if (options_.strategy == Strategy::kAuto) return AutoStep();
    StepReport report;
    report.step = 1;
    OmegaTable table;
    if (options_.strategy == Strategy::kHawq) {
      MIXQ_ASSIGN_OR_RETURN(table, HawqOmegaTable());
    } else {
      table = session_.LayerOmegaTable(omega_bits_);
    }
    std::vector<int> level;
    if (options_.strategy == Strategy::kUniform) {
      level = UniformLevels();
    } else {
      MIXQ_ASSIGN_OR_RETURN(
          level, allocator_.Allocate(table, TopLevels(), BottomLevels(),
                                     options_.budget.value, CurrentActBits()));
    }
    level_ = level;
    MIXQ_ASSIGN_OR_RETURN(ScoredPolicy scored, Score(CurrentPolicy()));
    SetIndex(table, &scored);
    report.candidates.push_back(scored);
    report.finetuned = std::move(scored);
    MIXQ_ASSIGN_OR_RETURN(report.scoring.oracle_omega,
                          OracleOmega(table, CurrentPolicy()));
    return report;
  }

  // auto (Strategy::kAuto): uniform's and knapsack's allocations, each
  // scored on the calibration set; the lower calibration loss is kept
  // (ties: uniform). The step's candidates are the distinct allocations
  // ranked by calibration loss.
  absl::StatusOr<StepReport> AutoStep() {
    StepReport report;
    report.step = 1;
    const auto scoring_start = Clock::now();
    const OmegaTable omega = session_.LayerOmegaTable(omega_bits_);
    std::vector<std::vector<int>> levels = {UniformLevels()};
    MIXQ_ASSIGN_OR_RETURN(
        std::vector<int> knapsack,
        allocator_.Allocate(omega, TopLevels(), BottomLevels(),
                            options_.budget.value, CurrentActBits()));
    if (knapsack != levels.front()) levels.push_back(std::move(knapsack));
    std::vector<std::pair<ScoredPolicy, std::vector<int>>> scored;
    for (std::vector<int>& level : levels) {
      MIXQ_ASSIGN_OR_RETURN(ScoredPolicy policy, Score(PolicyAt(level)));
      SetIndex(omega, &policy);
      scored.emplace_back(std::move(policy), std::move(level));
    }
    std::stable_sort(scored.begin(), scored.end(),
                     [](const auto& a, const auto& b) {
                       return a.first.loss < b.first.loss;
                     });
    for (const auto& [policy, level] : scored)
      report.candidates.push_back(policy);
    level_ = scored.front().second;
    report.finetuned = report.candidates.front();
    report.scoring.seconds = Seconds(scoring_start);
    MIXQ_ASSIGN_OR_RETURN(report.scoring.oracle_omega,
                          OracleOmega(omega, CurrentPolicy()));
    return report;
  }

  // Ω_l(b) = Tr(H_l)/n_l · ‖Q_b(W_l) − W_l‖² (HAWQ-V2), the traces by
  // Hutchinson on the first hessian_samples calibration samples.
  absl::StatusOr<OmegaTable> HawqOmegaTable() {
    const LabeledData sample = calib_.Slice(
        0, std::min<int64_t>(calib_.size(), options_.hessian_samples));
    MIXQ_ASSIGN_OR_RETURN(
        const std::vector<double> traces,
        session_.HessianTraces(sample, options_.hutchinson_samples,
                               options_.seed + 1));
    std::vector<engine::Tensor> diag(session_.weights().size());
    const auto& layers = session_.model().quantizable_layers();
    for (size_t l = 0; l < layers.size(); ++l) {
      const engine::Tensor& w = session_.weights()[layers[l].weight_param];
      engine::Tensor& d = diag[layers[l].weight_param];
      d.Resize(w.shape());
      // A negative estimate (noise, or a saddle) would reward quantizing: a
      // layer without measured curvature costs nothing instead.
      d.flat().setConstant(static_cast<float>(std::max(traces[l], 0.0) /
                                              static_cast<double>(w.size())));
    }
    return session_.LayerOmegaTable(omega_bits_, &diag);
  }

  // Every layer at the same bits b, the highest b (of any layer's
  // candidates) that meets the budget; a layer without b takes its highest
  // candidate below b, or its lowest. Pinned layers keep their bits.
  std::vector<int> UniformLevels() const {
    std::vector<int> level;
    for (int b : omega_bits_) {
      level.assign(cost_.num_layers(), 0);
      for (int l = 0; l < cost_.num_layers(); ++l) {
        const auto& layer_bits = bits_.per_layer[l];  // highest first
        int i = 0;
        while (i + 1 < static_cast<int>(layer_bits.size()) && layer_bits[i] > b)
          ++i;
        level[l] = i;
      }
      if (BudgetMet(PolicyAt(level), CurrentActBits())) return level;
    }
    return BottomLevels();
  }

  const LabeledData& calib_;
  const LabeledData& train_;
  const ProgressiveOptions& options_;
  const SearchObserver& observer_;
  const CostModel cost_;
  const CandidateBits bits_;
  // Ω is tabulated once per step for every bit-width any layer may take:
  // every layer's bits, distinct, highest first.
  const std::vector<int> omega_bits_;
  const Allocator allocator_;  // borrows cost_ and bits_
  std::vector<int> level_;     // per layer: index into bits_.per_layer[l]
  // Searched activation bits, distinct and highest first (empty: fixed at
  // options_.activation_bits), and the current index into them.
  std::vector<int> act_levels_;
  int act_level_ = 0;
  QatSession session_;
  std::mt19937_64 rng_;
  // options_.finetune, its cycle resolved.
  const FineTuneOptions recipe_;
  int steps_run_ = 0;  // fine-tune steps so far (counting whole fine-tunes)
  int recorded_step_ = -1;  // the last step reported
  int64_t node_runs_ = 0;   // summed over the steps' ScoringStats
  int64_t naive_node_runs_ = 0;
};

}  // namespace

bool IsUnusableCheckpoint(const absl::Status& status) {
  return status.GetPayload(kUnusableCheckpointUrl).has_value();
}

std::string StrategyName(Strategy strategy) {
  switch (strategy) {
    case Strategy::kProgressive:
      return "progressive";
    case Strategy::kUniform:
      return "uniform";
    case Strategy::kKnapsack:
      return "knapsack";
    case Strategy::kHawq:
      return "hawq";
    case Strategy::kAuto:
      return "auto";
  }
  return "unknown";
}

absl::StatusOr<Strategy> ParseStrategy(absl::string_view name) {
  for (Strategy strategy :
       {Strategy::kProgressive, Strategy::kUniform, Strategy::kKnapsack,
        Strategy::kHawq, Strategy::kAuto}) {
    if (name == StrategyName(strategy)) return strategy;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("strategy: unknown '", name,
                   "' (progressive, uniform, knapsack, hawq, auto)"));
}

absl::Status ValidateOptions(const ProgressiveOptions& options) {
  MIXQ_RETURN_IF_ERROR(CheckBits("bits", options.bit_levels));
  std::map<std::string, size_t> listed;
  for (size_t i = 0; i < options.layers.size(); ++i) {
    const LayerCandidates& layer = options.layers[i];
    const std::string field = absl::StrCat("layers[", i, "]");
    if (layer.name.empty())
      return absl::InvalidArgumentError(absl::StrCat(field, ".name: required"));
    const auto [it, inserted] = listed.emplace(layer.name, i);
    if (!inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".name: '", layer.name,
                       "' is listed twice (also layers[", it->second, "])"));
    }
    MIXQ_RETURN_IF_ERROR(CheckBits(absl::StrCat(field, ".bits"), layer.bits));
  }
  if (options.activation_bits != kFloatBits &&
      (options.activation_bits < kMinActivationBits ||
       options.activation_bits > kMaxActivationBits)) {
    return absl::InvalidArgumentError(
        absl::StrCat("activation_bits: must be in ", kMinActivationBits, "..",
                     kMaxActivationBits, " or ", kFloatBits, " (float), got ",
                     options.activation_bits));
  }
  for (size_t i = 0; i < options.activation_levels.size(); ++i) {
    const int b = options.activation_levels[i];
    if (b < kMinActivationBits || b > kMaxActivationBits) {
      return absl::InvalidArgumentError(absl::StrCat(
          "activation_levels[", i, "]: must be in ", kMinActivationBits, "..",
          kMaxActivationBits, ", got ", b));
    }
  }
  if (!options.activation_levels.empty() &&
      options.strategy != Strategy::kProgressive) {
    return absl::InvalidArgumentError(
        absl::StrCat("activation_levels: only the progressive strategy "
                     "searches activation bits (strategy ",
                     StrategyName(options.strategy), ")"));
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
  if (options.total_finetune_steps < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "total_finetune_steps: negative (", options.total_finetune_steps, ")"));
  }
  if (options.hutchinson_samples < 1 ||
      options.hutchinson_samples > kMaxHutchinsonSamples) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hutchinson_samples: must be in 1..", kMaxHutchinsonSamples, ", got ",
        options.hutchinson_samples));
  }
  if (options.hessian_samples < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hessian_samples: must be at least 1, got ", options.hessian_samples));
  }
  MIXQ_RETURN_IF_ERROR(ValidateFineTuneOptions(options.finetune));
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
  const double value = options.budget.value;
  switch (options.budget.kind) {
    case Budget::Kind::kAvgBits:
      if (!(value > 0))
        return absl::InvalidArgumentError("budget.avg_bits: must be positive");
      break;
    case Budget::Kind::kSizeFraction:
      if (!(value > 0 && value <= 1)) {
        return absl::InvalidArgumentError(
            "budget.size_fraction: must be in (0, 1]");
      }
      break;
    case Budget::Kind::kBytes:
      if (!(value > 0)) {
        return absl::InvalidArgumentError(
            "budget.size_bytes: must be positive");
      }
      break;
    case Budget::Kind::kBops:
      if (!(value > 0) || std::isinf(value)) {
        return absl::InvalidArgumentError(
            "budget.bops: must be positive and finite");
      }
      break;
  }
  return absl::OkStatus();
}

absl::StatusOr<CandidateBits> ResolveCandidateBits(
    const ProgressiveOptions& options, const engine::Model& model) {
  std::vector<std::string> names;
  for (const engine::QuantizableLayer& layer : model.quantizable_layers())
    names.push_back(layer.name);
  return ResolveCandidateBits(options, names);
}

absl::StatusOr<CandidateBits> ResolveCandidateBits(
    const ProgressiveOptions& options, const std::vector<std::string>& layers) {
  std::map<std::string, int> index;
  for (size_t l = 0; l < layers.size(); ++l)
    index.emplace(layers[l], static_cast<int>(l));
  CandidateBits bits;
  bits.per_layer.assign(layers.size(),
                        DistinctHighestFirst(options.bit_levels));
  for (size_t i = 0; i < options.layers.size(); ++i) {
    const LayerCandidates& layer = options.layers[i];
    const auto it = index.find(layer.name);
    if (it == index.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layers[", i, "].name: no quantizable layer '", layer.name,
          "'; layers are: ",
          layers.empty() ? "(none)" : absl::StrJoin(layers, ", ")));
    }
    bits.per_layer[it->second] = DistinctHighestFirst(layer.bits);
  }
  if (options.pin_first_last && !layers.empty()) {
    for (auto* layer_bits : {&bits.per_layer.front(), &bits.per_layer.back()})
      layer_bits->resize(1);  // keeps the highest
  }
  return bits;
}

absl::StatusOr<SearchResult> RunProgressiveSearch(
    const engine::Model& model, const LabeledData& calib,
    const LabeledData& train, const ProgressiveOptions& options,
    const SearchObserver& observer, absl::string_view resume_from,
    absl::string_view warm_start) {
  MIXQ_RETURN_IF_ERROR(ValidateOptions(options));
  if (calib.size() == 0)
    return absl::InvalidArgumentError(
        "calib_size: the calibration set is empty");
  MIXQ_ASSIGN_OR_RETURN(CandidateBits bits,
                        ResolveCandidateBits(options, model));
  Search search(model, calib, train, options, std::move(bits), observer);
  return search.Run(resume_from, warm_start);
}

}  // namespace mixq::search
