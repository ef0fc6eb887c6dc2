// mixq-quality-bench: how good the searched policies are. For each budget
// (average weight bits), runs every strategy on the same model and data with
// the same total fine-tune steps, and measures the final policy's accuracy on
// held-out test images:
//   progressive        docs/design.md §2.3 as specified (min index, Adam's v̂)
//   progressive+       knapsack-guided candidates, landing on the budget
//   progressive-cost   selection per unit of cost saved, a fresh Fisher,
//                      landing on the budget (not run unless --runs asks)
//   knapsack, hawq, uniform
//   random             the best (by calibration loss after the warm-up) of
//                      8 random policies meeting the budget, then fine-tuned
//   bops-act8, bops-act4, bops-search (only with --runs): progressive+ under
//                      a BOPs budget of half the uniform policy's at 8-bit
//                      activations, activations fixed at 8, at 4, or searched
// --objective distill searches label-free (the FP32 model's outputs as the
// target, search/teacher.h); --metric psnr then judges an image-restoration
// model (output = a restored image of the input, which is its own clean
// target) by PSNR on the test images instead of accuracy, and reports the
// validation loss (a distill job's val_loss) instead of validation accuracy.
// Prints a table, writes a CSV (bench/plot_quality.py draws it), and reports
// per progressive run the Spearman rank correlation between the candidates'
// index and their measured calibration accuracy drop, the scoring work saved
// by shared prefixes, and the distance to the knapsack oracle.
//
// --finetune-lengths 200,2000 instead compares fine-tuning recipes on one
// fixed policy (--policy): from the FP32 weights, that many mini-batches
// (in fine-tunes of --finetune-chunk, as a search runs them) with the
// constant learning rate and with the search's recipe (cosine decay, best
// weights by calibration loss, early stopping), each judged on the test
// images; then the recipe's evaluation overhead on fine-tunes of
// --step-finetune mini-batches.
//
// Never run by ctest: minutes per budget on 2 cores.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/psnr.h"
#include "engine/dataset.h"
#include "engine/model.h"
#include "engine/threads.h"
#include "search/cost_model.h"
#include "search/progressive.h"
#include "search/qat.h"
#include "search/quantize.h"
#include "search/teacher.h"
#include "util/file.h"
#include "util/status_macros.h"

