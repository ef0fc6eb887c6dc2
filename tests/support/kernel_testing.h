// Test support: builds kernel configurations (OpConfig attributes and
// constant inputs) and kernels for tests that create kernels directly, and
// their random inputs. Header-only.
#ifndef MIXQ_TESTS_SUPPORT_KERNEL_TESTING_H_
#define MIXQ_TESTS_SUPPORT_KERNEL_TESTING_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "gtest/gtest.h"

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

// A 1-D float constant input (Resize's scales).
inline engine::ConstantInput FloatsInput(std::vector<float> values) {
  engine::ConstantInput input;
  input.shape = {static_cast<int64_t>(values.size())};
  input.floats = std::move(values);
  return input;
}

// A node's attributes, by name.
using Attributes = std::vector<std::pair<std::string, engine::Attribute>>;

// A kernel as the importer would configure it for a node named "node".
struct KernelSpec {
  std::string op_type;
  Attributes attributes = {};
  // The inputs after the data inputs (nullopt for an omitted one).
  std::vector<std::optional<engine::ConstantInput>> constants = {};
  int64_t opset = 13;
  // For kernel_per_output operators (Split): the node's number of outputs
  // and the one the kernel computes.
  int num_outputs = 1;
  int output_index = 0;
};

// The kernel FindOp's schema creates for `spec`: the kernel's own errors for
// bad attributes, NOT_FOUND for an unknown operator.
inline absl::StatusOr<std::unique_ptr<engine::Kernel>> MakeKernel(
    const KernelSpec& spec) {
  const engine::OpSchema* schema = engine::FindOp(spec.op_type);
  if (schema == nullptr) return absl::NotFoundError(spec.op_type);
  engine::OpConfig config;
  config.op_type = spec.op_type;
  config.node_name = "node";
  config.opset = spec.opset;
  config.num_outputs = spec.num_outputs;
  config.output_index = spec.output_index;
  for (const auto& [name, attr] : spec.attributes) {
    config.attributes[name] = attr;
  }
  config.constant_inputs = spec.constants;
  return schema->create(config);
}

// The kernel for `op_type` with `attrs` at opset 13 (see KernelSpec).
inline absl::StatusOr<std::unique_ptr<engine::Kernel>> MakeKernel(
    const std::string& op_type, const Attributes& attrs) {
  return MakeKernel(KernelSpec{op_type, attrs});
}

// `kernel`'s output on `inputs` (shape from OutputShape, then Forward); an
// empty tensor, with a test failure, when OutputShape refuses them.
inline engine::Tensor RunKernel(const engine::Kernel& kernel,
                                const std::vector<engine::Tensor>& inputs) {
  std::vector<const engine::Shape*> shapes;
  std::vector<const engine::Tensor*> pointers;
  for (const engine::Tensor& t : inputs) {
    shapes.push_back(&t.shape());
    pointers.push_back(&t);
  }
  absl::StatusOr<engine::Shape> shape = kernel.OutputShape(shapes);
  EXPECT_TRUE(shape.ok()) << shape.status();
  if (!shape.ok()) return engine::Tensor();
  engine::Tensor out(*shape);
  kernel.Forward(pointers, &out);
  return out;
}

// `n` values drawn uniformly from [-1, 1] by `rng`.
inline std::vector<float> UniformValues(int64_t n, std::mt19937* rng) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> values(n);
  for (float& v : values) v = uniform(*rng);
  return values;
}

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SUPPORT_KERNEL_TESTING_H_
