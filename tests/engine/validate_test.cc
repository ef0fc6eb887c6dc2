// ValidateModel: one crafted model per hazard, each a small edit of a valid
// tiny model, with the status code and a message that names the culprit.
#include "engine/validate.h"

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "tests/support/onnx_builder.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::OnnxBuilder;
using ::testing::HasSubstr;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// x [batch, 2] -> Gemm(w [2, 2], bias [2]) "fc" -> h -> Relu "relu" -> y.
onnx::ModelProto TinyModel() {
  OnnxBuilder b;
  b.Input("x", {-1, 2}).Output("y");
  b.Initializer("w", {2, 2}, {1, 2, 3, 4});
  b.Initializer("bias", {2}, {0.5f, -0.5f});
  b.Node("Gemm", {"x", "w", "bias"}, {"h"}, "fc");
  b.Node("Relu", {"h"}, {"y"}, "relu");
  return b.proto();
}

onnx::GraphProto& Graph(onnx::ModelProto* m) { return *m->mutable_graph(); }
onnx::TensorProto& W(onnx::ModelProto* m) {
  return *Graph(m).mutable_initializer(0);
}
onnx::NodeProto& Fc(onnx::ModelProto* m) { return *Graph(m).mutable_node(0); }
onnx::NodeProto& Relu(onnx::ModelProto* m) { return *Graph(m).mutable_node(1); }

// Stores `values` in `t` as raw_data.
void SetRaw(onnx::TensorProto* t, const std::vector<float>& values) {
  t->clear_float_data();
  t->set_raw_data(std::string(reinterpret_cast<const char*>(values.data()),
                              values.size() * sizeof(float)));
}

// A declared-shape value_info entry for `name`.
void AddValueInfo(onnx::ModelProto* m, const std::string& name,
                  const std::vector<int64_t>& dims) {
  onnx::ValueInfoProto* info = Graph(m).add_value_info();
  info->set_name(name);
  auto* type = info->mutable_type()->mutable_tensor_type();
  type->set_elem_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) type->mutable_shape()->add_dim()->set_dim_value(d);
}

// A Constant node "c" writing "k" (unused by the rest of the graph).
onnx::TensorProto* AddConstant(onnx::ModelProto* m) {
  onnx::NodeProto* node = Graph(m).add_node();
  node->set_op_type("Constant");
  node->set_name("c");
  node->add_output("k");
  return testing::SetTensor(node);
}

