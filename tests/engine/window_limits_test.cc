// Hostile sliding windows (Conv, MaxPool, AveragePool) found by fuzzing
// (tests/fuzz/corpus holds the inputs): attributes near INT64_MAX, padding
// that makes a tiny input a huge plane, strides far beyond the input, kernels
// whose taps cost hours. Each is refused at import naming the node and the
// attribute or limit (engine/ops.h, "Limits of the sliding windows"), never a
// crash, an allocation of gigabytes or a hang; strides that leave a single
// output still compute the right value.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
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

using ::mixq::testing::OnnxBuilder;
using ::mixq::testing::SetInt;
using ::mixq::testing::SetInts;
using ::mixq::testing::SetString;
using ::mixq::testing::UniformValues;
using ::testing::HasSubstr;

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kNodeSeed = 3;

// One node "op" reading x (and W when `w` is not empty) into y.
struct WindowCase {
  std::string name;
  std::string op_type;
  Shape x = {};
  Shape w = {};  // Conv only
  std::vector<std::pair<std::string, std::vector<int64_t>>> ints = {};
  std::string auto_pad = {};  // empty: not set
  int64_t group = 1;
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string what = {};  // the attribute or limit the message names
};

void PrintTo(const WindowCase& c, std::ostream* os) { *os << c.name; }

OnnxBuilder BuildModel(const WindowCase& c) {
  std::mt19937 rng(kNodeSeed);
  OnnxBuilder b;
  b.Input("x", c.x).Output("y");
  std::vector<std::string> inputs = {"x"};
  if (!c.w.empty()) {
    b.Initializer("w", c.w, UniformValues(NumElements(c.w), &rng));
    inputs.push_back("w");
  }
  onnx::NodeProto* node = b.Node(c.op_type, inputs, {"y"}, "window");
  for (const auto& [name, values] : c.ints) SetInts(node, name, values);
  if (!c.auto_pad.empty()) SetString(node, "auto_pad", c.auto_pad);
  if (c.group != 1) SetInt(node, "group", c.group);
  return b;
}

class WindowLimitsTest : public ::testing::TestWithParam<WindowCase> {};

TEST_P(WindowLimitsTest, RefusedNamingNodeAndAttribute) {
  const WindowCase& c = GetParam();
  absl::StatusOr<std::unique_ptr<Model>> model = BuildModel(c).Build();
  ASSERT_FALSE(model.ok()) << "imported";
  EXPECT_EQ(model.status().code(), c.code) << model.status();
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("'window'"));
  EXPECT_THAT(std::string(model.status().message()), HasSubstr(c.what));
}

constexpr absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;
constexpr absl::StatusCode kExhausted = absl::StatusCode::kResourceExhausted;
constexpr int64_t kOverAttribute = kMaxWindowAttribute + 1;

