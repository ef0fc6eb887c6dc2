// The data-movement kernels (Concat, Transpose, Squeeze, Unsqueeze, Pad,
// Slice, Gather, Expand, Reshape) on hand-computed cases, and the importer's
// folding of the shape sub-graphs exporters emit, including the batch size
// flowing through them symbolically.
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
#include "tests/support/onnx_builder.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::FloatAttr;
using ::mixq::testing::FloatInput;
using ::mixq::testing::IntAttr;
using ::mixq::testing::IntInput;
using ::mixq::testing::IntsAttr;
using ::mixq::testing::OnnxBuilder;
using ::mixq::testing::SetInt;
using ::mixq::testing::SetInts;
using ::mixq::testing::SetString;
using ::mixq::testing::SetTensor;
using ::mixq::testing::StringAttr;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// 0, 1, 2, ... shaped `shape`.
Tensor Iota(const Shape& shape, float start = 0) {
  Tensor t(shape);
  std::iota(t.values().begin(), t.values().end(), start);
  return t;
}

struct ForwardCase {
  std::string name;
  std::string op_type;
  int64_t opset;
  std::vector<Tensor> inputs;
  std::vector<std::pair<std::string, Attribute>> attributes = {};
  std::vector<std::optional<ConstantInput>> constant_inputs = {};
  Shape expected_shape = {};
  std::vector<float> expected = {};  // empty: only the shape is checked
};

void PrintTo(const ForwardCase& c, std::ostream* os) { *os << c.name; }

absl::StatusOr<std::unique_ptr<Kernel>> MakeKernel(const ForwardCase& c) {
  OpConfig config;
  config.op_type = c.op_type;
  config.node_name = c.name;
  config.opset = c.opset;
  for (const auto& [name, attr] : c.attributes) config.attributes[name] = attr;
  config.constant_inputs = c.constant_inputs;
  const OpSchema* schema = FindOp(c.op_type);
  if (schema == nullptr) return absl::NotFoundError(c.op_type);
  return schema->create(config);
}

class ShapeKernelTest : public ::testing::TestWithParam<ForwardCase> {};

TEST_P(ShapeKernelTest, Forward) {
  const ForwardCase& c = GetParam();
  absl::StatusOr<std::unique_ptr<Kernel>> kernel = MakeKernel(c);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  std::vector<const Shape*> shapes;
  std::vector<const Tensor*> inputs;
  for (const Tensor& t : c.inputs) {
    shapes.push_back(&t.shape());
    inputs.push_back(&t);
  }
  absl::StatusOr<Shape> shape = (*kernel)->OutputShape(shapes);
  ASSERT_TRUE(shape.ok()) << shape.status();
  ASSERT_EQ(*shape, c.expected_shape);
  Tensor out(*shape);
  (*kernel)->Forward(inputs, &out);
  if (!c.expected.empty()) {
    EXPECT_THAT(out.ToVector(), ElementsAreArray(c.expected));
  }
}

