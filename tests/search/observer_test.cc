#include "search/observer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace mixq::search {
namespace {

using engine::Tensor;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

Tensor Values(std::vector<float> v) {
  const int64_t n = static_cast<int64_t>(v.size());
  return Tensor({n}, v);
}

Range RangeOf(const Observer& observer) {
  const absl::StatusOr<Range> range = observer.range();
  EXPECT_TRUE(range.ok()) << range.status();
  return range.ok() ? *range : Range{kNaN, kNaN};
}

TEST(MinMaxObserverTest, RunningMinAndMax) {
  MinMaxObserver observer;
  observer.Observe(Tensor({2, 2}, {1.0f, 5.0f, 2.0f, 3.0f}));
  observer.Observe(Values({-1.0f, 4.0f}));
  observer.Observe(Values({0.0f, 9.0f}));
  const Range r = RangeOf(observer);
  EXPECT_EQ(r.min, -1.0f);
  EXPECT_EQ(r.max, 9.0f);
}

TEST(MovingAverageObserverTest, TwoBatchesByHand) {
  // First batch [1, 5] sets the range; the second, [-1, 9], moves it by
  // 0.25: min = 1 + 0.25·(−1 − 1) = 0.5, max = 5 + 0.25·(9 − 5) = 6.
  MovingAverageMinMaxObserver observer(0.25f);
  observer.Observe(Values({1.0f, 3.0f, 5.0f}));
  Range r = RangeOf(observer);
  EXPECT_EQ(r.min, 1.0f);
  EXPECT_EQ(r.max, 5.0f);
  observer.Observe(Values({9.0f, -1.0f}));
  r = RangeOf(observer);
  EXPECT_FLOAT_EQ(r.min, 0.5f);
  EXPECT_FLOAT_EQ(r.max, 6.0f);
}

TEST(MovingAverageObserverTest, DefaultMomentumIsPyTorchs) {
  MovingAverageMinMaxObserver observer;
  observer.Observe(Values({0.0f, 1.0f}));
  observer.Observe(Values({-100.0f, 101.0f}));
  const Range r = RangeOf(observer);
  EXPECT_FLOAT_EQ(r.min, -1.0f);  // 0 + 0.01·(−100 − 0)
  EXPECT_FLOAT_EQ(r.max, 2.0f);   // 1 + 0.01·(101 − 1)
}

// A ramp 0, 1, …, n−1 fed in batches whose ranges keep growing on both sides,
// so the histogram re-bins several times.
std::vector<Tensor> RampBatches(int n) {
  std::vector<float> ramp(n);
  for (int i = 0; i < n; ++i) ramp[i] = static_cast<float>(i);
  // Start in the middle, then alternate growing outward.
  std::vector<Tensor> batches;
  const int mid = n / 2;
  batches.push_back(Values({ramp.begin() + mid - 5, ramp.begin() + mid + 5}));
  int lo = mid - 5, hi = mid + 5;
  int step = 10;
  while (lo > 0 || hi < n) {
    const int new_lo = std::max(0, lo - step);
    const int new_hi = std::min(n, hi + step);
    std::vector<float> batch(ramp.begin() + new_lo, ramp.begin() + lo);
    batch.insert(batch.end(), ramp.begin() + hi, ramp.begin() + new_hi);
    std::shuffle(batch.begin(), batch.end(), std::mt19937_64(step));
    batches.push_back(Values(batch));
    lo = new_lo;
    hi = new_hi;
    step *= 3;
  }
  return batches;
}

TEST(PercentileObserverTest, UniformRampWithinOneBinWidth) {
  constexpr int kN = 100000;
  for (const double p : {99.0, 99.9, 99.99, 100.0}) {
    PercentileObserver observer(p);
    for (const Tensor& batch : RampBatches(kN)) observer.Observe(batch);
    const Range r = RangeOf(observer);
    // Exact: the ceil(q·n)-th smallest of 0..n−1, and its mirror.
    const double q = p / 100.0;
    const double exact_hi = std::ceil(q * kN) - 1;
    const double exact_lo = std::max(0.0, std::ceil((1 - q) * kN) - 1);
    // One bin of the covered range; growth by doubling keeps that range
    // within 4× the data's (here checked as the documented accuracy bound).
    const double bin_width = 4.0 * (kN - 1) / PercentileObserver::kBins;
    EXPECT_NEAR(r.max, exact_hi, bin_width) << "p " << p;
    EXPECT_NEAR(r.min, exact_lo, bin_width) << "p " << p;
    EXPECT_GE(r.min, 0.0f);
    EXPECT_LE(r.max, kN - 1.0f);
  }
}

TEST(PercentileObserverTest, DropsRareOutliers) {
  // 10 000 values in [0, 1) and one at 1000: the 99.9th percentile ignores it,
  // min/max does not.
  std::vector<float> values(10000);
  for (int i = 0; i < 10000; ++i) values[i] = i / 10000.0f;
  values.push_back(1000.0f);
  PercentileObserver percentile(99.9);
  MinMaxObserver minmax;
  percentile.Observe(Values(values));
  minmax.Observe(Values(values));
  EXPECT_EQ(RangeOf(minmax).max, 1000.0f);
  const Range r = RangeOf(percentile);
  EXPECT_LT(r.max, 1.5f);
  EXPECT_GT(r.max, 0.9f);
  EXPECT_GE(r.min, 0.0f);
  EXPECT_LT(r.min, 0.01f);
}

TEST(PercentileObserverTest, ConstantDataGivesItsValue) {
  PercentileObserver observer(99.99);
  observer.Observe(Values({3.5f, 3.5f, 3.5f}));
  const Range r = RangeOf(observer);
  EXPECT_EQ(r.min, 3.5f);
  EXPECT_EQ(r.max, 3.5f);
}

TEST(ObserverTest, NothingSeenIsFailedPrecondition) {
  for (const char* spec : {"minmax", "moving_average", "percentile:99"}) {
    absl::StatusOr<std::unique_ptr<Observer>> observer = MakeObserver(spec);
    ASSERT_TRUE(observer.ok()) << observer.status();
    EXPECT_EQ((*observer)->range().status().code(),
              absl::StatusCode::kFailedPrecondition)
        << spec;
    // Only non-finite values: still nothing seen.
    (*observer)->Observe(Values({kNaN, kInf, -kInf}));
    EXPECT_EQ((*observer)->range().status().code(),
              absl::StatusCode::kFailedPrecondition)
        << spec;
  }
}

TEST(ObserverTest, NonFiniteValuesAreIgnored) {
  for (const char* spec : {"minmax", "moving_average", "percentile:100"}) {
    absl::StatusOr<std::unique_ptr<Observer>> observer = MakeObserver(spec);
    ASSERT_TRUE(observer.ok()) << observer.status();
    (*observer)->Observe(Values({kNaN, -2.0f, kInf, 7.0f, -kInf}));
    const Range r = RangeOf(**observer);
    EXPECT_EQ(r.min, -2.0f) << spec;
    EXPECT_EQ(r.max, 7.0f) << spec;
  }
}

TEST(MakeObserverTest, ParsesKindsAndParameters) {
  struct Case {
    const char* spec;
    std::vector<float> first, second;
    float min, max;
  };
  // The second batch tells the kinds apart.
  for (const Case& c : {
           Case{"minmax", {0, 1}, {-4, 5}, -4, 5},
           Case{"moving_average:0.5", {0, 1}, {-4, 5}, -2, 3},
           Case{"moving_average", {0, 100}, {-100, 200}, -1, 101},
       }) {
    absl::StatusOr<std::unique_ptr<Observer>> observer = MakeObserver(c.spec);
    ASSERT_TRUE(observer.ok()) << observer.status();
    (*observer)->Observe(Values(c.first));
    (*observer)->Observe(Values(c.second));
    const Range r = RangeOf(**observer);
    EXPECT_FLOAT_EQ(r.min, c.min) << c.spec;
    EXPECT_FLOAT_EQ(r.max, c.max) << c.spec;
  }
  absl::StatusOr<std::unique_ptr<Observer>> percentile =
      MakeObserver("percentile:99.99");
  ASSERT_TRUE(percentile.ok());
  EXPECT_NE(dynamic_cast<PercentileObserver*>(percentile->get()), nullptr);
}

TEST(MakeObserverTest, BadSpecsAreInvalidArgumentNamingThem) {
  for (const char* spec :
       {"", "histogram", "MinMax", "percentile", "percentile:", "percentile:50",
        "percentile:100.5", "percentile:abc", "percentile:nan",
        "moving_average:0", "moving_average:1.5", "moving_average:x",
        "moving_average0.1"}) {
    const absl::StatusOr<std::unique_ptr<Observer>> observer =
        MakeObserver(spec);
    ASSERT_FALSE(observer.ok()) << spec;
    EXPECT_EQ(observer.status().code(), absl::StatusCode::kInvalidArgument)
        << spec;
    EXPECT_NE(observer.status().message().find(std::string("'") + spec + "'"),
              std::string::npos)
        << observer.status().message();
  }
}

// ---------------------------------------------------------------------------
// Hand-computed cases of mixq issue #4.

TEST(MovingAverageObserverTest, HalfMomentumByHandIgnoringEmptyBatches) {
  MovingAverageMinMaxObserver observer(0.5f);
  observer.Observe(Values({-1.0f, 0.5f, 2.0f}));
  // min = −1 + 0.5·(−3 + 1) = −2, max = 2 + 0.5·(4 − 2) = 3.
  observer.Observe(Values({-3.0f, 4.0f, kNaN}));
  // A batch with no finite value is skipped, not averaged in.
  observer.Observe(Values({kNaN, kInf}));
  observer.Observe(Tensor({0}));
  Range r = RangeOf(observer);
  EXPECT_EQ(r.min, -2.0f);
  EXPECT_EQ(r.max, 3.0f);
  // And it moves back: min = −2 + 0.5·2 = −1, max = 3 + 0.5·(1 − 3) = 2.
  observer.Observe(Values({0.0f, 1.0f}));
  r = RangeOf(observer);
  EXPECT_EQ(r.min, -1.0f);
  EXPECT_EQ(r.max, 2.0f);
}

// Finite values at the ends of float's range: the averaging and the
// histogram's span are computed in double, so 3e38 − (−3e38) does not
// overflow into an infinite range (which once aborted the activation
// quantizer).
TEST(ObserverTest, RangesStayFiniteAtTheEndsOfFloat) {
  constexpr float kHuge = 3e38f;
  for (const char* spec : {"minmax", "moving_average:0.5", "percentile:99"}) {
    SCOPED_TRACE(spec);
    absl::StatusOr<std::unique_ptr<Observer>> observer = MakeObserver(spec);
    ASSERT_TRUE(observer.ok()) << observer.status();
    (*observer)->Observe(Values({kHuge, kHuge}));
    (*observer)->Observe(Values({-kHuge, -kHuge, kHuge}));
    const Range r = RangeOf(**observer);
    EXPECT_TRUE(std::isfinite(r.min) && std::isfinite(r.max))
        << "[" << r.min << ", " << r.max << "]";
    EXPECT_LE(r.min, r.max);
  }
}

// The ramp 0..9999 fed as batches [first, second). The result is exact to one
// bin of the final histogram, whose width each case computes by hand: the
// first batch spans (max − min)·(1 + 1e−6) over kBins bins, and each growth
// doubles the width.
struct RampCase {
  const char* name;
  std::vector<std::pair<int, int>> batches;
  double percentile;
  float min, max;
  double bin_width;
};

constexpr double kBins = PercentileObserver::kBins;
constexpr double kRoom = 1.0 + 1e-6;

class PercentileRampTest : public ::testing::TestWithParam<RampCase> {};

TEST_P(PercentileRampTest, WithinOneBinWidth) {
  const RampCase& c = GetParam();
  PercentileObserver observer(c.percentile);
  for (const auto& [first, end] : c.batches) {
    std::vector<float> ramp(end - first);
    std::iota(ramp.begin(), ramp.end(), static_cast<float>(first));
    observer.Observe(Values(ramp));
  }
  const Range r = RangeOf(observer);
  EXPECT_NEAR(r.min, c.min, c.bin_width);
  EXPECT_NEAR(r.max, c.max, c.bin_width);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, PercentileRampTest,
    ::testing::Values(
        // 1 % of the values lie below 99.x and 1 % at or above 9900.
        RampCase{"p99", {{0, 10000}}, 99, 99, 9900, 9999 * kRoom / kBins},
        // The middle, then below (grows down once), then above (up once).
        RampCase{"p99_grows_down_then_up",
                 {{2500, 7500}, {0, 2500}, {7500, 10000}},
                 99,
                 99,
                 9900,
                 4 * 4999 * kRoom / kBins},
        // The top first: it grows down three times.
        RampCase{"p99_grows_down_three_times",
                 {{7500, 10000}, {0, 2500}, {2500, 7500}},
                 99,
                 99,
                 9900,
                 8 * 2499 * kRoom / kBins},
        RampCase{"p100", {{0, 10000}}, 100, 0, 9999, 9999 * kRoom / kBins},
        RampCase{"p100_grows_down_then_up",
                 {{2500, 7500}, {0, 2500}, {7500, 10000}},
                 100,
                 0,
                 9999,
                 4 * 4999 * kRoom / kBins}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(MakeObserverTest, IssueSpecs) {
  // moving_average:0.1 after [−1, 2] then [−3, 4]: [−1.2, 2.2].
  absl::StatusOr<std::unique_ptr<Observer>> moving =
      MakeObserver("moving_average:0.1");
  ASSERT_TRUE(moving.ok()) << moving.status();
  (*moving)->Observe(Values({-1.0f, 2.0f}));
  (*moving)->Observe(Values({-3.0f, 4.0f}));
  EXPECT_FLOAT_EQ(RangeOf(**moving).min, -1.2f);
  EXPECT_FLOAT_EQ(RangeOf(**moving).max, 2.2f);
  for (const char* spec : {"percentile:40", "percentile:x", "foo"}) {
    const absl::StatusOr<std::unique_ptr<Observer>> observer =
        MakeObserver(spec);
    ASSERT_FALSE(observer.ok()) << spec;
    EXPECT_EQ(observer.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(observer.status().message().find(std::string("'") + spec + "'"),
              std::string::npos)
        << observer.status().message();
  }
}

}  // namespace
}  // namespace mixq::search
