#include "engine/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/npz.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/fixtures.h"
#include "tests/support/peak_rss.h"
#include "util/file.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::FashionMnistInstalled;
using ::mixq::testing::FashionMnistTestSplit;
using ::mixq::testing::FixturePath;
using ::mixq::testing::ReadFashionMnistTestSplit;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::FloatEq;
using ::testing::HasSubstr;
using ::testing::Pointwise;

constexpr char kName[] = "data/inputs.bin";

// .npy bytes with header dict `dict` (padded as NumPy pads it) and `payload`.
std::string NpyWithDict(absl::string_view dict, absl::string_view payload,
                        int version = 1) {
  const size_t length_bytes = version == 1 ? 2 : 4;
  std::string header(dict);
  const size_t total = 8 + length_bytes + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::string out("\x93NUMPY", 6);
  out.push_back(static_cast<char>(version));
  out.push_back('\0');
  for (size_t i = 0; i < length_bytes; ++i) {
    out.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xff));
  }
  return absl::StrCat(out, header, payload);
}

std::string NpyDict(absl::string_view descr, const Shape& shape,
                    absl::string_view fortran_order = "False") {
  std::string dims = absl::StrJoin(shape, ", ");
  if (shape.size() == 1) dims += ",";
  return absl::StrCat("{'descr': '", descr,
                      "', 'fortran_order': ", fortran_order, ", 'shape': (",
                      dims, "), }");
}

template <typename T>
std::string Bytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()),
                     values.size() * sizeof(T));
}

template <typename T>
std::string Npy(absl::string_view descr, const Shape& shape,
                const std::vector<T>& values, int version = 1) {
  return NpyWithDict(NpyDict(descr, shape), Bytes(values), version);
}

std::string BigEndian32(uint32_t value) {
  std::string out;
  for (int shift = 24; shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>((value >> shift) & 0xff));
  }
  return out;
}

std::string Idx(uint32_t magic, const std::vector<uint32_t>& dims,
                const std::vector<uint8_t>& values) {
  std::string out = BigEndian32(magic);
  for (uint32_t dim : dims) out += BigEndian32(dim);
  return out + Bytes(values);
}

// Deflates `data` with zlib; `window_bits` picks the wrapper as
// deflateInit2 does (16 + MAX_WBITS: gzip; -MAX_WBITS: none).
std::string Deflate(absl::string_view data, int window_bits) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, window_bits, 8,
                         Z_DEFAULT_STRATEGY),
            Z_OK);
  // deflateBound assumes a zlib wrapper; a gzip one is 12 bytes longer.
  std::string out(deflateBound(&z, data.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// gzip-compresses `data` (deflate with a gzip wrapper).
std::string Gzip(absl::string_view data) {
  return Deflate(data, 16 + MAX_WBITS);
}

// A gzip stream of `head` and then `zeros` zero bytes, deflated a chunk at a
// time so that the zeros are never in memory (a bomb: ~1000:1).
std::string GzipWithZeros(absl::string_view head, int64_t zeros) {
  constexpr int64_t kChunk = int64_t{1} << 20;
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8,
                         Z_DEFAULT_STRATEGY),
            Z_OK);
  const std::string chunk(kChunk, '\0');
  std::string out;
  std::string buffer(kChunk, '\0');
  const auto feed = [&](absl::string_view data, int flush) {
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    z.avail_in = static_cast<uInt>(data.size());
    do {
      z.next_out = reinterpret_cast<Bytef*>(buffer.data());
      z.avail_out = static_cast<uInt>(buffer.size());
      deflate(&z, flush);
      out.append(buffer.data(), buffer.size() - z.avail_out);
    } while (z.avail_out == 0);
  };
  feed(head, Z_NO_FLUSH);
  for (int64_t left = zeros; left > 0; left -= kChunk) {
    feed(absl::string_view(chunk).substr(0, std::min(left, kChunk)),
         Z_NO_FLUSH);
  }
  feed("", Z_FINISH);
  deflateEnd(&z);
  return out;
}

void ExpectInvalid(const absl::Status& status, absl::string_view name,
                   absl::string_view problem) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(name)) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(problem)) << status;
}

// `file` decodes as inputs, and each of its strict prefixes is
// INVALID_ARGUMENT (never a crash).
void ExpectEveryPrefixInvalid(const std::string& file) {
  for (size_t n = 0; n < file.size(); ++n) {
    absl::StatusOr<Tensor> t = DecodeInputs(file.substr(0, n), kName);
    ASSERT_FALSE(t.ok()) << "prefix " << n;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument)
        << t.status();
  }
  EXPECT_TRUE(DecodeInputs(file, kName).ok());
}

// --- DecodeInputs: accepted formats --------------------------------------

TEST(DecodeInputsTest, Float32NpyEveryFormatVersion) {
  const std::vector<float> values = {1.5f, -2.0f, 0.0f, 3.25f, 4.0f, -5.5f};
  for (int version : {1, 2, 3}) {
    SCOPED_TRACE(absl::StrCat("version ", version));
    absl::StatusOr<Tensor> t =
        DecodeInputs(Npy("<f4", {2, 3}, values, version), kName);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_THAT(t->shape(), ElementsAre(2, 3));
    EXPECT_THAT(t->values(), ElementsAreArray(values));
  }
}

TEST(DecodeInputsTest, Float64IsConvertedToFloat32) {
  const std::vector<double> values = {0.125, -1e10, 3.0, 1.0 / 3.0};
  absl::StatusOr<Tensor> t = DecodeInputs(Npy("<f8", {4, 1}, values), kName);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->shape(), ElementsAre(4, 1));
  EXPECT_THAT(t->values(), ElementsAre(0.125f, -1e10f, 3.0f, 1.0f / 3.0f));
}