std::vector<ForwardCase> ForwardCases() {
  // x = [[0, 1, 2], [3, 4, 5]]
  const Tensor x = Iota({2, 3});
  // clang-format off
  return {
      {"Concat_axis1", "Concat", 13, {x, Iota({2, 1}, 10)}, {{"axis", IntAttr(1)}}, {},
       {2, 4}, {0, 1, 2, 10, 3, 4, 5, 11}},
      {"Concat_negative_axis_three_inputs", "Concat", 13, {Iota({1, 3}), x, Iota({1, 3}, 10)},
       {{"axis", IntAttr(-2)}}, {}, {4, 3}, {0, 1, 2, 0, 1, 2, 3, 4, 5, 10, 11, 12}},
      {"Concat_empty_input", "Concat", 13, {x, Tensor({2, 0})}, {{"axis", IntAttr(1)}}, {},
       {2, 3}, {0, 1, 2, 3, 4, 5}},
      {"Transpose_default_reverses", "Transpose", 13, {x}, {}, {}, {3, 2}, {0, 3, 1, 4, 2, 5}},
      {"Transpose_perm_3d", "Transpose", 13, {Iota({2, 2, 2})}, {{"perm", IntsAttr({1, 2, 0})}},
       {}, {2, 2, 2}, {0, 4, 1, 5, 2, 6, 3, 7}},
      {"Squeeze_all_ones", "Squeeze", 11, {Iota({1, 3, 1})}, {}, {}, {3}, {0, 1, 2}},
      {"Squeeze_axes_attribute", "Squeeze", 11, {Iota({1, 3, 1})}, {{"axes", IntsAttr({-1})}},
       {}, {1, 3}, {0, 1, 2}},
      {"Squeeze_axes_input", "Squeeze", 13, {Iota({1, 3, 1})}, {}, {IntInput({0})}, {3, 1},
       {0, 1, 2}},
      {"Unsqueeze_axes_attribute", "Unsqueeze", 11, {x}, {{"axes", IntsAttr({0, 3})}}, {},
       {1, 2, 3, 1}, {0, 1, 2, 3, 4, 5}},
      {"Unsqueeze_axes_input_unsorted_negative", "Unsqueeze", 13, {x}, {},
       {IntInput({-1, 1})}, {2, 1, 3, 1}, {0, 1, 2, 3, 4, 5}},
      {"Pad_attributes_opset7", "Pad", 7, {x},
       {{"pads", IntsAttr({0, 1, 1, 0})}, {"value", FloatAttr(9.0f)}}, {}, {3, 4},
       {9, 0, 1, 2, 9, 3, 4, 5, 9, 9, 9, 9}},
      {"Pad_inputs_constant_value", "Pad", 11, {x}, {},
       {IntInput({1, 0, 0, 1}), FloatInput(-1)}, {3, 4},
       {-1, -1, -1, -1, 0, 1, 2, -1, 3, 4, 5, -1}},
      {"Pad_negative_crops", "Pad", 13, {x}, {}, {IntInput({0, -1, 0, 1})}, {2, 3},
       {1, 2, 0, 4, 5, 0}},
      {"Pad_reflect", "Pad", 13, {x}, {{"mode", StringAttr("reflect")}},
       {IntInput({0, 2, 0, 1})}, {2, 6}, {2, 1, 0, 1, 2, 1, 5, 4, 3, 4, 5, 4}},
      {"Pad_edge", "Pad", 13, {x}, {{"mode", StringAttr("edge")}}, {IntInput({1, 1, 0, 0})},
       {3, 4}, {0, 0, 1, 2, 0, 0, 1, 2, 3, 3, 4, 5}},
      {"Pad_axes_opset18", "Pad", 18, {x}, {},
       {IntInput({1, 1}), std::nullopt, IntInput({-1})}, {2, 5}, {0, 0, 1, 2, 0, 0, 3, 4, 5, 0}},
      {"Slice_attributes_opset9", "Slice", 9, {x},
       {{"starts", IntsAttr({1})}, {"ends", IntsAttr({1000})}, {"axes", IntsAttr({1})}}, {},
       {2, 2}, {1, 2, 4, 5}},
      {"Slice_inputs_negative_start", "Slice", 13, {x}, {},
       {IntInput({-1, 0}), IntInput({INT64_MAX, 2})}, {1, 2}, {3, 4}},
      {"Slice_negative_step", "Slice", 13, {x}, {},
       {IntInput({-1}), IntInput({INT64_MIN}), IntInput({1}), IntInput({-1})}, {2, 3},
       {2, 1, 0, 5, 4, 3}},
      {"Slice_step2_clamped", "Slice", 13, {Iota({7})}, {},
       {IntInput({-100}), IntInput({100}), IntInput({0}), IntInput({3})}, {3}, {0, 3, 6}},
      // Negative steps clamp starts to [0, dim - 1] (the ONNX spec, unlike
      // numpy), so a start before the beginning selects element 0.
      {"Slice_negative_step_start_before_begin", "Slice", 13, {x}, {},
       {IntInput({-100}), IntInput({INT64_MIN}), IntInput({1}), IntInput({-1})}, {2, 1},
       {0, 3}},
      {"Slice_huge_steps", "Slice", 13, {Iota({7})}, {},
       {IntInput({1}), IntInput({INT64_MAX}), IntInput({0}), IntInput({INT64_MAX})}, {1}, {1}},
      {"Slice_huge_negative_step", "Slice", 13, {Iota({7})}, {},
       {IntInput({-1}), IntInput({INT64_MIN}), IntInput({0}), IntInput({INT64_MIN})}, {1}, {6}},
      {"Slice_empty", "Slice", 13, {x}, {}, {IntInput({2}), IntInput({1}), IntInput({1})},
       {2, 0}, {}},
      {"Gather_axis0_negative", "Gather", 13, {x}, {}, {IntInput({-1, 0, 1})}, {3, 3},
       {3, 4, 5, 0, 1, 2, 3, 4, 5}},
      {"Gather_axis1_scalar_index", "Gather", 13, {x}, {{"axis", IntAttr(1)}},
       {IntInput({2}, Shape{})}, {2}, {2, 5}},
      {"Gather_2d_indices", "Gather", 13, {x}, {{"axis", IntAttr(1)}},
       {IntInput({0, 0, 2, 1}, Shape{2, 2})}, {2, 2, 2}, {0, 0, 2, 1, 3, 3, 5, 4}},
      {"Expand_rows", "Expand", 13, {Iota({1, 3})}, {}, {IntInput({2, 1})}, {2, 3},
       {0, 1, 2, 0, 1, 2}},
      {"Expand_bidirectional", "Expand", 13, {Iota({2, 1})}, {}, {IntInput({3, 1, 2})},
       {3, 2, 2}, {0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1}},
      {"Reshape_zero_copies", "Reshape", 13, {Iota({2, 3, 2})}, {}, {IntInput({0, -1})},
       {2, 6}, {}},
      {"Reshape_allowzero", "Reshape", 14, {Tensor({0, 3})}, {{"allowzero", IntAttr(1)}},
       {IntInput({3, 0})}, {3, 0}, {}},
  };
  // clang-format on
}