namespace mixq::bench {
namespace {

using search::LabeledData;
using search::Policy;
using search::ProgressiveOptions;
using search::Strategy;

struct Flags {
  std::string model;
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  std::vector<double> budgets = {4, 3, 2};
  std::vector<std::string> runs = {"uniform",     "knapsack",     "hawq",
                                   "progressive", "progressive+", "random"};
  int calib = 512;
  int train = 20000;
  int val = 2000;  // training images after the fine-tuning set
  int total_steps = 1000;
  int warmup_steps = 100;
  int step_finetune = 10;
  int threads = 2;
  uint64_t seed = 1;
  double mean = 0.2860;
  double stddev = 0.3530;
  std::string csv = "quality.csv";
  int scoring_steps = 0;  // > 0: only time scoring (shared prefixes vs naive)
  // Non-empty: only compare fine-tuning recipes on `policy`.
  std::vector<int> finetune_lengths;
  std::vector<int> policy = {4, 4, 4};
  int finetune_chunk = 0;        // mini-batches per fine-tune; 0: one fine-tune
  int cycle = 100;               // the recipe's cosine cycle (FineTuneOptions)
  bool constant_recipe = false;  // searches fine-tune at a constant rate
  double learning_rate = 1e-4;
  std::string objective = "cross_entropy";  // engine::ParseObjective
  std::string metric = "accuracy";          // or "psnr" (distill only)
};

// Images per forward pass when predicting the test set for PSNR: bounds the
// activations kept by one pass.
constexpr int64_t kPredictBatch = 500;

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

absl::StatusOr<LabeledData> LoadSplit(const Flags& flags,
                                      const std::string& prefix,
                                      const engine::Model& model) {
  const std::string images =
      absl::StrCat(flags.data_dir, "/", prefix, "-images-idx3-ubyte.gz");
  const std::string labels =
      absl::StrCat(flags.data_dir, "/", prefix, "-labels-idx1-ubyte.gz");
  MIXQ_ASSIGN_OR_RETURN(const std::string image_bytes, ReadFile(images));
  MIXQ_ASSIGN_OR_RETURN(const std::string label_bytes, ReadFile(labels));
  LabeledData data;
  MIXQ_ASSIGN_OR_RETURN(data.inputs, engine::DecodeInputs(image_bytes, images));
  MIXQ_ASSIGN_OR_RETURN(data.labels, engine::DecodeLabels(label_bytes, labels));
  MIXQ_RETURN_IF_ERROR(engine::Normalize(static_cast<float>(flags.mean),
                                         static_cast<float>(flags.stddev),
                                         &data.inputs));
  MIXQ_RETURN_IF_ERROR(
      engine::ConformToModelInput(model.input_shape(), &data.inputs));
  return data;
}

// Spearman's rank correlation (average ranks for ties).
double Spearman(const std::vector<double>& x, const std::vector<double>& y) {
  const auto ranks = [](const std::vector<double>& v) {
    std::vector<size_t> order(v.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return v[a] < v[b]; });
    std::vector<double> r(v.size());
    for (size_t i = 0; i < order.size();) {
      size_t j = i;
      while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
      for (size_t k = i; k <= j; ++k) r[order[k]] = 0.5 * (i + j) + 1;
      i = j + 1;
    }
    return r;
  };
  const std::vector<double> rx = ranks(x), ry = ranks(y);
  const double n = static_cast<double>(x.size());
  const double mx = std::accumulate(rx.begin(), rx.end(), 0.0) / n;
  const double my = std::accumulate(ry.begin(), ry.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < rx.size(); ++i) {
    sxy += (rx[i] - mx) * (ry[i] - my);
    sxx += (rx[i] - mx) * (rx[i] - mx);
    syy += (ry[i] - my) * (ry[i] - my);
  }
  return sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : 0;
}

struct RunResult {
  std::string name;
  double budget = 0;
  Policy policy;
  double avg_bits = 0;
  double size_bytes = 0;
  // Test accuracy in percent, or PSNR in dB (--metric psnr).
  double test_metric = 0;
  // On the validation split (neither trained nor scored on), as a job
  // reports it: accuracy in percent, or the loss (--metric psnr); the
  // exported QDQ file's size.
  double val_metric = std::nan("");
  size_t export_bytes = 0;
  double seconds = 0;
  int steps = 0;
  std::string notes;
};

class QualityBench {
 public:
  // `prepared_onnx`: the bytes `model` was imported from (exports rewrite
  // them); borrowed, like `model`.
  QualityBench(const Flags& flags, const engine::Model& model,
               const std::string& prepared_onnx, LabeledData calib,
               LabeledData train, LabeledData val, LabeledData test)
      : flags_(flags),
        model_(model),
        prepared_onnx_(prepared_onnx),
        cost_(search::CostModel::ForModel(model)),
        calib_(std::move(calib)),
        train_(std::move(train)),
        val_(std::move(val)),
        test_(std::move(test)) {}

  ProgressiveOptions Options(double budget) const {
    ProgressiveOptions options;
    // At 2 average bits and a lowest level of 2, every layer at 2 is the
    // only policy: 1 bit (sign · mean |w|) gives the search room there.
    options.bit_levels = {8, 6, 5, 4, 3, 2};
    if (budget <= 2) options.bit_levels.push_back(1);
    options.budget = {search::Budget::Kind::kAvgBits, budget};
    options.candidates = 8;
    options.max_layers = 2;
    options.warmup_steps = flags_.warmup_steps;
    options.finetune_steps = flags_.step_finetune;
    options.final_finetune_steps = 0;
    options.total_finetune_steps = flags_.total_steps;
    options.learning_rate = flags_.learning_rate;
    options.batch_size = 64;
    options.seed = flags_.seed;
    if (flags_.constant_recipe)
      options.finetune = search::FineTuneOptions::Constant();
    return options;
  }

  bool psnr() const { return flags_.metric == "psnr"; }

