#include "engine/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/npz.h"
#include "util/status_macros.h"

namespace mixq::engine {
namespace {

// NPY and IDX payloads are copied into host memory with memcpy: NPY data we
// accept is little-endian ('<' or single-byte) and IDX dims are decoded
// explicitly, so only NPY needs a little-endian host.
static_assert(std::endian::native == std::endian::little,
              "NPY decoding assumes a little-endian host");

// Inputs and labels arrive inline; a data set beyond these is not something
// the server should hold in memory (Fashion-MNIST's training images are 47 M
// values, 47 MB): values of one array (as many as one activation of a model
// per sample, engine/model.h; 1 GiB as float32), and bytes of its decoded
// file (a .npz member, a gzip stream).
constexpr int64_t kMaxArrayValues = int64_t{1} << 28;
constexpr size_t kMaxDecompressedBytes = size_t{1} << 30;
// A gzip stream is first inflated this far, to read the size its NPY or IDX
// header declares (NumPy writes headers of a few hundred bytes).
constexpr size_t kGunzipHeaderProbeBytes = size_t{64} << 10;
// First output buffer of Gunzip; it then doubles.
constexpr size_t kGunzipInitialBytes = size_t{64} << 10;

constexpr char kGzipMagic[] = "\x1f\x8b";
constexpr char kNpyMagic[] = "\x93NUMPY";
constexpr size_t kNpyMagicSize = 6;
// magic + major + minor + uint16 header length (version 1) or uint32 (2, 3).
constexpr size_t kNpyV1PreambleSize = kNpyMagicSize + 2 + 2;
constexpr size_t kNpyV2PreambleSize = kNpyMagicSize + 2 + 4;

constexpr uint32_t kIdxImagesMagic = 0x00000803;
constexpr uint32_t kIdxLabelsMagic = 0x00000801;
constexpr uint8_t kIdxTypeUint8 = 0x08;
constexpr size_t kIdxMagicSize = 4;
constexpr size_t kIdxDimSize = 4;

constexpr float kUint8Scale = 255.0f;

enum class DType {
  kFloat32,
  kFloat64,
  kUint8,
  kInt8,
  kInt16,
  kUint16,
  kInt32,
  kInt64
};

// Copies little-endian integers of type T out of `data` as int64 labels.
template <typename T>
std::vector<int64_t> WidenLabels(absl::string_view data) {
  std::vector<T> narrow(data.size() / sizeof(T));
  std::memcpy(narrow.data(), data.data(), data.size());
  return std::vector<int64_t>(narrow.begin(), narrow.end());
}

struct DTypeInfo {
  absl::string_view descr;  // as NumPy writes it in a .npy header
  DType dtype;
  int64_t size;
  // Null for types that cannot hold class labels.
  std::vector<int64_t> (*read_labels)(absl::string_view data);
};

constexpr DTypeInfo kNpyDTypes[] = {
    {"<f4", DType::kFloat32, 4, nullptr},
    {"<f8", DType::kFloat64, 8, nullptr},
    {"|u1", DType::kUint8, 1, WidenLabels<uint8_t>},
    {"|i1", DType::kInt8, 1, WidenLabels<int8_t>},
    {"<i2", DType::kInt16, 2, WidenLabels<int16_t>},
    {"<u2", DType::kUint16, 2, WidenLabels<uint16_t>},
    {"<i4", DType::kInt32, 4, WidenLabels<int32_t>},
    {"<i8", DType::kInt64, 8, WidenLabels<int64_t>},
};

// The only IDX element type mixq reads (both magics above say uint8).
constexpr DTypeInfo kIdxUint8 = {"|u1", DType::kUint8, 1, WidenLabels<uint8_t>};

// A decoded array header plus a view of its payload (whose byte size has
// been checked against the shape).
struct RawArray {
  DTypeInfo type;
  Shape shape;
  absl::string_view data;
};

std::string SupportedNpyDTypes() {
  return absl::StrJoin(kNpyDTypes, ", ",
                       [](std::string* out, const DTypeInfo& info) {
                         absl::StrAppend(out, info.descr);
                       });
}

std::string Hex32(uint32_t value) {
  return absl::StrCat("0x", absl::Hex(value, absl::kZeroPad8));
}

// Number of elements of `shape` and their size in bytes; INVALID_ARGUMENT on
// a negative dim or when either product overflows int64.
absl::Status CheckedSizes(const Shape& shape, int64_t element_size,
                          int64_t* elements, int64_t* bytes) {
  int64_t count = 1;
  for (int64_t dim : shape) {
    if (dim < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("negative dimension in shape ", ShapeToString(shape)));
    }
    if (__builtin_mul_overflow(count, dim, &count)) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape ", ShapeToString(shape), " overflows int64"));
    }
  }
  if (__builtin_mul_overflow(count, element_size, bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape ", ShapeToString(shape), " overflows int64 bytes"));
  }
  *elements = count;
  return absl::OkStatus();
}

// The bytes of the payload `shape` declares; RESOURCE_EXHAUSTED beyond
// kMaxArrayValues or kMaxDecompressedBytes.
absl::StatusOr<int64_t> DeclaredPayloadBytes(const Shape& shape,
                                             int64_t element_size) {
  int64_t elements = 0;
  int64_t bytes = 0;
  MIXQ_RETURN_IF_ERROR(CheckedSizes(shape, element_size, &elements, &bytes));
  if (elements > kMaxArrayValues ||
      static_cast<uint64_t>(bytes) > kMaxDecompressedBytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "shape ", ShapeToString(shape), " holds ", elements, " values (", bytes,
        " bytes); the limit is ", kMaxArrayValues, " values and ",
        kMaxDecompressedBytes, " bytes per array"));
  }
  return bytes;
}

