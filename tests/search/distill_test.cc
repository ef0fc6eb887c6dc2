// The distill objective in the search: a label-free job scores and
// fine-tunes against the FP32 model's outputs (search/teacher.h), its
// quantized model stays close to FP32, accuracy is reported only where
// labels exist, and a seed still fixes the result bit for bit, resumed or
// not.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "engine/dataset.h"
#include "engine/loss.h"
#include "engine/model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "search/progressive.h"
#include "search/teacher.h"
#include "tests/search/search_fixture.h"
#include "tests/support/fixtures.h"

namespace mixq::search {
namespace {

// Fashion-MNIST normalisation the MLP fixture expects (tests/fixtures).
constexpr float kMean = 0.2860f;
constexpr float kStd = 0.3530f;
constexpr int64_t kCalibSamples = 256;
constexpr int64_t kTrainSamples = 1024;
constexpr int64_t kValSamples = 512;
// The 4-bit MLP must agree with FP32 on most top-1 classes and stay within a
// small KL divergence of its output distribution.
constexpr double kMinTop1Agreement = 0.95;
constexpr double kMaxValKl = 0.05;

// Drops the labels: what a user with unlabeled calibration data has.
LabeledData Unlabeled(LabeledData data) {
  data.labels.clear();
  return data;
}

TEST(DistillSearchTest, LabelFreeSearchOnTheMlpStaysCloseToFp32) {
  if (!testing::FashionMnistInstalled()) GTEST_SKIP() << "no Fashion-MNIST";
  auto model =
      engine::Model::FromOnnxFile(testing::FixturePath("mlp_fmnist.onnx"));
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<testing::FashionMnistTestSplit> split =
      testing::ReadFashionMnistTestSplit();
  ASSERT_TRUE(split.ok()) << split.status();
  const int64_t n = kCalibSamples + kTrainSamples + kValSamples;
  LabeledData all;
  all.inputs = split->images.Slice(0, n);
  all.labels.assign(split->labels.begin(), split->labels.begin() + n);
  ASSERT_TRUE(engine::Normalize(kMean, kStd, &all.inputs).ok());
  ASSERT_TRUE(
      engine::ConformToModelInput((*model)->input_shape(), &all.inputs).ok());
  ASSERT_TRUE(AttachTeacher(**model, &all).ok());
  ASSERT_TRUE(all.distill());
  const LabeledData calib = Unlabeled(all.Slice(0, kCalibSamples));
  const LabeledData train =
      Unlabeled(all.Slice(kCalibSamples, kCalibSamples + kTrainSamples));
  const LabeledData val = all.Slice(kCalibSamples + kTrainSamples, n);

  ProgressiveOptions options;
  options.bit_levels = {8, 6, 4, 3};
  options.budget = {Budget::Kind::kAvgBits, 4.0};
  options.candidates = 4;
  options.warmup_steps = 20;
  options.finetune_steps = 10;
  options.final_finetune_steps = 20;
  options.learning_rate = 1e-4;
  options.batch_size = 64;
  options.seed = 3;

  Evaluation labelled_val;
  Evaluation unlabelled_val;
  double top1_agreement = 0;
  SearchObserver observer;
  observer.on_finish = [&](QatSession& session,
                           const Policy& policy) -> absl::Status {
    MIXQ_ASSIGN_OR_RETURN(labelled_val, session.Evaluate(policy, val));
    MIXQ_ASSIGN_OR_RETURN(unlabelled_val,
                          session.Evaluate(policy, Unlabeled(val)));
    MIXQ_ASSIGN_OR_RETURN(const engine::Tensor outputs,
                          session.Predict(policy, val.inputs));
    const int64_t classes = outputs.dim(1);
    int64_t agree = 0;
    for (int64_t i = 0; i < val.size(); ++i) {
      const float* q = outputs.data() + i * classes;
      const float* t = val.teacher.data() + i * classes;
      agree += std::max_element(q, q + classes) - q ==
               std::max_element(t, t + classes) - t;
    }
    top1_agreement = static_cast<double>(agree) / val.size();
    return absl::OkStatus();
  };
  absl::StatusOr<SearchResult> result =
      RunProgressiveSearch(**model, calib, train, options, observer);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_LE(result->final_policy.avg_bits, 4.0 + 1e-9);
  // No labels in the calibration set: a distance, no accuracy.
  EXPECT_TRUE(std::isnan(result->final_policy.accuracy));
  EXPECT_GE(result->final_policy.loss, 0.0);
  EXPECT_LT(result->final_policy.loss, kMaxValKl);
  // Validation: the same distance with or without labels; accuracy where
  // labels exist.
  EXPECT_EQ(labelled_val.loss, unlabelled_val.loss);
  EXPECT_LT(labelled_val.loss, kMaxValKl);
  EXPECT_TRUE(std::isnan(unlabelled_val.accuracy));
  EXPECT_FALSE(std::isnan(labelled_val.accuracy));
  EXPECT_GT(labelled_val.accuracy, 0.7);  // the FP32 MLP's is about 0.85
  EXPECT_GE(top1_agreement, kMinTop1Agreement);
  RecordProperty("final_kl", std::to_string(result->final_policy.loss));
  RecordProperty("top1_agreement", std::to_string(top1_agreement));
}

// The shared synthetic MLP, its labels replaced by the FP32 model's outputs.
class DistillCheckpointTest : public testing::MlpSearchTest {
 protected:
  void SetUp() override {
    testing::MlpSearchTest::SetUp();
    calib_ = Unlabeled(calib_);
    train_ = Unlabeled(train_);
    ASSERT_TRUE(AttachTeacher(*model_, &calib_).ok());
    ASSERT_TRUE(AttachTeacher(*model_, &train_).ok());
  }