  // The test metric of `session`'s weights under `policy`: accuracy in
  // percent, or the mean PSNR in dB of the restored test images against
  // the inputs (their clean targets).
  absl::StatusOr<double> TestMetric(search::QatSession& session,
                                    const Policy& policy) {
    if (!psnr()) {
      MIXQ_ASSIGN_OR_RETURN(search::Evaluation eval,
                            session.Evaluate(policy, test_));
      return 100 * eval.accuracy;
    }
    engine::Tensor restored;
    std::vector<engine::Tensor> parts;
    for (int64_t begin = 0; begin < test_.size(); begin += kPredictBatch) {
      const int64_t end = std::min(test_.size(), begin + kPredictBatch);
      MIXQ_ASSIGN_OR_RETURN(
          engine::Tensor part,
          session.Predict(policy, test_.inputs.Slice(begin, end)));
      parts.push_back(std::move(part));
    }
    engine::Shape shape = parts.front().shape();
    shape[0] = test_.size();
    restored.Resize(shape);
    float* out = restored.data();
    for (const engine::Tensor& part : parts) {
      out = std::copy(part.data(), part.data() + part.size(), out);
    }
    return MeanPsnr(restored, test_.inputs,
                    Normalization{static_cast<float>(flags_.mean),
                                  static_cast<float>(flags_.stddev)});
  }

  // The validation metric as a job reports it: accuracy in percent, or the
  // objective's loss (--metric psnr: the data carries no labels).
  absl::StatusOr<double> ValMetric(search::QatSession& session,
                                   const Policy& policy) {
    MIXQ_ASSIGN_OR_RETURN(search::Evaluation eval,
                          session.Evaluate(policy, val_));
    return psnr() ? eval.loss : 100 * eval.accuracy;
  }

  absl::StatusOr<double> Fp32TestMetric() {
    search::QuantOptions quant;
    quant.activations.bits = search::kFloatBits;
    search::QatSession session(model_, engine::AdamOptions{}, 64, 0, quant);
    const Policy fp32(cost_.num_layers(), search::kFloatBits);
    MIXQ_RETURN_IF_ERROR(session.Calibrate(fp32, calib_));
    return TestMetric(session, fp32);
  }

  absl::StatusOr<RunResult> RunStrategy(const std::string& name,
                                        double budget) {
    ProgressiveOptions options = Options(budget);
    if (name == "progressive+") {
      options.strategy = Strategy::kProgressive;
      options.knapsack_guided = true;
      options.land_on_budget = true;
    } else if (name.rfind("bops-", 0) == 0) {
      // Activation search: a BOPs budget of half what `budget` weight bits
      // cost with 8-bit activations, met by progressive+ with activations
      // fixed at 8 or 4 bits, or searched among 8/6/4.
      options.strategy = Strategy::kProgressive;
      options.knapsack_guided = true;
      options.land_on_budget = true;
      const Policy uniform(cost_.num_layers(), static_cast<int>(budget));
      options.budget = {search::Budget::Kind::kBops,
                        0.5 * static_cast<double>(cost_.Bops(uniform, 8))};
      if (name == "bops-act8") {
        options.activation_bits = 8;
      } else if (name == "bops-act4") {
        options.activation_bits = 4;
      } else if (name == "bops-search") {
        options.activation_levels = {8, 6, 4};
      } else {
        return absl::InvalidArgumentError(absl::StrCat("unknown run ", name));
      }
    } else if (name == "progressive-cost") {
      options.strategy = Strategy::kProgressive;
      options.selection = search::Selection::kPerCostSaved;
      options.refresh_fisher = true;
      options.land_on_budget = true;
    } else {
      MIXQ_ASSIGN_OR_RETURN(options.strategy, search::ParseStrategy(name));
    }
    RunResult result;
    result.name = name;
    result.budget = budget;
    std::vector<search::StepReport> steps;
    search::SearchObserver observer;
    observer.on_step = [&steps](const search::StepReport& report) {
      steps.push_back(report);
      return absl::OkStatus();
    };
    observer.on_finish = [&](search::QatSession& session,
                             const Policy& policy) -> absl::Status {
      MIXQ_ASSIGN_OR_RETURN(result.test_metric, TestMetric(session, policy));
      MIXQ_ASSIGN_OR_RETURN(result.val_metric, ValMetric(session, policy));
      MIXQ_ASSIGN_OR_RETURN(
          const search::QuantizedModel exported,
          search::ExportQuantized(prepared_onnx_, model_, session, policy));
      result.export_bytes = exported.onnx.size();
      return absl::OkStatus();
    };
    const auto start = std::chrono::steady_clock::now();
    MIXQ_ASSIGN_OR_RETURN(search::SearchResult search,
                          search::RunProgressiveSearch(model_, calib_, train_,
                                                       options, observer));
    result.seconds = Seconds(start);
    result.policy = search.final_policy.policy;
    result.avg_bits = search.final_policy.avg_bits;
    result.size_bytes = search.final_policy.size_bytes;
    result.steps = search.steps;
    if (options.budget.kind == search::Budget::Kind::kBops) {
      result.notes = absl::StrFormat(
          "BOPs budget %.4g: final %lld BOPs, activations %d bits",
          options.budget.value,
          static_cast<long long>(search.final_policy.bops),
          search.final_policy.activation_bits);
    }
    if (options.strategy == Strategy::kProgressive) {
      // Index against the measured accuracy drop of every candidate, the
      // base being the previous step's fine-tuned policy (same weights).
      std::vector<double> index, drop;
      double gap = 0, scoring = 0;
      for (size_t s = 1; s < steps.size(); ++s) {
        for (const auto& c : steps[s].candidates) {
          index.push_back(c.index);
          drop.push_back(steps[s - 1].finetuned.accuracy - c.accuracy);
        }
        const double kept = steps[s].candidates.front().omega;
        gap += kept > 0 ? (kept - steps[s].scoring.oracle_omega) / kept : 0;
        scoring += steps[s].scoring.seconds;
      }
      const double n = std::max<double>(1.0, steps.size() - 1.0);
      if (!result.notes.empty()) result.notes += "; ";
      result.notes += absl::StrFormat(
          "steps %d, fine-tune %d; spearman(index, acc drop) %.3f over %d "
          "candidates; node runs %d of %d naive (%.0f%% saved); scoring "
          "%.1f s; mean Ω above oracle %.1f%%",
          search.steps, search.finetune_steps, Spearman(index, drop),
          static_cast<int>(index.size()), search.node_runs,
          search.naive_node_runs,
          search.naive_node_runs > 0
              ? 100.0 * (1.0 - static_cast<double>(search.node_runs) /
                                   search.naive_node_runs)
              : 0.0,
          scoring, 100.0 * gap / n);
    }
    return result;
  }

