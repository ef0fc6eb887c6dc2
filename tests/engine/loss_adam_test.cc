#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "engine/adam.h"
#include "engine/loss.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mixq::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::FloatNear;
using ::testing::HasSubstr;

constexpr float kTolerance = 1e-5f;
// 1 - 0.999f is 0.00099998713f: v carries a 1.3e-5 relative error.
constexpr float kMomentTolerance = 3e-8f;

// ------------------------------------------------------------------ Loss ----

TEST(SoftmaxCrossEntropyTest, HandComputed) {
  // Row 0: log(e^1 + e^2 + e^3) - 3 = 0.4076059; arg max 2 = label.
  // Row 1: log(e^2 + e^1 + e^0) - 1 = 1.4076059; arg max 0 != label 1.
  const Tensor logits({2, 3}, {1, 2, 3, 2, 1, 0});
  Tensor grad;
  absl::StatusOr<LossResult> result =
      SoftmaxCrossEntropy(logits, {2, 1}, &grad);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_NEAR(result->loss, (0.4076059 + 1.4076059) / 2, 1e-6);
  EXPECT_EQ(result->correct, 1);
  // softmax([1, 2, 3]) = [0.0900306, 0.2447285, 0.6652410]; grad is
  // (softmax - onehot) / N.
  EXPECT_THAT(grad.shape(), ElementsAre(2, 3));
  EXPECT_THAT(grad.values(),
              ElementsAre(FloatNear(0.0900306f / 2, kTolerance),
                          FloatNear(0.2447285f / 2, kTolerance),
                          FloatNear((0.6652410f - 1) / 2, kTolerance),
                          FloatNear(0.6652410f / 2, kTolerance),
                          FloatNear((0.2447285f - 1) / 2, kTolerance),
                          FloatNear(0.0900306f / 2, kTolerance)));
}

TEST(SoftmaxCrossEntropyTest, UniformLogits) {
  const Tensor logits({1, 4});
  absl::StatusOr<LossResult> result = SoftmaxCrossEntropy(logits, {3}, nullptr);
  ASSERT_TRUE(result.ok());
  EXPECT_NEAR(result->loss, std::log(4.0), 1e-6);
}

TEST(SoftmaxCrossEntropyTest, StableForHugeLogits) {
  const Tensor logits({2, 2}, {1000, 0, -1000, 1000});
  Tensor grad;
  absl::StatusOr<LossResult> result =
      SoftmaxCrossEntropy(logits, {0, 0}, &grad);
  ASSERT_TRUE(result.ok());
  // Row 0 is certain and right (loss 0), row 1 certain and wrong (2000).
  EXPECT_NEAR(result->loss, 1000.0, 1e-3);
  EXPECT_EQ(result->correct, 1);
  EXPECT_TRUE(grad.flat().isFinite().all());
  EXPECT_THAT(grad.values(), ElementsAre(0, 0, -0.5f, 0.5f));
}

TEST(SoftmaxCrossEntropyTest, GradientMatchesFiniteDifferences) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  Tensor logits({3, 5});
  for (float& v : logits.values()) v = normal(rng);
  const std::vector<int64_t> labels = {4, 0, 2};
  Tensor grad;
  ASSERT_TRUE(SoftmaxCrossEntropy(logits, labels, &grad).ok());
  constexpr float kEps = 1e-2f;
  for (int64_t i = 0; i < logits.size(); ++i) {
    float& x = logits.data()[i];
    const float saved = x;
    x = saved + kEps;
    const double plus = SoftmaxCrossEntropy(logits, labels, nullptr)->loss;
    x = saved - kEps;
    const double minus = SoftmaxCrossEntropy(logits, labels, nullptr)->loss;
    x = saved;
    const double numeric = (plus - minus) / (2 * kEps);
    EXPECT_NEAR(grad.data()[i], numeric, 1e-4 + 1e-2 * std::abs(numeric))
        << "element " << i;
  }
}

TEST(SoftmaxCrossEntropyTest, Errors) {
  const Tensor logits({2, 3});
  const auto expect_invalid = [](const absl::Status& status,
                                 const std::string& substring) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr(substring));
  };
  expect_invalid(SoftmaxCrossEntropy(logits, {0, 3}, nullptr).status(),
                 "label 3 of sample 1 is out of range [0, 3)");
  expect_invalid(SoftmaxCrossEntropy(logits, {-1, 0}, nullptr).status(),
                 "label -1 of sample 0");
  expect_invalid(SoftmaxCrossEntropy(logits, {0}, nullptr).status(),
                 "got 1 labels for 2 rows");
  expect_invalid(SoftmaxCrossEntropy(Tensor({6}), {0}, nullptr).status(),
                 "logits must be [N, C]");
  expect_invalid(SoftmaxCrossEntropy(Tensor({0, 3}), {}, nullptr).status(),
                 "logits must be [N, C]");
  // An overflowed forward pass: NaN or infinite logits are an error, not a
  // NaN loss and gradient.
  for (float bad : {std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity(),
                    std::numeric_limits<float>::quiet_NaN()}) {
    Tensor poisoned({2, 3});
    poisoned.data()[4] = bad;
    Tensor grad;
    expect_invalid(SoftmaxCrossEntropy(poisoned, {0, 1}, &grad).status(),
                   std::isnan(bad) ? "the logits (model output) holds NaN at "
                                     "element 4: the forward pass overflowed"
                                   : "holds infinity at element 4");
  }
}

