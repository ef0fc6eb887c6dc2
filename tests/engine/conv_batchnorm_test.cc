// A Conv followed by the BatchNormalization that is its only reader runs as
// one kernel on BN-folded weights (FuseConvBatchNorm, Model::Impl::fused).
// Checked here: the fused kernel's gradients against finite differences, and
// a model whose pairs fuse against the same model with a `Mul by 1` between
// Conv and BN (exact in float, and it keeps the pair apart), forward and
// backward, including ForwardFrom starting at the BN node.
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "tests/support/gradient_check.h"
#include "tests/support/kernel_testing.h"
#include "tests/support/onnx_builder.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::Attributes;
using ::mixq::testing::ExpectGradientsMatchFiniteDifferences;
using ::mixq::testing::FloatAttr;
using ::mixq::testing::GradientTolerance;
using ::mixq::testing::IntAttr;
using ::mixq::testing::IntsAttr;
using ::mixq::testing::MakeKernel;
using ::mixq::testing::OnnxBuilder;
using ::mixq::testing::SetInt;
using ::mixq::testing::SetInts;
using ::mixq::testing::UniformValues;

// The fused kernel is linear in each input but var (whose gradient is zero
// by contract), so a large step costs no truncation error.
constexpr GradientTolerance kGradientTolerance = {
    .eps = 1e-2f, .abs = 1e-3, .rel = 1e-2};

struct FusionCase {
  std::string name;
  Shape x;  // [N, C, H, W]
  Shape w;  // [M, C / group, kh, kw]
  int64_t group = 1;
  int64_t stride = 1;
  int64_t pad = 1;
  bool bias = true;
};

void PrintTo(const FusionCase& c, std::ostream* os) { *os << c.name; }

std::vector<FusionCase> Cases() {
  return {
      {"conv3x3_bias", {2, 3, 6, 5}, {4, 3, 3, 3}},
      {"conv3x3_no_bias", {2, 3, 6, 5}, {4, 3, 3, 3}, 1, 1, 1, false},
      {"strided", {2, 2, 7, 7}, {3, 2, 3, 3}, 1, 2, 1, false},
      {"pointwise", {3, 4, 3, 3}, {5, 4, 1, 1}, 1, 1, 0, true},
      {"grouped", {2, 4, 5, 5}, {6, 2, 3, 3}, 2, 1, 1, true},
      {"depthwise", {2, 4, 9, 9}, {4, 1, 3, 3}, 4, 1, 1, false},
  };
}

class ConvBatchNormFusionTest : public ::testing::TestWithParam<FusionCase> {
 protected:
  Attributes ConvAttrs() const {
    const FusionCase& c = GetParam();
    return {{"group", IntAttr(c.group)},
            {"strides", IntsAttr({c.stride, c.stride})},
            {"pads", IntsAttr({c.pad, c.pad, c.pad, c.pad})}};
  }
  // The model whose pair fuses against the one kept apart, optionally with
  // a LayerInputHook on the Conv's input (the search's activation
  // quantization path).
  void ExpectFusedMatchesApart(bool with_hook);
};

// Inputs: X, W, [B], scale, bias, mean, var.
TEST_P(ConvBatchNormFusionTest, KernelMatchesFiniteDifferences) {
  const FusionCase& c = GetParam();
  const absl::StatusOr<std::unique_ptr<Kernel>> conv =
      MakeKernel("Conv", ConvAttrs());
  const absl::StatusOr<std::unique_ptr<Kernel>> bn =
      MakeKernel("BatchNormalization", {{"epsilon", FloatAttr(1e-3f)}});
  ASSERT_TRUE(conv.ok()) << conv.status();
  ASSERT_TRUE(bn.ok()) << bn.status();
  const std::unique_ptr<Kernel> fused = FuseConvBatchNorm(**conv, **bn, c.bias);
  ASSERT_NE(fused, nullptr);

  std::mt19937 rng(11);
  const int64_t m = c.w[0];
  std::vector<Shape> shapes = {c.x, c.w};
  if (c.bias) shapes.push_back({m});
  const size_t bn_first = shapes.size();
  for (int i = 0; i < 4; ++i) shapes.push_back({m});
  std::vector<Tensor> inputs;
  for (const Shape& shape : shapes) {
    inputs.emplace_back(shape, UniformValues(NumElements(shape), &rng));
  }
  for (float& v : inputs[bn_first + 3].values()) v = 0.5f + std::abs(v);
  std::vector<const Shape*> shape_pointers;
  for (const Tensor& t : inputs) shape_pointers.push_back(&t.shape());
  const absl::StatusOr<Shape> out = fused->OutputShape(shape_pointers);
  ASSERT_TRUE(out.ok()) << out.status();
  const Tensor upstream(*out, UniformValues(NumElements(*out), &rng));
  ExpectGradientsMatchFiniteDifferences(*fused, std::move(inputs), upstream,
                                        kGradientTolerance,
                                        {bn_first + 2, bn_first + 3});
}