  // 8 random policies meeting the budget; the one with the lowest
  // calibration loss after the warm-up is fine-tuned for the rest.
  absl::StatusOr<RunResult> RunRandom(double budget) {
    const ProgressiveOptions options = Options(budget);
    const auto start = std::chrono::steady_clock::now();
    search::QatSession session(
        model_,
        engine::AdamOptions{.learning_rate =
                                static_cast<float>(options.learning_rate)},
        64, options.seed);
    const Policy highest(cost_.num_layers(), 8);
    MIXQ_RETURN_IF_ERROR(
        session.FineTune(highest, train_, options.warmup_steps));
    std::mt19937_64 rng(options.seed * 7919 + 17);
    const std::vector<int>& levels = options.bit_levels;
    Policy best;
    double best_loss = INFINITY;
    for (int r = 0; r < 8; ++r) {
      std::vector<int> level(cost_.num_layers());
      for (int& l : level) l = static_cast<int>(rng() % levels.size());
      const auto policy_of = [&] {
        Policy p(level.size());
        for (size_t l = 0; l < level.size(); ++l) p[l] = levels[level[l]];
        return p;
      };
      const auto met = [&] {
        return options.budget.IsMet(cost_.Cost(policy_of(), 8));
      };
      // Lower random layers until the budget holds, then raise random
      // layers while it still holds: a random policy on the budget.
      while (!met()) {
        const size_t l = rng() % level.size();
        if (level[l] + 1 < static_cast<int>(levels.size())) ++level[l];
      }
      for (int tries = 0; tries < 200; ++tries) {
        const size_t l = rng() % level.size();
        if (level[l] == 0) continue;
        --level[l];
        if (!met()) ++level[l];
      }
      const Policy policy = policy_of();
      MIXQ_ASSIGN_OR_RETURN(search::Evaluation eval,
                            session.Evaluate(policy, calib_));
      if (eval.loss < best_loss) {
        best_loss = eval.loss;
        best = policy;
      }
    }
    MIXQ_RETURN_IF_ERROR(session.FineTune(
        best, train_, flags_.total_steps - options.warmup_steps));
    RunResult result;
    result.name = "random";
    result.budget = budget;
    result.policy = best;
    const search::PolicyCost cost = cost_.Cost(best, 8);
    result.avg_bits = cost.avg_bits;
    result.size_bytes = cost.size_bytes;
    MIXQ_ASSIGN_OR_RETURN(result.test_metric, TestMetric(session, best));
    result.seconds = Seconds(start);
    return result;
  }

