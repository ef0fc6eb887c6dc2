#include "search/observer.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "util/check.h"

namespace mixq::search {
namespace {

// The finite min/max of `x`; false if it has no finite value.
bool FiniteMinMax(const engine::Tensor& x, Range* range) {
  const auto values = x.flat();
  const auto finite = values.isFinite();
  if (!finite.any()) return false;
  constexpr float kInf = std::numeric_limits<float>::infinity();
  range->min = finite.select(values, kInf).minCoeff();
  range->max = finite.select(values, -kInf).maxCoeff();
  return true;
}

absl::Status NothingSeen() {
  return absl::FailedPreconditionError(
      "the observer has not seen any finite value");
}

}  // namespace

void MinMaxObserver::Observe(const engine::Tensor& x) {
  Range batch;
  if (!FiniteMinMax(x, &batch)) return;
  if (!seen_) {
    range_ = batch;
    seen_ = true;
    return;
  }
  range_.min = std::min(range_.min, batch.min);
  range_.max = std::max(range_.max, batch.max);
}

absl::StatusOr<Range> MinMaxObserver::range() const {
  if (!seen_) return NothingSeen();
  return range_;
}

MovingAverageMinMaxObserver::MovingAverageMinMaxObserver(float momentum)
    : momentum_(momentum) {
  MIXQ_CHECK(momentum > 0.0f && momentum <= 1.0f);
}

void MovingAverageMinMaxObserver::Observe(const engine::Tensor& x) {
  Range batch;
  if (!FiniteMinMax(x, &batch)) return;
  if (!seen_) {
    range_ = batch;
    seen_ = true;
    return;
  }
  // In double: batch.min − range_.min can overflow float (3e38 − (−3e38));
  // the moved value lies between the two and cannot.
  const auto move = [&](float from, float to) {
    const double f = from;
    return static_cast<float>(f + momentum_ * (static_cast<double>(to) - f));
  };
  range_.min = move(range_.min, batch.min);
  range_.max = move(range_.max, batch.max);
}

absl::StatusOr<Range> MovingAverageMinMaxObserver::range() const {
  if (!seen_) return NothingSeen();
  return range_;
}

PercentileObserver::PercentileObserver(double percentile)
    : percentile_(percentile), bins_(kBins, 0) {
  MIXQ_CHECK(percentile > 50.0 && percentile <= 100.0);
}

void PercentileObserver::Grow(float lo, float hi) {
  // Doubles the covered range, merging bins pairwise, until [lo, hi] fits.
  // Growth is anchored at whichever side needs it.
  while (lo < lo_ || hi >= lo_ + kBins * width_) {
    std::vector<int64_t> merged(kBins, 0);
    const bool extend_down = lo < lo_;
    // Extending down: the old range becomes the upper half.
    const int offset = extend_down ? kBins / 2 : 0;
    for (int b = 0; b < kBins; ++b) merged[offset + b / 2] += bins_[b];
    if (extend_down) lo_ -= kBins * width_;
    width_ *= 2;
    bins_ = std::move(merged);
  }
}

void PercentileObserver::Observe(const engine::Tensor& x) {
  Range batch;
  if (!FiniteMinMax(x, &batch)) return;
  if (!seen_) {
    // Initial range: the first batch's, with a little room.
    // In double: the span of two finite floats can overflow float.
    const double span = std::max(
        static_cast<double>(batch.max) - static_cast<double>(batch.min), 1e-6);
    lo_ = batch.min;
    width_ = span * (1.0 + 1e-6) / kBins;
    extremes_ = batch;
    seen_ = true;
  }
  extremes_.min = std::min(extremes_.min, batch.min);
  extremes_.max = std::max(extremes_.max, batch.max);
  Grow(batch.min, batch.max);
  const auto values = x.flat();
  const double inv = 1.0 / width_;
  for (int64_t i = 0; i < values.size(); ++i) {
    const float v = values[i];
    if (!std::isfinite(v)) continue;
    const int b = std::clamp(static_cast<int>((v - lo_) * inv), 0, kBins - 1);
    ++bins_[b];
    ++count_;
  }
}

double PercentileObserver::Quantile(double q) const {
  // The value below which a fraction q of the samples lie, linear inside
  // the bin it falls into.
  const double target = q * static_cast<double>(count_);
  double cumulative = 0;
  for (int b = 0; b < kBins; ++b) {
    const double next = cumulative + static_cast<double>(bins_[b]);
    if (next >= target && bins_[b] > 0) {
      const double inside = (target - cumulative) / bins_[b];
      return lo_ + (b + std::clamp(inside, 0.0, 1.0)) * width_;
    }
    cumulative = next;
  }
  return lo_ + kBins * width_;
}

absl::StatusOr<Range> PercentileObserver::range() const {
  if (!seen_ || count_ == 0) return NothingSeen();
  const double q = percentile_ / 100.0;
  const auto clamped = [&](double v) {
    return std::clamp(static_cast<float>(v), extremes_.min, extremes_.max);
  };
  return Range{clamped(Quantile(1.0 - q)), clamped(Quantile(q))};
}

absl::StatusOr<std::unique_ptr<Observer>> MakeObserver(absl::string_view spec) {
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("observer '", spec, "': ", why,
                     " (expected minmax, moving_average[:<momentum>] or "
                     "percentile:<p>)"));
  };
  if (spec == "minmax") return std::make_unique<MinMaxObserver>();
  absl::string_view rest = spec;
  if (absl::ConsumePrefix(&rest, "moving_average")) {
    float momentum = 0.01f;
    if (!rest.empty()) {
      if (!absl::ConsumePrefix(&rest, ":") ||
          !absl::SimpleAtof(rest, &momentum) || !(momentum > 0.0f) ||
          momentum > 1.0f) {
        return bad("momentum must be in (0, 1]");
      }
    }
    return std::make_unique<MovingAverageMinMaxObserver>(momentum);
  }
  if (absl::ConsumePrefix(&rest, "percentile:")) {
    double p = 0;
    if (!absl::SimpleAtod(rest, &p) || !(p > 50.0) || p > 100.0) {
      return bad("the percentile must be in (50, 100]");
    }
    return std::make_unique<PercentileObserver>(p);
  }
  return bad("unknown observer");
}

}  // namespace mixq::search