// X -> Conv -> [Mul by 1] -> BatchNormalization -> Relu -> Y.
std::unique_ptr<Model> BuildModel(const FusionCase& c, bool keep_apart,
                                  std::mt19937* rng) {
  const int64_t m = c.w[0];
  OnnxBuilder b;
  b.Input("x", {-1, c.x[1], c.x[2], c.x[3]}).Output("y");
  b.Initializer("w", c.w, UniformValues(NumElements(c.w), rng));
  std::vector<std::string> conv_inputs = {"x", "w"};
  if (c.bias) {
    b.Initializer("b", {m}, UniformValues(m, rng));
    conv_inputs.push_back("b");
  }
  std::vector<float> var = UniformValues(m, rng);
  for (float& v : var) v = 0.5f + std::abs(v);
  b.Initializer("scale", {m}, UniformValues(m, rng))
      .Initializer("shift", {m}, UniformValues(m, rng))
      .Initializer("mean", {m}, UniformValues(m, rng))
      .Initializer("var", {m}, var);
  onnx::NodeProto* conv = b.Node("Conv", conv_inputs, {"c"}, "conv");
  SetInt(conv, "group", c.group);
  SetInts(conv, "strides", {c.stride, c.stride});
  SetInts(conv, "pads", {c.pad, c.pad, c.pad, c.pad});
  std::string bn_input = "c";
  if (keep_apart) {
    b.Initializer("one", {1}, {1.0f});
    b.Node("Mul", {"c", "one"}, {"c1"}, "mul");
    bn_input = "c1";
  }
  b.Node("BatchNormalization", {bn_input, "scale", "shift", "mean", "var"},
         {"n"}, "bn");
  b.Node("Relu", {"n"}, {"y"}, "relu");
  absl::StatusOr<std::unique_ptr<Model>> model = b.Build();
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *std::move(model) : nullptr;
}

std::vector<const Tensor*> Params(const Model& model) {
  std::vector<const Tensor*> params;
  for (const Tensor& t : model.initial_params()) params.push_back(&t);
  return params;
}

// |a - b| <= 1e-5 (1 + |b|) elementwise.
void ExpectNear(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  for (int64_t i = 0; i < a.size(); ++i) {
    ASSERT_NEAR(a.data()[i], b.data()[i], 1e-5 * (1 + std::abs(b.data()[i])))
        << what << " element " << i;
  }
}

// Clamps the Conv's input to [-0.5, 0.5] (a stand-in for activation fake
// quantization, with its straight-through gradient).
class ClampHook : public LayerInputHook {
 public:
  absl::StatusOr<bool> Forward(int, const Tensor& x, Tensor* out) override {
    out->flat() = x.flat().min(0.5f).max(-0.5f);
    return true;
  }
  void Backward(int, const Tensor& x, Tensor* grad) const override {
    grad->flat() = (x.flat().abs() <= 0.5f).select(grad->flat(), 0.0f);
  }
};

TEST_P(ConvBatchNormFusionTest, ModelMatchesTheUnfusedPair) {
  for (const bool with_hook : {false, true}) {
    SCOPED_TRACE(with_hook ? "with a LayerInputHook" : "without a hook");
    ExpectFusedMatchesApart(with_hook);
  }
}

void ConvBatchNormFusionTest::ExpectFusedMatchesApart(bool with_hook) {
  const FusionCase& c = GetParam();
  ClampHook hook_fused, hook_apart;
  LayerInputHook* fused_hook = with_hook ? &hook_fused : nullptr;
  LayerInputHook* apart_hook = with_hook ? &hook_apart : nullptr;
  std::mt19937 rng_fused(5), rng_apart(5);
  const std::unique_ptr<Model> fused = BuildModel(c, false, &rng_fused);
  const std::unique_ptr<Model> apart = BuildModel(c, true, &rng_apart);
  ASSERT_NE(fused, nullptr);
  ASSERT_NE(apart, nullptr);
  std::mt19937 rng(3);
  const Tensor x(c.x, UniformValues(NumElements(c.x), &rng));

  ForwardTrace fused_trace, apart_trace;
  const absl::StatusOr<Tensor> y_fused =
      fused->Forward(x, Params(*fused), &fused_trace, fused_hook);
  const absl::StatusOr<Tensor> y_apart =
      apart->Forward(x, Params(*apart), &apart_trace, apart_hook);
  ASSERT_TRUE(y_fused.ok()) << y_fused.status();
  ASSERT_TRUE(y_apart.ok()) << y_apart.status();
  ExpectNear(*y_fused, *y_apart, "Y");
  // Without a trace too (the inference path).
  const absl::StatusOr<Tensor> y_inference =
      fused->Forward(x, Params(*fused), nullptr, fused_hook);
  ASSERT_TRUE(y_inference.ok()) << y_inference.status();
  ExpectNear(*y_inference, *y_apart, "Y without a trace");

  const Tensor upstream(y_fused->shape(), UniformValues(y_fused->size(), &rng));
  std::vector<Tensor> grads_fused, grads_apart;
  ASSERT_TRUE(fused
                  ->Backward(fused_trace, Params(*fused), upstream,
                             &grads_fused, fused_hook)
                  .ok());
  ASSERT_TRUE(apart
                  ->Backward(apart_trace, Params(*apart), upstream,
                             &grads_apart, apart_hook)
                  .ok());
  std::map<std::string, const Tensor*> by_name;
  for (size_t p = 0; p < apart->params().size(); ++p) {
    by_name[apart->params()[p].name] = &grads_apart[p];
  }
  for (size_t p = 0; p < fused->params().size(); ++p) {
    const std::string& name = fused->params()[p].name;
    ASSERT_TRUE(by_name.count(name)) << name;
    ExpectNear(grads_fused[p], *by_name[name], absl::StrCat("d", name));
  }

  // Re-running from the BN node (the second of the fused pair) re-runs the
  // pair: the same output as the whole Forward.
  for (int first = 0; first <= fused->num_nodes(); ++first) {
    const absl::StatusOr<Tensor> again =
        fused->ForwardFrom(first, Params(*fused), &fused_trace, fused_hook);
    ASSERT_TRUE(again.ok()) << again.status();
    ExpectNear(*again, *y_fused, absl::StrCat("ForwardFrom(", first, ")"));
  }
}

INSTANTIATE_TEST_SUITE_P(Fusion, ConvBatchNormFusionTest,
                         ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace mixq::engine
