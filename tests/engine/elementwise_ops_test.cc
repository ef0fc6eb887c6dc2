// The element-wise, activation, softmax, LayerNormalization and reduction
// kernels of ops_elementwise.cc: hand-computed forward values,
// opset-dependent semantics (Softmax, Clip, ReduceMean) and the errors for
// malformed nodes. Their gradients are in the operator-test table
// (op_table.cc).
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/model.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "tests/support/kernel_testing.h"
#include "tests/support/onnx_builder.h"

namespace mixq::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::FloatNear;
using ::testing::HasSubstr;

constexpr float kForwardTolerance = 1e-6f;

using testing::FloatAttr;
using testing::FloatInput;
using testing::IntAttr;
using testing::IntInput;
using testing::IntsAttr;
using testing::KernelSpec;
using testing::MakeKernel;
using testing::RunKernel;

// A float constant input of any shape (Clip bounds must be scalars).
ConstantInput FloatTensorInput(std::vector<float> values, Shape shape) {
  ConstantInput input;
  input.shape = std::move(shape);
  input.floats = std::move(values);
  return input;
}

// The kernel's output for `inputs` (the test fails on errors).
Tensor RunForward(const KernelSpec& spec, const std::vector<Tensor>& inputs) {
  absl::StatusOr<std::unique_ptr<Kernel>> kernel = MakeKernel(spec);
  EXPECT_TRUE(kernel.ok()) << kernel.status();
  if (!kernel.ok()) return Tensor();
  return RunKernel(**kernel, inputs);
}

// The status of creating the kernel and, if that succeeds, of OutputShape.
absl::Status BuildStatus(const KernelSpec& spec,
                         const std::vector<Shape>& shapes) {
  absl::StatusOr<std::unique_ptr<Kernel>> kernel = MakeKernel(spec);
  if (!kernel.ok()) return kernel.status();
  std::vector<const Shape*> pointers;
  for (const Shape& s : shapes) pointers.push_back(&s);
  return (*kernel)->OutputShape(pointers).status();
}

// Matches a float vector element by element within `tolerance`.
auto AllNear(std::vector<float> expected, float tolerance = kForwardTolerance) {
  return ::testing::Pointwise(FloatNear(tolerance), std::move(expected));
}

// ------------------------------------------------------- Hand cases ----

