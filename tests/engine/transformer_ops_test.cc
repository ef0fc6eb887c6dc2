// The kernels of ops_transformer.cc (Erf, Gelu, Split, Tile, ArgMax):
// hand-computed values and errors; plus Mod folded at import and the refusal
// of a gradient through ArgMax. Their gradients (and those of the
// attention-shaped MatMul, Softmax and Transpose) are in the operator-test
// table (op_table.cc).
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
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

using ::mixq::testing::RunKernel;

using ::mixq::testing::Attributes;
using ::mixq::testing::IntAttr;
using ::mixq::testing::IntInput;
using ::mixq::testing::IntsAttr;
using ::mixq::testing::OnnxBuilder;
using ::mixq::testing::SetInt;
using ::mixq::testing::StringAttr;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pointwise;

constexpr float kForwardTolerance = 1e-6f;

// A kernel configured as the importer would: attributes and constant inputs.
// For Split: the node's number of outputs and the one the kernel computes.
absl::StatusOr<std::unique_ptr<Kernel>> Make(
    const std::string& op_type, const Attributes& attrs,
    std::vector<std::optional<ConstantInput>> constants = {},
    int num_outputs = 1, int output_index = 0, int64_t opset = 13) {
  return testing::MakeKernel(testing::KernelSpec{
      op_type, attrs, std::move(constants), opset, num_outputs, output_index});
}

TEST(TransformerOpsTest, ErfAndGeluValues) {
  const Tensor x({4}, {-2.0f, -0.5f, 0.0f, 1.0f});
  auto erf = Make("Erf", {});
  auto gelu = Make("Gelu", {});
  auto gelu_tanh = Make("Gelu", {{"approximate", StringAttr("tanh")}});
  ASSERT_TRUE(erf.ok() && gelu.ok() && gelu_tanh.ok());
  std::vector<float> want_erf;
  std::vector<float> want_gelu;
  std::vector<float> want_tanh;
  for (float v : x.values()) {
    want_erf.push_back(std::erf(v));
    want_gelu.push_back(0.5f * v * (1.0f + std::erf(v / std::sqrt(2.0f))));
    want_tanh.push_back(0.5f * v *
                        (1.0f + std::tanh(std::sqrt(2.0f / M_PI) *
                                          (v + 0.044715f * v * v * v))));
  }
  EXPECT_THAT(RunKernel(**erf, {x}).ToVector(),
              Pointwise(::testing::FloatNear(kForwardTolerance), want_erf));
  EXPECT_THAT(RunKernel(**gelu, {x}).ToVector(),
              Pointwise(::testing::FloatNear(kForwardTolerance), want_gelu));
  EXPECT_THAT(RunKernel(**gelu_tanh, {x}).ToVector(),
              Pointwise(::testing::FloatNear(kForwardTolerance), want_tanh));
}

TEST(TransformerOpsTest, GeluRefusesAnUnknownApproximation) {
  const absl::Status status =
      Make("Gelu", {{"approximate", StringAttr("sigmoid")}}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("approximate='sigmoid'"));
  EXPECT_THAT(status.message(), HasSubstr("node"));
}

