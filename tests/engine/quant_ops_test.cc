// QuantizeLinear and DequantizeLinear (ops_quant.cc) through the importer:
// hand-computed per-tensor and per-axis values (ties to even, saturation,
// int8 vs uint8 from the zero point's type), integer weight initializers
// folded through DequantizeLinear into Conv and Gemm weights, the
// straight-through gradients by hand (finite differences do not apply to a
// step function), the errors for malformed nodes, and ONNX's conformance
// cases with their integer tensors converted (engine_conformance_test skips
// them: their input or output is not float32).
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/model.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "tests/support/kernel_testing.h"
#include "tests/support/onnx_builder.h"
#include "util/file.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::OnnxBuilder;
using ::mixq::testing::SetInt;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::FloatNear;
using ::testing::HasSubstr;
using ::testing::Pointwise;

constexpr float kTolerance = 1e-6f;
constexpr int kQuantizeOpset = 13;

// An initializer of an integer element type (INT8, UINT8, INT32, ...), in
// raw_data or in int32_data as ONNX stores the narrow types.
void AddIntInitializer(OnnxBuilder& b, const std::string& name, int type,
                       const Shape& dims, const std::vector<int32_t>& values,
                       bool raw = false) {
  onnx::TensorProto* t = b.graph().add_initializer();
  t->set_name(name);
  t->set_data_type(type);
  for (int64_t d : dims) t->add_dims(d);
  if (!raw) {
    for (int32_t v : values) t->add_int32_data(v);
    return;
  }
  std::string bytes;
  for (int32_t v : values) {
    if (type == onnx::TensorProto::INT32) {
      bytes.append(reinterpret_cast<const char*>(&v), sizeof(v));
    } else {
      bytes.push_back(static_cast<char>(v));  // one byte per INT8/UINT8
    }
  }
  t->set_raw_data(bytes);
}

// Runs the model in `bytes` with its stored weights.
absl::StatusOr<Tensor> RunModel(const Model& model, const Tensor& input) {
  std::vector<const Tensor*> params;
  for (const Tensor& p : model.initial_params()) params.push_back(&p);
  return model.Forward(input, params, nullptr);
}

absl::StatusOr<Tensor> RunModel(const std::string& bytes, const Tensor& input) {
  absl::StatusOr<std::unique_ptr<Model>> model = Model::FromOnnxBytes(bytes);
  if (!model.ok()) return model.status();
  return RunModel(**model, input);
}

// --------------------------------------------------- Forward by hand ----

// One QuantizeLinear or DequantizeLinear node `q` over a graph input of
// shape [1, dims...] (batch dim symbolic).
struct QdqCase {
  std::string name;
  std::string op_type;
  Shape dims;  // without the batch
  std::vector<float> x;
  Shape scale_shape;  // {} for a scalar
  std::vector<float> scale;
  int zero_point_type = 0;  // 0: no zero point
  std::vector<int32_t> zero_point = {};
  std::optional<int64_t> axis = std::nullopt;
  std::vector<float> expected = {};
  int64_t opset = kQuantizeOpset;
};

void PrintTo(const QdqCase& c, std::ostream* os) { *os << c.name; }

std::string BuildQdq(const QdqCase& c) {
  OnnxBuilder b(c.opset);
  Shape input = {-1};
  input.insert(input.end(), c.dims.begin(), c.dims.end());
  b.Input("x", input).Output("y");
  b.Initializer("scale", c.scale_shape, c.scale);
  std::vector<std::string> inputs = {"x", "scale"};
  if (c.zero_point_type != 0) {
    AddIntInitializer(b, "zp", c.zero_point_type, c.scale_shape, c.zero_point);
    inputs.push_back("zp");
  }
  onnx::NodeProto* node = b.Node(c.op_type, inputs, {"y"}, "q");
  if (c.axis) SetInt(node, "axis", *c.axis);
  return b.Bytes();
}

class QdqForwardTest : public ::testing::TestWithParam<QdqCase> {};

TEST_P(QdqForwardTest, MatchesHandComputedValues) {
  const QdqCase& c = GetParam();
  Shape shape = {1};
  shape.insert(shape.end(), c.dims.begin(), c.dims.end());
  const absl::StatusOr<Tensor> y = RunModel(BuildQdq(c), Tensor(shape, c.x));
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->shape(), shape);
  EXPECT_THAT(y->ToVector(), Pointwise(FloatNear(kTolerance), c.expected));
}