absl::Status CheckPayloadSize(const Shape& shape, int64_t element_size,
                              absl::string_view data) {
  MIXQ_ASSIGN_OR_RETURN(const int64_t bytes,
                        DeclaredPayloadBytes(shape, element_size));
  if (static_cast<uint64_t>(bytes) != data.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "size mismatch: shape ", ShapeToString(shape), " needs ", bytes,
        " bytes of data but ", data.size(), " follow the header",
        bytes > static_cast<int64_t>(data.size()) ? " (truncated)" : ""));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// NPY header: a Python dict literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (16, 1, 28, 28), }
// parsed by a small recursive-descent reader that accepts exactly the three
// keys NumPy writes.

class NpyHeaderParser {
 public:
  explicit NpyHeaderParser(absl::string_view text) : text_(text) {}

  absl::Status Parse(std::string* descr, Shape* shape) {
    bool have_descr = false, have_order = false, have_shape = false;
    MIXQ_RETURN_IF_ERROR(Expect('{'));
    while (true) {
      SkipSpace();
      if (Peek() == '}') break;
      std::string key;
      MIXQ_RETURN_IF_ERROR(ParseString(&key));
      MIXQ_RETURN_IF_ERROR(Expect(':'));
      if (key == "descr" && !have_descr) {
        have_descr = true;
        MIXQ_RETURN_IF_ERROR(ParseString(descr));
      } else if (key == "fortran_order" && !have_order) {
        have_order = true;
        bool fortran_order = false;
        MIXQ_RETURN_IF_ERROR(ParseBool(&fortran_order));
        if (fortran_order) {
          return absl::InvalidArgumentError(
              "fortran_order True is not supported (save the array in C "
              "order)");
        }
      } else if (key == "shape" && !have_shape) {
        have_shape = true;
        MIXQ_RETURN_IF_ERROR(ParseShape(shape));
      } else {
        return Error(absl::StrCat("unexpected or repeated key '", key, "'"));
      }
      MIXQ_RETURN_IF_ERROR(EndItem('}'));
    }
    ++pos_;  // '}'
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after the dict");
    if (!have_descr || !have_order || !have_shape) {
      return absl::InvalidArgumentError(
          "NPY header lacks one of 'descr', 'fortran_order', 'shape'");
    }
    return absl::OkStatus();
  }

