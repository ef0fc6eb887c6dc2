// ONNX's 4-bit element types (engine/int4.h) in the engine: the nibble
// layout, ValidateModel's length checks, and hand-made opset-21 models whose
// INT4/UINT4 initializers feed DequantizeLinear, imported and run (odd
// element counts, raw_data and int32_data, per-channel and per-tensor), a
// QuantizeLinear to INT4, and opset-21 operators that take their axes as an
// input (what the QDQ exporter's opset raise writes).
#include "engine/int4.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model.h"
#include "engine/tensor.h"
#include "engine/validate.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "tests/support/onnx_builder.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::OnnxBuilder;
using ::mixq::testing::SetInt;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int64_t kOpset21 = 21;
constexpr int64_t kIrVersion10 = 10;

OnnxBuilder Opset21Builder() {
  OnnxBuilder b(kOpset21);
  b.proto().set_ir_version(kIrVersion10);
  return b;
}

// A 4-bit initializer of `type` holding `values`, packed into raw_data (or,
// with `int32_data`, one packed byte per int32_data entry).
onnx::TensorProto* AddInt4Initializer(OnnxBuilder& b, const std::string& name,
                                      int type, const Shape& dims,
                                      const std::vector<int32_t>& values,
                                      bool int32_data = false) {
  onnx::TensorProto* t = b.graph().add_initializer();
  t->set_name(name);
  t->set_data_type(type);
  for (int64_t d : dims) t->add_dims(d);
  const std::string packed = PackInt4(values);
  if (int32_data) {
    for (char byte : packed) t->add_int32_data(static_cast<uint8_t>(byte));
  } else {
    t->set_raw_data(packed);
  }
  return t;
}

absl::StatusOr<Tensor> RunModel(const OnnxBuilder& b, const Tensor& x) {
  absl::StatusOr<std::unique_ptr<Model>> model = b.Build();
  if (!model.ok()) return model.status();
  std::vector<const Tensor*> params;
  for (const Tensor& p : (*model)->initial_params()) params.push_back(&p);
  return (*model)->Forward(x, params, nullptr);
}

// ---------------------------------------------------------- Layout ----

TEST(Int4LayoutTest, LowNibbleFirstAndAZeroPadNibble) {
  EXPECT_EQ(Int4Bytes(0), 0);
  EXPECT_EQ(Int4Bytes(1), 1);
  EXPECT_EQ(Int4Bytes(4), 2);
  EXPECT_EQ(Int4Bytes(5), 3);
  // -8 = 0x8, 7 = 0x7, -1 = 0xF, 1 = 0x1, 3 = 0x3 (+ a zero high nibble).
  EXPECT_EQ(PackInt4({-8, 7, -1, 1, 3}), std::string("\x78\x1F\x03", 3));
  EXPECT_EQ(PackInt4({15, 0, 9}), std::string("\x0F\x09", 2));
}

TEST(Int4LayoutTest, UnpackInvertsPackForBothTypes) {
  std::vector<int32_t> signed_values;
  for (int32_t v = kInt4Min; v <= kInt4Max; ++v) signed_values.push_back(v);
  signed_values.push_back(-3);  // odd count
  const std::string packed = PackInt4(signed_values);
  ASSERT_EQ(packed.size(), 9u);
  for (size_t i = 0; i < signed_values.size(); ++i) {
    EXPECT_EQ(UnpackInt4(packed, static_cast<int64_t>(i), true),
              signed_values[i])
        << i;
  }
  std::vector<int32_t> unsigned_values;
  for (int32_t v = kUint4Min; v <= kUint4Max; ++v) unsigned_values.push_back(v);
  const std::string upacked = PackInt4(unsigned_values);
  for (size_t i = 0; i < unsigned_values.size(); ++i) {
    EXPECT_EQ(UnpackInt4(upacked, static_cast<int64_t>(i), false),
              unsigned_values[i])
        << i;
  }
}

// ------------------------------------------------------ Validation ----

