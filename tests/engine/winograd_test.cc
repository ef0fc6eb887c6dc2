// Winograd F(2x2, 3x3) and F(4x4, 3x3) kernels (each forced, and the
// automatic choice) against a naive double-precision convolution written here:
// forward (with and without bias), weight gradient, and the input gradient as
// the forward pass with flipped, transposed weights; over a table of shapes
// (odd and even sizes, asymmetric pads, 1x1 outputs, maps large enough to be
// cut into bands of tile rows) and a sweep of small ones. Plus bit-identical
// results for 1 and 2 threads, and WinogradSuits.
#include "engine/winograd.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace mixq::engine {
namespace {

constexpr int kTaps = 3;
constexpr int64_t kMaxPad = 2;
// |winograd - exact| <= tolerance * (1 + sum of |terms|) per element:
// F(4x4)'s transforms scale by up to 8 and 1/24, so its errors are larger.
constexpr double kTolerance2x2 = 1e-5;
constexpr double kTolerance4x4 = 3e-5;
constexpr WinogradTile kTiles[] = {WinogradTile::k2x2, WinogradTile::k4x4,
                                   WinogradTile::kAuto};

double Tolerance(WinogradTile tile) {
  return tile == WinogradTile::k2x2 ? kTolerance2x2 : kTolerance4x4;
}

const char* TileName(WinogradTile tile) {
  switch (tile) {
    case WinogradTile::k2x2:
      return "F(2x2)";
    case WinogradTile::k4x4:
      return "F(4x4)";
    case WinogradTile::kAuto:
      return "auto";
  }
  return "?";
}
constexpr uint32_t kSeed = 7;

struct Case {
  int64_t n, c, m, h, w;
  int64_t pad_top, pad_bottom, pad_left, pad_right;
};

std::string Name(const Case& k) {
  return absl::StrCat("n", k.n, " c", k.c, " m", k.m, " ", k.h, "x", k.w,
                      " pads t", k.pad_top, " b", k.pad_bottom, " l",
                      k.pad_left, " r", k.pad_right);
}

Conv3x3Shape ShapeOf(const Case& k) {
  return {.n = k.n,
          .c = k.c,
          .h = k.h,
          .w = k.w,
          .m = k.m,
          .pad_top = k.pad_top,
          .pad_left = k.pad_left,
          .out_h = k.h + k.pad_top + k.pad_bottom - (kTaps - 1),
          .out_w = k.w + k.pad_left + k.pad_right - (kTaps - 1)};
}

std::vector<float> Random(int64_t size, std::mt19937* rng) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> v(size);
  for (float& x : v) x = uniform(*rng);
  return v;
}

// An exact value and the sum of the magnitudes of its terms.
struct Reference {
  std::vector<double> value;
  std::vector<double> magnitude;
};

// x[n, c, ih, iw], zero outside.
double At(const Conv3x3Shape& s, const std::vector<float>& x, int64_t n,
          int64_t c, int64_t ih, int64_t iw) {
  if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) return 0.0;
  return x[((n * s.c + c) * s.h + ih) * s.w + iw];
}

Reference ReferenceForward(const Conv3x3Shape& s, const std::vector<float>& x,
                           const std::vector<float>& w, const float* bias) {
  Reference r;
  r.value.assign(s.n * s.m * s.out_h * s.out_w, 0.0);
  r.magnitude.assign(r.value.size(), 0.0);
  for (int64_t n = 0; n < s.n; ++n) {
    for (int64_t m = 0; m < s.m; ++m) {
      for (int64_t oh = 0; oh < s.out_h; ++oh) {
        for (int64_t ow = 0; ow < s.out_w; ++ow) {
          double sum = bias == nullptr ? 0.0 : bias[m];
          double mag = std::abs(sum);
          for (int64_t c = 0; c < s.c; ++c) {
            for (int i = 0; i < kTaps; ++i) {
              for (int j = 0; j < kTaps; ++j) {
                const double term =
                    w[((m * s.c + c) * kTaps + i) * kTaps + j] *
                    At(s, x, n, c, oh + i - s.pad_top, ow + j - s.pad_left);
                sum += term;
                mag += std::abs(term);
              }
            }
          }
          const int64_t k = ((n * s.m + m) * s.out_h + oh) * s.out_w + ow;
          r.value[k] = sum;
          r.magnitude[k] = mag;
        }
      }
    }
  }
  return r;
}

