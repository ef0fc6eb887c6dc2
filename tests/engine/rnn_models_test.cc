// Recurrent classifiers exported by PyTorch (scripts/make_rnn_models.py, see
// tests/fixtures/README.md): LSTM and GRU, one direction and 2-layer
// bidirectional, opsets 13 and 17, import, agree with PyTorch at batches 1, 3
// and 8, back-propagate gradients that match central differences of the
// loss, and fine-tune: Adam steps on the engine's gradients lower the loss.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/adam.h"
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

constexpr int64_t kBatches[] = {1, 3, 8};
// Finite differences: the loss is smooth (sigmoid, tanh), so one step does.
constexpr int64_t kGradientBatch = 2;
constexpr float kEps = 1e-3f;
constexpr double kGradAbsTolerance = 1e-3;
constexpr double kGradRelTolerance = 2e-2;
constexpr int kElementsPerParam = 3;
// Fine-tuning: Adam steps on the 8 reference samples.
constexpr int kTrainSteps = 5;
constexpr float kLearningRate = 1e-2f;
// The exported models: 28 time steps (image rows) of 28 features, hidden 32.
constexpr int64_t kRows = 28;
constexpr int64_t kHidden = 32;

struct RnnFixture {
  std::string name;  // e.g. "lstm_bi2"
  int opset = 13;
  int recurrent_nodes = 1;
  int directions = 1;
};

void PrintTo(const RnnFixture& f, std::ostream* os) {
  *os << f.name << "_opset" << f.opset;
}

std::vector<RnnFixture> Fixtures() {
  std::vector<RnnFixture> fixtures;
  for (int opset : {13, 17}) {
    fixtures.push_back({"lstm", opset, 1, 1});
    fixtures.push_back({"gru", opset, 1, 1});
    fixtures.push_back({"lstm_bi2", opset, 2, 2});
    fixtures.push_back({"gru_bi2", opset, 2, 2});
  }
  return fixtures;
}

// Arbitrary but fixed labels.
std::vector<int64_t> Labels(int64_t n) {
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = (3 * i + 1) % 10;
  return labels;
}

class RnnModelTest : public ::testing::TestWithParam<RnnFixture> {
 protected:
  void SetUp() override {
    const RnnFixture& f = GetParam();
    absl::StatusOr<std::unique_ptr<Model>> model = Model::FromOnnxFile(
        FixturePath(absl::StrCat(f.name, "_fmnist_opset", f.opset, ".onnx")));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    inputs_ = ReadFloatNpy(FixturePath("rnn_fmnist_inputs.npy"));
    expected_ =
        ReadFloatNpy(FixturePath(absl::StrCat(f.name, "_fmnist_logits.npy")));
    ASSERT_EQ(inputs_.rank(), 3);
    ASSERT_EQ(expected_.rank(), 2);
    ASSERT_EQ(inputs_.dim(0), expected_.dim(0));
  }

  // Mean cross-entropy on (x, labels) with `params`, and its gradients in
  // `grads` when non-null.
  double Loss(const Tensor& x, const std::vector<int64_t>& labels,
              const std::vector<Tensor>& params,
              std::vector<Tensor>* grads) const {
    ForwardTrace trace;
    absl::StatusOr<Tensor> logits = model_->Forward(
        x, Pointers(params), grads != nullptr ? &trace : nullptr);
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return NAN;
    Tensor grad_logits;
    absl::StatusOr<LossResult> loss = SoftmaxCrossEntropy(
        *logits, labels, grads != nullptr ? &grad_logits : nullptr);
    EXPECT_TRUE(loss.ok()) << loss.status();
    if (!loss.ok()) return NAN;
    if (grads != nullptr) {
      const absl::Status status =
          model_->Backward(trace, Pointers(params), grad_logits, grads);
      EXPECT_TRUE(status.ok()) << status;
    }
    return loss->loss;
  }

  std::unique_ptr<Model> model_;
  Tensor inputs_;
  Tensor expected_;
};

TEST_P(RnnModelTest, InterfaceShapes) {
  EXPECT_EQ(model_->input_name(), "input");
  EXPECT_THAT(model_->input_shape(), ElementsAre(-1, 28, 28));
  EXPECT_EQ(model_->output_name(), "logits");
  EXPECT_THAT(model_->output_shape(), ElementsAre(1, 10));
}

TEST_P(RnnModelTest, MatchesPyTorchAtSeveralBatches) {
  const std::vector<const Tensor*> params = Pointers(model_->initial_params());
  for (int64_t batch : kBatches) {
    for (int64_t begin = 0; begin + batch <= inputs_.dim(0); begin += batch) {
      absl::StatusOr<Tensor> logits =
          model_->Forward(inputs_.Slice(begin, begin + batch), params, nullptr);
      ASSERT_TRUE(logits.ok()) << logits.status();
      ExpectClose(*logits, expected_.Slice(begin, begin + batch),
                  absl::StrCat("batch ", batch, " from sample ", begin));
    }
  }
}

