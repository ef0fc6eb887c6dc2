// The importer (engine/import_graph.h): constant configuration inputs,
// omitted inputs, int64 values computed at run time, parameters read by
// variadic nodes, and Conv layers before a five-input BatchNormalization.
#include <cstdint>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "tests/support/kernel_testing.h"
#include "tests/support/model_testing.h"
#include "tests/support/onnx_builder.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::BuildOrDie;
using ::mixq::testing::ExpectInvalid;
using ::mixq::testing::Iota;
using ::mixq::testing::OnnxBuilder;
using ::mixq::testing::Pointers;
using ::mixq::testing::SetInt;
using ::mixq::testing::SetInts;
using ::testing::ElementsAre;

TEST(ImporterTest, NonConstantConfigurationInputIsAnError) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 4}).Output("y");
  b.Node("Relu", {"x"}, {"r"});
  b.Node("Pad", {"x", "r"}, {"y"}, "pad");
  ExpectInvalid(b.Build().status(), "of node 'pad' (Pad) must be a constant");
}

// Omitted (empty) inputs where an operator needs one are errors naming the
// node, in shape computations and kernels alike.
TEST(ImporterTest, OmittedInputsAreErrors) {
  const auto build = [](const std::string& op,
                        const std::vector<std::string>& inputs) {
    OnnxBuilder b(13);
    b.Input("x", {-1, 4}).Output("y");
    b.IntInitializer("k", {1, 2});
    SetInt(b.Node(op, inputs, {"s"}, "n"), "axis", 0);
    b.Node("Reshape", {"x", "s"}, {"y"});
    return b.Build().status();
  };
  ExpectInvalid(build("Shape", {""}), "node 'n' (Shape): input 0 is missing");
  ExpectInvalid(build("Concat", {"k", ""}), "node 'n' (Concat): input 1");
  ExpectInvalid(build("Where", {"k", "", "k"}), "node 'n' (Where): input 1");
  ExpectInvalid(build("Cast", {""}), "node 'n'");
}

// Equal on runtime tensors (a mask against 0) runs, giving 1 and 0; the
// comparisons mixq only folds are still refused on them, by node.
TEST(ImporterTest, EqualOnRuntimeTensorsRunsOtherComparisonsAreAnError) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 4}).Output("y");
  b.IntInitializer("zero", {0});
  b.Node("Equal", {"x", "zero"}, {"y"}, "eq");
  absl::StatusOr<std::unique_ptr<Model>> model = b.Build();
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<Tensor> y =
      (*model)->Forward(Tensor({1, 4}, {1, 0, 2, 0}),
                        Pointers((*model)->initial_params()), nullptr);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(y->values(), ::testing::ElementsAre(0, 1, 0, 1));

  OnnxBuilder less(13);
  less.Input("x", {-1, 4}).Output("y");
  less.Node("Less", {"x", "x"}, {"y"}, "lt");
  ExpectInvalid(less.Build().status(), "node 'lt' (Less)");
}

// Concat with many inputs, some of them parameters, and Transpose/Slice/Pad/
// Gather/Squeeze/Unsqueeze chained: forward values and parameter gradients
// (the kernels' own gradients are checked in gradient_test.cc).
TEST(ImporterTest, VariadicConcatTrainsEveryInput) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 2}).Output("y");
  b.Initializer("a", {1, 2}, {1, 2});
  b.Initializer("c", {1, 2}, {3, 4});
  b.Initializer("d", {1, 2}, {5, 6});
  b.Node("Identity", {"x"}, {"x1"});
  SetInt(b.Node("Concat", {"x", "a", "x1", "c", "d"}, {"cat"}), "axis", 0);
  SetInts(b.Node("Transpose", {"cat"}, {"y"}), "perm", {1, 0});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  ASSERT_EQ(model->params().size(), 3u);
  const Tensor x({2, 2}, {10, 20, 30, 40});
  ForwardTrace trace;
  const std::vector<const Tensor*> params = Pointers(model->initial_params());
  absl::StatusOr<Tensor> y = model->Forward(x, params, &trace);
  ASSERT_TRUE(y.ok()) << y.status();
  ASSERT_THAT(y->shape(), ElementsAre(2, 7));
  EXPECT_THAT(y->ToVector(), ElementsAre(10, 30, 1, 10, 30, 3, 5,  //
                                         20, 40, 2, 20, 40, 4, 6));
  std::vector<Tensor> grads;
  Tensor grad_y(y->shape());
  std::iota(grad_y.values().begin(), grad_y.values().end(), 0.0f);
  ASSERT_TRUE(model->Backward(trace, params, grad_y, &grads).ok());
  // cat is [x0; x1; a; x0; x1; c; d] and y its transpose: a's gradient is
  // y's column 2, c's column 5, d's column 6.
  EXPECT_THAT(grads[0].ToVector(), ElementsAre(2, 9));
  EXPECT_THAT(grads[1].ToVector(), ElementsAre(5, 12));
  EXPECT_THAT(grads[2].ToVector(), ElementsAre(6, 13));
}

// Conv weights (read through Identity) are quantizable layers with the output
// channel on axis 0, and BatchNormalization's five data inputs go through
// Forward and Backward (mean and var get zero gradients).
TEST(ImporterTest, ConvLayersAndFiveInputBatchNorm) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 2, 4, 4}).Output("y");
  b.Initializer("conv.weight", {3, 2, 3, 3}, std::vector<float>(54, 0.1f));
  b.Initializer("conv.bias", {3}, {0.1f, -0.2f, 0.3f});
  b.Initializer("bn.scale", {3}, {1, 2, 3});
  b.Initializer("bn.bias", {3}, {0, 1, 0});
  b.Initializer("bn.mean", {3}, {0.5f, 0, -0.5f});
  b.Initializer("bn.var", {3}, {1, 4, 9});
  b.Node("Identity", {"conv.weight"}, {"w"});
  b.Node("Conv", {"x", "w", "conv.bias"}, {"c"}, "conv");
  b.Node("BatchNormalization",
         {"c", "bn.scale", "bn.bias", "bn.mean", "bn.var"}, {"y"}, "bn");
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  ASSERT_EQ(model->quantizable_layers().size(), 1u);
  const QuantizableLayer& layer = model->quantizable_layers()[0];
  EXPECT_EQ(layer.name, "conv.weight");
  EXPECT_EQ(layer.op_type, "Conv");
  EXPECT_EQ(layer.channel_axis, 0);
  EXPECT_EQ(layer.num_weights, 54);
  ASSERT_EQ(model->params().size(), 6u);

  const std::vector<const Tensor*> params = Pointers(model->initial_params());
  ForwardTrace trace;
  absl::StatusOr<Tensor> y = model->Forward(Iota({2, 2, 4, 4}), params, &trace);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(y->shape(), ElementsAre(2, 3, 2, 2));
  std::vector<Tensor> grads;
  Tensor grad_y(y->shape());
  grad_y.flat() = 1.0f;
  ASSERT_TRUE(model->Backward(trace, params, grad_y, &grads).ok());
  ASSERT_EQ(grads.size(), 6u);
  EXPECT_GT(grads[0].flat().abs().maxCoeff(), 0.0f);  // conv.weight
  EXPECT_EQ(grads[4].flat().abs().maxCoeff(), 0.0f);  // bn.mean
  EXPECT_EQ(grads[5].flat().abs().maxCoeff(), 0.0f);  // bn.var
}

}  // namespace
}  // namespace mixq::engine