INSTANTIATE_TEST_SUITE_P(Cases, ShapeKernelTest,
                         ::testing::ValuesIn(ForwardCases()),
                         [](const auto& info) { return info.param.name; });

struct ErrorCase {
  ForwardCase op;
  std::string message;  // at creation or OutputShape
};

class ShapeKernelErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(ShapeKernelErrorTest, IsInvalidArgument) {
  const ErrorCase& c = GetParam();
  absl::StatusOr<std::unique_ptr<Kernel>> kernel = MakeKernel(c.op);
  absl::Status status = kernel.status();
  if (kernel.ok()) {
    std::vector<const Shape*> shapes;
    for (const Tensor& t : c.op.inputs) shapes.push_back(&t.shape());
    status = (*kernel)->OutputShape(shapes).status();
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(c.message));
}

std::vector<ErrorCase> ErrorCases() {
  const Tensor x = Iota({2, 3});
  // clang-format off
  return {
      {{"concat_no_axis", "Concat", 13, {x}}, "'axis' attribute is required"},
      {{"concat_mismatch", "Concat", 13, {x, Iota({3, 3})}, {{"axis", IntAttr(1)}}},
       "differ outside axis"},
      {{"concat_axis_range", "Concat", 13, {x}, {{"axis", IntAttr(2)}}}, "out of range"},
      {{"transpose_bad_perm", "Transpose", 13, {x}, {{"perm", IntsAttr({0, 0})}}},
       "not a permutation"},
      {{"transpose_rank", "Transpose", 13, {x}, {{"perm", IntsAttr({0, 2, 1})}}},
       "does not match"},
      {{"squeeze_not_one", "Squeeze", 13, {x}, {}, {IntInput({0})}}, "is not 1"},
      {{"squeeze_both", "Squeeze", 13, {x}, {{"axes", IntsAttr({0})}}, {IntInput({0})}},
       "both an 'axes' attribute and input"},
      {{"unsqueeze_no_axes", "Unsqueeze", 13, {x}}, "'axes' is required"},
      {{"unsqueeze_repeated", "Unsqueeze", 13, {x}, {}, {IntInput({0, 0})}}, "repeated"},
      {{"pad_wrap", "Pad", 13, {x}, {{"mode", StringAttr("wrap")}}, {IntInput({0, 0, 0, 0})}},
       "mode='wrap'"},
      {{"pad_length", "Pad", 13, {x}, {}, {IntInput({1, 1})}}, "do not match"},
      {{"pad_crop_too_much", "Pad", 13, {x}, {}, {IntInput({0, -2, 0, -2})}}, "negative"},
      {{"pad_reflect_too_wide", "Pad", 13, {x}, {{"mode", StringAttr("reflect")}},
        {IntInput({0, 3, 0, 0})}},
       "smaller than"},
      {{"slice_zero_step", "Slice", 13, {x}, {},
        {IntInput({0}), IntInput({1}), IntInput({0}), IntInput({0})}},
       "a step is 0"},
      {{"slice_lengths", "Slice", 13, {x}, {}, {IntInput({0, 0}), IntInput({1})}},
       "differ in length"},
      {{"slice_repeated_axis", "Slice", 13, {x}, {},
        {IntInput({0, 0}), IntInput({1, 1}), IntInput({1, -1})}},
       "repeated"},
      {{"gather_out_of_range", "Gather", 13, {x}, {}, {IntInput({2})}}, "out of range"},
      {{"gather_float_indices", "Gather", 13, {x}, {}, {FloatInput(0)}}, "constant int64"},
      {{"expand_incompatible", "Expand", 13, {x}, {}, {IntInput({2, 2})}}, "do not broadcast"},
      {{"reshape_allowzero_2", "Reshape", 14, {x}, {{"allowzero", IntAttr(2)}},
        {IntInput({6})}},
       "allowzero=2"},
      {{"cast_to_string", "Cast", 13, {x}, {{"to", IntAttr(8)}}},
       "only to FLOAT, DOUBLE, BOOL or an integer type"},
  };
  // clang-format on
}

