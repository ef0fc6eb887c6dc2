// WinogradWeightCache and the Conv kernel's use of it: a hit hands out the
// same transform, any change to the weights (one bit of one tap) or to the
// shape gives the fresh transform of the new ones, a transform a caller
// holds is never overwritten, an unheld one is re-used in place (a training
// loop does not allocate), concurrent callers each get their own weights'
// transform; and a Conv node run again after its weights changed in place
// computes with the new weights.
#include "engine/winograd_cache.h"

#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "engine/tensor.h"
#include "engine/winograd.h"
#include "gtest/gtest.h"
#include "tests/support/kernel_testing.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::IntsAttr;
using ::mixq::testing::MakeKernel;
using ::mixq::testing::UniformValues;

constexpr int64_t kFilterTaps = 9;
constexpr uint32_t kSeed = 11;

// 16 -> 24 channels on a 9x9 map, pads 1: a shape the kernel takes.
Conv3x3Shape TestShape() {
  return {.n = 2,
          .c = 16,
          .h = 9,
          .w = 9,
          .m = 24,
          .pad_top = 1,
          .pad_left = 1,
          .out_h = 9,
          .out_w = 9};
}

int64_t WeightCount(const Conv3x3Shape& s) { return s.m * s.c * kFilterTaps; }

// Whether `u` holds exactly the transform a fresh WinogradWeights makes.
bool SameAsFresh(const WinogradWeights& u, const Conv3x3Shape& s,
                 WinogradTile tile, const std::vector<float>& w) {
  const WinogradWeights fresh(s, tile, w.data());
  if (fresh.tile() != u.tile() || !u.Fits(s, tile)) return false;
  const int64_t points = fresh.tile() == WinogradTile::k4x4 ? 36 : 16;
  return std::memcmp(fresh.data(), u.data(),
                     points * s.m * s.c * sizeof(float)) == 0;
}

TEST(WinogradWeightCacheTest, UnchangedWeightsHitAndChangedOnesAreFresh) {
  std::mt19937 rng(kSeed);
  const Conv3x3Shape s = TestShape();
  std::vector<float> w = UniformValues(WeightCount(s), &rng);
  WinogradWeightCache cache;
  const std::shared_ptr<const WinogradWeights> first =
      cache.Get(s, WinogradTile::kAuto, w.data());
  EXPECT_TRUE(SameAsFresh(*first, s, WinogradTile::kAuto, w));
  EXPECT_EQ(cache.Get(s, WinogradTile::kAuto, w.data()), first);

  // The last tap's lowest bit.
  uint32_t bits;
  std::memcpy(&bits, &w.back(), sizeof(bits));
  bits ^= 1u;
  std::memcpy(&w.back(), &bits, sizeof(bits));
  const std::shared_ptr<const WinogradWeights> changed =
      cache.Get(s, WinogradTile::kAuto, w.data());
  EXPECT_NE(changed, first);  // `first` is still held
  EXPECT_TRUE(SameAsFresh(*changed, s, WinogradTile::kAuto, w));
}

// Two sets of weights for TestShape() and a cache.
class TwoWeightsTest : public ::testing::Test {
 protected:
  std::mt19937 rng_{kSeed};
  const Conv3x3Shape s_ = TestShape();
  const std::vector<float> w1_ = UniformValues(WeightCount(s_), &rng_);
  const std::vector<float> w2_ = UniformValues(WeightCount(s_), &rng_);
  WinogradWeightCache cache_;
};

TEST_F(TwoWeightsTest, AHeldTransformIsNeverOverwritten) {
  const std::shared_ptr<const WinogradWeights> held =
      cache_.Get(s_, WinogradTile::k2x2, w1_.data());
  const std::shared_ptr<const WinogradWeights> other =
      cache_.Get(s_, WinogradTile::k2x2, w2_.data());
  EXPECT_TRUE(SameAsFresh(*held, s_, WinogradTile::k2x2, w1_));
  EXPECT_TRUE(SameAsFresh(*other, s_, WinogradTile::k2x2, w2_));
}

TEST_F(TwoWeightsTest, AnUnheldTransformIsReusedInPlace) {
  const WinogradWeights* first =
      cache_.Get(s_, WinogradTile::k4x4, w1_.data()).get();
  const std::shared_ptr<const WinogradWeights> second =
      cache_.Get(s_, WinogradTile::k4x4, w2_.data());
  EXPECT_EQ(second.get(), first);
  EXPECT_TRUE(SameAsFresh(*second, s_, WinogradTile::k4x4, w2_));
}

TEST(WinogradWeightCacheTest, AnotherTileOrChannelCountIsFresh) {
  std::mt19937 rng(kSeed);
  const Conv3x3Shape s = TestShape();
  const std::vector<float> w = UniformValues(WeightCount(s), &rng);
  WinogradWeightCache cache;
  ASSERT_TRUE(SameAsFresh(*cache.Get(s, WinogradTile::k2x2, w.data()), s,
                          WinogradTile::k2x2, w));
  EXPECT_TRUE(SameAsFresh(*cache.Get(s, WinogradTile::k4x4, w.data()), s,
                          WinogradTile::k4x4, w));
  // The same floats read as 8 -> 48 channels.
  Conv3x3Shape reshaped = s;
  reshaped.c = 8;
  reshaped.m = 48;
  EXPECT_TRUE(SameAsFresh(*cache.Get(reshaped, WinogradTile::k4x4, w.data()),
                          reshaped, WinogradTile::k4x4, w));
}

TEST(WinogradWeightCacheTest, ConcurrentCallersEachGetTheirOwnWeights) {
  constexpr int kCallsPerThread = 200;
  std::mt19937 rng(kSeed);
  const Conv3x3Shape s = TestShape();
  const std::vector<float> weights[2] = {UniformValues(WeightCount(s), &rng),
                                         UniformValues(WeightCount(s), &rng)};
  WinogradWeightCache cache;
  int wrong[2] = {0, 0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCallsPerThread; ++i) {
        const std::shared_ptr<const WinogradWeights> u =
            cache.Get(s, WinogradTile::k2x2, weights[t].data());
        if (!SameAsFresh(*u, s, WinogradTile::k2x2, weights[t])) ++wrong[t];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(wrong[0], 0);
  EXPECT_EQ(wrong[1], 0);
}

TEST(WinogradWeightCacheTest, AConvRunAfterItsWeightsChangedInPlaceUsesThem) {
  std::mt19937 rng(kSeed);
  const Conv3x3Shape s = TestShape();
  absl::StatusOr<std::unique_ptr<Kernel>> conv = MakeKernel(
      "Conv",
      {{"kernel_shape", IntsAttr({3, 3})}, {"pads", IntsAttr({1, 1, 1, 1})}});
  ASSERT_TRUE(conv.ok()) << conv.status();
  const Tensor x({s.n, s.c, s.h, s.w},
                 UniformValues(s.n * s.c * s.h * s.w, &rng));
  Tensor w({s.m, s.c, 3, 3}, UniformValues(WeightCount(s), &rng));
  const Tensor* inputs[] = {&x, &w};
  Tensor before({s.n, s.m, s.out_h, s.out_w});
  (*conv)->Forward(inputs, &before);
  for (float& v : w.values()) v *= -2.0f;  // the same buffer, new weights
  Tensor after({s.n, s.m, s.out_h, s.out_w});
  (*conv)->Forward(inputs, &after);
  for (size_t i = 0; i < after.values().size(); ++i) {
    ASSERT_NEAR(after.values()[i], -2.0f * before.values()[i], 1e-4f) << i;
  }
}

}  // namespace
}  // namespace mixq::engine
