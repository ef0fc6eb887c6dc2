#include "tests/support/npy.h"

#include "engine/npy.h"

namespace mixq::testing {

std::string NpyFloat32(const engine::Tensor& tensor) {
  return engine::EncodeNpy(tensor);
}

std::string NpyInt64(const std::vector<int64_t>& values) {
  return engine::EncodeNpyInt64(values);
}

}  // namespace mixq::testing