TEST(TransformerOpsTest, TileRepeatsEveryDim) {
  auto tile = Make("Tile", {}, {IntInput({2, 2})});
  ASSERT_TRUE(tile.ok()) << tile.status();
  const Tensor x({2, 2}, {1, 2, 3, 4});
  const Tensor y = RunKernel(**tile, {x});
  EXPECT_THAT(y.shape(), ElementsAre(4, 4));
  EXPECT_THAT(y.ToVector(), ElementsAre(1, 2, 1, 2, 3, 4, 3, 4,  //
                                        1, 2, 1, 2, 3, 4, 3, 4));
  EXPECT_EQ(Make("Tile", {}, {IntInput({-1, 2})}).status().code(),
            absl::StatusCode::kInvalidArgument);
  const Shape wrong_rank = {2, 2, 2};
  const Shape* shapes[] = {&wrong_rank};
  EXPECT_EQ((*tile)->OutputShape(shapes).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TransformerOpsTest, SplitPartsByLengthsOrEqually) {
  const Tensor x({2, 5}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  auto first = Make("Split", {{"axis", IntAttr(-1)}}, {IntInput({2, 3})}, 2, 0);
  auto second =
      Make("Split", {{"axis", IntAttr(-1)}}, {IntInput({2, 3})}, 2, 1);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_THAT(RunKernel(**first, {x}).ToVector(), ElementsAre(0, 1, 5, 6));
  EXPECT_THAT(RunKernel(**second, {x}).ToVector(),
              ElementsAre(2, 3, 4, 7, 8, 9));
  // Opset 11: the lengths as an attribute.
  auto attribute =
      Make("Split", {{"axis", IntAttr(1)}, {"split", IntsAttr({4, 1})}}, {}, 2,
           1, 11);
  ASSERT_TRUE(attribute.ok()) << attribute.status();
  EXPECT_THAT(RunKernel(**attribute, {x}).ToVector(), ElementsAre(4, 9));
  // Opset 18: 5 into 3 parts is 2, 2, 1.
  for (int k = 0; k < 3; ++k) {
    auto part =
        Make("Split", {{"axis", IntAttr(1)}, {"num_outputs", IntAttr(3)}}, {},
             3, k, 18);
    ASSERT_TRUE(part.ok()) << part.status();
    EXPECT_EQ(RunKernel(**part, {x}).dim(1), k < 2 ? 2 : 1) << k;
  }
  // Before opset 18 equal parts must divide the dim; lengths must add up.
  auto uneven = Make("Split", {{"axis", IntAttr(1)}}, {}, 3, 0, 13);
  ASSERT_TRUE(uneven.ok());
  const Shape* shapes[] = {&x.shape()};
  EXPECT_EQ((*uneven)->OutputShape(shapes).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto wrong = Make("Split", {{"axis", IntAttr(1)}}, {IntInput({2, 2})}, 2, 0);
  ASSERT_TRUE(wrong.ok());
  EXPECT_EQ((*wrong)->OutputShape(shapes).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Make("Split", {{"num_outputs", IntAttr(4)}}, {}, 3, 0, 18)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// Every output of a Split node runs (one kernel each) and gradients from all
// of them add up in the input's.
TEST(TransformerOpsTest, SplitNodeFeedsEveryOutput) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 6}).Output("y");
  b.Initializer("w", {6}, {1, 2, 3, 4, 5, 6});
  b.Node("Mul", {"x", "w"}, {"xw"});
  b.IntInitializer("lengths", {2, 4});
  onnx::NodeProto* split = b.Node("Split", {"xw", "lengths"}, {"a", "b"});
  SetInt(split, "axis", 1);
  onnx::NodeProto* concat = b.Node("Concat", {"b", "a", "a"}, {"y"});
  SetInt(concat, "axis", 1);
  absl::StatusOr<std::unique_ptr<Model>> model = b.Build();
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<Tensor>& params = (*model)->initial_params();
  std::vector<const Tensor*> pointers = {&params[0]};
  ForwardTrace trace;
  absl::StatusOr<Tensor> y =
      (*model)->Forward(Tensor({1, 6}, {1, 1, 1, 1, 1, 1}), pointers, &trace);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(y->ToVector(), ElementsAre(3, 4, 5, 6, 1, 2, 1, 2));
  std::vector<Tensor> grads;
  Tensor upstream({1, 8});
  upstream.flat().setConstant(1.0f);
  ASSERT_TRUE((*model)->Backward(trace, pointers, upstream, &grads).ok());
  // d/dw of Σ y: x = 1, and w[0], w[1] are read twice.
  EXPECT_THAT(grads[0].ToVector(), ElementsAre(2, 2, 1, 1, 1, 1));
}

TEST(TransformerOpsTest, ArgMaxAlongAnAxis) {
  // Ties: 5 at positions 1 and 2 of the first row.
  const Tensor x({2, 3}, {1, 5, 5, 7, 0, -1});
  auto last_axis = Make("ArgMax", {{"axis", IntAttr(-1)}});
  ASSERT_TRUE(last_axis.ok());
  Tensor y = RunKernel(**last_axis, {x});
  EXPECT_THAT(y.shape(), ElementsAre(2, 1));
  EXPECT_THAT(y.ToVector(), ElementsAre(1, 0));
  auto select_last = Make("ArgMax", {{"axis", IntAttr(1)},
                                     {"keepdims", IntAttr(0)},
                                     {"select_last_index", IntAttr(1)}});
  ASSERT_TRUE(select_last.ok());
  y = RunKernel(**select_last, {x});
  EXPECT_THAT(y.shape(), ElementsAre(2));
  EXPECT_THAT(y.ToVector(), ElementsAre(2, 0));
  auto axis0 = Make("ArgMax", {{"keepdims", IntAttr(0)}});
  ASSERT_TRUE(axis0.ok());
  EXPECT_THAT(RunKernel(**axis0, {x}).ToVector(), ElementsAre(1, 0, 0));
  EXPECT_FALSE((*axis0)->has_gradient());
  EXPECT_EQ(Make("ArgMax", {{"keepdims", IntAttr(2)}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A classifier that ends with its prediction: Forward gives the class index,
// Backward refuses naming the node.
TEST(TransformerOpsTest, ModelEndingWithArgMaxRunsButHasNoGradient) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 3}).Output("y");
  b.Initializer("w", {3, 3}, {1, 0, 0, 0, 1, 0, 0, 0, 1});
  b.Node("MatMul", {"x", "w"}, {"logits"}, "fc");
  onnx::NodeProto* argmax = b.Node("ArgMax", {"logits"}, {"y"}, "predict");
  SetInt(argmax, "axis", 1);
  absl::StatusOr<std::unique_ptr<Model>> model = b.Build();
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<Tensor>& params = (*model)->initial_params();
  std::vector<const Tensor*> pointers;
  for (const Tensor& p : params) pointers.push_back(&p);
  ForwardTrace trace;
  absl::StatusOr<Tensor> y =
      (*model)->Forward(Tensor({2, 3}, {0, 2, 1, 3, -1, 0}), pointers, &trace);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(y->ToVector(), ElementsAre(1, 0));
  std::vector<Tensor> grads;
  const absl::Status status =
      (*model)->Backward(trace, pointers, Tensor({2, 1}), &grads);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("node 'predict' (ArgMax)"));
  EXPECT_THAT(status.message(), HasSubstr("no gradient"));
}

// Mod on int64 constants, as shape computations use it, folded at import:
// fmod=0 takes the divisor's sign, fmod=1 the dividend's.
TEST(TransformerOpsTest, ModIsFoldedWithEitherSignConvention) {
  for (int fmod : {0, 1}) {
    SCOPED_TRACE(fmod);
    OnnxBuilder b(13);
    b.Input("x", {-1, 4}).Output("y");
    b.IntInitializer("a", {-7, 7, -7, 6});
    b.IntInitializer("b", {4, -4, -4, 3});
    onnx::NodeProto* mod = b.Node("Mod", {"a", "b"}, {"r"});
    SetInt(mod, "fmod", fmod);
    onnx::NodeProto* cast = b.Node("Cast", {"r"}, {"rf"});
    SetInt(cast, "to", onnx::TensorProto::FLOAT);
    b.Node("Add", {"x", "rf"}, {"y"});
    absl::StatusOr<std::unique_ptr<Model>> model = b.Build();
    ASSERT_TRUE(model.ok()) << model.status();
    absl::StatusOr<Tensor> y = (*model)->Forward(Tensor({1, 4}), {}, nullptr);
    ASSERT_TRUE(y.ok()) << y.status();
    if (fmod == 0) {
      EXPECT_THAT(y->ToVector(), ElementsAre(1, -1, -3, 0));
    } else {
      EXPECT_THAT(y->ToVector(), ElementsAre(-3, 3, -3, 0));
    }
  }
}

TEST(TransformerOpsTest, ModByZeroIsAnErrorNamingTheNode) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 1}).Output("y");
  b.IntInitializer("a", {5});
  b.IntInitializer("zero", {0});
  b.Node("Mod", {"a", "zero"}, {"r"}, "bad_mod");
  b.Node("Reshape", {"x", "r"}, {"y"});
  const absl::Status status = b.Build().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("node 'bad_mod' (Mod)"));
}

}  // namespace
}  // namespace mixq::engine
