// Model's per-layer cost figures (MACs) and the LayerInputHook that
// activation quantization and observers plug into.
#include <cmath>
#include <memory>
#include <vector>

#include "engine/model.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/onnx_builder.h"
#include "tests/support/onnx_mlp.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::OnnxBuilder;

std::vector<float> Ramp(int64_t n, float step) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = step * static_cast<float>(i % 17 - 8);
  return v;
}

void SetInts(onnx::NodeProto* node, const std::string& name,
             const std::vector<int64_t>& values) {
  onnx::AttributeProto* attr = node->add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) attr->add_ints(v);
}

TEST(LayerCostTest, MacsFromInferredShapes) {
  OnnxBuilder b;
  b.Input("x", {-1, 3, 8, 8}).Output("y");
  b.Initializer("conv.weight", {4, 3, 3, 3}, Ramp(108, 0.01f));
  b.Initializer("dw.weight", {4, 1, 3, 3}, Ramp(36, 0.01f));
  b.Initializer("fc.weight", {10, 64}, Ramp(640, 0.01f));
  b.Initializer("mm.weight", {10, 7}, Ramp(70, 0.01f));
  onnx::NodeProto* conv = b.Node("Conv", {"x", "conv.weight"}, {"c"}, "conv");
  SetInts(conv, "pads", {1, 1, 1, 1});
  // Depthwise, stride 2, no padding: 8x8 -> 3x3.
  onnx::NodeProto* dw = b.Node("Conv", {"c", "dw.weight"}, {"d"}, "dw");
  SetInts(dw, "strides", {2, 2});
  onnx::AttributeProto* group = dw->add_attribute();
  group->set_name("group");
  group->set_type(onnx::AttributeProto::INT);
  group->set_i(4);
  b.IntInitializer("shape", {0, 4, 9});
  b.Node("Reshape", {"d", "shape"}, {"r"});
  b.IntInitializer("flat", {0, 36});
  b.Node("Reshape", {"r", "flat"}, {"f"});
  b.IntInitializer("pad_to_64", {0, 0, 0, 28});
  b.Node("Pad", {"f", "pad_to_64"}, {"p"});
  onnx::NodeProto* fc = b.Node("Gemm", {"p", "fc.weight"}, {"g"}, "fc");
  onnx::AttributeProto* trans = fc->add_attribute();
  trans->set_name("transB");
  trans->set_type(onnx::AttributeProto::INT);
  trans->set_i(1);
  b.Node("MatMul", {"g", "mm.weight"}, {"y"}, "mm");
  absl::StatusOr<std::unique_ptr<Model>> model = b.Build();
  ASSERT_TRUE(model.ok()) << model.status();
  const auto& layers = (*model)->quantizable_layers();
  ASSERT_EQ(layers.size(), 4u);
  EXPECT_EQ(layers[0].macs, 4 * 8 * 8 * (3 * 3 * 3));  // 6912
  EXPECT_EQ(layers[1].macs, 4 * 3 * 3 * (1 * 3 * 3));  // depthwise: 324
  EXPECT_EQ(layers[2].macs, 10 * 64);
  EXPECT_EQ(layers[3].macs, 7 * 10);
}

// x -> x + a·x² on every hooked layer, a per layer: smooth, so its gradient
// can be checked by finite differences.
class SquareHook : public LayerInputHook {
 public:
  explicit SquareHook(std::vector<float> a) : a_(std::move(a)) {}
  absl::StatusOr<bool> Forward(int layer, const Tensor& x,
                               Tensor* out) override {
    calls_.push_back(layer);
    if (a_[layer] == 0) return false;
    out->flat() = x.flat() + a_[layer] * x.flat().square();
    return true;
  }
  void Backward(int layer, const Tensor& x, Tensor* grad) const override {
    grad->flat() *= 1.0f + 2.0f * a_[layer] * x.flat();
  }
  const std::vector<int>& calls() const { return calls_; }

 private:
  std::vector<float> a_;
  std::vector<int> calls_;
};

double Dot(const Tensor& a, const Tensor& b) {
  return (a.flat().cast<double>() * b.flat().cast<double>()).sum();
}