constexpr int kUint8 = onnx::TensorProto::UINT8;
constexpr int kInt8 = onnx::TensorProto::INT8;

const QdqCase kForwardCases[] = {
    // No zero point: uint8. Ties go to even: 2.5 -> 2, 3.5 -> 4, -2.5 -> -2
    // (here saturated to 0), 254.5 -> 254.
    {"Uint8ByDefault",
     "QuantizeLinear",
     {8},
     {2.5f, 3.5f, -2.5f, 0.5f, 1.5f, 254.5f, 300.0f, -1.0f},
     {},
     {1.0f},
     0,
     {},
     std::nullopt,
     {2, 4, 0, 0, 2, 254, 255, 0}},
    // An int8 zero point makes the output int8.
    {"Int8TiesToEven",
     "QuantizeLinear",
     {8},
     {2.5f, 3.5f, -2.5f, 0.5f, 1.5f, 254.5f, 300.0f, -1.0f},
     {},
     {1.0f},
     kInt8,
     {0},
     std::nullopt,
     {2, 4, -2, 0, 2, 127, 127, -1}},
    // 3 / 2 = 1.5 -> 2; -254 / 2 + 128 = 1.
    {"Uint8ZeroPoint",
     "QuantizeLinear",
     {6},
     {0.0f, 2.0f, 3.0f, 1000.0f, -254.0f, -1000.0f},
     {},
     {2.0f},
     kUint8,
     {128},
     std::nullopt,
     {128, 129, 130, 255, 1, 0}},
    // x / 0.5 = -200, -118, 2.5, 140; + (-10) -> -210, -128, -8, 130.
    {"Int8ZeroPointSaturates",
     "QuantizeLinear",
     {4},
     {-100.0f, -59.0f, 1.25f, 70.0f},
     {1},
     {0.5f},
     kInt8,
     {-10},
     std::nullopt,
     {-128, -128, -8, 127}},
    // Per channel along axis 1 (the default): scales 1, 2, 4; zero points
    // 0, 10, -5. Channel 1: 5 / 2 = 2.5 -> 2, -7 / 2 = -3.5 -> -4.
    {"PerAxisInt8",
     "QuantizeLinear",
     {3, 2},
     {1.5f, -2.5f, 5.0f, -7.0f, 10.0f, 600.0f},
     {3},
     {1.0f, 2.0f, 4.0f},
     kInt8,
     {0, 10, -5},
     std::nullopt,
     {2, -2, 12, 6, -3, 127}},
    // Along the last axis (-1); uint8 zero points 0, 100, 200.
    {"PerAxisLastAxis",
     "QuantizeLinear",
     {2, 3},
     {1.0f, 2.0f, 3.0f, -4.0f, -5.0f, 400.0f},
     {3},
     {1.0f, 2.0f, 4.0f},
     kUint8,
     {0, 100, 200},
     -1,
     {1, 101, 201, 0, 98, 255}},
    // Opset 10: per-tensor only.
    {"Opset10",
     "QuantizeLinear",
     {3},
     {-3.0f, 0.5f, 1.5f},
     {},
     {1.0f},
     kInt8,
     {1},
     std::nullopt,
     {-2, 1, 3},
     10},
    {"DequantizePerTensor",
     "DequantizeLinear",
     {4},
     {0.0f, 3.0f, 128.0f, 255.0f},
     {},
     {2.0f},
     kUint8,
     {128},
     std::nullopt,
     {-256, -250, 0, 254}},
    {"DequantizePerTensorNoZeroPoint",
     "DequantizeLinear",
     {3},
     {-128.0f, 0.0f, 127.0f},
     {},
     {0.5f},
     0,
     {},
     std::nullopt,
     {-64.0f, 0.0f, 63.5f}},
    // (x - zp) * scale per channel: (3 - 84) * 2, (89 - 84) * 2; ...
    {"DequantizePerAxis",
     "DequantizeLinear",
     {3, 2},
     {3.0f, 89.0f, 34.0f, 200.0f, 74.0f, 59.0f},
     {3},
     {2.0f, 4.0f, 5.0f},
     kUint8,
     {84, 24, 196},
     1,
     {-162, 10, 40, 704, -610, -685}},
};

INSTANTIATE_TEST_SUITE_P(Cases, QdqForwardTest,
                         ::testing::ValuesIn(kForwardCases),
                         [](const ::testing::TestParamInfo<QdqCase>& info) {
                           return info.param.name;
                         });

// ---------------------------------------------- Quantized weights ----

