// RaiseToOpset21: the operators it rewrites (the Reduce family's axes, Split's
// num_outputs), the ones it keeps, the ones it refuses (named, the model left
// unchanged), and the opset/IR bookkeeping. Rewritten models are run in
// mixq's engine against the originals where the engine has the operator.
#include "search/opset_raise.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "tests/support/fixtures.h"
#include "tests/support/onnx_builder.h"

namespace mixq::search {
namespace {

using engine::Tensor;
using ::mixq::testing::OnnxBuilder;
using ::mixq::testing::SetInt;
using ::mixq::testing::SetInts;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

int64_t Opset(const onnx::ModelProto& model) {
  return model.opset_import(0).version();
}

bool HasAttribute(const onnx::NodeProto& node, const std::string& name) {
  for (const auto& attr : node.attribute()) {
    if (attr.name() == name) return true;
  }
  return false;
}

const onnx::AttributeProto* Attribute(const onnx::NodeProto& node,
                                      const std::string& name) {
  for (const auto& attr : node.attribute()) {
    if (attr.name() == name) return &attr;
  }
  return nullptr;
}

const onnx::TensorProto* FindInitializer(const onnx::GraphProto& graph,
                                         const std::string& name) {
  for (const auto& t : graph.initializer()) {
    if (t.name() == name) return &t;
  }
  return nullptr;
}

std::vector<int64_t> Int64s(const onnx::TensorProto& t) {
  std::vector<int64_t> values(t.raw_data().size() / sizeof(int64_t));
  std::memcpy(values.data(), t.raw_data().data(), t.raw_data().size());
  return values;
}

absl::StatusOr<Tensor> RunModel(const onnx::ModelProto& proto,
                                const Tensor& x) {
  absl::StatusOr<std::unique_ptr<engine::Model>> model =
      engine::Model::FromOnnxBytes(proto.SerializeAsString());
  if (!model.ok()) return model.status();
  std::vector<const Tensor*> params;
  for (const Tensor& p : (*model)->initial_params()) params.push_back(&p);
  return (*model)->Forward(x, params, nullptr);
}

// x [batch, 2, 3] → <op>(axes [1] as an attribute, keepdims 0) → y.
onnx::ModelProto ReduceModel(const std::string& op_type) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 2, 3}).Output("y");
  onnx::NodeProto* node = b.Node(op_type, {"x"}, {"y"}, "reduce");
  SetInts(node, "axes", {1});
  SetInt(node, "keepdims", 0);
  return b.proto();
}

