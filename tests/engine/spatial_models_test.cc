// 1-D and dense-prediction networks exported by PyTorch
// (scripts/make_spatial_models.py: Conv1d classifiers, image restoration with
// ConvTranspose, PixelShuffle and Upsample) import at opsets 13 and 17, agree
// with PyTorch at batch sizes 1, 3 and 8, expose their Conv, ConvTranspose
// and Gemm weights as quantizable layers with the right channel axes, and
// back-propagate: parameter gradients match central finite differences.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/fixtures.h"
#include "tests/support/tensor_compare.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::ExpectClose;
using ::mixq::testing::Pointers;

using ::mixq::testing::FixturePath;
using ::mixq::testing::ReadFloatNpy;
using ::testing::ElementsAreArray;

// Batches compared with PyTorch: (first sample, count).
constexpr std::pair<int64_t, int64_t> kBatches[] = {{5, 1}, {2, 3}, {0, 8}};
// Finite differences: as cnn_models_test, two steps must agree (no ReLU kink
// or max switch within the larger), then the smaller one is compared.
constexpr int64_t kGradientBatch = 2;
constexpr float kLargeEps = 2e-3f;
constexpr float kSmallEps = 5e-4f;
constexpr double kGradAbsTolerance = 1e-3;
constexpr double kGradRelTolerance = 5e-2;
constexpr int kElementsPerParam = 3;

struct Layer {
  std::string op_type;
  int channel_axis;
};

struct SpatialFixture {
  std::string name;  // <name>_opset<N>.onnx, <name>_outputs.npy
  std::string inputs;
  std::vector<Layer> layers;
};

struct SpatialCase {
  SpatialFixture fixture;
  int opset;
};

void PrintTo(const SpatialCase& c, std::ostream* os) {
  *os << c.fixture.name << "_opset" << c.opset;
}

std::vector<SpatialCase> Cases() {
  const std::string signal = "spatial_signal_inputs.npy";
  const std::string image = "spatial_image_inputs.npy";
  const Layer conv = {"Conv", 0};
  const Layer linear = {"Gemm", 0};  // transB = 1
  const std::vector<Layer> conv1d = {conv, conv, linear};
  const std::vector<Layer> two_convs = {conv, conv};
  const std::vector<SpatialFixture> fixtures = {
      {"conv1d_maxpool", signal, conv1d},
      {"conv1d_avgpool", signal, conv1d},
      {"conv1d_adaptive", signal, conv1d},
      {"restore_deconv", image, {conv, {"ConvTranspose", 1}, conv}},
      {"restore_shuffle", image, {conv, conv, conv}},
      {"upsample_nearest", image, two_convs},
      {"upsample_bilinear", image, two_convs},
      {"upsample_bilinear_ac", image, two_convs},
      {"upsample_size", image, two_convs},
  };
  std::vector<SpatialCase> cases;
  for (const SpatialFixture& f : fixtures) {
    for (int opset : {13, 17}) cases.push_back({f, opset});
  }
  return cases;
}

class SpatialModelTest : public ::testing::TestWithParam<SpatialCase> {
 protected:
  void SetUp() override {
    const SpatialCase& c = GetParam();
    absl::StatusOr<std::unique_ptr<Model>> model = Model::FromOnnxFile(
        FixturePath(absl::StrCat(c.fixture.name, "_opset", c.opset, ".onnx")));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    inputs_ = ReadFloatNpy(FixturePath(c.fixture.inputs));
    expected_ =
        ReadFloatNpy(FixturePath(absl::StrCat(c.fixture.name, "_outputs.npy")));
    ASSERT_EQ(inputs_.dim(0), expected_.dim(0));
  }

  std::unique_ptr<Model> model_;
  Tensor inputs_;
  Tensor expected_;
};

TEST_P(SpatialModelTest, MatchesPyTorchAtSeveralBatchSizes) {
  for (const auto& [first, count] : kBatches) {
    absl::StatusOr<Tensor> out =
        model_->Forward(inputs_.Slice(first, first + count),
                        Pointers(model_->initial_params()), nullptr);
    ASSERT_TRUE(out.ok()) << out.status();
    ExpectClose(*out, expected_.Slice(first, first + count),
                absl::StrCat("batch ", count));
  }
}

