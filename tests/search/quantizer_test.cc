#include "search/quantizer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mixq::search {
namespace {

using engine::Tensor;
using ::testing::FloatNear;
using ::testing::Pointwise;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

Tensor Quantize(const Tensor& w, int axis, int bits) {
  Tensor out;
  FakeQuantizeSymmetric(w, axis, bits, &out);
  return out;
}

Tensor Gaussian(const engine::Shape& shape, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  Tensor t(shape);
  for (float& v : t.values()) v = normal(rng);
  return t;
}

std::vector<int32_t> Integers(const Tensor& x, const QuantParams& p) {
  std::vector<int32_t> q;
  QuantizeToIntegers(x, p, &q);
  return q;
}

// The dequantized value of q in channel c, as DequantizeLinear computes it.
float Dequantize(int32_t q, const QuantParams& p, int64_t c) {
  return (static_cast<float>(q) - static_cast<float>(p.zero_point[c])) *
         p.scale[c];
}

// Expects FakeQuantize(x) == (float(q) − float(z))·s bit for bit, with
// channel c of element i given by `channel_of(i)`.
template <typename ChannelOf>
void ExpectFakeEqualsDequantizedIntegers(const Tensor& x, const QuantParams& p,
                                         ChannelOf channel_of) {
  const std::vector<int32_t> q = Integers(x, p);
  Tensor fake;
  FakeQuantize(x, p, &fake);
  ASSERT_EQ(fake.shape(), x.shape());
  for (int64_t i = 0; i < x.size(); ++i) {
    const int64_t c = channel_of(i);
    ASSERT_GE(q[i], p.qmin);
    ASSERT_LE(q[i], p.qmax);
    // EXPECT_EQ on floats: bit-exact equality is the contract.
    ASSERT_EQ(fake.values()[i], Dequantize(q[i], p, c)) << "element " << i;
  }
}

// ---------------------------------------------------------------------------
// Hand-computed grids, one per-tensor weight tensor each.

struct WeightCase {
  const char* name;
  std::vector<float> values;
  int bits;
  QuantScheme scheme;
  float scale;
  int32_t zero_point;
  std::vector<int32_t> q;
};

class WeightGridTest : public ::testing::TestWithParam<WeightCase> {};

TEST_P(WeightGridTest, MatchesHandComputedGrid) {
  const WeightCase& c = GetParam();
  const Tensor w({static_cast<int64_t>(c.values.size())}, c.values);
  const QuantParams p =
      ChooseWeightParams(w, 0, {c.bits, c.scheme, Granularity::kPerTensor});
  EXPECT_EQ(p.axis, kPerTensorAxis);
  EXPECT_EQ(p.rounding, Rounding::kHalfUp);
  ASSERT_EQ(p.scale.size(), 1u);
  ASSERT_EQ(p.zero_point.size(), 1u);
  EXPECT_FLOAT_EQ(p.scale[0], c.scale);
  EXPECT_EQ(p.zero_point[0], c.zero_point);
  EXPECT_EQ(Integers(w, p), c.q);
  ExpectFakeEqualsDequantizedIntegers(w, p, [](int64_t) { return 0; });
}

INSTANTIATE_TEST_SUITE_P(
    Cases, WeightGridTest,
    ::testing::Values(
        // docs/design.md §1.1's example: [-3, 6] at 8 bits, s = 6/127, 6 ↦ 127;
        // -3/s = -63.5 exactly and rounds half up to -63; 1.5/s = 31.75 ↦ 32.
        WeightCase{"sym8_design_range",
                   {-3.0f, 6.0f, 1.5f},
                   8,
                   QuantScheme::kSymmetric,
                   6.0f / 127.0f,
                   0,
                   {-63, 127, 32}},
        // 4 bits: qmax 7, s = 1.75/7 = 0.25 (exact): -3.5 ↦ -3 and 2.5 ↦ 3
        // (half up), 1.2 ↦ 1.
        WeightCase{"sym4_ties_half_up",
                   {1.75f, -0.875f, 0.625f, 0.3f},
                   4,
                   QuantScheme::kSymmetric,
                   0.25f,
                   0,
                   {7, -3, 3, 1}},
        // 2 bits symmetric is ternary: qmax 1, s = 1.
        WeightCase{"sym2_ternary",
                   {0.4f, -1.0f, 0.6f},
                   2,
                   QuantScheme::kSymmetric,
                   1.0f,
                   0,
                   {0, -1, 1}},
        // [0, 6] at 8 bits: s = 6/255, z = 0; 2/s = 85.
        WeightCase{"asym8_0_6",
                   {0.0f, 6.0f, 2.0f},
                   8,
                   QuantScheme::kAsymmetric,
                   6.0f / 255.0f,
                   0,
                   {0, 255, 85}},
        // [-1, 3] at 2 bits: s = 4/3, -min/s = 0.75 ↦ z = 1. -1/s = -0.75
        // ↦ -1 + 1 = 0; 3/s = 2.25 ↦ 2 + 1 = 3; 0 ↦ 1; 1/s = 0.75 ↦ 2.
        WeightCase{"asym2_minus1_3",
                   {-1.0f, 3.0f, 0.0f, 1.0f},
                   2,
                   QuantScheme::kAsymmetric,
                   4.0f / 3.0f,
                   1,
                   {0, 3, 1, 2}},
        // All positive: the range widens to [0, 11] so 0 stays exact.
        WeightCase{"asym8_widened_to_zero",
                   {10.0f, 11.0f},
                   8,
                   QuantScheme::kAsymmetric,
                   11.0f / 255.0f,
                   0,
                   {232, 255}},
        // All negative: [-2, 0], s = 2/255, z = 255.
        WeightCase{"asym8_negative_constant",
                   {-2.0f, -2.0f},
                   8,
                   QuantScheme::kAsymmetric,
                   2.0f / 255.0f,
                   255,
                   {0, 0}},
        // 1 bit is binary: sign (sign(0) = +1) · mean|w| = 2.
        WeightCase{"binary",
                   {1.0f, -3.0f, 0.0f, 4.0f},
                   1,
                   QuantScheme::kSymmetric,
                   2.0f,
                   0,
                   {1, -1, 1, 1}},
        // Zeros get scale 1 and stay exactly zero, in both schemes.
        WeightCase{"sym_zeros",
                   {0.0f, 0.0f},
                   4,
                   QuantScheme::kSymmetric,
                   1.0f,
                   0,
                   {0, 0}},
        WeightCase{"asym_zeros",
                   {0.0f, 0.0f},
                   4,
                   QuantScheme::kAsymmetric,
                   1.0f,
                   0,
                   {0, 0}},
        WeightCase{"binary_zeros",
                   {0.0f, 0.0f},
                   1,
                   QuantScheme::kSymmetric,
                   1.0f,
                   0,
                   {1, 1}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(QuantizerTest, DesignExampleIsAnExactTieInFloat) {
  // Why the weight rounding matters: -3 / (6/127) is exactly -63.5 in float.
  const float s = 6.0f / 127.0f;
  EXPECT_EQ(-3.0f / s, -63.5f);
  EXPECT_EQ(6.0f / s, 127.0f);
}

TEST(QuantizerTest, RoundHalfUpIsExactJustBelowOneHalf) {
  // 0.49999997f + 0.5f rounds to 1.0f in float; half up must still give 0.
  const float below_half = std::nextafter(0.5f, 0.0f);
  const Tensor w({2}, {1.0f, below_half});
  const QuantParams p = ChooseWeightParams(
      w, 0, {2, QuantScheme::kSymmetric, Granularity::kPerTensor});
  ASSERT_EQ(p.scale[0], 1.0f);
  EXPECT_EQ(Integers(w, p), (std::vector<int32_t>{1, 0}));
}

TEST(QuantizerTest, BinaryIsSignTimesMeanAbsPerChannel) {
  const Tensor w({2, 3}, {1.0f, -2.0f, 3.0f, -0.5f, 0.0f, 0.25f});
  const QuantParams p = ChooseWeightParams(
      w, 0, {1, QuantScheme::kAsymmetric, Granularity::kPerChannel});
  EXPECT_TRUE(p.binary);
  EXPECT_TRUE(p.is_signed());  // binary is always symmetric
  EXPECT_EQ(p.qmin, -1);
  EXPECT_EQ(p.qmax, 1);
  EXPECT_EQ(p.scale, (std::vector<float>{2.0f, 0.25f}));
  Tensor fake;
  FakeQuantize(w, p, &fake);
  EXPECT_EQ(fake.ToVector(),
            (std::vector<float>{2.0f, -2.0f, 2.0f, -0.25f, 0.25f, 0.25f}));
}

TEST(QuantizerTest, ConstantChannelIsReproducedWithinOneStep) {
  for (const QuantScheme scheme :
       {QuantScheme::kSymmetric, QuantScheme::kAsymmetric}) {
    for (int bits = 1; bits <= 8; ++bits) {
      for (const float c : {2.5f, -0.37f, 1e-30f, -7e30f}) {
        const Tensor w({1, 3}, {c, c, c});
        const QuantParams p =
            ChooseWeightParams(w, 0, {bits, scheme, Granularity::kPerChannel});
        Tensor fake;
        FakeQuantize(w, p, &fake);
        for (float v : fake.values()) {
          EXPECT_LE(std::abs(v - c), p.scale[0])
              << "bits " << bits << " value " << c;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Activations: round half to even, as ONNX QuantizeLinear.

TEST(ParamsFromRangeTest, SymmetricRoundsTiesToEven) {
  const QuantParams p =
      ParamsFromRange(-3.0f, 6.0f, 8, QuantScheme::kSymmetric);
  EXPECT_EQ(p.rounding, Rounding::kHalfToEven);
  EXPECT_EQ(p.axis, kPerTensorAxis);
  EXPECT_FLOAT_EQ(p.scale[0], 6.0f / 127.0f);
  EXPECT_EQ(p.zero_point[0], 0);
  // -63.5 ↦ -64 (even); at s = 0.25: 2.5 ↦ 2, 3.5 ↦ 4, -2.5 ↦ -2.
  const QuantParams q4 =
      ParamsFromRange(-1.75f, 1.75f, 4, QuantScheme::kSymmetric);
  ASSERT_EQ(q4.scale[0], 0.25f);
  EXPECT_EQ(Integers(Tensor({2}, {-3.0f, 6.0f}), p),
            (std::vector<int32_t>{-64, 127}));
  EXPECT_EQ(Integers(Tensor({3}, {0.625f, 0.875f, -0.625f}), q4),
            (std::vector<int32_t>{2, 4, -2}));
}

struct RangeCase {
  const char* name;
  float min, max;
  int bits;
  QuantScheme scheme;
  float scale;
  int32_t zero_point, qmin, qmax;
};

class RangeTest : public ::testing::TestWithParam<RangeCase> {};

TEST_P(RangeTest, MatchesHandComputedParams) {
  const RangeCase& c = GetParam();
  const QuantParams p = ParamsFromRange(c.min, c.max, c.bits, c.scheme);
  ASSERT_EQ(p.scale.size(), 1u);
  EXPECT_FLOAT_EQ(p.scale[0], c.scale);
  EXPECT_EQ(p.zero_point[0], c.zero_point);
  EXPECT_EQ(p.qmin, c.qmin);
  EXPECT_EQ(p.qmax, c.qmax);
  EXPECT_EQ(p.is_signed(), c.scheme == QuantScheme::kSymmetric);
  // 0 is always exact.
  EXPECT_EQ(Integers(Tensor({1}, {0.0f}), p)[0], p.zero_point[0]);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, RangeTest,
    ::testing::Values(RangeCase{"asym8_0_6", 0, 6, 8, QuantScheme::kAsymmetric,
                                6.0f / 255, 0, 0, 255},
                      RangeCase{"asym8_widened", 2, 6, 8,
                                QuantScheme::kAsymmetric, 6.0f / 255, 0, 0,
                                255},
                      RangeCase{"asym2_minus1_3", -1, 3, 2,
                                QuantScheme::kAsymmetric, 4.0f / 3, 1, 0, 3},
                      // [-2, 1] at 2 bits: s = 1, z = 2.
                      RangeCase{"asym2_minus2_1", -2, 1, 2,
                                QuantScheme::kAsymmetric, 1.0f, 2, 0, 3},
                      RangeCase{"sym8_design", -3, 6, 8,
                                QuantScheme::kSymmetric, 6.0f / 127, 0, -127,
                                127},
                      RangeCase{"sym3", -0.5f, 0.25f, 3,
                                QuantScheme::kSymmetric, 0.5f / 3, 0, -3, 3},
                      RangeCase{"asym_zero_range", 0, 0, 8,
                                QuantScheme::kAsymmetric, 1.0f, 0, 0, 255},
                      RangeCase{"sym_zero_range", 0, 0, 8,
                                QuantScheme::kSymmetric, 1.0f, 0, -127, 127}),
    [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------
// Granularity and layout.

TEST(QuantizerTest, PerChannelScalesAreIndependentPerTensorIsShared) {
  // Two output channels (rows) with ranges 1 and 100.
  const Tensor w({2, 2}, {1.0f, -0.5f, 100.0f, 50.0f});
  const QuantParams per_channel = ChooseWeightParams(
      w, 0, {8, QuantScheme::kSymmetric, Granularity::kPerChannel});
  const QuantParams per_tensor = ChooseWeightParams(
      w, 0, {8, QuantScheme::kSymmetric, Granularity::kPerTensor});
  EXPECT_EQ(per_channel.axis, 0);
  EXPECT_EQ(per_channel.scale, (std::vector<float>{1.0f / 127, 100.0f / 127}));
  EXPECT_EQ(per_tensor.scale, (std::vector<float>{100.0f / 127}));
  EXPECT_EQ(Integers(w, per_channel),
            (std::vector<int32_t>{127, -63, 127, 64}));
  // Per tensor, the small channel gets the big channel's step: 1 ↦ 1, -0.5 ↦
  // -1.
  EXPECT_EQ(Integers(w, per_tensor), (std::vector<int32_t>{1, -1, 127, 64}));
}

TEST(QuantizerTest, LastAxisChannelsEqualTransposedFirstAxis) {
  const Tensor w = Gaussian({5, 3}, 3);  // [in, out]: channels on the last axis
  Tensor wt({3, 5});
  wt.AsMatrix(3, 5) = w.AsMatrix(5, 3).transpose();
  for (const QuantScheme scheme :
       {QuantScheme::kSymmetric, QuantScheme::kAsymmetric}) {
    for (int bits : {1, 3, 8}) {
      const QuantConfig config{bits, scheme, Granularity::kPerChannel};
      const QuantParams p = ChooseWeightParams(w, 1, config);
      const QuantParams pt = ChooseWeightParams(wt, 0, config);
      EXPECT_EQ(p.scale, pt.scale);
      EXPECT_EQ(p.zero_point, pt.zero_point);
      Tensor q, qt;
      FakeQuantize(w, p, &q);
      FakeQuantize(wt, pt, &qt);
      EXPECT_EQ(q.AsMatrix(5, 3), qt.AsMatrix(3, 5).transpose())
          << "bits " << bits;
      ExpectFakeEqualsDequantizedIntegers(w, p,
                                          [](int64_t i) { return i % 3; });
    }
  }
}

// [a, b, k] with its first two axes swapped: [b, a, k].
Tensor SwapFirstAxes(const Tensor& t) {
  const int64_t a = t.dim(0), b = t.dim(1), k = t.size() / (a * b);
  engine::Shape shape = t.shape();
  std::swap(shape[0], shape[1]);
  Tensor out(shape);
  for (int64_t i = 0; i < a; ++i) {
    for (int64_t j = 0; j < b; ++j) {
      std::copy_n(t.data() + (i * b + j) * k, k, out.data() + (j * a + i) * k);
    }
  }
  return out;
}

// ConvTranspose weights [C_in, C_out, kh, kw] have their output channels on
// axis 1: the same grid as the permuted [C_out, C_in, kh, kw] on axis 0.
TEST(QuantizerTest, MiddleAxisChannelsEqualPermutedFirstAxis) {
  const Tensor w = Gaussian({3, 4, 2, 2}, 5);
  const Tensor wt = SwapFirstAxes(w);
  for (const QuantScheme scheme :
       {QuantScheme::kSymmetric, QuantScheme::kAsymmetric}) {
    for (int bits : {1, 3, 8}) {
      const QuantConfig config{bits, scheme, Granularity::kPerChannel};
      const QuantParams p = ChooseWeightParams(w, 1, config);
      const QuantParams pt = ChooseWeightParams(wt, 0, config);
      ASSERT_EQ(p.channels(), 4);
      // Binary scales are means of |w| summed slice by slice, in another
      // order than the permuted tensor's: equal up to float rounding.
      const float tolerance = bits == 1 ? 1e-6f : 0.0f;
      EXPECT_THAT(p.scale, Pointwise(FloatNear(tolerance), pt.scale))
          << "bits " << bits;
      EXPECT_EQ(p.zero_point, pt.zero_point) << "bits " << bits;
      Tensor q, qt;
      FakeQuantize(w, p, &q);
      FakeQuantize(wt, pt, &qt);
      EXPECT_THAT(SwapFirstAxes(q).values(),
                  Pointwise(FloatNear(tolerance), qt.values()))
          << "bits " << bits;
      ExpectFakeEqualsDequantizedIntegers(
          w, p, [](int64_t i) { return (i / 4) % 4; });
      Tensor grad(w.shape(), engine::FloatBuffer(w.size(), 1.0f));
      Tensor grad_t(wt.shape(), engine::FloatBuffer(wt.size(), 1.0f));
      StraightThroughGradient(w, p, &grad);
      StraightThroughGradient(wt, pt, &grad_t);
      EXPECT_EQ(SwapFirstAxes(grad).values(), grad_t.values());
    }
  }
}

TEST(QuantizerTest, RandomTensorsStayOnTheGridWithinHalfAStep) {
  // 4-D conv weights [out, in, kh, kw], channels on axis 0.
  const Tensor w = Gaussian({4, 3, 3, 3}, 7);
  const int64_t per_channel = 27;
  for (const QuantScheme scheme :
       {QuantScheme::kSymmetric, QuantScheme::kAsymmetric}) {
    for (int bits = 2; bits <= 8; ++bits) {
      const QuantParams p =
          ChooseWeightParams(w, 0, {bits, scheme, Granularity::kPerChannel});
      ASSERT_EQ(p.channels(), 4);
      ExpectFakeEqualsDequantizedIntegers(
          w, p, [&](int64_t i) { return i / per_channel; });
      Tensor fake;
      FakeQuantize(w, p, &fake);
      for (int64_t i = 0; i < w.size(); ++i) {
        const float s = p.scale[i / per_channel];
        // Nearest level: within half a step. (Asymmetric grids miss an end
        // of the range by the zero point's rounding, at most half a step, and
        // that end clamps onto the last level, still within half a step.)
        EXPECT_LE(std::abs(fake.values()[i] - w.values()[i]),
                  0.5f * s * (1 + 1e-4f))
            << "bits " << bits << " element " << i;
      }
    }
  }
}

TEST(QuantizerTest, FakeQuantizeMayWriteInPlace) {
  const Tensor w = Gaussian({3, 8}, 5);
  const QuantParams p = ChooseWeightParams(
      w, 1, {4, QuantScheme::kAsymmetric, Granularity::kPerChannel});
  Tensor expected;
  FakeQuantize(w, p, &expected);
  Tensor in_place = w;
  FakeQuantize(in_place, p, &in_place);
  EXPECT_EQ(in_place.values(), expected.values());
}

TEST(QuantizerTest, EmptyTensorsAndChannels) {
  const Tensor w({0, 4});
  const QuantParams rows = ChooseWeightParams(
      w, 0, {4, QuantScheme::kSymmetric, Granularity::kPerChannel});
  EXPECT_TRUE(rows.scale.empty());
  const QuantParams cols = ChooseWeightParams(
      w, 1, {4, QuantScheme::kAsymmetric, Granularity::kPerChannel});
  EXPECT_EQ(cols.scale, std::vector<float>(4, 1.0f));
  Tensor out;
  FakeQuantize(w, cols, &out);
  EXPECT_EQ(out.shape(), w.shape());
  EXPECT_TRUE(Integers(w, cols).empty());
}

// ---------------------------------------------------------------------------
// Scales are never 0, NaN or Inf; non-finite data is handled.

TEST(QuantizerTest, ScalesArePositiveFiniteAndNormal) {
  const float tiny = std::numeric_limits<float>::denorm_min();
  const float huge = std::numeric_limits<float>::max();
  const Tensor w({6, 2}, {0.0f, 0.0f,     // zeros
                          tiny, -tiny,    // would underflow
                          huge, -huge,    // range beyond float in asym
                          kNaN, 1.0f,     // NaN ignored for the scale
                          kInf, -2.0f,    // infinities ignored
                          -kInf, kNaN});  // nothing finite: like zeros
  for (const QuantScheme scheme :
       {QuantScheme::kSymmetric, QuantScheme::kAsymmetric}) {
    for (int bits = 1; bits <= 8; ++bits) {
      const QuantParams p =
          ChooseWeightParams(w, 0, {bits, scheme, Granularity::kPerChannel});
      for (float s : p.scale) {
        EXPECT_TRUE(std::isfinite(s)) << bits;
        EXPECT_GE(s, std::numeric_limits<float>::min()) << bits;
      }
      for (int32_t z : p.zero_point) {
        EXPECT_GE(z, p.qmin);
        EXPECT_LE(z, p.qmax);
      }
      Tensor fake;
      FakeQuantize(w, p, &fake);
      // Finite weights give finite values; NaN counts as 0.
      EXPECT_TRUE(fake.flat().isFinite().all()) << bits;
    }
  }
  const QuantParams sym8 = ChooseWeightParams(
      w, 0, {8, QuantScheme::kSymmetric, Granularity::kPerChannel});
  EXPECT_EQ(sym8.scale[0], 1.0f);
  EXPECT_EQ(sym8.scale[3], 1.0f / 127);
  EXPECT_EQ(sym8.scale[4], 2.0f / 127);
  EXPECT_EQ(sym8.scale[5], 1.0f);
}

TEST(QuantizerTest, InfinitiesClampAndNaNQuantizesLikeZero) {
  const QuantParams p =
      ParamsFromRange(-1.0f, 3.0f, 8, QuantScheme::kAsymmetric);
  const Tensor x({3}, {kInf, -kInf, kNaN});
  const std::vector<int32_t> q = Integers(x, p);
  EXPECT_EQ(q, (std::vector<int32_t>{p.qmax, p.qmin, p.zero_point[0]}));
  Tensor fake;
  FakeQuantize(x, p, &fake);
  EXPECT_EQ(fake.values()[2], 0.0f);
}

// ---------------------------------------------------------------------------
// Straight-through estimator.

TEST(StraightThroughTest, ZeroExactlyWhereTheClampBinds) {
  // s = 1/127 exactly as float division gives it; the clamp binds where
  // round(x/s) leaves [-127, 127], i.e. beyond ±(127.5)·s (ties to even:
  // 127.5 ↦ 128 binds, -127.5 ↦ -128 binds).
  const QuantParams p =
      ParamsFromRange(-1.0f, 1.0f, 8, QuantScheme::kSymmetric);
  const float s = p.scale[0];
  const std::vector<float> x = {
      0.0f,        1.0f, -1.0f, 127.4f * s, -127.4f * s, 127.6f * s,
      -127.6f * s, 5.0f, kInf,  -kInf,      kNaN};
  const std::vector<float> expected = {1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1};
  const Tensor xt({static_cast<int64_t>(x.size())}, x);
  Tensor grad({xt.size()}, std::vector<float>(x.size(), 1.0f));
  StraightThroughGradient(xt, p, &grad);
  EXPECT_EQ(grad.ToVector(), expected);
  // Where the mask is 0 the clamp really binds, and where it is 1 it does not.
  for (size_t i = 0; i + 1 < x.size(); ++i) {
    const float unclamped = std::nearbyint(x[i] / s);
    EXPECT_EQ(expected[i] == 1, unclamped >= -127 && unclamped <= 127) << i;
  }
}

TEST(StraightThroughTest, PerChannelAsymmetricUsesEachChannelsRange) {
  // Channel 0: [0, 2.55] at 8 bits, s = 0.01, z = 0; channel 1: [-1, 0],
  // s = 1/255, z = 255. Gradients scaled so a pass-through is visible.
  const Tensor x({2, 3}, {-0.1f, 1.0f, 2.6f, -1.1f, -0.5f, 0.1f});
  const Tensor ranges({2, 2}, {0.0f, 2.55f, -1.0f, 0.0f});
  const QuantParams p = ChooseWeightParams(
      ranges, 0, {8, QuantScheme::kAsymmetric, Granularity::kPerChannel});
  ASSERT_EQ(p.zero_point, (std::vector<int32_t>{0, 255}));
  Tensor grad({2, 3}, {1, 2, 3, 4, 5, 6});
  StraightThroughGradient(x, p, &grad);
  EXPECT_EQ(grad.ToVector(), (std::vector<float>{0, 2, 0, 0, 5, 0}));
}

TEST(StraightThroughTest, IdentityForWeightsTheirOwnParamsWereChosenFrom) {
  // The max-magnitude weight of each channel must keep its gradient even when
  // s·qmax rounds to just below it.
  const Tensor w = Gaussian({16, 33}, 9);
  for (const QuantScheme scheme :
       {QuantScheme::kSymmetric, QuantScheme::kAsymmetric}) {
    for (int bits = 1; bits <= 8; ++bits) {
      const QuantParams p =
          ChooseWeightParams(w, 1, {bits, scheme, Granularity::kPerChannel});
      Tensor grad({16, 33}, std::vector<float>(16 * 33, 1.0f));
      StraightThroughGradient(w, p, &grad);
      EXPECT_TRUE((grad.flat() == 1.0f).all()) << "bits " << bits;
    }
  }
}

// ---------------------------------------------------------------------------
// The legacy entry point and the noise model.

TEST(QuantizerTest, FakeQuantizeSymmetricIsThePerChannelSymmetricGrid) {
  const Tensor w = Gaussian({6, 10}, 13);
  for (int bits = 1; bits <= 8; ++bits) {
    Tensor expected;
    FakeQuantize(
        w,
        ChooseWeightParams(
            w, 0, {bits, QuantScheme::kSymmetric, Granularity::kPerChannel}),
        &expected);
    EXPECT_EQ(Quantize(w, 0, bits).values(), expected.values());
  }
  // The design example through the legacy API: -3 ↦ -63·s (half up).
  const Tensor design({1, 3}, {-3.0f, 6.0f, 1.5f});
  const float s = 6.0f / 127;
  EXPECT_EQ(Quantize(design, 0, 8).ToVector(),
            (std::vector<float>{-63 * s, 127 * s, 32 * s}));
}

TEST(QuantizerTest, FloatBitsAreIdentity) {
  const Tensor w({1, 3}, {0.123f, -4.5f, 7.0f});
  EXPECT_EQ(Quantize(w, 0, kFloatBits).values(), w.values());
}

double SquaredError(const Tensor& w, const QuantParams& p) {
  Tensor fake;
  FakeQuantize(w, p, &fake);
  return (fake.flat() - w.flat()).cast<double>().square().sum();
}

TEST(QuantizerTest, SquaredErrorRatioOf4To8BitsMatchesStepRatio) {
  // Uniform quantization noise has variance s²/12, so the error ratio of 4 to
  // 8 bits is (s4/s8)²: ((2^8 − 1)/(2^4 − 1))² = 289 on the asymmetric grid,
  // (127/7)² ≈ 329 on the symmetric one.
  const Tensor w = Gaussian({1 << 16}, 11);
  struct Expectation {
    QuantScheme scheme;
    double ratio;
    const char* name;
  };
  for (const Expectation& e :
       {Expectation{QuantScheme::kAsymmetric, 289.0, "asymmetric"},
        Expectation{QuantScheme::kSymmetric, (127.0 / 7) * (127.0 / 7),
                    "symmetric"}}) {
    const double e4 = SquaredError(
        w, ChooseWeightParams(w, 0, {4, e.scheme, Granularity::kPerTensor}));
    const double e8 = SquaredError(
        w, ChooseWeightParams(w, 0, {8, e.scheme, Granularity::kPerTensor}));
    std::printf(
        "%s per-tensor N(0,1), 65536 samples: e4/e8 = %.1f (model %.1f)\n",
        e.name, e4 / e8, e.ratio);
    EXPECT_NEAR(e4 / e8, e.ratio, 0.1 * e.ratio) << e.name;
  }
}

TEST(QuantizerTest, WeightedPerturbationIsHessianWeightedSquaredError) {
  const Tensor w({1, 2}, {1.0f, 2.0f});
  const Tensor q({1, 2}, {1.5f, 1.0f});
  const Tensor h({1, 2}, {2.0f, 3.0f});
  EXPECT_DOUBLE_EQ(WeightedPerturbation(w, q, h), 2.0 * 0.25 + 3.0 * 1.0);
}

TEST(QuantizerDeathTest, MismatchedParamsAbort) {
  const Tensor w({2, 3});
  const QuantParams p = ChooseWeightParams(
      w, 0, {8, QuantScheme::kSymmetric, Granularity::kPerChannel});
  Tensor out;
  EXPECT_DEATH(FakeQuantize(Tensor({3, 3}), p, &out), "channel count");
  EXPECT_DEATH(ChooseWeightParams(Tensor({2, 3, 4}), 3, {}), "channel axis");
  EXPECT_DEATH(ParamsFromRange(1.0f, 0.0f, 8, QuantScheme::kSymmetric),
               "range");
}

// ---------------------------------------------------------------------------
// More cases from mixq issue #4: every grid against its integers, clamps
// that bind, and the straight-through mask on the last axis and for binary.

TEST(QuantizerTest, FakeIsDequantizedIntegersOnEveryGridWithClampAndNaN) {
  Tensor x = Gaussian({3, 4, 5}, 17);
  x.flat() *= 4.0f;  // wider than `narrow` below: the clamp binds
  x.values()[7] = kNaN;
  x.values()[20] = kInf;
  x.values()[41] = -kInf;
  const Tensor narrow = Gaussian({3, 4, 5}, 18);
  for (const QuantScheme scheme :
       {QuantScheme::kSymmetric, QuantScheme::kAsymmetric}) {
    for (int bits = 1; bits <= 8; ++bits) {
      SCOPED_TRACE(::testing::Message() << "bits " << bits << " scheme "
                                        << static_cast<int>(scheme));
      ExpectFakeEqualsDequantizedIntegers(
          x,
          ChooseWeightParams(narrow, 0,
                             {bits, scheme, Granularity::kPerTensor}),
          [](int64_t) { return 0; });
      ExpectFakeEqualsDequantizedIntegers(
          x,
          ChooseWeightParams(narrow, 0,
                             {bits, scheme, Granularity::kPerChannel}),
          [](int64_t i) { return i / 20; });
      ExpectFakeEqualsDequantizedIntegers(
          x,
          ChooseWeightParams(narrow, 2,
                             {bits, scheme, Granularity::kPerChannel}),
          [](int64_t i) { return i % 5; });
      if (bits >= kMinActivationBits) {
        ExpectFakeEqualsDequantizedIntegers(
            x, ParamsFromRange(-1.0f, 2.5f, bits, scheme),
            [](int64_t) { return 0; });
      }
    }
  }
}

TEST(QuantizerTest, AllZeroTensorsGiveScaleOneAndZeros) {
  // Bits 2..8: a 1-bit grid has no zero level (sign(0) = +1).
  const Tensor w({3, 4});
  for (const QuantScheme scheme :
       {QuantScheme::kSymmetric, QuantScheme::kAsymmetric}) {
    for (const Granularity g :
         {Granularity::kPerTensor, Granularity::kPerChannel}) {
      for (int bits = 2; bits <= 8; ++bits) {
        const QuantParams p = ChooseWeightParams(w, 1, {bits, scheme, g});
        EXPECT_EQ(p.scale, std::vector<float>(p.channels(), 1.0f));
        EXPECT_EQ(p.zero_point, std::vector<int32_t>(p.channels(), 0));
        Tensor fake;
        FakeQuantize(w, p, &fake);
        EXPECT_TRUE((fake.flat() == 0.0f).all()) << "bits " << bits;
      }
    }
  }
}

TEST(RoundingTest, ActivationsHalfToEvenWeightsHalfUpAtScaleOne) {
  const std::vector<float> x = {2.5f, 3.5f, -2.5f, 0.5f, -0.5f, 1.5f, 127.0f};
  const Tensor t({7}, x);
  const QuantParams activation =
      ParamsFromRange(-127.0f, 127.0f, 8, QuantScheme::kSymmetric);
  ASSERT_EQ(activation.scale[0], 1.0f);
  EXPECT_EQ(Integers(t, activation),
            (std::vector<int32_t>{2, 4, -2, 0, 0, 2, 127}));
  const QuantParams weights = ChooseWeightParams(
      t, 0, {8, QuantScheme::kSymmetric, Granularity::kPerTensor});
  ASSERT_EQ(weights.scale[0], 1.0f);  // max|w| = 127
  EXPECT_EQ(Integers(t, weights),
            (std::vector<int32_t>{3, 4, -2, 1, 0, 2, 127}));
}

TEST(StraightThroughTest, PerChannelSymmetricOnFirstAndLastAxis) {
  // Row scales 1/127 and 10/127 (clamp ranges ±1 and ±10 plus the half
  // step that still rounds onto the grid): 1.5·127 = 190.5 binds,
  // −1.01·127 ≈ −128.3 binds, 10.02·12.7 ≈ 127.25 ↦ 127 does not.
  const Tensor w({2, 3}, {1.0f, -1.0f, 0.5f, 10.0f, -10.0f, 5.0f});
  const Tensor x({2, 3}, {1.5f, -0.5f, -1.01f, 1.5f, -20.0f, 10.02f});
  const QuantConfig config{8, QuantScheme::kSymmetric,
                           Granularity::kPerChannel};
  Tensor grad({2, 3}, {1, 2, 3, 4, 5, 6});
  StraightThroughGradient(x, ChooseWeightParams(w, 0, config), &grad);
  EXPECT_EQ(grad.ToVector(), (std::vector<float>{0, 2, 0, 4, 0, 6}));
  // The same channels as columns (last axis).
  Tensor wt({3, 2}), xt({3, 2});
  wt.AsMatrix(3, 2) = w.AsMatrix(2, 3).transpose();
  xt.AsMatrix(3, 2) = x.AsMatrix(2, 3).transpose();
  Tensor grad_t({3, 2}, {1, 4, 2, 5, 3, 6});
  StraightThroughGradient(xt, ChooseWeightParams(wt, 1, config), &grad_t);
  EXPECT_EQ(grad_t.ToVector(), (std::vector<float>{0, 4, 2, 0, 0, 6}));
}

TEST(StraightThroughTest, BinaryLeavesGradientsUntouched) {
  const Tensor w({2, 3}, {1.0f, -1.0f, 0.5f, 10.0f, -10.0f, 5.0f});
  const Tensor x({2, 3}, {1e6f, -1e6f, 0.0f, kNaN, kInf, -50.0f});
  const std::vector<float> original = {0.5f, -1.0f, 2.0f, 3.0f, -4.0f, 5.0f};
  for (const Granularity g :
       {Granularity::kPerTensor, Granularity::kPerChannel}) {
    Tensor grad({2, 3}, original);
    StraightThroughGradient(
        x, ChooseWeightParams(w, 0, {1, QuantScheme::kSymmetric, g}), &grad);
    EXPECT_EQ(grad.ToVector(), original);
  }
}

}  // namespace
}  // namespace mixq::search
