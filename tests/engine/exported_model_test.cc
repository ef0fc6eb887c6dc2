// Models exported by PyTorch (scripts/make_models.py, see
// tests/fixtures/README.md) run in mixq's engine and agree with PyTorch.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/dataset.h"
#include "engine/model.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/fixtures.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::FashionMnistInstalled;
using ::mixq::testing::FashionMnistTestSplit;
using ::mixq::testing::FixturePath;
using ::mixq::testing::ReadFashionMnistTestSplit;
using ::mixq::testing::ReadFloatNpy;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Absolute and relative tolerance against PyTorch's float32 logits.
constexpr float kTolerance = 1e-4f;
// The normalisation the MLP was trained with (tests/fixtures/README.md).
constexpr float kFashionMnistMean = 0.2860f;
constexpr float kFashionMnistStd = 0.3530f;
// Test-set accuracy PyTorch measured for mlp_fmnist.onnx (README.md).
constexpr double kPyTorchTestAccuracy = 0.8654;
constexpr double kAccuracySlack = 0.001;
constexpr int64_t kEvalBatch = 1000;

std::unique_ptr<Model> LoadModel(const std::string& path) {
  absl::StatusOr<std::unique_ptr<Model>> model = Model::FromOnnxFile(path);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *std::move(model) : nullptr;
}

std::vector<const Tensor*> InitialParams(const Model& model) {
  std::vector<const Tensor*> params;
  for (const Tensor& p : model.initial_params()) params.push_back(&p);
  return params;
}

void ExpectClose(const Tensor& actual, const Tensor& expected) {
  ASSERT_EQ(actual.shape(), expected.shape());
  for (int64_t i = 0; i < expected.size(); ++i) {
    const float e = expected.data()[i];
    EXPECT_NEAR(actual.data()[i], e, kTolerance * std::max(1.0f, std::abs(e)))
        << "element " << i;
  }
}

std::vector<std::string> QuantizableNames(const Model& model) {
  std::vector<std::string> names;
  for (const QuantizableLayer& layer : model.quantizable_layers()) {
    names.push_back(layer.name);
  }
  return names;
}

TEST(ExportedModelTest, FashionMnistMlpMatchesPyTorch) {
  std::unique_ptr<Model> model = LoadModel(FixturePath("mlp_fmnist.onnx"));
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->input_name(), "input");
  EXPECT_THAT(model->input_shape(), ElementsAre(-1, 1, 28, 28));
  EXPECT_EQ(model->output_name(), "logits");
  EXPECT_THAT(model->output_shape(), ElementsAre(1, 10));

  const Tensor inputs = ReadFloatNpy(FixturePath("mlp_fmnist_ref_inputs.npy"));
  const Tensor expected =
      ReadFloatNpy(FixturePath("mlp_fmnist_ref_logits.npy"));
  ASSERT_THAT(inputs.shape(), ElementsAre(16, 1, 28, 28));
  ASSERT_THAT(expected.shape(), ElementsAre(16, 10));
  absl::StatusOr<Tensor> logits =
      model->Forward(inputs, InitialParams(*model), nullptr);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ExpectClose(*logits, expected);
}

TEST(ExportedModelTest, FashionMnistMlpQuantizableLayers) {
  std::unique_ptr<Model> model = LoadModel(FixturePath("mlp_fmnist.onnx"));
  ASSERT_NE(model, nullptr);
  EXPECT_THAT(QuantizableNames(*model),
              ElementsAre("fc1.weight", "fc2.weight", "fc3.weight"));
  std::vector<int64_t> sizes;
  for (const QuantizableLayer& layer : model->quantizable_layers()) {
    EXPECT_EQ(layer.op_type, "Gemm");
    sizes.push_back(layer.num_weights);
  }
  EXPECT_THAT(sizes, ElementsAre(784 * 128, 128 * 64, 64 * 10));
}

// End to end through the data path the service uses: IDX gzip → [0, 1] →
// Normalize → ConformToModelInput → Forward reproduces PyTorch's accuracy.
TEST(ExportedModelTest, FashionMnistMlpTestAccuracy) {
  if (!FashionMnistInstalled()) {
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  }
  std::unique_ptr<Model> model = LoadModel(FixturePath("mlp_fmnist.onnx"));
  ASSERT_NE(model, nullptr);
  absl::StatusOr<FashionMnistTestSplit> split = ReadFashionMnistTestSplit();
  ASSERT_TRUE(split.ok()) << split.status();
  Tensor& images = split->images;
  const std::vector<int64_t>& labels = split->labels;
  ASSERT_TRUE(Normalize(kFashionMnistMean, kFashionMnistStd, &images).ok());
  ASSERT_TRUE(ConformToModelInput(model->input_shape(), &images).ok());

  const std::vector<const Tensor*> params = InitialParams(*model);
  const int64_t n = images.dim(0);
  int64_t correct = 0;
  for (int64_t begin = 0; begin < n; begin += kEvalBatch) {
    const int64_t end = std::min(n, begin + kEvalBatch);
    absl::StatusOr<Tensor> logits =
        model->Forward(images.Slice(begin, end), params, nullptr);
    ASSERT_TRUE(logits.ok()) << logits.status();
    const Tensor& out = *logits;
    const ConstMatrixMap m = out.AsMatrix(end - begin, out.dim(1));
    for (int64_t i = 0; i < end - begin; ++i) {
      Eigen::Index predicted = 0;
      m.row(i).maxCoeff(&predicted);
      correct += predicted == labels[begin + i];
    }
  }
  EXPECT_NEAR(static_cast<double>(correct) / n, kPyTorchTestAccuracy,
              kAccuracySlack);
}

class TinyMlpOpsetTest : public ::testing::TestWithParam<int> {};

TEST_P(TinyMlpOpsetTest, MatchesPyTorch) {
  std::unique_ptr<Model> model = LoadModel(
      FixturePath(absl::StrCat("tiny_mlp_opset", GetParam(), ".onnx")));
  ASSERT_NE(model, nullptr);
  EXPECT_THAT(QuantizableNames(*model),
              ElementsAre("fc1.weight", "fc2.weight"));
  const Tensor inputs = ReadFloatNpy(FixturePath("tiny_mlp_inputs.npy"));
  const Tensor expected = ReadFloatNpy(FixturePath("tiny_mlp_logits.npy"));
  ASSERT_THAT(inputs.shape(), ElementsAre(4, 8));
  absl::StatusOr<Tensor> logits =
      model->Forward(inputs, InitialParams(*model), nullptr);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ExpectClose(*logits, expected);
}

INSTANTIATE_TEST_SUITE_P(Opsets, TinyMlpOpsetTest,
                         ::testing::Values(11, 13, 17));

TEST(ExportedModelTest, UnsupportedOperatorIsNamed) {
  absl::StatusOr<std::unique_ptr<Model>> model =
      Model::FromOnnxFile(FixturePath("unsupported_op.onnx"));
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument)
      << model.status();
  EXPECT_THAT(std::string(model.status().message()),
              HasSubstr("unsupported operator 'Hardmax'"));
}

}  // namespace
}  // namespace mixq::engine