TEST_P(SpatialModelTest, QuantizableLayersHaveTheirChannelAxes) {
  std::vector<std::string> op_types, expected_op_types;
  std::vector<int> axes, expected_axes;
  for (const QuantizableLayer& layer : model_->quantizable_layers()) {
    op_types.push_back(layer.op_type);
    axes.push_back(layer.channel_axis);
    const ParamInfo& param = model_->params()[layer.weight_param];
    EXPECT_EQ(layer.num_weights, NumElements(param.shape)) << layer.name;
    EXPECT_GT(layer.macs, 0) << layer.name;
  }
  for (const Layer& layer : GetParam().fixture.layers) {
    expected_op_types.push_back(layer.op_type);
    expected_axes.push_back(layer.channel_axis);
  }
  EXPECT_THAT(op_types, ElementsAreArray(expected_op_types));
  EXPECT_THAT(axes, ElementsAreArray(expected_axes));
}

// L = Σ R ⊙ model(x) for a fixed random R.
double Loss(const Model& model, const Tensor& x, const Tensor& r,
            const std::vector<Tensor>& params) {
  absl::StatusOr<Tensor> out = model.Forward(x, Pointers(params), nullptr);
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return NAN;
  double sum = 0.0;
  for (int64_t i = 0; i < out->size(); ++i) {
    sum += static_cast<double>(out->data()[i]) * r.data()[i];
  }
  return sum;
}

bool Near(double analytic, double numeric) {
  return std::abs(analytic - numeric) <=
         kGradAbsTolerance + kGradRelTolerance * std::abs(numeric);
}

double CentralDifference(const Model& model, const Tensor& x, const Tensor& r,
                         int p, int64_t j, float eps,
                         std::vector<Tensor>* params) {
  float& w = (*params)[p].data()[j];
  const float saved = w;
  w = saved + eps;
  const double plus = Loss(model, x, r, *params);
  w = saved - eps;
  const double minus = Loss(model, x, r, *params);
  w = saved;
  return (plus - minus) / (2.0 * eps);
}

TEST_P(SpatialModelTest, GradientsMatchFiniteDifferences) {
  const Tensor x = inputs_.Slice(0, kGradientBatch);
  std::vector<Tensor> params = model_->initial_params();
  ForwardTrace trace;
  absl::StatusOr<Tensor> out = model_->Forward(x, Pointers(params), &trace);
  ASSERT_TRUE(out.ok()) << out.status();
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  Tensor r(out->shape());
  for (float& v : r.values()) v = uniform(rng);
  std::vector<Tensor> grads;
  absl::Status status = model_->Backward(trace, Pointers(params), r, &grads);
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_EQ(grads.size(), params.size());

  int checked = 0;
  int total = 0;
  for (size_t p = 0; p < params.size(); ++p) {
    const std::string& name = model_->params()[p].name;
    ASSERT_TRUE(grads[p].flat().isFinite().all()) << name;
    std::vector<int64_t> elements;
    Eigen::Index largest = 0;
    grads[p].flat().abs().maxCoeff(&largest);
    elements.push_back(largest);
    for (int e = 1; e < kElementsPerParam; ++e) {
      elements.push_back(e * params[p].size() / kElementsPerParam);
    }
    for (int64_t j : elements) {
      ++total;
      const double large =
          CentralDifference(*model_, x, r, p, j, kLargeEps, &params);
      const double small =
          CentralDifference(*model_, x, r, p, j, kSmallEps, &params);
      if (!Near(large, small)) continue;
      ++checked;
      EXPECT_PRED2(Near, grads[p].data()[j], small) << name << " element " << j;
    }
  }
  EXPECT_GE(checked, total / 2) << "too many elements sit near a kink";
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SpatialModelTest,
                         ::testing::ValuesIn(Cases()), [](const auto& info) {
                           return absl::StrCat(info.param.fixture.name,
                                               "_opset", info.param.opset);
                         });

}  // namespace
}  // namespace mixq::engine
