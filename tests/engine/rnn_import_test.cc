// Import of LSTM and GRU nodes (engine/rnn_import.h): the outputs a graph
// reads (Y, Y_h, Y_c, any subset) are sliced from the kernel's packed output,
// torch's batch-shaped zero initial states are dropped, and what the kernels
// cannot compute is refused naming the node.
#include <memory>
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
#include "tests/support/kernel_testing.h"
#include "tests/support/onnx_builder.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::IntAttr;
using ::mixq::testing::MakeKernel;
using ::mixq::testing::OnnxBuilder;
using ::mixq::testing::SetInt;
using ::mixq::testing::SetInts;
using ::mixq::testing::SetString;
using ::mixq::testing::UniformValues;
using ::testing::HasSubstr;

constexpr int64_t kSteps = 3;
constexpr int64_t kInput = 4;
constexpr int64_t kHidden = 2;

int Gates(const std::string& op) { return op == "LSTM" ? 4 : 3; }

// input x [batch, kSteps, kInput] → Transpose → "xt" [kSteps, batch, kInput],
// and the weights "w", "r", "b" of a one-direction `op`. The caller adds the
// recurrent node (named "rnn") and what follows.
OnnxBuilder Start(const std::string& op, int64_t opset = 13) {
  OnnxBuilder b(opset);
  b.Input("x", {-1, kSteps, kInput});
  SetInts(b.Node("Transpose", {"x"}, {"xt"}, "to_time_major"), "perm",
          {1, 0, 2});
  std::mt19937 rng(5);
  const int64_t gh = Gates(op) * kHidden;
  b.Initializer("w", {1, gh, kInput}, UniformValues(gh * kInput, &rng));
  b.Initializer("r", {1, gh, kHidden}, UniformValues(gh * kHidden, &rng));
  b.Initializer("b", {1, 2 * gh}, UniformValues(2 * gh, &rng));
  return b;
}

onnx::NodeProto* AddRecurrent(OnnxBuilder* b, const std::string& op,
                              const std::vector<std::string>& inputs,
                              const std::vector<std::string>& outputs) {
  onnx::NodeProto* node = b->Node(op, inputs, outputs, "rnn");
  SetInt(node, "hidden_size", kHidden);
  return node;
}

Tensor Inputs(int64_t batch) {
  std::mt19937 rng(9);
  return Tensor({batch, kSteps, kInput},
                UniformValues(batch * kSteps * kInput, &rng));
}

absl::StatusOr<Tensor> RunModel(const OnnxBuilder& b, const Tensor& x) {
  absl::StatusOr<std::unique_ptr<Model>> model = b.Build();
  if (!model.ok()) return model.status();
  std::vector<const Tensor*> params;
  for (const Tensor& p : (*model)->initial_params()) params.push_back(&p);
  return (*model)->Forward(x, params, nullptr);
}

// The kernel's packed output [kSteps + states, 1, batch, kHidden] for the
// model's weights, computed directly.
Tensor Packed(OnnxBuilder& b, const std::string& op, const Tensor& x) {
  absl::StatusOr<std::unique_ptr<Kernel>> kernel =
      MakeKernel(op, {{"hidden_size", IntAttr(kHidden)}});
  EXPECT_TRUE(kernel.ok()) << kernel.status();
  Tensor xt({kSteps, x.dim(0), kInput});
  for (int64_t n = 0; n < x.dim(0); ++n) {
    for (int64_t t = 0; t < kSteps; ++t) {
      for (int64_t i = 0; i < kInput; ++i) {
        xt.data()[(t * x.dim(0) + n) * kInput + i] =
            x.data()[(n * kSteps + t) * kInput + i];
      }
    }
  }
  std::vector<Tensor> weights;
  for (const onnx::TensorProto& t : b.graph().initializer()) {
    weights.emplace_back(
        Shape(t.dims().begin(), t.dims().end()),
        std::vector<float>(t.float_data().begin(), t.float_data().end()));
  }
  std::vector<const Tensor*> inputs = {&xt};
  std::vector<const Shape*> shapes = {&xt.shape()};
  for (const Tensor& w : weights) {
    inputs.push_back(&w);
    shapes.push_back(&w.shape());
  }
  absl::StatusOr<Shape> shape = (*kernel)->OutputShape(shapes);
  EXPECT_TRUE(shape.ok()) << shape.status();
  Tensor out(*shape);
  (*kernel)->Forward(inputs, &out);
  return out;
}

