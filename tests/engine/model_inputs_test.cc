// Data files for models with integer and several inputs: the .npz writer
// (engine/npz_writer.h) and DecodeModelInputs / NormalizeModelInputs
// (engine/model_inputs.h).
#include "engine/model_inputs.h"

#include <string>
#include <vector>

#include "engine/npy.h"
#include "engine/npz.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "util/npz_writer.h"

namespace mixq::engine {
namespace {

using ::mixq::EncodeNpz;
using ::mixq::NpzMember;

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kName[] = "data.npz";

GraphInput Input(std::string name, GraphInput::Type type, Shape shape) {
  GraphInput input;
  input.name = std::move(name);
  input.type = type;
  input.sample_size = 1;
  for (size_t d = 1; d < shape.size(); ++d) input.sample_size *= shape[d];
  input.shape = std::move(shape);
  return input;
}

// ids [N, 3] and mask [N, 3], int64.
const std::vector<GraphInput> kTwoInputs = {
    Input("input_ids", GraphInput::Type::kInt64, {-1, 3}),
    Input("attention_mask", GraphInput::Type::kInt64, {-1, 3})};

std::string Npz(const std::vector<NpzMember>& members) {
  absl::StatusOr<std::string> npz = EncodeNpz(members);
  EXPECT_TRUE(npz.ok()) << npz.status();
  return npz.ok() ? *npz : "";
}

TEST(EncodeNpzTest, RoundTripsThroughTheReader) {
  const std::string ids = EncodeNpyInt64({1, 2, 3, 4, 5, 6}, {2, 3});
  const std::string mask = EncodeNpyInt64({1, 1, 0, 1, 0, 0}, {2, 3});
  const std::string npz = Npz({{"input_ids", ids}, {"attention_mask", mask}});
  absl::StatusOr<std::vector<std::string>> keys = NpzKeys(npz, kName);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_THAT(*keys, ElementsAre("input_ids", "attention_mask"));
  absl::StatusOr<std::string> read =
      ReadNpzArray(npz, kName, "attention_mask", 1 << 20);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, mask);
  absl::StatusOr<std::vector<std::string>> empty = NpzKeys(Npz({}), kName);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->empty());
}

TEST(EncodeNpzTest, RefusesBadKeys) {
  for (const std::vector<NpzMember>& members :
       std::vector<std::vector<NpzMember>>{
           {{"", "x"}}, {{"a/b", "x"}}, {{"a", "x"}, {"a", "y"}}}) {
    EXPECT_EQ(EncodeNpz(members).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST(DecodeModelInputsTest, PacksSeveralInputsByName) {
  // Keys in another order than the graph's: the graph's order wins.
  const std::string npz =
      Npz({{"attention_mask", EncodeNpyInt64({1, 1, 0, 1, 0, 0}, {2, 3})},
           {"input_ids", EncodeNpyInt64({7, 8, 9, 4, 5, 6}, {2, 3})}});
  absl::StatusOr<Tensor> packed = DecodeModelInputs(kTwoInputs, npz, kName);
  ASSERT_TRUE(packed.ok()) << packed.status();
  EXPECT_THAT(packed->shape(), ElementsAre(2, 6));
  EXPECT_THAT(packed->values(),
              ElementsAre(7, 8, 9, 1, 1, 0, 4, 5, 6, 1, 0, 0));
}

TEST(DecodeModelInputsTest, OneInputReadsItsKeyOrAnyFile) {
  const std::vector<GraphInput> one = {
      Input("input_ids", GraphInput::Type::kInt64, {-1, 3})};
  const std::string ids = EncodeNpyInt64({1, 2, 3}, {1, 3});
  absl::StatusOr<Tensor> plain = DecodeModelInputs(one, ids, "ids.npy");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_THAT(plain->values(), ElementsAre(1, 2, 3));
  absl::StatusOr<Tensor> keyed = DecodeModelInputs(
      one, Npz({{"other", EncodeNpyInt64({0, 0}, {1, 2})}, {"input_ids", ids}}),
      kName);
  ASSERT_TRUE(keyed.ok()) << keyed.status();
  EXPECT_THAT(keyed->values(), ElementsAre(1, 2, 3));
}

TEST(DecodeModelInputsTest, ErrorsNameTheFileTheArrayAndTheProblem) {
  const std::string ids = EncodeNpyInt64({1, 2, 3, 4, 5, 6}, {2, 3});
  const struct {
    const char* what;
    std::string bytes;
    const char* message;
  } kCases[] = {
      {"not a .npz", ids, "give a .npz with one array per input"},
      {"missing key", Npz({{"input_ids", ids}}),
       "no array for graph input 'attention_mask'"},
      {"sample counts differ",
       Npz({{"input_ids", ids},
            {"attention_mask", EncodeNpyInt64({1, 1, 1}, {1, 3})}}),
       "array 'attention_mask' has 1 samples, array 'input_ids' 2"},
      {"wrong sample size",
       Npz({{"input_ids", ids},
            {"attention_mask", EncodeNpyInt64({1, 1, 1, 1}, {2, 2})}}),
       "array 'attention_mask': inputs of shape [2, 2] do not fit"},
      {"fractional id",
       Npz({{"input_ids", EncodeNpy(Tensor({2, 3}, {1, 2, 3.5f, 4, 5, 6}))},
            {"attention_mask", ids}}),
       "value 3.5 at element 2 is not an integer"},
  };
  for (const auto& c : kCases) {
    const absl::Status status =
        DecodeModelInputs(kTwoInputs, c.bytes, kName).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_THAT(status.message(), HasSubstr(c.message)) << c.what;
    EXPECT_THAT(status.message(), HasSubstr(kName)) << c.what;
  }
}

TEST(NormalizeModelInputsTest, RefusesIntegerInputsNamingTheFlag) {
  Tensor packed({1, 6});
  const absl::Status status =
      NormalizeModelInputs(kTwoInputs, 0.5f, 2.0f, "--mean/--std", &packed);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("--mean/--std"));
  EXPECT_THAT(status.message(), HasSubstr("'input_ids'"));
  Tensor floats({1, 2}, {1.0f, 3.0f});
  ASSERT_TRUE(
      NormalizeModelInputs({Input("x", GraphInput::Type::kFloat, {-1, 2})},
                           1.0f, 2.0f, "--mean/--std", &floats)
          .ok());
  EXPECT_THAT(floats.values(), ElementsAre(0.0f, 1.0f));
}

}  // namespace
}  // namespace mixq::engine