TEST(QuantizedWeightTest, Int8ConvWeightFoldsToFloat) {
  // W int8 [2, 1, 1, 2] per output channel (axis 0): scales 0.5, 0.25, zero
  // points 0, 2 -> channel 0: -64, 63.5; channel 1: 0.25, -1.5.
  OnnxBuilder b;
  b.Input("x", {-1, 1, 1, 2}).Output("y");
  AddIntInitializer(b, "w_q", kInt8, {2, 1, 1, 2}, {-128, 127, 3, -4},
                    /*raw=*/true);
  b.Initializer("w_scale", {2}, {0.5f, 0.25f});
  AddIntInitializer(b, "w_zp", kInt8, {2}, {0, 2});
  SetInt(b.Node("DequantizeLinear", {"w_q", "w_scale", "w_zp"}, {"w"}, "dq"),
         "axis", 0);
  b.Node("Conv", {"x", "w"}, {"y"}, "conv");
  absl::StatusOr<std::unique_ptr<Model>> model = b.Build();
  ASSERT_TRUE(model.ok()) << model.status();
  // The weight is a constant now, not a trainable float initializer.
  EXPECT_TRUE((*model)->params().empty());

  OnnxBuilder reference;
  reference.Input("x", {-1, 1, 1, 2}).Output("y");
  reference.Initializer("w", {2, 1, 1, 2}, {-64.0f, 63.5f, 0.25f, -1.5f});
  reference.Node("Conv", {"x", "w"}, {"y"}, "conv");

  const Tensor x({1, 1, 1, 2}, {1.0f, 2.0f});
  const absl::StatusOr<Tensor> y = RunModel(**model, x);
  const absl::StatusOr<Tensor> expected = RunModel(reference.Bytes(), x);
  ASSERT_TRUE(y.ok() && expected.ok());
  // -64 + 127 = 63; 0.25 - 3 = -2.75.
  EXPECT_THAT(y->ToVector(), ElementsAre(63.0f, -2.75f));
  EXPECT_EQ(y->ToVector(), expected->ToVector());
}

TEST(QuantizedWeightTest, Uint8GemmWeightAndInt32BiasFold) {
  // B uint8 [2, 3] (transB), per tensor: (w - 128) * 0.125 = 0, 1, -1 / 2,
  // 0, -2. Bias int32 * 0.0625 (no zero point) = 1, -2.
  OnnxBuilder b;
  b.Input("x", {-1, 3}).Output("y");
  AddIntInitializer(b, "w_q", kUint8, {2, 3}, {128, 136, 120, 144, 128, 112});
  b.Initializer("w_scale", {}, {0.125f});
  AddIntInitializer(b, "w_zp", kUint8, {}, {128});
  AddIntInitializer(b, "b_q", onnx::TensorProto::INT32, {2}, {16, -32},
                    /*raw=*/true);
  b.Initializer("b_scale", {}, {0.0625f});
  b.Node("DequantizeLinear", {"w_q", "w_scale", "w_zp"}, {"w"}, "dq_w");
  b.Node("DequantizeLinear", {"b_q", "b_scale"}, {"bias"}, "dq_b");
  SetInt(b.Node("Gemm", {"x", "w", "bias"}, {"y"}, "fc"), "transB", 1);
  const absl::StatusOr<Tensor> y =
      RunModel(b.Bytes(), Tensor({1, 3}, {1.0f, 2.0f, 3.0f}));
  ASSERT_TRUE(y.ok()) << y.status();
  // 0 + 2 - 3 + 1 = 0; 2 + 0 - 6 - 2 = -6.
  EXPECT_THAT(y->ToVector(), ElementsAre(0.0f, -6.0f));
}

// ------------------------------------------------------ Backward ----

TEST(QdqBackwardTest, QuantizePassesGradOverScaleInsideTheRange) {
  OpConfig config;
  config.op_type = "QuantizeLinear";
  config.node_name = "q";
  config.opset = kQuantizeOpset;
  config.attributes["output_dtype"] = testing::IntAttr(kInt8);
  config.constant_inputs.push_back(testing::FloatInput(0.5f));
  absl::StatusOr<std::unique_ptr<Kernel>> kernel =
      FindOp("QuantizeLinear")->create(config);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  // x / 0.5 rounds to 2, -128, 127 (inside int8) and 128, -129, 200
  // (saturated).
  const Tensor x({6}, {1.0f, -64.0f, 63.4f, 63.9f, -64.3f, 100.0f});
  const Tensor g({6}, {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f});
  Tensor dx({6});
  const Tensor* inputs[] = {&x};
  Tensor* grads[] = {&dx};
  (*kernel)->Backward(inputs, g, grads);
  EXPECT_THAT(dx.ToVector(), ElementsAre(2.0f, 4.0f, 6.0f, 0.0f, 0.0f, 0.0f));

  config.op_type = "DequantizeLinear";
  absl::StatusOr<std::unique_ptr<Kernel>> dequantize =
      FindOp("DequantizeLinear")->create(config);
  ASSERT_TRUE(dequantize.ok()) << dequantize.status();
  (*dequantize)->Backward(inputs, g, grads);
  EXPECT_THAT(dx.ToVector(), ElementsAre(0.5f, 1.0f, 1.5f, 2.0f, 2.5f, 3.0f));
}