// ------------------------------------------------------------------ Adam ----

TEST(AdamTest, TwoStepsByHand) {
  const AdamOptions options{
      .learning_rate = 0.1f, .beta1 = 0.9f, .beta2 = 0.999f, .epsilon = 1e-8f};
  Adam adam(options, {{2}});
  Tensor p({2}, {1.0f, -2.0f});
  Tensor* params[] = {&p};

  // Step 1: m̂ = g and v̂ = g², so each weight moves by lr against sign(g).
  adam.Step(params, {Tensor({2}, {0.5f, -1.0f})});
  EXPECT_EQ(adam.step_count(), 1);
  EXPECT_THAT(p.values(),
              ElementsAre(FloatNear(0.9f, 1e-6f), FloatNear(-1.9f, 1e-6f)));
  EXPECT_THAT(adam.first_moment(0).values(),
              ElementsAre(FloatNear(0.05f, 1e-7f), FloatNear(-0.1f, 1e-7f)));
  EXPECT_THAT(adam.second_moment(0).values(),
              ElementsAre(FloatNear(0.00025f, kMomentTolerance),
                          FloatNear(0.001f, kMomentTolerance)));

  // Step 2 with g = [0.1, 0.2]:
  //   m = [0.055, -0.07], v = [0.00025975, 0.001039],
  //   m̂ = m / 0.19, v̂ = v / 0.001999 = [0.1299400, 0.5197599],
  //   p -= 0.1 · m̂ / (sqrt(v̂) + eps) = [0.0803043, -0.0511025].
  adam.Step(params, {Tensor({2}, {0.1f, 0.2f})});
  EXPECT_EQ(adam.step_count(), 2);
  EXPECT_THAT(adam.first_moment(0).values(),
              ElementsAre(FloatNear(0.055f, 1e-7f), FloatNear(-0.07f, 1e-7f)));
  EXPECT_THAT(adam.second_moment(0).values(),
              ElementsAre(FloatNear(0.00025975f, kMomentTolerance),
                          FloatNear(0.001039f, kMomentTolerance)));
  EXPECT_THAT(p.values(), ElementsAre(FloatNear(0.8196957f, 1e-5f),
                                      FloatNear(-1.8488975f, 1e-5f)));
  EXPECT_THAT(
      adam.CorrectedSecondMoment(0).values(),
      ElementsAre(FloatNear(0.1299400f, 1e-5f), FloatNear(0.5197599f, 1e-5f)));
}

TEST(AdamTest, CorrectedSecondMomentIsZeroBeforeTheFirstStep) {
  Adam adam(AdamOptions{}, {{2, 3}, {4}});
  const Tensor v = adam.CorrectedSecondMoment(0);
  EXPECT_THAT(v.shape(), ElementsAre(2, 3));
  EXPECT_EQ(v.flat().abs().maxCoeff(), 0.0f);
  EXPECT_THAT(adam.CorrectedSecondMoment(1).shape(), ElementsAre(4));
}

TEST(AdamTest, SeveralParametersAndLearningRate) {
  Adam adam(AdamOptions{.learning_rate = 0.5f}, {{1}, {2, 2}});
  adam.set_learning_rate(0.01f);
  EXPECT_EQ(adam.options().learning_rate, 0.01f);
  Tensor a({1}, {0.0f});
  Tensor b({2, 2});
  Tensor* params[] = {&a, &b};
  const std::vector<Tensor> grads = {Tensor({1}, {-3.0f}),
                                     Tensor({2, 2}, {1, -1, 0, 2})};
  adam.Step(params, grads);
  EXPECT_THAT(a.values(), ElementsAre(FloatNear(0.01f, 1e-6f)));
  // A zero gradient leaves its weight where it is.
  EXPECT_THAT(b.values(),
              ElementsAre(FloatNear(-0.01f, 1e-6f), FloatNear(0.01f, 1e-6f),
                          0.0f, FloatNear(-0.01f, 1e-6f)));
  // v̂ after one step is g².
  EXPECT_THAT(adam.CorrectedSecondMoment(1).values(),
              ElementsAre(FloatNear(1, 1e-5f), FloatNear(1, 1e-5f), 0.0f,
                          FloatNear(4, 1e-5f)));
}

TEST(AdamDeathTest, ShapeMismatchAborts) {
  Adam adam(AdamOptions{}, {{2}});
  Tensor p({3});
  Tensor* params[] = {&p};
  EXPECT_DEATH(adam.Step(params, {Tensor({3})}), "shape mismatch");
}

}  // namespace
}  // namespace mixq::engine
