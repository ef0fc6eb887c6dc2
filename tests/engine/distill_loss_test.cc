// DistillLoss: KL on logits, MSE on other outputs, against hand-computed
// values and central finite differences; the objective names.
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/loss.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mixq::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::FloatNear;
using ::testing::HasSubstr;

constexpr float kTolerance = 1e-6f;
constexpr float kFiniteDifferenceStep = 1e-2f;

Tensor Gaussian(const Shape& shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  Tensor t(shape);
  for (float& v : t.values()) v = normal(rng);
  return t;
}

void ExpectInvalid(const absl::Status& status, const std::string& substring) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(substring));
}

TEST(DistillLossTest, KlOnLogitsHandComputed) {
  // Teacher row softmax([0, ln 3]) = [1/4, 3/4]; student softmax([0, 0]) =
  // [1/2, 1/2]. KL = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.1308120.
  const Tensor teacher({1, 2}, {0.0f, std::log(3.0f)});
  const Tensor student({1, 2}, {0.0f, 0.0f});
  Tensor grad;
  absl::StatusOr<LossResult> result = DistillLoss(student, teacher, {}, &grad);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_NEAR(result->loss, 0.25 * std::log(0.5) + 0.75 * std::log(1.5), 1e-6);
  EXPECT_EQ(result->correct, 0);
  // grad = softmax(student) - softmax(teacher) (T = 1, N = 1).
  EXPECT_THAT(grad.values(), ElementsAre(FloatNear(0.25f, kTolerance),
                                         FloatNear(-0.25f, kTolerance)));
}

TEST(DistillLossTest, KlIsZeroForLogitsEqualUpToARowConstant) {
  const Tensor teacher = Gaussian({3, 4}, 1);
  Tensor student = teacher;
  for (int64_t i = 0; i < 4; ++i) student.data()[i] += 5.0f;  // row 0 + 5
  absl::StatusOr<LossResult> result =
      DistillLoss(student, teacher, {}, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_NEAR(result->loss, 0.0, 1e-6);
}

TEST(DistillLossTest, KlCountsTopOneHitsWhenLabelsAreGiven) {
  const Tensor teacher({2, 3}, {0, 0, 0, 0, 0, 0});
  const Tensor student({2, 3}, {1, 2, 3, 2, 1, 0});
  absl::StatusOr<LossResult> result =
      DistillLoss(student, teacher, {2, 1}, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->correct, 1);
}

TEST(DistillLossTest, MseOnOtherOutputsHandComputed) {
  const Tensor teacher({2, 1, 2}, {1, 2, 3, 4});
  const Tensor student({2, 1, 2}, {1, 3, 5, 4});
  Tensor grad;
  absl::StatusOr<LossResult> result = DistillLoss(student, teacher, {}, &grad);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_NEAR(result->loss, (0 + 1 + 4 + 0) / 4.0, 1e-9);
  EXPECT_THAT(grad.shape(), ElementsAre(2, 1, 2));
  EXPECT_THAT(grad.values(), ElementsAre(0.0f, 0.5f, 1.0f, 0.0f));
}

// Both forms: the analytic gradient matches central differences.
TEST(DistillLossTest, GradientsMatchFiniteDifferences) {
  for (const Shape& shape : {Shape{3, 5}, Shape{2, 3, 2}, Shape{4}}) {
    SCOPED_TRACE(ShapeToString(shape));
    const Tensor teacher = Gaussian(shape, 2);
    Tensor student = Gaussian(shape, 3);
    Tensor grad;
    ASSERT_TRUE(DistillLoss(student, teacher, {}, &grad).ok());
    for (int64_t i = 0; i < student.size(); ++i) {
      float& x = student.data()[i];
      const float saved = x;
      x = saved + kFiniteDifferenceStep;
      const double plus = DistillLoss(student, teacher, {}, nullptr)->loss;
      x = saved - kFiniteDifferenceStep;
      const double minus = DistillLoss(student, teacher, {}, nullptr)->loss;
      x = saved;
      const double numeric = (plus - minus) / (2 * kFiniteDifferenceStep);
      EXPECT_NEAR(grad.data()[i], numeric, 1e-4 + 1e-2 * std::abs(numeric))
          << "element " << i;
    }
  }
}

TEST(DistillLossTest, Errors) {
  const Tensor logits({2, 3});
  ExpectInvalid(DistillLoss(logits, Tensor({2, 4}), {}, nullptr).status(),
                "but the FP32 model's output has [2, 4]");
  ExpectInvalid(DistillLoss(logits, logits, {0, 3}, nullptr).status(),
                "label 3 of sample 1 is out of range [0, 3)");
  ExpectInvalid(DistillLoss(logits, logits, {0}, nullptr).status(),
                "got 1 labels for 2 rows");
  ExpectInvalid(
      DistillLoss(Tensor({2, 3, 1}), Tensor({2, 3, 1}), {0, 1}, nullptr)
          .status(),
      "labels need a 2-D output");
  ExpectInvalid(
      DistillLoss(Tensor({0, 3}), Tensor({0, 3}), {}, nullptr).status(),
      "N >= 1");
  Tensor poisoned({2, 3});
  poisoned.data()[4] = std::numeric_limits<float>::quiet_NaN();
  ExpectInvalid(DistillLoss(poisoned, logits, {}, nullptr).status(),
                "the model output holds NaN at element 4");
  ExpectInvalid(DistillLoss(logits, poisoned, {}, nullptr).status(),
                "the FP32 model's output holds NaN");
}

TEST(ObjectiveTest, NamesRoundTrip) {
  for (Objective objective : {Objective::kCrossEntropy, Objective::kDistill}) {
    absl::StatusOr<Objective> parsed = ParseObjective(ObjectiveName(objective));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, objective);
  }
  EXPECT_EQ(ObjectiveName(Objective::kDistill), "distill");
  ExpectInvalid(ParseObjective("mse").status(),
                "unknown objective 'mse' (cross_entropy, distill)");
}

}  // namespace
}  // namespace mixq::engine