// x [batch, 3] -> Gemm(DequantizeLinear(w_q INT4 [2, 3]), transB) -> y, the
// weight per output channel (axis 0); with `odd`, x [batch, 5] and w_q
// [1, 5], an odd element count.
OnnxBuilder Int4GemmModel(bool odd, bool int32_data = false) {
  OnnxBuilder b = Opset21Builder();
  if (odd) {
    b.Input("x", {-1, 5}).Output("y");
    AddInt4Initializer(b, "w_q", kOnnxInt4, {1, 5}, {-8, 7, -1, 0, 3},
                       int32_data);
    b.Initializer("w_scale", {1}, {0.5f});
    AddInt4Initializer(b, "w_zp", kOnnxInt4, {1}, {1});
  } else {
    b.Input("x", {-1, 3}).Output("y");
    AddInt4Initializer(b, "w_q", kOnnxInt4, {2, 3}, {-8, 7, -1, 0, 3, 2},
                       int32_data);
    b.Initializer("w_scale", {2}, {0.5f, 0.25f});
    AddInt4Initializer(b, "w_zp", kOnnxInt4, {2}, {0, -2});
  }
  SetInt(b.Node("DequantizeLinear", {"w_q", "w_scale", "w_zp"}, {"w"}, "dq"),
         "axis", 0);
  SetInt(b.Node("Gemm", {"x", "w"}, {"y"}, "fc"), "transB", 1);
  return b;
}

TEST(Int4ValidateTest, AcceptsPackedRawDataAndInt32Data) {
  for (bool odd : {false, true}) {
    for (bool int32_data : {false, true}) {
      const absl::Status status =
          ValidateModel(Int4GemmModel(odd, int32_data).proto());
      EXPECT_TRUE(status.ok())
          << "odd " << odd << ", int32_data " << int32_data << ": " << status;
    }
  }
}

TEST(Int4ValidateTest, RawDataOfOtherThanHalfTheCountIsRefusedByName) {
  // 6 values need 3 bytes: one byte per value (the int8 layout), one short
  // and one long are all refused, naming the tensor and both lengths.
  for (const std::string& raw :
       {std::string(6, '\0'), std::string(2, '\0'), std::string(4, '\0')}) {
    OnnxBuilder b = Int4GemmModel(/*odd=*/false);
    b.graph().mutable_initializer(0)->set_raw_data(raw);
    const absl::Status status = ValidateModel(b.proto());
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(std::string(status.message()),
                HasSubstr("initializer 'w_q' of shape [2, 3] needs 6 values, "
                          "two per byte: raw_data of 3 bytes, has " +
                          std::to_string(raw.size()) + " (INT4)"));
  }
  // An odd count rounds up: 5 values take 3 bytes, not 2.
  OnnxBuilder b = Int4GemmModel(/*odd=*/true);
  b.graph().mutable_initializer(0)->set_raw_data(std::string(2, '\0'));
  EXPECT_THAT(std::string(ValidateModel(b.proto()).message()),
              HasSubstr("raw_data of 3 bytes, has 2 (INT4)"));
}

TEST(Int4ValidateTest, HugeDeclaredCountWithTinyDataIsRefusedWithoutAlloc) {
  // 2^40 declared elements, 3 bytes of data: refused on the length (the
  // validator and the importer compare lengths before allocating).
  OnnxBuilder b = Int4GemmModel(/*odd=*/false);
  b.graph().mutable_initializer(0)->set_dims(0, int64_t{1} << 40);
  const absl::Status status = ValidateModel(b.proto());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("initializer 'w_q'"));
  EXPECT_EQ(b.Build().status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Int4ValidateTest, Int32DataMustHoldOneByteEach) {
  OnnxBuilder b = Int4GemmModel(/*odd=*/false, /*int32_data=*/true);
  b.graph().mutable_initializer(0)->add_int32_data(0);  // 4 entries for 3
  EXPECT_THAT(std::string(ValidateModel(b.proto()).message()),
              HasSubstr("initializer 'w_q' of shape [2, 3] needs 3 entries "
                        "(two values per entry), has 4 (int32_data)"));
  OnnxBuilder wide = Int4GemmModel(/*odd=*/false, /*int32_data=*/true);
  wide.graph().mutable_initializer(0)->set_int32_data(1, 256);
  EXPECT_THAT(std::string(ValidateModel(wide.proto()).message()),
              HasSubstr("initializer 'w_q': int32_data[1] = 256 is not a "
                        "byte"));
}

TEST(Int4ValidateTest, GraphInputsMayDeclareTheTypes) {
  OnnxBuilder b = Int4GemmModel(/*odd=*/false);
  // IR < 4 style: the initializer also listed as a graph input.
  b.Input("w_q", {2, 3}, kOnnxInt4);
  EXPECT_TRUE(ValidateModel(b.proto()).ok()) << ValidateModel(b.proto());
}

// ---------------------------------------------------------- Import ----