INSTANTIATE_TEST_SUITE_P(Cases, ShapeKernelErrorTest,
                         ::testing::ValuesIn(ErrorCases()),
                         [](const auto& info) { return info.param.op.name; });

// ------------------------------------------------- Importer and folding ----

std::vector<const Tensor*> Pointers(const std::vector<Tensor>& tensors) {
  std::vector<const Tensor*> pointers;
  for (const Tensor& t : tensors) pointers.push_back(&t);
  return pointers;
}

absl::StatusOr<Tensor> RunModel(const Model& model, const Tensor& input) {
  return model.Forward(input, Pointers(model.initial_params()), nullptr);
}

std::unique_ptr<Model> BuildOrDie(const OnnxBuilder& builder) {
  absl::StatusOr<std::unique_ptr<Model>> model = builder.Build();
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *std::move(model) : nullptr;
}

void ExpectInvalid(const absl::Status& status, const std::string& substring) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(substring));
}

// Runs `model` at batches 1 and 5 on 0, 1, 2, ... and expects [batch,
// `features`] holding the input's values in order (a flatten).
void ExpectFlattensAtAnyBatch(const Model& model, int64_t features) {
  for (int64_t batch : {1, 5}) {
    Shape shape = model.input_shape();
    shape[0] = batch;
    const Tensor x = Iota(shape);
    absl::StatusOr<Tensor> y = RunModel(model, x);
    ASSERT_TRUE(y.ok()) << y.status();
    EXPECT_THAT(y->shape(), ElementsAre(batch, features)) << "batch " << batch;
    EXPECT_EQ(y->values(), x.values()) << "batch " << batch;
  }
}

// x.view(x.size(0), -1) as torch.onnx.export writes it with dynamic axes:
// Shape -> Gather(0) -> Unsqueeze -> Concat([b], [-1]) -> Reshape.
OnnxBuilder ViewFlattenGraph(int64_t opset, bool batch_symbolic = true) {
  OnnxBuilder b(opset);
  b.Input("x", {batch_symbolic ? -1 : 1, 2, 3}).Output("y");
  b.Node("Shape", {"x"}, {"shape"}, "shape");
  b.IntConstant("zero", {0}, /*scalar=*/true);
  b.Node("Gather", {"shape", "zero"}, {"batch"}, "gather");
  if (opset < 13) {
    SetInts(b.Node("Unsqueeze", {"batch"}, {"batch1"}, "unsqueeze"), "axes",
            {0});
  } else {
    b.IntConstant("axes", {0});
    b.Node("Unsqueeze", {"batch", "axes"}, {"batch1"}, "unsqueeze");
  }
  b.IntConstant("minus_one", {-1});
  SetInt(b.Node("Concat", {"batch1", "minus_one"}, {"target"}, "concat"),
         "axis", 0);
  b.Node("Reshape", {"x", "target"}, {"y"}, "reshape");
  return b;
}

TEST(BatchFoldingTest, ViewFlattenRunsAtAnyBatch) {
  for (int64_t opset : {11, 13, 17}) {
    SCOPED_TRACE(absl::StrCat("opset ", opset));
    std::unique_ptr<Model> model = BuildOrDie(ViewFlattenGraph(opset));
    ASSERT_NE(model, nullptr);
    EXPECT_THAT(model->output_shape(), ElementsAre(1, 6));
    ExpectFlattensAtAnyBatch(*model, 6);
  }
}

