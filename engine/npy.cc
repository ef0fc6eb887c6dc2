#include "engine/npy.h"

#include <bit>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace mixq::engine {
namespace {

// The payload is the host's bytes as they are in memory, and '<f4' / '<i8'
// say little-endian.
static_assert(std::endian::native == std::endian::little,
              "EncodeNpy writes host values as little-endian");

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = sizeof(kMagic) - 1;
constexpr size_t kVersionSize = 2;  // major, minor
// Version 1.0 stores the header length in two bytes; 2.0 (for headers of
// 64 KiB or more, i.e. shapes of absurd rank) in four.
constexpr size_t kVersion1LengthSize = 2;
constexpr size_t kVersion2LengthSize = 4;
constexpr size_t kVersion1MaxHeader = 0xffff;
// NumPy aligns the payload to 64 bytes (numpy.lib.format.ARRAY_ALIGN).
constexpr size_t kAlignment = 64;

// A Python tuple literal: "()", "(4,)", "(4, 8)".
std::string ShapeTuple(const Shape& shape) {
  if (shape.size() == 1) return absl::StrCat("(", shape[0], ",)");
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

// The .npy bytes of `payload_size` bytes at `payload`, described by `descr`
// (e.g. "<f4") and `shape`.
std::string Encode(absl::string_view descr, const Shape& shape,
                   const void* payload, size_t payload_size) {
  const std::string dict = absl::StrCat(
      "{'descr': '", descr,
      "', 'fortran_order': False, 'shape': ", ShapeTuple(shape), ", }");
  size_t length_size = kVersion1LengthSize;
  // The header is the dict, then spaces and a newline up to the next
  // multiple of kAlignment (counting the preamble).
  const auto padded_size = [&] {
    const size_t unpadded =
        kMagicSize + kVersionSize + length_size + dict.size() + 1;
    return dict.size() + 1 + (kAlignment - unpadded % kAlignment) % kAlignment;
  };
  size_t header_size = padded_size();
  if (header_size > kVersion1MaxHeader) {
    length_size = kVersion2LengthSize;
    header_size = padded_size();
  }

  std::string out;
  out.reserve(kMagicSize + kVersionSize + length_size + header_size +
              payload_size);
  out.append(kMagic, kMagicSize);
  out.push_back(length_size == kVersion1LengthSize ? 1 : 2);  // major
  out.push_back(0);                                           // minor
  for (size_t i = 0; i < length_size; ++i) {
    out.push_back(static_cast<char>((header_size >> (8 * i)) & 0xff));
  }
  out.append(dict);
  out.append(header_size - dict.size() - 1, ' ');
  out.push_back('\n');
  out.append(static_cast<const char*>(payload), payload_size);
  return out;
}

}  // namespace

std::string EncodeNpy(const Tensor& tensor) {
  return Encode("<f4", tensor.shape(), tensor.data(),
                tensor.size() * sizeof(float));
}

std::string EncodeNpyInt64(const std::vector<int64_t>& values) {
  return EncodeNpyInt64(values, {static_cast<int64_t>(values.size())});
}

std::string EncodeNpyInt64(const std::vector<int64_t>& values,
                           const Shape& shape) {
  return Encode("<i8", shape, values.data(), values.size() * sizeof(int64_t));
}

}  // namespace mixq::engine
