// Every operator's backward pass against central finite differences, first
// kernel by kernel, then through a small MLP with the softmax cross-entropy
// loss.
#include <cmath>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/loss.h"
#include "engine/model.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "tests/support/gradient_check.h"
#include "tests/support/kernel_testing.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::EvaluateAround;
using ::mixq::testing::ExpectGradientsMatchFiniteDifferences;
using ::mixq::testing::FloatAttr;
using ::mixq::testing::FloatInput;
using ::mixq::testing::FloatsInput;
using ::mixq::testing::GradientNear;
using ::mixq::testing::GradientTolerance;
using ::mixq::testing::IntAttr;
using ::mixq::testing::IntInput;
using ::mixq::testing::IntsAttr;
using ::mixq::testing::StringAttr;
using ::mixq::testing::UniformValues;

// The kernels are linear in each input (ReLU away from its kink), so a large
// step costs no truncation error and keeps float rounding small.
constexpr GradientTolerance kKernelTolerance = {
    .eps = 1e-2f, .abs = 1e-3, .rel = 1e-2};

struct KernelCase {
  std::string name;
  std::string op_type;
  std::vector<Shape> inputs;
  std::vector<std::pair<std::string, Attribute>> attributes = {};
  std::optional<std::vector<int64_t>> shape_input = std::nullopt;  // Reshape
  bool away_from_zero = false;  // keeps ReLU inputs off the kink
  // Constant inputs after shape_input (Slice's ends, Pad's value, ...);
  // nullopt for an omitted one (Resize's roi).
  std::vector<std::optional<ConstantInput>> constant_inputs = {};
  int64_t opset = 13;
};

void PrintTo(const KernelCase& c, std::ostream* os) { *os << c.name; }

class KernelGradientTest : public ::testing::TestWithParam<KernelCase> {};

// L = Σ R ⊙ op(inputs) for a fixed random R, so dL/dOutput = R.
TEST_P(KernelGradientTest, MatchesFiniteDifferences) {
  const KernelCase& c = GetParam();
  const OpSchema* schema = FindOp(c.op_type);
  ASSERT_NE(schema, nullptr);
  OpConfig config;
  config.op_type = c.op_type;
  config.node_name = c.name;
  config.opset = c.opset;
  for (const auto& [name, attr] : c.attributes) config.attributes[name] = attr;
  if (c.shape_input) config.constant_inputs.push_back(IntInput(*c.shape_input));
  for (const std::optional<ConstantInput>& input : c.constant_inputs) {
    config.constant_inputs.push_back(input);
  }
  absl::StatusOr<std::unique_ptr<Kernel>> created = schema->create(config);
  ASSERT_TRUE(created.ok()) << created.status();
  const Kernel& kernel = **created;

  std::mt19937 rng(42);
  std::vector<Tensor> inputs;
  for (const Shape& shape : c.inputs) {
    inputs.emplace_back(shape, UniformValues(NumElements(shape), &rng));
    if (c.away_from_zero) {
      for (float& v : inputs.back().values()) v += v < 0 ? -0.1f : 0.1f;
    }
  }
  std::vector<const Shape*> shapes;
  for (const Tensor& t : inputs) shapes.push_back(&t.shape());
  absl::StatusOr<Shape> out_shape = kernel.OutputShape(shapes);
  ASSERT_TRUE(out_shape.ok()) << out_shape.status();
  const Tensor upstream(*out_shape,
                        UniformValues(NumElements(*out_shape), &rng));
  ExpectGradientsMatchFiniteDifferences(kernel, std::move(inputs), upstream,
                                        kKernelTolerance);
}

std::vector<KernelCase> GemmCases() {
  constexpr int64_t m = 3, k = 4, n = 2;
  const std::vector<std::pair<std::string, std::optional<Shape>>> biases = {
      {"none", std::nullopt},  {"vector", Shape{n}},    {"row", Shape{1, n}},
      {"matrix", Shape{m, n}}, {"column", Shape{m, 1}}, {"scalar", Shape{}}};
  std::vector<KernelCase> cases;
  for (int ta : {0, 1}) {
    for (int tb : {0, 1}) {
      for (const auto& [bias_name, bias] : biases) {
        KernelCase c;
        c.name = absl::StrCat("Gemm_tA", ta, "_tB", tb, "_", bias_name);
        c.op_type = "Gemm";
        c.inputs = {ta ? Shape{k, m} : Shape{m, k},
                    tb ? Shape{n, k} : Shape{k, n}};
        if (bias) c.inputs.push_back(*bias);
        c.attributes = {{"transA", IntAttr(ta)},
                        {"transB", IntAttr(tb)},
                        {"alpha", FloatAttr(0.7f)},
                        {"beta", FloatAttr(1.3f)}};
        cases.push_back(std::move(c));
      }
    }
  }
  return cases;
}