struct Case {
  std::string name;
  std::function<void(onnx::ModelProto*)> mutate;
  absl::StatusCode code;
  std::string message;  // a part of the status message
  std::function<void(ModelLimits*)> limit = nullptr;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

const absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;
const absl::StatusCode kExhausted = absl::StatusCode::kResourceExhausted;

std::vector<Case> Cases() {
  return {
      // ---- The model.
      {"NoGraph", [](onnx::ModelProto* m) { m->clear_graph(); }, kInvalid,
       "it has no graph"},
      {"NoIrVersion", [](onnx::ModelProto* m) { m->clear_ir_version(); },
       kInvalid, "ir_version 0 is not supported"},
      {"NoDefaultOpset",
       [](onnx::ModelProto* m) { m->mutable_opset_import(0)->set_domain("x"); },
       kInvalid, "opset_import has no entry for the default ONNX domain"},
      {"DefaultOpsetTwice",
       [](onnx::ModelProto* m) {
         m->add_opset_import()->set_domain("ai.onnx");
         m->mutable_opset_import(1)->set_version(13);
       },
       kInvalid, "lists the default ONNX domain 2 times"},
      {"NegativeOpset",
       [](onnx::ModelProto* m) { m->mutable_opset_import(0)->set_version(-1); },
       kInvalid, "version -1 of the default domain is not positive"},
      {"LocalFunction",
       [](onnx::ModelProto* m) { m->add_functions()->set_name("helper"); },
       kInvalid, "function 'helper'"},

      // ---- Tensors that hold data.
      {"NegativeDim", [](onnx::ModelProto* m) { W(m).set_dims(0, -2); },
       kInvalid, "initializer 'w' has a negative dimension (dim 0 is -2)"},
      {"HugeDimWithoutData",
       [](onnx::ModelProto* m) { W(m).set_dims(0, int64_t{1} << 40); },
       kInvalid, "initializer 'w' of shape [1099511627776, 2] needs"},
      {"OverflowingElementCount",
       [](onnx::ModelProto* m) {
         W(m).set_dims(0, int64_t{1} << 32);
         W(m).set_dims(1, int64_t{1} << 32);
       },
       kInvalid,
       "initializer 'w' of shape [4294967296, 4294967296] is too "
       "large: its element count overflows int64"},
      {"OverflowHiddenByZeroDim",
       [](onnx::ModelProto* m) {
         W(m).clear_float_data();
         W(m).set_dims(0, 0);
         W(m).set_dims(1, int64_t{1} << 40);
       },
       kExhausted,
       "initializer 'w' of shape [0, 1099511627776] has a "
       "non-zero dims product of 1099511627776"},
      {"RawDataTooShort",
       [](onnx::ModelProto* m) {
         SetRaw(&W(m), {1, 2, 3});
       },
       kInvalid,
       "initializer 'w' of shape [2, 2] needs 4 values, has 3 (raw_data of "
       "12 bytes"},
      {"RawDataTooLong",
       [](onnx::ModelProto* m) {
         SetRaw(&W(m), {1, 2, 3, 4, 5});
       },
       kInvalid, "needs 4 values, has 5 (raw_data of 20 bytes"},
      {"RawDataNotWholeElements",
       [](onnx::ModelProto* m) {
         W(m).clear_float_data();
         W(m).set_raw_data(std::string(15, '\0'));
       },
       kInvalid, "raw_data of 15 bytes; FLOAT takes 4"},
      {"TypedFieldTooShort",
       [](onnx::ModelProto* m) { W(m).mutable_float_data()->RemoveLast(); },
       kInvalid,
       "initializer 'w' of shape [2, 2] needs 4 values, has 3 "
       "(float_data)"},
      {"NoDataAtAll", [](onnx::ModelProto* m) { W(m).clear_float_data(); },
       kInvalid, "needs 4 values, has 0"},
      {"WrongTypedField",
       [](onnx::ModelProto* m) {
         W(m).clear_float_data();
         for (int i = 0; i < 4; ++i) W(m).add_int64_data(i);
       },
       kInvalid,
       "initializer 'w' is a FLOAT tensor with values in "
       "int64_data; they belong in float_data"},
      {"RawAndTypedData",
       [](onnx::ModelProto* m) { W(m).set_raw_data(std::string(16, '\0')); },
       kInvalid, "initializer 'w' has both raw_data and float_data"},
      {"StringWithRawData",
       [](onnx::ModelProto* m) {
         W(m).clear_float_data();
         W(m).set_data_type(onnx::TensorProto::STRING);
         W(m).set_raw_data("abcd");
       },
       kInvalid, "STRING tensor with raw_data"},
      {"ExternalData",
       [](onnx::ModelProto* m) {
         W(m).clear_float_data();
         W(m).set_data_location(onnx::TensorProto::EXTERNAL);
         auto* entry = W(m).add_external_data();
         entry->set_key("location");
         entry->set_value("../../etc/passwd");
       },
       kInvalid,
       "initializer 'w' uses external data (location "
       "'../../etc/passwd'), which is rejected"},
      {"ExternalDataEntryWithoutLocationFlag",
       [](onnx::ModelProto* m) {
         auto* entry = W(m).add_external_data();
         entry->set_key("location");
         entry->set_value("/dev/zero");
       },
       kInvalid, "initializer 'w' uses external data (location '/dev/zero')"},
      {"Segmented",
       [](onnx::ModelProto* m) {
         W(m).mutable_segment()->set_begin(0);
         W(m).mutable_segment()->set_end(2);
       },
       kInvalid, "initializer 'w' is segmented"},
      {"UnknownDataType", [](onnx::ModelProto* m) { W(m).set_data_type(99); },
       kInvalid,
       "initializer 'w' has data type 99, which is not an ONNX element type"},
      {"UndefinedDataType",
       [](onnx::ModelProto* m) {
         W(m).set_data_type(onnx::TensorProto::UNDEFINED);
       },
       kInvalid, "initializer 'w' has data type UNDEFINED"},
      {"NaNWeight", [](onnx::ModelProto* m) { W(m).set_float_data(2, kNaN); },
       kInvalid,
       "initializer 'w' holds NaN at element 2; weights must be "
       "finite"},
      {"InfWeightInRawData",
       [](onnx::ModelProto* m) {
         SetRaw(&W(m), {1, 2, 3, -kInf});
       },
       kInvalid, "initializer 'w' holds an infinite value at element 3"},
      {"NaNDoubleWeight",
       [](onnx::ModelProto* m) {
         W(m).clear_float_data();
         W(m).set_data_type(onnx::TensorProto::DOUBLE);
         for (double v : {1.0, std::nan(""), 3.0, 4.0}) W(m).add_double_data(v);
       },
       kInvalid, "initializer 'w' holds NaN at element 1"},
      {"InfHalfWeight",
       [](onnx::ModelProto* m) {
         W(m).clear_float_data();
         W(m).set_data_type(onnx::TensorProto::FLOAT16);
         // 1.0, 2.0, +inf, 0 as IEEE half bits.
         for (int bits : {0x3C00, 0x4000, 0x7C00, 0}) W(m).add_int32_data(bits);
       },
       kInvalid, "initializer 'w' holds an infinite value at element 2"},
      {"NaNBfloat16Weight",
       [](onnx::ModelProto* m) {
         W(m).clear_float_data();
         W(m).set_data_type(onnx::TensorProto::BFLOAT16);
         const uint16_t bits[] = {0x3F80, 0x7FC0, 0, 0};  // 1.0, NaN, 0, 0
         W(m).set_raw_data(
             std::string(reinterpret_cast<const char*>(bits), sizeof(bits)));
       },
       kInvalid, "initializer 'w' holds NaN at element 1"},
      {"ConstantWithShortData",
       [](onnx::ModelProto* m) {
         OnnxBuilder::FillFloat(AddConstant(m), "", {3}, {1, 2});
       },
       kInvalid,
       "attribute 'value' of node 'c' (Constant) of shape [3] "
       "needs 3 values, has 2"},
      {"ConstantWithNegativeDim",
       [](onnx::ModelProto* m) {
         OnnxBuilder::FillFloat(AddConstant(m), "", {-1}, {});
       },
       kInvalid,
       "attribute 'value' of node 'c' (Constant) has a negative "
       "dimension"},
      {"ConstantWithExternalData",
       [](onnx::ModelProto* m) {
         onnx::TensorProto* t = AddConstant(m);
         OnnxBuilder::FillFloat(t, "", {1}, {1});
         t->set_data_location(onnx::TensorProto::EXTERNAL);
       },
       kInvalid, "attribute 'value' of node 'c' (Constant) uses external data"},

      // ---- Declared shapes.
      {"NegativeDimInGraphInput",
       [](onnx::ModelProto* m) {
         Graph(m)
             .mutable_input(0)
             ->mutable_type()
             ->mutable_tensor_type()
             ->mutable_shape()
             ->mutable_dim(1)
             ->set_dim_value(-5);
       },
       kInvalid, "graph input 'x' has a negative dimension (dim 1 is -5)"},
      {"HugeDimInValueInfo",
       [](onnx::ModelProto* m) {
         AddValueInfo(m, "h", {1, int64_t{1} << 40});
       },
       kExhausted,
       "value_info 'h': dim 1 is 1099511627776; the limit is "
       "2147483648 (ModelLimits::max_dim)"},
      {"OverflowingValueInfo",
       [](onnx::ModelProto* m) {
         AddValueInfo(m, "h", {1 << 30, 1 << 30, 1 << 30});
       },
       kExhausted, "value_info 'h': the product of its dims overflows int64"},
      {"UnknownElementTypeInGraphOutput",
       [](onnx::ModelProto* m) {
         Graph(m)
             .mutable_output(0)
             ->mutable_type()
             ->mutable_tensor_type()
             ->set_elem_type(1234);
       },
       kInvalid, "graph output 'y' has element type 1234"},

      // ---- Names and definitions.
      {"TwoNodesWriteOneName",
       [](onnx::ModelProto* m) { Fc(m).set_output(0, "y"); }, kInvalid,
       "value 'y' is defined more than once: by node 'relu' (Relu) and by "
       "node 'fc' (Gemm)"},
      {"NodeWritesAnInitializer",
       [](onnx::ModelProto* m) { Relu(m).set_output(0, "w"); }, kInvalid,
       "value 'w' is defined more than once: by node 'relu' (Relu) and by "
       "initializer #0"},
      {"NodeWritesTheGraphInput",
       [](onnx::ModelProto* m) { Relu(m).add_output("x"); }, kInvalid,
       "value 'x' is defined more than once: by node 'relu' (Relu) and by "
       "graph input #0"},
      {"NodeWritesOneNameTwice",
       [](onnx::ModelProto* m) { Relu(m).add_output("y"); }, kInvalid,
       "value 'y' is defined more than once: by node 'relu' (Relu) and by "
       "node 'relu' (Relu)"},
      {"InitializerTwice",
       [](onnx::ModelProto* m) { *Graph(m).add_initializer() = W(m); },
       kInvalid,
       "value 'w' is defined more than once: by initializer #2 and "
       "by initializer #0"},
      {"GraphInputTwice",
       [](onnx::ModelProto* m) { *Graph(m).add_input() = Graph(m).input(0); },
       kInvalid, "graph input 'x' is listed more than once"},
      {"GraphOutputTwice",
       [](onnx::ModelProto* m) { *Graph(m).add_output() = Graph(m).output(0); },
       kInvalid, "graph output 'y' is listed more than once"},
      {"UnnamedInitializer", [](onnx::ModelProto* m) { W(m).clear_name(); },
       kInvalid, "initializer #0 has no name"},
      {"UnnamedGraphInput",
       [](onnx::ModelProto* m) { Graph(m).mutable_input(0)->clear_name(); },
       kInvalid, "graph input #0 has no name"},
      {"UnnamedGraphOutput",
       [](onnx::ModelProto* m) { Graph(m).mutable_output(0)->clear_name(); },
       kInvalid, "graph output #0 has no name"},
      {"UnnamedValueInfo",
       [](onnx::ModelProto* m) { AddValueInfo(m, "", {1}); }, kInvalid,
       "value_info #0 has no name"},
      {"NodeWithoutNamedOutput",
       [](onnx::ModelProto* m) { Relu(m).set_output(0, ""); }, kInvalid,
       "node 'relu' (Relu) has no named output"},
      {"NodeWithoutOpType",
       [](onnx::ModelProto* m) { Relu(m).clear_op_type(); }, kInvalid,
       "node 'relu' () has no op_type"},
      {"UnnamedAttribute",
       [](onnx::ModelProto* m) { Fc(m).add_attribute()->set_i(1); }, kInvalid,
       "node 'fc' (Gemm) has an attribute without a name"},
      {"AttributeTwice",
       [](onnx::ModelProto* m) {
         testing::SetInt(&Fc(m), "transB", 1);
         testing::SetInt(&Fc(m), "transB", 0);
       },
       kInvalid,
       "attribute 'transB' of node 'fc' (Gemm) is given more than "
       "once"},
      {"LongNamesAreShortened",
       [](onnx::ModelProto* m) {
         Relu(m).set_name(std::string(4000, 'n'));  // within max_name_bytes
         Relu(m).clear_op_type();
       },
       kInvalid, "... (4000 characters)' () has no op_type"},

      // ---- Float attributes: the operator's constants must be finite.
      {"GemmAlphaInfinite",
       [](onnx::ModelProto* m) { testing::SetFloat(&Fc(m), "alpha", kInf); },
       kInvalid,
       "attribute 'alpha' of node 'fc' (Gemm) is inf; float attributes must "
       "be finite"},
      {"GemmBetaNaN",
       [](onnx::ModelProto* m) { testing::SetFloat(&Fc(m), "beta", kNaN); },
       kInvalid, "attribute 'beta' of node 'fc' (Gemm) is NaN"},
      {"LeakyReluAlphaNaN",
       [](onnx::ModelProto* m) {
         Relu(m).set_op_type("LeakyRelu");
         testing::SetFloat(&Relu(m), "alpha", kNaN);
       },
       kInvalid, "attribute 'alpha' of node 'relu' (LeakyRelu) is NaN"},
      {"EluAlphaMinusInfinity",
       [](onnx::ModelProto* m) {
         Relu(m).set_op_type("Elu");
         testing::SetFloat(&Relu(m), "alpha", -kInf);
       },
       kInvalid, "attribute 'alpha' of node 'relu' (Elu) is -inf"},
      {"SeluGammaInfinite",
       [](onnx::ModelProto* m) {
         Relu(m).set_op_type("Selu");
         testing::SetFloat(&Relu(m), "gamma", kInf);
       },
       kInvalid, "attribute 'gamma' of node 'relu' (Selu) is inf"},
      {"HardSigmoidBetaNaN",
       [](onnx::ModelProto* m) {
         Relu(m).set_op_type("HardSigmoid");
         testing::SetFloat(&Relu(m), "beta", kNaN);
       },
       kInvalid, "attribute 'beta' of node 'relu' (HardSigmoid) is NaN"},
      {"ClipMaxNaN",
       [](onnx::ModelProto* m) {
         Relu(m).set_op_type("Clip");
         testing::SetFloat(&Relu(m), "max", kNaN);
       },
       kInvalid, "attribute 'max' of node 'relu' (Clip) is NaN"},
      {"BatchNormEpsilonInfinite",
       [](onnx::ModelProto* m) {
         Relu(m).set_op_type("BatchNormalization");
         testing::SetFloat(&Relu(m), "epsilon", kInf);
       },
       kInvalid,
       "attribute 'epsilon' of node 'relu' (BatchNormalization) is inf"},
      {"FloatsEntryNaN",
       [](onnx::ModelProto* m) {
         Relu(m).set_op_type("Upsample");
         onnx::AttributeProto* attr = Relu(m).add_attribute();
         attr->set_name("scales");
         attr->set_type(onnx::AttributeProto::FLOATS);
         attr->add_floats(1.0f);
         attr->add_floats(kNaN);
       },
       kInvalid,
       "attribute 'scales' of node 'relu' (Upsample) is (entry 1) NaN"},

      // ---- Operators and structure.
      {"UnknownDomain",
       [](onnx::ModelProto* m) { Relu(m).set_domain("com.example"); }, kInvalid,
       "unsupported operator 'com.example.Relu' (node 'relu'): "
       "domain 'com.example' is unknown"},
      {"SubgraphAttribute",
       [](onnx::ModelProto* m) {
         onnx::AttributeProto* attr = Relu(m).add_attribute();
         attr->set_name("body");
         attr->set_type(onnx::AttributeProto::GRAPH);
         attr->mutable_g()->set_name("inner");
       },
       kInvalid, "attribute 'body' of node 'relu' (Relu) holds a subgraph"},
      {"SparseTensorAttribute",
       [](onnx::ModelProto* m) {
         onnx::AttributeProto* attr = Relu(m).add_attribute();
         attr->set_name("sparse");
         attr->mutable_sparse_tensor();
       },
       kInvalid,
       "attribute 'sparse' of node 'relu' (Relu) holds a sparse "
       "tensor"},
      {"SparseInitializer",
       [](onnx::ModelProto* m) {
         Graph(m).add_sparse_initializer()->mutable_values()->set_name("s");
       },
       kInvalid, "sparse initializer 's' is not supported"},
      {"Cycle",
       [](onnx::ModelProto* m) {
         Fc(m).set_input(0, "y");  // fc reads relu's output, relu reads fc's
       },
       kInvalid, "the graph has a cycle (through node 'fc')"},
      {"SelfLoop", [](onnx::ModelProto* m) { Relu(m).set_input(0, "y"); },
       kInvalid, "the graph has a cycle (through node 'relu')"},
      {"InputUsedButNeverDefined",
       [](onnx::ModelProto* m) { Relu(m).set_input(0, "nowhere"); }, kInvalid,
       "input 'nowhere' of node 'relu' (Relu) is not produced by any node, "
       "initializer or graph input"},
      {"GraphOutputNeverDefined",
       [](onnx::ModelProto* m) { Graph(m).mutable_output(0)->set_name("z"); },
       kInvalid, "graph output 'z' is not produced by any node"},

      // ---- Limits.
      {"TooManyNodes", [](onnx::ModelProto*) {}, kExhausted,
       "the graph has 2 nodes; the limit is 1 (ModelLimits::max_nodes)",
       [](ModelLimits* l) { l->max_nodes = 1; }},
      {"TooManyInitializers", [](onnx::ModelProto*) {}, kExhausted,
       "(ModelLimits::max_initializers)",
       [](ModelLimits* l) { l->max_initializers = 1; }},
      {"TooManyNodeInputs", [](onnx::ModelProto*) {}, kExhausted,
       "node 'fc' (Gemm) has 3 inputs; the limit is 2 "
       "(ModelLimits::max_node_inputs)",
       [](ModelLimits* l) { l->max_node_inputs = 2; }},
      {"TooManyNodeOutputs",
       [](onnx::ModelProto* m) { Relu(m).add_output("y2"); }, kExhausted,
       "node 'relu' (Relu) has 2 outputs; the limit is 1",
       [](ModelLimits* l) { l->max_node_outputs = 1; }},
      {"RankAboveLimit", [](onnx::ModelProto*) {}, kExhausted,
       "graph input 'x' has rank 2; the limit is 1 (ModelLimits::max_rank)",
       [](ModelLimits* l) { l->max_rank = 1; }},
      {"TensorAboveLimit", [](onnx::ModelProto*) {}, kExhausted,
       "initializer 'w' of shape [2, 2] has 4 elements; the limit is 3 "
       "(ModelLimits::max_tensor_elements)",
       [](ModelLimits* l) { l->max_tensor_elements = 3; }},
      {"TotalBytesAboveLimit", [](onnx::ModelProto*) {}, kExhausted,
       "more than 20 bytes (reached at initializer 'bias')",
       [](ModelLimits* l) { l->max_total_tensor_bytes = 20; }},
      {"DeclaredDimAboveLimit", [](onnx::ModelProto*) {}, kExhausted,
       "graph input 'x': dim 1 is 2; the limit is 1",
       [](ModelLimits* l) { l->max_dim = 1; }},
      // Names reach stored policies and replies: a default-limit case with a
      // name just over 4 KiB, and each kind of name under a lowered limit.
      {
          "InitializerNameAboveDefaultLimit",
          [](onnx::ModelProto* m) {
            const std::string name(4097, 'w');
            W(m).set_name(name);
            Fc(m).set_input(1, name);
          },
          kExhausted,
          "the name of initializer #0 'wwww",
      },
      {"InitializerNameBytes", [](onnx::ModelProto*) {}, kExhausted,
       "has 4 bytes; the limit is 3 (ModelLimits::max_name_bytes)",
       [](ModelLimits* l) { l->max_name_bytes = 3; }},
      {"NodeNameAboveLimit",
       [](onnx::ModelProto* m) { Relu(m).set_name("relu-long"); }, kExhausted,
       "the name of node #1 'relu-long' has 9 bytes",
       [](ModelLimits* l) { l->max_name_bytes = 8; }},
      {"NodeOutputNameAboveLimit",
       [](onnx::ModelProto* m) {
         Relu(m).set_output(0, "y-long-name");
         Graph(m).mutable_output(0)->set_name("y-long-name");
       },
       kExhausted, "the name of an output of node 'relu' (Relu) 'y-long-name'",
       [](ModelLimits* l) { l->max_name_bytes = 8; }},
      {"ValueInfoNameAboveLimit",
       [](onnx::ModelProto* m) {
         AddValueInfo(m, "h-long-name", {1, 2});
       },
       kExhausted, "the name of value_info #0 'h-long-name' has 11 bytes",
       [](ModelLimits* l) { l->max_name_bytes = 8; }},
  };
}

class ValidateModelTest : public ::testing::TestWithParam<Case> {};

TEST_P(ValidateModelTest, RejectsWithCodeAndNamedCulprit) {
  const Case& c = GetParam();
  onnx::ModelProto model = TinyModel();
  ASSERT_TRUE(ValidateModel(model).ok());
  c.mutate(&model);
  ModelLimits limits;
  if (c.limit) c.limit(&limits);
  const absl::Status status = ValidateModel(model, limits);
  EXPECT_EQ(status.code(), c.code) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(c.message));
}