TEST(ArithmeticTest, BroadcastsEitherOrBothInputs) {
  const Tensor column({2, 1}, {1, 2});
  const Tensor row({3}, {10, 20, 40});
  EXPECT_THAT(RunForward({"Pow"}, {row, column}).ToVector(),
              ElementsAre(10, 20, 40, 100, 400, 1600));
  EXPECT_THAT(
      RunForward({"Pow"}, {Tensor({2}, {-3, 2}), Tensor({}, {2})}).ToVector(),
      ElementsAre(9, 4));
  EXPECT_THAT(RunForward({"Sub"}, {column, row}).ToVector(),
              ElementsAre(-9, -19, -39, -8, -18, -38));
  EXPECT_THAT(RunForward({"Div"}, {row, column}).ToVector(),
              ElementsAre(10, 20, 40, 5, 10, 20));
  const Tensor x({1, 2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  const Tensor channel({2, 1, 1}, {2, -1});
  EXPECT_THAT(RunForward({"Mul"}, {x, channel}).ToVector(),
              ElementsAre(2, 4, 6, 8, -5, -6, -7, -8));
  EXPECT_THAT(RunForward({"Sub"}, {channel, x}).ToVector(),
              ElementsAre(1, 0, -1, -2, -6, -7, -8, -9));
}

// Ties share the gradient of Max / Min equally.
TEST(ArithmeticTest, MaxAndMinWithTies) {
  const Tensor a({3}, {1, 5, 2});
  const Tensor b({}, {2});
  EXPECT_THAT(RunForward({"Max"}, {a, b}).ToVector(), ElementsAre(2, 5, 2));
  EXPECT_THAT(RunForward({"Min"}, {a, b}).ToVector(), ElementsAre(1, 2, 2));
  absl::StatusOr<std::unique_ptr<Kernel>> max = MakeKernel({"Max"});
  ASSERT_TRUE(max.ok()) << max.status();
  const Tensor g({3}, {1, 2, 4});
  Tensor da(a.shape());
  Tensor db(b.shape());
  (*max)->Backward({&a, &b}, g, {&da, &db});
  EXPECT_THAT(da.ToVector(), ElementsAre(0, 2, 2));
  EXPECT_THAT(db.ToVector(), ElementsAre(3));
}

TEST(ArithmeticTest, RejectsShapesThatDoNotBroadcast) {
  const absl::Status status = BuildStatus({"Mul"}, {{2, 3}, {2}});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("Mul"));
  EXPECT_EQ(BuildStatus({"PRelu"}, {{2, 3}, {2, 3, 1}}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ActivationTest, HandValues) {
  const Tensor x({5}, {-4, -1, 0, 1, 4});
  EXPECT_THAT(RunForward({"HardSwish"}, {x}).ToVector(),
              AllNear({0.0f, -1.0f / 3, 0.0f, 2.0f / 3, 4.0f}));
  EXPECT_THAT(RunForward({"HardSigmoid"}, {x}).ToVector(),
              AllNear({0.0f, 0.3f, 0.5f, 0.7f, 1.0f}));
  EXPECT_THAT(RunForward({"LeakyRelu"}, {x}).ToVector(),
              AllNear({-0.04f, -0.01f, 0.0f, 1.0f, 4.0f}));
  EXPECT_THAT(RunForward({"Elu"}, {x}).ToVector(),
              AllNear({std::expm1(-4.0f), std::expm1(-1.0f), 0, 1, 4}));
}

TEST(ActivationTest, SaturatesWithoutOverflow) {
  const Tensor x({4}, {-1000, -100, 100, 1000});
  EXPECT_THAT(RunForward({"Sigmoid"}, {x}).ToVector(), AllNear({0, 0, 1, 1}));
  EXPECT_THAT(RunForward({"Softplus"}, {x}).ToVector(),
              AllNear({0, 0, 100, 1000}));
  EXPECT_THAT(RunForward({"Tanh"}, {x}).ToVector(), AllNear({-1, -1, 1, 1}));
}

// Non-smooth kernels: the gradient at a kink is 0 (Relu at 0; Clip at its
// bounds, where only min < x < max passes).
TEST(ActivationTest, GradientAtKinks) {
  const Tensor x({4}, {-0.5f, 0.0f, 0.3f, 0.1f});
  const Tensor g({4}, {1, 1, 1, 1});
  absl::StatusOr<std::unique_ptr<Kernel>> relu = MakeKernel({"Relu"});
  ASSERT_TRUE(relu.ok());
  Tensor dx(x.shape());
  (*relu)->Backward({&x}, g, {&dx});
  EXPECT_THAT(dx.ToVector(), ElementsAre(0, 0, 1, 1));
  absl::StatusOr<std::unique_ptr<Kernel>> clip =
      MakeKernel({"Clip", {}, {FloatInput(-0.5f), FloatInput(0.3f)}});
  ASSERT_TRUE(clip.ok());
  (*clip)->Backward({&x}, g, {&dx});
  EXPECT_THAT(dx.ToVector(), ElementsAre(0, 1, 0, 1));
}

// ------------------------------------------------------------- Clip ----

TEST(ClipTest, OpsetSixTakesAttributesWithFloatRangeDefaults) {
  const Tensor x({3}, {-2, 0.5f, 2});
  EXPECT_THAT(
      RunForward(
          {"Clip", {{"min", FloatAttr(-1)}, {"max", FloatAttr(1)}}, {}, 6}, {x})
          .ToVector(),
      ElementsAre(-1, 0.5f, 1));
  EXPECT_THAT(
      RunForward({"Clip", {{"max", FloatAttr(0)}}, {}, 6}, {x}).ToVector(),
      ElementsAre(-2, 0, 0));
}

TEST(ClipTest, OpsetElevenTakesOptionalConstantInputs) {
  const Tensor x({3}, {-2, 0.5f, 2});
  EXPECT_THAT(RunForward({"Clip"}, {x}).ToVector(), ElementsAre(-2, 0.5f, 2));
  EXPECT_THAT(RunForward({"Clip", {}, {FloatInput(0)}, 11}, {x}).ToVector(),
              ElementsAre(0, 0.5f, 2));
  EXPECT_THAT(
      RunForward({"Clip", {}, {std::nullopt, FloatTensorInput({1}, {1})}}, {x})
          .ToVector(),
      ElementsAre(-2, 0.5f, 1));
  // min > max sets everything to max.
  EXPECT_THAT(
      RunForward({"Clip", {}, {FloatInput(1), FloatInput(-1)}}, {x}).ToVector(),
      ElementsAre(-1, -1, -1));
}

TEST(ClipTest, RejectsBoundsInTheWrongForm) {
  struct Case {
    std::string name;
    KernelSpec node;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"attribute_at_opset11",
       {"Clip", {{"min", FloatAttr(0)}}, {}, 11},
       "attribute 'min'"},
      {"input_at_opset6", {"Clip", {}, {FloatInput(0)}, 6}, "attributes"},
      {"int_bound", {"Clip", {}, {IntInput({0})}}, "input 'min'"},
      {"tensor_bound",
       {"Clip", {}, {std::nullopt, FloatTensorInput({1, 2}, {2})}},
       "input 'max' must be a scalar"},
      {"int_attribute", {"Clip", {{"max", IntAttr(1)}}, {}, 6}, "max"},
  };
  for (const Case& c : cases) {
    const absl::StatusOr<std::unique_ptr<Kernel>> kernel = MakeKernel(c.node);
    ASSERT_FALSE(kernel.ok()) << c.name;
    EXPECT_EQ(kernel.status().code(), absl::StatusCode::kInvalidArgument)
        << c.name;
    EXPECT_THAT(kernel.status().message(), HasSubstr(c.message)) << c.name;
  }
}

// A bound computed at run time cannot configure the kernel: the importer
// rejects the model, naming the node.
TEST(ClipTest, NonConstantBoundIsAnImportError) {
  testing::OnnxBuilder builder(13);
  builder.Input("x", {1, 4}).Output("y");
  builder.Node("ReduceMean", {"x"}, {"m"}, "mean");
  builder.Node("Clip", {"x", "m"}, {"y"}, "clip");
  const absl::StatusOr<std::unique_ptr<Model>> model = builder.Build();
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), HasSubstr("clip"));
  EXPECT_THAT(model.status().message(), HasSubstr("constant"));
}

