// ONNX import and the executor's forward pass, on models built in memory and
// the exported Fashion-MNIST fixture (the ONNX conformance data runs in
// conformance_test.cc).
#include "engine/model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "tests/support/onnx_builder.h"
#include "tests/support/tensor_compare.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::Pointers;

using ::mixq::testing::OnnxBuilder;
using ::mixq::testing::SetFloat;
using ::mixq::testing::SetInt;
using ::mixq::testing::SetInts;
using ::mixq::testing::SetTensor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr float kTolerance = 1e-5f;

std::vector<float> RandomValues(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> values(n);
  for (float& v : values) v = uniform(rng);
  return values;
}

std::unique_ptr<Model> BuildOrDie(const OnnxBuilder& builder) {
  absl::StatusOr<std::unique_ptr<Model>> model = builder.Build();
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *std::move(model) : nullptr;
}

absl::StatusOr<Tensor> RunInitial(const Model& model, const Tensor& input) {
  return model.Forward(input, Pointers(model.initial_params()), nullptr);
}

void ExpectClose(const Tensor& actual, const Tensor& expected,
                 float tolerance = kTolerance) {
  ASSERT_EQ(actual.shape(), expected.shape());
  for (int64_t i = 0; i < expected.size(); ++i) {
    const float e = expected.data()[i];
    EXPECT_NEAR(actual.data()[i], e, tolerance * std::max(1.0f, std::abs(e)))
        << "element " << i;
  }
}

void ExpectInvalid(const absl::Status& status, const std::string& substring) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(substring));
}

// ---------------------------------------------------------------- Gemm ----

TEST(GemmTest, HandComputed) {
  // Y = 2 * A * B^T + 0.5 * C.
  OnnxBuilder b;
  b.Input("a", {-1, 2}).Output("y");
  b.Initializer("w", {2, 2}, {5, 6, 7, 8});
  b.Initializer("c", {2}, {10, 20});
  onnx::NodeProto* gemm = b.Node("Gemm", {"a", "w", "c"}, {"y"});
  SetInt(gemm, "transB", 1);
  SetFloat(gemm, "alpha", 2.0f);
  SetFloat(gemm, "beta", 0.5f);
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  absl::StatusOr<Tensor> y = RunInitial(*model, Tensor({2, 2}, {1, 2, 3, 4}));
  ASSERT_TRUE(y.ok()) << y.status();
  // A * B^T = [[17, 23], [39, 53]].
  ExpectClose(*y, Tensor({2, 2}, {39, 56, 83, 116}));
}

struct GemmCase {
  bool trans_a;
  bool trans_b;
  float alpha;
  float beta;
  bool has_c;
  Shape c_shape;
};

std::string GemmCaseName(const ::testing::TestParamInfo<GemmCase>& info) {
  const GemmCase& c = info.param;
  std::string shape = "none";
  if (c.has_c) {
    shape = "c";
    for (int64_t d : c.c_shape) absl::StrAppend(&shape, "_", d);
    if (c.c_shape.empty()) shape = "scalar";
  }
  return absl::StrCat("tA", c.trans_a, "_tB", c.trans_b,
                      c.alpha == 1.0f ? "" : "_scaled", "_", shape);
}

constexpr int64_t kM = 3;
constexpr int64_t kK = 4;
constexpr int64_t kN = 2;

std::vector<GemmCase> AllGemmCases() {
  const std::vector<Shape> c_shapes = {{kN},    {1, kN}, {kM, kN},
                                       {kM, 1}, {},      {1}};
  std::vector<GemmCase> cases;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      for (float scale : {1.0f, 0.5f}) {
        cases.push_back({ta, tb, scale, 2 * scale, false, {}});
        for (const Shape& c : c_shapes) {
          cases.push_back({ta, tb, scale, 2 * scale, true, c});
        }
      }
    }
  }
  return cases;
}

class GemmAttributesTest : public ::testing::TestWithParam<GemmCase> {};

// Checks against a naive double-precision Gemm.
TEST_P(GemmAttributesTest, MatchesReference) {
  const GemmCase& c = GetParam();
  const Shape a_shape = c.trans_a ? Shape{kK, kM} : Shape{kM, kK};
  const Shape b_shape = c.trans_b ? Shape{kN, kK} : Shape{kK, kN};
  const Tensor a(a_shape, RandomValues(kM * kK, 1));
  const Tensor w(b_shape, RandomValues(kK * kN, 2));
  const Tensor bias(c.c_shape, RandomValues(NumElements(c.c_shape), 3));

  OnnxBuilder builder;
  // Fixed dims: with transA or a C of M rows, dim 0 is not a free batch.
  builder.Input("a", a_shape).Output("y");
  builder.Initializer("w", b_shape, w.ToVector());
  std::vector<std::string> inputs = {"a", "w"};
  if (c.has_c) {
    builder.Initializer("c", c.c_shape, bias.ToVector());
    inputs.push_back("c");
  }
  onnx::NodeProto* gemm = builder.Node("Gemm", inputs, {"y"});
  SetInt(gemm, "transA", c.trans_a);
  SetInt(gemm, "transB", c.trans_b);
  SetFloat(gemm, "alpha", c.alpha);
  SetFloat(gemm, "beta", c.beta);
  std::unique_ptr<Model> model = BuildOrDie(builder);
  ASSERT_NE(model, nullptr);

  Tensor expected({kM, kN});
  // C right-aligned onto [M, N]: a size-1 (or missing) dim broadcasts.
  const Shape cs = c.c_shape;
  const auto c_at = [&](int64_t i, int64_t j) {
    const int64_t rows = cs.size() == 2 ? cs[0] : 1;
    const int64_t cols = cs.empty() ? 1 : cs.back();
    return bias.data()[(rows == 1 ? 0 : i) * cols + (cols == 1 ? 0 : j)];
  };
  for (int64_t i = 0; i < kM; ++i) {
    for (int64_t j = 0; j < kN; ++j) {
      double sum = 0;
      for (int64_t k = 0; k < kK; ++k) {
        const float av =
            c.trans_a ? a.data()[k * kM + i] : a.data()[i * kK + k];
        const float bv =
            c.trans_b ? w.data()[j * kK + k] : w.data()[k * kN + j];
        sum += static_cast<double>(av) * bv;
      }
      double value = c.alpha * sum;
      if (c.has_c) value += c.beta * c_at(i, j);
      expected.data()[i * kN + j] = static_cast<float>(value);
    }
  }
  absl::StatusOr<Tensor> y = RunInitial(*model, a);
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectClose(*y, expected);
}