TEST(RaiseToOpset21Test, ReduceAxesMoveToAnInputAndComputeTheSame) {
  const Tensor x({2, 2, 3}, {1, -2, 3, 4, 5, -6, 0.5f, 2, 1, 3, 4, 8});
  for (const std::string op :
       {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSumSquare"}) {
    SCOPED_TRACE(op);
    onnx::ModelProto model = ReduceModel(op);
    const absl::StatusOr<Tensor> before = RunModel(model, x);
    ASSERT_TRUE(before.ok()) << before.status();
    ASSERT_TRUE(RaiseToOpset21(&model).ok());
    EXPECT_EQ(Opset(model), kOpset21);
    const onnx::NodeProto& node = model.graph().node(0);
    EXPECT_FALSE(HasAttribute(node, "axes"));
    EXPECT_TRUE(HasAttribute(node, "keepdims"));
    ASSERT_EQ(node.input_size(), 2);
    EXPECT_EQ(node.input(1), "reduce_axes");
    const onnx::TensorProto* axes =
        FindInitializer(model.graph(), node.input(1));
    ASSERT_NE(axes, nullptr);
    EXPECT_EQ(axes->data_type(), onnx::TensorProto::INT64);
    EXPECT_THAT(axes->dims(), ElementsAre(1));
    EXPECT_THAT(Int64s(*axes), ElementsAre(1));
    const absl::StatusOr<Tensor> after = RunModel(model, x);
    ASSERT_TRUE(after.ok()) << after.status();
    EXPECT_EQ(after->ToVector(), before->ToVector());
  }
}

TEST(RaiseToOpset21Test, ReduceWithoutAxesAndReduceSumAreKept) {
  onnx::ModelProto all = ReduceModel("ReduceMean");
  all.mutable_graph()->mutable_node(0)->mutable_attribute()->DeleteSubrange(0,
                                                                            1);
  ASSERT_TRUE(RaiseToOpset21(&all).ok());
  EXPECT_EQ(all.graph().node(0).input_size(), 1);
  EXPECT_EQ(all.graph().initializer_size(), 0);

  // ReduceSum took its axes as an input from opset 13.
  OnnxBuilder b(13);
  b.Input("x", {-1, 2, 3}).Output("y");
  b.IntInitializer("axes", {2});
  b.Node("ReduceSum", {"x", "axes"}, {"y"}, "sum");
  onnx::ModelProto sum = b.proto();
  const onnx::ModelProto before = sum;
  ASSERT_TRUE(RaiseToOpset21(&sum).ok());
  EXPECT_EQ(sum.graph().SerializeAsString(),
            before.graph().SerializeAsString());
}

TEST(RaiseToOpset21Test, NewAxesNamesAvoidExistingOnes) {
  onnx::ModelProto model = ReduceModel("ReduceMax");
  onnx::NodeProto* relu = model.mutable_graph()->add_node();
  relu->set_op_type("Relu");
  relu->set_name("relu");
  relu->add_input("y");
  relu->add_output("reduce_axes");
  ASSERT_TRUE(RaiseToOpset21(&model).ok());
  EXPECT_EQ(model.graph().node(0).input(1), "reduce_axes_1");
}

TEST(RaiseToOpset21Test, SplitGetsNumOutputsOnlyWithoutSizes) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 4}).Output("a").Output("b").Output("c").Output("d");
  SetInt(b.Node("Split", {"x"}, {"a", "b"}, "equal"), "axis", 1);
  b.IntInitializer("sizes", {1, 3});
  SetInt(b.Node("Split", {"x", "sizes"}, {"c", "d"}, "sized"), "axis", 1);
  onnx::ModelProto model = b.proto();
  ASSERT_TRUE(RaiseToOpset21(&model).ok());
  const onnx::AttributeProto* count =
      Attribute(model.graph().node(0), "num_outputs");
  ASSERT_NE(count, nullptr);
  EXPECT_EQ(count->type(), onnx::AttributeProto::INT);
  EXPECT_EQ(count->i(), 2);
  EXPECT_FALSE(HasAttribute(model.graph().node(1), "num_outputs"));
}

TEST(RaiseToOpset21Test, OperatorsThatKeptTheirMeaningAreUntouched) {
  // Conv → BatchNormalization (inference) → Relu → Pad → AveragePool →
  // Reshape → Softmax, with Shape/Cast folding on the side.
  OnnxBuilder b(13);
  b.Input("x", {-1, 1, 4, 4}).Output("y");
  b.Initializer("w", {2, 1, 1, 1}, {1.0f, -1.0f});
  b.Initializer("scale", {2}, {1.0f, 2.0f});
  b.Initializer("bias", {2}, {0.0f, 0.5f});
  b.Initializer("mean", {2}, {0.0f, 0.0f});
  b.Initializer("var", {2}, {1.0f, 1.0f});
  b.IntInitializer("pads", {0, 0, 1, 1, 0, 0, 1, 1});
  b.IntInitializer("shape", {-1, 32});
  b.Node("Conv", {"x", "w"}, {"c"}, "conv");
  b.Node("BatchNormalization", {"c", "scale", "bias", "mean", "var"}, {"n"},
         "bn");
  b.Node("Relu", {"n"}, {"r"}, "relu");
  b.Node("Pad", {"r", "pads"}, {"p"}, "pad");
  SetInts(b.Node("AveragePool", {"p"}, {"a"}, "pool"), "kernel_shape", {3, 3});
  b.Node("Reshape", {"a", "shape"}, {"f"}, "reshape");
  b.Node("Softmax", {"f"}, {"y"}, "softmax");
  onnx::ModelProto model = b.proto();
  const onnx::ModelProto before = model;
  Tensor x({1, 1, 4, 4});
  for (int64_t i = 0; i < x.size(); ++i) x.data()[i] = 0.1f * i - 0.7f;
  const absl::StatusOr<Tensor> y_before = RunModel(model, x);
  ASSERT_TRUE(y_before.ok()) << y_before.status();
  ASSERT_TRUE(RaiseToOpset21(&model).ok());
  EXPECT_EQ(model.graph().SerializeAsString(),
            before.graph().SerializeAsString());
  EXPECT_EQ(Opset(model), kOpset21);
  const absl::StatusOr<Tensor> y_after = RunModel(model, x);
  ASSERT_TRUE(y_after.ok()) << y_after.status();
  EXPECT_EQ(y_after->ToVector(), y_before->ToVector());
}

