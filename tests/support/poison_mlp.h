// Test support: the small MLP of the server and search tests as an editable
// ModelProto, and the edits that poison it with numbers (issue #15: finite
// weights of 3e38, a Gemm alpha of 1e38). Header-only; users link
// onnx_proto and GoogleTest.
#ifndef MIXQ_TESTS_SUPPORT_POISON_MLP_H_
#define MIXQ_TESTS_SUPPORT_POISON_MLP_H_

#include <cstdint>
#include <string>

#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "tests/support/onnx_mlp.h"

namespace mixq::testing {

inline constexpr int64_t kPoisonFeatures = 12;
inline constexpr int64_t kPoisonHidden = 16;
inline constexpr int64_t kPoisonClasses = 3;
// Finite, and large enough that a dot product of a few of them overflows.
inline constexpr float kHugeWeight = 3e38f;

// input [batch, 12] -> "/fc0/Gemm" -> "/relu0" -> "/fc1/Gemm" -> logits:
// MakeMlpOnnx({12, 16, 3}, 1), the tiny job's model (server_testing.h).
inline onnx::ModelProto PoisonableMlp() {
  onnx::ModelProto model;
  model.ParseFromString(
      MakeMlpOnnx({kPoisonFeatures, kPoisonHidden, kPoisonClasses}, 1));
  return model;
}

// The initializer `name` of `model` (a test failure, and the first one,
// when there is none).
inline onnx::TensorProto& InitializerNamed(onnx::ModelProto* model,
                                           const std::string& name) {
  for (onnx::TensorProto& t : *model->mutable_graph()->mutable_initializer()) {
    if (t.name() == name) return t;
  }
  ADD_FAILURE() << "no initializer " << name;
  return *model->mutable_graph()->mutable_initializer(0);
}

// Sets every float_data value of `tensor` to `value`.
inline void FillFloatData(onnx::TensorProto* tensor, float value) {
  for (int i = 0; i < tensor->float_data_size(); ++i) {
    tensor->set_float_data(i, value);
  }
}

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SUPPORT_POISON_MLP_H_
