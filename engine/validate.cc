#include "engine/validate.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "engine/int4.h"
#include "engine/tensor.h"
#include "onnx/onnx_pb.h"
#include "util/status_macros.h"

namespace mixq::engine {
namespace {

// raw_data in ONNX is little-endian; it is read as is.
static_assert(std::endian::native == std::endian::little);

// IR version 3 introduced opset_import.
constexpr int64_t kMinIrVersion = 3;
// Names come from the file: messages quote at most this many characters.
constexpr size_t kMaxQuotedName = 80;
// TypeProto nests (sequence of map of ...); parsing bounds it at 100 levels.
constexpr int kMaxTypeNesting = 16;
// IEEE half and bfloat16: exponent bits (all ones: NaN or infinity) and
// mantissa bits (non-zero with an all-ones exponent: NaN).
constexpr uint32_t kHalfExponent = 0x7C00;
constexpr uint32_t kHalfMantissa = 0x03FF;
constexpr uint32_t kBfloat16Exponent = 0x7F80;
constexpr uint32_t kBfloat16Mantissa = 0x007F;

absl::Status Invalid(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

absl::Status Exhausted(absl::string_view message) {
  return absl::ResourceExhaustedError(message);
}

// `name`, shortened when it is long.
std::string Shorten(absl::string_view name) {
  if (name.size() <= kMaxQuotedName) return std::string(name);
  return absl::StrCat(name.substr(0, kMaxQuotedName), "... (", name.size(),
                      " characters)");
}

std::string Quote(absl::string_view name) {
  return absl::StrCat("'", Shorten(name), "'");
}

// The node's name, or "#<index>" when it has none (as the importer says).
std::string NodeName(const onnx::NodeProto& node, int index) {
  return node.name().empty() ? absl::StrCat("#", index) : node.name();
}

// "node 'name' (OpType)".
std::string NodeLabel(const onnx::NodeProto& node, int index) {
  return absl::StrCat("node ", Quote(NodeName(node, index)), " (",
                      Shorten(node.op_type()), ")");
}

// "<value> <unit>; the limit is <limit> (ModelLimits::<field>)".
std::string OverLimit(int64_t value, absl::string_view unit, int64_t limit,
                      absl::string_view field) {
  return absl::StrCat(value, unit.empty() ? "" : " ", unit, "; the limit is ",
                      limit, " (ModelLimits::", field, ")");
}

// The repeated field of TensorProto that holds a tensor's values.
enum class Field { kFloat, kInt32, kString, kInt64, kDouble, kUint64 };
constexpr Field kFields[] = {Field::kFloat, Field::kInt32,  Field::kString,
                             Field::kInt64, Field::kDouble, Field::kUint64};

const char* FieldName(Field field) {
  switch (field) {
    case Field::kFloat:
      return "float_data";
    case Field::kInt32:
      return "int32_data";
    case Field::kString:
      return "string_data";
    case Field::kInt64:
      return "int64_data";
    case Field::kDouble:
      return "double_data";
    case Field::kUint64:
      return "uint64_data";
  }
  return "";
}

int64_t FieldSize(const onnx::TensorProto& t, Field field) {
  switch (field) {
    case Field::kFloat:
      return t.float_data_size();
    case Field::kInt32:
      return t.int32_data_size();
    case Field::kString:
      return t.string_data_size();
    case Field::kInt64:
      return t.int64_data_size();
    case Field::kDouble:
      return t.double_data_size();
    case Field::kUint64:
      return t.uint64_data_size();
  }
  return 0;
}

// How an element type is stored (onnx.proto's comments on TensorProto).
enum class FloatKind { kNone, kFloat, kDouble, kHalf, kBfloat16 };
struct ElementType {
  int type;
  int64_t bytes;               // per element in raw_data; 0: no raw_data
  Field field;                 // the typed field
  int64_t values_per_element;  // 2 for complex numbers
  FloatKind float_kind;
  // INT4 and UINT4: two elements per byte of raw_data and per entry of the
  // typed field (engine/int4.h); `bytes` is then that byte.
  bool packed_4bit = false;
};
constexpr ElementType kElementTypes[] = {
    {onnx::TensorProto::FLOAT, 4, Field::kFloat, 1, FloatKind::kFloat},
    {onnx::TensorProto::UINT8, 1, Field::kInt32, 1, FloatKind::kNone},
    {onnx::TensorProto::INT8, 1, Field::kInt32, 1, FloatKind::kNone},
    {onnx::TensorProto::UINT16, 2, Field::kInt32, 1, FloatKind::kNone},
    {onnx::TensorProto::INT16, 2, Field::kInt32, 1, FloatKind::kNone},
    {onnx::TensorProto::INT32, 4, Field::kInt32, 1, FloatKind::kNone},
    {onnx::TensorProto::INT64, 8, Field::kInt64, 1, FloatKind::kNone},
    {onnx::TensorProto::STRING, 0, Field::kString, 1, FloatKind::kNone},
    {onnx::TensorProto::BOOL, 1, Field::kInt32, 1, FloatKind::kNone},
    {onnx::TensorProto::FLOAT16, 2, Field::kInt32, 1, FloatKind::kHalf},
    {onnx::TensorProto::DOUBLE, 8, Field::kDouble, 1, FloatKind::kDouble},
    {onnx::TensorProto::UINT32, 4, Field::kUint64, 1, FloatKind::kNone},
    {onnx::TensorProto::UINT64, 8, Field::kUint64, 1, FloatKind::kNone},
    {onnx::TensorProto::COMPLEX64, 8, Field::kFloat, 2, FloatKind::kFloat},
    {onnx::TensorProto::COMPLEX128, 16, Field::kDouble, 2, FloatKind::kDouble},
    {onnx::TensorProto::BFLOAT16, 2, Field::kInt32, 1, FloatKind::kBfloat16},
    {kOnnxUint4, 1, Field::kInt32, 1, FloatKind::kNone, true},
    {kOnnxInt4, 1, Field::kInt32, 1, FloatKind::kNone, true},
};

// How many bytes of raw_data (or entries of the typed field, holding
// `per_element` values each) `count` elements of `type` take; false when the
// product overflows int64.
bool StoredSize(const ElementType& type, int64_t count, int64_t per_element,
                int64_t* size) {
  if (type.packed_4bit) {
    *size = Int4Bytes(count);
    return true;
  }
  return !__builtin_mul_overflow(count, per_element, size);
}

const ElementType* FindElementType(int type) {
  for (const ElementType& t : kElementTypes) {
    if (t.type == type) return &t;
  }
  return nullptr;
}

std::string TypeName(int type) {
  if (IsInt4Type(type)) return Int4TypeName(type);
  return onnx::TensorProto::DataType_IsValid(type)
             ? onnx::TensorProto::DataType_Name(type)
             : absl::StrCat(type);
}

// Element `i` of little-endian raw data.
template <typename T>
T RawValue(const std::string& raw, int64_t i) {
  T value;
  std::memcpy(&value, raw.data() + i * sizeof(T), sizeof(T));
  return value;
}

// The first value (in the units of the typed field) that is NaN or infinite:
// its index and whether it is a NaN; index -1 when every value is finite.
// The data has been checked to match the element type.
std::pair<int64_t, bool> FirstNonFinite(const onnx::TensorProto& t,
                                        const ElementType& type) {
  const bool raw = t.has_raw_data();
  const int64_t n = raw ? static_cast<int64_t>(t.raw_data().size()) /
                              type.bytes * type.values_per_element
                        : FieldSize(t, type.field);
  const auto half_bits = [&](int64_t i) -> uint32_t {
    return raw ? RawValue<uint16_t>(t.raw_data(), i)
               : static_cast<uint32_t>(t.int32_data(static_cast<int>(i))) &
                     0xFFFF;
  };
  for (int64_t i = 0; i < n; ++i) {
    bool finite = true;
    bool nan = false;
    switch (type.float_kind) {
      case FloatKind::kFloat: {
        const float v = raw ? RawValue<float>(t.raw_data(), i)
                            : t.float_data(static_cast<int>(i));
        finite = std::isfinite(v);
        nan = std::isnan(v);
        break;
      }
      case FloatKind::kDouble: {
        const double v = raw ? RawValue<double>(t.raw_data(), i)
                             : t.double_data(static_cast<int>(i));
        finite = std::isfinite(v);
        nan = std::isnan(v);
        break;
      }
      case FloatKind::kHalf:
      case FloatKind::kBfloat16: {
        const bool half = type.float_kind == FloatKind::kHalf;
        const uint32_t exponent = half ? kHalfExponent : kBfloat16Exponent;
        const uint32_t mantissa = half ? kHalfMantissa : kBfloat16Mantissa;
        const uint32_t bits = half_bits(i);
        finite = (bits & exponent) != exponent;
        nan = !finite && (bits & mantissa) != 0;
        break;
      }
      case FloatKind::kNone:
        return {-1, false};
    }
    if (!finite) return {i / type.values_per_element, nan};
  }
  return {-1, false};
}

// A tensor that holds data: an initializer, or a tensor in a node attribute.
// `what` names it; `weight` asks for finite float values; its bytes are
// added to `*total_bytes`.
absl::Status CheckTensor(const onnx::TensorProto& t, const std::string& what,
                         bool weight, const ModelLimits& limits,
                         int64_t* total_bytes) {
  if (t.data_location() == onnx::TensorProto::EXTERNAL ||
      t.external_data_size() > 0) {
    std::string location;
    for (const onnx::StringStringEntryProto& entry : t.external_data()) {
      if (entry.key() == "location") {
        location = absl::StrCat(" (location ", Quote(entry.value()), ")");
      }
    }
    return Invalid(absl::StrCat(
        what, " uses external data", location,
        ", which is rejected: mixq reads only tensors stored in the model"));
  }
  if (t.has_segment()) {
    return Invalid(absl::StrCat(what, " is segmented, which is not supported"));
  }
  const ElementType* type = FindElementType(t.data_type());
  if (type == nullptr) {
    return Invalid(absl::StrCat(what, " has data type ",
                                TypeName(t.data_type()),
                                ", which is not an ONNX element type"));
  }
  if (t.dims_size() > limits.max_rank) {
    return Exhausted(absl::StrCat(
        what, " has rank ",
        OverLimit(t.dims_size(), "", limits.max_rank, "max_rank")));
  }
  const Shape shape(t.dims().begin(), t.dims().end());
  // The product of the non-zero dims bounds every partial product (Flatten,
  // Reshape), so it must not overflow even when the tensor is empty.
  int64_t nonzero = 1;
  bool empty = false;
  for (int i = 0; i < t.dims_size(); ++i) {
    const int64_t d = t.dims(i);
    if (d < 0) {
      return Invalid(absl::StrCat(what, " has a negative dimension (dim ", i,
                                  " is ", d, ")"));
    }
    if (d == 0) {
      empty = true;
    } else if (__builtin_mul_overflow(nonzero, d, &nonzero)) {
      return Invalid(absl::StrCat(what, " of shape ", ShapeToString(shape),
                                  " is too large: its element count "
                                  "overflows int64"));
    }
  }
  const int64_t count = empty ? 0 : nonzero;
  const std::string type_name = TypeName(t.data_type());

  if (t.has_raw_data()) {
    if (type->bytes == 0) {
      return Invalid(absl::StrCat(what, " is a ", type_name,
                                  " tensor with raw_data, which ONNX forbids"));
    }
    for (Field field : kFields) {
      if (FieldSize(t, field) > 0) {
        return Invalid(
            absl::StrCat(what, " has both raw_data and ", FieldName(field)));
      }
    }
    const int64_t raw_bytes = static_cast<int64_t>(t.raw_data().size());
    int64_t needed = 0;
    const bool fits = StoredSize(*type, count, type->bytes, &needed);
    if (type->packed_4bit && needed != raw_bytes) {
      return Invalid(
          absl::StrCat(what, " of shape ", ShapeToString(shape), " needs ",
                       count, " values, two per byte: raw_data of ", needed,
                       " bytes, has ", raw_bytes, " (", type_name, ")"));
    }
    if (!fits || needed != raw_bytes) {
      return Invalid(absl::StrCat(
          what, " of shape ", ShapeToString(shape), " needs ", count,
          " values, has ", raw_bytes / type->bytes, " (raw_data of ", raw_bytes,
          " bytes; ", type_name, " takes ", type->bytes, ")"));
    }
  } else {
    for (Field field : kFields) {
      if (field != type->field && FieldSize(t, field) > 0) {
        return Invalid(absl::StrCat(what, " is a ", type_name,
                                    " tensor with values in ", FieldName(field),
                                    "; they belong in ", FieldName(type->field),
                                    " or raw_data"));
      }
    }
    const int64_t values = FieldSize(t, type->field);
    int64_t needed = 0;
    if (!StoredSize(*type, count, type->values_per_element, &needed) ||
        needed != values) {
      return Invalid(absl::StrCat(
          what, " of shape ", ShapeToString(shape), " needs ", needed,
          type->packed_4bit ? " entries (two values per entry)" : " values",
          ", has ", values, " (", FieldName(type->field), ")"));
    }
    if (type->packed_4bit) {
      for (int64_t i = 0; i < values; ++i) {
        const int32_t v = t.int32_data(static_cast<int>(i));
        if (v < 0 || v > std::numeric_limits<uint8_t>::max()) {
          return Invalid(absl::StrCat(what, ": int32_data[", i, "] = ", v,
                                      " is not a byte (a ", type_name,
                                      " tensor packs two values "
                                      "into each entry)"));
        }
      }
    }
  }
  if (nonzero > limits.max_tensor_elements) {
    return Exhausted(absl::StrCat(
        what, " of shape ", ShapeToString(shape), " has ",
        empty ? "a non-zero dims product of " : "",
        OverLimit(nonzero, empty ? "" : "elements", limits.max_tensor_elements,
                  "max_tensor_elements")));
  }
  // count is within max_tensor_elements here: the product cannot overflow.
  int64_t bytes = type->packed_4bit ? Int4Bytes(count) : count * type->bytes;
  if (type->field == Field::kString) {
    for (const std::string& s : t.string_data()) {
      bytes += static_cast<int64_t>(s.size());
    }
  }
  *total_bytes += bytes;
  if (*total_bytes > limits.max_total_tensor_bytes) {
    return Exhausted(
        absl::StrCat("the model's tensors hold more than ",
                     limits.max_total_tensor_bytes, " bytes (reached at ", what,
                     "); the limit is ModelLimits::max_total_tensor_bytes"));
  }
  if (weight) {
    const auto [index, nan] = FirstNonFinite(t, *type);
    if (index >= 0) {
      return Invalid(
          absl::StrCat(what, " holds ", nan ? "NaN" : "an infinite value",
                       " at element ", index, "; weights must be finite"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckDeclaredShape(const onnx::TensorShapeProto& shape,
                                const std::string& what,
                                const ModelLimits& limits) {
  if (shape.dim_size() > limits.max_rank) {
    return Exhausted(absl::StrCat(
        what, " has rank ",
        OverLimit(shape.dim_size(), "", limits.max_rank, "max_rank")));
  }
  int64_t nonzero = 1;
  for (int i = 0; i < shape.dim_size(); ++i) {
    if (!shape.dim(i).has_dim_value()) continue;
    const int64_t d = shape.dim(i).dim_value();
    if (d < 0) {
      return Invalid(absl::StrCat(what, " has a negative dimension (dim ", i,
                                  " is ", d, ")"));
    }
    if (d > limits.max_dim) {
      return Exhausted(
          absl::StrCat(what, ": dim ", i, " is ",
                       OverLimit(d, "", limits.max_dim, "max_dim")));
    }
    if (d > 0 && __builtin_mul_overflow(nonzero, d, &nonzero)) {
      return Exhausted(absl::StrCat(
          what, ": the product of its dims overflows int64 (at dim ", i, ")"));
    }
  }
  return absl::OkStatus();
}

// The type of a graph input or output or a value_info entry.
absl::Status CheckDeclaredType(const onnx::TypeProto& type,
                               const std::string& what,
                               const ModelLimits& limits, int nesting = 0) {
  if (nesting > kMaxTypeNesting) {
    return Invalid(absl::StrCat(what, " has a type nested more than ",
                                kMaxTypeNesting, " levels deep"));
  }
  const auto check_tensor = [&](int elem_type, bool has_shape,
                                const onnx::TensorShapeProto& shape) {
    // UNDEFINED (0): the element type is not declared.
    if (elem_type != onnx::TensorProto::UNDEFINED &&
        FindElementType(elem_type) == nullptr) {
      return Invalid(absl::StrCat(what, " has element type ",
                                  TypeName(elem_type),
                                  ", which is not an ONNX element type"));
    }
    return has_shape ? CheckDeclaredShape(shape, what, limits)
                     : absl::OkStatus();
  };
  switch (type.value_case()) {
    case onnx::TypeProto::kTensorType:
      return check_tensor(type.tensor_type().elem_type(),
                          type.tensor_type().has_shape(),
                          type.tensor_type().shape());
    case onnx::TypeProto::kSparseTensorType:
      return check_tensor(type.sparse_tensor_type().elem_type(),
                          type.sparse_tensor_type().has_shape(),
                          type.sparse_tensor_type().shape());
    case onnx::TypeProto::kSequenceType:
      return CheckDeclaredType(type.sequence_type().elem_type(), what, limits,
                               nesting + 1);
    case onnx::TypeProto::kOptionalType:
      return CheckDeclaredType(type.optional_type().elem_type(), what, limits,
                               nesting + 1);
    case onnx::TypeProto::kMapType:
      return CheckDeclaredType(type.map_type().value_type(), what, limits,
                               nesting + 1);
    default:
      return absl::OkStatus();
  }
}

// A float attribute (`f`, or each of `floats`) must be finite.
absl::Status CheckFloatAttribute(const onnx::AttributeProto& attr,
                                 const std::string& what) {
  const auto check = [&](float v, const std::string& which) {
    if (std::isfinite(v)) return absl::OkStatus();
    return Invalid(absl::StrCat(
        what, " is ", which, std::isnan(v) ? "NaN" : (v > 0 ? "inf" : "-inf"),
        "; float attributes must be finite"));
  };
  if (attr.has_f()) MIXQ_RETURN_IF_ERROR(check(attr.f(), ""));
  for (int k = 0; k < attr.floats_size(); ++k) {
    MIXQ_RETURN_IF_ERROR(
        check(attr.floats(k), absl::StrCat("(entry ", k, ") ")));
  }
  return absl::OkStatus();
}

absl::Status CheckAttributes(const onnx::NodeProto& node,
                             const std::string& label,
                             const ModelLimits& limits, int64_t* total_bytes) {
  absl::flat_hash_set<absl::string_view> names;
  for (const onnx::AttributeProto& attr : node.attribute()) {
    if (attr.name().empty()) {
      return Invalid(absl::StrCat(label, " has an attribute without a name"));
    }
    const std::string what =
        absl::StrCat("attribute ", Quote(attr.name()), " of ", label);
    if (!names.insert(attr.name()).second) {
      return Invalid(absl::StrCat(what, " is given more than once"));
    }
    if (attr.has_g() || attr.graphs_size() > 0 ||
        attr.type() == onnx::AttributeProto::GRAPH ||
        attr.type() == onnx::AttributeProto::GRAPHS) {
      return Invalid(
          absl::StrCat(what,
                       " holds a subgraph; subgraphs (the bodies of If, Loop, "
                       "Scan, ...) are not supported"));
    }
    if (attr.has_sparse_tensor() || attr.sparse_tensors_size() > 0) {
      return Invalid(
          absl::StrCat(what, " holds a sparse tensor, which is not supported"));
    }
    // Float attributes are the operator's constants (Gemm's alpha and beta,
    // LeakyRelu's alpha, epsilons, Clip bounds): a NaN or infinity there
    // poisons every value downstream. Constant's value_float(s) are data,
    // checked like its value tensor (not at all: -inf masks are legitimate).
    if (node.op_type() != "Constant") {
      MIXQ_RETURN_IF_ERROR(CheckFloatAttribute(attr, what));
    }
    if (attr.has_t()) {
      MIXQ_RETURN_IF_ERROR(
          CheckTensor(attr.t(), what, /*weight=*/false, limits, total_bytes));
    }
    for (int k = 0; k < attr.tensors_size(); ++k) {
      MIXQ_RETURN_IF_ERROR(CheckTensor(attr.tensors(k),
                                       absl::StrCat("tensor ", k, " of ", what),
                                       /*weight=*/false, limits, total_bytes));
    }
  }
  return absl::OkStatus();
}

// Checks a graph's values, nodes and structure.
class GraphValidator {
 public:
  GraphValidator(const onnx::GraphProto& graph, const ModelLimits& limits)
      : graph_(graph), limits_(limits) {}

  absl::Status Run() {
    if (graph_.node_size() > limits_.max_nodes) {
      return Exhausted(absl::StrCat("the graph has ",
                                    OverLimit(graph_.node_size(), "nodes",
                                              limits_.max_nodes, "max_nodes")));
    }
    if (graph_.initializer_size() > limits_.max_initializers) {
      return Exhausted(absl::StrCat(
          "the graph has ",
          OverLimit(graph_.initializer_size(), "initializers",
                    limits_.max_initializers, "max_initializers")));
    }
    if (graph_.sparse_initializer_size() > 0) {
      return Invalid(
          absl::StrCat("sparse initializer ",
                       Quote(graph_.sparse_initializer(0).values().name()),
                       " is not supported"));
    }
    MIXQ_RETURN_IF_ERROR(AddInputs());
    MIXQ_RETURN_IF_ERROR(AddInitializers());
    MIXQ_RETURN_IF_ERROR(AddNodes());
    MIXQ_RETURN_IF_ERROR(CheckValueInfo());
    MIXQ_RETURN_IF_ERROR(CheckOutputs());
    return CheckOrder();
  }

 private:
  // Who defines a value: a graph input, an initializer or a node.
  struct Definer {
    enum class Kind { kInput, kInitializer, kNode } kind;
    int index;
  };

  std::string Describe(const Definer& definer) const {
    switch (definer.kind) {
      case Definer::Kind::kInput:
        return absl::StrCat("graph input #", definer.index);
      case Definer::Kind::kInitializer:
        return absl::StrCat("initializer #", definer.index);
      case Definer::Kind::kNode:
        break;
    }
    return NodeLabel(graph_.node(definer.index), definer.index);
  }

  // RESOURCE_EXHAUSTED naming `what` (and quoting the start of `name`) if
  // `name` is longer than the limit.
  absl::Status CheckName(absl::string_view name, absl::string_view what) const {
    if (static_cast<int64_t>(name.size()) <= limits_.max_name_bytes)
      return absl::OkStatus();
    return Exhausted(
        absl::StrCat("the name of ", what, " ", Quote(name), " has ",
                     OverLimit(static_cast<int64_t>(name.size()), "bytes",
                               limits_.max_name_bytes, "max_name_bytes")));
  }

  absl::Status Define(const std::string& name, Definer definer) {
    MIXQ_RETURN_IF_ERROR(
        CheckName(name, definer.kind == Definer::Kind::kNode
                            ? absl::StrCat("an output of ", Describe(definer))
                            : Describe(definer)));
    const auto [it, inserted] = defined_.emplace(name, definer);
    if (inserted) return absl::OkStatus();
    // An initializer may also be listed as a graph input (IR < 4 style).
    if (it->second.kind == Definer::Kind::kInput &&
        definer.kind == Definer::Kind::kInitializer) {
      it->second = definer;
      return absl::OkStatus();
    }
    return Invalid(
        absl::StrCat("value ", Quote(name), " is defined more than once: by ",
                     Describe(definer), " and by ", Describe(it->second)));
  }

  // Checks a list of values (graph inputs or outputs, value_info; `kind`
  // names it): every entry named, listed once, with a well-formed declared
  // type, and whatever `each(entry, index, what)` checks.
  template <typename F>
  absl::Status CheckListed(
      const google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>& infos,
      absl::string_view kind, F&& each) {
    absl::flat_hash_set<absl::string_view> listed;
    for (int i = 0; i < infos.size(); ++i) {
      const onnx::ValueInfoProto& info = infos.Get(i);
      if (info.name().empty()) {
        return Invalid(absl::StrCat(kind, " #", i, " has no name"));
      }
      MIXQ_RETURN_IF_ERROR(CheckName(info.name(), absl::StrCat(kind, " #", i)));
      const std::string what = absl::StrCat(kind, " ", Quote(info.name()));
      if (!listed.insert(info.name()).second) {
        return Invalid(absl::StrCat(what, " is listed more than once"));
      }
      MIXQ_RETURN_IF_ERROR(CheckDeclaredType(info.type(), what, limits_));
      MIXQ_RETURN_IF_ERROR(each(info, i, what));
    }
    return absl::OkStatus();
  }

  absl::Status AddInputs() {
    return CheckListed(
        graph_.input(), "graph input",
        [&](const onnx::ValueInfoProto& input, int i, const std::string&) {
          return Define(input.name(), {Definer::Kind::kInput, i});
        });
  }

  absl::Status AddInitializers() {
    for (int i = 0; i < graph_.initializer_size(); ++i) {
      const onnx::TensorProto& tensor = graph_.initializer(i);
      if (tensor.name().empty()) {
        return Invalid(absl::StrCat("initializer #", i, " has no name"));
      }
      MIXQ_RETURN_IF_ERROR(CheckTensor(
          tensor, absl::StrCat("initializer ", Quote(tensor.name())),
          /*weight=*/true, limits_, &total_bytes_));
      MIXQ_RETURN_IF_ERROR(
          Define(tensor.name(), {Definer::Kind::kInitializer, i}));
    }
    return absl::OkStatus();
  }

  absl::Status AddNodes() {
    for (int j = 0; j < graph_.node_size(); ++j) {
      const onnx::NodeProto& node = graph_.node(j);
      MIXQ_RETURN_IF_ERROR(CheckName(node.name(), absl::StrCat("node #", j)));
      const std::string label = NodeLabel(node, j);
      if (node.op_type().empty()) {
        return Invalid(absl::StrCat(label, " has no op_type"));
      }
      if (!node.domain().empty() && node.domain() != "ai.onnx") {
        return Invalid(absl::StrCat(
            "unsupported operator ",
            Quote(absl::StrCat(node.domain(), ".", node.op_type())), " (node ",
            Quote(NodeName(node, j)), "): domain ", Quote(node.domain()),
            " is unknown; only the default ONNX domain ('' or 'ai.onnx') is "
            "supported"));
      }
      if (node.input_size() > limits_.max_node_inputs) {
        return Exhausted(absl::StrCat(
            label, " has ",
            OverLimit(node.input_size(), "inputs", limits_.max_node_inputs,
                      "max_node_inputs")));
      }
      if (node.output_size() > limits_.max_node_outputs) {
        return Exhausted(absl::StrCat(
            label, " has ",
            OverLimit(node.output_size(), "outputs", limits_.max_node_outputs,
                      "max_node_outputs")));
      }
      MIXQ_RETURN_IF_ERROR(
          CheckAttributes(node, label, limits_, &total_bytes_));
      bool named_output = false;
      for (const std::string& output : node.output()) {
        if (output.empty()) continue;  // an omitted optional output
        named_output = true;
        MIXQ_RETURN_IF_ERROR(Define(output, {Definer::Kind::kNode, j}));
      }
      if (!named_output) {
        return Invalid(absl::StrCat(label, " has no named output"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status CheckValueInfo() {
    return CheckListed(graph_.value_info(), "value_info",
                       [](const onnx::ValueInfoProto&, int,
                          const std::string&) { return absl::OkStatus(); });
  }

  absl::Status CheckOutputs() {
    return CheckListed(
        graph_.output(), "graph output",
        [&](const onnx::ValueInfoProto& output, int, const std::string& what) {
          if (defined_.contains(output.name())) return absl::OkStatus();
          return Invalid(absl::StrCat(
              what,
              " is not produced by any node, initializer or graph input"));
        });
  }

  // Every node input is defined, and the nodes have a topological order
  // (Kahn's algorithm; the file's order need not be one).
  absl::Status CheckOrder() const {
    const int n = graph_.node_size();
    std::vector<int> pending(n, 0);
    std::vector<std::vector<int>> consumers(n);
    std::vector<int> ready;
    for (int j = 0; j < n; ++j) {
      const onnx::NodeProto& node = graph_.node(j);
      for (const std::string& input : node.input()) {
        if (input.empty()) continue;  // an omitted optional input
        const auto it = defined_.find(input);
        if (it == defined_.end()) {
          return Invalid(absl::StrCat(
              "input ", Quote(input), " of ", NodeLabel(node, j),
              " is not produced by any node, initializer or graph input"));
        }
        if (it->second.kind == Definer::Kind::kNode) {
          ++pending[j];
          consumers[it->second.index].push_back(j);
        }
      }
      if (pending[j] == 0) ready.push_back(j);
    }
    int sorted = 0;
    while (!ready.empty()) {
      const int j = ready.back();
      ready.pop_back();
      ++sorted;
      for (int consumer : consumers[j]) {
        if (--pending[consumer] == 0) ready.push_back(consumer);
      }
    }
    if (sorted == n) return absl::OkStatus();
    // Every node left has an input from another node left: walking back
    // through those ends up going round a cycle; the first node seen twice
    // is on it.
    int j = 0;
    while (pending[j] == 0) ++j;
    std::vector<bool> seen(n, false);
    while (!seen[j]) {
      seen[j] = true;
      for (const std::string& input : graph_.node(j).input()) {
        if (input.empty()) continue;
        const Definer& definer = defined_.at(input);
        if (definer.kind == Definer::Kind::kNode &&
            pending[definer.index] > 0) {
          j = definer.index;
          break;
        }
      }
    }
    return Invalid(absl::StrCat("the graph has a cycle (through node ",
                                Quote(NodeName(graph_.node(j), j)), ")"));
  }

  const onnx::GraphProto& graph_;
  const ModelLimits& limits_;
  absl::flat_hash_map<std::string, Definer> defined_;
  int64_t total_bytes_ = 0;
};

}  // namespace

absl::Status ValidateModel(const onnx::ModelProto& model,
                           const ModelLimits& limits) {
  if (!model.has_graph()) {
    return Invalid("not an ONNX model: it has no graph");
  }
  if (model.ir_version() < kMinIrVersion) {
    return Invalid(absl::StrCat("ir_version ", model.ir_version(),
                                " is not supported (need ", kMinIrVersion,
                                " or later; 0 means the field is missing)"));
  }
  int default_domain = 0;
  for (const onnx::OperatorSetIdProto& opset : model.opset_import()) {
    if (!opset.domain().empty() && opset.domain() != "ai.onnx") continue;
    ++default_domain;
    if (opset.version() <= 0) {
      return Invalid(absl::StrCat("opset_import: version ", opset.version(),
                                  " of the default domain is not positive"));
    }
  }
  if (default_domain == 0) {
    return Invalid(
        "opset_import has no entry for the default ONNX domain ('' or "
        "'ai.onnx')");
  }
  if (default_domain > 1) {
    return Invalid(absl::StrCat("opset_import lists the default ONNX domain ",
                                default_domain, " times"));
  }
  if (model.functions_size() > 0) {
    return Invalid(absl::StrCat("the model defines function ",
                                Quote(model.functions(0).name()),
                                "; model-local functions are not supported"));
  }
  return GraphValidator(model.graph(), limits).Run();
}

}  // namespace mixq::engine