// RNN-14, LSTM-14 and GRU-14 added `layout` (default 0); later versions
// only types.
TEST(RaiseToOpset21Test, RecurrentOperatorsAreUntouched) {
  for (const auto& [op, gates] :
       {std::pair{"RNN", 1}, std::pair{"LSTM", 4}, std::pair{"GRU", 3}}) {
    constexpr int64_t kHidden = 2, kInput = 3;
    OnnxBuilder b(13);
    b.Input("x", {-1, 2, kInput}).Output("y");
    std::vector<float> w(gates * kHidden * kInput),
        r(gates * kHidden * kHidden);
    for (size_t i = 0; i < w.size(); ++i) w[i] = 0.1f * (i % 7) - 0.3f;
    for (size_t i = 0; i < r.size(); ++i) r[i] = 0.2f * (i % 5) - 0.4f;
    b.Initializer("w", {1, gates * kHidden, kInput}, w);
    b.Initializer("r", {1, gates * kHidden, kHidden}, r);
    SetInt(b.Node(op, {"x", "w", "r"}, {"", "y"}, "rnn"), "hidden_size",
           kHidden);
    onnx::ModelProto model = b.proto();
    const onnx::ModelProto before = model;
    Tensor x({3, 2, kInput});
    for (int64_t i = 0; i < x.size(); ++i) x.data()[i] = 0.1f * i - 0.7f;
    const absl::StatusOr<Tensor> y_before = RunModel(model, x);
    ASSERT_TRUE(y_before.ok()) << y_before.status();
    ASSERT_TRUE(RaiseToOpset21(&model).ok()) << op;
    EXPECT_EQ(model.graph().SerializeAsString(),
              before.graph().SerializeAsString());
    const absl::StatusOr<Tensor> y_after = RunModel(model, x);
    ASSERT_TRUE(y_after.ok()) << y_after.status();
    EXPECT_EQ(y_after->ToVector(), y_before->ToVector()) << op;
  }
}

TEST(RaiseToOpset21Test, IrVersionOnlyGoesUp) {
  onnx::ModelProto old_ir = ReduceModel("ReduceMean");
  old_ir.set_ir_version(7);
  ASSERT_TRUE(RaiseToOpset21(&old_ir).ok());
  EXPECT_EQ(old_ir.ir_version(), kIrVersionOfOpset21);

  onnx::ModelProto new_ir = ReduceModel("ReduceMean");
  new_ir.set_ir_version(11);
  ASSERT_TRUE(RaiseToOpset21(&new_ir).ok());
  EXPECT_EQ(new_ir.ir_version(), 11);

  // At opset 21 already: only the IR version.
  OnnxBuilder b(21);
  b.Input("x", {-1, 2}).Output("y");
  b.Node("Relu", {"x"}, {"y"}, "relu");
  onnx::ModelProto at21 = b.proto();
  ASSERT_TRUE(RaiseToOpset21(&at21).ok());
  EXPECT_EQ(Opset(at21), kOpset21);
  EXPECT_EQ(at21.ir_version(), kIrVersionOfOpset21);
}

struct RefusedCase {
  const char* name;
  void (*mutate)(onnx::ModelProto*);
  const char* message;
};

void PrintTo(const RefusedCase& c, std::ostream* os) { *os << c.name; }

class RaiseToOpset21RefusedTest : public ::testing::TestWithParam<RefusedCase> {
};

TEST_P(RaiseToOpset21RefusedTest, IsAFailedPreconditionAndChangesNothing) {
  // The refused node comes after a Reduce the raise would rewrite.
  onnx::ModelProto model = ReduceModel("ReduceMean");
  GetParam().mutate(&model);
  const onnx::ModelProto before = model;
  const absl::Status status = RaiseToOpset21(&model);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(GetParam().message));
  EXPECT_EQ(model.SerializeAsString(), before.SerializeAsString());
}

