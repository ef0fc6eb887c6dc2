#include "search/qat.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "checkpoint.pb.h"
#include "engine/finite.h"
#include "engine/loss.h"
#include "search/quantizer.h"
#include "search/rng_text.h"
#include "util/check.h"
#include "util/status_macros.h"

namespace mixq::search {
namespace {

// Evaluation runs in batches of this many samples to bound activation memory.
constexpr int64_t kEvalBatch = 512;
// A training sample (forward with trace, backward, Adam) costs about this
// many forward-only samples: FineTuneOptions::eval_cost's exchange rate.
constexpr double kTrainCostInForwards = 3.0;

int64_t SampleElements(const engine::Tensor& inputs) {
  return inputs.shape().empty() || inputs.dim(0) == 0
             ? 0
             : inputs.size() / inputs.dim(0);
}

// The labels of the samples [begin, end) of `data` (empty without labels).
absl::Span<const int64_t> BatchLabels(const LabeledData& data, int64_t begin,
                                      int64_t end) {
  if (!data.has_labels()) return {};
  return absl::MakeConstSpan(data.labels).subspan(begin, end - begin);
}

// The teacher outputs of the samples [begin, end) of `data` (empty unless
// distilling); BatchTeacherOrNull points at it when distilling.
engine::Tensor BatchTeacher(const LabeledData& data, int64_t begin,
                            int64_t end) {
  return data.distill() ? data.teacher.Slice(begin, end) : engine::Tensor();
}
const engine::Tensor* BatchTeacherOrNull(const LabeledData& data,
                                         const engine::Tensor& teacher) {
  return data.distill() ? &teacher : nullptr;
}

// Sums the loss and top-1 hits of evaluation batches.
struct LossTally {
  double loss_sum = 0;
  int64_t correct = 0;
  bool has_labels = true;  // else the accuracy is NaN

  // Adds the loss of one batch of `samples` samples.
  void Add(const engine::LossResult& result, int64_t samples) {
    loss_sum += result.loss * static_cast<double>(samples);
    correct += result.correct;
  }
  // Mean loss and accuracy over `n` samples.
  Evaluation Mean(int64_t n) const {
    const double count = static_cast<double>(n);
    return Evaluation{loss_sum / count,
                      has_labels ? static_cast<double>(correct) / count
                                 : std::numeric_limits<double>::quiet_NaN()};
  }
};

std::vector<engine::Shape> ParamShapes(const engine::Model& model) {
  std::vector<engine::Shape> shapes;
  for (const auto& param : model.params()) shapes.push_back(param.shape);
  return shapes;
}

}  // namespace

absl::Status ValidateQuantOptions(const QuantOptions& options) {
  return ValidateActivationOptions(options.activations);
}

absl::Status ValidateFineTuneOptions(const FineTuneOptions& options) {
  if (!(options.lr_floor > 0 && options.lr_floor <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "finetune.lr_floor: must be in (0, 1], got ", options.lr_floor));
  }
  if (!(options.warmup_fraction >= 0 && options.warmup_fraction < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("finetune.warmup_fraction: must be in [0, 1), got ",
                     options.warmup_fraction));
  }
  if (options.cycle < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("finetune.cycle: must be >= 0, got ", options.cycle));
  }
  if (options.evaluations < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "finetune.evaluations: must be at least 1, got ", options.evaluations));
  }
  if (!(options.eval_cost > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "finetune.eval_cost: must be positive, got ", options.eval_cost));
  }
  if (options.patience < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "finetune.patience: must be >= 0, got ", options.patience));
  }
  return absl::OkStatus();
}

double ScheduledLearningRate(const FineTuneOptions& options, double base,
                             int step, int steps) {
  const int cycle = options.cycle > 0 ? options.cycle : steps;
  if (!options.schedule || cycle <= 1) return base;
  const int at = std::max(step, 0) % cycle;
  const int warmup = static_cast<int>(options.warmup_fraction * cycle);
  if (at < warmup) return base * (at + 1) / (warmup + 1);
  // Cosine from base at the first mini-batch after the warm-up to
  // lr_floor · base at the cycle's last.
  const int span = cycle - 1 - warmup;
  const double t = span > 0 ? static_cast<double>(at - warmup) / span : 1.0;
  const double floor = options.lr_floor;
  return base *
         (floor + (1 - floor) * 0.5 * (1 + std::cos(std::numbers::pi * t)));
}

LabeledData LabeledData::Slice(int64_t begin, int64_t end) const {
  LabeledData out;
  out.inputs = inputs.Slice(begin, end);
  if (has_labels())
    out.labels.assign(labels.begin() + begin, labels.begin() + end);
  if (distill()) out.teacher = teacher.Slice(begin, end);
  return out;
}

