// The dense-prediction kernels by hand and their refusals: ConvTranspose,
// Resize/Upsample, DepthToSpace/SpaceToDepth. (Conformance data and finite
// differences cover them in conformance_test.cc and gradient_test.cc.)
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/kernel_testing.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::RunKernel;

using ::mixq::testing::Attributes;
using ::mixq::testing::FloatsInput;
using ::mixq::testing::IntAttr;
using ::mixq::testing::IntInput;
using ::mixq::testing::IntsAttr;
using ::mixq::testing::StringAttr;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kNodeName[] = "up";
const std::optional<ConstantInput> kOmitted = std::nullopt;

absl::StatusOr<std::unique_ptr<Kernel>> Create(
    const std::string& op, const Attributes& attrs,
    std::vector<std::optional<ConstantInput>> constants = {},
    int64_t opset = 13) {
  const OpSchema* schema = FindOp(op);
  if (schema == nullptr) return absl::NotFoundError(op);
  OpConfig config;
  config.op_type = op;
  config.node_name = kNodeName;
  config.opset = opset;
  for (const auto& [name, attr] : attrs) config.attributes[name] = attr;
  config.constant_inputs = std::move(constants);
  return schema->create(config);
}

void ExpectRefused(const absl::StatusOr<std::unique_ptr<Kernel>>& kernel,
                   const std::string& substring) {
  EXPECT_EQ(kernel.status().code(), absl::StatusCode::kInvalidArgument)
      << kernel.status();
  EXPECT_THAT(std::string(kernel.status().message()), HasSubstr(substring));
}

// ---------------------------------------------------------- Resize ----

TEST(ResizeTest, NearestDoublesPixels) {
  auto kernel =
      Create("Resize",
             {{"coordinate_transformation_mode", StringAttr("asymmetric")},
              {"nearest_mode", StringAttr("floor")}},
             {kOmitted, FloatsInput({1, 1, 2, 2})});
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  const Tensor y = RunKernel(**kernel, {Tensor({1, 1, 2, 2}, {1, 2, 3, 4})});
  EXPECT_EQ(y.shape(), (Shape{1, 1, 4, 4}));
  EXPECT_THAT(y.ToVector(),
              ElementsAre(1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4));
}

TEST(ResizeTest, LinearAlignCornersKeepsTheCorners) {
  auto kernel =
      Create("Resize",
             {{"mode", StringAttr("linear")},
              {"coordinate_transformation_mode", StringAttr("align_corners")}},
             {kOmitted, kOmitted, IntInput({1, 1, 1, 3})});
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  const Tensor y = RunKernel(**kernel, {Tensor({1, 1, 1, 2}, {2, 6})});
  EXPECT_THAT(y.ToVector(), ElementsAre(2, 4, 6));
}

TEST(ResizeTest, SizesHoldingTheBatchFollowTheInput) {
  ConstantInput sizes = IntInput({1, 2, 4});
  sizes.batch_factor = {1, 0, 0};
  auto kernel = Create("Resize", {{"mode", StringAttr("linear")}},
                       {kOmitted, kOmitted, sizes});
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  const Shape x = {5, 2, 2};
  const Shape* shapes[] = {&x};
  EXPECT_THAT(*(*kernel)->OutputShape(shapes), ElementsAre(5, 2, 4));
}

TEST(ResizeTest, RefusesWhatItDoesNotSupportNamingTheNode) {
  const std::vector<std::optional<ConstantInput>> scales = {
      kOmitted, FloatsInput({1, 1, 2, 2})};
  ExpectRefused(Create("Resize", {{"mode", StringAttr("cubic")}}, scales),
                "Resize node 'up': unsupported mode 'cubic'");
  ExpectRefused(Create("Resize",
                       {{"coordinate_transformation_mode",
                         StringAttr("tf_crop_and_resize")}},
                       scales),
                "tf_crop_and_resize");
  ExpectRefused(Create("Resize", {{"antialias", IntAttr(1)}}, scales),
                "antialias");
  ExpectRefused(Create("Resize", {{"exclude_outside", IntAttr(1)}}, scales),
                "exclude_outside");
  ExpectRefused(Create("Resize", {{"axes", IntsAttr({2, 3})}}, scales), "axes");
  ExpectRefused(Create("Resize", {}, {kOmitted}),
                "exactly one of scales and sizes");
  ExpectRefused(
      Create("Resize", {},
             {kOmitted, FloatsInput({1, 1, 2, 2}), IntInput({1, 1, 4, 4})}),
      "exactly one of scales and sizes");
  ExpectRefused(Create("Resize", {}, {kOmitted, FloatsInput({1, 1, 0, 2})}),
                "must be positive");
  ExpectRefused(Create("Upsample", {}, {}, 9), "scales are required");
}

TEST(ResizeTest, OnlyTheLastTwoAxesMayBeResized) {
  auto kernel = Create("Resize", {}, {kOmitted, FloatsInput({1, 2, 2, 2})});
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  const Shape x = {1, 3, 4, 4};
  const Shape* shapes[] = {&x};
  const absl::StatusOr<Shape> out = (*kernel)->OutputShape(shapes);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(out.status().message()),
              HasSubstr("only the last 2 axes may be resized, not axis 1"));
}