Reference ReferenceWeightGrad(const Conv3x3Shape& s,
                              const std::vector<float>& x,
                              const std::vector<float>& dy) {
  Reference r;
  r.value.assign(s.m * s.c * kTaps * kTaps, 0.0);
  r.magnitude.assign(r.value.size(), 0.0);
  for (int64_t m = 0; m < s.m; ++m) {
    for (int64_t c = 0; c < s.c; ++c) {
      for (int i = 0; i < kTaps; ++i) {
        for (int j = 0; j < kTaps; ++j) {
          double sum = 0.0, mag = 0.0;
          for (int64_t n = 0; n < s.n; ++n) {
            for (int64_t oh = 0; oh < s.out_h; ++oh) {
              for (int64_t ow = 0; ow < s.out_w; ++ow) {
                const double term =
                    dy[((n * s.m + m) * s.out_h + oh) * s.out_w + ow] *
                    At(s, x, n, c, oh + i - s.pad_top, ow + j - s.pad_left);
                sum += term;
                mag += std::abs(term);
              }
            }
          }
          const int64_t k = ((m * s.c + c) * kTaps + i) * kTaps + j;
          r.value[k] = sum;
          r.magnitude[k] = mag;
        }
      }
    }
  }
  return r;
}

// dx[n, c, ih, iw] = sum over m, i, j of w[m, c, i, j] dy[n, m, ih - i +
// pad_top, iw - j + pad_left] (dy outside the output = 0).
Reference ReferenceInputGrad(const Conv3x3Shape& s, const std::vector<float>& w,
                             const std::vector<float>& dy) {
  Reference r;
  r.value.assign(s.n * s.c * s.h * s.w, 0.0);
  r.magnitude.assign(r.value.size(), 0.0);
  for (int64_t n = 0; n < s.n; ++n) {
    for (int64_t c = 0; c < s.c; ++c) {
      for (int64_t ih = 0; ih < s.h; ++ih) {
        for (int64_t iw = 0; iw < s.w; ++iw) {
          double sum = 0.0, mag = 0.0;
          for (int64_t m = 0; m < s.m; ++m) {
            for (int i = 0; i < kTaps; ++i) {
              for (int j = 0; j < kTaps; ++j) {
                const int64_t oh = ih - i + s.pad_top;
                const int64_t ow = iw - j + s.pad_left;
                if (oh < 0 || oh >= s.out_h || ow < 0 || ow >= s.out_w) {
                  continue;
                }
                const double term =
                    w[((m * s.c + c) * kTaps + i) * kTaps + j] *
                    dy[((n * s.m + m) * s.out_h + oh) * s.out_w + ow];
                sum += term;
                mag += std::abs(term);
              }
            }
          }
          const int64_t k = ((n * s.c + c) * s.h + ih) * s.w + iw;
          r.value[k] = sum;
          r.magnitude[k] = mag;
        }
      }
    }
  }
  return r;
}

// The largest |got - exact| / (1 + magnitude); fails above `tolerance`.
double ExpectNear(const std::vector<float>& got, const Reference& want,
                  const std::string& what, double tolerance = kTolerance2x2) {
  EXPECT_EQ(got.size(), want.value.size()) << what;
  double worst = 0.0;
  int failures = 0;
  for (size_t k = 0; k < std::min(got.size(), want.value.size()); ++k) {
    const double error =
        std::abs(got[k] - want.value[k]) / (1.0 + want.magnitude[k]);
    worst = std::max(worst, error);
    if (!(error <= tolerance) && ++failures <= 3) {
      ADD_FAILURE() << what << ": element " << k << " is " << got[k]
                    << ", expected " << want.value[k] << " (magnitude "
                    << want.magnitude[k] << ")";
    }
  }
  return worst;
}

// w'[c, m, i, j] = w[m, c, 2 - i, 2 - j].
std::vector<float> FlippedTransposed(const Conv3x3Shape& s,
                                     const std::vector<float>& w) {
  std::vector<float> t(w.size());
  for (int64_t m = 0; m < s.m; ++m) {
    for (int64_t c = 0; c < s.c; ++c) {
      for (int i = 0; i < kTaps; ++i) {
        for (int j = 0; j < kTaps; ++j) {
          t[((c * s.m + m) * kTaps + i) * kTaps + j] =
              w[((m * s.c + c) * kTaps + (kTaps - 1 - i)) * kTaps +
                (kTaps - 1 - j)];
        }
      }
    }
  }
  return t;
}

