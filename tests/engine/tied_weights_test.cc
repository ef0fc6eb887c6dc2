// Tied and de-duplicated weights (tests/fixtures/tied_opset13.onnx, made by
// scripts/make_tied_models.py): a 2-layer nn.TransformerEncoder whose equal
// layers the exporter wrote once (the second reads every weight through an
// Identity node), and one Linear applied twice. Each weight is one
// quantizable layer whose MACs sum over its nodes, the hook sees every node's
// input as that layer's, and Backward keeps each node's hooked input apart.
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/fixtures.h"
#include "tests/support/gradient_check.h"
#include "tests/support/tensor_compare.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::FixturePath;
using ::mixq::testing::Pointers;
using ::mixq::testing::ReadFloatNpy;
using ::testing::ElementsAre;

// The hook halves every layer input: a smooth transformation, so the hooked
// model's gradients can be checked against central differences.
constexpr float kHookScale = 0.5f;
constexpr float kGradEps = 1e-3f;
constexpr double kGradAbsTolerance = 2e-3;
constexpr double kGradRelTolerance = 2e-2;
constexpr int64_t kGradElements = 4;  // checked per layer weight
constexpr int64_t kElementStride = 7919;

class ScalingHook : public LayerInputHook {
 public:
  absl::StatusOr<bool> Forward(int layer, const Tensor& x,
                               Tensor* out) override {
    seen_.push_back(layer);
    out->flat() = kHookScale * x.flat();
    return true;
  }
  void Backward(int, const Tensor&, Tensor* grad) const override {
    grad->flat() *= kHookScale;
  }
  const std::vector<int>& seen() const { return seen_; }

 private:
  std::vector<int> seen_;
};

class TiedWeightsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Model>> model =
        Model::FromOnnxFile(FixturePath("tied_opset13.onnx"));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    inputs_ = ReadFloatNpy(FixturePath("tied_inputs.npy"));
  }

  std::unique_ptr<Model> model_;
  Tensor inputs_;
};

TEST_F(TiedWeightsTest, MatchesPyTorchAtEveryBatch) {
  for (int64_t batch : {1, 3, 8}) {
    SCOPED_TRACE(batch);
    absl::StatusOr<Tensor> y = model_->Forward(
        inputs_.Slice(0, batch), Pointers(model_->initial_params()), nullptr);
    ASSERT_TRUE(y.ok()) << y.status();
    testing::ExpectClose(*y, testing::FixtureLogits("tied", batch), "logits");
  }
}

// Per encoder layer pair: in-projection, out-projection, the feed-forward
// pair, each read by both layers; the shared Linear read twice; the head.
TEST_F(TiedWeightsTest, EachWeightIsOneLayerOverAllItsNodes) {
  const std::vector<QuantizableLayer>& layers = model_->quantizable_layers();
  ASSERT_EQ(layers.size(), 6u);
  std::vector<std::string> ops;
  std::vector<size_t> nodes;
  for (const QuantizableLayer& layer : layers) {
    ops.push_back(layer.op_type);
    nodes.push_back(layer.node_names.size());
    EXPECT_EQ(layer.node_names.front(), layer.node_name);
  }
  EXPECT_THAT(
      ops, ElementsAre("MatMul", "Gemm", "MatMul", "MatMul", "MatMul", "Gemm"));
  EXPECT_THAT(nodes, ElementsAre(2, 2, 2, 2, 2, 1));
  EXPECT_THAT(layers[0].node_names,
              ElementsAre("/encoder/layers.0/self_attn/MatMul",
                          "/encoder/layers.1/self_attn/MatMul"));
  EXPECT_THAT(layers[4].node_names,
              ElementsAre("/shared/MatMul", "/shared_1/MatMul"));
  // 5 tokens x 16 x 16 per use of the shared Linear; the in-projection
  // 5 x 16 x 48 per layer.
  EXPECT_EQ(layers[4].macs, 2 * 5 * 16 * 16);
  EXPECT_EQ(layers[0].macs, 2 * 5 * 16 * 48);
  EXPECT_EQ(layers[5].macs, 16 * 4);
}

TEST_F(TiedWeightsTest, HookSeesEveryNodeAndBackwardKeepsTheirInputsApart) {
  std::vector<Tensor> params = model_->initial_params();
  const Tensor x = inputs_.Slice(0, 2);
  ScalingHook hook;
  ForwardTrace trace;
  absl::StatusOr<Tensor> y =
      model_->Forward(x, Pointers(params), &trace, &hook);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(hook.seen(), ElementsAre(0, 1, 2, 3, 0, 1, 2, 3, 4, 4, 5));
  Tensor upstream(y->shape());
  for (int64_t i = 0; i < upstream.size(); ++i) {
    upstream.data()[i] = std::sin(0.7f * static_cast<float>(i) + 0.3f);
  }
  std::vector<Tensor> grads;
  ASSERT_TRUE(
      model_->Backward(trace, Pointers(params), upstream, &grads, &hook).ok());
  const auto loss = [&]() {
    ScalingHook again;
    absl::StatusOr<Tensor> out =
        model_->Forward(x, Pointers(params), nullptr, &again);
    EXPECT_TRUE(out.ok()) << out.status();
    return (out->flat().cast<double>() * upstream.flat().cast<double>()).sum();
  };
  for (const QuantizableLayer& layer : model_->quantizable_layers()) {
    Tensor& w = params[layer.weight_param];
    for (int64_t k = 0; k < kGradElements; ++k) {
      const int64_t j = (k * kElementStride) % w.size();
      const auto [plus, minus] =
          testing::EvaluateAround(w.data()[j], kGradEps, loss);
      const double numeric = (plus - minus) / (2.0 * kGradEps);
      EXPECT_NEAR(grads[layer.weight_param].data()[j], numeric,
                  kGradAbsTolerance + kGradRelTolerance * std::abs(numeric))
          << layer.name << " element " << j;
    }
  }
}

}  // namespace
}  // namespace mixq::engine