QatSession::QatSession(const engine::Model& model,
                       const engine::AdamOptions& adam, int batch_size,
                       uint64_t seed, const QuantOptions& quant)
    : model_(model),
      batch_size_(batch_size),
      quant_(quant),
      activations_(model.quantizable_layers(), quant.activations),
      weights_(model.initial_params()),
      quantized_(model.quantizable_layers().size()),
      adam_(adam, ParamShapes(model)),
      learning_rate_(adam.learning_rate),
      rng_(seed) {
  MIXQ_CHECK(batch_size_ > 0);
  params_.resize(weights_.size());
}

namespace {

void SaveTensor(const engine::Tensor& tensor, internal::TensorState* state) {
  for (int64_t d : tensor.shape()) state->add_shape(d);
  state->set_data(reinterpret_cast<const char*>(tensor.data()),
                  sizeof(float) * static_cast<size_t>(tensor.size()));
}

// `state` as a tensor of shape `expected`; INVALID_ARGUMENT naming `what`
// if it has another shape or size.
absl::StatusOr<engine::Tensor> LoadTensor(const internal::TensorState& state,
                                          const engine::Shape& expected,
                                          absl::string_view what) {
  const engine::Shape shape(state.shape().begin(), state.shape().end());
  if (shape != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", what, ": shape does not fit the model"));
  }
  engine::Tensor tensor(shape);
  if (state.data().size() !=
      sizeof(float) * static_cast<size_t>(tensor.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", what, ": ", state.data().size(),
                     " bytes for ", tensor.size(), " floats"));
  }
  std::memcpy(tensor.data(), state.data().data(), state.data().size());
  return tensor;
}

absl::StatusOr<std::vector<engine::Tensor>> LoadTensors(
    const google::protobuf::RepeatedPtrField<internal::TensorState>& states,
    const std::vector<engine::Tensor>& like, absl::string_view what) {
  if (states.size() != static_cast<int>(like.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", what, ": ", states.size(),
                     " tensors, expected ", like.size()));
  }
  std::vector<engine::Tensor> tensors;
  tensors.reserve(like.size());
  for (size_t i = 0; i < like.size(); ++i) {
    MIXQ_ASSIGN_OR_RETURN(
        engine::Tensor tensor,
        LoadTensor(states[static_cast<int>(i)], like[i].shape(),
                   absl::StrCat(what, "[", i, "]")));
    tensors.push_back(std::move(tensor));
  }
  return tensors;
}

}  // namespace

void QatSession::SaveState(internal::SessionState* state) const {
  state->Clear();
  for (const engine::Tensor& w : weights_) SaveTensor(w, state->add_weights());
  state->set_adam_step(adam_.step_count());
  for (size_t i = 0; i < weights_.size(); ++i) {
    SaveTensor(adam_.first_moment(static_cast<int>(i)), state->add_adam_m());
    SaveTensor(adam_.second_moment(static_cast<int>(i)), state->add_adam_v());
  }
  state->set_rng(RngToText(rng_));
  for (int64_t i : order_) state->add_order(i);
  state->set_cursor(cursor_);
  const ActivationQuantizer::State act = activations_.state();
  state->set_activation_bits(act.bits);
  for (size_t l = 0; l < act.has_range.size(); ++l) {
    state->add_has_range(act.has_range[l]);
    state->add_range_min(act.min[l]);
    state->add_range_max(act.max[l]);
  }
}

absl::Status QatSession::RestoreState(const internal::SessionState& state) {
  // Everything is parsed and checked before anything changes.
  MIXQ_ASSIGN_OR_RETURN(std::vector<engine::Tensor> weights,
                        LoadTensors(state.weights(), weights_, "weights"));
  MIXQ_ASSIGN_OR_RETURN(std::vector<engine::Tensor> m,
                        LoadTensors(state.adam_m(), weights_, "adam_m"));
  MIXQ_ASSIGN_OR_RETURN(std::vector<engine::Tensor> v,
                        LoadTensors(state.adam_v(), weights_, "adam_v"));
  MIXQ_ASSIGN_OR_RETURN(const std::mt19937_64 rng,
                        RngFromText(state.rng(), "checkpoint session rng"));
  std::vector<int64_t> order(state.order().begin(), state.order().end());
  for (int64_t i : order) {
    if (i < 0 || i >= static_cast<int64_t>(order.size()))
      return absl::InvalidArgumentError("checkpoint order: out of range");
  }
  if (state.cursor() < 0 ||
      state.cursor() > static_cast<int64_t>(order.size())) {
    return absl::InvalidArgumentError("checkpoint cursor: out of range");
  }
  ActivationQuantizer::State act;
  act.bits = state.activation_bits();
  act.has_range.assign(state.has_range().begin(), state.has_range().end());
  act.min.assign(state.range_min().begin(), state.range_min().end());
  act.max.assign(state.range_max().begin(), state.range_max().end());
  const ActivationQuantizer::State saved = activations_.state();
  MIXQ_RETURN_IF_ERROR(activations_.Restore(act));
  if (!adam_.Restore(state.adam_step(), std::move(m), std::move(v))) {
    MIXQ_CHECK(activations_.Restore(saved).ok());
    return absl::InvalidArgumentError("checkpoint adam: does not fit");
  }
  weights_ = std::move(weights);
  rng_ = rng;
  order_ = std::move(order);
  cursor_ = state.cursor();
  return absl::OkStatus();
}

