#include "search/qat.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "engine/loss.h"
#include "search/quantizer.h"
#include "util/check.h"
#include "util/status_macros.h"

namespace mixq::search {
namespace {

// Evaluation runs in batches of this many samples to bound activation memory.
constexpr int64_t kEvalBatch = 512;

int64_t SampleElements(const engine::Tensor& inputs) {
  return inputs.shape().empty() || inputs.dim(0) == 0
             ? 0
             : inputs.size() / inputs.dim(0);
}

std::vector<engine::Shape> ParamShapes(const engine::Model& model) {
  std::vector<engine::Shape> shapes;
  for (const auto& param : model.params()) shapes.push_back(param.shape);
  return shapes;
}

}  // namespace

absl::Status ValidateQuantOptions(const QuantOptions& options) {
  return ValidateActivationOptions(options.activations);
}

LabeledData LabeledData::Slice(int64_t begin, int64_t end) const {
  LabeledData out;
  out.inputs = inputs.Slice(begin, end);
  out.labels.assign(labels.begin() + begin, labels.begin() + end);
  return out;
}

QatSession::QatSession(const engine::Model& model,
                       const engine::AdamOptions& adam, int batch_size,
                       uint64_t seed, const QuantOptions& quant)
    : model_(model),
      batch_size_(batch_size),
      quant_(quant),
      activations_(static_cast<int>(model.quantizable_layers().size()),
                   quant.activations),
      weights_(model.initial_params()),
      quantized_(model.quantizable_layers().size()),
      adam_(adam, ParamShapes(model)),
      rng_(seed) {
  MIXQ_CHECK(batch_size_ > 0);
  params_.resize(weights_.size());
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
  double loss_sum = 0;
  int64_t correct = 0;
  for (int64_t begin = 0; begin < data.size(); begin += kEvalBatch) {
    const int64_t end = std::min(data.size(), begin + kEvalBatch);
    const engine::Tensor batch = data.inputs.Slice(begin, end);
    MIXQ_ASSIGN_OR_RETURN(engine::Tensor logits,
                          model_.Forward(batch, params_, nullptr, &activations_));
    MIXQ_ASSIGN_OR_RETURN(
        engine::LossResult result,
        engine::SoftmaxCrossEntropy(
            logits,
            absl::MakeConstSpan(data.labels).subspan(begin, end - begin),
            nullptr));
    loss_sum += result.loss * static_cast<double>(end - begin);
    correct += result.correct;
  }
  const double n = static_cast<double>(data.size());
  return Evaluation{loss_sum / n, static_cast<double>(correct) / n};
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
  batch_labels_.resize(batch);
  for (int64_t i = 0; i < batch; ++i) {
    const int64_t src = order_[cursor_ + i];
    std::memcpy(batch_inputs_.data() + i * row, data.inputs.data() + src * row,
                sizeof(float) * row);
    batch_labels_[i] = data.labels[src];
  }
  cursor_ += batch;
}

absl::Status QatSession::FineTune(const Policy& policy, const LabeledData& data,
                                  int steps, const std::atomic<bool>* cancel) {
  if (steps <= 0) return absl::OkStatus();
  if (data.size() == 0) {
    return absl::InvalidArgumentError(
        "the fine-tuning set is empty (all samples are calibration)");
  }
  std::vector<engine::Tensor*> mutable_weights;
  for (auto& w : weights_) mutable_weights.push_back(&w);
  for (int s = 0; s < steps; ++s) {
    if (cancel != nullptr && cancel->load())
      return absl::CancelledError("job cancelled");
    NextBatch(data);
    QuantizeWeights(policy);
    activations_.set_mode(ActivationQuantizer::Mode::kTrain);
    MIXQ_ASSIGN_OR_RETURN(
        engine::Tensor logits,
        model_.Forward(batch_inputs_, params_, &trace_, &activations_));
    MIXQ_ASSIGN_OR_RETURN(
        engine::LossResult result,
        engine::SoftmaxCrossEntropy(logits, batch_labels_, &grad_logits_));
    (void)result;
    MIXQ_RETURN_IF_ERROR(model_.Backward(trace_, params_, grad_logits_,
                                         &grads_, &activations_));
    // Straight-through estimator: the gradient w.r.t. Q_b(w) is applied to w.
    adam_.Step(absl::MakeSpan(mutable_weights), grads_);
  }
  return absl::OkStatus();
}

std::vector<std::vector<double>> QatSession::LayerOmegaTable(
    const std::vector<int>& bit_levels) const {
  const auto& layers = model_.quantizable_layers();
  std::vector<std::vector<double>> table(layers.size());
  engine::Tensor quantized;
  for (size_t l = 0; l < layers.size(); ++l) {
    const auto& layer = layers[l];
    const engine::Tensor& w = weights_[layer.weight_param];
    const engine::Tensor hessian =
        adam_.CorrectedSecondMoment(layer.weight_param);
    for (int bits : bit_levels) {
      if (bits >= kFloatBits) {
        table[l].push_back(0.0);
        continue;
      }
      FakeQuantize(w, WeightParams(static_cast<int>(l), bits), &quantized);
      table[l].push_back(WeightedPerturbation(w, quantized, hessian));
    }
  }
  return table;
}

}  // namespace mixq::search