  // Scoring n neighbours of a policy: shared prefixes
  // (QatSession::EvaluateNeighbours) against one Evaluate per candidate,
  // timed in the same run on the same candidates. Returns a report line.
  absl::StatusOr<std::string> TimeScoring(int steps, int candidates) {
    search::QatSession session(model_, engine::AdamOptions{}, 64, flags_.seed);
    std::mt19937_64 rng(flags_.seed);
    const std::vector<int> levels = {8, 6, 5, 4, 3, 2};
    double shared_s = 0, naive_s = 0, max_diff = 0;
    int64_t runs = 0, naive_runs = 0;
    for (int step = 0; step < steps; ++step) {
      Policy base(cost_.num_layers());
      for (int& b : base) b = levels[rng() % 3];  // 8, 6 or 5
      std::vector<Policy> neighbours;
      for (int c = 0; c < candidates; ++c) {
        Policy p = base;
        const int k = 1 + static_cast<int>(rng() % 2);
        for (int i = 0; i < k; ++i) {
          int& b = p[rng() % p.size()];
          const auto it = std::find(levels.begin(), levels.end(), b);
          if (it + 1 != levels.end()) b = *(it + 1);
        }
        neighbours.push_back(p);
      }
      MIXQ_RETURN_IF_ERROR(session.Calibrate(base, calib_));
      auto start = std::chrono::steady_clock::now();
      MIXQ_ASSIGN_OR_RETURN(
          auto scores, session.EvaluateNeighbours(base, neighbours, calib_));
      shared_s += Seconds(start);
      runs += scores.node_runs;
      naive_runs += scores.naive_node_runs;
      start = std::chrono::steady_clock::now();
      for (size_t c = 0; c < neighbours.size(); ++c) {
        MIXQ_ASSIGN_OR_RETURN(search::Evaluation eval,
                              session.Evaluate(neighbours[c], calib_));
        max_diff =
            std::max(max_diff, std::abs(eval.loss - scores.candidates[c].loss));
      }
      naive_s += Seconds(start);
    }
    return absl::StrFormat(
        "scoring %d candidates on %d calibration samples, %d steps: shared "
        "prefixes %.3f s/step (%lld node runs), one pass each %.3f s/step "
        "(%lld node runs): %.2fx faster, max loss difference %.2g",
        candidates, static_cast<int>(calib_.size()), steps, shared_s / steps,
        static_cast<long long>(runs), naive_s / steps,
        static_cast<long long>(naive_runs), naive_s / shared_s, max_diff);
  }

  // Fine-tunes `policy` from the FP32 weights for `length` mini-batches in
  // fine-tunes of flags_.finetune_chunk (0: one), each under `recipe`
  // selecting on the calibration set when `held_out`. Returns a table row.
  absl::StatusOr<std::string> FineTuneRow(const std::string& name,
                                          const Policy& policy, int length,
                                          const search::FineTuneOptions& recipe,
                                          bool held_out) {
    search::QatSession session(
        model_,
        engine::AdamOptions{.learning_rate =
                                static_cast<float>(flags_.learning_rate)},
        64, flags_.seed);
    MIXQ_RETURN_IF_ERROR(session.Calibrate(policy, calib_));
    const int chunk =
        flags_.finetune_chunk > 0 ? flags_.finetune_chunk : length;
    int run = 0, evaluations = 0, stopped = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int left = length; left > 0; left -= chunk) {
      search::FineTuneProgress progress(std::min(chunk, left));
      MIXQ_RETURN_IF_ERROR(session.FineTune(
          policy, train_, held_out ? &calib_ : nullptr, recipe, &progress));
      run += progress.done;
      evaluations += progress.evaluations;
      stopped += progress.stopped ? 1 : 0;
    }
    const double seconds = Seconds(start);
    MIXQ_ASSIGN_OR_RETURN(const search::Evaluation calib,
                          session.Evaluate(policy, calib_));
    MIXQ_ASSIGN_OR_RETURN(const search::Evaluation test,
                          session.Evaluate(policy, test_));
    return absl::StrFormat(
        "%-9s %6d %6d %9d %5d %7d %10.4f %9.4f %8.2f%% %8.1f", name, length,
        chunk, run, evaluations, stopped, calib.loss, test.loss,
        100 * test.accuracy, seconds);
  }