void QatSession::SaveProgress(const FineTuneProgress& progress,
                              internal::FineTuneProgressState* state) const {
  state->Clear();
  state->set_last_evaluation(progress.last_evaluation);
  state->set_evaluations(progress.evaluations);
  state->set_best_at(progress.best_at);
  state->set_since_best(progress.since_best);
  state->set_stopped(progress.stopped);
  if (progress.best_at < 0) return;
  state->set_best_loss(progress.best.loss);
  state->set_best_accuracy(progress.best.accuracy);
  for (const engine::Tensor& w : progress.best_weights)
    SaveTensor(w, state->add_best_weights());
  const ActivationQuantizer::State& ranges = progress.best_ranges;
  state->set_best_activation_bits(ranges.bits);
  for (size_t l = 0; l < ranges.has_range.size(); ++l) {
    state->add_best_has_range(ranges.has_range[l]);
    state->add_best_range_min(ranges.min[l]);
    state->add_best_range_max(ranges.max[l]);
  }
}

absl::StatusOr<FineTuneProgress> QatSession::RestoreProgress(
    const internal::FineTuneProgressState& state, int steps, int done) const {
  if (steps < 0 || done < 0 || done > steps || state.last_evaluation() < -1 ||
      state.last_evaluation() > done || state.best_at() < -1 ||
      state.best_at() > done || state.evaluations() < 0 ||
      state.since_best() < 0) {
    return absl::InvalidArgumentError(
        "checkpoint fine-tune progress: out of range");
  }
  FineTuneProgress progress(steps);
  progress.done = done;
  progress.last_evaluation = state.last_evaluation();
  progress.evaluations = state.evaluations();
  progress.since_best = state.since_best();
  progress.stopped = state.stopped();
  progress.best_at = state.best_at();
  if (progress.best_at < 0) return progress;
  progress.best = Evaluation{state.best_loss(), state.best_accuracy()};
  MIXQ_ASSIGN_OR_RETURN(
      progress.best_weights,
      LoadTensors(state.best_weights(), weights_, "best_weights"));
  ActivationQuantizer::State& ranges = progress.best_ranges;
  ranges.bits = state.best_activation_bits();
  ranges.has_range.assign(state.best_has_range().begin(),
                          state.best_has_range().end());
  ranges.min.assign(state.best_range_min().begin(),
                    state.best_range_min().end());
  ranges.max.assign(state.best_range_max().begin(),
                    state.best_range_max().end());
  // The ranges are restored into the session only at the fine-tune's end:
  // they must fit it now (a fine-tune never changes the activation bits).
  const ActivationQuantizer::State current = activations_.state();
  if (ranges.bits != current.bits ||
      ranges.has_range.size() != current.has_range.size() ||
      ranges.min.size() != current.has_range.size() ||
      ranges.max.size() != current.has_range.size()) {
    return absl::InvalidArgumentError(
        "checkpoint fine-tune progress: best ranges do not fit the model");
  }
  return progress;
}

QuantParams QatSession::WeightParams(int layer, int bits) const {
  const engine::QuantizableLayer& info = model_.quantizable_layers()[layer];
  QuantConfig config;
  config.bits = bits;
  config.scheme = quant_.weight_scheme;
  config.granularity = quant_.weight_granularity;
  return ChooseWeightParams(weights_[info.weight_param], info.channel_axis,
                            config);
}