INSTANTIATE_TEST_SUITE_P(AllCombinations, GemmAttributesTest,
                         ::testing::ValuesIn(AllGemmCases()), GemmCaseName);

// ------------------------------------------------------- MatMul and Add ----

TEST(MatMulTest, MatMulPlusBias) {
  OnnxBuilder b;
  b.Input("x", {-1, 3}).Output("y");
  b.Initializer("w", {3, 2}, {1, 0, 0, 1, 1, 1});
  b.Initializer("b", {2}, {0.5f, -1});
  b.Node("MatMul", {"x", "w"}, {"xw"});
  b.Node("Add", {"xw", "b"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  EXPECT_THAT(model->output_shape(), ElementsAre(1, 2));
  absl::StatusOr<Tensor> y =
      RunInitial(*model, Tensor({2, 3}, {1, 2, 3, 4, 5, 6}));
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectClose(*y, Tensor({2, 2}, {4.5f, 4, 10.5f, 10}));
}

TEST(MatMulTest, LeadingDimsFoldIntoRows) {
  OnnxBuilder b;
  b.Input("x", {-1, 2, 3}).Output("y");
  const std::vector<float> w = RandomValues(3 * 4, 7);
  b.Initializer("w", {3, 4}, w);
  b.Node("MatMul", {"x", "w"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  const Tensor x({2, 2, 3}, RandomValues(12, 8));
  absl::StatusOr<Tensor> y = RunInitial(*model, x);
  ASSERT_TRUE(y.ok()) << y.status();
  Tensor expected({2, 2, 4});
  expected.AsMatrix(4, 4) = x.AsMatrix(4, 3) * ConstMatrixMap(w.data(), 3, 4);
  ExpectClose(*y, expected);
}

TEST(MatMulTest, BatchedWeights) {
  OnnxBuilder b;
  b.Input("x", {2, 3, 4}).Output("y");
  const std::vector<float> w = RandomValues(2 * 4 * 5, 9);
  b.Initializer("w", {2, 4, 5}, w);
  b.Node("MatMul", {"x", "w"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  const Tensor x({2, 3, 4}, RandomValues(24, 10));
  absl::StatusOr<Tensor> y = RunInitial(*model, x);
  ASSERT_TRUE(y.ok()) << y.status();
  Tensor expected({2, 3, 5});
  for (int i = 0; i < 2; ++i) {
    MatrixMap(expected.data() + i * 15, 3, 5) =
        ConstMatrixMap(x.data() + i * 12, 3, 4) *
        ConstMatrixMap(w.data() + i * 20, 4, 5);
  }
  ExpectClose(*y, expected);
}

TEST(AddTest, BroadcastsBothWays) {
  // [N, 2, 1] + [3] -> [N, 2, 3].
  OnnxBuilder b;
  b.Input("x", {-1, 2, 1}).Output("y");
  b.Initializer("b", {3}, {10, 20, 30});
  b.Node("Add", {"x", "b"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  absl::StatusOr<Tensor> y = RunInitial(*model, Tensor({1, 2, 1}, {1, 2}));
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectClose(*y, Tensor({1, 2, 3}, {11, 21, 31, 12, 22, 32}));
}

TEST(AddTest, IncompatibleShapesAreAnError) {
  OnnxBuilder b;
  b.Input("x", {-1, 3}).Output("y");
  b.Initializer("b", {2}, {1, 2});
  b.Node("Add", {"x", "b"}, {"y"}, "add");
  ExpectInvalid(b.Build().status(), "node 'add'");
  ExpectInvalid(b.Build().status(), "do not broadcast");
}

// ------------------------------------------------------ Shape operators ----

TEST(ShapeOpsTest, IdentityDropoutReshapeConstantAdd) {
  OnnxBuilder b;
  b.Input("x", {-1, 2, 3}).Output("y");
  b.Node("Identity", {"x"}, {"id"});
  b.Node("Dropout", {"id"}, {"drop", "mask"});
  onnx::NodeProto* shape = b.Node("Constant", {}, {"shape"});
  OnnxBuilder::FillInt(SetTensor(shape), "", {0, -1});
  b.Node("Reshape", {"drop", "shape"}, {"flat"});
  onnx::NodeProto* offsets = b.Node("Constant", {}, {"offsets"});
  OnnxBuilder::FillFloat(SetTensor(offsets), "", {6}, {1, 2, 3, 4, 5, 6});
  b.Node("Add", {"flat", "offsets"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  EXPECT_TRUE(model->params().empty());
  EXPECT_THAT(model->output_shape(), ElementsAre(1, 6));
  absl::StatusOr<Tensor> y = RunInitial(
      *model, Tensor({2, 2, 3}, {0, 0, 0, 0, 0, 0, 10, 10, 10, 10, 10, 10}));
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectClose(*y, Tensor({2, 6}, {1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16}));
}

TEST(ShapeOpsTest, ConstantSubgraphIsFolded) {
  // Reshape(Constant) and Identity of it depend on no input: folded into a
  // constant, so they never become parameters.
  OnnxBuilder b;
  b.Input("x", {-1, 4}).Output("y");
  onnx::NodeProto* c = b.Node("Constant", {}, {"c"});
  OnnxBuilder::FillFloat(SetTensor(c), "", {2, 2}, {1, 2, 3, 4});
  b.IntInitializer("shape", {4});
  b.Node("Reshape", {"c", "shape"}, {"c_flat"});
  b.Node("Identity", {"c_flat"}, {"c_id"});
  b.Node("Add", {"x", "c_id"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  EXPECT_TRUE(model->params().empty());
  absl::StatusOr<Tensor> y = RunInitial(*model, Tensor({1, 4}, {1, 1, 1, 1}));
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectClose(*y, Tensor({1, 4}, {2, 3, 4, 5}));
}

struct FlattenCase {
  int64_t axis;
  Shape expected;
};

class FlattenTest : public ::testing::TestWithParam<FlattenCase> {};

TEST_P(FlattenTest, Shapes) {
  OnnxBuilder b;
  b.Input("x", {-1, 3, 4}).Output("y");
  SetInt(b.Node("Flatten", {"x"}, {"y"}), "axis", GetParam().axis);
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  const Tensor x({2, 3, 4}, RandomValues(24, 4));
  absl::StatusOr<Tensor> y = RunInitial(*model, x);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->shape(), GetParam().expected);
  EXPECT_EQ(y->values(), x.values());
}

INSTANTIATE_TEST_SUITE_P(
    Axes, FlattenTest,
    ::testing::Values(FlattenCase{0, {1, 24}}, FlattenCase{1, {2, 12}},
                      FlattenCase{2, {6, 4}}, FlattenCase{3, {24, 1}},
                      FlattenCase{-1, {6, 4}}, FlattenCase{-2, {2, 12}}));

TEST(FlattenTest, DefaultAxisIsOne) {
  OnnxBuilder b;
  b.Input("x", {-1, 1, 28, 28}).Output("y");
  b.Node("Flatten", {"x"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  EXPECT_THAT(model->output_shape(), ElementsAre(1, 784));
}

TEST(FlattenTest, AxisOutOfRange) {
  OnnxBuilder b;
  b.Input("x", {-1, 3}).Output("y");
  SetInt(b.Node("Flatten", {"x"}, {"y"}, "flat"), "axis", 3);
  ExpectInvalid(b.Build().status(), "axis 3 is out of range");
}

struct ReshapeCase {
  std::vector<int64_t> target;
  Shape expected;  // for a [2, 3, 4] input; empty when an error
};

class ReshapeTest : public ::testing::TestWithParam<ReshapeCase> {};

TEST_P(ReshapeTest, ZeroCopiesMinusOneInfers) {
  const ReshapeCase& c = GetParam();
  OnnxBuilder b;
  b.Input("x", {2, 3, 4}).Output("y");
  b.IntInitializer("shape", c.target);
  b.Node("Reshape", {"x", "shape"}, {"y"}, "reshape");
  absl::StatusOr<std::unique_ptr<Model>> model = b.Build();
  if (c.expected.empty()) {
    ExpectInvalid(model.status(), "node 'reshape'");
    return;
  }
  ASSERT_TRUE(model.ok()) << model.status();
  const Tensor x({2, 3, 4}, RandomValues(24, 5));
  absl::StatusOr<Tensor> y = RunInitial(**model, x);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->shape(), c.expected);
  EXPECT_EQ(y->values(), x.values());
}

INSTANTIATE_TEST_SUITE_P(
    Targets, ReshapeTest,
    ::testing::Values(
        ReshapeCase{{0, -1}, {2, 12}}, ReshapeCase{{-1, 4}, {6, 4}},
        ReshapeCase{{0, 0, -1}, {2, 3, 4}}, ReshapeCase{{2, -1, 2}, {2, 6, 2}},
        ReshapeCase{{24}, {24}}, ReshapeCase{{5, -1}, {}},  // 24 % 5 != 0
        ReshapeCase{{-1, -1}, {}},                          // two -1
        ReshapeCase{{0, 0, 0, 0}, {}},  // 0 past the input rank
        ReshapeCase{{-2, 12}, {}}, ReshapeCase{{7, 7}, {}}));

TEST(ReshapeTest, BatchIsInferredPerCall) {
  OnnxBuilder b;
  b.Input("x", {-1, 2, 3}).Output("y");
  b.IntInitializer("shape", {-1, 6});
  b.Node("Reshape", {"x", "shape"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  for (int64_t batch : {1, 5}) {
    absl::StatusOr<Tensor> y = RunInitial(*model, Tensor({batch, 2, 3}));
    ASSERT_TRUE(y.ok()) << y.status();
    EXPECT_THAT(y->shape(), ElementsAre(batch, 6));
  }
}

TEST(ReshapeTest, ShapeMustBeAnInt64Constant) {
  OnnxBuilder b;
  b.Input("x", {-1, 4}).Output("y");
  b.Initializer("shape", {2}, {0, -1});
  b.Node("Reshape", {"x", "shape"}, {"y"}, "reshape");
  ExpectInvalid(b.Build().status(), "must be a constant int64 tensor");
}

// allowzero=1 makes a 0 in the shape a literal 0 instead of a copy.
TEST(ReshapeTest, AllowZeroKeepsALiteralZero) {
  for (int64_t allow_zero : {0, 1, 2}) {
    OnnxBuilder b(14);
    b.Input("x", {-1, 4}).Output("y");
    b.IntInitializer("shape", {0, 4});
    SetInt(b.Node("Reshape", {"x", "shape"}, {"y"}, "reshape"), "allowzero",
           allow_zero);
    const absl::Status status = b.Build().status();
    if (allow_zero == 0) {
      EXPECT_TRUE(status.ok()) << status;
    } else if (allow_zero == 1) {
      ExpectInvalid(status, "the element counts differ");
    } else {
      ExpectInvalid(status, "allowzero=2");
    }
  }
}

// ------------------------------------------------- Parameters and layers ----

// fc3.weight comes first among the initializers but is the last layer;
// "unused" feeds nothing and the int64 "shape" is not a parameter.
OnnxBuilder MixedLayersModel() {
  OnnxBuilder b;
  b.Input("input", {-1, 4}).Output("logits");
  b.Initializer("fc3.weight", {2, 5}, RandomValues(10, 11));
  b.Initializer("unused", {2}, {1, 2});
  b.Initializer("fc1.weight", {3, 4}, RandomValues(12, 12));
  b.Initializer("fc1.bias", {3}, RandomValues(3, 13), /*raw=*/true);
  b.Initializer("fc2.weight", {3, 2}, RandomValues(6, 14), /*raw=*/true);
  b.Initializer("fc2.bias", {2}, RandomValues(2, 15));
  b.IntInitializer("shape", {0, -1});
  SetInt(b.Node("Gemm", {"input", "fc1.weight", "fc1.bias"}, {"h1"}, "fc1"),
         "transB", 1);
  b.Node("Relu", {"h1"}, {"r1"});
  b.Node("MatMul", {"r1", "fc2.weight"}, {"m2"}, "fc2");
  b.Node("Add", {"m2", "fc2.bias"}, {"h2"});
  b.Node("Reshape", {"h2", "shape"}, {"h2r"});
  b.Node("Identity", {"fc3.weight"}, {"w3"});
  b.Node("Gemm", {"h2r", "w3"}, {"logits"}, "fc3");
  return b;
}

TEST(ModelTest, ParamsInInitializerOrderLayersInNodeOrder) {
  std::unique_ptr<Model> model = BuildOrDie(MixedLayersModel());
  ASSERT_NE(model, nullptr);
  std::vector<std::string> names;
  for (const ParamInfo& p : model->params()) names.push_back(p.name);
  EXPECT_THAT(names, ElementsAre("fc3.weight", "fc1.weight", "fc1.bias",
                                 "fc2.weight", "fc2.bias"));
  ASSERT_EQ(model->initial_params().size(), 5u);
  EXPECT_THAT(model->initial_params()[1].shape(), ElementsAre(3, 4));
  EXPECT_EQ(model->initial_params()[3].ToVector(), RandomValues(6, 14));

  const auto& layers = model->quantizable_layers();
  ASSERT_EQ(layers.size(), 3u);
  EXPECT_EQ(layers[0].name, "fc1.weight");
  EXPECT_EQ(layers[0].node_name, "fc1");
  EXPECT_EQ(layers[0].op_type, "Gemm");
  EXPECT_EQ(layers[0].weight_param, 1);
  EXPECT_EQ(layers[0].channel_axis, 0);  // transB=1: [out, in]
  EXPECT_EQ(layers[0].num_weights, 12);
  EXPECT_EQ(layers[1].name, "fc2.weight");
  EXPECT_EQ(layers[1].op_type, "MatMul");
  EXPECT_EQ(layers[1].weight_param, 3);
  EXPECT_EQ(layers[1].channel_axis, 1);  // [in, out]
  EXPECT_EQ(layers[1].num_weights, 6);
  EXPECT_EQ(layers[2].name, "fc3.weight");  // through the Identity
  EXPECT_EQ(layers[2].weight_param, 0);
  EXPECT_EQ(layers[2].channel_axis, 1);  // transB=0: [in, out]
  EXPECT_EQ(layers[2].num_weights, 10);

  EXPECT_EQ(model->input_name(), "input");
  EXPECT_THAT(model->input_shape(), ElementsAre(-1, 4));
  EXPECT_EQ(model->output_name(), "logits");
  EXPECT_THAT(model->output_shape(), ElementsAre(1, 5));
}

TEST(ModelTest, ForwardUsesTheCallersParams) {
  std::unique_ptr<Model> model = BuildOrDie(MixedLayersModel());
  ASSERT_NE(model, nullptr);
  std::vector<Tensor> params = model->initial_params();
  // Zero weights leave the biases; the last layer has none.
  for (const QuantizableLayer& layer : model->quantizable_layers()) {
    params[layer.weight_param].SetZero();
  }
  const Tensor x({2, 4}, RandomValues(8, 16));
  absl::StatusOr<Tensor> y = model->Forward(x, Pointers(params), nullptr);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->flat().abs().maxCoeff(), 0.0f);
  absl::StatusOr<Tensor> original = RunInitial(*model, x);
  ASSERT_TRUE(original.ok());
  EXPECT_GT(original->flat().abs().maxCoeff(), 0.0f);
}

TEST(ModelTest, AnyBatchSizeGivesTheSameRows) {
  std::unique_ptr<Model> model = BuildOrDie(MixedLayersModel());
  ASSERT_NE(model, nullptr);
  const Tensor x({7, 4}, RandomValues(28, 17));
  ForwardTrace trace;
  absl::StatusOr<Tensor> all =
      model->Forward(x, Pointers(model->initial_params()), &trace);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(all->shape(), ElementsAre(7, 5));
  for (int64_t i = 0; i < 7; ++i) {
    // The same trace is reused with another batch size.
    absl::StatusOr<Tensor> row = model->Forward(
        x.Slice(i, i + 1), Pointers(model->initial_params()), &trace);
    ASSERT_TRUE(row.ok()) << row.status();
    ExpectClose(*row, all->Slice(i, i + 1));
  }
}

TEST(ModelTest, ConcurrentForwardBackward) {
  std::unique_ptr<Model> model = BuildOrDie(MixedLayersModel());
  ASSERT_NE(model, nullptr);
  const std::vector<const Tensor*> params = Pointers(model->initial_params());
  const Tensor x({16, 4}, RandomValues(64, 18));
  const Tensor grad_y({16, 5}, RandomValues(80, 19));
  ForwardTrace trace;
  std::vector<Tensor> expected;
  ASSERT_TRUE(model->Forward(x, params, &trace).ok());
  ASSERT_TRUE(model->Backward(trace, params, grad_y, &expected).ok());

  constexpr int kThreads = 4;
  constexpr int kIterations = 50;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ForwardTrace own;
      std::vector<Tensor> grads;
      for (int i = 0; i < kIterations; ++i) {
        if (!model->Forward(x, params, &own).ok() ||
            !model->Backward(own, params, grad_y, &grads).ok()) {
          ++mismatches[t];
          continue;
        }
        for (size_t p = 0; p < grads.size(); ++p) {
          if (grads[p].values() != expected[p].values()) ++mismatches[t];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(mismatches, ElementsAre(0, 0, 0, 0));
}

// ----------------------------------------------------------------- Errors ----

TEST(ImportErrorTest, GarbageIsNotAnOnnxModel) {
  ExpectInvalid(Model::FromOnnxBytes("this is not an onnx model").status(),
                "not an ONNX model");
  ExpectInvalid(Model::FromOnnxBytes("").status(), "not an ONNX model");
  ExpectInvalid(
      Model::FromOnnxBytes(std::string("\x0a\xff\xff\xff", 4)).status(),
      "not an ONNX model");
}

TEST(ImportErrorTest, MissingFileNamesThePath) {
  const absl::Status status =
      Model::FromOnnxFile("/nonexistent/model.onnx").status();
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("/nonexistent/model.onnx"));
}

TEST(ImportErrorTest, UnsupportedOperatorIsNamed) {
  OnnxBuilder b;
  b.Input("x", {-1, 4}).Output("y");
  b.Node("Relu", {"x"}, {"r"});
  b.Node("Hardmax", {"r"}, {"y"}, "hardmax1");
  ExpectInvalid(b.Build().status(),
                "unsupported operator 'Hardmax' (node 'hardmax1')");
}

TEST(ImportErrorTest, UnsupportedDomain) {
  OnnxBuilder b;
  b.Input("x", {-1, 4}).Output("y");
  b.Node("Relu", {"x"}, {"y"}, "r")->set_domain("com.example");
  ExpectInvalid(b.Build().status(),
                "unsupported operator 'com.example.Relu' (node 'r')");
}

TEST(ImportErrorTest, CycleIsDetected) {
  OnnxBuilder b;
  b.Input("x", {-1, 4}).Output("b");
  b.Node("Add", {"x", "c"}, {"b"}, "add");
  b.Node("Relu", {"b"}, {"c"}, "relu");
  ExpectInvalid(b.Build().status(), "cycle");
}

TEST(ImportErrorTest, SelfLoopIsACycle) {
  OnnxBuilder b;
  b.Input("x", {-1, 4}).Output("y");
  b.Node("Add", {"x", "y"}, {"y"}, "loop");
  ExpectInvalid(b.Build().status(), "cycle (through node 'loop')");
}

TEST(ImportErrorTest, UnsortedGraphIsSorted) {
  OnnxBuilder b;
  b.Input("x", {-1, 2}).Output("y");
  b.Node("Relu", {"r"}, {"y"});
  b.Node("Identity", {"x"}, {"r"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  absl::StatusOr<Tensor> y = RunInitial(*model, Tensor({1, 2}, {-1, 2}));
  ASSERT_TRUE(y.ok()) << y.status();
  ExpectClose(*y, Tensor({1, 2}, {0, 2}));
}

TEST(ImportErrorTest, MissingInput) {
  OnnxBuilder b;
  b.Input("x", {-1, 4}).Output("y");
  b.Node("Add", {"x", "nope"}, {"y"}, "add");
  ExpectInvalid(b.Build().status(), "input 'nope' of node 'add'");
}

TEST(ImportErrorTest, MissingOutput) {
  OnnxBuilder b;
  b.Input("x", {-1, 4}).Output("nowhere");
  b.Node("Relu", {"x"}, {"y"});
  ExpectInvalid(b.Build().status(), "graph output 'nowhere'");
}

TEST(ImportErrorTest, WrongInputCount) {
  OnnxBuilder b;
  b.Input("x", {-1, 4}).Output("y");
  b.Node("Relu", {"x", "x"}, {"y"}, "relu");
  ExpectInvalid(b.Build().status(), "node 'relu' (Relu) has 2 inputs");
}

// Several graph inputs run on one packed tensor: each sample's inputs
// flattened and concatenated in graph order.
TEST(ModelTest, SeveralInputsArePackedInGraphOrder) {
  OnnxBuilder b;
  b.Input("x", {-1, 2}).Input("z", {-1, 1, 2}).Output("y");
  b.Node("Reshape", {"z", "shape"}, {"z2"});
  b.IntInitializer("shape", {-1, 2});
  b.Node("Sub", {"x", "z2"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  ASSERT_EQ(model->inputs().size(), 2u);
  EXPECT_EQ(model->inputs()[1].name, "z");
  EXPECT_EQ(model->inputs()[1].shape, (Shape{-1, 1, 2}));
  EXPECT_EQ(model->input_shape(), (Shape{-1, 4}));
  EXPECT_FALSE(model->has_integer_inputs());
  // Sample 0: x = (1, 2), z = (10, 20); sample 1: x = (3, 4), z = (5, 6).
  const Tensor packed({2, 4}, {1, 2, 10, 20, 3, 4, 5, 6});
  ForwardTrace trace;
  absl::StatusOr<Tensor> y =
      model->Forward(packed, Pointers(model->initial_params()), &trace);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(y->values(), ::testing::ElementsAre(-9, -18, -2, -2));
  absl::StatusOr<Tensor> again =
      model->ForwardFrom(0, Pointers(model->initial_params()), &trace);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->values(), y->values());
  ExpectInvalid(RunInitial(*model, Tensor({2, 3})).status(), "expects [-1, 4]");
}

TEST(ImportErrorTest, NoInput) {
  OnnxBuilder none;
  none.Output("y");
  onnx::NodeProto* c = none.Node("Constant", {}, {"y"});
  OnnxBuilder::FillFloat(SetTensor(c), "", {1}, {1});
  ExpectInvalid(none.Build().status(), "no input that is not an initializer");
}

TEST(ImportErrorTest, InitializersListedAsInputsAreNotInputs) {
  OnnxBuilder b;
  b.Input("x", {-1, 2}).Input("w", {2, 2}).Output("y");
  b.Initializer("w", {2, 2}, {1, 0, 0, 1});
  b.Node("MatMul", {"x", "w"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->input_name(), "x");
  EXPECT_EQ(model->params().size(), 1u);
}

TEST(ImportErrorTest, NonFloatInput) {
  OnnxBuilder b;
  b.Input("x", {-1, 4}, onnx::TensorProto::BOOL).Output("y");
  b.Node("Relu", {"x"}, {"y"});
  ExpectInvalid(b.Build().status(), "graph input 'x' has element type 9");
}

TEST(ImportErrorTest, SymbolicNonBatchDim) {
  OnnxBuilder b;
  b.Input("x", {-1, -1}).Output("y");
  b.Node("Relu", {"x"}, {"y"});
  ExpectInvalid(b.Build().status(), "symbolic or invalid dim 1");
}

TEST(ImportErrorTest, Int64DataInput) {
  OnnxBuilder b;
  b.Input("x", {-1, 2}).Output("y");
  b.IntInitializer("k", {1, 2});
  b.Node("Add", {"x", "k"}, {"y"}, "add");
  ExpectInvalid(b.Build().status(),
                "input 'k' of node 'add' (Add) is an int64");
}

TEST(ImportErrorTest, UnsupportedInitializerTypeOnlyWhenUsed) {
  OnnxBuilder b;
  b.Input("x", {-1, 2}).Output("y");
  onnx::TensorProto* t = b.graph().add_initializer();
  t->set_name("d");
  t->set_data_type(onnx::TensorProto::FLOAT16);
  t->add_dims(2);
  t->add_int32_data(1);
  t->add_int32_data(2);
  b.Node("Relu", {"x"}, {"y"});
  ASSERT_NE(BuildOrDie(b), nullptr);
  b.graph().mutable_node(0)->set_op_type("Add");
  b.graph().mutable_node(0)->add_input("d");
  ExpectInvalid(b.Build().status(), "initializer 'd' has data type 10");
}

TEST(ImportErrorTest, MalformedInitializers) {
  const auto build_with = [](const std::function<void(onnx::TensorProto*)>& f) {
    OnnxBuilder b;
    b.Input("x", {-1, 2}).Output("y");
    b.Initializer("w", {2, 2}, {1, 2, 3, 4});
    f(b.graph().mutable_initializer(0));
    b.Node("MatMul", {"x", "w"}, {"y"});
    return b.Build().status();
  };
  ExpectInvalid(build_with([](onnx::TensorProto* t) { t->add_float_data(5); }),
                "initializer 'w' of shape [2, 2] needs 4 values, has 5");
  ExpectInvalid(build_with([](onnx::TensorProto* t) {
                  t->clear_float_data();
                  t->set_raw_data(std::string(12, '\0'));
                }),
                "needs 4 values, has 3");
  ExpectInvalid(build_with([](onnx::TensorProto* t) { t->set_dims(0, -2); }),
                "negative dimension");
  ExpectInvalid(build_with([](onnx::TensorProto* t) {
                  t->set_dims(0, int64_t{1} << 62);
                }),
                "too large");
  ExpectInvalid(build_with([](onnx::TensorProto* t) {
                  t->set_data_location(onnx::TensorProto::EXTERNAL);
                  auto* entry = t->add_external_data();
                  entry->set_key("location");
                  entry->set_value("../../etc/passwd");
                }),
                "external data");
}

TEST(ImportErrorTest, WrongAttributeTypeOrValue) {
  OnnxBuilder b;
  b.Input("x", {-1, 2}).Output("y");
  b.Initializer("w", {2, 2}, {1, 2, 3, 4});
  onnx::NodeProto* gemm = b.Node("Gemm", {"x", "w"}, {"y"}, "g");
  SetFloat(gemm, "transA", 1.0f);
  ExpectInvalid(b.Build().status(),
                "attribute 'transA' of node 'g' must be an INT");
  gemm->clear_attribute();
  SetInt(gemm, "transB", 2);
  ExpectInvalid(b.Build().status(),
                "unsupported attribute value transB=2 (node 'g')");
  gemm->clear_attribute();
  SetInt(gemm, "alpha", 2);
  ExpectInvalid(b.Build().status(),
                "attribute 'alpha' of node 'g' must be a FLOAT");
}

TEST(ImportErrorTest, GemmShapeMismatchNamesTheNode) {
  OnnxBuilder b;
  b.Input("x", {-1, 3}).Output("y");
  b.Initializer("w", {2, 2}, {1, 2, 3, 4});
  b.Node("Gemm", {"x", "w"}, {"y"}, "fc");
  ExpectInvalid(b.Build().status(), "node 'fc': Gemm: inner dimensions differ");
}

TEST(ImportErrorTest, DropoutMaskCannotBeUsed) {
  OnnxBuilder b;
  b.Input("x", {-1, 2}).Output("mask");
  b.Node("Dropout", {"x"}, {"y", "mask"}, "drop");
  ExpectInvalid(b.Build().status(),
                "output 'mask' of node 'drop' (Dropout) is not supported");
}

TEST(ImportErrorTest, OldOpset) {
  OnnxBuilder b(5);
  b.Input("x", {-1, 2}).Output("y");
  b.Node("Relu", {"x"}, {"y"});
  ExpectInvalid(b.Build().status(), "opset version 5");
}

// Opset 6 loads, except for the legacy attributes that would change results.
TEST(ImportErrorTest, Opset6LegacyAttributes) {
  {
    OnnxBuilder b(6);
    b.Input("x", {-1, 2}).Output("y");
    b.Node("Relu", {"x"}, {"y"});
    EXPECT_TRUE(b.Build().ok());
  }
  {
    OnnxBuilder b(6);
    b.Input("x", {-1, 2}).Output("y");
    b.Initializer("b", {2}, {1.0f, 2.0f});
    onnx::NodeProto* add = b.Node("Add", {"x", "b"}, {"y"}, "add");
    SetInt(add, "broadcast", 1);
    SetInt(add, "axis", 1);
    ExpectInvalid(b.Build().status(), "node 'add' (Add): legacy broadcasting");
  }
  {
    OnnxBuilder b(6);
    b.Input("x", {-1, 2}).Output("y");
    onnx::NodeProto* drop = b.Node("Dropout", {"x"}, {"y"}, "drop");
    SetInt(drop, "is_test", 0);
    ExpectInvalid(b.Build().status(), "training mode (is_test=0");
  }
}

TEST(ImportErrorTest, DuplicateValueName) {
  OnnxBuilder b;
  b.Input("x", {-1, 2}).Output("y");
  b.Node("Relu", {"x"}, {"y"});
  b.Node("Identity", {"x"}, {"y"});
  ExpectInvalid(b.Build().status(), "value 'y' is defined more than once");
}

TEST(ForwardErrorTest, WrongParamsOrInput) {
  std::unique_ptr<Model> model = BuildOrDie(MixedLayersModel());
  ASSERT_NE(model, nullptr);
  std::vector<Tensor> params = model->initial_params();
  const Tensor x({2, 4});

  params[1] = Tensor({4, 3});
  ExpectInvalid(model->Forward(x, Pointers(params), nullptr).status(),
                "parameter 'fc1.weight' has shape [4, 3]");
  params.pop_back();
  ExpectInvalid(model->Forward(x, Pointers(params), nullptr).status(),
                "expected 5 parameters, got 4");
  std::vector<const Tensor*> with_null = Pointers(model->initial_params());
  with_null[2] = nullptr;
  ExpectInvalid(model->Forward(x, with_null, nullptr).status(),
                "parameter 'fc1.bias' is null");

  ExpectInvalid(RunInitial(*model, Tensor({2, 5})).status(),
                "input has shape [2, 5]");
  ExpectInvalid(RunInitial(*model, Tensor({8})).status(),
                "input has shape [8]");
  ExpectInvalid(RunInitial(*model, Tensor({0, 4})).status(), "input has shape");
}

TEST(BackwardErrorTest, TraceAndGradMustMatch) {
  std::unique_ptr<Model> model = BuildOrDie(MixedLayersModel());
  ASSERT_NE(model, nullptr);
  const std::vector<const Tensor*> params = Pointers(model->initial_params());
  std::vector<Tensor> grads;
  ExpectInvalid(model->Backward(ForwardTrace(), params, Tensor({2, 5}), &grads),
                "trace");
  ForwardTrace trace;
  ASSERT_TRUE(model->Forward(Tensor({2, 4}), params, &trace).ok());
  ExpectInvalid(model->Backward(trace, params, Tensor({3, 5}), &grads),
                "grad_output has shape [3, 5]");
  EXPECT_TRUE(model->Backward(trace, params, Tensor({2, 5}), &grads).ok());
  EXPECT_EQ(grads.size(), 5u);
}

// ------------------------------------------------------- Exported models ----

TEST(ExportedFixtureTest, FashionMnistMlpLayers) {
  const std::string path = MIXQ_SOURCE_DIR "/tests/fixtures/mlp_fmnist.onnx";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is absent";
  absl::StatusOr<std::unique_ptr<Model>> model = Model::FromOnnxFile(path);
  ASSERT_TRUE(model.ok()) << model.status();
  const Model& m = **model;
  const auto& layers = m.quantizable_layers();
  ASSERT_EQ(layers.size(), 3u);
  const std::vector<std::pair<std::string, Shape>> expected = {
      {"fc1.weight", {128, 784}},
      {"fc2.weight", {64, 128}},
      {"fc3.weight", {10, 64}}};
  for (size_t i = 0; i < layers.size(); ++i) {
    EXPECT_EQ(layers[i].name, expected[i].first);
    EXPECT_EQ(layers[i].op_type, "Gemm");
    EXPECT_EQ(layers[i].channel_axis, 0);
    EXPECT_EQ(m.params()[layers[i].weight_param].shape, expected[i].second);
    EXPECT_EQ(layers[i].num_weights, NumElements(expected[i].second));
  }
  EXPECT_EQ(m.params().size(), 6u);
  EXPECT_THAT(m.input_shape(), ElementsAre(-1, 1, 28, 28));
  EXPECT_THAT(m.output_shape(), ElementsAre(1, 10));
  absl::StatusOr<Tensor> logits = RunInitial(m, Tensor({3, 1, 28, 28}));
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_THAT(logits->shape(), ElementsAre(3, 10));
}

// A few bytes of model must not make the engine allocate gigabytes: a node
// output above 2^28 values per sample is refused at import.
TEST(ModelImportTest, RefusesNodeOutputsOverTheValuesPerSampleLimit) {
  for (int64_t batch : {int64_t{-1}, int64_t{4}}) {
    SCOPED_TRACE(batch);
    OnnxBuilder builder;
    builder.Input("x", {batch, 8})
        .Output("y")
        .IntInitializer("pads", {0, 0, 0, (int64_t{1} << 28)});
    builder.Node("Pad", {"x", "pads"}, {"y"}, "huge_pad");
    auto model = builder.Build();
    ASSERT_FALSE(model.ok());
    EXPECT_EQ(model.status().code(), absl::StatusCode::kResourceExhausted)
        << model.status();
    EXPECT_THAT(std::string(model.status().message()),
                ::testing::HasSubstr("huge_pad"));
  }
  // Just under the limit per sample imports (and is not run here).
  OnnxBuilder builder;
  builder.Input("x", {-1, 8})
      .Output("y")
      .IntInitializer("pads", {0, 0, 0, (int64_t{1} << 28) - 8});
  builder.Node("Pad", {"x", "pads"}, {"y"}, "big_pad");
  EXPECT_TRUE(builder.Build().ok());
}

// The graph input too: Slice and Gather build index maps as long as their
// input's dims while inferring shapes at import (the fuzzer's OOMs: a Slice
// of an input [1, 2^31] took 16 GB).
TEST(ModelImportTest, RefusesAGraphInputOverTheValuesPerSampleLimit) {
  OnnxBuilder builder(/*opset=*/9);  // Slice with attributes
  builder.Input("x", {1, int64_t{1} << 31}).Output("y");
  onnx::NodeProto* slice = builder.Node("Slice", {"x"}, {"y"}, "slice");
  SetInts(slice, "starts", {2});
  SetInts(slice, "ends", {std::numeric_limits<int64_t>::max()});
  SetInts(slice, "axes", {0});
  auto model = builder.Build();
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kResourceExhausted)
      << model.status();
  EXPECT_THAT(std::string(model.status().message()),
              ::testing::HasSubstr("graph input 'x'"));
}

// Nor a chain of nodes each under that limit: Forward keeps every output,
// so eight Relus of a 2^27-value Pad would cost 4.5 GB per sample. The
// node outputs together hold at most 2^28 values per sample.
TEST(ModelImportTest, RefusesNodeOutputsOverTheGraphValuesLimit) {
  constexpr int64_t kPadded = int64_t{1} << 27;
  OnnxBuilder builder;
  builder.Input("x", {-1, 8})
      .Output("r8")
      .IntInitializer("pads", {0, 0, 0, kPadded - 8});
  builder.Node("Pad", {"x", "pads"}, {"r0"}, "pad");
  for (int i = 1; i <= 8; ++i) {
    builder.Node("Relu", {absl::StrCat("r", i - 1)}, {absl::StrCat("r", i)},
                 absl::StrCat("relu", i));
  }
  auto model = builder.Build();
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kResourceExhausted)
      << model.status();
  // pad and relu1 hold 2^28 values; relu2 passes the limit.
  EXPECT_THAT(std::string(model.status().message()),
              ::testing::HasSubstr("node 'relu2' (Relu)"));
}

// Constants folded at import: a chain of Adds over a 2^22-value constant
// (the largest one folded) would cost 16 MB per node at import; together
// they hold at most 2^28 values.
TEST(ModelImportTest, RefusesFoldedConstantsOverTheLimit) {
  constexpr int64_t kFolded = int64_t{1} << 22;
  constexpr int kAdds = 64;  // with the fill, 65 x 2^22 > 2^28
  OnnxBuilder builder;
  builder.Input("x", {-1, 1}).Output("y").IntInitializer("shape", {kFolded});
  onnx::NodeProto* fill =
      builder.Node("ConstantOfShape", {"shape"}, {"c0"}, "fill");
  OnnxBuilder::FillFloat(SetTensor(fill), "", {1}, {1.0f});
  for (int i = 1; i <= kAdds; ++i) {
    builder.Node("Add", {absl::StrCat("c", i - 1), "c0"},
                 {absl::StrCat("c", i)}, absl::StrCat("add", i));
  }
  builder.Node("Add", {"x", "x"}, {"y"}, "out");
  auto model = builder.Build();
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kResourceExhausted)
      << model.status();
  EXPECT_THAT(std::string(model.status().message()),
              ::testing::HasSubstr("constants folded"));
}

}  // namespace
}  // namespace mixq::engine