// The input gradient's convolution: dY [n, m, out_h, out_w] to [n, c, h, w].
Conv3x3Shape TransposedShape(const Conv3x3Shape& s) {
  return {.n = s.n,
          .c = s.m,
          .h = s.out_h,
          .w = s.out_w,
          .m = s.c,
          .pad_top = kMaxPad - s.pad_top,
          .pad_left = kMaxPad - s.pad_left,
          .out_h = s.h,
          .out_w = s.w};
}

struct Errors {
  double forward = 0, weight_grad = 0, input_grad = 0;
};

// Checks forward (with and without bias), the weight gradient and the input
// gradient of `k` with `tile` against the references; returns the worst
// errors.
Errors CheckCase(const Case& k, WinogradTile tile, std::mt19937* rng) {
  const Conv3x3Shape s = ShapeOf(k);
  const std::string name = absl::StrCat(Name(k), " ", TileName(tile));
  const double tol = Tolerance(tile);
  EXPECT_TRUE(WinogradValid(s)) << name;
  const std::vector<float> x = Random(s.n * s.c * s.h * s.w, rng);
  const std::vector<float> w = Random(s.m * s.c * kTaps * kTaps, rng);
  const std::vector<float> bias = Random(s.m, rng);
  const std::vector<float> dy = Random(s.n * s.m * s.out_h * s.out_w, rng);
  Errors e;

  // NaN-filled outputs: every element must be written.
  std::vector<float> y(s.n * s.m * s.out_h * s.out_w, std::nanf(""));
  WinogradConvForward(s, x.data(), w.data(), nullptr, y.data(), tile);
  e.forward =
      ExpectNear(y, ReferenceForward(s, x, w, nullptr), name + " forward", tol);
  std::fill(y.begin(), y.end(), std::nanf(""));
  WinogradConvForward(s, x.data(), w.data(), bias.data(), y.data(), tile);
  e.forward =
      std::max(e.forward, ExpectNear(y, ReferenceForward(s, x, w, bias.data()),
                                     name + " forward with bias", tol));

  std::vector<float> dw(w.size(), std::nanf(""));
  WinogradConvWeightGrad(s, x.data(), dy.data(), dw.data(), tile);
  e.weight_grad =
      ExpectNear(dw, ReferenceWeightGrad(s, x, dy), name + " weight grad", tol);

  const Conv3x3Shape t = TransposedShape(s);
  EXPECT_TRUE(WinogradValid(t)) << name;
  const std::vector<float> wt = FlippedTransposed(s, w);
  std::vector<float> dx(x.size(), std::nanf(""));
  WinogradConvForward(t, dy.data(), wt.data(), nullptr, dx.data(), tile);
  e.input_grad =
      ExpectNear(dx, ReferenceInputGrad(s, w, dy), name + " input grad", tol);
  return e;
}

void Report(const char* what, WinogradTile tile, const Errors& e) {
  std::printf(
      "%s, %s: max relative error forward %.3g, weight grad %.3g, input "
      "grad %.3g\n",
      what, TileName(tile), e.forward, e.weight_grad, e.input_grad);
}

Errors Worst(const Errors& a, const Errors& b) {
  return {std::max(a.forward, b.forward),
          std::max(a.weight_grad, b.weight_grad),
          std::max(a.input_grad, b.input_grad)};
}

TEST(WinogradTest, MatchesReferenceOnShapeTable) {
  const std::vector<Case> cases = {
      {1, 1, 1, 1, 1, 1, 1, 1, 1},        // 1x1 output from padding
      {1, 3, 1, 3, 3, 0, 0, 0, 0},        // 1x1 output, no padding
      {2, 3, 16, 5, 7, 1, 1, 1, 1},       // odd sizes
      {3, 16, 3, 8, 8, 0, 0, 0, 0},       // even, unpadded
      {1, 33, 16, 9, 9, 2, 2, 2, 2},      // pads 2
      {2, 16, 33, 6, 9, 2, 0, 1, 2},      // asymmetric pads
      {3, 1, 33, 4, 2, 0, 2, 1, 1},       // narrow
      {2, 33, 33, 2, 9, 1, 0, 0, 1},      // short
      {2, 16, 16, 28, 28, 1, 1, 1, 1},    // the ResNet's first stage
      {3, 32, 32, 14, 14, 1, 1, 1, 1},    // its second stage
      {37, 16, 16, 9, 9, 1, 1, 1, 1},     // several multi-sample blocks
      {1, 3, 3, 70, 66, 1, 1, 0, 2},      // bands of tile rows, 3 chunks/row
      {2, 4, 5, 41, 37, 2, 1, 1, 0},      // bands, odd everything
      {3, 3, 4, 200, 190, 1, 1, 2, 0},    // more blocks than partial sums
      {1, 128, 128, 16, 16, 1, 1, 1, 1},  // many channels
      {1, 256, 192, 8, 8, 1, 1, 1, 1},    // more, one F(4x4) tile row pair
  };
  for (WinogradTile tile : kTiles) {
    std::mt19937 rng(kSeed);
    Errors worst;
    for (const Case& k : cases) worst = Worst(worst, CheckCase(k, tile, &rng));
    Report("shape table", tile, worst);
  }
}