void QatSession::QuantizeWeights(const Policy& policy) {
  const auto& layers = model_.quantizable_layers();
  MIXQ_CHECK(policy.size() == layers.size());
  for (size_t p = 0; p < weights_.size(); ++p) params_[p] = &weights_[p];
  for (size_t l = 0; l < layers.size(); ++l) {
    const auto& layer = layers[l];
    if (policy[l] >= kFloatBits) continue;
    FakeQuantize(weights_[layer.weight_param],
                 WeightParams(static_cast<int>(l), policy[l]), &quantized_[l]);
    params_[layer.weight_param] = &quantized_[l];
  }
  activations_.SetPolicy(policy);
}

absl::Status QatSession::Calibrate(const Policy& policy,
                                   const LabeledData& data) {
  const ActivationOptions& options = quant_.activations;
  if (!options.enabled() || options.dynamic) return absl::OkStatus();
  if (data.size() == 0) {
    return absl::InvalidArgumentError(
        "cannot calibrate activation ranges on an empty data set");
  }
  QuantizeWeights(policy);
  activations_.ResetObservers();
  activations_.set_mode(ActivationQuantizer::Mode::kObserve);
  for (int64_t begin = 0; begin < data.size(); begin += kEvalBatch) {
    const int64_t end = std::min(data.size(), begin + kEvalBatch);
    const engine::Tensor batch = data.inputs.Slice(begin, end);
    absl::StatusOr<engine::Tensor> out =
        model_.Forward(batch, params_, nullptr, &activations_);
    if (!out.ok()) {
      activations_.set_mode(ActivationQuantizer::Mode::kOff);
      return out.status();
    }
  }
  activations_.set_mode(ActivationQuantizer::Mode::kOff);
  return activations_.FinishCalibration();
}

absl::StatusOr<Evaluation> QatSession::Evaluate(const Policy& policy,
                                                const LabeledData& data) {
  if (data.size() == 0)
    return absl::InvalidArgumentError("cannot evaluate on an empty data set");
  QuantizeWeights(policy);
  if (!activations_.ready()) MIXQ_RETURN_IF_ERROR(Calibrate(policy, data));
  activations_.set_mode(ActivationQuantizer::Mode::kQuantize);
  LossTally tally;
  tally.has_labels = data.has_labels();
  for (int64_t begin = 0; begin < data.size(); begin += kEvalBatch) {
    const int64_t end = std::min(data.size(), begin + kEvalBatch);
    const engine::Tensor batch = data.inputs.Slice(begin, end);
    const engine::Tensor teacher = BatchTeacher(data, begin, end);
    MIXQ_ASSIGN_OR_RETURN(
        engine::Tensor logits,
        model_.Forward(batch, params_, nullptr, &activations_));
    MIXQ_ASSIGN_OR_RETURN(const engine::LossResult loss,
                          Loss(batch, logits, BatchLabels(data, begin, end),
                               BatchTeacherOrNull(data, teacher), nullptr));
    tally.Add(loss, end - begin);
  }
  return tally.Mean(data.size());
}