std::vector<KernelCase> OtherCases() {
  return {
      {"MatMul_2d", "MatMul", {{3, 4}, {4, 5}}},
      {"MatMul_3d_by_2d", "MatMul", {{2, 3, 4}, {4, 5}}},
      {"MatMul_3d_by_3d", "MatMul", {{2, 3, 4}, {2, 4, 5}}},
      {"MatMul_2d_by_3d", "MatMul", {{3, 4}, {2, 4, 5}}},
      {"Add_same_shape", "Add", {{2, 3}, {2, 3}}},
      {"Add_bias", "Add", {{4, 3}, {3}}},
      {"Add_bias_first", "Add", {{3}, {4, 3}}},
      {"Add_both_broadcast", "Add", {{2, 1, 4}, {3, 1}}},
      {"Add_scalar", "Add", {{2, 3}, {}}},
      {"Add_channel", "Add", {{2, 3, 2, 2}, {3, 1, 1}}},
      {"Relu", "Relu", {{3, 5}}, {}, std::nullopt, true},
      {"Flatten_axis2", "Flatten", {{2, 3, 4}}, {{"axis", IntAttr(2)}}},
      {"Reshape_zero_minus_one", "Reshape", {{2, 3, 4}}, {}, {{0, -1}}},
      {"Identity", "Identity", {{2, 3}}},
      {"Dropout", "Dropout", {{2, 3}}},
  };
}

// The data-movement kernels of ops_shape.cc. Gather with repeated indices
// and reflect/edge Pad map several outputs to one input, so their gradients
// accumulate.
std::vector<KernelCase> ShapeOpCases() {
  constexpr auto kNone = std::nullopt;
  // clang-format off
  return {
      {"Concat_axis1_three", "Concat", {{2, 1, 3}, {2, 2, 3}, {2, 3, 3}}, {{"axis", IntAttr(1)}}},
      {"Concat_negative_axis", "Concat", {{2, 3}, {2, 2}}, {{"axis", IntAttr(-1)}}},
      {"Transpose_default", "Transpose", {{2, 3, 4}}},
      {"Transpose_perm", "Transpose", {{2, 3, 4, 2}}, {{"perm", IntsAttr({0, 2, 3, 1})}}},
      {"Squeeze", "Squeeze", {{2, 1, 3}}, {}, kNone, false, {IntInput({1})}},
      {"Unsqueeze_opset11", "Unsqueeze", {{2, 3}}, {{"axes", IntsAttr({0, -1})}}, kNone, false,
       {}, 11},
      {"Pad_constant", "Pad", {{2, 3, 4}}, {}, kNone, false,
       {IntInput({0, 1, -1, 1, 2, 1}), FloatInput(0.5f)}},
      {"Pad_reflect", "Pad", {{2, 3, 4}}, {{"mode", StringAttr("reflect")}}, kNone, false,
       {IntInput({0, 2, 1, 0, 1, 3})}},
      {"Pad_edge", "Pad", {{2, 3, 4}}, {{"mode", StringAttr("edge")}}, kNone, false,
       {IntInput({1, 2, 0, 0, 1, 3})}},
      {"Pad_opset7_attributes", "Pad", {{3, 4}}, {{"pads", IntsAttr({1, 0, 0, 2})}}, kNone,
       false, {}, 7},
      {"Slice_steps", "Slice", {{4, 5, 6}}, {}, kNone, false,
       {IntInput({3, 1}), IntInput({-100, 6}), IntInput({0, -1}), IntInput({-2, 2})}},
      {"Slice_opset9", "Slice", {{4, 5}},
       {{"starts", IntsAttr({1})}, {"ends", IntsAttr({-1})}, {"axes", IntsAttr({1})}}, kNone,
       false, {}, 9},
      {"Gather_repeated_indices", "Gather", {{4, 3}}, {{"axis", IntAttr(1)}}, kNone, false,
       {IntInput({2, 0, -1, 2}, Shape{2, 2})}},
      {"Gather_axis0_scalar", "Gather", {{4, 3}}, {}, kNone, false, {IntInput({-2}, Shape{})}},
      {"Expand", "Expand", {{3, 1}}, {}, kNone, false, {IntInput({2, 3, 4})}},
      {"Cast_float", "Cast", {{2, 3}}, {{"to", IntAttr(1)}}},
  };
  // clang-format on
}

