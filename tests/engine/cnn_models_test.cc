// CNNs exported by PyTorch (scripts/make_cnn_models.py, see
// tests/fixtures/README.md) import, agree with PyTorch at several batch
// sizes, expose their Conv and Gemm weights as quantizable layers, and train:
// a forward + cross-entropy + backward step gives finite gradients that match
// central finite differences of the loss.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/loss.h"
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
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

// A batch size the importer never saw (it infers shapes at batch 1).
constexpr int64_t kOddBatch = 3;
// Finite differences run on this many samples.
constexpr int64_t kGradientBatch = 2;
// Central differences on a parameter at two steps. The loss is only piecewise
// smooth (ReLU, ReLU6 = Clip) and strongly curved in the random MobileNet, so
// an element is compared only where the two steps agree (no kink and little
// curvature within the larger one); then the smaller step's estimate must
// match the analytic gradient. Smaller steps drown in float32 rounding of the
// loss.
constexpr float kLargeEps = 2e-3f;
constexpr float kSmallEps = 5e-4f;
constexpr double kGradAbsTolerance = 1e-3;
constexpr double kGradRelTolerance = 5e-2;
// Parameters checked by finite differences per model, spread over the graph,
// and elements per parameter (its largest-gradient element plus a few).
constexpr int kCheckedParams = 6;
constexpr int kElementsPerParam = 3;

struct CnnFixture {
  std::string name;
  std::string onnx;
  std::string inputs;  // float32 [N, C, H, W]
  std::string logits;  // PyTorch's float32 [N, 10]
  Shape input_shape;   // as the model reports it (batch -1)
  int num_convs = 0;
  // The quantizable layer names when the export keeps PyTorch's names
  // (BatchNormalization kept); empty when only counts are checked.
  std::vector<std::string> layer_names;
};

void PrintTo(const CnnFixture& f, std::ostream* os) { *os << f.name; }

const std::vector<std::string>& ResNetLayerNames() {
  static const auto* names = new std::vector<std::string>{
      "stem.0.weight",       "block1.conv1.weight", "block1.conv2.weight",
      "block2.conv1.weight", "block2.conv2.weight", "block2.shortcut.0.weight",
      "block3.conv1.weight", "block3.conv2.weight", "fc.weight"};
  return *names;
}

std::vector<CnnFixture> Fixtures() {
  const Shape fmnist = {-1, 1, 28, 28};
  const Shape mobilenet = {-1, 3, 32, 32};
  return {
      {"ResNetBatchNorm", "resnet_fmnist_bn.onnx", "resnet_fmnist_inputs.npy",
       "resnet_fmnist_logits.npy", fmnist, 8, ResNetLayerNames()},
      {"ResNetFolded",
       "resnet_fmnist_folded.onnx",
       "resnet_fmnist_inputs.npy",
       "resnet_fmnist_logits.npy",
       fmnist,
       8,
       {}},
      {"MobileNetV2",
       "mobilenet_v2_bn.onnx",
       "mobilenet_v2_inputs.npy",
       "mobilenet_v2_logits.npy",
       mobilenet,
       52,
       {}},
      {"MobileNetV2ViewFlatten",
       "mobilenet_v2_view_bn.onnx",
       "mobilenet_v2_inputs.npy",
       "mobilenet_v2_logits.npy",
       mobilenet,
       52,
       {}},
  };
}

// Rows [begin, end) of `t`, each repeated from the start when end > dim(0).
Tensor Rows(const Tensor& t, int64_t begin, int64_t end) {
  if (end <= t.dim(0)) return t.Slice(begin, end);
  Shape shape = t.shape();
  shape[0] = end - begin;
  Tensor out(shape);
  const int64_t row = t.size() / t.dim(0);
  for (int64_t r = begin; r < end; ++r) {
    std::copy_n(t.data() + (r % t.dim(0)) * row, row,
                out.data() + (r - begin) * row);
  }
  return out;
}

bool IsStatistic(const std::string& name) {
  return absl::EndsWith(name, "running_mean") ||
         absl::EndsWith(name, "running_var");
}

class CnnModelTest : public ::testing::TestWithParam<CnnFixture> {
 protected:
  void SetUp() override {
    const CnnFixture& f = GetParam();
    absl::StatusOr<std::unique_ptr<Model>> model =
        Model::FromOnnxFile(FixturePath(f.onnx));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    inputs_ = ReadFloatNpy(FixturePath(f.inputs));
    expected_ = ReadFloatNpy(FixturePath(f.logits));
    ASSERT_EQ(inputs_.rank(), 4);
    ASSERT_EQ(expected_.rank(), 2);
    ASSERT_EQ(inputs_.dim(0), expected_.dim(0));
  }

  absl::StatusOr<Tensor> Forward(const Tensor& x) const {
    return model_->Forward(x, Pointers(model_->initial_params()), nullptr);
  }

  std::unique_ptr<Model> model_;
  Tensor inputs_;
  Tensor expected_;
};