// Token ids and masks: integers carried as exact floats, up to 2^24.
TEST(DecodeInputsTest, Int64AndInt32AreExactFloats) {
  const int64_t max = int64_t{1} << 24;
  absl::StatusOr<Tensor> wide = DecodeInputs(
      Npy("<i8", {2, 2}, std::vector<int64_t>{0, 7, -max, max}), kName);
  ASSERT_TRUE(wide.ok()) << wide.status();
  EXPECT_THAT(wide->shape(), ElementsAre(2, 2));
  EXPECT_THAT(wide->values(),
              ElementsAre(0.0f, 7.0f, -16777216.0f, 16777216.0f));
  absl::StatusOr<Tensor> narrow =
      DecodeInputs(Npy("<i4", {1, 3}, std::vector<int32_t>{3, -1, 999}), kName);
  ASSERT_TRUE(narrow.ok()) << narrow.status();
  EXPECT_THAT(narrow->values(), ElementsAre(3.0f, -1.0f, 999.0f));
}

TEST(DecodeInputsTest, Uint8NpyIsScaledToUnitInterval) {
  const std::vector<uint8_t> values = {0, 51, 255, 128};
  absl::StatusOr<Tensor> t = DecodeInputs(Npy("|u1", {1, 2, 2}, values), kName);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->shape(), ElementsAre(1, 2, 2));
  EXPECT_THAT(t->values(), ElementsAre(0.0f, 0.2f, 1.0f, 128.0f / 255.0f));
}

TEST(DecodeInputsTest, DoubleQuotedKeysAndNoTrailingComma) {
  const std::vector<float> values = {1, 2};
  absl::StatusOr<Tensor> t = DecodeInputs(
      NpyWithDict(R"({"shape": (2,), "fortran_order": False, "descr": "<f4"})",
                  Bytes(values)),
      kName);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->shape(), ElementsAre(2));
}

TEST(DecodeInputsTest, IdxImagesRawAndGzipped) {
  const std::vector<uint8_t> pixels = {0, 255, 51, 102, 153, 204,
                                       1, 2,   3,  4,   5,   6};
  const std::string idx = Idx(0x00000803, {2, 2, 3}, pixels);
  for (const std::string& bytes : {idx, Gzip(idx)}) {
    absl::StatusOr<Tensor> t = DecodeInputs(bytes, kName);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_THAT(t->shape(), ElementsAre(2, 2, 3));
    std::vector<float> expected;
    for (uint8_t p : pixels) expected.push_back(p / 255.0f);
    EXPECT_THAT(t->values(), Pointwise(FloatEq(), expected));
  }
}

TEST(DecodeInputsTest, GzippedNpy) {
  const std::vector<float> values = {1, 2, 3, 4};
  absl::StatusOr<Tensor> t =
      DecodeInputs(Gzip(Npy("<f4", {2, 2}, values)), kName);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->shape(), ElementsAre(2, 2));
  EXPECT_THAT(t->values(), ElementsAreArray(values));
}

// --- DecodeInputs: every malformed input is INVALID_ARGUMENT naming it ---

struct BadInputCase {
  std::string label;
  std::string bytes;
  std::string problem;  // expected in the message
};