absl::StatusOr<QatSession::NeighbourScores> QatSession::EvaluateNeighbours(
    const Policy& base, absl::Span<const Policy> candidates,
    const LabeledData& data, absl::Span<const int> activation_bits) {
  if (data.size() == 0)
    return absl::InvalidArgumentError("cannot evaluate on an empty data set");
  const auto& layers = model_.quantizable_layers();
  const int num_nodes = model_.num_nodes();
  // Per candidate: its changed layers with their fake-quantized weights, and
  // the first node they affect.
  struct Change {
    int layer;
    engine::Tensor weight;  // empty when the layer stays in float
  };
  struct Variant {
    std::vector<Change> changes;
    int first_node;
    int activation_bits;
  };
  MIXQ_CHECK(activation_bits.empty() ||
             activation_bits.size() == candidates.size());
  const int base_activation_bits = activations_.bits();
  // Every quantized layer's input changes with the activation bits.
  int first_layer_node = num_nodes;
  for (const auto& layer : layers) {
    first_layer_node =
        std::min(first_layer_node, model_.FirstNodeReading(layer.weight_param));
  }
  std::vector<Variant> variants(candidates.size());
  for (size_t c = 0; c < candidates.size(); ++c) {
    const Policy& policy = candidates[c];
    MIXQ_CHECK(policy.size() == base.size() && base.size() == layers.size());
    Variant& variant = variants[c];
    variant.first_node = num_nodes;
    variant.activation_bits =
        activation_bits.empty() ? base_activation_bits : activation_bits[c];
    if (variant.activation_bits != base_activation_bits)
      variant.first_node = first_layer_node;
    for (size_t l = 0; l < layers.size(); ++l) {
      if (policy[l] == base[l]) continue;
      Change change{static_cast<int>(l), {}};
      const int param = layers[l].weight_param;
      if (policy[l] < kFloatBits) {
        FakeQuantize(weights_[param],
                     WeightParams(static_cast<int>(l), policy[l]),
                     &change.weight);
      }
      variant.first_node =
          std::min(variant.first_node, model_.FirstNodeReading(param));
      variant.changes.push_back(std::move(change));
    }
  }
  // Latest first node first: each re-run only overwrites values that every
  // later candidate recomputes anyway.
  std::vector<size_t> order(candidates.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return variants[a].first_node > variants[b].first_node;
  });

  QuantizeWeights(base);
  if (!activations_.ready()) MIXQ_RETURN_IF_ERROR(Calibrate(base, data));
  activations_.set_mode(ActivationQuantizer::Mode::kQuantize);
  NeighbourScores scores;
  scores.candidates.resize(candidates.size());
  LossTally base_tally;
  base_tally.has_labels = data.has_labels();
  std::vector<LossTally> tallies(candidates.size(), base_tally);
  for (int64_t begin = 0; begin < data.size(); begin += kEvalBatch) {
    const int64_t end = std::min(data.size(), begin + kEvalBatch);
    const engine::Tensor batch = data.inputs.Slice(begin, end);
    const engine::Tensor teacher = BatchTeacher(data, begin, end);
    const engine::Tensor* batch_teacher = BatchTeacherOrNull(data, teacher);
    activations_.SetPolicy(base);
    MIXQ_ASSIGN_OR_RETURN(
        engine::Tensor base_logits,
        model_.Forward(batch, params_, &score_trace_, &activations_));
    scores.node_runs += num_nodes;
    MIXQ_ASSIGN_OR_RETURN(
        const engine::LossResult base_loss,
        Loss(batch, base_logits, BatchLabels(data, begin, end), batch_teacher,
             nullptr));
    base_tally.Add(base_loss, end - begin);
    for (size_t c : order) {
      const Variant& variant = variants[c];
      scores.naive_node_runs += num_nodes;
      if (variant.first_node == num_nodes) {  // the base policy itself
        tallies[c].Add(base_loss, end - begin);
        continue;
      }
      for (const Change& change : variant.changes) {
        const int param = layers[change.layer].weight_param;
        params_[param] = candidates[c][change.layer] < kFloatBits
                             ? &change.weight
                             : &weights_[param];
      }
      activations_.SetPolicy(candidates[c]);
      const bool other_bits = variant.activation_bits != base_activation_bits;
      if (other_bits) activations_.SetBits(variant.activation_bits);
      absl::StatusOr<engine::Tensor> logits = model_.ForwardFrom(
          variant.first_node, params_, &score_trace_, &activations_);
      if (other_bits) activations_.SetBits(base_activation_bits);
      for (const Change& change : variant.changes) {
        const int param = layers[change.layer].weight_param;
        params_[param] = base[change.layer] < kFloatBits
                             ? &quantized_[change.layer]
                             : &weights_[param];
      }
      if (!logits.ok()) return logits.status();
      scores.node_runs += num_nodes - variant.first_node;
      MIXQ_ASSIGN_OR_RETURN(const engine::LossResult loss,
                            Loss(batch, *logits, BatchLabels(data, begin, end),
                                 batch_teacher, nullptr));
      tallies[c].Add(loss, end - begin);
    }
  }
  activations_.SetPolicy(base);
  scores.base = base_tally.Mean(data.size());
  for (size_t c = 0; c < candidates.size(); ++c)
    scores.candidates[c] = tallies[c].Mean(data.size());
  return scores;
}

absl::StatusOr<engine::Tensor> QatSession::Predict(
    const Policy& policy, const engine::Tensor& inputs) {
  QuantizeWeights(policy);
  if (!activations_.ready()) {
    return absl::FailedPreconditionError(
        "activation ranges are not calibrated (call Calibrate first)");
  }
  activations_.set_mode(ActivationQuantizer::Mode::kQuantize);
  return model_.Forward(inputs, params_, nullptr, &activations_);
}