 private:
  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  void SkipSpace() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\n' || text_[pos_] == '\t' ||
            text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed NPY header at offset ", pos_, ": ", what));
  }

  absl::Status Expect(char c) {
    SkipSpace();
    if (Peek() != c) {
      return Error(absl::StrCat("expected '", std::string(1, c), "'"));
    }
    ++pos_;
    return absl::OkStatus();
  }

  // After a dict entry or tuple item: consumes a ',' or stops before
  // `close`.
  absl::Status EndItem(char close) {
    SkipSpace();
    if (Peek() == ',') {
      ++pos_;
    } else if (Peek() != close) {
      return Error(
          absl::StrCat("expected ',' or '", std::string(1, close), "'"));
    }
    return absl::OkStatus();
  }

  absl::Status ParseString(std::string* out) {
    SkipSpace();
    const char quote = Peek();
    if (quote != '\'' && quote != '"') return Error("expected a quoted string");
    const size_t end = text_.find(quote, pos_ + 1);
    if (end == absl::string_view::npos) return Error("unterminated string");
    *out = std::string(text_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return absl::OkStatus();
  }

  absl::Status ParseBool(bool* out) {
    SkipSpace();
    for (auto [word, value] :
         {std::pair<absl::string_view, bool>{"True", true}, {"False", false}}) {
      if (text_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        *out = value;
        return absl::OkStatus();
      }
    }
    return Error("expected True or False");
  }

  absl::Status ParseShape(Shape* shape) {
    shape->clear();
    MIXQ_RETURN_IF_ERROR(Expect('('));
    while (true) {
      SkipSpace();
      if (Peek() == ')') break;
      if (Peek() < '0' || Peek() > '9') {
        return Error("expected a non-negative integer dimension");
      }
      int64_t dim = 0;
      while (Peek() >= '0' && Peek() <= '9') {
        if (__builtin_mul_overflow(dim, int64_t{10}, &dim) ||
            __builtin_add_overflow(dim, Peek() - '0', &dim)) {
          return Error("dimension overflows int64");
        }
        ++pos_;
      }
      shape->push_back(dim);
      MIXQ_RETURN_IF_ERROR(EndItem(')'));
    }
    ++pos_;  // ')'
    return absl::OkStatus();
  }

  absl::string_view text_;
  size_t pos_ = 0;
};

// Why a dtype NumPy can write is refused, for the two users meet most.
std::string DTypeHint(absl::string_view descr) {
  if (absl::StartsWith(descr, ">")) {
    return absl::StrCat(": big-endian data is not read (save a.astype('<",
                        descr.substr(1), "') instead)");
  }
  if (absl::StartsWith(descr, "|O")) {
    return ": object arrays hold pickled Python objects, which are never "
           "loaded";
  }
  return "";
}

uint32_t ReadLittleEndian(absl::string_view bytes, size_t offset,
                          size_t width) {
  uint32_t value = 0;
  for (size_t i = 0; i < width; ++i) {
    value |= uint32_t{static_cast<uint8_t>(bytes[offset + i])} << (8 * i);
  }
  return value;
}

uint32_t ReadBigEndian32(absl::string_view bytes, size_t offset) {
  uint32_t value = 0;
  for (size_t i = 0; i < 4; ++i) {
    value = (value << 8) | static_cast<uint8_t>(bytes[offset + i]);
  }
  return value;
}

// The header of NPY `bytes` (type and shape) into `*array`; returns where
// the payload starts. The payload is not checked.
absl::StatusOr<size_t> ParseNpyHeader(absl::string_view bytes,
                                      RawArray* array) {
  if (bytes.size() < kNpyV1PreambleSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("truncated NPY preamble (", bytes.size(), " bytes)"));
  }
  const int major = static_cast<uint8_t>(bytes[kNpyMagicSize]);
  size_t preamble = 0;
  if (major == 1) {
    preamble = kNpyV1PreambleSize;
  } else if (major == 2 || major == 3) {
    preamble = kNpyV2PreambleSize;
    if (bytes.size() < preamble) {
      return absl::InvalidArgumentError(
          absl::StrCat("truncated NPY preamble (", bytes.size(), " bytes)"));
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unsupported NPY format version ", major, " (expected 1, 2 or 3)"));
  }
  const size_t header_size =
      ReadLittleEndian(bytes, kNpyMagicSize + 2, preamble - kNpyMagicSize - 2);
  if (header_size > bytes.size() - preamble) {
    return absl::InvalidArgumentError(
        absl::StrCat("truncated NPY header: needs ", header_size, " bytes, ",
                     bytes.size() - preamble, " present"));
  }
  std::string descr;
  MIXQ_RETURN_IF_ERROR(NpyHeaderParser(bytes.substr(preamble, header_size))
                           .Parse(&descr, &array->shape));
  const auto* info =
      std::find_if(std::begin(kNpyDTypes), std::end(kNpyDTypes),
                   [&](const DTypeInfo& t) { return t.descr == descr; });
  if (info == std::end(kNpyDTypes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported NPY dtype '", descr, "'", DTypeHint(descr),
                     " (supported: ", SupportedNpyDTypes(), ")"));
  }
  array->type = *info;
  return preamble + header_size;
}