// Convolution beyond 2-D images and the dense-prediction operators (issue
// #16): 1-D Conv and pools, ConvTranspose, Resize/Upsample, DepthToSpace and
// SpaceToDepth.
std::vector<KernelCase> SpatialCases() {
  constexpr auto kNone = std::nullopt;
  const std::optional<ConstantInput> kEmpty = std::nullopt;
  // clang-format off
  return {
      {"Conv_1d", "Conv", {{2, 3, 9}, {4, 3, 3}, {4}}, {{"pads", IntsAttr({1, 1})}}},
      {"Conv_1d_strided_dilated_grouped", "Conv", {{2, 4, 11}, {6, 2, 3}},
       {{"strides", IntsAttr({2})}, {"dilations", IntsAttr({2})},
        {"pads", IntsAttr({2, 1})}, {"group", IntAttr(2)}}},
      {"Conv_1d_no_attributes", "Conv", {{1, 2, 7}, {3, 2, 2}}},
      {"AveragePool_1d", "AveragePool", {{2, 3, 9}},
       {{"kernel_shape", IntsAttr({3})}, {"strides", IntsAttr({2})}}},
      {"ConvTranspose_strided_padded", "ConvTranspose", {{2, 3, 4, 5}, {3, 2, 3, 3}, {2}},
       {{"strides", IntsAttr({2, 2})}, {"pads", IntsAttr({1, 0, 1, 1})},
        {"output_padding", IntsAttr({1, 0})}}},
      {"ConvTranspose_grouped_dilated", "ConvTranspose", {{2, 4, 3, 3}, {4, 3, 2, 2}},
       {{"group", IntAttr(2)}, {"dilations", IntsAttr({2, 1})}, {"strides", IntsAttr({1, 3})}}},
      {"ConvTranspose_1d", "ConvTranspose", {{2, 3, 6}, {3, 4, 3}, {4}},
       {{"strides", IntsAttr({2})}, {"pads", IntsAttr({1, 1})}}},
      {"ConvTranspose_output_shape", "ConvTranspose", {{1, 2, 3, 3}, {2, 2, 3, 3}},
       {{"strides", IntsAttr({3, 2})}, {"output_shape", IntsAttr({10, 8})}}},
      {"DepthToSpace_dcr", "DepthToSpace", {{2, 8, 2, 3}}, {{"blocksize", IntAttr(2)}}},
      {"DepthToSpace_crd", "DepthToSpace", {{2, 8, 2, 3}},
       {{"blocksize", IntAttr(2)}, {"mode", StringAttr("CRD")}}},
      {"SpaceToDepth", "SpaceToDepth", {{2, 2, 4, 6}}, {{"blocksize", IntAttr(2)}}},
      {"Resize_nearest_asymmetric", "Resize", {{2, 3, 4, 5}},
       {{"mode", StringAttr("nearest")}, {"coordinate_transformation_mode", StringAttr("asymmetric")},
        {"nearest_mode", StringAttr("floor")}},
       kNone, false, {kEmpty, FloatsInput({1, 1, 2, 2})}},
      {"Resize_linear_half_pixel", "Resize", {{2, 3, 4, 5}}, {{"mode", StringAttr("linear")}},
       kNone, false, {kEmpty, FloatsInput({1, 1, 2, 1.5f})}},
      {"Resize_linear_align_corners_downsample", "Resize", {{1, 2, 6, 5}},
       {{"mode", StringAttr("linear")}, {"coordinate_transformation_mode", StringAttr("align_corners")}},
       kNone, false, {kEmpty, FloatsInput({1, 1, 0.5f, 2})}},
      {"Resize_linear_sizes_1d", "Resize", {{2, 3, 7}}, {{"mode", StringAttr("linear")}},
       kNone, false, {kEmpty, kEmpty, IntInput({2, 3, 11})}},
      {"Upsample_opset9_linear", "Upsample", {{1, 2, 3, 4}}, {{"mode", StringAttr("linear")}},
       kNone, false, {FloatsInput({1, 1, 2, 3})}, 9},
  };
  // clang-format on
}

INSTANTIATE_TEST_SUITE_P(Spatial, KernelGradientTest,
                         ::testing::ValuesIn(SpatialCases()),
                         [](const auto& info) { return info.param.name; });
INSTANTIATE_TEST_SUITE_P(ShapeOps, KernelGradientTest,
                         ::testing::ValuesIn(ShapeOpCases()),
                         [](const auto& info) { return info.param.name; });
INSTANTIATE_TEST_SUITE_P(Gemm, KernelGradientTest,
                         ::testing::ValuesIn(GemmCases()),
                         [](const auto& info) { return info.param.name; });