  static void ExpectSame(const ScoredPolicy& a, const ScoredPolicy& b,
                         const std::string& what) {
    EXPECT_EQ(a.policy, b.policy) << what;
    EXPECT_EQ(a.loss, b.loss) << what;
    EXPECT_EQ(a.omega, b.omega) << what;
    EXPECT_EQ(a.index, b.index) << what;
    EXPECT_TRUE(std::isnan(a.accuracy) && std::isnan(b.accuracy)) << what;
  }
};

TEST_F(DistillCheckpointTest, SeededAndResumedRunsMatchBitForBit) {
  const ProgressiveOptions options = Options();
  std::vector<StepReport> full;
  absl::StatusOr<SearchResult> expected =
      Run(options, &full, nullptr, /*checkpoints=*/true);
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_GE(full.size(), 2u);
  // The distance starts at zero (the warm-up is at 8 bits: close to FP32).
  EXPECT_LT(full[0].finetuned.loss, 0.05);

  std::vector<StepReport> again;
  absl::StatusOr<SearchResult> repeated = Run(options, &again);
  ASSERT_TRUE(repeated.ok()) << repeated.status();
  ExpectSame(repeated->final_policy, expected->final_policy, "same seed");

  for (size_t from = 0; from + 1 < full.size(); ++from) {
    std::vector<StepReport> rest;
    absl::StatusOr<SearchResult> resumed = Run(
        options, &rest, nullptr, /*checkpoints=*/true, full[from].checkpoint);
    ASSERT_TRUE(resumed.ok()) << resumed.status();
    const std::string what = absl::StrCat("resumed after step ", from);
    ASSERT_EQ(rest.size(), full.size() - from - 1) << what;
    for (size_t i = 0; i < rest.size(); ++i) {
      ExpectSame(rest[i].finetuned, full[from + 1 + i].finetuned, what);
      EXPECT_EQ(rest[i].checkpoint, full[from + 1 + i].checkpoint) << what;
    }
    ExpectSame(resumed->final_policy, expected->final_policy, what);
  }
}

}  // namespace
}  // namespace mixq::search
