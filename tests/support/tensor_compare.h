// Test support: comparing the engine's tensors with references (PyTorch's
// outputs saved as .npy) and handing parameter lists to Model::Forward.
// Header-only.
#ifndef MIXQ_TESTS_SUPPORT_TENSOR_COMPARE_H_
#define MIXQ_TESTS_SUPPORT_TENSOR_COMPARE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "gtest/gtest.h"

namespace mixq::testing {

// Absolute (below 1) and relative (above) tolerance against PyTorch's float32
// outputs of an exported model.
inline constexpr float kPyTorchTolerance = 1e-4f;

// Pointers to `tensors`, e.g. a model's initial parameters for Forward.
inline std::vector<const engine::Tensor*> Pointers(
    const std::vector<engine::Tensor>& tensors) {
  std::vector<const engine::Tensor*> pointers;
  for (const engine::Tensor& t : tensors) pointers.push_back(&t);
  return pointers;
}

// Same shape, and every element within `tolerance` x max(1, |expected|);
// reports the first five elements that are not (`what` names the output).
inline void ExpectClose(const engine::Tensor& actual,
                        const engine::Tensor& expected, const std::string& what,
                        float tolerance = kPyTorchTolerance) {
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  int64_t bad = 0;
  for (int64_t i = 0; i < expected.size(); ++i) {
    const float e = expected.data()[i];
    const float a = actual.data()[i];
    if (!(std::abs(a - e) <= tolerance * std::max(1.0f, std::abs(e))) &&
        bad++ < 5) {
      ADD_FAILURE() << what << ": element " << i << " is " << a
                    << ", PyTorch has " << e;
    }
  }
  EXPECT_EQ(bad, 0) << what;
}

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SUPPORT_TENSOR_COMPARE_H_