INSTANTIATE_TEST_SUITE_P(
    Hostile, WindowLimitsTest,
    ::testing::ValuesIn(std::vector<WindowCase>{
        // The fuzzer's heap-buffer-overflow: CeilDiv(width, INT64_MAX)
        // overflowed in the phase layout.
        {.name = "ConvStrideInt64Max",
         .op_type = "Conv",
         .x = {2, 4, 6, 6},
         .w = {4, 1, 3, 3},
         .ints = {{"strides", {1, kInt64Max}}, {"pads", {1, 1, 45, 1}}},
         .group = 4,
         .code = kInvalid,
         .what = "strides"},
        {.name = "ConvStrideOverLimit",
         .op_type = "Conv",
         .x = {1, 1, 6, 6},
         .w = {1, 1, 3, 3},
         .ints = {{"strides", {kOverAttribute, 1}}},
         .code = kInvalid,
         .what = "strides"},
        {.name = "ConvDilationOverLimit",
         .op_type = "Conv",
         .x = {1, 1, 6, 6},
         .w = {1, 1, 2, 2},
         .ints = {{"dilations", {1, int64_t{1} << 40}}},
         .code = kInvalid,
         .what = "dilations"},
        {.name = "ConvPadsOverLimit",
         .op_type = "Conv",
         .x = {1, 1, 6, 6},
         .w = {1, 1, 3, 3},
         .ints = {{"pads", {0, kOverAttribute, 0, 0}}},
         .code = kInvalid,
         .what = "pads"},
        // Pads within the limit that make a 6x6 input a 2^42-float plane.
        {.name = "ConvPaddedPlaneTooLarge",
         .op_type = "Conv",
         .x = {1, 1, 6, 6},
         .w = {1, 1, 3, 3},
         .ints = {{"pads",
                   {kMaxWindowAttribute, kMaxWindowAttribute,
                    kMaxWindowAttribute, kMaxWindowAttribute}},
                  {"strides", {kMaxWindowAttribute, kMaxWindowAttribute}}},
         .code = kExhausted,
         .what = "kMaxWindowBufferValues"},
        // 16 M outputs x 64 K taps: 2^40 multiply-adds per sample.
        {.name = "ConvTooManyMultiplyAdds",
         .op_type = "Conv",
         .x = {1, 1, 4096, 4096},
         .w = {1, 1, 256, 256},
         .ints = {{"pads", {128, 128, 127, 127}}},
         .code = kExhausted,
         .what = "kMaxWindowWork"},
        // The fuzzer's timeout: SAME padding admits any kernel, and the pool
        // walked all 2^31 taps of each output.
        {.name = "AveragePoolSameKernel2To31",
         .op_type = "AveragePool",
         .x = {1, 1, 5, 5},
         .ints = {{"kernel_shape", {3, int64_t{1} << 31}}, {"strides", {1, 2}}},
         .auto_pad = "SAME_UPPER",
         .code = kInvalid,
         .what = "kernel_shape"},
        {.name = "MaxPoolSameTooManyTaps",
         .op_type = "MaxPool",
         .x = {1, 1, 4096, 4096},
         .ints = {{"kernel_shape", {1024, 1024}}},
         .auto_pad = "SAME_UPPER",
         .code = kExhausted,
         .what = "kMaxWindowWork"},
        {.name = "MaxPoolStrideInt64Max",
         .op_type = "MaxPool",
         .x = {1, 1, 6, 6},
         .ints = {{"kernel_shape", {2, 2}}, {"strides", {kInt64Max, 1}}},
         .code = kInvalid,
         .what = "strides"},
    }),
    [](const ::testing::TestParamInfo<WindowCase>& info) {
      return info.param.name;
    });

// Output (0, 0) of a one-channel 3x3 convolution of `x` [1, 1, 6, 6] with
// pads 1 at strides `strides`, as the model computes it.
float ConvCorner(const std::vector<int64_t>& strides, const Tensor& x) {
  const WindowCase c = {.name = "corner",
                        .op_type = "Conv",
                        .x = {1, 1, 6, 6},
                        .w = {1, 1, 3, 3},
                        .ints = {{"strides", strides}, {"pads", {1, 1, 1, 1}}}};
  absl::StatusOr<std::unique_ptr<Model>> model = BuildModel(c).Build();
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return 0;
  std::vector<const Tensor*> params;
  for (const Tensor& p : (*model)->initial_params()) params.push_back(&p);
  ForwardTrace trace;
  absl::StatusOr<Tensor> y = (*model)->Forward(x, params, &trace);
  EXPECT_TRUE(y.ok()) << y.status();
  return y.ok() ? y->data()[0] : 0;
}

// A stride past the padded input leaves one output per dim, the same one
// stride 1 computes first; its buffers do not grow with the stride.
TEST(WindowLimitsTest, StridesBeyondTheInputGiveTheFirstOutput) {
  std::mt19937 rng(kNodeSeed);
  Tensor x({1, 1, 6, 6});
  const std::vector<float> values = UniformValues(x.size(), &rng);
  std::copy(values.begin(), values.end(), x.data());
  const float expected = ConvCorner({1, 1}, x);
  EXPECT_FLOAT_EQ(ConvCorner({1, kMaxWindowAttribute}, x), expected);
  EXPECT_FLOAT_EQ(ConvCorner({kMaxWindowAttribute, kMaxWindowAttribute}, x),
                  expected);
  EXPECT_FLOAT_EQ(ConvCorner({7, 1000}, x), expected);
}

}  // namespace
}  // namespace mixq::engine