std::vector<BadInputCase> BadInputCases() {
  const std::vector<float> f4 = {1, 2, 3, 4};
  const std::string good_npy = Npy("<f4", {2, 2}, f4);
  std::string version4 = good_npy;
  version4[6] = 4;
  std::string version0 = good_npy;
  version0[6] = 0;
  std::string long_header = good_npy.substr(0, 40);  // header cut short
  const std::string idx = Idx(0x00000803, {1, 2, 2}, {1, 2, 3, 4});
  const std::string gz = Gzip(good_npy);
  std::string corrupt_gz = gz;
  for (size_t i = 10; i < corrupt_gz.size() - 8; ++i) corrupt_gz[i] = '\xff';
  return {
      {"empty", "", "unrecognized format"},
      {"text", "hello, world", "unrecognized format"},
      {"npy preamble truncated", std::string("\x93NUMPY\x01", 7),
       "truncated NPY preamble"},
      {"npy v2 preamble truncated",
       std::string("\x93NUMPY\x02\x00\x10\x00", 10), "truncated NPY preamble"},
      {"npy version 4", version4, "unsupported NPY format version 4"},
      {"npy version 0", version0, "unsupported NPY format version 0"},
      {"npy header truncated", long_header, "truncated NPY header"},
      {"npy header not a dict", NpyWithDict("[1, 2]", ""),
       "malformed NPY header"},
      {"npy header unterminated string", NpyWithDict("{'descr", ""),
       "unterminated string"},
      {"npy header unknown key",
       NpyWithDict("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), "
                   "'extra': 1}",
                   Bytes(std::vector<float>{1})),
       "unexpected or repeated key 'extra'"},
      {"npy header repeated key",
       NpyWithDict("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, "
                   "'shape': (1,)}",
                   Bytes(std::vector<float>{1})),
       "repeated key 'descr'"},
      {"npy header missing shape",
       NpyWithDict("{'descr': '<f4', 'fortran_order': False}", ""), "lacks"},
      {"npy header bad bool",
       NpyWithDict("{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", ""),
       "expected True or False"},
      {"npy header negative dim", NpyWithDict(NpyDict("<f4", {-1}), ""),
       "non-negative integer"},
      {"npy header text after dict",
       NpyWithDict(NpyDict("<f4", {1}) + " x", Bytes(std::vector<float>{1})),
       "unexpected text after the dict"},
      {"npy fortran order",
       NpyWithDict(NpyDict("<f4", {2, 2}, "True"), Bytes(f4)),
       "fortran_order True is not supported"},
      {"npy big-endian dtype", Npy(">f4", {2, 2}, f4),
       "unsupported NPY dtype '>f4': big-endian data is not read (save "
       "a.astype('<f4') instead)"},
      {"npy object dtype", NpyWithDict(NpyDict("|O", {2}), "\x80\x04junk"),
       "unsupported NPY dtype '|O': object arrays hold pickled Python "
       "objects, which are never loaded"},
      {"npy complex dtype", Npy("<c8", {2}, f4), "unsupported NPY dtype '<c8'"},
      {"npy structured dtype",
       NpyWithDict("{'descr': [('a', '<f4')], 'fortran_order': False, "
                   "'shape': (1,)}",
                   ""),
       "expected a quoted string"},
      {"npy int64 inputs beyond 2^24",
       Npy("<i8", {3}, std::vector<int64_t>{1, (int64_t{1} << 24) + 1, 2}),
       "integer 16777217 at element 1 is not exactly representable"},
      {"npy int32 inputs below -2^24",
       Npy("<i4", {2}, std::vector<int32_t>{-(1 << 24) - 1, 0}),
       "integer -16777217 at element 0 is not exactly representable"},
      {"npy int16 inputs", Npy("<i2", {2}, std::vector<int16_t>{1, 2}),
       "unsupported dtype '<i2' for inputs"},
      {"npy data truncated", good_npy.substr(0, good_npy.size() - 1),
       "size mismatch"},
      {"npy data too long", good_npy + "x", "size mismatch"},
      {"npy dim overflows int64",
       NpyWithDict("{'descr': '<f4', 'fortran_order': False, "
                   "'shape': (99999999999999999999,)}",
                   ""),
       "dimension overflows int64"},
      {"npy shape product overflows",
       NpyWithDict(NpyDict("<f4", {1LL << 40, 1LL << 40}), ""), "overflows"},
      {"npy byte count overflows", NpyWithDict(NpyDict("<f8", {1LL << 61}), ""),
       "overflows"},
      {"npy NaN", Npy("<f4", {3}, std::vector<float>{1, std::nanf(""), 2}),
       "NaN at element 1"},
      {"npy infinity", Npy("<f4", {2}, std::vector<float>{1, -INFINITY}),
       "infinite"},
      {"npy float64 NaN",
       Npy("<f8", {2, 1}, std::vector<double>{0.5, std::nan("")}),
       "NaN at element 1"},
      {"npy float64 beyond float32",
       Npy("<f8", {2}, std::vector<double>{1e300, 1}), "beyond float32"},
      {"npy scalar", Npy("<f4", {}, std::vector<float>{1}), "scalar"},
      {"npy no samples", Npy("<f4", {0, 3}, std::vector<float>{}),
       "no samples"},
      {"idx wrong magic", Idx(0x00000804, {1, 1, 1, 1}, {1}),
       "wrong IDX magic 0x00000804"},
      {"idx labels given as inputs", Idx(0x00000801, {2}, {1, 2}),
       "wrong IDX magic 0x00000801 (IDX labels), expected 0x00000803"},
      {"idx magic truncated", std::string("\0\0\x08", 3),
       "truncated IDX magic"},
      {"idx header truncated", idx.substr(0, 10), "truncated IDX header"},
      {"idx data truncated", idx.substr(0, idx.size() - 1), "size mismatch"},
      {"idx shape overflows",
       Idx(0x00000803, {0xffffffff, 0xffffffff, 0xffffffff}, {}), "overflows"},
      {"gzip truncated", gz.substr(0, gz.size() / 2), "gzip: truncated"},
      {"gzip trailer missing", gz.substr(0, gz.size() - 4), "gzip: truncated"},
      {"gzip header only", gz.substr(0, 2), "gzip"},
      {"gzip corrupt", corrupt_gz, "gzip: corrupt"},
      {"gzip trailing garbage", gz + "junk", "trailing bytes"},
      {"gzip nested", Gzip(gz), "nested gzip"},
      {"gzip of garbage", Gzip("not a data set"), "unrecognized format"},
  };
}

// DecodeInputs of each case's bytes, read as file `name`, is
// INVALID_ARGUMENT naming the file and the case's problem.
void ExpectInvalidInputs(const std::vector<BadInputCase>& cases,
                         absl::string_view name) {
  for (const BadInputCase& c : cases) {
    SCOPED_TRACE(c.label);
    absl::StatusOr<Tensor> t = DecodeInputs(c.bytes, name);
    ASSERT_FALSE(t.ok());
    ExpectInvalid(t.status(), name, c.problem);
  }
}

TEST(DecodeInputsTest, MalformedInputsAreInvalidArgument) {
  ExpectInvalidInputs(BadInputCases(), kName);
}

// Every strict prefix of a valid file is an error, never a crash.
TEST(DecodeInputsTest, EveryTruncationIsAnError) {
  const std::vector<float> f4 = {1, 2, 3, 4};
  const std::string npy = Npy("<f4", {2, 2}, f4);
  const std::string idx = Idx(0x00000803, {1, 2, 2}, {1, 2, 3, 4});
  for (const std::string& file : {npy, idx, Gzip(npy), Gzip(idx)}) {
    ExpectEveryPrefixInvalid(file);
  }
}

// --- DecodeLabels ---------------------------------------------------------

TEST(DecodeLabelsTest, EveryIntegerDtype) {
  const std::vector<int64_t> expected = {0, 3, 9, 7};
  struct Case {
    std::string descr;
    std::string bytes;
  };
  const std::vector<Case> cases = {
      {"<i8", Npy("<i8", {4}, std::vector<int64_t>{0, 3, 9, 7})},
      {"<i4", Npy("<i4", {4}, std::vector<int32_t>{0, 3, 9, 7})},
      {"<i2", Npy("<i2", {4}, std::vector<int16_t>{0, 3, 9, 7})},
      {"<u2", Npy("<u2", {4}, std::vector<uint16_t>{0, 3, 9, 7})},
      {"|i1", Npy("|i1", {4}, std::vector<int8_t>{0, 3, 9, 7})},
      {"|u1", Npy("|u1", {4}, std::vector<uint8_t>{0, 3, 9, 7})},
      {"<i8 [N,1]", Npy("<i8", {4, 1}, std::vector<int64_t>{0, 3, 9, 7})},
      {"<i8 v3", Npy("<i8", {4}, std::vector<int64_t>{0, 3, 9, 7}, 3)},
      {"idx", Idx(0x00000801, {4}, {0, 3, 9, 7})},
      {"idx gzip", Gzip(Idx(0x00000801, {4}, {0, 3, 9, 7}))},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.descr);
    absl::StatusOr<std::vector<int64_t>> labels = DecodeLabels(c.bytes, kName);
    ASSERT_TRUE(labels.ok()) << labels.status();
    EXPECT_EQ(*labels, expected);
  }
}