absl::StatusOr<RawArray> ParseNpy(absl::string_view bytes) {
  RawArray array;
  MIXQ_ASSIGN_OR_RETURN(const size_t offset, ParseNpyHeader(bytes, &array));
  array.data = bytes.substr(offset);
  MIXQ_RETURN_IF_ERROR(
      CheckPayloadSize(array.shape, array.type.size, array.data));
  return array;
}

// The header of IDX `bytes` into `*array`; returns where the payload
// starts. The payload is not checked.
absl::StatusOr<size_t> ParseIdxHeader(absl::string_view bytes,
                                      uint32_t expected_magic,
                                      RawArray* array) {
  if (bytes.size() < kIdxMagicSize) {
    return absl::InvalidArgumentError("truncated IDX magic");
  }
  const uint32_t magic = ReadBigEndian32(bytes, 0);
  if (magic != expected_magic) {
    const char* kind = magic == kIdxImagesMagic   ? " (IDX images)"
                       : magic == kIdxLabelsMagic ? " (IDX labels)"
                                                  : "";
    return absl::InvalidArgumentError(
        absl::StrCat("wrong IDX magic ", Hex32(magic), kind, ", expected ",
                     Hex32(expected_magic)));
  }
  // The magic's low byte is the rank, the one above it the element type.
  static_assert(((kIdxImagesMagic >> 8) & 0xff) == kIdxTypeUint8 &&
                ((kIdxLabelsMagic >> 8) & 0xff) == kIdxTypeUint8);
  static_assert(kIdxUint8.dtype == DType::kUint8);
  const size_t rank = magic & 0xff;
  const size_t header_size = kIdxMagicSize + kIdxDimSize * rank;
  if (bytes.size() < header_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("truncated IDX header: needs ", header_size, " bytes, ",
                     bytes.size(), " present"));
  }
  array->type = kIdxUint8;
  for (size_t i = 0; i < rank; ++i) {
    array->shape.push_back(
        ReadBigEndian32(bytes, kIdxMagicSize + kIdxDimSize * i));
  }
  return header_size;
}

absl::StatusOr<RawArray> ParseIdx(absl::string_view bytes,
                                  uint32_t expected_magic) {
  RawArray array;
  MIXQ_ASSIGN_OR_RETURN(const size_t offset,
                        ParseIdxHeader(bytes, expected_magic, &array));
  array.data = bytes.substr(offset);
  MIXQ_RETURN_IF_ERROR(
      CheckPayloadSize(array.shape, array.type.size, array.data));
  return array;
}

bool LooksLikeIdx(absl::string_view bytes) {
  return bytes.size() >= 2 && bytes[0] == 0 && bytes[1] == 0;
}

// The size of the NPY or IDX file whose first bytes are `prefix`, from its
// header; RESOURCE_EXHAUSTED when the array it declares is over the limits;
// nullopt for other formats and broken headers (which ParseArray reports).
absl::StatusOr<std::optional<size_t>> DeclaredFileSize(absl::string_view prefix,
                                                       uint32_t idx_magic) {
  RawArray array;
  absl::StatusOr<size_t> offset;
  if (absl::StartsWith(prefix, absl::string_view(kNpyMagic, kNpyMagicSize))) {
    offset = ParseNpyHeader(prefix, &array);
  } else if (LooksLikeIdx(prefix)) {
    offset = ParseIdxHeader(prefix, idx_magic, &array);
  } else {
    return std::nullopt;
  }
  if (!offset.ok()) return std::nullopt;
  MIXQ_ASSIGN_OR_RETURN(const int64_t payload,
                        DeclaredPayloadBytes(array.shape, array.type.size));
  return *offset + static_cast<size_t>(payload);
}