INSTANTIATE_TEST_SUITE_P(Others, KernelGradientTest,
                         ::testing::ValuesIn(OtherCases()),
                         [](const auto& info) { return info.param.name; });

// ------------------------------------------------------ Through a model ----

void AddInitializer(onnx::GraphProto* graph, const std::string& name,
                    const Shape& dims, std::mt19937* rng) {
  onnx::TensorProto* t = graph->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t->add_dims(d);
  for (float v : UniformValues(NumElements(dims), rng)) t->add_float_data(v);
}

onnx::NodeProto* AddNode(onnx::GraphProto* graph, const std::string& op_type,
                         const std::vector<std::string>& inputs,
                         const std::string& output) {
  onnx::NodeProto* node = graph->add_node();
  node->set_op_type(op_type);
  node->set_name(output);
  for (const auto& input : inputs) node->add_input(input);
  node->add_output(output);
  return node;
}

void AddAttribute(onnx::NodeProto* node, const std::string& name,
                  const Attribute& value) {
  onnx::AttributeProto* attr = node->add_attribute();
  attr->set_name(name);
  if (value.type == Attribute::Type::kInt) {
    attr->set_type(onnx::AttributeProto::INT);
    attr->set_i(value.i);
  } else {
    attr->set_type(onnx::AttributeProto::FLOAT);
    attr->set_f(value.f);
  }
}

// [N, 2, 3] → Flatten → Gemm(transB) → Relu → Add(r, r) → MatMul(w2) + b2 →
// Relu → MatMul(w2 again) → Reshape → Identity → Dropout → Gemm(alpha, beta,
// [1, 4] bias) → logits [N, 4]. Covers a value read twice by one node and a
// weight shared by two nodes.
std::string MlpOnnx() {
  std::mt19937 rng(7);
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(13);
  onnx::GraphProto* g = model.mutable_graph();
  auto* input = g->add_input();
  input->set_name("x");
  auto* type = input->mutable_type()->mutable_tensor_type();
  type->set_elem_type(onnx::TensorProto::FLOAT);
  type->mutable_shape()->add_dim()->set_dim_param("batch");
  type->mutable_shape()->add_dim()->set_dim_value(2);
  type->mutable_shape()->add_dim()->set_dim_value(3);
  g->add_output()->set_name("logits");
  AddInitializer(g, "fc1.weight", {5, 6}, &rng);
  AddInitializer(g, "fc1.bias", {5}, &rng);
  AddInitializer(g, "w2", {5, 5}, &rng);
  AddInitializer(g, "b2", {5}, &rng);
  AddInitializer(g, "fc3.weight", {5, 4}, &rng);
  AddInitializer(g, "fc3.bias", {1, 4}, &rng);
  onnx::TensorProto* shape = g->add_initializer();
  shape->set_name("shape");
  shape->set_data_type(onnx::TensorProto::INT64);
  shape->add_dims(2);
  shape->add_int64_data(0);
  shape->add_int64_data(-1);

  AddNode(g, "Flatten", {"x"}, "flat");
  AddAttribute(AddNode(g, "Gemm", {"flat", "fc1.weight", "fc1.bias"}, "h1"),
               "transB", IntAttr(1));
  AddNode(g, "Relu", {"h1"}, "r1");
  AddNode(g, "Add", {"r1", "r1"}, "d");
  AddNode(g, "MatMul", {"d", "w2"}, "m2");
  AddNode(g, "Add", {"m2", "b2"}, "a2");
  AddNode(g, "Relu", {"a2"}, "r2");
  AddNode(g, "MatMul", {"r2", "w2"}, "m3");
  AddNode(g, "Reshape", {"m3", "shape"}, "m3r");
  AddNode(g, "Identity", {"m3r"}, "id");
  AddNode(g, "Dropout", {"id"}, "drop");
  onnx::NodeProto* fc3 =
      AddNode(g, "Gemm", {"drop", "fc3.weight", "fc3.bias"}, "logits");
  AddAttribute(fc3, "alpha", FloatAttr(0.7f));
  AddAttribute(fc3, "beta", FloatAttr(1.3f));
  return model.SerializeAsString();
}

// The model's loss is only piecewise smooth (ReLU): a step is compared only
// where the two one-sided differences agree, i.e. no kink lies within eps.
constexpr GradientTolerance kModelTolerance = {
    .eps = 5e-3f, .abs = 1e-3, .rel = 1e-2};
constexpr double kKinkTolerance = 1e-2;