TEST(DecodeLabelsTest, LargeUnsignedValuesAreNotNegative) {
  absl::StatusOr<std::vector<int64_t>> labels =
      DecodeLabels(Npy("<u2", {1}, std::vector<uint16_t>{65535}), kName);
  ASSERT_TRUE(labels.ok()) << labels.status();
  EXPECT_THAT(*labels, ElementsAre(65535));
}

TEST(DecodeLabelsTest, MalformedLabelsAreInvalidArgument) {
  const std::vector<BadInputCase> cases = {
      {"negative int64", Npy("<i8", {3}, std::vector<int64_t>{1, -1, 2}),
       "negative label -1 at index 1"},
      {"negative int8", Npy("|i1", {2}, std::vector<int8_t>{0, -128}),
       "negative label -128 at index 1"},
      {"big-endian labels", Npy(">i8", {1}, std::vector<int64_t>{1}),
       "unsupported NPY dtype '>i8': big-endian"},
      {"float labels", Npy("<f4", {2}, std::vector<float>{0, 1}),
       "unsupported dtype '<f4' for labels"},
      {"matrix", Npy("<i8", {2, 2}, std::vector<int64_t>{0, 1, 2, 3}),
       "labels must have shape [N] or [N, 1], got [2, 2]"},
      {"scalar", Npy("<i8", {}, std::vector<int64_t>{1}), "labels must have"},
      {"empty", Npy("<i8", {0}, std::vector<int64_t>{}), "no labels"},
      {"idx images", Idx(0x00000803, {1, 1, 1}, {1}),
       "wrong IDX magic 0x00000803 (IDX images), expected 0x00000801"},
      {"idx truncated", Idx(0x00000801, {3}, {1, 2}), "size mismatch"},
      {"gzip truncated", Gzip(Idx(0x00000801, {3}, {1, 2, 3})).substr(0, 12),
       "gzip: truncated"},
  };
  for (const BadInputCase& c : cases) {
    SCOPED_TRACE(c.label);
    absl::StatusOr<std::vector<int64_t>> labels = DecodeLabels(c.bytes, kName);
    ASSERT_FALSE(labels.ok());
    ExpectInvalid(labels.status(), kName, c.problem);
  }
}

// --- .npz -----------------------------------------------------------------

std::string Le16(uint16_t value) {
  return {static_cast<char>(value & 0xff), static_cast<char>(value >> 8)};
}

std::string Le32(uint32_t value) {
  return Le16(value & 0xffff) + Le16(value >> 16);
}

// Raw deflate (no zlib or gzip wrapper), as zip's method 8 stores it.
std::string RawDeflate(absl::string_view data) {
  return Deflate(data, -MAX_WBITS);
}

constexpr uint16_t kStored = 0;
constexpr uint16_t kDeflated = 8;
constexpr uint16_t kBzip2 = 12;
constexpr uint16_t kEncryptedFlag = 1;
constexpr uint16_t kUtf8Flag = 1 << 11;  // the name is UTF-8, not CP437

// One member of a hand-built zip archive; the optional fields make it lie.
struct ZipEntry {
  std::string name;
  std::string data;           // uncompressed
  uint16_t method = kStored;  // kDeflated deflates `data`; others store it
  uint16_t flags = 0;
  std::optional<uint32_t> size = std::nullopt;  // declared uncompressed size
  std::optional<uint32_t> local_size =
      std::nullopt;  // in the local header only
  std::optional<uint32_t> crc = std::nullopt;
  std::optional<std::string> payload =
      std::nullopt;  // replaces the (compressed) data
};

// A zip archive as the format describes it (local headers, central
// directory, end record; no zip64), so tests can also write what no zip
// library would.
std::string Zip(const std::vector<ZipEntry>& entries) {
  std::string out;
  std::string central;
  for (const ZipEntry& e : entries) {
    const std::string payload =
        e.payload.value_or(e.method == kDeflated ? RawDeflate(e.data) : e.data);
    const uint32_t crc =
        e.crc.value_or(crc32(0, reinterpret_cast<const Bytef*>(e.data.data()),
                             static_cast<uInt>(e.data.size())));
    const uint32_t size = e.size.value_or(e.data.size());
    // Shared by both headers: version needed, flags, method, time, date
    // (1980-01-01), CRC, sizes, name and extra lengths.
    const auto fields = [&](uint32_t uncompressed) {
      return absl::StrCat(Le16(20), Le16(e.flags), Le16(e.method), Le16(0),
                          Le16(0x21), Le32(crc), Le32(payload.size()),
                          Le32(uncompressed), Le16(e.name.size()), Le16(0));
    };
    const uint32_t offset = out.size();
    absl::StrAppend(&out, Le32(0x04034b50), fields(e.local_size.value_or(size)),
                    e.name, payload);
    // Version made by, the fields, comment length, disk, internal and
    // external attributes, local header offset, name.
    absl::StrAppend(&central, Le32(0x02014b50), Le16(20), fields(size), Le16(0),
                    Le16(0), Le16(0), Le32(0), Le32(offset), e.name);
  }
  const uint16_t count = entries.size();
  absl::StrAppend(&out, central, Le32(0x06054b50), Le16(0), Le16(0),
                  Le16(count), Le16(count), Le32(central.size()),
                  Le32(out.size()), Le16(0));
  return out;
}

constexpr char kNpzName[] = "data/train.npz";

const std::vector<float>& SampleInputs() {
  static const auto* values = new std::vector<float>{0.5f, 1, 2, 3, 4, 5};
  return *values;
}

