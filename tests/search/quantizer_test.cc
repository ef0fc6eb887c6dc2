#include "search/quantizer.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace mixq::search {
namespace {

using engine::Tensor;

Tensor Quantize(const Tensor& w, int axis, int bits) {
  Tensor out;
  FakeQuantizeSymmetric(w, axis, bits, &out);
  return out;
}

struct HandCase {
  const char* name;
  std::vector<float> row;
  int bits;
  std::vector<float> expected_levels;  // q, so that out = scale * q
  float scale;
};

class HandComputedTest : public ::testing::TestWithParam<HandCase> {};

TEST_P(HandComputedTest, MatchesHandComputedGrid) {
  const HandCase& c = GetParam();
  const Tensor w({1, static_cast<int64_t>(c.row.size())}, c.row);
  const Tensor q = Quantize(w, 0, c.bits);
  for (size_t i = 0; i < c.row.size(); ++i) {
    EXPECT_FLOAT_EQ(q.values()[i], c.scale * c.expected_levels[i])
        << c.name << " element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, HandComputedTest,
    ::testing::Values(
        // DESIGN.md's example: range [-3, 6] at 8 bits, s = 6/127. 6 ↦ 127.
        // -3/s = -63.5 exactly: weights round half up, floor(v + 0.5), so
        // -3 ↦ -63 as DESIGN.md and issue #4 say; 1.5/s = 31.75 ↦ 32.
        HandCase{"8bit_design_range",
                 {-3.0f, 6.0f, 1.5f},
                 8,
                 {-63, 127, 32},
                 6.0f / 127.0f},
        // 4 bits: qmax 7, s = 1.75/7 = 0.25 (exact in float): -0.875/s = -3.5
        // ↦ -3 and 0.625/s = 2.5 ↦ 3 (half up), 0.3/s = 1.2 ↦ 1.
        HandCase{"4bit",
                 {1.75f, -0.875f, 0.625f, 0.3f},
                 4,
                 {7, -3, 3, 1},
                 0.25f},
        // 2 bits is ternary: qmax 1.
        HandCase{"2bit_ternary", {0.4f, -1.0f, 0.6f}, 2, {0, -1, 1}, 1.0f},
        // 1 bit is binary: sign · mean|w| = 2.
        HandCase{
            "1bit_binary", {1.0f, -3.0f, 0.0f, 4.0f}, 1, {1, -1, 1, 1}, 2.0f},
        // A zero channel stays zero (scale 1, never NaN).
        HandCase{"zeros", {0.0f, 0.0f}, 4, {0, 0}, 1.0f}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(QuantizerTest, PerChannelScalesAreIndependent) {
  // Two output channels (rows) with ranges 1 and 100.
  const Tensor w({2, 2}, {1.0f, -0.5f, 100.0f, 50.0f});
  const Tensor q = Quantize(w, 0, 8);
  EXPECT_FLOAT_EQ(q.values()[0], 1.0f);
  EXPECT_NEAR(q.values()[1], -0.5f, 1.0f / 127);
  EXPECT_FLOAT_EQ(q.values()[2], 100.0f);
  EXPECT_NEAR(q.values()[3], 50.0f, 100.0f / 127);
}

TEST(QuantizerTest, LastAxisChannelsEqualTransposedFirstAxis) {
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal;
  Tensor w({5, 3});  // [in, out]: channels on the last axis
  for (float& v : w.values()) v = normal(rng);
  Tensor wt({3, 5});
  wt.AsMatrix(3, 5) = w.AsMatrix(5, 3).transpose();
  const Tensor q = Quantize(w, 1, 3);
  const Tensor qt = Quantize(wt, 0, 3);
  EXPECT_TRUE(q.AsMatrix(5, 3).isApprox(qt.AsMatrix(3, 5).transpose()));
}

TEST(QuantizerTest, FloatBitsAreIdentity) {
  const Tensor w({1, 3}, {0.123f, -4.5f, 7.0f});
  EXPECT_EQ(Quantize(w, 0, kFloatBits).values(), w.values());
}

TEST(QuantizerTest, ValuesStayOnTheGridAndInRange) {
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal;
  Tensor w({4, 64});
  for (float& v : w.values()) v = normal(rng);
  for (int bits = 2; bits <= 8; ++bits) {
    const Tensor q = Quantize(w, 0, bits);
    const float qmax = static_cast<float>((1 << (bits - 1)) - 1);
    for (int r = 0; r < 4; ++r) {
      const float scale = w.AsMatrix(4, 64).row(r).cwiseAbs().maxCoeff() / qmax;
      for (int c = 0; c < 64; ++c) {
        const float level = q.AsMatrix(4, 64)(r, c) / scale;
        EXPECT_NEAR(level, std::round(level), 1e-3) << "bits " << bits;
        EXPECT_LE(std::abs(level), qmax + 1e-3);
        // Nearest level: error at most half a step.
        EXPECT_LE(std::abs(q.AsMatrix(4, 64)(r, c) - w.AsMatrix(4, 64)(r, c)),
                  0.5f * scale * (1 + 1e-4f));
      }
    }
  }
}

TEST(QuantizerTest, SquaredErrorRatioOf4To8BitsMatchesStepRatio) {
  // Uniform quantization noise has variance s²/12, so the error ratio of 4 to
  // 8 bits is (s4/s8)² = (127/7)² ≈ 329 for the symmetric grid.
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal;
  Tensor w({16, 4096});
  for (float& v : w.values()) v = normal(rng);
  const Tensor ones({16, 4096}, std::vector<float>(16 * 4096, 1.0f));
  const double e4 = WeightedPerturbation(w, Quantize(w, 0, 4), ones);
  const double e8 = WeightedPerturbation(w, Quantize(w, 0, 8), ones);
  EXPECT_NEAR(e4 / e8, (127.0 / 7.0) * (127.0 / 7.0), 0.1 * 329.0);
}

TEST(QuantizerTest, WeightedPerturbationIsHessianWeightedSquaredError) {
  const Tensor w({1, 2}, {1.0f, 2.0f});
  const Tensor q({1, 2}, {1.5f, 1.0f});
  const Tensor h({1, 2}, {2.0f, 3.0f});
  EXPECT_DOUBLE_EQ(WeightedPerturbation(w, q, h), 2.0 * 0.25 + 3.0 * 1.0);
}

}  // namespace
}  // namespace mixq::search