// Without dynamic axes the exporter writes the example's batch as a literal
// (input declared [1, 2, 3], Reshape to [1, -1]); mixq still runs any batch.
TEST(BatchFoldingTest, LiteralExampleBatchInReshapeIsTheBatch) {
  OnnxBuilder b;
  b.Input("x", {1, 2, 3}).Output("y");
  b.IntInitializer("target", {1, -1});
  b.Node("Reshape", {"x", "target"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  ExpectFlattensAtAnyBatch(*model, 6);
  // The folded variant of ViewFlattenGraph with a fixed input.
  model = BuildOrDie(ViewFlattenGraph(13, /*batch_symbolic=*/false));
  ASSERT_NE(model, nullptr);
  ExpectFlattensAtAnyBatch(*model, 6);
}

// Shape(start, end) (opset 15), Slice of a shape, products of the
// non-batch dims and a Cast: x.view(x.size(0), x.size(1) * x.size(2)).
TEST(BatchFoldingTest, SliceMulCastOfShapes) {
  OnnxBuilder b(15);
  b.Input("x", {-1, 2, 3}).Output("y");
  onnx::NodeProto* head = b.Node("Shape", {"x"}, {"head"});
  SetInt(head, "end", 1);
  b.Node("Shape", {"x"}, {"shape"});
  b.IntInitializer("one", {1});
  b.IntInitializer("two", {2});
  b.IntInitializer("three", {3});
  b.Node("Slice", {"shape", "one", "two"}, {"c"});
  b.Node("Slice", {"shape", "two", "three"}, {"w"});
  b.Node("Mul", {"c", "w"}, {"cw"});
  SetInt(b.Node("Cast", {"cw"}, {"cw64"}), "to", onnx::TensorProto::INT64);
  SetInt(b.Node("Concat", {"head", "cw64"}, {"target"}), "axis", 0);
  b.Node("Reshape", {"x", "target"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  ExpectFlattensAtAnyBatch(*model, 6);
}

// torch's opset 9+ export of `x.reshape(b, -1)` through Where(Equal(t, 0),
// ...), and Range/ConstantOfShape on constants.
TEST(BatchFoldingTest, WhereEqualRangeConstantOfShape) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 2, 3}).Output("y");
  b.Node("Shape", {"x"}, {"shape"});
  b.IntConstant("zero", {0}, true);
  b.Node("Gather", {"shape", "zero"}, {"batch"});
  b.IntConstant("axes", {0});
  b.Node("Unsqueeze", {"batch", "axes"}, {"batch1"});
  b.IntConstant("minus_one", {-1});
  SetInt(b.Node("Concat", {"batch1", "minus_one"}, {"t"}), "axis", 0);
  b.IntConstant("zeros", {0, 0});
  b.Node("Equal", {"t", "zeros"}, {"is_zero"});
  b.IntConstant("ones", {1, 1});
  b.Node("Where", {"is_zero", "ones", "t"}, {"target"});
  b.Node("Reshape", {"x", "target"}, {"flat"});
  // + Cast(Range(0, 6, 1)) + ConstantOfShape([6]) of 0.5: 0.5, 1.5, ...
  b.IntConstant("r0", {0}, true);
  b.IntConstant("r6", {6}, true);
  b.IntConstant("r1", {1}, true);
  b.Node("Range", {"r0", "r6", "r1"}, {"range"});
  SetInt(b.Node("Cast", {"range"}, {"range_f"}), "to",
         onnx::TensorProto::FLOAT);
  b.IntConstant("six", {6});
  onnx::TensorProto* half =
      SetTensor(b.Node("ConstantOfShape", {"six"}, {"halves"}));
  OnnxBuilder::FillFloat(half, "", {1}, {0.5f});
  b.Node("Add", {"range_f", "halves"}, {"offsets"});
  b.Node("Add", {"flat", "offsets"}, {"y"});
  absl::StatusOr<std::unique_ptr<Model>> model = b.Build();
  ASSERT_TRUE(model.ok()) << model.status();
  for (int64_t batch : {1, 5}) {
    absl::StatusOr<Tensor> y = RunModel(**model, Tensor({batch, 2, 3}));
    ASSERT_TRUE(y.ok()) << y.status();
    ASSERT_THAT(y->shape(), ElementsAre(batch, 6));
    for (int64_t i = 0; i < y->size(); ++i) {
      EXPECT_EQ(y->data()[i], 0.5f + i % 6) << i;
    }
  }
}

// tf2onnx computes shapes in int32: NHWC input -> Transpose to NCHW ->
// Shape -> Cast(INT32) -> Slice -> Concat with an int32 constant -> Cast(INT64)
// -> Reshape.
TEST(BatchFoldingTest, Tf2OnnxStyleInt32ShapeComputation) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 3, 3, 2}).Output("y");
  SetInts(b.Node("Transpose", {"x"}, {"nchw"}), "perm", {0, 3, 1, 2});
  b.Node("Shape", {"nchw"}, {"shape"});
  SetInt(b.Node("Cast", {"shape"}, {"shape32"}), "to",
         onnx::TensorProto::INT32);
  b.IntInitializer("start", {0});
  b.IntInitializer("end", {1});
  b.Node("Slice", {"shape32", "start", "end"}, {"batch32"});
  onnx::TensorProto* minus_one = b.graph().add_initializer();
  minus_one->set_name("minus_one32");
  minus_one->set_data_type(onnx::TensorProto::INT32);
  minus_one->add_dims(1);
  minus_one->add_int32_data(-1);
  SetInt(b.Node("Concat", {"batch32", "minus_one32"}, {"target32"}), "axis", 0);
  SetInt(b.Node("Cast", {"target32"}, {"target"}), "to",
         onnx::TensorProto::INT64);
  b.Node("Reshape", {"nchw", "target"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  for (int64_t batch : {1, 5}) {
    const Tensor x = Iota({batch, 3, 3, 2});
    absl::StatusOr<Tensor> y = RunModel(*model, x);
    ASSERT_TRUE(y.ok()) << y.status();
    ASSERT_THAT(y->shape(), ElementsAre(batch, 18));
    // y[n][c * 9 + h * 3 + w] = x[n][h][w][c]
    EXPECT_EQ(y->data()[(batch - 1) * 18 + 9 + 4],
              x.data()[(batch - 1) * 18 + (1 * 3 + 1) * 2 + 1]);
  }
}

// Expand to [b, 4, 3] with b from Shape: the batch flows into Expand too.
TEST(BatchFoldingTest, ExpandToTheBatch) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 1, 3}).Output("y");
  b.Node("Shape", {"x"}, {"shape"});
  b.IntInitializer("start", {0});
  b.IntInitializer("end", {1});
  b.Node("Slice", {"shape", "start", "end"}, {"batch1"});
  b.IntConstant("rest", {4, 3});
  SetInt(b.Node("Concat", {"batch1", "rest"}, {"target"}), "axis", 0);
  b.Node("Expand", {"x", "target"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  for (int64_t batch : {1, 5}) {
    const Tensor x = Iota({batch, 1, 3});
    absl::StatusOr<Tensor> y = RunModel(*model, x);
    ASSERT_TRUE(y.ok()) << y.status();
    ASSERT_THAT(y->shape(), ElementsAre(batch, 4, 3));
    EXPECT_EQ(y->data()[(batch - 1) * 12 + 11], x.data()[(batch - 1) * 3 + 2]);
  }
}

// Arithmetic on the batch that mixq cannot carry symbolically is an error
// naming the node, never a constant folded at batch 1.
// A graph whose shapes only hold at the batch its input declares runs at that
// batch and no other, rather than at others with a folded wrong shape.
TEST(BatchFoldingTest, GraphValidOnlyAtItsDeclaredBatchIsPinned) {
  OnnxBuilder b;
  b.Input("x", {2, 3, 4}).Output("y");
  b.IntInitializer("target", {24});
  b.Node("Reshape", {"x", "target"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  absl::StatusOr<Tensor> y = RunModel(*model, Iota({2, 3, 4}));
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(y->shape(), ElementsAre(24));
  ExpectInvalid(RunModel(*model, Iota({4, 3, 4})).status(),
                "only runs at batch 2");
}

// A ViT's `cls_token.repeat(batch, 1, 1)`: Tile repeats that hold the batch.
TEST(BatchFoldingTest, ParameterRepeatedToTheBatch) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 2, 3}).Output("y");
  b.Initializer("token", {1, 1, 3}, {1, 2, 3});
  b.Node("Shape", {"x"}, {"shape"});
  b.IntInitializer("start", {0});
  b.IntInitializer("end", {1});
  b.Node("Slice", {"shape", "start", "end"}, {"batch1"});
  b.IntConstant("ones", {1, 1});
  SetInt(b.Node("Concat", {"batch1", "ones"}, {"repeats"}), "axis", 0);
  b.Node("Tile", {"token", "repeats"}, {"tokens"});
  SetInt(b.Node("Concat", {"tokens", "x"}, {"y"}), "axis", 1);
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  for (int64_t batch : {1, 4}) {
    absl::StatusOr<Tensor> y = RunModel(*model, Iota({batch, 2, 3}));
    ASSERT_TRUE(y.ok()) << y.status();
    ASSERT_THAT(y->shape(), ElementsAre(batch, 3, 3));
    EXPECT_EQ(y->data()[(batch - 1) * 9 + 2], 3.0f);
  }
}

