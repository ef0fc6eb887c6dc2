// Test support: builds small ONNX MLPs in memory (no Python, no files).
#ifndef MIXQ_TESTS_SUPPORT_ONNX_MLP_H_
#define MIXQ_TESTS_SUPPORT_ONNX_MLP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "search/qat.h"

namespace mixq::testing {

// Serialized ONNX model: input "input" [batch, dims[0]] → Gemm(transB=1,
// weights "fc<i>.weight" [dims[i+1], dims[i]], bias "fc<i>.bias") → Relu →
// ... → Gemm → output "logits" [batch, dims.back()]. Weights are seeded
// Gaussians scaled by 1/sqrt(fan_in).
std::string MakeMlpOnnx(const std::vector<int64_t>& dims, uint64_t seed);

// `n` samples of `features` Gaussian inputs labelled by a random linear
// teacher into `classes` classes (learnable, deterministic per seed).
search::LabeledData MakeTeacherData(int64_t n, int64_t features,
                                    int64_t classes, uint64_t seed);

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SUPPORT_ONNX_MLP_H_