TEST_P(RnnModelTest, GradientsMatchFiniteDifferences) {
  const Tensor x = inputs_.Slice(0, kGradientBatch);
  const std::vector<int64_t> labels = Labels(kGradientBatch);
  std::vector<Tensor> params = model_->initial_params();
  std::vector<Tensor> grads;
  Loss(x, labels, params, &grads);
  ASSERT_EQ(grads.size(), params.size());
  for (size_t p = 0; p < params.size(); ++p) {
    const std::string& name = model_->params()[p].name;
    ASSERT_EQ(grads[p].shape(), params[p].shape()) << name;
    ASSERT_TRUE(grads[p].flat().isFinite().all()) << name;
    std::vector<int64_t> elements;
    Eigen::Index largest = 0;
    grads[p].flat().abs().maxCoeff(&largest);
    elements.push_back(largest);
    for (int e = 1; e < kElementsPerParam; ++e) {
      elements.push_back(e * params[p].size() / kElementsPerParam);
    }
    for (int64_t j : elements) {
      float& w = params[p].data()[j];
      const float saved = w;
      w = saved + kEps;
      const double plus = Loss(x, labels, params, nullptr);
      w = saved - kEps;
      const double minus = Loss(x, labels, params, nullptr);
      w = saved;
      const double numeric = (plus - minus) / (2.0 * kEps);
      EXPECT_NEAR(grads[p].data()[j], numeric,
                  kGradAbsTolerance + kGradRelTolerance * std::abs(numeric))
          << name << " element " << j;
    }
  }
}

// W of each LSTM/GRU node (torch names it onnx::LSTM_* / onnx::GRU_*) is a
// layer with its gate rows as channels, then the classifier's Gemm.
// Each recurrent node gives two layers, W then R (R's input, the hidden
// state, is not hooked), both quantized per gate row; then the head.
TEST_P(RnnModelTest, QuantizableLayersAreRecurrentWeightsAndGemm) {
  const RnnFixture& f = GetParam();
  const std::vector<QuantizableLayer>& layers = model_->quantizable_layers();
  ASSERT_EQ(layers.size(), static_cast<size_t>(2 * f.recurrent_nodes + 1));
  const std::string op =
      f.name.substr(0, f.name.find('_')) == "lstm" ? "LSTM" : "GRU";
  const int64_t gates = op == "LSTM" ? 4 : 3;
  const int64_t directions = f.directions;
  for (int l = 0; l < f.recurrent_nodes; ++l) {
    const QuantizableLayer& w_layer = layers[2 * l];
    const QuantizableLayer& r_layer = layers[2 * l + 1];
    for (const QuantizableLayer* layer : {&w_layer, &r_layer}) {
      EXPECT_EQ(layer->op_type, op);
      EXPECT_EQ(layer->channel_axis, 1);
      EXPECT_EQ(layer->node_name, w_layer.node_name);
    }
    EXPECT_TRUE(w_layer.quantize_input);
    EXPECT_FALSE(r_layer.quantize_input);
    const Shape& w = model_->params()[w_layer.weight_param].shape;
    ASSERT_EQ(w.size(), 3u);
    EXPECT_EQ(w[0], directions);
    EXPECT_EQ(w[1], gates * kHidden);
    EXPECT_EQ(w[2], l == 0 ? kRows : directions * kHidden);
    EXPECT_EQ(w_layer.macs, kRows * NumElements(w)) << w_layer.name;
    const Shape& r = model_->params()[r_layer.weight_param].shape;
    EXPECT_EQ(r, (Shape{directions, gates * kHidden, kHidden}));
    EXPECT_EQ(r_layer.macs, kRows * NumElements(r)) << r_layer.name;
    EXPECT_EQ(r_layer.name, w_layer.node_name + "/R");
  }
  EXPECT_EQ(layers.back().op_type, "Gemm");
  EXPECT_EQ(layers.back().name, "fc.weight");
}

// What a fine-tune runs: Forward with a trace, cross-entropy, Backward, an
// Adam step; the loss on the batch must fall.
TEST_P(RnnModelTest, FineTuningLowersTheLoss) {
  const std::vector<int64_t> labels = Labels(inputs_.dim(0));
  std::vector<Tensor> params = model_->initial_params();
  std::vector<Shape> shapes;
  for (const ParamInfo& info : model_->params()) shapes.push_back(info.shape);
  AdamOptions options;
  options.learning_rate = kLearningRate;
  Adam adam(options, shapes);
  std::vector<Tensor*> param_pointers;
  for (Tensor& p : params) param_pointers.push_back(&p);
  const double before = Loss(inputs_, labels, params, nullptr);
  for (int step = 0; step < kTrainSteps; ++step) {
    std::vector<Tensor> grads;
    Loss(inputs_, labels, params, &grads);
    ASSERT_EQ(grads.size(), params.size());
    adam.Step(param_pointers, grads);
  }
  const double after = Loss(inputs_, labels, params, nullptr);
  EXPECT_LT(after, 0.8 * before) << "loss " << before << " -> " << after;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RnnModelTest,
                         ::testing::ValuesIn(Fixtures()), [](const auto& info) {
                           return absl::StrCat(info.param.name, "_opset",
                                               info.param.opset);
                         });

}  // namespace
}  // namespace mixq::engine