TEST(ModelGradientTest, MlpWithCrossEntropyMatchesFiniteDifferences) {
  absl::StatusOr<std::unique_ptr<Model>> loaded =
      Model::FromOnnxBytes(MlpOnnx());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Model& model = **loaded;
  ASSERT_EQ(model.params().size(), 6u);
  EXPECT_EQ(model.quantizable_layers().size(), 3u);  // w2 counts once

  std::mt19937 rng(3);
  const Tensor x({4, 2, 3}, UniformValues(24, &rng));
  const std::vector<int64_t> labels = {0, 3, 1, 2};
  std::vector<Tensor> params = model.initial_params();
  const auto pointers = [&]() {
    std::vector<const Tensor*> p;
    for (const Tensor& t : params) p.push_back(&t);
    return p;
  };
  const auto loss = [&]() {
    absl::StatusOr<Tensor> logits = model.Forward(x, pointers(), nullptr);
    EXPECT_TRUE(logits.ok()) << logits.status();
    absl::StatusOr<LossResult> result =
        SoftmaxCrossEntropy(*logits, labels, nullptr);
    EXPECT_TRUE(result.ok()) << result.status();
    return result->loss;
  };

  ForwardTrace trace;
  absl::StatusOr<Tensor> logits = model.Forward(x, pointers(), &trace);
  ASSERT_TRUE(logits.ok()) << logits.status();
  Tensor grad_logits;
  ASSERT_TRUE(SoftmaxCrossEntropy(*logits, labels, &grad_logits).ok());
  std::vector<Tensor> grads;
  ASSERT_TRUE(model.Backward(trace, pointers(), grad_logits, &grads).ok());
  ASSERT_EQ(grads.size(), params.size());

  const double center = loss();
  int64_t checked = 0;
  int64_t total = 0;
  for (size_t p = 0; p < params.size(); ++p) {
    ASSERT_EQ(grads[p].shape(), params[p].shape());
    for (int64_t j = 0; j < params[p].size(); ++j, ++total) {
      const double eps = kModelTolerance.eps;
      const auto [plus, minus] = EvaluateAround(params[p].data()[j], eps, loss);
      const double forward = (plus - center) / eps;
      const double backward = (center - minus) / eps;
      if (std::abs(forward - backward) >
          kKinkTolerance * std::max(1.0, std::abs(forward))) {
        continue;
      }
      ++checked;
      const double numeric = (plus - minus) / (2.0 * eps);
      EXPECT_TRUE(GradientNear(grads[p].data()[j], numeric, kModelTolerance))
          << model.params()[p].name << " element " << j << ": analytic "
          << grads[p].data()[j] << ", numeric " << numeric;
    }
  }
  // Kinks within eps of a weight are rare.
  EXPECT_GE(checked, total * 9 / 10);

  // Reused gradient buffers give the same result.
  std::vector<Tensor> again = grads;
  ASSERT_TRUE(model.Backward(trace, pointers(), grad_logits, &again).ok());
  for (size_t p = 0; p < grads.size(); ++p) {
    EXPECT_EQ(again[p].values(), grads[p].values());
  }
}

// Parameters whose every path to the output is cut by ReLU get zero
// gradients of the right shape.
TEST(ModelGradientTest, DeadParameterGetsZeros) {
  absl::StatusOr<std::unique_ptr<Model>> loaded =
      Model::FromOnnxBytes(MlpOnnx());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Model& model = **loaded;
  std::vector<Tensor> params = model.initial_params();
  // fc1.bias = -100 makes every first-layer ReLU output 0.
  params[1].flat() = -100.0f;
  std::vector<const Tensor*> pointers;
  for (const Tensor& t : params) pointers.push_back(&t);
  ForwardTrace trace;
  const Tensor x({2, 2, 3});
  absl::StatusOr<Tensor> logits = model.Forward(x, pointers, &trace);
  ASSERT_TRUE(logits.ok());
  std::vector<Tensor> grads;
  ASSERT_TRUE(model
                  .Backward(trace, pointers,
                            Tensor({2, 4}, std::vector<float>(8, 1)), &grads)
                  .ok());
  EXPECT_EQ(grads[0].shape(), params[0].shape());
  EXPECT_EQ(grads[0].flat().abs().maxCoeff(), 0.0f);
  EXPECT_EQ(grads[1].flat().abs().maxCoeff(), 0.0f);
  // fc3.bias still gets beta * Σ grad.
  EXPECT_THAT(grads[5].values(), ::testing::Each(::testing::FloatEq(2 * 1.3f)));
}

}  // namespace
}  // namespace mixq::engine