TEST(WinogradTest, MatchesReferenceOnSmallSizesAndPads) {
  for (WinogradTile tile : kTiles) {
    std::mt19937 rng(kSeed + 1);
    Errors worst;
    for (int64_t h = 1; h <= 9; ++h) {
      for (int64_t w = 1; w <= 9; ++w) {
        for (int64_t pt = 0; pt <= kMaxPad; ++pt) {
          for (int64_t pb = 0; pb <= kMaxPad; ++pb) {
            const Case k = {.n = 1 + (h + w) % 3,
                            .c = 1 + (h * w) % 4,
                            .m = 1 + (h + 2 * w) % 3,
                            .h = h,
                            .w = w,
                            .pad_top = pt,
                            .pad_bottom = pb,
                            .pad_left = (pt + h) % 3,
                            .pad_right = (pb + w) % 3};
            if (k.h + k.pad_top + k.pad_bottom < kTaps ||
                k.w + k.pad_left + k.pad_right < kTaps) {
              continue;
            }
            worst = Worst(worst, CheckCase(k, tile, &rng));
            if (::testing::Test::HasFailure()) return;
          }
        }
      }
    }
    Report("small sizes sweep", tile, worst);
  }
}

TEST(WinogradTest, ResultsDoNotDependOnThreadCount) {
  const std::vector<Case> cases = {
      {37, 16, 16, 9, 9, 1, 1, 1, 1},
      {16, 32, 32, 14, 14, 1, 1, 1, 1},
      {2, 5, 6, 70, 66, 1, 1, 0, 2},
      {3, 3, 4, 200, 190, 1, 1, 2, 0},
      // One block with enough work to split its stages between threads
      // (batch 1 on ResNet-18's last stages).
      {1, 256, 256, 7, 7, 1, 1, 1, 1},
      {1, 128, 96, 14, 14, 1, 1, 1, 1},
  };
  const int threads = omp_get_max_threads();
  for (WinogradTile tile : {WinogradTile::k2x2, WinogradTile::k4x4}) {
    std::mt19937 rng(kSeed + 2);
    for (const Case& k : cases) {
      const Conv3x3Shape s = ShapeOf(k);
      const std::vector<float> x = Random(s.n * s.c * s.h * s.w, &rng);
      const std::vector<float> w = Random(s.m * s.c * kTaps * kTaps, &rng);
      const std::vector<float> bias = Random(s.m, &rng);
      const std::vector<float> dy = Random(s.n * s.m * s.out_h * s.out_w, &rng);
      std::vector<float> y[2], dw[2];
      for (int run = 0; run < 2; ++run) {
        omp_set_num_threads(run + 1);
        y[run].resize(dy.size());
        dw[run].resize(w.size());
        WinogradConvForward(s, x.data(), w.data(), bias.data(), y[run].data(),
                            tile);
        WinogradConvWeightGrad(s, x.data(), dy.data(), dw[run].data(), tile);
      }
      omp_set_num_threads(threads);
      EXPECT_EQ(
          std::memcmp(y[0].data(), y[1].data(), y[0].size() * sizeof(float)), 0)
          << Name(k) << " " << TileName(tile) << " forward";
      EXPECT_EQ(
          std::memcmp(dw[0].data(), dw[1].data(), dw[0].size() * sizeof(float)),
          0)
          << Name(k) << " " << TileName(tile) << " weight grad";
    }
  }
}