TEST(Int4ImportTest, PerChannelInt4GemmWeightFoldsToFloat) {
  // Channel 0: (-8, 7, -1) * 0.5 = -4, 3.5, -0.5; channel 1: (0, 3, 2) + 2
  // = (2, 5, 4) * 0.25 = 0.5, 1.25, 1.
  for (bool int32_data : {false, true}) {
    const absl::StatusOr<Tensor> y =
        RunModel(Int4GemmModel(/*odd=*/false, int32_data),
                 Tensor({1, 3}, {1.0f, 2.0f, 3.0f}));
    ASSERT_TRUE(y.ok()) << y.status();
    // -4 + 7 - 1.5 = 1.5; 0.5 + 2.5 + 3 = 6.
    EXPECT_THAT(y->ToVector(), ElementsAre(1.5f, 6.0f)) << int32_data;
  }
}

TEST(Int4ImportTest, OddCountIgnoresThePadNibble) {
  OnnxBuilder b = Int4GemmModel(/*odd=*/true);
  // Whatever the pad nibble holds, it is not a value.
  std::string raw = b.graph().initializer(0).raw_data();
  raw.back() = static_cast<char>(raw.back() | 0xF0);
  b.graph().mutable_initializer(0)->set_raw_data(raw);
  // (-8, 7, -1, 0, 3) - 1 = (-9, 6, -2, -1, 2), * 0.5.
  const absl::StatusOr<Tensor> y =
      RunModel(b, Tensor({1, 5}, {1.0f, 1.0f, 1.0f, 1.0f, 1.0f}));
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(y->ToVector(), ElementsAre(-2.0f));
}

TEST(Int4ImportTest, PerTensorUint4ConvWeight) {
  // W UINT4 [2, 1, 1, 1] = (15, 0), zero point 8, scale 0.5: 3.5, -4.
  OnnxBuilder b = Opset21Builder();
  b.Input("x", {-1, 1, 1, 1}).Output("y");
  AddInt4Initializer(b, "w_q", kOnnxUint4, {2, 1, 1, 1}, {15, 0});
  b.Initializer("w_scale", {}, {0.5f});
  AddInt4Initializer(b, "w_zp", kOnnxUint4, {}, {8});
  b.Node("DequantizeLinear", {"w_q", "w_scale", "w_zp"}, {"w"}, "dq");
  b.Node("Conv", {"x", "w"}, {"y"}, "conv");
  const absl::StatusOr<Tensor> y = RunModel(b, Tensor({1, 1, 1, 1}, {2.0f}));
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(y->ToVector(), ElementsAre(7.0f, -8.0f));
}

TEST(Int4ImportTest, BadLengthIsAnImportErrorNamingTheTensor) {
  OnnxBuilder b = Int4GemmModel(/*odd=*/false);
  b.graph().mutable_initializer(2)->set_raw_data(std::string(2, '\0'));
  const absl::Status status = b.Build().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("initializer 'w_zp' of shape [2] needs 2 values, two "
                        "per byte: raw_data of 1 bytes, has 2 (INT4)"));
}

TEST(Int4ImportTest, QuantizeLinearToInt4SaturatesToItsRange) {
  // y = DQ(Q(x)) with an INT4 zero point 0, scale 1: saturates at -8 and 7.
  OnnxBuilder b = Opset21Builder();
  b.Input("x", {-1, 4}).Output("y");
  b.Initializer("s", {}, {1.0f});
  AddInt4Initializer(b, "z", kOnnxInt4, {}, {0});
  b.Node("QuantizeLinear", {"x", "s", "z"}, {"q"}, "quantize");
  b.Node("DequantizeLinear", {"q", "s", "z"}, {"y"}, "dequantize");
  const absl::StatusOr<Tensor> y =
      RunModel(b, Tensor({1, 4}, {-20.0f, -2.4f, 6.5f, 20.0f}));
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(y->ToVector(), ElementsAre(-8.0f, -2.0f, 6.0f, 7.0f));
}

TEST(Int4ImportTest, Opset21ReduceMeanTakesAxesAsAnInput) {
  // ReduceMean-18+: axes is input 1, no longer an attribute.
  OnnxBuilder b = Opset21Builder();
  b.Input("x", {-1, 2, 2}).Output("y");
  b.IntInitializer("axes", {2});
  SetInt(b.Node("ReduceMean", {"x", "axes"}, {"y"}, "mean"), "keepdims", 0);
  const absl::StatusOr<Tensor> y =
      RunModel(b, Tensor({1, 2, 2}, {1.0f, 3.0f, 5.0f, 9.0f}));
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(y->ToVector(), ElementsAre(2.0f, 7.0f));
}

}  // namespace
}  // namespace mixq::engine