INSTANTIATE_TEST_SUITE_P(Hazards, ValidateModelTest,
                         ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

TEST(ValidateModelTest, AcceptsTheTinyModelAndItImports) {
  const onnx::ModelProto model = TinyModel();
  EXPECT_TRUE(ValidateModel(model).ok());
  EXPECT_TRUE(Model::FromOnnxBytes(model.SerializeAsString()).ok());
}

// What real models contain and the importer handles stays accepted.
TEST(ValidateModelTest, AcceptsLegitimateVariants) {
  const std::vector<
      std::pair<std::string, std::function<void(onnx::ModelProto*)>>>
      variants = {
          {"unsorted nodes",
           [](onnx::ModelProto* m) {
             Graph(m).mutable_node()->SwapElements(0, 1);
           }},
          {"initializer listed as a graph input",
           [](onnx::ModelProto* m) {
             onnx::ValueInfoProto* input = Graph(m).add_input();
             input->set_name("w");
             input->mutable_type()->mutable_tensor_type()->set_elem_type(
                 onnx::TensorProto::FLOAT);
           }},
          {"omitted optional input and output",
           [](onnx::ModelProto* m) {
             Relu(m).set_op_type("Dropout");
             Relu(m).add_input("");
             Relu(m).add_output("");
           }},
          {"domain 'ai.onnx'",
           [](onnx::ModelProto* m) {
             Relu(m).set_domain("ai.onnx");
             m->mutable_opset_import(0)->set_domain("ai.onnx");
           }},
          {"another domain imported but unused",
           [](onnx::ModelProto* m) {
             m->add_opset_import()->set_domain("ai.onnx.ml");
           }},
          {"an infinity in a Constant (not a weight)",
           [](onnx::ModelProto* m) {
             OnnxBuilder::FillFloat(AddConstant(m), "", {2}, {-kInf, 0});
           }},
          {"an infinity in a Constant's value_float (data, not a constant "
           "of the operator)",
           [](onnx::ModelProto* m) {
             onnx::NodeProto* node = Graph(m).add_node();
             node->set_op_type("Constant");
             node->set_name("c");
             node->add_output("k");
             testing::SetFloat(node, "value_float", -kInf);
           }},
          {"an empty tensor",
           [](onnx::ModelProto* m) {
             OnnxBuilder::FillFloat(AddConstant(m), "", {0, 3}, {});
           }},
          {"symbolic dims and value_info",
           [](onnx::ModelProto* m) {
             AddValueInfo(m, "h", {1, 2});
           }},
          {"raw data",
           [](onnx::ModelProto* m) {
             SetRaw(&W(m), {1, 2, 3, 4});
           }},
      };
  for (const auto& [name, mutate] : variants) {
    onnx::ModelProto model = TinyModel();
    mutate(&model);
    EXPECT_TRUE(ValidateModel(model).ok())
        << name << ": " << ValidateModel(model);
  }
}

// The default limits refuse an absurd node count, and the importer passes
// the code on.
TEST(ValidateModelTest, DefaultLimitsRefuseAbsurdNodeCounts) {
  onnx::ModelProto model = TinyModel();
  const int64_t nodes = ModelLimits().max_nodes + 1;
  for (int64_t i = Graph(&model).node_size(); i < nodes; ++i) {
    onnx::NodeProto* node = Graph(&model).add_node();
    node->set_op_type("Relu");
    node->add_input("y");
    node->add_output(absl::StrCat("r", i));
  }
  const absl::StatusOr<std::unique_ptr<Model>> imported =
      Model::FromOnnxBytes(model.SerializeAsString());
  EXPECT_EQ(imported.status().code(), kExhausted) << imported.status();
  EXPECT_THAT(std::string(imported.status().message()),
              HasSubstr("the graph has 100001 nodes; the limit is 100000"));
}

}  // namespace
}  // namespace mixq::engine