std::string InputsNpy() { return Npy("<f4", {3, 2}, SampleInputs()); }
std::string LabelsNpy() {
  return Npy("<i8", {3}, std::vector<int64_t>{2, 0, 1});
}

TEST(NpzTest, StoredAndDeflatedArchivesDecode) {
  for (uint16_t method : {kStored, kDeflated}) {
    SCOPED_TRACE(absl::StrCat("method ", method));
    const std::string npz =
        Zip({{"x.npy", InputsNpy(), method}, {"y.npy", LabelsNpy(), method}});
    absl::StatusOr<std::vector<std::string>> keys = NpzKeys(npz, kNpzName);
    ASSERT_TRUE(keys.ok()) << keys.status();
    EXPECT_THAT(*keys, ElementsAre("x", "y"));

    absl::StatusOr<std::string> member =
        ReadNpzArray(npz, kNpzName, "y", 1 << 20);
    ASSERT_TRUE(member.ok()) << member.status();
    EXPECT_EQ(*member, LabelsNpy());

    absl::StatusOr<Tensor> inputs = DecodeInputs(npz, kNpzName);
    ASSERT_TRUE(inputs.ok()) << inputs.status();
    EXPECT_THAT(inputs->shape(), ElementsAre(3, 2));
    EXPECT_THAT(inputs->values(), ElementsAreArray(SampleInputs()));
    absl::StatusOr<std::vector<int64_t>> labels = DecodeLabels(npz, kNpzName);
    ASSERT_TRUE(labels.ok()) << labels.status();
    EXPECT_THAT(*labels, ElementsAre(2, 0, 1));
  }
}

// Which array DecodeInputs / DecodeLabels pick, with and without a key.
TEST(NpzTest, ArraySelection) {
  struct Case {
    std::string label;
    std::vector<std::string> keys;  // archive members, in order
    std::string key;                // passed to the decoder
    std::string inputs_from;        // expected member, or "" for an error
    std::string labels_from;
  };
  const std::vector<Case> cases = {
      {"x and y", {"x", "y"}, "", "x", "y"},
      {"y first", {"y", "x"}, "", "x", "y"},
      {"long names", {"labels", "inputs"}, "", "inputs", "labels"},
      {"images and targets", {"targets", "images"}, "", "images", "targets"},
      {"data and y", {"data", "y", "meta"}, "", "data", "y"},
      {"only array", {"whatever"}, "", "whatever", "whatever"},
      {"unknown names", {"a", "b"}, "", "", ""},
      {"two candidates", {"x", "data", "y", "labels"}, "", "", ""},
      {"explicit key", {"a", "b"}, "b", "b", "b"},
      {"explicit key wins", {"x", "y", "x_test"}, "x_test", "x_test", "x_test"},
      {"missing key", {"x", "y"}, "z", "", ""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.label);
    // Member i holds float inputs [i + 1, 1] and int labels [i + 1], so the
    // decoded sizes tell which member was read.
    std::vector<ZipEntry> inputs_zip, labels_zip;
    for (size_t i = 0; i < c.keys.size(); ++i) {
      const std::string npy = c.keys[i] + ".npy";
      inputs_zip.push_back(
          {npy, Npy("<f4", {int64_t(i) + 1, 1}, std::vector<float>(i + 1))});
      labels_zip.push_back(
          {npy, Npy("<i8", {int64_t(i) + 1}, std::vector<int64_t>(i + 1))});
    }
    const auto index_of = [&](const std::string& key) {
      return std::find(c.keys.begin(), c.keys.end(), key) - c.keys.begin();
    };
    absl::StatusOr<Tensor> inputs =
        DecodeInputs(Zip(inputs_zip), kNpzName, c.key);
    absl::StatusOr<std::vector<int64_t>> labels =
        DecodeLabels(Zip(labels_zip), kNpzName, c.key);
    if (c.inputs_from.empty()) {
      ASSERT_FALSE(inputs.ok());
      ASSERT_FALSE(labels.ok());
      // The message lists the archive's keys so the user can pick one.
      for (const absl::Status& status : {inputs.status(), labels.status()}) {
        for (const std::string& key : c.keys) {
          ExpectInvalid(status, kNpzName, absl::StrCat("'", key, "'"));
        }
      }
      continue;
    }
    ASSERT_TRUE(inputs.ok()) << inputs.status();
    ASSERT_TRUE(labels.ok()) << labels.status();
    EXPECT_EQ(inputs->dim(0), index_of(c.inputs_from) + 1);
    EXPECT_EQ(static_cast<int64_t>(labels->size()),
              index_of(c.labels_from) + 1);
  }
}

TEST(NpzTest, KeyForAFileThatIsNotNpzIsAnError) {
  ExpectInvalid(DecodeInputs(InputsNpy(), kName, "x").status(), kName,
                "an array key ('x') was given but the file is not a .npz");
  ExpectInvalid(DecodeLabels(LabelsNpy(), kName, "y").status(), kName,
                "not a .npz");
}