TEST_P(CnnModelTest, InterfaceShapes) {
  EXPECT_EQ(model_->input_name(), "input");
  EXPECT_EQ(model_->input_shape(), GetParam().input_shape);
  EXPECT_EQ(model_->output_name(), "logits");
  EXPECT_THAT(model_->output_shape(), ElementsAre(1, 10));
}

TEST_P(CnnModelTest, MatchesPyTorchAtFullBatch) {
  absl::StatusOr<Tensor> logits = Forward(inputs_);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ExpectClose(*logits, expected_, absl::StrCat("batch ", inputs_.dim(0)));
}

TEST_P(CnnModelTest, MatchesPyTorchOneSampleAtATime) {
  for (int64_t i = 0; i < inputs_.dim(0); ++i) {
    absl::StatusOr<Tensor> logits = Forward(inputs_.Slice(i, i + 1));
    ASSERT_TRUE(logits.ok()) << logits.status();
    ExpectClose(*logits, expected_.Slice(i, i + 1), absl::StrCat("sample ", i));
  }
}

TEST_P(CnnModelTest, MatchesPyTorchAtAnotherBatch) {
  absl::StatusOr<Tensor> logits = Forward(Rows(inputs_, 0, kOddBatch));
  ASSERT_TRUE(logits.ok()) << logits.status();
  ExpectClose(*logits, Rows(expected_, 0, kOddBatch),
              absl::StrCat("batch ", kOddBatch));
}

TEST_P(CnnModelTest, QuantizableLayersAreConvAndGemmWeights) {
  const CnnFixture& f = GetParam();
  const std::vector<QuantizableLayer>& layers = model_->quantizable_layers();
  ASSERT_EQ(layers.size(), static_cast<size_t>(f.num_convs + 1));
  std::vector<std::string> names;
  for (size_t i = 0; i < layers.size(); ++i) {
    const QuantizableLayer& layer = layers[i];
    names.push_back(layer.name);
    // Graph order: every Conv comes before the classifier.
    EXPECT_EQ(layer.op_type, i + 1 < layers.size() ? "Conv" : "Gemm")
        << layer.name;
    ASSERT_GE(layer.weight_param, 0);
    ASSERT_LT(layer.weight_param, static_cast<int>(model_->params().size()));
    const ParamInfo& param = model_->params()[layer.weight_param];
    // Exporter-made initializer names ("onnx::Conv_81") give way to the
    // node's name.
    EXPECT_EQ(layer.name, absl::StartsWith(param.name, "onnx::")
                              ? layer.node_name
                              : param.name);
    EXPECT_EQ(param.shape.size(), layer.op_type == "Conv" ? 4u : 2u)
        << layer.name;
    EXPECT_EQ(layer.channel_axis, 0) << layer.name;
    EXPECT_EQ(layer.num_weights, NumElements(param.shape)) << layer.name;
  }
  if (!f.layer_names.empty()) {
    EXPECT_THAT(names, ElementsAreArray(f.layer_names));
  }
  // Batch-norm parameters and statistics are parameters, never layers.
  for (const QuantizableLayer& layer : layers) {
    EXPECT_FALSE(IsStatistic(layer.name)) << layer.name;
  }
}

// Labels for the training tests: arbitrary but fixed.
std::vector<int64_t> Labels(int64_t n) {
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = (3 * i + 1) % 10;
  return labels;
}

TEST_P(CnnModelTest, TrainStepGivesFiniteGradientsOfTheRightShapes) {
  const std::vector<Tensor>& params = model_->initial_params();
  ForwardTrace trace;
  absl::StatusOr<Tensor> logits =
      model_->Forward(inputs_, Pointers(params), &trace);
  ASSERT_TRUE(logits.ok()) << logits.status();
  Tensor grad_logits;
  absl::StatusOr<LossResult> loss =
      SoftmaxCrossEntropy(*logits, Labels(inputs_.dim(0)), &grad_logits);
  ASSERT_TRUE(loss.ok()) << loss.status();
  EXPECT_TRUE(std::isfinite(loss->loss));
  std::vector<Tensor> grads;
  absl::Status status =
      model_->Backward(trace, Pointers(params), grad_logits, &grads);
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_EQ(grads.size(), params.size());
  for (size_t p = 0; p < params.size(); ++p) {
    const std::string& name = model_->params()[p].name;
    ASSERT_EQ(grads[p].shape(), params[p].shape()) << name;
    EXPECT_TRUE(grads[p].flat().isFinite().all()) << name;
  }
  // Every layer's weight gets a gradient signal.
  for (const QuantizableLayer& layer : model_->quantizable_layers()) {
    EXPECT_GT(grads[layer.weight_param].flat().abs().maxCoeff(), 0.0f)
        << layer.name;
  }
}

