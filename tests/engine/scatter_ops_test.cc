// ScatterND (engine/ops_scatter.cc): values against ONNX's examples,
// refusals, and the
// slice-assigned constant mask of Swin's shifted windows folded at import
// (ConstantOfShape -> ScatterND -> Equal -> Where on float constants). Its
// gradients, for every reduction, are in the operator-test table
// (op_table.cc).
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
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

using ::mixq::testing::Attributes;
using ::mixq::testing::IntInput;
using ::mixq::testing::OnnxBuilder;
using ::mixq::testing::RunKernel;
using ::mixq::testing::StringAttr;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

ConstantInput FloatTensorInput(Shape shape, std::vector<float> values) {
  ConstantInput input;
  input.shape = std::move(shape);
  input.floats = std::move(values);
  return input;
}

absl::StatusOr<std::unique_ptr<Kernel>> MakeScatter(
    ConstantInput indices, ConstantInput updates, const Attributes& attrs = {},
    BatchSource batch_source = {}) {
  OpConfig config;
  config.op_type = "ScatterND";
  config.node_name = "node";
  config.opset = 16;
  for (const auto& [name, attr] : attrs) config.attributes[name] = attr;
  config.constant_inputs = {std::move(indices), std::move(updates)};
  config.batch_source = batch_source;
  return FindOp("ScatterND")->create(config);
}

// ONNX's ScatterND example 1: single elements of a 1-D tensor.
TEST(ScatterOpsTest, ReplacesAddressedElements) {
  absl::StatusOr<std::unique_ptr<Kernel>> kernel =
      MakeScatter(IntInput({4, 3, 1, 7}, Shape{4, 1}),
                  FloatTensorInput({4}, {9, 10, 11, 12}));
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  const Tensor y = RunKernel(**kernel, {Tensor({8}, {1, 2, 3, 4, 5, 6, 7, 8})});
  EXPECT_THAT(y.ToVector(), ElementsAre(1, 11, 3, 10, 9, 6, 7, 12));
}

// Rows of a matrix, with a negative index counting from the end.
TEST(ScatterOpsTest, ReplacesSlicesAndAcceptsNegativeIndices) {
  absl::StatusOr<std::unique_ptr<Kernel>> kernel = MakeScatter(
      IntInput({-1}, Shape{1, 1}), FloatTensorInput({1, 2}, {7, 8}));
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  const Tensor y = RunKernel(**kernel, {Tensor({2, 2}, {1, 2, 3, 4})});
  EXPECT_THAT(y.ToVector(), ElementsAre(1, 2, 7, 8));
}

TEST(ScatterOpsTest, AddAndMulReduceDuplicateIndices) {
  for (const char* reduction : {"add", "mul"}) {
    SCOPED_TRACE(reduction);
    absl::StatusOr<std::unique_ptr<Kernel>> kernel = MakeScatter(
        IntInput({1, 1}, Shape{2, 1}), FloatTensorInput({2}, {2, 3}),
        {{"reduction", StringAttr(reduction)}});
    ASSERT_TRUE(kernel.ok()) << kernel.status();
    const Tensor y = RunKernel(**kernel, {Tensor({3}, {1, 5, 1})});
    EXPECT_THAT(
        y.ToVector(),
        ElementsAre(1, std::string(reduction) == "add" ? 10.0f : 30.0f, 1));
  }
}

TEST(ScatterOpsTest, RefusesUnknownReductionNamingTheNode) {
  const absl::Status status =
      MakeScatter(IntInput({0}, Shape{1, 1}), FloatTensorInput({1}, {1}),
                  {{"reduction", StringAttr("max")}})
          .status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("node 'node'"));
  EXPECT_THAT(status.message(), HasSubstr("reduction='max'"));
}

TEST(ScatterOpsTest, RefusesOutOfRangeIndicesAndMismatchedUpdates) {
  absl::StatusOr<std::unique_ptr<Kernel>> kernel =
      MakeScatter(IntInput({3}, Shape{1, 1}), FloatTensorInput({1}, {1}));
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  const Shape data = {3};
  absl::StatusOr<Shape> shape = (*kernel)->OutputShape({&data});
  EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(shape.status().message(), HasSubstr("out of range"));
  const Shape matrix = {3, 2};
  shape = (*kernel)->OutputShape({&matrix});
  EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(shape.status().message(), HasSubstr("updates"));
}

// A runtime tensor that carries the batch cannot take constant indices and
// updates of one batch: refused at import, naming the node.
TEST(ScatterOpsTest, ScatterIntoTheBatchIsRefusedNamingTheNode) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 2}).Output("y");
  b.IntInitializer("flat", {0});
  b.IntInitializer("idx_shape", {1, 1});
  b.Node("Reshape", {"flat", "idx_shape"}, {"idx"});
  b.Initializer("upd", {1, 2}, {5, 6});
  b.Node("ScatterND", {"x", "idx", "upd"}, {"y"}, "scatter");
  const absl::Status status = b.Build().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("node 'scatter'"));
  EXPECT_THAT(status.message(), HasSubstr("carries the batch"));
}

// Swin's mask, small: a zero [2, 2] constant with element (0, 1) set to 3,
// then masked_fill(mask != 0, -100) (Equal, Not, Where on float constants),
// added to the input. All of it folds at import into one constant.
TEST(ScatterOpsTest, SliceAssignedMaskFoldsAtImport) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 2, 2}).Output("y");
  b.IntInitializer("mask_shape", {2, 2});
  b.Node("ConstantOfShape", {"mask_shape"}, {"zeros"});
  b.IntInitializer("flat", {0, 1});
  b.IntInitializer("idx_shape", {1, 2});
  b.Node("Reshape", {"flat", "idx_shape"}, {"idx"});
  b.Initializer("three", {1}, {3});
  b.Node("ScatterND", {"zeros", "idx", "three"}, {"mask"});
  b.Initializer("zero", {}, {0});
  b.Initializer("minus100", {}, {-100});
  b.Node("Equal", {"mask", "zero"}, {"is_zero"});
  b.Node("Not", {"is_zero"}, {"nonzero"});
  b.Node("Where", {"nonzero", "minus100", "mask"}, {"filled"});
  b.Node("Add", {"x", "filled"}, {"y"});
  absl::StatusOr<std::unique_ptr<Model>> model = b.Build();
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->num_nodes(), 1) << "only the Add runs";
  const Tensor x({2, 2, 2}, {1, 1, 1, 1, 2, 2, 2, 2});
  absl::StatusOr<Tensor> y = (*model)->Forward(x, {}, nullptr);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(y->ToVector(), ElementsAre(1, -99, 1, 1, 2, -98, 2, 2));
}

}  // namespace
}  // namespace mixq::engine