TEST(LayerInputHookTest, ForwardAndBackwardMatchFiniteDifferences) {
  absl::StatusOr<std::unique_ptr<Model>> model =
      Model::FromOnnxBytes(testing::MakeMlpOnnx({5, 6, 4, 3}, 7));
  ASSERT_TRUE(model.ok()) << model.status();
  const Model& m = **model;
  ASSERT_EQ(m.quantizable_layers().size(), 3u);
  std::vector<Tensor> params = m.initial_params();
  std::vector<const Tensor*> pointers;
  for (const Tensor& p : params) pointers.push_back(&p);
  const Tensor x({2, 5}, Ramp(10, 0.3f));
  const Tensor upstream({2, 3}, Ramp(6, 0.5f));

  // Layer 1 is left alone (the hook declines); 0 and 2 are transformed.
  SquareHook hook({0.2f, 0.0f, -0.1f});
  ForwardTrace trace;
  absl::StatusOr<Tensor> y = m.Forward(x, pointers, &trace, &hook);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(hook.calls(), ::testing::ElementsAre(0, 1, 2));
  absl::StatusOr<Tensor> plain = m.Forward(x, pointers, nullptr);
  ASSERT_TRUE(plain.ok());
  EXPECT_GT((y->flat() - plain->flat()).abs().maxCoeff(), 1e-3f)
      << "the hook must change the output";

  std::vector<Tensor> grads;
  ASSERT_TRUE(m.Backward(trace, pointers, upstream, &grads, &hook).ok());
  const auto loss = [&]() {
    SquareHook h({0.2f, 0.0f, -0.1f});
    return Dot(*m.Forward(x, pointers, nullptr, &h), upstream);
  };
  constexpr float kEps = 1e-3f;
  for (size_t p = 0; p < params.size(); ++p) {
    for (int64_t i = 0; i < params[p].size(); ++i) {
      float& w = params[p].data()[i];
      const float saved = w;
      w = saved + kEps;
      const double plus = loss();
      w = saved - kEps;
      const double minus = loss();
      w = saved;
      const double numeric = (plus - minus) / (2.0 * kEps);
      EXPECT_NEAR(grads[p].data()[i], numeric, 2e-3 + 1e-2 * std::abs(numeric))
          << "param " << p << " element " << i;
    }
  }
}

TEST(LayerInputHookTest, BackwardWithoutTheHookIsAnError) {
  absl::StatusOr<std::unique_ptr<Model>> model =
      Model::FromOnnxBytes(testing::MakeMlpOnnx({4, 3, 2}, 3));
  ASSERT_TRUE(model.ok());
  const Model& m = **model;
  std::vector<const Tensor*> pointers;
  for (const Tensor& p : m.initial_params()) pointers.push_back(&p);
  const Tensor x({1, 4}, Ramp(4, 0.1f));
  SquareHook hook({0.5f, 0.5f});
  ForwardTrace trace;
  ASSERT_TRUE(m.Forward(x, pointers, &trace, &hook).ok());
  std::vector<Tensor> grads;
  const absl::Status status =
      m.Backward(trace, pointers, Tensor({1, 2}, {1, 1}), &grads);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              ::testing::HasSubstr("LayerInputHook"));
  // The same trace refilled without a hook back-propagates without one.
  ASSERT_TRUE(m.Forward(x, pointers, &trace).ok());
  EXPECT_TRUE(m.Backward(trace, pointers, Tensor({1, 2}, {1, 1}), &grads).ok());
}

// A hook that refuses layer 1's input.
class RefusingHook : public LayerInputHook {
 public:
  absl::StatusOr<bool> Forward(int layer, const Tensor&, Tensor*) override {
    if (layer == 1) return absl::InvalidArgumentError("no grid fits it");
    return false;
  }
  void Backward(int, const Tensor&, Tensor*) const override {}
};

TEST(LayerInputHookTest, AHookErrorEndsForwardNamingTheNode) {
  absl::StatusOr<std::unique_ptr<Model>> model =
      Model::FromOnnxBytes(testing::MakeMlpOnnx({4, 3, 2}, 3));
  ASSERT_TRUE(model.ok());
  std::vector<const Tensor*> pointers;
  for (const Tensor& p : (*model)->initial_params()) pointers.push_back(&p);
  RefusingHook hook;
  const absl::StatusOr<Tensor> out = (*model)->Forward(
      Tensor({1, 4}, Ramp(4, 0.1f)), pointers, nullptr, &hook);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out.status().message(), "node '/fc1/Gemm' (Gemm): no grid fits it");
}

// The node whose output first overflows, in execution order.
TEST(ModelTest, FirstNonFiniteNodeNamesWhereTheOverflowStarts) {
  absl::StatusOr<std::unique_ptr<Model>> model =
      Model::FromOnnxBytes(testing::MakeMlpOnnx({4, 3, 2}, 3));
  ASSERT_TRUE(model.ok());
  std::vector<Tensor> params = (*model)->initial_params();
  std::vector<const Tensor*> pointers;
  for (const Tensor& p : params) pointers.push_back(&p);
  const Tensor x({1, 4}, {1, 1, 1, 1});
  EXPECT_EQ((*model)->FirstNonFiniteNode(x, pointers), "");
  params[0].flat().setConstant(3e38f);  // fc0.weight: the sum overflows
  EXPECT_EQ((*model)->FirstNonFiniteNode(x, pointers),
            "node '/fc0/Gemm' (Gemm)");
}

}  // namespace
}  // namespace mixq::engine