  // Evaluation overhead of the recipe: `repeats` fine-tunes of `steps`
  // mini-batches with the held-out evaluations (early stopping off, so both
  // run every mini-batch) against the same without, alternating (the
  // machine is shared: its load drifts) and comparing medians. Returns a
  // report line.
  absl::StatusOr<std::string> TimeSelection(const Policy& policy, int steps,
                                            int repeats) {
    search::FineTuneOptions recipe;
    recipe.patience = 0;
    recipe.cycle = steps;
    std::vector<std::unique_ptr<search::QatSession>> sessions;
    for (int with = 0; with < 2; ++with) {
      sessions.push_back(std::make_unique<search::QatSession>(
          model_,
          engine::AdamOptions{.learning_rate =
                                  static_cast<float>(flags_.learning_rate)},
          64, flags_.seed));
      MIXQ_RETURN_IF_ERROR(sessions.back()->Calibrate(policy, calib_));
      // One untimed fine-tune: first-touch allocations.
      MIXQ_RETURN_IF_ERROR(sessions.back()->FineTune(policy, train_, steps));
    }
    std::vector<double> seconds[2];
    int evaluations = 0;
    for (int r = 0; r < repeats; ++r) {
      for (int with = 0; with < 2; ++with) {
        search::FineTuneProgress progress(steps);
        const auto start = std::chrono::steady_clock::now();
        MIXQ_RETURN_IF_ERROR(sessions[with]->FineTune(
            policy, train_, with == 1 ? &calib_ : nullptr, recipe, &progress));
        seconds[with].push_back(Seconds(start));
        evaluations = progress.evaluations;
      }
    }
    const auto median = [](std::vector<double> v) {
      std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
      return v[v.size() / 2];
    };
    const double without = median(seconds[0]), with = median(seconds[1]);
    return absl::StrFormat(
        "evaluation overhead: fine-tunes of %d mini-batches (batch 64), "
        "median of %d: %.1f ms with %d evaluations on %d calibration "
        "samples, %.1f ms without: +%.1f%% (%.2f ms per mini-batch, %.2f ms "
        "per evaluation)",
        steps, repeats, 1e3 * with, evaluations,
        static_cast<int>(calib_.size()), 1e3 * without,
        100 * (with - without) / without, 1e3 * without / steps,
        evaluations > 0 ? 1e3 * (with - without) / evaluations : 0.0);
  }

  const search::CostModel& cost() const { return cost_; }

 private:
  const Flags& flags_;
  const engine::Model& model_;
  const std::string& prepared_onnx_;
  const search::CostModel cost_;
  const LabeledData calib_;
  const LabeledData train_;
  const LabeledData val_;
  const LabeledData test_;
};

