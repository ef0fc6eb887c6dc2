// Observers: they watch the values a tensor takes over calibration batches
// and decide the range [min, max] its quantization grid must cover
// (docs/design.md §1.3). Per tensor. Not thread-safe.
#ifndef MIXQ_SEARCH_OBSERVER_H_
#define MIXQ_SEARCH_OBSERVER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/tensor.h"

namespace mixq::search {

struct Range {
  float min = 0;
  float max = 0;
};

class Observer {
 public:
  virtual ~Observer() = default;
  // Records one batch. NaN values are ignored (they carry no range), and so
  // are infinities.
  virtual void Observe(const engine::Tensor& x) = 0;
  // The range so far; FAILED_PRECONDITION if no finite value was observed.
  virtual absl::StatusOr<Range> range() const = 0;
};

// The smallest and largest value seen.
class MinMaxObserver : public Observer {
 public:
  void Observe(const engine::Tensor& x) override;
  absl::StatusOr<Range> range() const override;

 private:
  bool seen_ = false;
  Range range_;
};

// PyTorch's MovingAverageMinMaxObserver: the first batch sets the range, each
// later one moves it by `momentum` toward the batch's own min/max:
// min ← min + momentum·(batch_min − min).
class MovingAverageMinMaxObserver : public Observer {
 public:
  explicit MovingAverageMinMaxObserver(float momentum = 0.01f);
  void Observe(const engine::Tensor& x) override;
  absl::StatusOr<Range> range() const override;

 private:
  float momentum_;
  bool seen_ = false;
  Range range_;
};

// [P_(100−p), P_p]: the p-th percentile of the values seen and its mirror
// (p = 99.99 drops the 0.01 % most extreme values on each side), so a few
// outliers do not stretch the grid. Values go to a histogram of kBins bins
// over the range seen so far; when a batch falls outside it, the range
// doubles (bins merge pairwise) until it fits, so memory stays constant. The
// result is exact to one bin width: (max − min) / kBins of the final range,
// placed at the bin edge the percentile falls into (interpolated inside),
// and clamped into the [min, max] actually seen (so p = 100 gives them).
class PercentileObserver : public Observer {
 public:
  static constexpr int kBins = 4096;
  explicit PercentileObserver(double percentile);
  void Observe(const engine::Tensor& x) override;
  absl::StatusOr<Range> range() const override;

 private:
  void Grow(float lo, float hi);
  double Quantile(double q) const;

  double percentile_;
  double lo_ = 0, width_ = 0;  // histogram covers [lo_, lo_ + kBins·width_)
  bool seen_ = false;
  Range extremes_;  // the min and max seen
  int64_t count_ = 0;
  std::vector<int64_t> bins_;
};

// "minmax", "moving_average", "moving_average:<momentum>" or
// "percentile:<p>" (p in (50, 100]). INVALID_ARGUMENT naming the spec.
absl::StatusOr<std::unique_ptr<Observer>> MakeObserver(absl::string_view spec);

}  // namespace mixq::search

#endif  // MIXQ_SEARCH_OBSERVER_H_