TEST(QdqBackwardTest, QuantizeDequantizeIsTheStraightThroughEstimator) {
  // y = DQ(Q(x + w)) with int8 and scale 0.5: dLoss/dw = g inside the range,
  // 0 where Q saturates.
  OnnxBuilder b;
  b.Input("x", {-1, 4}).Output("y");
  b.Initializer("w", {4}, {1.0f, 63.9f, -64.3f, 10.2f});
  b.Initializer("scale", {}, {0.5f});
  AddIntInitializer(b, "zp", kInt8, {}, {0});
  b.Node("Add", {"x", "w"}, {"h"}, "add");
  b.Node("QuantizeLinear", {"h", "scale", "zp"}, {"q"}, "q");
  b.Node("DequantizeLinear", {"q", "scale", "zp"}, {"y"}, "dq");
  absl::StatusOr<std::unique_ptr<Model>> model = b.Build();
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_EQ((*model)->params().size(), 1u);

  const Tensor x({1, 4});
  const Tensor* params[] = {&(*model)->initial_params()[0]};
  ForwardTrace trace;
  const absl::StatusOr<Tensor> y = (*model)->Forward(x, params, &trace);
  ASSERT_TRUE(y.ok()) << y.status();
  // 63.9 / 0.5 = 127.8 -> 128 -> 127; 10.2 / 0.5 = 20.4 -> 20.
  EXPECT_THAT(y->ToVector(), ElementsAre(1.0f, 63.5f, -64.0f, 10.0f));
  std::vector<Tensor> grads;
  ASSERT_TRUE((*model)
                  ->Backward(trace, params,
                             Tensor({1, 4}, {1.0f, 2.0f, 3.0f, 4.0f}), &grads)
                  .ok());
  ASSERT_EQ(grads.size(), 1u);
  EXPECT_THAT(grads[0].ToVector(), ElementsAre(1.0f, 0.0f, 0.0f, 4.0f));
}

// -------------------------------------------------------- Errors ----

struct ErrorCase {
  std::string name;
  void (*build)(OnnxBuilder& b);
  std::string message;  // a substring of the error
};

void PrintTo(const ErrorCase& c, std::ostream* os) { *os << c.name; }

// x [batch, 3] -> QuantizeLinear "q" with the given scale and zero point.
void Quantize(OnnxBuilder& b, const Shape& scale_shape,
              const std::vector<float>& scale, int zero_point_type,
              const std::vector<int32_t>& zero_point) {
  b.Input("x", {-1, 3}).Output("y");
  b.Initializer("scale", scale_shape, scale);
  AddIntInitializer(b, "zp", zero_point_type, scale_shape, zero_point);
  b.Node("QuantizeLinear", {"x", "scale", "zp"}, {"y"}, "q");
}