// Rows [first, first + count) of the packed output's time axis.
std::vector<float> Steps(const Tensor& packed, int64_t first, int64_t count) {
  const int64_t step = packed.size() / packed.dim(0);
  return std::vector<float>(packed.data() + first * step,
                            packed.data() + (first + count) * step);
}

// Each output the graph reads, alone or together with the others, at
// opsets with Slice attributes (9) and inputs (13).
TEST(RecurrentImportTest, EveryOutputSubsetIsSlicedFromThePackedOutput) {
  for (const std::string op : {"LSTM", "GRU"}) {
    const int states = op == "LSTM" ? 2 : 1;
    for (int64_t opset : {9, 13}) {
      // Y alone, Y_h alone, and (Y, Y_h[, Y_c]) concatenated along time.
      std::vector<std::vector<std::string>> subsets = {{"y"}, {"", "y_h"}};
      subsets.push_back(states == 2
                            ? std::vector<std::string>{"y", "y_h", "y_c"}
                            : std::vector<std::string>{"y", "y_h"});
      for (const std::vector<std::string>& outputs : subsets) {
        OnnxBuilder b = Start(op, opset);
        AddRecurrent(&b, op, {"xt", "w", "r", "b"}, outputs);
        std::vector<std::string> parts;
        for (size_t k = 0; k < outputs.size(); ++k) {
          if (outputs[k].empty()) continue;
          if (k == 0) {
            b.IntConstant("axes", {1});
            onnx::NodeProto* squeeze =
                b.Node("Squeeze", {"y"}, {"y_squeezed"}, "squeeze");
            if (opset < 13) {
              squeeze->clear_input();
              squeeze->add_input("y");
              SetInts(squeeze, "axes", {1});
            } else {
              squeeze->add_input("axes");
            }
            parts.push_back("y_squeezed");
          } else {
            parts.push_back(outputs[k]);
          }
        }
        if (parts.size() == 1) {
          b.Node("Identity", {parts[0]}, {"out"}, "out");
        } else {
          SetInt(b.Node("Concat", parts, {"out"}, "out"), "axis", 0);
        }
        b.Output("out");
        const std::string what =
            absl::StrCat(op, " opset ", opset, " outputs ", outputs.size());
        for (int64_t batch : {1, 3}) {
          const Tensor x = Inputs(batch);
          absl::StatusOr<Tensor> out = RunModel(b, x);
          ASSERT_TRUE(out.ok()) << what << ": " << out.status();
          const Tensor packed = Packed(b, op, x);
          std::vector<float> expected;
          if (!outputs[0].empty()) expected = Steps(packed, 0, kSteps);
          for (size_t k = 1; k < outputs.size(); ++k) {
            const std::vector<float> state = Steps(packed, kSteps + k - 1, 1);
            expected.insert(expected.end(), state.begin(), state.end());
          }
          EXPECT_EQ(out->ToVector(), expected) << what << " batch " << batch;
        }
      }
    }
  }
}

// torch.onnx exports `torch.zeros(layers, x.size(0), hidden)` as a
// ConstantOfShape of a shape holding the batch: dropped, as absent states
// are zero.
TEST(RecurrentImportTest, BatchShapedZeroStatesAreDropped) {
  for (const std::string op : {"LSTM", "GRU"}) {
    OnnxBuilder with_zeros = Start(op);
    with_zeros.Node("Shape", {"x"}, {"shape"}, "shape");
    with_zeros.IntConstant("zero", {0}, /*scalar=*/true);
    SetInt(with_zeros.Node("Gather", {"shape", "zero"}, {"batch"}, "gather"),
           "axis", 0);
    with_zeros.IntConstant("unsqueeze_axes", {0});
    with_zeros.Node("Unsqueeze", {"batch", "unsqueeze_axes"}, {"batch_1d"},
                    "unsqueeze");
    with_zeros.IntConstant("one", {1}).IntConstant("hidden", {kHidden});
    SetInt(with_zeros.Node("Concat", {"one", "batch_1d", "hidden"},
                           {"state_shape"}, "concat"),
           "axis", 0);
    with_zeros.Node("ConstantOfShape", {"state_shape"}, {"zeros"}, "zeros");
    // Through a Slice, as torch slices one layer's states out of all.
    with_zeros.IntConstant("s0", {0}).IntConstant("s1", {1});
    with_zeros.Node("Slice", {"zeros", "s0", "s1", "s0"}, {"h0"}, "slice");
    std::vector<std::string> inputs = {"xt", "w", "r", "b", "", "h0"};
    if (op == "LSTM") inputs.push_back("zeros");
    AddRecurrent(&with_zeros, op, inputs, {"", "out"});
    with_zeros.Output("out");

    OnnxBuilder without = Start(op);
    AddRecurrent(&without, op, {"xt", "w", "r", "b"}, {"", "out"});
    without.Output("out");
    for (int64_t batch : {1, 3}) {
      absl::StatusOr<Tensor> a = RunModel(with_zeros, Inputs(batch));
      absl::StatusOr<Tensor> b = RunModel(without, Inputs(batch));
      ASSERT_TRUE(a.ok()) << op << ": " << a.status();
      ASSERT_TRUE(b.ok()) << op << ": " << b.status();
      EXPECT_EQ(a->ToVector(), b->ToVector()) << op << " batch " << batch;
    }

    // Other values are no zero state: the batch-shaped constant (0.5) runs
    // at every batch as the initial state (an Expand of its value), so the
    // outputs differ from the stateless model's.
    for (onnx::NodeProto& node : *with_zeros.graph().mutable_node()) {
      if (node.op_type() != "ConstantOfShape") continue;
      onnx::AttributeProto* value = node.add_attribute();
      value->set_name("value");
      value->set_type(onnx::AttributeProto::TENSOR);
      OnnxBuilder::FillFloat(value->mutable_t(), "", {1}, {0.5f});
    }
    for (int64_t batch : {1, 3}) {
      absl::StatusOr<Tensor> a = RunModel(with_zeros, Inputs(batch));
      absl::StatusOr<Tensor> b = RunModel(without, Inputs(batch));
      ASSERT_TRUE(a.ok()) << op << ": " << a.status();
      ASSERT_TRUE(b.ok()) << op << ": " << b.status();
      EXPECT_EQ(a->shape(), b->shape());
      EXPECT_NE(a->ToVector(), b->ToVector()) << op << " batch " << batch;
    }
  }
}