// Mean cross-entropy of the model on (x, labels) with `params`.
double Loss(const Model& model, const Tensor& x,
            const std::vector<int64_t>& labels,
            const std::vector<Tensor>& params) {
  absl::StatusOr<Tensor> logits = model.Forward(x, Pointers(params), nullptr);
  EXPECT_TRUE(logits.ok()) << logits.status();
  if (!logits.ok()) return NAN;
  absl::StatusOr<LossResult> result =
      SoftmaxCrossEntropy(*logits, labels, nullptr);
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? result->loss : NAN;
}

bool Near(double analytic, double numeric) {
  return std::abs(analytic - numeric) <=
         kGradAbsTolerance + kGradRelTolerance * std::abs(numeric);
}

// (L(w + eps) - L(w - eps)) / 2 eps for element j of parameter p; restores it.
double CentralDifference(const Model& model, const Tensor& x,
                         const std::vector<int64_t>& labels, int p, int64_t j,
                         float eps, std::vector<Tensor>* params) {
  float& w = (*params)[p].data()[j];
  const float saved = w;
  w = saved + eps;
  const double plus = Loss(model, x, labels, *params);
  w = saved - eps;
  const double minus = Loss(model, x, labels, *params);
  w = saved;
  return (plus - minus) / (2.0 * eps);
}

TEST_P(CnnModelTest, GradientsMatchFiniteDifferences) {
  const Tensor x = inputs_.Slice(0, kGradientBatch);
  const std::vector<int64_t> labels = Labels(kGradientBatch);
  std::vector<Tensor> params = model_->initial_params();
  ForwardTrace trace;
  absl::StatusOr<Tensor> logits = model_->Forward(x, Pointers(params), &trace);
  ASSERT_TRUE(logits.ok()) << logits.status();
  Tensor grad_logits;
  ASSERT_TRUE(SoftmaxCrossEntropy(*logits, labels, &grad_logits).ok());
  std::vector<Tensor> grads;
  absl::Status status =
      model_->Backward(trace, Pointers(params), grad_logits, &grads);
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_EQ(grads.size(), params.size());

  // Trainable parameters (a step on a variance could make it negative),
  // spread evenly from the first to the last.
  std::vector<int> trainable;
  for (size_t p = 0; p < params.size(); ++p) {
    if (!IsStatistic(model_->params()[p].name)) trainable.push_back(p);
  }
  ASSERT_GE(trainable.size(), static_cast<size_t>(kCheckedParams));
  int checked = 0;
  int total = 0;
  for (int k = 0; k < kCheckedParams; ++k) {
    const int p = trainable[k * (trainable.size() - 1) / (kCheckedParams - 1)];
    const std::string& name = model_->params()[p].name;
    Tensor& param = params[p];
    std::vector<int64_t> elements;
    Eigen::Index largest = 0;
    grads[p].flat().abs().maxCoeff(&largest);
    elements.push_back(largest);
    for (int e = 1; e < kElementsPerParam; ++e) {
      elements.push_back(e * param.size() / kElementsPerParam);
    }
    for (int64_t j : elements) {
      ++total;
      const double large =
          CentralDifference(*model_, x, labels, p, j, kLargeEps, &params);
      const double small =
          CentralDifference(*model_, x, labels, p, j, kSmallEps, &params);
      if (!Near(large, small)) continue;
      ++checked;
      EXPECT_PRED2(Near, grads[p].data()[j], small) << name << " element " << j;
    }
  }
  RecordProperty("checked_elements", checked);
  RecordProperty("total_elements", total);
  EXPECT_GE(checked, total / 2) << "too many elements sit near a kink";
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CnnModelTest,
                         ::testing::ValuesIn(Fixtures()),
                         [](const auto& info) { return info.param.name; });

// The view-flatten export routes the batch through Shape → Gather →
// Unsqueeze → Concat → Reshape; at batch sizes the import never saw it must
// agree with torchvision's Flatten export exactly.
TEST(CnnModelShapeGraphTest, ViewFlattenAgreesWithFlattenAtEveryBatch) {
  absl::StatusOr<std::unique_ptr<Model>> flatten =
      Model::FromOnnxFile(FixturePath("mobilenet_v2_bn.onnx"));
  absl::StatusOr<std::unique_ptr<Model>> view =
      Model::FromOnnxFile(FixturePath("mobilenet_v2_view_bn.onnx"));
  ASSERT_TRUE(flatten.ok()) << flatten.status();
  ASSERT_TRUE(view.ok()) << view.status();
  const Tensor inputs = ReadFloatNpy(FixturePath("mobilenet_v2_inputs.npy"));
  for (int64_t batch : {1, 2, 5}) {
    const Tensor x = Rows(inputs, 0, batch);
    absl::StatusOr<Tensor> a =
        (*flatten)->Forward(x, Pointers((*flatten)->initial_params()), nullptr);
    absl::StatusOr<Tensor> b =
        (*view)->Forward(x, Pointers((*view)->initial_params()), nullptr);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_THAT(b->shape(), ElementsAre(batch, 10));
    EXPECT_EQ(a->values(), b->values()) << "batch " << batch;
  }
}

}  // namespace
}  // namespace mixq::engine
