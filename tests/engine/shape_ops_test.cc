// The data-movement kernels (Concat, Transpose, Squeeze, Unsqueeze, Pad,
// Slice, Gather, Expand, Reshape) on hand-computed cases. The folding of the
// shape sub-graphs exporters emit is in constant_folding_test.cc.
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

using ::mixq::testing::FloatAttr;
using ::mixq::testing::FloatInput;
using ::mixq::testing::IntAttr;
using ::mixq::testing::IntInput;
using ::mixq::testing::IntsAttr;
using ::mixq::testing::Iota;
using ::mixq::testing::StringAttr;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

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

}  // namespace
}  // namespace mixq::engine
