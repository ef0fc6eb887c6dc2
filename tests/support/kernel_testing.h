// Test support: builds kernel configurations (OpConfig attributes and
// constant inputs) for tests that create kernels directly. Header-only.
#ifndef MIXQ_TESTS_SUPPORT_KERNEL_TESTING_H_
#define MIXQ_TESTS_SUPPORT_KERNEL_TESTING_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/ops.h"
#include "engine/tensor.h"

namespace mixq::testing {

inline engine::Attribute IntAttr(int64_t value) {
  engine::Attribute attr;
  attr.type = engine::Attribute::Type::kInt;
  attr.i = value;
  return attr;
}

inline engine::Attribute FloatAttr(float value) {
  engine::Attribute attr;
  attr.type = engine::Attribute::Type::kFloat;
  attr.f = value;
  return attr;
}

inline engine::Attribute IntsAttr(std::vector<int64_t> values) {
  engine::Attribute attr;
  attr.type = engine::Attribute::Type::kInts;
  attr.ints = std::move(values);
  return attr;
}

inline engine::Attribute StringAttr(std::string value) {
  engine::Attribute attr;
  attr.type = engine::Attribute::Type::kString;
  attr.s = std::move(value);
  return attr;
}

// An int64 constant input: 1-D unless `shape` is given ({} for a scalar).
inline engine::ConstantInput IntInput(
    std::vector<int64_t> values,
    std::optional<engine::Shape> shape = std::nullopt) {
  engine::ConstantInput input;
  input.is_int = true;
  input.shape =
      shape.value_or(engine::Shape{static_cast<int64_t>(values.size())});
  input.ints = std::move(values);
  return input;
}

// A float scalar constant input (Pad's constant_value, Clip's min, ...).
inline engine::ConstantInput FloatInput(float value) {
  engine::ConstantInput input;
  input.floats = {value};
  return input;
}

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SUPPORT_KERNEL_TESTING_H_