// Every hostile or broken archive is INVALID_ARGUMENT naming the file and
// the problem, never a crash.
std::vector<BadInputCase> BadNpzCases() {
  const std::string good = Zip({{"x.npy", InputsNpy(), kDeflated}});
  std::string corrupt_deflate = RawDeflate(InputsNpy());
  for (size_t i = 0; i < corrupt_deflate.size(); i += 3) {
    corrupt_deflate[i] = '\xff';
  }
  const uint32_t actual = InputsNpy().size();
  // An empty archive's end record, edited to claim one member.
  std::string phantom = Zip({});
  phantom[8] = phantom[10] = 1;
  return {
      {"zip magic then junk", "PK\x03\x04 this is not a zip archive",
       "not a valid zip archive"},
      {"truncated archive", good.substr(0, good.size() - 10),
       "not a valid zip archive"},
      {"end record claims a missing member", phantom,
       "not a valid zip archive"},
      {"same name in two encodings",
       Zip({{.name = "\xc3\xa9.npy", .data = InputsNpy(), .flags = kUtf8Flag},
            {.name = "\x82.npy", .data = InputsNpy()}}),
       "two members of the archive have the same name"},
      {"no arrays", Zip({}), "the .npz archive holds no arrays"},
      {"member is not .npy", Zip({{"x.npy", InputsNpy()}, {"notes.txt", "hi"}}),
       "member 'notes.txt' is not a .npy file"},
      {"directory member", Zip({{"x.npy", InputsNpy()}, {"arrays/", ""}}),
       "member 'arrays/' is a directory"},
      {"duplicate names",
       Zip({{"x.npy", InputsNpy()}, {"x.npy", InputsNpy(), kDeflated}}),
       "two members of the archive have the same name"},
      {"encrypted member",
       Zip({{.name = "x.npy", .data = InputsNpy(), .flags = kEncryptedFlag}}),
       "member 'x.npy' is encrypted"},
      {"bzip2 member", Zip({{"x.npy", InputsNpy(), kBzip2}}),
       "member 'x.npy' uses compression method 12"},
      {"wrong crc",
       Zip({{.name = "x.npy",
             .data = InputsNpy(),
             .method = kDeflated,
             .crc = 0x12345678}}),
       "array 'x': corrupt data"},
      {"corrupt deflate stream",
       Zip({{.name = "x.npy",
             .data = InputsNpy(),
             .method = kDeflated,
             .payload = corrupt_deflate}}),
       "array 'x'"},
      {"inflates beyond its declared size",
       Zip({{.name = "x.npy",
             .data = InputsNpy(),
             .method = kDeflated,
             .size = actual - 8}}),
       "array 'x': inflates to more than its declared"},
      {"stored beyond its declared size",
       Zip({{.name = "x.npy", .data = InputsNpy(), .size = actual - 8}}),
       "array 'x'"},
      {"inflates short of its declared size",
       Zip({{.name = "x.npy",
             .data = InputsNpy(),
             .method = kDeflated,
             .size = actual + 100}}),
       "array 'x'"},
      {"local and central headers disagree",
       Zip({{.name = "x.npy",
             .data = InputsNpy(),
             .method = kDeflated,
             .local_size = actual + 1}}),
       "not a valid zip archive"},
      {"member is gzip, not npy",
       Zip({{"x.npy", Gzip(InputsNpy()), kDeflated}}),
       "array 'x': not a .npy file"},
      {"member is an npz", Zip({{"x.npy", good}}), "array 'x': not a .npy"},
      {"member has NaN",
       Zip({{"x.npy", Npy("<f4", {2}, std::vector<float>{1, std::nanf("")}),
             kDeflated}}),
       "data/train.npz: array 'x': NaN at element 1"},
      {"member is big-endian",
       Zip({{"x.npy", Npy(">f4", {2}, std::vector<float>{1, 2})}}),
       "data/train.npz: array 'x': unsupported NPY dtype '>f4'"},
      {"member truncated npy",
       Zip({{"x.npy", InputsNpy().substr(0, actual - 1), kDeflated}}),
       "array 'x': size mismatch"},
      {"member is fortran order",
       Zip({{"x.npy", NpyWithDict(NpyDict("<f4", {3, 2}, "True"),
                                  Bytes(SampleInputs()))}}),
       "array 'x': fortran_order True is not supported"},
  };
}

TEST(NpzTest, MalformedArchivesAreInvalidArgument) {
  ExpectInvalidInputs(BadNpzCases(), kNpzName);
}

// Every strict prefix of a valid archive is an error, never a crash.
TEST(NpzTest, EveryTruncationIsAnError) {
  for (uint16_t method : {kStored, kDeflated}) {
    const std::string npz =
        Zip({{"x.npy", InputsNpy(), method}, {"y.npy", LabelsNpy(), method}});
    ExpectEveryPrefixInvalid(npz);
  }
}

// A zip bomb: a small archive that declares (or really holds) far more data
// than the limit is refused before anything that large is allocated.
TEST(NpzTest, DataBeyondTheLimitIsResourceExhausted) {
  const std::string zeros(size_t{16} << 20, '\0');
  const std::string bomb = Zip({{"x.npy", zeros, kDeflated}});
  ASSERT_LT(bomb.size(), zeros.size() / 500);
  absl::StatusOr<std::string> member =
      ReadNpzArray(bomb, kNpzName, "x", zeros.size() - 1);
  EXPECT_EQ(member.status().code(), absl::StatusCode::kResourceExhausted)
      << member.status();
  EXPECT_THAT(std::string(member.status().message()),
              HasSubstr("data/train.npz: array 'x' is 16777216 bytes "
                        "uncompressed, more than the limit of 16777215"));
  member = ReadNpzArray(bomb, kNpzName, "x", zeros.size());
  ASSERT_TRUE(member.ok()) << member.status();
  EXPECT_EQ(member->size(), zeros.size());

  // Declaring 3.75 GiB is enough for the decoders (whose limit is 2 GiB) to
  // refuse the archive without inflating it.
  const std::string liar = Zip({{.name = "x.npy",
                                 .data = InputsNpy(),
                                 .method = kDeflated,
                                 .size = 0xf0000000u}});
  absl::StatusOr<Tensor> inputs = DecodeInputs(liar, kNpzName);
  EXPECT_EQ(inputs.status().code(), absl::StatusCode::kResourceExhausted)
      << inputs.status();
  EXPECT_THAT(std::string(inputs.status().message()),
              HasSubstr("data/train.npz: array 'x' is 4026531840 bytes"));
}