absl::Status Run(const Flags& flags) {
  engine::SetEngineThreads(flags.threads);
  MIXQ_ASSIGN_OR_RETURN(const std::string onnx, ReadFile(flags.model));
  MIXQ_ASSIGN_OR_RETURN(const search::PreparedModel prepared,
                        search::PrepareModel(onnx));
  MIXQ_ASSIGN_OR_RETURN(std::unique_ptr<engine::Model> model,
                        engine::Model::FromOnnxBytes(prepared.onnx));
  MIXQ_ASSIGN_OR_RETURN(LabeledData train_all,
                        LoadSplit(flags, "train", *model));
  MIXQ_ASSIGN_OR_RETURN(LabeledData test, LoadSplit(flags, "t10k", *model));
  const int64_t train_end =
      std::min<int64_t>(train_all.size(), flags.calib + flags.train);
  const int64_t val_end =
      std::min<int64_t>(train_all.size(), train_end + flags.val);
  MIXQ_ASSIGN_OR_RETURN(const engine::Objective objective,
                        engine::ParseObjective(flags.objective));
  const bool psnr = flags.metric == "psnr";
  if (!psnr && flags.metric != "accuracy") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metric: \"", flags.metric, "\" is neither accuracy nor psnr"));
  }
  if (psnr && objective != engine::Objective::kDistill) {
    return absl::InvalidArgumentError(
        "--metric psnr: a restoration model has no labels to train on; "
        "use --objective distill");
  }
  LabeledData splits[] = {train_all.Slice(0, flags.calib),
                          train_all.Slice(flags.calib, train_end),
                          train_all.Slice(train_end, val_end), std::move(test)};
  for (LabeledData& split : splits) {
    // A restoration model's output is an image: class labels do not apply
    // (the distill loss refuses them for outputs other than [N, C]).
    if (psnr) split.labels.clear();
    if (objective == engine::Objective::kDistill) {
      MIXQ_RETURN_IF_ERROR(search::AttachTeacher(*model, &split));
    }
  }
  QualityBench bench(flags, *model, prepared.onnx, std::move(splits[0]),
                     std::move(splits[1]), std::move(splits[2]),
                     std::move(splits[3]));
  std::printf(
      "model %s: %d quantizable layers, %lld weights; calib %d, fine-tune set "
      "%lld, %d total fine-tune steps (warm-up %d, %d per progressive step), "
      "%d threads, objective %s, metric %s\n",
      flags.model.c_str(), bench.cost().num_layers(),
      static_cast<long long>(bench.cost().quantizable_weights()), flags.calib,
      static_cast<long long>(train_end - flags.calib), flags.total_steps,
      flags.warmup_steps, flags.step_finetune, flags.threads,
      flags.objective.c_str(), flags.metric.c_str());
  if (flags.scoring_steps > 0) {
    MIXQ_ASSIGN_OR_RETURN(const std::string line,
                          bench.TimeScoring(flags.scoring_steps, 8));
    std::printf("%s\n", line.c_str());
    return absl::OkStatus();
  }
  MIXQ_ASSIGN_OR_RETURN(const double fp32, bench.Fp32TestMetric());
  std::printf(
      psnr ? "FP32 test PSNR %.2f dB\n" : "FP32 test accuracy %.2f %%\n", fp32);
  if (!flags.finetune_lengths.empty()) {
    const Policy& policy = flags.policy;
    if (static_cast<int>(policy.size()) != bench.cost().num_layers()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--policy: ", policy.size(), " bit-widths for ",
                       bench.cost().num_layers(), " layers"));
    }
    std::printf("policy %s, Adam lr %g, the search recipe's cycle %d\n",
                search::PolicyToString(policy).c_str(), flags.learning_rate,
                flags.cycle);
    std::printf("%-9s %6s %6s %9s %5s %7s %10s %9s %9s %8s\n", "recipe",
                "steps", "chunk", "run", "evals", "stopped", "calib loss",
                "test loss", "test acc", "seconds");
    search::FineTuneOptions recipe;
    recipe.cycle = flags.cycle;
    const struct {
      const char* name;
      search::FineTuneOptions recipe;
      bool held_out;
    } recipes[] = {{"constant", search::FineTuneOptions::Constant(), false},
                   {"search", recipe, true}};
    for (const auto& r : recipes) {
      for (int length : flags.finetune_lengths) {
        MIXQ_ASSIGN_OR_RETURN(
            const std::string row,
            bench.FineTuneRow(r.name, policy, length, r.recipe, r.held_out));
        std::printf("%s\n", row.c_str());
        std::fflush(stdout);
      }
    }
    MIXQ_ASSIGN_OR_RETURN(const std::string overhead,
                          bench.TimeSelection(policy, flags.step_finetune, 20));
    std::printf("%s\n", overhead.c_str());
    return absl::OkStatus();
  }
  std::ofstream csv(flags.csv);
  csv << "budget_bits,strategy,avg_bits,size_bytes,"
      << (psnr ? "psnr_db,val_loss" : "accuracy,val_accuracy")
      << ",export_bytes,seed\n";
  csv << absl::StrFormat("32,fp32,32,%.0f,%.2f,,%zu,%d\n",
                         bench.cost().Fp32SizeBytes(), fp32, onnx.size(),
                         static_cast<int>(flags.seed));
  std::printf("%-6s %-13s %8s %10s %9s %9s %9s %8s  %s\n", "budget", "strategy",
              "avg bits", "bytes", psnr ? "PSNR dB" : "test acc",
              psnr ? "val loss" : "val acc", "export B", "seconds", "policy");
  for (double budget : flags.budgets) {
    for (const std::string& name : flags.runs) {
      absl::StatusOr<RunResult> result = name == "random"
                                             ? bench.RunRandom(budget)
                                             : bench.RunStrategy(name, budget);
      if (!result.ok()) {
        std::printf("%-6g %-13s error: %s\n", budget, name.c_str(),
                    std::string(result.status().message()).c_str());
        continue;
      }
      std::printf("%-6g %-13s %8.3f %10.0f %9.2f %9.4g %9zu %8.1f  %s\n",
                  budget, name.c_str(), result->avg_bits, result->size_bytes,
                  result->test_metric, result->val_metric, result->export_bytes,
                  result->seconds,
                  search::PolicyToString(result->policy).c_str());
      if (!result->notes.empty())
        std::printf("       %s\n", result->notes.c_str());
      std::fflush(stdout);
      csv << absl::StrFormat(
          "%g,%s,%.4f,%.0f,%.2f,%.6g,%zu,%d\n", budget, name, result->avg_bits,
          result->size_bytes, result->test_metric, result->val_metric,
          result->export_bytes, static_cast<int>(flags.seed));
      csv.flush();
    }
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace mixq::bench

int main(int argc, char** argv) {
  mixq::bench::Flags flags;
  CLI::App app{"mixq-quality-bench: search strategies against each other"};
  app.add_option("--model", flags.model, "FP32 ONNX model (BN kept or folded)")
      ->required();
  app.add_option("--data-dir", flags.data_dir, "Fashion-MNIST IDX files");
  app.add_option("--budgets", flags.budgets, "average weight bits")
      ->delimiter(',');
  app.add_option("--runs", flags.runs,
                 "uniform,knapsack,hawq,progressive,progressive+,random")
      ->delimiter(',');
  app.add_option("--calib", flags.calib, "calibration samples (train head)");
  app.add_option("--train", flags.train, "fine-tuning samples after them");
  app.add_option("--val", flags.val,
                 "validation samples after those (never trained or scored on)");
  app.add_option("--total-steps", flags.total_steps,
                 "fine-tune steps of every run, warm-up included");
  app.add_option("--warmup-steps", flags.warmup_steps);
  app.add_option("--step-finetune", flags.step_finetune,
                 "fine-tune steps after each progressive step");
  app.add_option("--threads", flags.threads);
  app.add_option("--seed", flags.seed);
  app.add_option("--mean", flags.mean);
  app.add_option("--std", flags.stddev);
  app.add_option("--csv", flags.csv, "results for bench/plot_quality.py");
  app.add_option("--scoring-steps", flags.scoring_steps,
                 "only time scoring 8 neighbours this many times: shared "
                 "prefixes against a forward pass per candidate");
  app.add_option("--finetune-lengths", flags.finetune_lengths,
                 "only compare fine-tuning recipes on --policy for these "
                 "numbers of mini-batches")
      ->delimiter(',');
  app.add_option("--policy", flags.policy,
                 "bit-widths per quantizable layer for --finetune-lengths")
      ->delimiter(',');
  app.add_option("--finetune-chunk", flags.finetune_chunk,
                 "mini-batches per fine-tune for --finetune-lengths (0: one)");
  app.add_option("--cycle", flags.cycle,
                 "the search recipe's cosine cycle for --finetune-lengths");
  app.add_option("--lr", flags.learning_rate, "Adam learning rate");
  app.add_flag("--constant-recipe", flags.constant_recipe,
               "searches fine-tune at a constant rate and keep the last "
               "weights (the recipe before FineTuneOptions)");
  app.add_option("--objective", flags.objective,
                 "cross_entropy (labels) or distill (label-free: the FP32 "
                 "model's outputs)");
  app.add_option("--metric", flags.metric,
                 "accuracy, or psnr (an image-restoration model whose input "
                 "is its clean target; needs --objective distill)");
  CLI11_PARSE(app, argc, argv);
  const absl::Status status = mixq::bench::Run(flags);
  if (!status.ok()) {
    std::fprintf(stderr, "mixq-quality-bench: %s\n",
                 std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