const ErrorCase kErrorCases[] = {
    {"ScaleIsNotAConstant",
     [](OnnxBuilder& b) {
       b.Input("x", {-1, 3}).Output("y");
       b.Node("Abs", {"x"}, {"s"}, "abs");
       b.Node("QuantizeLinear", {"x", "s"}, {"y"}, "q");
     },
     "must be a constant"},
    {"AxisOutOfRange",
     [](OnnxBuilder& b) {
       Quantize(b, {3}, {1, 2, 3}, kInt8, {0, 0, 0});
       SetInt(b.graph().mutable_node(0), "axis", 2);
     },
     "axis 2 is out of range"},
    {"ScaleLengthDiffersFromTheAxis",
     [](OnnxBuilder& b) {
       Quantize(b, {4}, {1, 2, 3, 4}, kInt8, {0, 0, 0, 0});
     },
     "the scale has 4 elements but axis 1"},
    {"ZeroPointShapeDiffers",
     [](OnnxBuilder& b) {
       Quantize(b, {3}, {1, 2, 3}, kInt8, {0, 0, 0});
       b.graph().mutable_initializer(1)->add_int32_data(0);
       b.graph().mutable_initializer(1)->set_dims(0, 4);
     },
     "must have the scale's shape"},
    {"ZeroPointOutsideItsType",
     [](OnnxBuilder& b) { Quantize(b, {}, {1}, kInt8, {200}); },
     "zero point 200 is outside"},
    {"ScaleNotPositive",
     [](OnnxBuilder& b) { Quantize(b, {}, {0}, kInt8, {0}); },
     "must be finite and positive"},
    {"Int32Output",
     [](OnnxBuilder& b) {
       Quantize(b, {}, {1}, onnx::TensorProto::INT32, {0});
     },
     "element type 6 is not supported"},
    {"OutputTypeDiffersFromTheZeroPoint",
     [](OnnxBuilder& b) {
       Quantize(b, {}, {1}, kInt8, {0});
       SetInt(b.graph().mutable_node(0), "output_dtype", kUint8);
     },
     "output_dtype differs"},
    {"PerAxisBeforeOpset13",
     [](OnnxBuilder& b) {
       b.proto().mutable_opset_import(0)->set_version(10);
       Quantize(b, {3}, {1, 2, 3}, kInt8, {0, 0, 0});
     },
     "needs opset 13"},
    {"BeforeOpset10",
     [](OnnxBuilder& b) {
       b.proto().mutable_opset_import(0)->set_version(9);
       Quantize(b, {}, {1}, kInt8, {0});
     },
     "does not exist before opset 10"},
    {"BlockedQuantization",
     [](OnnxBuilder& b) {
       Quantize(b, {}, {1}, kInt8, {0});
       SetInt(b.graph().mutable_node(0), "block_size", 2);
     },
     "block_size=2"},
    {"DequantizedWeightOfTheWrongScaleLength",
     [](OnnxBuilder& b) {
       b.Input("x", {-1, 3}).Output("y");
       AddIntInitializer(b, "w_q", kInt8, {3, 2}, {1, 2, 3, 4, 5, 6});
       b.Initializer("scale", {2}, {1, 2});
       SetInt(b.Node("DequantizeLinear", {"w_q", "scale"}, {"w"}, "q"), "axis",
              0);
       b.Node("MatMul", {"x", "w"}, {"y"}, "mm");
     },
     "the scale has 2 elements but axis 0"},
};

class QdqErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(QdqErrorTest, IsInvalidArgumentNamingTheNode) {
  OnnxBuilder b;
  GetParam().build(b);
  const absl::StatusOr<std::unique_ptr<Model>> model = b.Build();
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), HasSubstr("'q'"));
  EXPECT_THAT(model.status().message(), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(Cases, QdqErrorTest, ::testing::ValuesIn(kErrorCases),
                         [](const ::testing::TestParamInfo<ErrorCase>& info) {
                           return info.param.name;
                         });

TEST(QdqImportErrorTest, Float8ZeroPointIsAnImportError) {
  OnnxBuilder b;
  // 17: FLOAT8E4M3FN (onnx 1.14+), one byte per element.
  Quantize(b, {}, {1}, 17, {0});
  const absl::StatusOr<std::unique_ptr<Model>> model = b.Build();
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), HasSubstr("data type 17"));
}

// ------------------------------------------------- ONNX conformance ----

constexpr char kNodeCases[] = "/usr/share/libonnx-testdata/data/node/";

onnx::TensorProto ReadTensor(const std::filesystem::path& path) {
  onnx::TensorProto tensor;
  const absl::StatusOr<std::string> bytes = ReadFile(path.string());
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_TRUE(bytes.ok() && tensor.ParseFromString(*bytes)) << path;
  return tensor;
}

// The values of a FLOAT, UINT8 or INT8 tensor as floats, and its shape.
Tensor ToFloat(const onnx::TensorProto& t) {
  const Shape shape(t.dims().begin(), t.dims().end());
  const size_t n = static_cast<size_t>(NumElements(shape));
  std::vector<float> values(n);
  const std::string& raw = t.raw_data();
  for (size_t i = 0; i < n; ++i) {
    switch (t.data_type()) {
      case onnx::TensorProto::FLOAT:
        if (t.has_raw_data()) {
          std::memcpy(&values[i], raw.data() + i * sizeof(float),
                      sizeof(float));
        } else {
          values[i] = t.float_data(i);
        }
        break;
      case onnx::TensorProto::UINT8:
        values[i] =
            t.has_raw_data() ? static_cast<uint8_t>(raw[i]) : t.int32_data(i);
        break;
      case onnx::TensorProto::INT8:
        values[i] =
            t.has_raw_data() ? static_cast<int8_t>(raw[i]) : t.int32_data(i);
        break;
      default:
        ADD_FAILURE() << "unexpected data type " << t.data_type();
    }
  }
  return Tensor(shape, values);
}

