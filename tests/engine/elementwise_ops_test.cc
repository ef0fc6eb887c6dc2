// The element-wise, activation, softmax, LayerNormalization and reduction
// kernels of ops_elementwise.cc: backward passes against central finite
// differences (a table of cases, one per operator and broadcasting pattern),
// hand-computed forward values, opset-dependent semantics (Softmax, Clip,
// ReduceMean) and the errors for malformed nodes.
#include <cmath>
#include <memory>
#include <optional>
#include <random>
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
#include "tests/support/gradient_check.h"
#include "tests/support/kernel_testing.h"
#include "tests/support/onnx_builder.h"

namespace mixq::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::FloatNear;
using ::testing::HasSubstr;

// Gradients use GradientTolerance's defaults: a step of 1e-3 keeps the
// truncation error of the smooth kernels (exp, tanh, softmax) near 1e-7 while
// float rounding of the loss stays far below the tolerance.
// Inputs of non-smooth kernels stay this far from their kinks, so that no
// finite-difference step crosses one.
constexpr float kKinkMargin = 0.05f;
constexpr float kForwardTolerance = 1e-6f;
constexpr int64_t kDefaultOpset = 13;

using testing::FloatAttr;
using testing::FloatInput;
using testing::IntAttr;
using testing::IntInput;
using testing::IntsAttr;

// A float constant input of any shape (Clip bounds must be scalars).
ConstantInput FloatTensorInput(std::vector<float> values, Shape shape) {
  ConstantInput input;
  input.shape = std::move(shape);
  input.floats = std::move(values);
  return input;
}

using Attributes = std::vector<std::pair<std::string, Attribute>>;
using ConstantInputs = std::vector<std::optional<ConstantInput>>;

// A kernel as the importer would configure it.
struct NodeSpec {
  std::string op_type;
  Attributes attributes = {};
  ConstantInputs constants = {};
  int64_t opset = kDefaultOpset;
};

absl::StatusOr<std::unique_ptr<Kernel>> MakeKernel(const NodeSpec& spec) {
  const OpSchema* schema = FindOp(spec.op_type);
  if (schema == nullptr) return absl::NotFoundError(spec.op_type);
  OpConfig config;
  config.op_type = spec.op_type;
  config.node_name = "node";
  config.opset = spec.opset;
  for (const auto& [name, attr] : spec.attributes) {
    config.attributes[name] = attr;
  }
  config.constant_inputs = spec.constants;
  return schema->create(config);
}

// The kernel's output for `inputs` (the test fails on errors).
Tensor RunForward(const NodeSpec& spec, const std::vector<Tensor>& inputs) {
  absl::StatusOr<std::unique_ptr<Kernel>> kernel = MakeKernel(spec);
  EXPECT_TRUE(kernel.ok()) << kernel.status();
  if (!kernel.ok()) return Tensor();
  std::vector<const Shape*> shapes;
  std::vector<const Tensor*> pointers;
  for (const Tensor& t : inputs) {
    shapes.push_back(&t.shape());
    pointers.push_back(&t);
  }
  absl::StatusOr<Shape> shape = (*kernel)->OutputShape(shapes);
  EXPECT_TRUE(shape.ok()) << shape.status();
  if (!shape.ok()) return Tensor();
  Tensor out(*shape);
  (*kernel)->Forward(pointers, &out);
  return out;
}