// Detects gzip / NPY / IDX from the content (ParseFile handles .npz). A gzip
// stream is inflated into `*inflated`, which the returned array's data then
// views.
absl::StatusOr<RawArray> ParseArray(absl::string_view bytes, uint32_t idx_magic,
                                    std::string* inflated) {
  if (absl::StartsWith(bytes, absl::string_view(kGzipMagic, 2))) {
    // The header first: the stream is inflated only as far as the array it
    // declares, once that is known to be within the limits.
    MIXQ_ASSIGN_OR_RETURN(std::string prefix,
                          GunzipPrefix(bytes, kGunzipHeaderProbeBytes));
    MIXQ_ASSIGN_OR_RETURN(const std::optional<size_t> declared,
                          DeclaredFileSize(prefix, idx_magic));
    if (!declared.has_value()) {
      *inflated = std::move(prefix);  // not an array header: reported below
    } else {
      absl::StatusOr<std::string> all = Gunzip(bytes, *declared);
      if (absl::IsResourceExhausted(all.status())) {
        return absl::InvalidArgumentError(
            absl::StrCat("gzip: the stream holds more than the ", *declared,
                         " bytes its header declares"));
      }
      if (!all.ok()) return all.status();
      *inflated = *std::move(all);
    }
    bytes = *inflated;
    if (absl::StartsWith(bytes, absl::string_view(kGzipMagic, 2))) {
      return absl::InvalidArgumentError(
          "nested gzip streams are not supported");
    }
  }
  if (absl::StartsWith(bytes, absl::string_view(kNpyMagic, kNpyMagicSize))) {
    return ParseNpy(bytes);
  }
  if (LooksLikeIdx(bytes)) {
    return ParseIdx(bytes, idx_magic);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unrecognized format (", bytes.size(),
                   " bytes; expected .npy, .npz, IDX or gzip of .npy or IDX)"));
}

// What a file is read for: the IDX magic it must have, and the .npz keys
// that name such an array when the archive has several.
struct ArrayRole {
  absl::string_view what;  // "inputs" or "labels", for messages
  uint32_t idx_magic;
  absl::Span<const absl::string_view> npz_keys;
};

constexpr absl::string_view kNpzInputKeys[] = {"x", "inputs", "images", "data"};
constexpr absl::string_view kNpzLabelKeys[] = {"y", "labels", "targets"};
constexpr ArrayRole kInputsRole = {"inputs", kIdxImagesMagic, kNpzInputKeys};
constexpr ArrayRole kLabelsRole = {"labels", kIdxLabelsMagic, kNpzLabelKeys};

std::string QuotedList(absl::Span<const std::string> keys) {
  return absl::StrJoin(keys, ", ", [](std::string* out, absl::string_view k) {
    absl::StrAppend(out, "'", k, "'");
  });
}

// The key of the .npz array to read when the caller named none: the only
// array, or the only one whose key is one of `role.npz_keys`.
absl::StatusOr<std::string> PickNpzKey(const std::vector<std::string>& keys,
                                       const ArrayRole& role) {
  if (keys.empty()) {
    return absl::InvalidArgumentError("the .npz archive holds no arrays");
  }
  if (keys.size() == 1) return keys.front();
  std::vector<std::string> matches;
  for (const std::string& key : keys) {
    if (absl::c_linear_search(role.npz_keys, key)) matches.push_back(key);
  }
  if (matches.size() == 1) return matches.front();
  const std::string known = absl::StrJoin(role.npz_keys, ", ");
  if (matches.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot tell which array holds the ", role.what,
                     ": the .npz archive has ", QuotedList(keys),
                     " and none is named ", known, " (choose one by its key)"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("cannot tell which array holds the ", role.what, ": ",
                   QuotedList(matches), " could all be (the archive has ",
                   QuotedList(keys), "; choose one by its key)"));
}