// ---------------------------------------------------------- Softmax ----

// Before opset 13 the input is coerced to 2-D at `axis`; from 13 softmax runs
// along `axis` alone.
TEST(SoftmaxTest, OpsetDecidesTheNormalisedElements) {
  const Tensor x({1, 2, 2}, {0, 1, 2, 3});
  const float e = std::exp(1.0f);
  const float e2 = std::exp(2.0f);
  // Opset 11, axis 1: one softmax over all four elements.
  const float z = 1 + e + e * e + e * e * e;
  EXPECT_THAT(RunForward({"Softmax", {}, {}, 11}, {x}).ToVector(),
              AllNear({1 / z, e / z, e * e / z, e * e * e / z}));
  // Opset 13, axis 1: along the middle axis, pairing 0 with 2 and 1 with 3.
  const float p = 1 / (1 + e2);
  EXPECT_THAT(RunForward({"Softmax", {{"axis", IntAttr(1)}}}, {x}).ToVector(),
              AllNear({p, p, 1 - p, 1 - p}));
  // Opset 13 default: the last axis.
  const float q = 1 / (1 + e);
  EXPECT_THAT(RunForward({"Softmax"}, {x}).ToVector(),
              AllNear({q, 1 - q, q, 1 - q}));
}

TEST(SoftmaxTest, LargeInputsAreStable) {
  const Tensor x({2, 3}, {1000, 1001, 1002, -1000, -1001, -1002});
  const Tensor softmax = RunForward({"Softmax"}, {x});
  const Tensor log_softmax = RunForward({"LogSoftmax"}, {x});
  const float log_z = std::log(1 + std::exp(-1.0f) + std::exp(-2.0f));
  EXPECT_THAT(log_softmax.ToVector(), AllNear({-2 - log_z, -1 - log_z, -log_z,
                                               -log_z, -1 - log_z, -2 - log_z},
                                              1e-4f));
  for (int64_t i = 0; i < x.size(); ++i) {
    EXPECT_NEAR(softmax.data()[i], std::exp(log_softmax.data()[i]), 1e-6f);
  }
}