// A zip bomb of another kind: a few hundred bytes declaring a member just
// under the limit. The member is read as it inflates, so the lie costs what
// the data holds, not the declared 2 GB (which were once allocated and zeroed
// before the read found the data short).
TEST(NpzTest, ALyingDeclaredSizeCostsNoMemory) {
  constexpr uint32_t kDeclared = 0x3ff00000u;  // 1023 MiB, under the limit
  const std::string liar = Zip({{.name = "x.npy",
                                 .data = InputsNpy(),
                                 .method = kDeflated,
                                 .size = kDeclared}});
  const int64_t before = mixq::testing::PeakRssBytes();
  const absl::StatusOr<Tensor> inputs = DecodeInputs(liar, kNpzName);
  const int64_t grown = mixq::testing::PeakRssBytes() - before;
  ExpectInvalid(inputs.status(), kNpzName, "array 'x': truncated data");
  EXPECT_LT(grown, mixq::testing::kBombRssBudgetBytes)
      << "peak RSS grew by " << (grown >> 20) << " MiB";
}

TEST(NpzTest, ReadNpzArrayNamesMissingKeys) {
  const std::string npz = Zip({{"x.npy", InputsNpy()}, {"y.npy", LabelsNpy()}});
  ExpectInvalid(ReadNpzArray(npz, kNpzName, "z", 1 << 20).status(), kNpzName,
                "no array 'z' in the .npz archive (it has 'x', 'y')");
  ExpectInvalid(ReadNpzArray(npz, kNpzName, "x.npy", 1 << 20).status(),
                kNpzName, "no array 'x.npy'");
}

TEST(NpzTest, LooksLikeZip) {
  EXPECT_TRUE(LooksLikeZip(Zip({{"x.npy", InputsNpy()}})));
  EXPECT_TRUE(LooksLikeZip(Zip({})));
  EXPECT_FALSE(LooksLikeZip(InputsNpy()));
  EXPECT_FALSE(LooksLikeZip("PK"));
  EXPECT_FALSE(LooksLikeZip(""));
}

// tests/fixtures/tiny_dataset.npz was written by NumPy's
// np.savez_compressed (its zip64 local headers included); see the fixtures'
// README.
TEST(NpzTest, NumpyWrittenArchive) {
  const std::string path = FixturePath("tiny_dataset.npz");
  absl::StatusOr<std::string> bytes = ReadFile(path);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  absl::StatusOr<std::vector<std::string>> keys = NpzKeys(*bytes, path);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_THAT(*keys, ElementsAre("x", "y"));

  absl::StatusOr<Tensor> inputs = DecodeInputs(*bytes, path);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  EXPECT_THAT(inputs->shape(), ElementsAre(3, 1, 2, 2));
  std::vector<float> expected(12);
  for (int i = 0; i < 12; ++i) expected[i] = i / 8.0f;
  EXPECT_THAT(inputs->values(), ElementsAreArray(expected));

  absl::StatusOr<std::vector<int64_t>> labels = DecodeLabels(*bytes, path);
  ASSERT_TRUE(labels.ok()) << labels.status();
  EXPECT_THAT(*labels, ElementsAre(2, 0, 1));
  EXPECT_TRUE(CheckLabels(*labels, 3, path).ok());
}

// --- CheckLabels ----------------------------------------------------------

TEST(CheckLabelsTest, LabelsMustBeClassesOfTheModel) {
  struct Case {
    std::vector<int64_t> labels;
    int64_t num_classes;
    std::string problem;  // "" when valid
  };
  const std::vector<Case> cases = {
      {{0, 9, 3}, 10, ""},
      {{}, 10, ""},
      {{0}, 1, ""},
      {{1, 2, 3, 12, 10},
       10,
       "labels.npy: label 12 at index 3 is outside the model's 10 classes "
       "[0, 10)"},
      {{0, 10}, 10, "label 10 at index 1 is outside"},
      {{-1}, 10, "label -1 at index 0 is outside the model's 10 classes"},
      {{0}, 0, "cannot check labels against 0 classes"},
      {{0}, -1, "cannot check labels against -1 classes"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat("[", absl::StrJoin(c.labels, ","), "] of ",
                              c.num_classes));
    const absl::Status status =
        CheckLabels(c.labels, c.num_classes, "labels.npy");
    if (c.problem.empty()) {
      EXPECT_TRUE(status.ok()) << status;
    } else {
      ExpectInvalid(status, "labels.npy", c.problem);
    }
  }
}

// --- Gunzip ---------------------------------------------------------------

TEST(GunzipTest, RoundTripAndConcatenatedMembers) {
  std::string data;
  for (int i = 0; i < 100000; ++i) data.push_back(static_cast<char>(i * 7));
  absl::StatusOr<std::string> out = Gunzip(Gzip(data), data.size());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, data);

  out = Gunzip(Gzip("abc") + Gzip("def"), 1000);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "abcdef");

  out = Gunzip(Gzip(""), 0);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "");
}

TEST(GunzipTest, OutputBeyondTheLimitIsResourceExhausted) {
  const std::string zeros(1 << 20, '\0');
  const std::string gz = Gzip(zeros);
  EXPECT_TRUE(Gunzip(gz, zeros.size()).ok());
  absl::StatusOr<std::string> out = Gunzip(gz, zeros.size() - 1);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted)
      << out.status();
  EXPECT_THAT(std::string(out.status().message()),
              HasSubstr("exceeds the limit"));
}

TEST(GunzipTest, CorruptOrTruncatedIsInvalidArgument) {
  const std::string gz = Gzip("some bytes to compress");
  for (const std::string& bad :
       {std::string(), gz.substr(0, gz.size() - 1), std::string("\x1f\x8bxx"),
        std::string("plain text")}) {
    absl::StatusOr<std::string> out = Gunzip(bad, 1000);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument)
        << out.status();
  }
}

// A gzip stream is inflated as far as its header declares, and only once that
// is within the limits: ~256 KB of upload cannot cost 256 MB.
TEST(GunzipTest, InflatesNoFurtherThanTheHeaderDeclares) {
  constexpr int64_t kZeros = int64_t{256} << 20;
  const std::string bomb =
      GzipWithZeros(Idx(0x00000803, {1, 28, 28}, {}), kZeros);
  ASSERT_LT(bomb.size(), size_t{1} << 20);
  const int64_t before = mixq::testing::PeakRssBytes();
  const absl::StatusOr<Tensor> inputs = DecodeInputs(bomb, kName);
  const int64_t grown = mixq::testing::PeakRssBytes() - before;
  ExpectInvalid(inputs.status(), kName,
                "gzip: the stream holds more than the 800 bytes its header "
                "declares");
  EXPECT_LT(grown, mixq::testing::kBombRssBudgetBytes)
      << "peak RSS grew by " << (grown >> 20) << " MiB";
}