// Detects zip (.npz) / gzip / NPY / IDX from the content and locates the
// array. Compressed or archived data is extracted into `*storage`, which the
// returned array's data then views. `*where` receives what errors about the
// array's content should be prefixed with: `name`, or for a .npz
// "<name>: array '<key>'". Returned errors already carry that prefix.
absl::StatusOr<RawArray> ParseFile(absl::string_view bytes,
                                   absl::string_view name,
                                   const ArrayRole& role,
                                   absl::string_view npz_key,
                                   std::string* storage, std::string* where) {
  *where = std::string(name);
  if (LooksLikeZip(bytes)) {
    std::string key(npz_key);
    if (key.empty()) {
      MIXQ_ASSIGN_OR_RETURN(const std::vector<std::string> keys,
                            NpzKeys(bytes, name));
      absl::StatusOr<std::string> picked = PickNpzKey(keys, role);
      if (!picked.ok()) return Annotate(picked.status(), name);
      key = *std::move(picked);
    }
    MIXQ_ASSIGN_OR_RETURN(
        *storage, ReadNpzArray(bytes, name, key, kMaxDecompressedBytes));
    *where = absl::StrCat(name, ": array '", key, "'");
    if (!absl::StartsWith(*storage,
                          absl::string_view(kNpyMagic, kNpyMagicSize))) {
      return absl::InvalidArgumentError(
          absl::StrCat(*where, ": not a .npy file (no NPY magic)"));
    }
    absl::StatusOr<RawArray> array = ParseNpy(*storage);
    if (!array.ok()) return Annotate(array.status(), *where);
    return array;
  }
  if (!npz_key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": an array key ('", npz_key,
                     "') was given but the file is not a .npz archive"));
  }
  absl::StatusOr<RawArray> array = ParseArray(bytes, role.idx_magic, storage);
  if (!array.ok()) return Annotate(array.status(), name);
  return array;
}

absl::StatusOr<Tensor> ToInputTensor(const RawArray& array) {
  if (array.shape.empty()) {
    return absl::InvalidArgumentError(
        "expected an array [N, ...], got a scalar");
  }
  const int64_t count = NumElements(array.shape);
  if (count == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("no samples (shape ", ShapeToString(array.shape), ")"));
  }
  std::vector<float> values(count);
  ArrayMap out(values.data(), count);
  switch (array.type.dtype) {
    case DType::kFloat32:
      std::memcpy(values.data(), array.data.data(), array.data.size());
      break;
    case DType::kFloat64: {
      // The payload may be unaligned for double: copy before viewing it.
      Eigen::ArrayXd wide(count);
      std::memcpy(wide.data(), array.data.data(), array.data.size());
      out = wide.cast<float>();
      break;
    }
    case DType::kUint8:
      out = Eigen::Map<const Eigen::Array<uint8_t, Eigen::Dynamic, 1>>(
                reinterpret_cast<const uint8_t*>(array.data.data()), count)
                .cast<float>() /
            kUint8Scale;
      break;
    case DType::kInt64:
    case DType::kInt32: {
      // Token ids and masks: carried as floats, which hold integers exactly
      // only up to 2^24.
      const std::vector<int64_t> ints = array.type.read_labels(array.data);
      const auto inexact = absl::c_find_if(ints, [](int64_t v) {
        return v > kMaxExactFloatInteger || v < -kMaxExactFloatInteger;
      });
      if (inexact != ints.end()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "integer ", *inexact, " at element ", inexact - ints.begin(),
            " is not exactly representable as float32 (|value| > 2^24)"));
      }
      for (int64_t i = 0; i < count; ++i) {
        values[i] = static_cast<float>(ints[i]);
      }
      break;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unsupported dtype '", array.type.descr,
                       "' for inputs (expected <f4, <f8, |u1, <i4 or <i8)"));
  }
  if (!out.isFinite().all()) {
    const auto it = std::find_if(values.begin(), values.end(),
                                 [](float v) { return !std::isfinite(v); });
    const int64_t index = it - values.begin();
    return absl::InvalidArgumentError(absl::StrCat(
        std::isnan(*it) ? "NaN" : "infinite value (or beyond float32 range)",
        " at element ", index));
  }
  return Tensor(array.shape, std::move(values));
}