void QatSession::NextBatch(const LabeledData& data) {
  const int64_t n = data.size();
  if (static_cast<int64_t>(order_.size()) != n) {
    order_.resize(n);
    std::iota(order_.begin(), order_.end(), int64_t{0});
    cursor_ = n;  // forces a shuffle below
  }
  const int64_t batch = std::min<int64_t>(batch_size_, n);
  if (cursor_ + batch > n) {
    std::shuffle(order_.begin(), order_.end(), rng_);
    cursor_ = 0;
  }
  const int64_t row = SampleElements(data.inputs);
  engine::Shape shape = data.inputs.shape();
  shape[0] = batch;
  batch_inputs_.Resize(shape);
  batch_labels_.resize(data.has_labels() ? batch : 0);
  const int64_t teacher_row = SampleElements(data.teacher);
  if (data.distill()) {
    engine::Shape teacher_shape = data.teacher.shape();
    teacher_shape[0] = batch;
    batch_teacher_.Resize(teacher_shape);
  }
  for (int64_t i = 0; i < batch; ++i) {
    const int64_t src = order_[cursor_ + i];
    std::memcpy(batch_inputs_.data() + i * row, data.inputs.data() + src * row,
                sizeof(float) * row);
    if (data.has_labels()) batch_labels_[i] = data.labels[src];
    if (data.distill()) {
      std::memcpy(batch_teacher_.data() + i * teacher_row,
                  data.teacher.data() + src * teacher_row,
                  sizeof(float) * teacher_row);
    }
  }
  cursor_ += batch;
}

absl::StatusOr<engine::LossResult> QatSession::Loss(
    const engine::Tensor& inputs, const engine::Tensor& logits,
    absl::Span<const int64_t> labels, const engine::Tensor* teacher,
    engine::Tensor* grad) const {
  absl::StatusOr<engine::LossResult> result =
      teacher != nullptr ? engine::DistillLoss(logits, *teacher, labels, grad)
                         : engine::SoftmaxCrossEntropy(logits, labels, grad);
  if (result.ok() || logits.flat().allFinite()) return result;
  // The forward pass overflowed. Only on this error path: a float pass over
  // the same inputs finds the node whose output first went non-finite.
  return engine::WithOverflowSource(result.status(),
                                    model_.FirstNonFiniteNode(inputs, params_));
}

absl::Status QatSession::TrainStep(const Policy& policy,
                                   const LabeledData& data,
                                   float learning_rate) {
  NextBatch(data);
  QuantizeWeights(policy);
  activations_.set_mode(ActivationQuantizer::Mode::kTrain);
  MIXQ_ASSIGN_OR_RETURN(
      engine::Tensor logits,
      model_.Forward(batch_inputs_, params_, &trace_, &activations_));
  MIXQ_ASSIGN_OR_RETURN(
      const engine::LossResult result,
      Loss(batch_inputs_, logits, batch_labels_,
           BatchTeacherOrNull(data, batch_teacher_), &grad_logits_));
  (void)result;
  MIXQ_RETURN_IF_ERROR(
      model_.Backward(trace_, params_, grad_logits_, &grads_, &activations_));
  // Straight-through estimator: the gradient w.r.t. Q_b(w) is applied to w.
  std::vector<engine::Tensor*> mutable_weights;
  for (auto& w : weights_) mutable_weights.push_back(&w);
  adam_.set_learning_rate(learning_rate);
  adam_.Step(absl::MakeSpan(mutable_weights), grads_);
  adam_.set_learning_rate(learning_rate_);
  return absl::OkStatus();
}

void QatSession::RecordEvaluation(const Evaluation& eval,
                                  const FineTuneOptions& options,
                                  FineTuneProgress* progress) const {
  progress->last_evaluation = progress->done;
  // A NaN loss is never below anything, nor the first best.
  const bool better = progress->best_at < 0 ? !std::isnan(eval.loss)
                                            : eval.loss < progress->best.loss;
  if (better) {
    progress->best = eval;
    progress->best_at = progress->done;
    progress->best_weights = weights_;
    progress->best_ranges = activations_.state();
    progress->since_best = 0;
  } else {
    ++progress->since_best;
  }
  if (options.patience > 0 && progress->since_best >= options.patience)
    progress->stopped = true;
}

FineTuneProgress QatSession::BeginFineTune(
    int steps, const Evaluation& start, const FineTuneOptions& options) const {
  FineTuneProgress progress(steps);
  RecordEvaluation(start, options, &progress);
  return progress;
}