// The status of creating the kernel and, if that succeeds, of OutputShape.
absl::Status BuildStatus(const NodeSpec& spec,
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

// ------------------------------------------------ Finite differences ----

// A data input: values uniform in [lo, hi], pushed kKinkMargin away from
// every point in `kinks`.
struct InputSpec {
  Shape shape;
  float lo = -1.0f;
  float hi = 1.0f;
  std::vector<float> kinks = {};
};

struct GradientCase {
  std::string name;
  NodeSpec node;
  std::vector<InputSpec> inputs;
};

void PrintTo(const GradientCase& c, std::ostream* os) { *os << c.name; }

Tensor RandomInput(const InputSpec& spec, std::mt19937* rng) {
  std::uniform_real_distribution<float> uniform(spec.lo, spec.hi);
  Tensor t(spec.shape);
  for (float& v : t.values()) {
    v = uniform(*rng);
    for (float kink : spec.kinks) {
      if (std::abs(v - kink) < kKinkMargin) {
        v = kink + (v < kink ? -kKinkMargin : kKinkMargin);
      }
    }
  }
  return t;
}

class ElementwiseGradientTest : public ::testing::TestWithParam<GradientCase> {
};

// L = Σ R ⊙ op(inputs) for a fixed random R (seeded), so dL/dOutput = R.
TEST_P(ElementwiseGradientTest, MatchesFiniteDifferences) {
  const GradientCase& c = GetParam();
  absl::StatusOr<std::unique_ptr<Kernel>> created = MakeKernel(c.node);
  ASSERT_TRUE(created.ok()) << created.status();
  const Kernel& kernel = **created;

  std::mt19937 rng(7);
  std::vector<Tensor> inputs;
  for (const InputSpec& spec : c.inputs) {
    inputs.push_back(RandomInput(spec, &rng));
  }
  std::vector<const Shape*> shapes;
  for (const Tensor& t : inputs) shapes.push_back(&t.shape());
  const absl::StatusOr<Shape> out_shape = kernel.OutputShape(shapes);
  ASSERT_TRUE(out_shape.ok()) << out_shape.status();
  const Tensor upstream = RandomInput({*out_shape}, &rng);
  testing::ExpectGradientsMatchFiniteDifferences(kernel, std::move(inputs),
                                                 upstream);
}

// Every broadcasting pattern for each arithmetic operator.
std::vector<GradientCase> ArithmeticCases() {
  struct Pattern {
    std::string name;
    Shape a, b;
  };
  const std::vector<Pattern> patterns = {
      {"same_shape", {2, 3}, {2, 3}},
      {"channel", {2, 3, 2, 2}, {3, 1, 1}},
      {"channel_first", {3, 1, 1}, {2, 3, 2, 2}},
      {"row", {4, 3}, {3}},
      {"both_broadcast", {2, 1, 4}, {3, 1}},
      {"scalar", {2, 3}, {}},
      {"scalar_first", {}, {2, 3}},
  };
  std::vector<GradientCase> cases;
  for (const std::string op : {"Add", "Sub", "Mul", "Div"}) {
    for (const Pattern& p : patterns) {
      InputSpec b{p.b};
      // Divisors stay away from zero.
      if (op == "Div") b = {p.b, 0.5f, 2.0f};
      cases.push_back({absl::StrCat(op, "_", p.name), {op}, {{p.a}, b}});
    }
  }
  return cases;
}

std::vector<GradientCase> OtherCases() {
  const Shape s = {2, 3, 4};
  const std::vector<float> zero = {0.0f};
  return {
      {"PRelu_channel", {"PRelu"}, {{{2, 3, 2, 2}, -1, 1, zero}, {{3, 1, 1}}}},
      {"PRelu_scalar_slope", {"PRelu"}, {{s, -1, 1, zero}, {{1}}}},
      {"Sum_three_broadcast", {"Sum"}, {{{2, 3}}, {{3}}, {{2, 1}}}},
      {"Sum_one", {"Sum"}, {{s}}},
      {"Mean_two", {"Mean"}, {{{2, 3}}, {{2, 3}}}},
      // Ranges that keep the competing values of the seeded draw more than a
      // finite-difference step apart.
      {"Max_three_broadcast",
       {"Max"},
       {{{2, 3}}, {{3}, -0.5f, 0.5f}, {{2, 1}}}},
      {"Min_two", {"Min"}, {{{2, 3}}, {{2, 3}}}},
      {"Relu", {"Relu"}, {{s, -1, 1, zero}}},
      {"LeakyRelu",
       {"LeakyRelu", {{"alpha", FloatAttr(0.2f)}}},
       {{s, -1, 1, zero}}},
      {"Sigmoid", {"Sigmoid"}, {{s, -4, 4}}},
      {"Tanh", {"Tanh"}, {{s, -2, 2}}},
      {"HardSigmoid",
       {"HardSigmoid", {{"alpha", FloatAttr(0.5f)}, {"beta", FloatAttr(0.4f)}}},
       {{s, -3, 3, {-0.8f, 1.2f}}}},
      {"HardSwish", {"HardSwish"}, {{s, -5, 5, {-3.0f, 3.0f}}}},
      {"Elu", {"Elu", {{"alpha", FloatAttr(0.7f)}}}, {{s, -2, 2, zero}}},
      {"Softplus", {"Softplus"}, {{s, -4, 4}}},
      {"Neg", {"Neg"}, {{s}}},
      {"Abs", {"Abs"}, {{s, -1, 1, zero}}},
      {"Sqrt", {"Sqrt"}, {{s, 0.5f, 2.0f}}},
      {"Exp", {"Exp"}, {{s}}},
      {"Log", {"Log"}, {{s, 0.5f, 2.0f}}},
      {"Clip_opset6_attributes",
       {"Clip", {{"min", FloatAttr(-0.5f)}, {"max", FloatAttr(0.3f)}}, {}, 6},
       {{s, -1, 1, {-0.5f, 0.3f}}}},
      {"Clip_opset13_inputs",
       {"Clip", {}, {FloatInput(-0.5f), FloatInput(0.3f)}},
       {{s, -1, 1, {-0.5f, 0.3f}}}},
      {"Clip_opset13_max_only",
       {"Clip", {}, {std::nullopt, FloatInput(0.3f)}},
       {{s, -1, 1, {0.3f}}}},
      {"Softmax_last_axis", {"Softmax"}, {{s, -2, 2}}},
      {"Softmax_axis1", {"Softmax", {{"axis", IntAttr(1)}}}, {{s, -2, 2}}},
      {"Softmax_opset11_coerced", {"Softmax", {}, {}, 11}, {{s, -2, 2}}},
      {"LogSoftmax_last_axis", {"LogSoftmax"}, {{s, -2, 2}}},
      {"LogSoftmax_axis0",
       {"LogSoftmax", {{"axis", IntAttr(0)}}},
       {{s, -2, 2}}},
      {"LogSoftmax_opset11_coerced", {"LogSoftmax", {}, {}, 11}, {{s, -2, 2}}},
      {"ReduceMean_spatial",
       {"ReduceMean", {{"axes", IntsAttr({2, 3})}}},
       {{{2, 3, 2, 3}}}},
      {"ReduceMean_no_keepdims",
       {"ReduceMean", {{"axes", IntsAttr({-1, 0})}, {"keepdims", IntAttr(0)}}},
       {{s}}},
      {"ReduceMean_all", {"ReduceMean"}, {{s}}},
      {"ReduceMean_opset18_input",
       {"ReduceMean", {{"keepdims", IntAttr(0)}}, {IntInput({1})}, 18},
       {{s}}},
      {"ReduceSum_axis1", {"ReduceSum", {}, {IntInput({1})}}, {{s}}},
      {"ReduceSumSquare",
       {"ReduceSumSquare", {{"axes", IntsAttr({0, 2})}}},
       {{s}}},
      {"ReduceMax_spatial",
       {"ReduceMax", {{"axes", IntsAttr({2, 3})}}},
       {{{2, 3, 2, 3}}}},
      {"ReduceMin_axis1", {"ReduceMin", {{"axes", IntsAttr({1})}}}, {{s}}},
      {"ReduceMax_all", {"ReduceMax", {{"keepdims", IntAttr(0)}}}, {{{2, 3}}}},
      {"LayerNorm_last_axis",
       {"LayerNormalization"},
       {{s, -2, 2}, {{4}, 0.5f, 1.5f}, {{4}}}},
      {"LayerNorm_axis1_no_bias",
       {"LayerNormalization",
        {{"axis", IntAttr(1)}, {"epsilon", FloatAttr(0.1f)}}},
       {{s, -2, 2}, {{3, 4}, 0.5f, 1.5f}}},
      {"LayerNorm_broadcast_scale",
       {"LayerNormalization", {{"axis", IntAttr(-2)}}},
       {{s, -2, 2}, {{1, 4}, 0.5f, 1.5f}, {{3, 1}}}},
      {"Reciprocal", {"Reciprocal"}, {{s, 0.5f, 2.0f}}},
      {"Pow_channel_exponent", {"Pow"}, {{{2, 3, 2}, 0.5f, 2.0f}, {{3, 1}}}},
      {"Pow_scalar_base", {"Pow"}, {{{}, 0.5f, 2.0f}, {{2, 3}}}},
      // A perturbed exponent of a negative base is NaN, so bases stay > 0.
      {"Pow_square", {"Pow"}, {{s, 0.5f, 2.0f}, {{1}, 2.0f, 2.0f}}},
  };
}

INSTANTIATE_TEST_SUITE_P(Arithmetic, ElementwiseGradientTest,
                         ::testing::ValuesIn(ArithmeticCases()),
                         [](const auto& info) { return info.param.name; });
INSTANTIATE_TEST_SUITE_P(Others, ElementwiseGradientTest,
                         ::testing::ValuesIn(OtherCases()),
                         [](const auto& info) { return info.param.name; });

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
    NodeSpec node;
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
    NodeSpec node;
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