absl::StatusOr<std::vector<int64_t>> ToLabels(const RawArray& array) {
  const Shape& shape = array.shape;
  if (!(shape.size() == 1 || (shape.size() == 2 && shape[1] == 1))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "labels must have shape [N] or [N, 1], got ", ShapeToString(shape)));
  }
  if (shape[0] == 0) return absl::InvalidArgumentError("no labels");
  if (array.type.read_labels == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported dtype '", array.type.descr,
                     "' for labels (expected an integer type)"));
  }
  std::vector<int64_t> labels = array.type.read_labels(array.data);
  const auto negative = std::find_if(labels.begin(), labels.end(),
                                     [](int64_t v) { return v < 0; });
  if (negative != labels.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "negative label ", *negative, " at index ", negative - labels.begin()));
  }
  return labels;
}

// ParseFile, then `convert` of the array, its errors prefixed like
// ParseFile's.
template <typename T>
absl::StatusOr<T> DecodeFile(absl::string_view bytes, absl::string_view name,
                             const ArrayRole& role, absl::string_view npz_key,
                             absl::StatusOr<T> (*convert)(const RawArray&)) {
  std::string storage;
  std::string where;
  MIXQ_ASSIGN_OR_RETURN(
      const RawArray array,
      ParseFile(bytes, name, role, npz_key, &storage, &where));
  absl::StatusOr<T> decoded = convert(array);
  if (!decoded.ok()) return Annotate(decoded.status(), where);
  return decoded;
}

// Ends the inflate stream however Gunzip returns.
struct InflateStream {
  z_stream z{};
  ~InflateStream() { inflateEnd(&z); }
};

// Gunzip, or with `prefix_only` GunzipPrefix.
absl::StatusOr<std::string> Inflate(absl::string_view bytes,
                                    size_t max_output_bytes, bool prefix_only) {
  InflateStream stream;
  z_stream& z = stream.z;
  // 16 + MAX_WBITS: expect a gzip header and trailer (not raw zlib).
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) {
    return absl::ResourceExhaustedError("gzip: inflateInit2 failed");
  }
  // One byte past the limit tells "exactly max_output_bytes" from "more".
  const size_t limit =
      prefix_only || max_output_bytes == std::numeric_limits<size_t>::max()
          ? max_output_bytes
          : max_output_bytes + 1;
  std::string out;
  size_t produced = 0;
  size_t fed = 0;  // input bytes handed to zlib so far (avail_in is 32-bit)
  while (true) {
    if (z.avail_in == 0 && fed < bytes.size()) {
      const size_t chunk = std::min<size_t>(bytes.size() - fed, UINT_MAX);
      z.next_in =
          reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data() + fed));
      z.avail_in = static_cast<uInt>(chunk);
      fed += chunk;
    }
    if (produced == out.size()) {
      out.resize(
          std::min(limit, std::max(kGunzipInitialBytes, 2 * out.size())));
    }
    z.next_out = reinterpret_cast<Bytef*>(out.data() + produced);
    z.avail_out =
        static_cast<uInt>(std::min<size_t>(out.size() - produced, UINT_MAX));
    const uInt avail_out_before = z.avail_out;
    const int rc = inflate(&z, Z_NO_FLUSH);
    produced += avail_out_before - z.avail_out;
    if (prefix_only && produced == max_output_bytes) break;
    if (produced > max_output_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("gzip: decompressed data exceeds the limit of ",
                       max_output_bytes, " bytes"));
    }
    const size_t remaining = bytes.size() - fed + z.avail_in;
    if (rc == Z_STREAM_END) {
      if (remaining == 0) break;
      // `gzip a b` concatenates members; anything else after the trailer is
      // corruption.
      const absl::string_view rest = bytes.substr(bytes.size() - remaining);
      if (!absl::StartsWith(rest, absl::string_view(kGzipMagic, 2))) {
        return absl::InvalidArgumentError(absl::StrCat(
            "gzip: ", remaining, " trailing bytes after the stream"));
      }
      if (inflateReset(&z) != Z_OK) {
        return absl::InternalError("gzip: inflateReset failed");
      }
      continue;
    }
    if (rc == Z_OK || rc == Z_BUF_ERROR) {
      // No input left, room for output, and no end of stream: zlib wants
      // bytes that are not there.
      if (remaining == 0 && z.avail_out > 0) {
        return absl::InvalidArgumentError("gzip: truncated stream");
      }
      // zlib promises progress when it has input and output room; guard the
      // loop anyway so no input can spin it.
      if (rc == Z_BUF_ERROR && z.avail_in > 0 && z.avail_out > 0) {
        return absl::InvalidArgumentError("gzip: inflate made no progress");
      }
      continue;
    }
    if (rc == Z_MEM_ERROR) {
      return absl::ResourceExhaustedError("gzip: out of memory");
    }
    return absl::InvalidArgumentError(
        absl::StrCat("gzip: corrupt data (",
                     z.msg != nullptr ? z.msg : "unknown zlib error", ")"));
  }
  out.resize(produced);
  return out;
}

}  // namespace