// --------------------------------------------------- ConvTranspose ----

TEST(ConvTransposeTest, StridedKernelTilesTheOutput) {
  auto kernel = Create("ConvTranspose", {{"strides", IntsAttr({2, 2})}});
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  // Each input pixel stamps x * W into its own 2x2 block.
  const Tensor y = RunKernel(**kernel, {Tensor({1, 1, 1, 2}, {1, 10}),
                                        Tensor({1, 1, 2, 2}, {1, 2, 3, 4})});
  EXPECT_EQ(y.shape(), (Shape{1, 1, 2, 4}));
  EXPECT_THAT(y.ToVector(), ElementsAre(1, 2, 10, 20, 3, 4, 30, 40));
}

TEST(ConvTransposeTest, RefusesWhatItDoesNotSupport) {
  ExpectRefused(Create("ConvTranspose", {{"strides", IntsAttr({1, 1, 1})}}),
                "only 1-D and 2-D transposed convolution");
  ExpectRefused(Create("ConvTranspose", {{"group", IntAttr(0)}}), "group");
  ExpectRefused(Create("ConvTranspose", {{"strides", IntsAttr({1, 1})},
                                         {"output_padding", IntsAttr({1})}}),
                "output_padding has 1 values");
  auto kernel = Create("ConvTranspose", {{"output_padding", IntsAttr({1, 0})},
                                         {"strides", IntsAttr({1, 2})}});
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  const Shape x = {1, 2, 3, 3};
  const Shape w = {2, 1, 2, 2};
  const Shape* shapes[] = {&x, &w};
  EXPECT_THAT(std::string((*kernel)->OutputShape(shapes).status().message()),
              HasSubstr("output_padding 1 of spatial dim 0 must be smaller"));
  const Shape w_bad = {3, 1, 2, 2};
  const Shape* bad[] = {&x, &w_bad};
  EXPECT_THAT(std::string((*kernel)->OutputShape(bad).status().message()),
              HasSubstr("do not fit group 1"));
}

// ---------------------------------------------- DepthToSpace/back ----

TEST(DepthToSpaceTest, ModesOrderTheChannelsDifferently) {
  // Four channels of one pixel each: values 0..3.
  const Tensor x({1, 4, 1, 1}, {0, 1, 2, 3});
  auto dcr = Create("DepthToSpace", {{"blocksize", IntAttr(2)}});
  auto crd = Create("DepthToSpace",
                    {{"blocksize", IntAttr(2)}, {"mode", StringAttr("CRD")}});
  ASSERT_TRUE(dcr.ok() && crd.ok());
  EXPECT_THAT(RunKernel(**dcr, {x}).ToVector(), ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(RunKernel(**crd, {x}).ToVector(), ElementsAre(0, 1, 2, 3));
  // Two output channels: DCR takes channel c from c, c + 2, c + 4, c + 6;
  // CRD from 4c .. 4c + 3.
  const Tensor x8({1, 8, 1, 1}, {0, 1, 2, 3, 4, 5, 6, 7});
  EXPECT_THAT(RunKernel(**dcr, {x8}).ToVector(),
              ElementsAre(0, 2, 4, 6, 1, 3, 5, 7));
  EXPECT_THAT(RunKernel(**crd, {x8}).ToVector(),
              ElementsAre(0, 1, 2, 3, 4, 5, 6, 7));
  auto s2d = Create("SpaceToDepth", {{"blocksize", IntAttr(2)}});
  ASSERT_TRUE(s2d.ok());
  EXPECT_EQ(RunKernel(**s2d, {RunKernel(**dcr, {x8})}).ToVector(),
            x8.ToVector());
}

TEST(DepthToSpaceTest, RefusesWhatItDoesNotSupport) {
  ExpectRefused(Create("DepthToSpace", {}), "blocksize 0 must be in [1, ");
  ExpectRefused(Create("DepthToSpace",
                       {{"blocksize", IntAttr(2)}, {"mode", StringAttr("X")}}),
                "unsupported mode 'X'");
  auto d2s = Create("DepthToSpace", {{"blocksize", IntAttr(2)}});
  auto s2d = Create("SpaceToDepth", {{"blocksize", IntAttr(2)}});
  ASSERT_TRUE(d2s.ok() && s2d.ok());
  const Shape x = {1, 6, 3, 3};
  const Shape* shapes[] = {&x};
  EXPECT_THAT(std::string((*d2s)->OutputShape(shapes).status().message()),
              HasSubstr("not a multiple of blocksize^2 4"));
  EXPECT_THAT(std::string((*s2d)->OutputShape(shapes).status().message()),
              HasSubstr("not multiples of blocksize 2"));
  // C * blocksize^2 would overflow int64: refused, not wrapped.
  auto huge = Create("SpaceToDepth", {{"blocksize", IntAttr(1 << 20)}});
  ASSERT_TRUE(huge.ok()) << huge.status();
  const Shape big = {1, int64_t{1} << 30, 1 << 20, 1 << 20};
  const Shape* big_shapes[] = {&big};
  EXPECT_THAT(std::string((*huge)->OutputShape(big_shapes).status().message()),
              HasSubstr("times blocksize^2"));
}

}  // namespace
}  // namespace mixq::engine
