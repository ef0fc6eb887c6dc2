#include "engine/tensor_proto.h"

#include <bit>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/int4.h"
#include "engine/ops.h"
#include "util/status_macros.h"

namespace mixq::engine {
namespace {

// raw_data in ONNX is little-endian and is copied as is.
static_assert(std::endian::native == std::endian::little);

absl::Status Invalid(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

// Element types a constant may have: floating-point ones are read as float,
// integer and boolean ones as int64 (shapes, indices, axes).
struct ElementType {
  int onnx_type;
  bool is_int;
  size_t raw_size;  // bytes per element in raw_data
};
constexpr ElementType kElementTypes[] = {
    {onnx::TensorProto::FLOAT, false, 4},
    {onnx::TensorProto::DOUBLE, false, 8},
    {onnx::TensorProto::INT64, true, 8},
    {onnx::TensorProto::INT32, true, 4},
    {onnx::TensorProto::INT16, true, 2},
    {onnx::TensorProto::UINT16, true, 2},
    {onnx::TensorProto::INT8, true, 1},
    {onnx::TensorProto::UINT8, true, 1},
    {onnx::TensorProto::BOOL, true, 1},
    // Two per byte (engine/int4.h): ParseTensor reads them apart.
    {kOnnxUint4, true, 0},
    {kOnnxInt4, true, 0},
};

const ElementType* FindElementType(int data_type) {
  for (const ElementType& type : kElementTypes) {
    if (type.onnx_type == data_type) return &type;
  }
  return nullptr;
}

// Element `i` of little-endian raw data of type `type`.
template <typename T>
T RawElement(const std::string& raw, size_t i) {
  T value;
  std::memcpy(&value, raw.data() + i * sizeof(T), sizeof(T));
  return value;
}

int64_t RawInt(const std::string& raw, int type, size_t i) {
  switch (type) {
    case onnx::TensorProto::INT64:
      return RawElement<int64_t>(raw, i);
    case onnx::TensorProto::INT32:
      return RawElement<int32_t>(raw, i);
    case onnx::TensorProto::INT16:
      return RawElement<int16_t>(raw, i);
    case onnx::TensorProto::UINT16:
      return RawElement<uint16_t>(raw, i);
    case onnx::TensorProto::INT8:
      return RawElement<int8_t>(raw, i);
    default:  // UINT8, BOOL
      return RawElement<uint8_t>(raw, i);
  }
}

// The `n` values of an INT4 or UINT4 tensor into value->ints: from raw_data
// or int32_data, ceil(n / 2) bytes either way. The length is checked before
// anything of size `n` is allocated.
absl::StatusOr<ConstValue> ParseInt4Tensor(const onnx::TensorProto& tensor,
                                           absl::string_view what,
                                           ConstValue value, size_t n) {
  const int data_type = tensor.data_type();
  const size_t needed = static_cast<size_t>(Int4Bytes(n));
  const bool raw = tensor.has_raw_data();
  const size_t stored = raw ? tensor.raw_data().size()
                            : static_cast<size_t>(tensor.int32_data_size());
  if (stored != needed) {
    return Invalid(absl::StrCat(
        what, " of shape ", ShapeToString(value.shape), " needs ", n,
        " values, two per byte: ", raw ? "raw_data" : "int32_data", " of ",
        needed, raw ? " bytes" : " entries", ", has ", stored, " (",
        Int4TypeName(data_type), ")"));
  }
  std::string bytes;
  if (!raw) {
    bytes.reserve(needed);
    for (int32_t entry : tensor.int32_data()) {
      if (entry < 0 || entry > std::numeric_limits<uint8_t>::max()) {
        return Invalid(absl::StrCat(what, ": int32_data entry ", entry,
                                    " is not a byte (", Int4TypeName(data_type),
                                    " packs two values per entry)"));
      }
      bytes.push_back(static_cast<char>(entry));
    }
  }
  const absl::string_view packed = raw ? tensor.raw_data() : bytes;
  const bool is_signed = data_type == kOnnxInt4;
  value.ints.resize(n);
  for (size_t i = 0; i < n; ++i) {
    value.ints[i] = UnpackInt4(packed, static_cast<int64_t>(i), is_signed);
  }
  return value;
}

}  // namespace

bool IsSupportedTensorType(int data_type) {
  return FindElementType(data_type) != nullptr;
}

absl::StatusOr<ConstValue> ParseTensor(const onnx::TensorProto& tensor,
                                       absl::string_view what) {
  if (tensor.data_location() == onnx::TensorProto::EXTERNAL ||
      tensor.external_data_size() > 0) {
    return Invalid(
        absl::StrCat(what, " uses external data, which is not supported"));
  }
  if (tensor.has_segment()) {
    return Invalid(absl::StrCat(what, " is segmented, which is not supported"));
  }
  const ElementType* type = FindElementType(tensor.data_type());
  if (type == nullptr) {
    return Invalid(absl::StrCat(
        what, " has data type ", tensor.data_type(),
        "; only float, double, integer and bool tensors are supported"));
  }
  ConstValue value;
  value.is_int = type->is_int;
  value.data_type = tensor.data_type();
  value.shape.assign(tensor.dims().begin(), tensor.dims().end());
  const absl::StatusOr<int64_t> count = CheckedNumElements(value.shape);
  if (!count.ok()) return Annotate(count.status(), what);
  const size_t n = static_cast<size_t>(*count);
  const auto size_error = [&](size_t got, absl::string_view detail = "") {
    return Invalid(absl::StrCat(what, " of shape ", ShapeToString(value.shape),
                                " needs ", n, " values, has ", got, detail));
  };
  const int data_type = tensor.data_type();
  if (IsInt4Type(data_type)) {
    return ParseInt4Tensor(tensor, what, std::move(value), n);
  }
  if (tensor.has_raw_data()) {
    const std::string& raw = tensor.raw_data();
    if (raw.size() != n * type->raw_size) {
      return size_error(raw.size() / type->raw_size,
                        absl::StrCat(" (raw_data of ", raw.size(), " bytes)"));
    }
    if (data_type == onnx::TensorProto::FLOAT) {
      value.floats.resize(n);
      std::memcpy(value.floats.data(), raw.data(), n * sizeof(float));
    } else if (data_type == onnx::TensorProto::DOUBLE) {
      value.floats.resize(n);
      for (size_t i = 0; i < n; ++i) {
        value.floats[i] = static_cast<float>(RawElement<double>(raw, i));
      }
    } else {
      value.ints.resize(n);
      for (size_t i = 0; i < n; ++i) value.ints[i] = RawInt(raw, data_type, i);
    }
    return value;
  }
  const auto copy = [&](const auto& field, auto* out) -> absl::Status {
    if (static_cast<size_t>(field.size()) != n) return size_error(field.size());
    out->assign(field.begin(), field.end());
    return absl::OkStatus();
  };
  switch (data_type) {
    case onnx::TensorProto::FLOAT:
      MIXQ_RETURN_IF_ERROR(copy(tensor.float_data(), &value.floats));
      break;
    case onnx::TensorProto::DOUBLE:
      MIXQ_RETURN_IF_ERROR(copy(tensor.double_data(), &value.floats));
      break;
    case onnx::TensorProto::INT64:
      MIXQ_RETURN_IF_ERROR(copy(tensor.int64_data(), &value.ints));
      break;
    default:  // the narrower integer types and bool live in int32_data
      MIXQ_RETURN_IF_ERROR(copy(tensor.int32_data(), &value.ints));
      break;
  }
  return value;
}

}  // namespace mixq::engine
