// Backward through a whole model against central finite differences: a small
// MLP with the softmax cross-entropy loss. Each operator's own gradient cases
// are in the operator-test table (op_table.cc).
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

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
using ::mixq::testing::FloatAttr;
using ::mixq::testing::GradientNear;
using ::mixq::testing::GradientTolerance;
using ::mixq::testing::IntAttr;
using ::mixq::testing::UniformValues;

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