// Arithmetic that is not a multiple of the batch (batch squared, batch + 1,
// batch - 1, batch / 2) cannot be carried symbolically: an error naming the
// node, never a constant folded at batch 1.
TEST(BatchFoldingTest, UnrepresentableBatchArithmeticIsAnError) {
  struct Case {
    std::string op;
    bool by_itself;  // the batch times itself, else by k
    int64_t k;
  };
  for (const Case& c : {Case{"Mul", true, 0}, Case{"Sub", false, 1},
                        Case{"Add", false, 1}, Case{"Div", false, 2}}) {
    SCOPED_TRACE(c.op);
    OnnxBuilder b(13);
    b.Input("x", {-1, 6}).Output("y");
    b.Node("Shape", {"x"}, {"shape"});
    b.IntInitializer("start", {0});
    b.IntInitializer("end", {1});
    b.Node("Slice", {"shape", "start", "end"}, {"batch1"});
    b.IntInitializer("k", {c.k});
    b.Node(c.op, {"batch1", c.by_itself ? "batch1" : "k"}, {"scaled"},
           "scale_batch");
    b.IntConstant("minus_one", {-1});
    SetInt(b.Node("Concat", {"scaled", "minus_one"}, {"target"}), "axis", 0);
    b.Node("Reshape", {"x", "target"}, {"y"});
    const absl::Status status = b.Build().status();
    ExpectInvalid(status, "node 'scale_batch'");
    ExpectInvalid(status, "shape computation depends on the batch size");
  }
}