absl::Status QatSession::FineTune(const Policy& policy, const LabeledData& data,
                                  const LabeledData* held_out,
                                  const FineTuneOptions& options,
                                  FineTuneProgress* progress,
                                  const std::atomic<bool>* cancel) {
  MIXQ_CHECK(progress->done >= 0 && progress->done <= progress->steps);
  if (progress->steps <= 0) return absl::OkStatus();
  if (data.size() == 0 && !progress->finished()) {
    return absl::InvalidArgumentError(
        "the fine-tuning set is empty (all samples are calibration)");
  }
  if (held_out != nullptr && held_out->size() == 0) {
    return absl::InvalidArgumentError(
        "the held-out set the fine-tune selects weights on is empty");
  }
  // Evaluations at the multiples of `every` within each cycle, at its end
  // and at the fine-tune's (FineTuneOptions): positions that do not depend
  // on the length, so a longer fine-tune evaluates wherever a shorter one
  // of whole cycles did.
  const int cycle = options.cycle > 0 ? options.cycle : progress->steps;
  int every = std::max(1, cycle / options.evaluations);
  const int64_t batch = std::min<int64_t>(batch_size_, data.size());
  if (held_out != nullptr && batch > 0) {
    const double affordable =
        std::ceil(static_cast<double>(held_out->size()) /
                  (options.eval_cost * kTrainCostInForwards *
                   static_cast<double>(batch)));
    every = static_cast<int>(
        std::min<double>(std::max<double>(every, affordable), cycle));
  }
  const auto evaluation_due = [&] {
    const int done = progress->done;
    return held_out != nullptr && progress->last_evaluation != done &&
           (done % cycle % every == 0 || done == progress->steps);
  };
  while (true) {
    if (evaluation_due()) {
      MIXQ_ASSIGN_OR_RETURN(const Evaluation eval, Evaluate(policy, *held_out));
      ++progress->evaluations;
      RecordEvaluation(eval, options, progress);
    }
    if (progress->finished()) break;
    if (cancel != nullptr && cancel->load())
      return absl::CancelledError("job cancelled");
    MIXQ_RETURN_IF_ERROR(TrainStep(
        policy, data,
        static_cast<float>(ScheduledLearningRate(
            options, learning_rate_, progress->done, progress->steps))));
    ++progress->done;
  }
  if (options.restore_best && progress->best_at >= 0 &&
      progress->best_at != progress->done) {
    weights_ = progress->best_weights;
    MIXQ_RETURN_IF_ERROR(activations_.Restore(progress->best_ranges));
  }
  return absl::OkStatus();
}

absl::Status QatSession::FineTune(const Policy& policy, const LabeledData& data,
                                  int steps, const std::atomic<bool>* cancel) {
  FineTuneProgress progress(std::max(steps, 0));
  return FineTune(policy, data, nullptr, FineTuneOptions::Constant(), &progress,
                  cancel);
}

std::vector<std::vector<double>> QatSession::LayerOmegaTable(
    const std::vector<int>& bit_levels,
    const std::vector<engine::Tensor>* hessian) const {
  const auto& layers = model_.quantizable_layers();
  std::vector<std::vector<double>> table(layers.size());
  engine::Tensor quantized;
  for (size_t l = 0; l < layers.size(); ++l) {
    const auto& layer = layers[l];
    const engine::Tensor& w = weights_[layer.weight_param];
    const engine::Tensor diag =
        hessian != nullptr ? (*hessian)[layer.weight_param]
                           : adam_.CorrectedSecondMoment(layer.weight_param);
    MIXQ_CHECK(diag.shape() == w.shape());
    for (int bits : bit_levels) {
      if (bits >= kFloatBits) {
        table[l].push_back(0.0);
        continue;
      }
      FakeQuantize(w, WeightParams(static_cast<int>(l), bits), &quantized);
      table[l].push_back(WeightedPerturbation(w, quantized, diag));
    }
  }
  return table;
}

