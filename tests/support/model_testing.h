// Test support: running imported models in tests. Header-only.
#ifndef MIXQ_TESTS_SUPPORT_MODEL_TESTING_H_
#define MIXQ_TESTS_SUPPORT_MODEL_TESTING_H_

#include <memory>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/onnx_builder.h"

namespace mixq::testing {

// 0, 1, 2, ... shaped `shape`.
inline engine::Tensor Iota(const engine::Shape& shape, float start = 0) {
  engine::Tensor t(shape);
  std::iota(t.values().begin(), t.values().end(), start);
  return t;
}

inline std::vector<const engine::Tensor*> Pointers(
    const std::vector<engine::Tensor>& tensors) {
  std::vector<const engine::Tensor*> pointers;
  for (const engine::Tensor& t : tensors) pointers.push_back(&t);
  return pointers;
}

// `model`'s output on `input` with its initial parameters.
inline absl::StatusOr<engine::Tensor> RunModel(const engine::Model& model,
                                               const engine::Tensor& input) {
  return model.Forward(input, Pointers(model.initial_params()), nullptr);
}

// The model `builder` makes; nullptr (and a test failure) if it is refused.
inline std::unique_ptr<engine::Model> BuildOrDie(const OnnxBuilder& builder) {
  absl::StatusOr<std::unique_ptr<engine::Model>> model = builder.Build();
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *std::move(model) : nullptr;
}

inline void ExpectInvalid(const absl::Status& status,
                          const std::string& substring) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr(substring));
}

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SUPPORT_MODEL_TESTING_H_
