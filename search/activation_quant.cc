#include "search/activation_quant.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/finite.h"
#include "util/check.h"
#include "util/status_macros.h"

namespace mixq::search {
namespace {

bool IsRange(float min, float max) {
  return std::isfinite(min) && std::isfinite(max) && min <= max;
}

// from + momentum·(to − from), in double: the difference of two finite
// floats can overflow float (3e38 − (−3e38)); the result, between `from`
// and `to`, cannot.
float MoveToward(float from, float to, float momentum) {
  const double f = from;
  return static_cast<float>(f + momentum * (static_cast<double>(to) - f));
}

}  // namespace

absl::Status ValidateActivationOptions(const ActivationOptions& options) {
  if (options.bits != kFloatBits && (options.bits < 2 || options.bits > 8)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "activation bits must be 2..8 or 32 (float), got ", options.bits));
  }
  if (!(options.momentum > 0.0f && options.momentum <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "activation range momentum must be in (0, 1], got ", options.momentum));
  }
  return MakeObserver(options.observer).status();
}

namespace {

std::vector<bool> TakesActivations(
    const std::vector<engine::QuantizableLayer>& layers) {
  std::vector<bool> takes(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    takes[l] = layers[l].quantize_input;
  }
  return takes;
}

}  // namespace

ActivationQuantizer::ActivationQuantizer(
    const std::vector<engine::QuantizableLayer>& layers,
    const ActivationOptions& options)
    : ActivationQuantizer(static_cast<int>(layers.size()), options) {
  has_input_ = TakesActivations(layers);
  for (size_t l = 0; l < layers.size(); ++l) {
    quantized_[l] = quantized_[l] && has_input_[l];
  }
}

ActivationQuantizer::ActivationQuantizer(int num_layers,
                                         const ActivationOptions& options)
    : options_(options),
      has_input_(num_layers, true),
      quantized_(num_layers, options.enabled()),
      observers_(num_layers),
      has_range_(num_layers, false),
      min_(num_layers, 0.0f),
      max_(num_layers, 0.0f),
      params_(num_layers) {
  MIXQ_CHECK(ValidateActivationOptions(options).ok(),
             "invalid ActivationOptions");
}

void ActivationQuantizer::SetPolicy(const std::vector<int>& weight_bits) {
  MIXQ_CHECK(weight_bits.size() == quantized_.size());
  for (size_t l = 0; l < weight_bits.size(); ++l) {
    quantized_[l] =
        options_.enabled() && has_input_[l] && weight_bits[l] < kFloatBits;
  }
}

void ActivationQuantizer::ResetObservers() {
  for (auto& observer : observers_) {
    observer = std::move(MakeObserver(options_.observer)).value();
  }
}

absl::Status ActivationQuantizer::FinishCalibration() {
  for (size_t l = 0; l < observers_.size(); ++l) {
    if (!quantized_[l]) continue;
    if (observers_[l] == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "activation ranges of layer ", l, " were never observed"));
    }
    absl::StatusOr<Range> range = observers_[l]->range();
    if (!range.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "activation range of layer ", l, ": ", range.status().message()));
    }
    MIXQ_RETURN_IF_ERROR(SetRange(static_cast<int>(l), range->min, range->max));
  }
  return absl::OkStatus();
}

bool ActivationQuantizer::ready() const {
  if (options_.dynamic) return true;
  for (size_t l = 0; l < quantized_.size(); ++l) {
    if (quantized_[l] && !has_range_[l]) return false;
  }
  return true;
}

const QuantParams* ActivationQuantizer::params(int layer) const {
  return has_range_[layer] ? &params_[layer] : nullptr;
}

void ActivationQuantizer::SetBits(int bits) {
  if (bits == options_.bits) return;
  MIXQ_CHECK(options_.enabled() && bits >= kMinActivationBits &&
             bits <= kMaxActivationBits);
  options_.bits = bits;
  for (size_t l = 0; l < params_.size(); ++l) {
    // Kept ranges passed SetRange once: they are finite and ordered.
    if (has_range_[l]) {
      MIXQ_CHECK(SetRange(static_cast<int>(l), min_[l], max_[l]).ok());
    }
  }
}