TEST(GunzipTest, ADeclaredArrayOverTheLimitsIsNotInflated) {
  // 2^20 images of 28 x 28: 822 M values, over 2^28.
  for (const std::string& file :
       {GzipWithZeros(Idx(0x00000803, {1 << 20, 28, 28}, {}), 1 << 20),
        Idx(0x00000803, {1 << 20, 28, 28}, {}),
        Gzip(Npy<double>("<f8", {1 << 28}, {}))}) {
    const absl::StatusOr<Tensor> inputs = DecodeInputs(file, kName);
    EXPECT_EQ(inputs.status().code(), absl::StatusCode::kResourceExhausted)
        << inputs.status();
    EXPECT_THAT(std::string(inputs.status().message()),
                HasSubstr("the limit is 268435456 values and 1073741824 bytes "
                          "per array"));
  }
}

TEST(GunzipTest, PrefixStopsEarly) {
  const std::string gz = Gzip("abcdef");
  absl::StatusOr<std::string> out = GunzipPrefix(gz, 3);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "abc");
  out = GunzipPrefix(gz, 100);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "abcdef");
  EXPECT_EQ(GunzipPrefix("\x1f\x8bxx", 3).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// --- Normalize and ConformToModelInput -----------------------------------

TEST(NormalizeTest, SubtractsMeanAndDividesByStddev) {
  Tensor t({2, 2}, {0.0f, 0.5f, 1.0f, 0.2860f});
  ASSERT_TRUE(Normalize(0.2860f, 0.3530f, &t).ok());
  EXPECT_THAT(t.values(),
              Pointwise(FloatEq(),
                        {(0.0f - 0.2860f) / 0.3530f, (0.5f - 0.2860f) / 0.3530f,
                         (1.0f - 0.2860f) / 0.3530f, 0.0f}));
  EXPECT_THAT(t.shape(), ElementsAre(2, 2));
}

TEST(NormalizeTest, RejectsBadParameters) {
  Tensor t({1}, {1.0f});
  for (float stddev : {0.0f, -1.0f, std::numeric_limits<float>::quiet_NaN(),
                       std::numeric_limits<float>::infinity()}) {
    absl::Status s = Normalize(0.0f, stddev, &t);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << stddev;
    EXPECT_THAT(std::string(s.message()), HasSubstr("stddev"));
  }
  EXPECT_EQ(Normalize(std::nanf(""), 1.0f, &t).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.values(), ElementsAre(1.0f));
}

TEST(ConformToModelInputTest, ReshapesWhenSampleSizesMatch) {
  struct Case {
    Shape inputs;
    Shape model;
    Shape expected;
  };
  const std::vector<Case> cases = {
      {{3, 28, 28}, {-1, 1, 28, 28}, {3, 1, 28, 28}},
      {{3, 28, 28}, {-1, 784}, {3, 784}},
      {{3, 1, 28, 28}, {1, 784}, {3, 784}},
      {{3, 784}, {-1, 28, 28}, {3, 28, 28}},
      {{3, 4}, {-1, 4}, {3, 4}},
  };
  for (const Case& c : cases) {
    Tensor t(c.inputs);
    t.flat().setLinSpaced(0.0f, 1.0f);
    const std::vector<float> before = t.ToVector();
    ASSERT_TRUE(ConformToModelInput(c.model, &t).ok());
    EXPECT_EQ(t.shape(), c.expected);
    EXPECT_EQ(t.ToVector(), before);
  }
}

TEST(ConformToModelInputTest, MismatchNamesBothShapes) {
  Tensor t({3, 28, 28});
  absl::Status s = ConformToModelInput({-1, 1, 28, 27}, &t);
  ExpectInvalid(s, "[3, 28, 28]", "[-1, 1, 28, 27]");
  EXPECT_THAT(std::string(s.message()), HasSubstr("784 values per sample"));
  EXPECT_THAT(t.shape(), ElementsAre(3, 28, 28));

  ExpectInvalid(ConformToModelInput({-1, -1}, &t), "[3, 28, 28]", "symbolic");
  ExpectInvalid(ConformToModelInput({}, &t), "[3, 28, 28]", "batch");
}

// --- The real Fashion-MNIST test split ------------------------------------

TEST(FashionMnistTest, TestSplitDecodes) {
  if (!FashionMnistInstalled()) {
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  }
  absl::StatusOr<FashionMnistTestSplit> split = ReadFashionMnistTestSplit();
  ASSERT_TRUE(split.ok()) << split.status();

  Tensor& images = split->images;
  EXPECT_THAT(images.shape(), ElementsAre(10000, 28, 28));
  EXPECT_GE(images.flat().minCoeff(), 0.0f);
  EXPECT_LE(images.flat().maxCoeff(), 1.0f);
  // The training-set mean is 0.2860; the test split's is close to it.
  EXPECT_NEAR(images.flat().mean(), 0.2860f, 0.01f);

  const std::vector<int64_t>& labels = split->labels;
  ASSERT_EQ(labels.size(), 10000u);
  std::vector<int> per_class(10, 0);
  for (int64_t label : labels) {
    ASSERT_GE(label, 0);
    ASSERT_LE(label, 9);
    ++per_class[label];
  }
  EXPECT_THAT(per_class, ::testing::Each(1000));

  ASSERT_TRUE(ConformToModelInput({-1, 1, 28, 28}, &images).ok());
  EXPECT_THAT(images.shape(), ElementsAre(10000, 1, 28, 28));
}

}  // namespace
}  // namespace mixq::engine
