// Test support: writes NumPy .npy bytes (format 1.0, little-endian, C order).
#ifndef MIXQ_TESTS_SUPPORT_NPY_H_
#define MIXQ_TESTS_SUPPORT_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace mixq::testing {

std::string NpyFloat32(const engine::Tensor& tensor);
std::string NpyInt64(const std::vector<int64_t>& values);

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SUPPORT_NPY_H_