// nn.MultiheadAttention's `view(T, batch * heads, D / heads)`: a multiple of
// the batch flows through Mul into a Reshape, and back through a second
// Reshape whose data carries the batch only as batch x heads.
TEST(BatchFoldingTest, BatchTimesHeadsReshapesAtAnyBatch) {
  constexpr int64_t kHeads = 3;
  OnnxBuilder b(13);
  b.Input("x", {-1, 2, 6}).Output("y");
  b.Node("Shape", {"x"}, {"shape"});
  b.IntConstant("zero", {0}, true);
  b.Node("Gather", {"shape", "zero"}, {"batch"});
  b.IntConstant("heads", {kHeads}, true);
  b.Node("Mul", {"batch", "heads"}, {"batch_heads"});
  b.IntConstant("axes", {0});
  b.Node("Unsqueeze", {"batch_heads", "axes"}, {"bh1"});
  b.IntConstant("rest", {2, 2});
  SetInt(b.Node("Concat", {"bh1", "rest"}, {"split_target"}), "axis", 0);
  b.Node("Reshape", {"x", "split_target"}, {"split"});
  SetInts(b.Node("Transpose", {"split"}, {"swapped"}), "perm", {0, 2, 1});
  // Back to [batch, 12] with batch = (batch x heads) / heads.
  b.Node("Shape", {"swapped"}, {"swapped_shape"});
  b.Node("Gather", {"swapped_shape", "zero"}, {"bh"});
  b.Node("Div", {"bh", "heads"}, {"batch_again"});
  b.Node("Unsqueeze", {"batch_again", "axes"}, {"b1"});
  b.IntConstant("minus_one", {-1});
  SetInt(b.Node("Concat", {"b1", "minus_one"}, {"merge_target"}), "axis", 0);
  b.Node("Reshape", {"swapped", "merge_target"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  for (int64_t batch : {1, 2, 5}) {
    const Tensor x = Iota({batch, 2, 6});
    absl::StatusOr<Tensor> y = RunModel(*model, x);
    ASSERT_TRUE(y.ok()) << y.status();
    ASSERT_THAT(y->shape(), ElementsAre(batch, 12));
    // Each [2, 2] block of x is transposed: y[n][4 * h + 1] = x[n][4 * h + 2].
    const int64_t last = (batch - 1) * 12;
    EXPECT_EQ(y->data()[last + 4 * 2 + 1], x.data()[last + 4 * 2 + 2]);
  }
}

// A ViT's class token [1, 1, D] expanded to [batch, 1, D]: the data of the
// Expand carries no batch, so the batch is read from the graph input.
TEST(BatchFoldingTest, ParameterExpandedToTheBatch) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 3}).Output("y");
  b.Initializer("token", {1, 3}, {1, 2, 3});
  b.Node("Shape", {"x"}, {"shape"});
  b.IntInitializer("start", {0});
  b.IntInitializer("end", {1});
  b.Node("Slice", {"shape", "start", "end"}, {"batch1"});
  b.IntConstant("rest", {3});
  SetInt(b.Node("Concat", {"batch1", "rest"}, {"target"}), "axis", 0);
  b.Node("Expand", {"token", "target"}, {"tokens"});
  b.Node("Add", {"x", "tokens"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  for (int64_t batch : {1, 4}) {
    absl::StatusOr<Tensor> y = RunModel(*model, Tensor({batch, 3}));
    ASSERT_TRUE(y.ok()) << y.status();
    ASSERT_THAT(y->shape(), ElementsAre(batch, 3));
    EXPECT_EQ(y->data()[(batch - 1) * 3 + 2], 3.0f);
  }
}

TEST(BatchFoldingTest, Int64OverflowIsAnError) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 6}).Output("y");
  b.IntInitializer("big", {INT64_MAX / 2 + 1});
  b.Node("Add", {"big", "big"}, {"sum"}, "sum");
  b.Node("Reshape", {"x", "sum"}, {"y"});
  ExpectInvalid(b.Build().status(), "node 'sum' (Add): int64 overflow");
}