absl::Status QatSession::MeanGradient(const Policy& policy,
                                      const LabeledData& data, int64_t batch,
                                      ActivationQuantizer::Mode mode,
                                      std::vector<engine::Tensor>* grads) {
  const size_t num_params = weights_.size();
  grads->resize(num_params);
  for (size_t p = 0; p < num_params; ++p) {
    (*grads)[p].Resize(weights_[p].shape());
    (*grads)[p].flat().setZero();
  }
  QuantizeWeights(policy);
  activations_.set_mode(mode);
  for (int64_t begin = 0; begin < data.size(); begin += batch) {
    const int64_t end = std::min(data.size(), begin + batch);
    const engine::Tensor inputs = data.inputs.Slice(begin, end);
    const engine::Tensor teacher = BatchTeacher(data, begin, end);
    MIXQ_ASSIGN_OR_RETURN(
        engine::Tensor logits,
        model_.Forward(inputs, params_, &trace_, &activations_));
    MIXQ_ASSIGN_OR_RETURN(
        const engine::LossResult result,
        Loss(inputs, logits, BatchLabels(data, begin, end),
             BatchTeacherOrNull(data, teacher), &grad_logits_));
    (void)result;
    MIXQ_RETURN_IF_ERROR(
        model_.Backward(trace_, params_, grad_logits_, &grads_, &activations_));
    const float weight =
        static_cast<float>(end - begin) / static_cast<float>(data.size());
    for (size_t p = 0; p < num_params; ++p)
      (*grads)[p].flat() += weight * grads_[p].flat();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<engine::Tensor>> QatSession::FisherDiagonal(
    const Policy& policy, const LabeledData& data) {
  if (data.size() == 0) {
    return absl::InvalidArgumentError(
        "cannot estimate the Fisher on an empty data set");
  }
  QuantizeWeights(policy);
  if (!activations_.ready()) MIXQ_RETURN_IF_ERROR(Calibrate(policy, data));
  std::vector<engine::Tensor> fisher(weights_.size());
  for (size_t p = 0; p < weights_.size(); ++p) {
    fisher[p].Resize(weights_[p].shape());
    fisher[p].flat().setZero();
  }
  const int64_t batches = (data.size() + batch_size_ - 1) / batch_size_;
  std::vector<engine::Tensor> grad;
  for (int64_t begin = 0; begin < data.size(); begin += batch_size_) {
    const int64_t end = std::min<int64_t>(data.size(), begin + batch_size_);
    MIXQ_RETURN_IF_ERROR(
        MeanGradient(policy, data.Slice(begin, end), end - begin,
                     ActivationQuantizer::Mode::kQuantize, &grad));
    for (size_t p = 0; p < weights_.size(); ++p)
      fisher[p].flat() += grad[p].flat().square();
  }
  for (auto& f : fisher) f.flat() /= static_cast<float>(batches);
  return fisher;
}

absl::StatusOr<std::vector<double>> QatSession::HessianTraces(
    const LabeledData& data, int samples, uint64_t seed) {
  if (samples < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("hutchinson_samples: must be at least 1, got ", samples));
  }
  if (data.size() == 0) {
    return absl::InvalidArgumentError(
        "cannot estimate Hessian traces on an empty data set");
  }
  const auto& layers = model_.quantizable_layers();
  const Policy float_policy(layers.size(), kFloatBits);
  // A step of 1e-3 of the weights' RMS along z (entries ±1) keeps the
  // difference of float32 gradients well above their rounding.
  double sum_sq = 0;
  int64_t count = 0;
  for (const auto& layer : layers) {
    sum_sq += weights_[layer.weight_param].flat().cast<double>().square().sum();
    count += weights_[layer.weight_param].size();
  }
  const double rms = count > 0 ? std::sqrt(sum_sq / count) : 0;
  const float eps = static_cast<float>(std::max(rms, 1e-3) * 1e-3);
  std::mt19937_64 rng(seed);
  std::vector<double> traces(layers.size(), 0.0);
  std::vector<engine::Tensor> z(layers.size()), saved(layers.size());
  std::vector<engine::Tensor> grad_plus, grad_minus;
  const auto shift = [&](float sign) {
    for (size_t l = 0; l < layers.size(); ++l) {
      weights_[layers[l].weight_param].flat() =
          saved[l].flat() + (sign * eps) * z[l].flat();
    }
  };
  for (size_t l = 0; l < layers.size(); ++l)
    saved[l] = weights_[layers[l].weight_param];
  absl::Status status;
  for (int s = 0; s < samples && status.ok(); ++s) {
    for (size_t l = 0; l < layers.size(); ++l) {
      z[l].Resize(saved[l].shape());
      float* zp = z[l].data();
      for (int64_t i = 0; i < z[l].size(); ++i)
        zp[i] = (rng() & 1) != 0 ? 1.0f : -1.0f;
    }
    shift(+1.0f);
    status = MeanGradient(float_policy, data, kEvalBatch,
                          ActivationQuantizer::Mode::kOff, &grad_plus);
    if (!status.ok()) break;
    shift(-1.0f);
    status = MeanGradient(float_policy, data, kEvalBatch,
                          ActivationQuantizer::Mode::kOff, &grad_minus);
    if (!status.ok()) break;
    for (size_t l = 0; l < layers.size(); ++l) {
      const int p = layers[l].weight_param;
      const double zhz =
          (z[l].flat().cast<double>() *
           (grad_plus[p].flat() - grad_minus[p].flat()).cast<double>())
              .sum() /
          (2.0 * eps);
      traces[l] += zhz / samples;
    }
  }
  for (size_t l = 0; l < layers.size(); ++l)
    weights_[layers[l].weight_param] = saved[l];
  if (!status.ok()) return status;
  return traces;
}

}  // namespace mixq::search