// Scratch buffers are reused across calls: a call on non-finite inputs must
// not leave values that leak into a later call's results. 3 samples of 30
// tile positions write block positions that 2 samples leave unwritten.
TEST(WinogradTest, NonFiniteInputsDoNotLeakIntoLaterCalls) {
  for (WinogradTile tile : {WinogradTile::k2x2, WinogradTile::k4x4}) {
    const Conv3x3Shape s = ShapeOf({2, 3, 3, 9, 9, 1, 1, 1, 1});
    Conv3x3Shape larger = s;
    larger.n = 3;
    std::mt19937 rng(kSeed + 3);
    const std::vector<float> x = Random(s.n * s.c * s.h * s.w, &rng);
    const std::vector<float> dy = Random(s.n * s.m * s.out_h * s.out_w, &rng);
    const std::vector<float> w = Random(s.m * s.c * kTaps * kTaps, &rng);
    const std::vector<float> nans(larger.n * s.c * s.h * s.w, std::nanf(""));
    const std::vector<float> larger_dy(larger.n * s.m * s.out_h * s.out_w,
                                       1.0f);
    std::vector<float> dw(s.m * s.c * kTaps * kTaps);
    std::vector<float> y(larger_dy.size());
    WinogradConvWeightGrad(larger, nans.data(), larger_dy.data(), dw.data(),
                           tile);
    WinogradConvForward(larger, nans.data(), w.data(), nullptr, y.data(), tile);
    y.resize(dy.size());
    WinogradConvWeightGrad(s, x.data(), dy.data(), dw.data(), tile);
    WinogradConvForward(s, x.data(), w.data(), nullptr, y.data(), tile);
    const std::string name = TileName(tile);
    ExpectNear(dw, ReferenceWeightGrad(s, x, dy),
               name + " weight grad after NaNs", Tolerance(tile));
    ExpectNear(y, ReferenceForward(s, x, w, nullptr),
               name + " forward after NaNs", Tolerance(tile));
  }
}

// kAuto takes F(4x4) where it is faster (28x28 maps) and F(2x2) elsewhere
// (14x14, 7x7): its results equal the forced tile size's bit for bit.
TEST(WinogradTest, AutoPicksTileSizePerShape) {
  struct Expectation {
    Case k;
    WinogradTile tile;
  };
  const std::vector<Expectation> expectations = {
      {{2, 16, 16, 28, 28, 1, 1, 1, 1}, WinogradTile::k4x4},
      {{2, 32, 32, 14, 14, 1, 1, 1, 1}, WinogradTile::k2x2},
      {{2, 8, 8, 7, 7, 1, 1, 1, 1}, WinogradTile::k2x2},
  };
  std::mt19937 rng(kSeed + 4);
  for (const Expectation& e : expectations) {
    const Conv3x3Shape s = ShapeOf(e.k);
    const std::vector<float> x = Random(s.n * s.c * s.h * s.w, &rng);
    const std::vector<float> w = Random(s.m * s.c * kTaps * kTaps, &rng);
    const std::vector<float> dy = Random(s.n * s.m * s.out_h * s.out_w, &rng);
    std::vector<float> y[2], dw[2];
    const WinogradTile tiles[2] = {WinogradTile::kAuto, e.tile};
    for (int run = 0; run < 2; ++run) {
      y[run].resize(dy.size());
      dw[run].resize(w.size());
      WinogradConvForward(s, x.data(), w.data(), nullptr, y[run].data(),
                          tiles[run]);
      WinogradConvWeightGrad(s, x.data(), dy.data(), dw[run].data(),
                             tiles[run]);
    }
    EXPECT_EQ(y[0], y[1]) << Name(e.k) << " forward";
    EXPECT_EQ(dw[0], dw[1]) << Name(e.k) << " weight grad";
  }
}

TEST(WinogradTest, SuitsAndValid) {
  const Conv3x3Shape resnet = ShapeOf({128, 16, 16, 28, 28, 1, 1, 1, 1});
  EXPECT_TRUE(WinogradValid(resnet));
  EXPECT_TRUE(WinogradSuits(resnet));
  Conv3x3Shape s = resnet;
  s.c = 3;  // too few channels to pay off, but computable
  EXPECT_TRUE(WinogradValid(s));
  EXPECT_FALSE(WinogradSuits(s));
  s = resnet;
  s.m = 1024;
  EXPECT_TRUE(WinogradValid(s));
  EXPECT_FALSE(WinogradSuits(s));
  s = resnet;
  s.pad_top = 3;  // pad_top out of range
  s.out_h += 2;
  EXPECT_FALSE(WinogradValid(s));
  s = resnet;
  s.out_w = 31;  // implies pad_right 3
  EXPECT_FALSE(WinogradValid(s));
  s = resnet;
  s.out_h = 25;  // implies pad_bottom -1
  EXPECT_FALSE(WinogradValid(s));
  s = resnet;
  s.n = 0;
  EXPECT_FALSE(WinogradValid(s));
}

}  // namespace
}  // namespace mixq::engine