// How a conformance case's integer tensor is fed.
enum class Feed {
  kFloatCoded,  // x a float graph input holding the integers
  kInitializer  // x an integer initializer, folded at import
};

struct ConformanceCase {
  std::string name;
  Feed feed;
};

void PrintTo(const ConformanceCase& c, std::ostream* os) { *os << c.name; }

class QdqConformanceTest : public ::testing::TestWithParam<ConformanceCase> {};

// Inputs 1 and 2 (scale, zero point) become initializers, as
// engine_conformance_test does. QuantizeLinear's uint8 output is compared as
// float-coded integers; DequantizeLinear's uint8 input x is either fed as a
// float graph input, or made an initializer (the model then adds a float
// graph input of zeros so that its output is not a constant).
TEST_P(QdqConformanceTest, MatchesTheReference) {
  const std::filesystem::path dir = kNodeCases + GetParam().name;
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "libonnx-testdata absent";
  const absl::StatusOr<std::string> bytes =
      ReadFile((dir / "model.onnx").string());
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  int data_sets = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (!entry.is_directory()) continue;
    ++data_sets;
    onnx::ModelProto model;
    ASSERT_TRUE(model.ParseFromString(*bytes));
    onnx::GraphProto& graph = *model.mutable_graph();
    ASSERT_EQ(graph.input_size(), 3);
    for (int k = 1; k <= 2; ++k) {
      onnx::TensorProto* t = graph.add_initializer();
      *t = ReadTensor(entry.path() / absl::StrCat("input_", k, ".pb"));
      t->set_name(graph.input(k).name());
    }
    graph.mutable_input()->DeleteSubrange(1, 2);
    const onnx::TensorProto x = ReadTensor(entry.path() / "input_0.pb");
    Tensor input = ToFloat(x);
    if (GetParam().feed == Feed::kFloatCoded) {
      graph.mutable_input(0)
          ->mutable_type()
          ->mutable_tensor_type()
          ->set_elem_type(onnx::TensorProto::FLOAT);
    } else {
      *graph.add_initializer() = x;
      graph.mutable_initializer(2)->set_name(graph.input(0).name());
      graph.mutable_input(0)->set_name("zeros");
      graph.mutable_input(0)
          ->mutable_type()
          ->mutable_tensor_type()
          ->set_elem_type(onnx::TensorProto::FLOAT);
      graph.mutable_output(0)->set_name("sum");
      onnx::NodeProto* add = graph.add_node();
      add->set_op_type("Add");
      add->add_input(graph.node(0).output(0));
      add->add_input("zeros");
      add->add_output("sum");
      input.SetZero();
    }
    const Tensor expected = ToFloat(ReadTensor(entry.path() / "output_0.pb"));
    const absl::StatusOr<Tensor> y = RunModel(model.SerializeAsString(), input);
    ASSERT_TRUE(y.ok()) << y.status();
    EXPECT_EQ(y->shape(), expected.shape());
    EXPECT_THAT(y->ToVector(),
                Pointwise(FloatNear(kTolerance), expected.ToVector()));
  }
  EXPECT_GT(data_sets, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Node, QdqConformanceTest,
    ::testing::Values(
        ConformanceCase{"test_quantizelinear", Feed::kFloatCoded},
        ConformanceCase{"test_quantizelinear_axis", Feed::kFloatCoded},
        ConformanceCase{"test_dequantizelinear", Feed::kFloatCoded},
        ConformanceCase{"test_dequantizelinear_axis", Feed::kFloatCoded},
        ConformanceCase{"test_dequantizelinear", Feed::kInitializer},
        ConformanceCase{"test_dequantizelinear_axis", Feed::kInitializer}),
    [](const ::testing::TestParamInfo<ConformanceCase>& info) {
      return absl::StrCat(info.param.name.substr(5),
                          info.param.feed == Feed::kFloatCoded
                              ? "_FloatCoded"
                              : "_Initializer");
    });

}  // namespace
}  // namespace mixq::engine