TEST(SoftmaxTest, RejectsAxisOutOfRange) {
  for (const int64_t opset : {11, 13}) {
    for (const int64_t axis : {3, -4}) {
      const absl::Status status = BuildStatus(
          {"LogSoftmax", {{"axis", IntAttr(axis)}}, {}, opset}, {{2, 3, 4}});
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(status.message(), HasSubstr("axis"));
    }
  }
  EXPECT_EQ(BuildStatus({"Softmax", {{"axis", FloatAttr(1)}}}, {{2, 3}}).code(),
            absl::StatusCode::kInvalidArgument);
}

// ----------------------------------------------- LayerNormalization ----

TEST(LayerNormTest, NormalisesTheTrailingAxes) {
  const Tensor x({2, 2}, {1, 3, 10, 30});
  const Tensor scale({2}, {1, 2});
  const Tensor bias({2}, {0, 1});
  // Each row is (-1, 1) after normalisation (epsilon 0 for exact values).
  EXPECT_THAT(RunForward({"LayerNormalization", {{"epsilon", FloatAttr(0)}}},
                         {x, scale, bias})
                  .ToVector(),
              AllNear({-1, 3, -1, 3}));
}

TEST(LayerNormTest, RejectsUnsupportedAttributesAndShapes) {
  const absl::Status stash = BuildStatus(
      {"LayerNormalization", {{"stash_type", IntAttr(11)}}}, {{2, 3}, {3}});
  EXPECT_EQ(stash.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(stash.message(), HasSubstr("stash_type=11"));
  const absl::Status axis = BuildStatus(
      {"LayerNormalization", {{"axis", IntAttr(2)}}}, {{2, 3}, {3}});
  EXPECT_EQ(axis.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(axis.message(), HasSubstr("axis 2"));
  const absl::Status scale = BuildStatus({"LayerNormalization"}, {{2, 3}, {2}});
  EXPECT_EQ(scale.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(scale.message(), HasSubstr("Scale"));
}

// ------------------------------------------------------- Reductions ----

TEST(ReduceTest, GlobalAveragePoolingAndKeepdims) {
  const Tensor x({1, 2, 2, 2}, {1, 2, 3, 4, 10, 20, 30, 40});
  const Tensor kept =
      RunForward({"ReduceMean", {{"axes", IntsAttr({2, 3})}}}, {x});
  EXPECT_EQ(kept.shape(), (Shape{1, 2, 1, 1}));
  EXPECT_THAT(kept.ToVector(), ElementsAre(2.5f, 25));
  const Tensor dropped = RunForward(
      {"ReduceMean", {{"keepdims", IntAttr(0)}}, {IntInput({-1, -2})}, 18},
      {x});
  EXPECT_EQ(dropped.shape(), (Shape{1, 2}));
  EXPECT_THAT(dropped.ToVector(), ElementsAre(2.5f, 25));
  const Tensor all = RunForward({"ReduceSum", {{"keepdims", IntAttr(0)}}}, {x});
  EXPECT_EQ(all.shape(), Shape{});
  EXPECT_THAT(all.ToVector(), ElementsAre(110));
  const Tensor channels = RunForward({"ReduceSum", {}, {IntInput({1})}}, {x});
  EXPECT_THAT(channels.ToVector(), ElementsAre(11, 22, 33, 44));
}

// Ties share the gradient of ReduceMax / ReduceMin equally.
TEST(ReduceTest, ExtremesAndTies) {
  const Tensor x({2, 3}, {1, 5, 5, -2, 0, -2});
  EXPECT_THAT(
      RunForward({"ReduceMax", {{"axes", IntsAttr({1})}}}, {x}).ToVector(),
      ElementsAre(5, 0));
  EXPECT_THAT(
      RunForward({"ReduceMin", {{"axes", IntsAttr({1})}}}, {x}).ToVector(),
      ElementsAre(1, -2));
  absl::StatusOr<std::unique_ptr<Kernel>> max =
      MakeKernel({"ReduceMax", {{"axes", IntsAttr({1})}}});
  ASSERT_TRUE(max.ok()) << max.status();
  const Tensor g({2, 1}, {1, 3});
  Tensor dx(x.shape());
  (*max)->Backward({&x}, g, {&dx});
  EXPECT_THAT(dx.ToVector(), ElementsAre(0, 0.5f, 0.5f, 0, 3, 0));
  EXPECT_THAT(RunForward({"ReduceSumSquare"}, {x}).ToVector(), ElementsAre(59));
}

TEST(ReduceTest, EmptyAxesReduceAllUnlessNoop) {
  const Tensor x({2, 2}, {1, 2, 3, 4});
  EXPECT_THAT(RunForward({"ReduceSum", {}, {IntInput({})}}, {x}).ToVector(),
              ElementsAre(10));
  const Tensor same = RunForward(
      {"ReduceSum", {{"noop_with_empty_axes", IntAttr(1)}}, {IntInput({})}},
      {x});
  EXPECT_EQ(same.shape(), x.shape());
  EXPECT_THAT(same.ToVector(), ElementsAre(1, 2, 3, 4));
}

TEST(ReduceTest, RejectsBadAxesAndFlags) {
  struct Case {
    std::string name;
    KernelSpec node;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"axis_out_of_range",
       {"ReduceMean", {{"axes", IntsAttr({3})}}},
       "out of range"},
      {"axis_twice", {"ReduceMean", {{"axes", IntsAttr({1, -2})}}}, "twice"},
      {"keepdims_2", {"ReduceMean", {{"keepdims", IntAttr(2)}}}, "keepdims=2"},
      {"axes_both_forms",
       {"ReduceSum", {{"axes", IntsAttr({1})}}, {IntInput({1})}},
       "both"},
      {"float_axes_input", {"ReduceMean", {}, {FloatInput(1)}, 18}, "axes"},
  };
  for (const Case& c : cases) {
    const absl::Status status = BuildStatus(c.node, {{2, 3, 4}});
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(status.message(), HasSubstr(c.message)) << c.name;
  }
}

// The kernels run inside an imported model: a global-average-pooling head as
// tf2onnx writes it (ReduceMean over H and W), then Clip-11 and Softmax.
TEST(ElementwiseModelTest, ImportsAndRunsAChainOfKernels) {
  testing::OnnxBuilder builder(13);
  builder.Input("x", {-1, 2, 2, 2}).Output("y");
  builder.Initializer("hi", {}, {6.0f});
  builder.Initializer("scale", {2, 1, 1}, {1.0f, -1.0f});
  builder.Node("Mul", {"x", "scale"}, {"scaled"});
  onnx::NodeProto* mean = builder.Node("ReduceMean", {"scaled"}, {"pooled"});
  testing::SetInts(mean, "axes", {2, 3});
  testing::SetInt(mean, "keepdims", 0);
  builder.Node("Clip", {"pooled", "", "hi"}, {"clipped"});
  builder.Node("Softmax", {"clipped"}, {"y"});
  absl::StatusOr<std::unique_ptr<Model>> model = builder.Build();
  ASSERT_TRUE(model.ok()) << model.status();
  const Tensor x({2, 2, 2, 2}, {1, 2, 3, 4, 8, 8, 8, 8,  //
                                20, 20, 20, 20, -1, -1, -1, -1});
  std::vector<const Tensor*> params;
  for (const Tensor& p : (*model)->initial_params()) params.push_back(&p);
  absl::StatusOr<Tensor> y = (*model)->Forward(x, params, nullptr);
  ASSERT_TRUE(y.ok()) << y.status();
  // Sample 0: means (2.5, -8), clipped above only: softmax of (2.5, -8).
  // Sample 1: means (20, 1) → (6, 1).
  const float p0 = 1 / (1 + std::exp(-10.5f));
  const float p1 = 1 / (1 + std::exp(-5.0f));
  EXPECT_THAT(y->ToVector(), AllNear({p0, 1 - p0, p1, 1 - p1}, 1e-5f));
}

}  // namespace
}  // namespace mixq::engine
