#include "engine/model_inputs.h"

#include <cmath>
#include <string>
#include <utility>

#include "absl/algorithm/container.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/dataset.h"
#include "engine/npz.h"
#include "util/status_macros.h"

namespace mixq::engine {
namespace {

bool IsInteger(const GraphInput& input) {
  return input.type != GraphInput::Type::kFloat;
}

// INVALID_ARGUMENT naming the first value of `values` an integer input
// cannot take: a fraction (also what a uint8 array scaled to [0, 1] gives)
// or a magnitude float32 does not hold exactly.
absl::Status CheckIntegers(const Tensor& values, const GraphInput& input,
                           absl::string_view where) {
  const float* data = values.data();
  for (int64_t i = 0; i < values.size(); ++i) {
    const float v = data[i];
    if (v != std::trunc(v) || std::fabs(v) > kMaxExactFloatInteger) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": value ", v, " at element ", i, " is not an integer within ",
          "+-2^24, as graph input '", input.name,
          "' (integer) needs (give int64 or int32 arrays)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Tensor> DecodeOne(const GraphInput& input,
                                 absl::string_view bytes,
                                 absl::string_view name,
                                 absl::string_view key) {
  MIXQ_ASSIGN_OR_RETURN(Tensor values, DecodeInputs(bytes, name, key));
  const std::string where = key.empty()
                                ? std::string(name)
                                : absl::StrCat(name, ": array '", key, "'");
  if (const absl::Status conformed = ConformToModelInput(input.shape, &values);
      !conformed.ok()) {
    return Annotate(conformed, where);
  }
  if (IsInteger(input)) {
    MIXQ_RETURN_IF_ERROR(CheckIntegers(values, input, where));
  }
  return values;
}

std::string InputNames(absl::Span<const GraphInput> inputs) {
  return absl::StrJoin(inputs, ", ", [](std::string* out, const GraphInput& i) {
    absl::StrAppend(out, "'", i.name, "'");
  });
}

}  // namespace

absl::StatusOr<Tensor> DecodeModelInputs(absl::Span<const GraphInput> inputs,
                                         absl::string_view bytes,
                                         absl::string_view name) {
  if (inputs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": the model has no graph input"));
  }
  std::vector<std::string> keys;
  if (LooksLikeZip(bytes)) {
    MIXQ_ASSIGN_OR_RETURN(keys, NpzKeys(bytes, name));
  }
  if (inputs.size() == 1) {
    const bool keyed = absl::c_linear_search(keys, inputs[0].name);
    return DecodeOne(inputs[0], bytes, name, keyed ? inputs[0].name : "");
  }
  if (!LooksLikeZip(bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": the model has ", inputs.size(), " inputs (",
        InputNames(inputs),
        "); give a .npz with one array per input, keyed by its name"));
  }
  std::vector<Tensor> arrays;
  int64_t packed = 0;
  for (const GraphInput& input : inputs) {
    if (!absl::c_linear_search(keys, input.name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": no array for graph input '", input.name,
          "' (the model's inputs are ", InputNames(inputs),
          "; the archive holds ",
          keys.empty() ? "none"
                       : absl::StrCat("'", absl::StrJoin(keys, "', '"), "'"),
          ")"));
    }
    MIXQ_ASSIGN_OR_RETURN(Tensor values,
                          DecodeOne(input, bytes, name, input.name));
    if (!arrays.empty() && values.dim(0) != arrays[0].dim(0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": array '", input.name, "' has ", values.dim(0),
          " samples, array '", inputs[0].name, "' ", arrays[0].dim(0),
          " (every input needs one row per sample)"));
    }
    packed += input.sample_size;
    arrays.push_back(std::move(values));
  }
  const int64_t batch = arrays[0].dim(0);
  using RowMajor =
      Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Tensor out({batch, packed});
  Eigen::Map<RowMajor> all(out.data(), batch, packed);
  int64_t offset = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const int64_t size = inputs[i].sample_size;
    all.middleCols(offset, size) =
        Eigen::Map<const RowMajor>(arrays[i].data(), batch, size);
    offset += size;
  }
  return out;
}

absl::Status NormalizeModelInputs(absl::Span<const GraphInput> inputs,
                                  float mean, float stddev,
                                  absl::string_view flag, Tensor* packed) {
  const auto integer = absl::c_find_if(inputs, IsInteger);
  if (integer != inputs.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the model's graph input '", integer->name,
        "' holds integers (ids), which are not normalised: leave out ", flag));
  }
  return Normalize(mean, stddev, packed);
}

}  // namespace mixq::engine