onnx::AttributeProto* SetStrings(onnx::NodeProto* node, const std::string& name,
                                 const std::vector<std::string>& values) {
  onnx::AttributeProto* attr = node->add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::STRINGS);
  for (const std::string& v : values) attr->add_strings(v);
  return attr;
}

TEST(RecurrentImportTest, OnlyTheDefaultActivations) {
  OnnxBuilder b = Start("LSTM");
  SetStrings(AddRecurrent(&b, "LSTM", {"xt", "w", "r"}, {"", "out"}),
             "activations", {"Sigmoid", "Tanh", "Tanh"});
  b.Output("out");
  EXPECT_TRUE(RunModel(b, Inputs(2)).ok());

  OnnxBuilder relu = Start("GRU");
  SetStrings(AddRecurrent(&relu, "GRU", {"xt", "w", "r"}, {"", "out"}),
             "activations", {"Relu", "Tanh"});
  relu.Output("out");
  const absl::Status status = relu.Build().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr("node 'rnn' (GRU): activations Relu, Tanh are not "
                        "supported (only the defaults Sigmoid, Tanh)"));
}

TEST(RecurrentImportTest, RefusesOutputsBeyondTheOperators) {
  OnnxBuilder b = Start("GRU");
  AddRecurrent(&b, "GRU", {"xt", "w", "r"}, {"", "out", "extra"});
  b.Output("out");
  const absl::Status status = b.Build().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("node 'rnn' (GRU): has 3 outputs; "
                                          "expected at most 2"));
}

// sequence_lens: accepted when it is a constant full length for every
// sequence, refused naming the node otherwise.
TEST(RecurrentImportTest, SequenceLensMustBeOneFullLength) {
  const auto build = [](const std::vector<int64_t>& lengths) {
    OnnxBuilder b = Start("GRU");
    b.IntInitializer("lengths", lengths);
    AddRecurrent(&b, "GRU", {"xt", "w", "r", "b", "lengths"}, {"", "out"});
    b.Output("out");
    return b;
  };
  OnnxBuilder plain = Start("GRU");
  AddRecurrent(&plain, "GRU", {"xt", "w", "r", "b"}, {"", "out"});
  plain.Output("out");
  absl::StatusOr<Tensor> full = RunModel(build({kSteps, kSteps}), Inputs(2));
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->ToVector(), RunModel(plain, Inputs(2))->ToVector());

  const absl::Status varying = build({kSteps, kSteps - 1}).Build().status();
  EXPECT_THAT(varying.message(),
              HasSubstr("node 'rnn' (GRU): sequence_lens must be a constant "
                        "holding one length"));
  const absl::Status shorter = build({kSteps - 1}).Build().status();
  EXPECT_EQ(shorter.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(shorter.message(), HasSubstr("only full-length sequences"));
}

}  // namespace
}  // namespace mixq::engine
