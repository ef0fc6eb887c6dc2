#include "tests/support/npy.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace mixq::testing {
namespace {

std::string Npy(const char* descr, const std::vector<int64_t>& shape,
                const void* data, size_t bytes) {
  std::string dims = absl::StrJoin(shape, ", ");
  if (shape.size() == 1) dims += ",";
  std::string header =
      absl::StrCat("{'descr': '", descr,
                   "', 'fortran_order': False, 'shape': (", dims, "), }");
  // Pad so that magic(6) + version(2) + length(2) + header is a multiple of 64.
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  out += header;
  out.append(static_cast<const char*>(data), bytes);
  return out;
}

}  // namespace

std::string NpyFloat32(const engine::Tensor& tensor) {
  return Npy("<f4", tensor.shape(), tensor.data(),
             sizeof(float) * tensor.size());
}

std::string NpyInt64(const std::vector<int64_t>& values) {
  return Npy("<i8", {static_cast<int64_t>(values.size())}, values.data(),
             sizeof(int64_t) * values.size());
}

}  // namespace mixq::testing
