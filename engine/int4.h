// ONNX's 4-bit integer element types, INT4 and UINT4 (TensorProto data types
// 22 and 21, IR version 10, opset 21), which Debian's onnx 1.12 headers
// predate: their type numbers and how their values are stored. Two values
// share a byte, the first in the low nibble ("4bitx2"); an odd count leaves
// the high nibble of the last byte as padding, written as 0 and ignored when
// read. raw_data holds the bytes; int32_data, if used instead, one byte
// (0..255) per entry. The one place mixq packs and unpacks them: the QDQ
// exporter (search/qdq_export.h) writes, the importer and ValidateModel read.
//
// Pure functions; thread-safe.
#ifndef MIXQ_ENGINE_INT4_H_
#define MIXQ_ENGINE_INT4_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace mixq::engine {

// TensorProto::DataType numbers (onnx.proto from onnx 1.16).
inline constexpr int kOnnxUint4 = 21;
inline constexpr int kOnnxInt4 = 22;

// The values each type holds.
inline constexpr int32_t kInt4Min = -8;
inline constexpr int32_t kInt4Max = 7;
inline constexpr int32_t kUint4Min = 0;
inline constexpr int32_t kUint4Max = 15;

// Whether `data_type` is INT4 or UINT4.
constexpr bool IsInt4Type(int data_type) {
  return data_type == kOnnxInt4 || data_type == kOnnxUint4;
}

// "INT4" or "UINT4" (onnx 1.12's DataType_Name knows neither).
const char* Int4TypeName(int data_type);

// The bytes that hold `count` 4-bit values: ceil(count / 2). `count` >= 0.
constexpr int64_t Int4Bytes(int64_t count) { return count / 2 + count % 2; }

// Packs `values` two per byte, low nibble first. Only each value's low four
// bits are kept: the caller checks that the values fit the type (kInt4Min..
// kInt4Max or kUint4Min..kUint4Max).
std::string PackInt4(absl::Span<const int32_t> values);

// Value `i` of 4-bit values packed in `bytes` (i < 2 * bytes.size()),
// sign-extended for INT4 (`is_signed`).
int32_t UnpackInt4(absl::string_view bytes, int64_t i, bool is_signed);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_INT4_H_