ActivationQuantizer::State ActivationQuantizer::state() const {
  return State{options_.bits, has_range_, min_, max_};
}

absl::Status ActivationQuantizer::Restore(const State& state) {
  const size_t n = params_.size();
  if (state.has_range.size() != n || state.min.size() != n ||
      state.max.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "activation state: ", state.has_range.size(), " layers, expected ", n));
  }
  if (state.bits != options_.bits &&
      (!options_.enabled() || state.bits < kMinActivationBits ||
       state.bits > kMaxActivationBits)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "activation state: bits ", state.bits, " do not fit ", options_.bits));
  }
  for (size_t l = 0; l < n; ++l) {
    if (state.has_range[l] && !IsRange(state.min[l], state.max[l])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "activation state: layer ", l, " has the range [", state.min[l], ", ",
          state.max[l], "], which is not finite and ordered"));
    }
  }
  options_.bits = state.bits;
  for (size_t l = 0; l < n; ++l) {
    has_range_[l] = false;
    if (state.has_range[l]) {
      MIXQ_CHECK(
          SetRange(static_cast<int>(l), state.min[l], state.max[l]).ok());
    }
  }
  return absl::OkStatus();
}

absl::Status ActivationQuantizer::SetRange(int layer, float min, float max) {
  if (!IsRange(min, max)) {
    return engine::OverflowError(absl::StrCat("the activation range [", min,
                                              ", ", max, "] of layer ", layer,
                                              " is not finite"));
  }
  min_[layer] = min;
  max_[layer] = max;
  params_[layer] = ParamsFromRange(min, max, options_.bits, options_.scheme);
  has_range_[layer] = true;
  return absl::OkStatus();
}

bool ActivationQuantizer::Active(int layer) const {
  return mode_ != Mode::kOff && quantized_[layer];
}

absl::StatusOr<bool> ActivationQuantizer::Forward(int layer,
                                                  const engine::Tensor& x,
                                                  engine::Tensor* out) {
  if (!Active(layer) || x.size() == 0) return false;
  // Observers skip non-finite values and fake quantization clamps them, so
  // without this check an overflowed pass would go on with a garbage grid.
  MIXQ_RETURN_IF_ERROR(engine::CheckFinite(x, "its input"));
  if (mode_ == Mode::kObserve) {
    if (observers_[layer] == nullptr) {
      observers_[layer] = std::move(MakeObserver(options_.observer)).value();
    }
    observers_[layer]->Observe(x);
    return false;
  }
  // Fixed (calibrated) ranges need no pass over x; the others follow it. A
  // layer read by several nodes (a tied weight) keeps one range, which
  // calibration takes over every reader's input and training moves toward
  // each reader's batch in turn.
  if (options_.dynamic || mode_ == Mode::kTrain) {
    const float batch_min = x.flat().minCoeff();
    const float batch_max = x.flat().maxCoeff();
    if (options_.dynamic || !has_range_[layer]) {
      MIXQ_RETURN_IF_ERROR(SetRange(layer, batch_min, batch_max));
    } else {
      MIXQ_RETURN_IF_ERROR(
          SetRange(layer, MoveToward(min_[layer], batch_min, options_.momentum),
                   MoveToward(max_[layer], batch_max, options_.momentum)));
    }
  }
  MIXQ_CHECK(has_range_[layer],
             "activation quantization without a calibrated range");
  FakeQuantize(x, params_[layer], out);
  return true;
}

void ActivationQuantizer::Backward(int layer, const engine::Tensor& x,
                                   engine::Tensor* grad) const {
  // A dynamic grid is x's own: re-derived here, since a layer read by several
  // nodes (a tied weight) has its kept grid set by the last reader's input.
  if (options_.dynamic) {
    StraightThroughGradient(
        x,
        ParamsFromRange(x.flat().minCoeff(), x.flat().maxCoeff(), options_.bits,
                        options_.scheme),
        grad);
    return;
  }
  StraightThroughGradient(x, params_[layer], grad);
}

}  // namespace mixq::search