absl::StatusOr<std::string> Gunzip(absl::string_view bytes,
                                   size_t max_output_bytes) {
  return Inflate(bytes, max_output_bytes, false);
}

absl::StatusOr<std::string> GunzipPrefix(absl::string_view bytes,
                                         size_t prefix_bytes) {
  return Inflate(bytes, prefix_bytes, true);
}

absl::StatusOr<Tensor> DecodeInputs(absl::string_view bytes,
                                    absl::string_view name,
                                    absl::string_view npz_key) {
  return DecodeFile(bytes, name, kInputsRole, npz_key, ToInputTensor);
}

absl::StatusOr<std::vector<int64_t>> DecodeLabels(absl::string_view bytes,
                                                  absl::string_view name,
                                                  absl::string_view npz_key) {
  return DecodeFile(bytes, name, kLabelsRole, npz_key, ToLabels);
}

absl::Status CheckLabels(absl::Span<const int64_t> labels, int64_t num_classes,
                         absl::string_view name) {
  if (num_classes < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": cannot check labels against ", num_classes,
        " classes (the model needs a fixed, positive class count)"));
  }
  const auto outside = absl::c_find_if(
      labels, [&](int64_t label) { return label < 0 || label >= num_classes; });
  if (outside != labels.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": label ", *outside, " at index ",
                     outside - labels.begin(), " is outside the model's ",
                     num_classes, " classes [0, ", num_classes, ")"));
  }
  return absl::OkStatus();
}

absl::Status Normalize(float mean, float stddev, Tensor* inputs) {
  if (!std::isfinite(mean)) {
    return absl::InvalidArgumentError(
        absl::StrCat("normalize: mean ", mean, " is not finite"));
  }
  if (!(stddev > 0) || !std::isfinite(stddev)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "normalize: stddev ", stddev, " must be positive and finite"));
  }
  inputs->flat() = (inputs->flat() - mean) / stddev;
  return absl::OkStatus();
}

absl::Status ConformToModelInput(const Shape& model_input_shape,
                                 Tensor* inputs) {
  const auto mismatch = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("inputs of shape ", ShapeToString(inputs->shape()),
                     " do not fit the model input shape ",
                     ShapeToString(model_input_shape), ": ", why));
  };
  if (model_input_shape.empty()) {
    return mismatch("the model input has no batch dimension");
  }
  if (inputs->rank() == 0) {
    return mismatch("the inputs have no batch dimension");
  }
  const Shape model_sample(model_input_shape.begin() + 1,
                           model_input_shape.end());
  if (std::any_of(model_sample.begin(), model_sample.end(),
                  [](int64_t d) { return d <= 0; })) {
    return mismatch(
        "only the model's batch dimension may be symbolic or empty");
  }
  int64_t model_count = 0;
  int64_t unused_bytes = 0;
  if (!CheckedSizes(model_sample, 1, &model_count, &unused_bytes).ok()) {
    return mismatch("model sample size overflows");
  }
  const int64_t batch = inputs->dim(0);
  const int64_t input_count =
      NumElements(Shape(inputs->shape().begin() + 1, inputs->shape().end()));
  if (input_count != model_count) {
    return mismatch(absl::StrCat(
        input_count, " values per sample, the model takes ", model_count));
  }
  Shape conformed = {batch};
  conformed.insert(conformed.end(), model_sample.begin(), model_sample.end());
  inputs->Reshape(std::move(conformed));
  return absl::OkStatus();
}

}  // namespace mixq::engine