TEST(BatchFoldingTest, BatchShapedConstantIsAnError) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 3}).Output("y");
  b.Node("Shape", {"x"}, {"shape"});
  b.Node("ConstantOfShape", {"shape"}, {"zeros"}, "zeros");
  b.Node("Add", {"x", "zeros"}, {"y"});
  ExpectInvalid(b.Build().status(), "node 'zeros' (ConstantOfShape)");
}

// The batch may only go where a kernel can re-read it (Reshape, Expand).
TEST(BatchFoldingTest, BatchAsAnIndexIsAnError) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 8}).Output("y");
  b.Node("Shape", {"x"}, {"shape"});
  b.IntConstant("zero", {0});
  b.Node("Gather", {"shape", "zero"}, {"batch1"});
  b.Node("Gather", {"x", "batch1"}, {"y"}, "pick");
  ExpectInvalid(b.Build().status(), "node 'pick'");
}

// A shape that is constant (no batch involved) folds to a plain constant,
// even when computed from the shape of a batch-dependent tensor.
TEST(BatchFoldingTest, NonBatchDimsOfShapesAreConstants) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 2, 3}).Output("y");
  b.Node("Shape", {"x"}, {"shape"});
  b.IntConstant("idx", {2, 1});
  b.Node("Gather", {"shape", "idx"}, {"dims"});  // [3, 2]
  b.IntConstant("minus_one", {-1});
  SetInt(b.Node("Concat", {"minus_one", "dims"}, {"target"}), "axis", 0);
  b.Node("Reshape", {"x", "target"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  absl::StatusOr<Tensor> y = RunModel(*model, Iota({4, 2, 3}));
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(y->shape(), ElementsAre(4, 3, 2));
}

TEST(BatchFoldingTest, ConstantNodeValueForms) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 4}).Output("y");
  onnx::NodeProto* ints = b.Node("Constant", {}, {"target"});
  onnx::AttributeProto* attr = ints->add_attribute();
  attr->set_name("value_ints");
  attr->set_type(onnx::AttributeProto::INTS);
  attr->add_ints(0);
  attr->add_ints(2);
  attr->add_ints(2);
  b.Node("Reshape", {"x", "target"}, {"r"});
  onnx::NodeProto* f = b.Node("Constant", {}, {"half"});
  attr = f->add_attribute();
  attr->set_name("value_float");
  attr->set_type(onnx::AttributeProto::FLOAT);
  attr->set_f(0.5f);
  b.Node("Add", {"r", "half"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  absl::StatusOr<Tensor> y = RunModel(*model, Iota({3, 4}));
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(y->shape(), ElementsAre(3, 2, 2));
  EXPECT_EQ(y->data()[11], 11.5f);
}

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
  absl::StatusOr<Tensor> y = (*model)->Forward(
      Tensor({1, 4}, {1, 0, 2, 0}), Pointers((*model)->initial_params()),
      nullptr);
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