onnx::NodeProto* AddNode(onnx::ModelProto* m, const std::string& op_type) {
  onnx::NodeProto* node = m->mutable_graph()->add_node();
  node->set_op_type(op_type);
  node->set_name("late");
  node->add_input("y");
  node->add_output("z");
  return node;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, RaiseToOpset21RefusedTest,
    ::testing::Values(
        RefusedCase{"UnknownOperator",
                    [](onnx::ModelProto* m) { AddNode(m, "Hardmax"); },
                    "operator Hardmax (node 'late') cannot be raised from "
                    "opset 13 to 21: mixq does not know whether it changed"},
        RefusedCase{"OtherDomain",
                    [](onnx::ModelProto* m) {
                      AddNode(m, "Gelu")->set_domain("com.microsoft");
                    },
                    "operator Gelu (node 'late') cannot be raised from opset "
                    "13 to 21: domain 'com.microsoft' is not raised"},
        RefusedCase{"TrainingBatchNormalization",
                    [](onnx::ModelProto* m) {
                      AddNode(m, "BatchNormalization")->add_output("mean");
                    },
                    "BatchNormalization (node 'late') cannot be raised from "
                    "opset 13 to 21: its training-mode outputs changed"},
        RefusedCase{"ControlFlow",
                    [](onnx::ModelProto* m) { AddNode(m, "If"); },
                    "operator If (node 'late')"},
        RefusedCase{"OpsetBelow13",
                    [](onnx::ModelProto* m) {
                      m->mutable_opset_import(0)->set_version(12);
                    },
                    "opset 12 cannot be raised to 21 (mixq raises from 13 to "
                    "21)"},
        RefusedCase{"OpsetAbove21",
                    [](onnx::ModelProto* m) {
                      m->mutable_opset_import(0)->set_version(22);
                    },
                    "opset 22 cannot be raised to 21"},
        RefusedCase{"NoDefaultOpset",
                    [](onnx::ModelProto* m) {
                      m->mutable_opset_import(0)->set_domain("ai.onnx.ml");
                    },
                    "imports no opset of the default ONNX domain"}),
    [](const ::testing::TestParamInfo<RefusedCase>& info) {
      return std::string(info.param.name);
    });

// Every exported model among the fixtures (CNNs, transformers, 1-D and
// dense-prediction nets, recurrent nets; opsets 13 to 17) raises to opset 21
// — so its 4-bit export can be written — and computes the same outputs.
TEST(RaiseToOpset21Test, EveryExportedFixtureRaisesAndComputesTheSame) {
  const std::filesystem::path dir =
      std::filesystem::path(::mixq::testing::FixturePath("mlp_fmnist.onnx"))
          .parent_path();
  int raised = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string file = entry.path().filename().string();
    if (entry.path().extension() != ".onnx" || file == "unsupported_op.onnx")
      continue;
    SCOPED_TRACE(file);
    onnx::ModelProto model;
    std::ifstream in(entry.path(), std::ios::binary);
    ASSERT_TRUE(model.ParseFromIstream(&in));
    if (Opset(model) < 13) continue;  // refused by design (tested above)
    absl::StatusOr<std::unique_ptr<engine::Model>> loaded =
        engine::Model::FromOnnxBytes(model.SerializeAsString());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    engine::Shape shape = (*loaded)->input_shape();
    shape[0] = 3;
    Tensor x(shape);
    for (int64_t i = 0; i < x.size(); ++i)
      x.data()[i] = 0.01f * static_cast<float>(i % 97) - 0.4f;
    const absl::StatusOr<Tensor> before = RunModel(model, x);
    ASSERT_TRUE(before.ok()) << before.status();
    const absl::Status status = RaiseToOpset21(&model);
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_EQ(Opset(model), kOpset21);
    const absl::StatusOr<Tensor> after = RunModel(model, x);
    ASSERT_TRUE(after.ok()) << after.status();
    EXPECT_EQ(after->ToVector(), before->ToVector());
    ++raised;
  }
  EXPECT_GE(raised, 40);
}

}  // namespace
}  // namespace mixq::search
