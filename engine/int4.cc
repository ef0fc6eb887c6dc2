#include "engine/int4.h"

#include <cstdint>
#include <string>

namespace mixq::engine {
namespace {

constexpr uint32_t kNibbleMask = 0x0F;
constexpr int kNibbleBits = 4;
// Two's complement: a 4-bit value with this bit set is negative.
constexpr int32_t kInt4SignBit = 0x08;
constexpr int32_t kInt4Span = 0x10;

}  // namespace

const char* Int4TypeName(int data_type) {
  return data_type == kOnnxInt4 ? "INT4" : "UINT4";
}

std::string PackInt4(absl::Span<const int32_t> values) {
  std::string bytes(static_cast<size_t>(Int4Bytes(values.size())), '\0');
  for (size_t i = 0; i < values.size(); ++i) {
    const uint32_t nibble = static_cast<uint32_t>(values[i]) & kNibbleMask;
    bytes[i / 2] = static_cast<char>(static_cast<uint8_t>(bytes[i / 2]) |
                                     nibble << (i % 2 * kNibbleBits));
  }
  return bytes;
}

int32_t UnpackInt4(absl::string_view bytes, int64_t i, bool is_signed) {
  const uint32_t byte = static_cast<uint8_t>(bytes[static_cast<size_t>(i / 2)]);
  const int32_t nibble =
      static_cast<int32_t>(byte >> (i % 2 * kNibbleBits) & kNibbleMask);
  return is_signed && (nibble & kInt4SignBit) != 0 ? nibble - kInt4Span
                                                   : nibble;
}

}  // namespace mixq::engine
