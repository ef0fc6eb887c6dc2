// Runs the operator-test table (op_table.h): every registered operator must
// have a forward case (hand-computed here, or a conformance case that
// conformance_test.cc requires to pass) and a gradient case (or a reason for
// having none); the gradient cases against central finite differences and
// the hand-computed cases against their values.
#include "tests/engine/op_table.h"

#include <filesystem>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "tests/support/gradient_check.h"
#include "tests/support/kernel_testing.h"
#include "util/file.h"

namespace mixq::testing {
namespace {

using engine::Kernel;
using engine::Shape;
using engine::Tensor;

constexpr float kForwardTolerance = 1e-6f;
// Seeds the inputs and the upstream gradient of every gradient case.
constexpr unsigned kSeed = 7;

// The operators each required conformance case's model holds; empty when the
// conformance data is not installed.
absl::StatusOr<std::set<std::string>> ConformanceOpTypes() {
  std::set<std::string> types;
  const std::filesystem::path root = ConformanceDataRoot();
  if (!std::filesystem::is_directory(root)) return types;
  for (const ConformanceCase& c : ConformanceCases()) {
    const std::filesystem::path model = root / c.dir / c.name / "model.onnx";
    absl::StatusOr<std::string> bytes = ReadFile(model.string());
    if (!bytes.ok()) return bytes.status();
    onnx::ModelProto proto;
    if (!proto.ParseFromString(*bytes)) {
      return absl::DataLossError(model.string());
    }
    for (const onnx::NodeProto& node : proto.graph().node()) {
      types.insert(node.op_type());
    }
  }
  return types;
}

TEST(OpTableTest, EveryRegisteredOperatorHasForwardAndGradientCases) {
  if (!std::filesystem::is_directory(ConformanceDataRoot())) {
    GTEST_SKIP() << ConformanceDataRoot()
                 << " is absent (install libonnx-testdata)";
  }
  absl::StatusOr<std::set<std::string>> conformance = ConformanceOpTypes();
  ASSERT_TRUE(conformance.ok()) << conformance.status();
  std::set<std::string> forward = *conformance;
  for (const ForwardCase& c : ForwardCases()) forward.insert(c.kernel.op_type);
  std::set<std::string> gradient;
  for (const GradientCase& c : GradientCases()) {
    gradient.insert(c.kernel.op_type);
  }
  for (const NoGradient& op : OpsWithoutGradient()) {
    EXPECT_EQ(gradient.count(op.op_type), 0u)
        << op.op_type << " has gradient cases and a reason for having none";
    gradient.insert(op.op_type);
  }

  std::vector<std::string> without_forward;
  std::vector<std::string> without_gradient;
  for (absl::string_view op : engine::RegisteredOpTypes()) {
    if (forward.count(std::string(op)) == 0) {
      without_forward.emplace_back(op);
    }
    if (gradient.count(std::string(op)) == 0) {
      without_gradient.emplace_back(op);
    }
  }
  EXPECT_THAT(without_forward, ::testing::IsEmpty())
      << "operators with neither a hand-computed forward case nor a required "
         "conformance case: "
      << absl::StrJoin(without_forward, ", ");
  EXPECT_THAT(without_gradient, ::testing::IsEmpty())
      << "operators with no gradient case (add one, or a reason to "
         "OpsWithoutGradient): "
      << absl::StrJoin(without_gradient, ", ");
}

TEST(OpTableTest, CasesNameRegisteredOperatorsOnce) {
  std::set<std::string> registered;
  for (absl::string_view op : engine::RegisteredOpTypes()) {
    EXPECT_TRUE(registered.insert(std::string(op)).second)
        << op << " is registered twice";
  }
  std::set<std::string> names;
  for (const GradientCase& c : GradientCases()) {
    EXPECT_TRUE(registered.count(c.kernel.op_type)) << c.name;
    EXPECT_TRUE(names.insert(c.name).second) << c.name << " appears twice";
  }
  for (const ForwardCase& c : ForwardCases()) {
    EXPECT_TRUE(registered.count(c.kernel.op_type)) << c.name;
  }
  for (const NoGradient& op : OpsWithoutGradient()) {
    EXPECT_TRUE(registered.count(op.op_type)) << op.op_type;
  }
}

class OpGradientTest : public ::testing::TestWithParam<GradientCase> {};

// L = Σ R ⊙ op(inputs) for a fixed random R, so dL/dOutput = R.
TEST_P(OpGradientTest, MatchesFiniteDifferences) {
  const GradientCase& c = GetParam();
  absl::StatusOr<std::unique_ptr<Kernel>> created = MakeKernel(c.kernel);
  ASSERT_TRUE(created.ok()) << created.status();
  const Kernel& kernel = **created;

  std::mt19937 rng(kSeed);
  std::vector<Tensor> inputs;
  for (const InputSpec& spec : c.inputs) {
    inputs.push_back(RandomInput(spec, &rng));
  }
  std::vector<const Shape*> shapes;
  for (const Tensor& t : inputs) shapes.push_back(&t.shape());
  const absl::StatusOr<Shape> out_shape = kernel.OutputShape(shapes);
  ASSERT_TRUE(out_shape.ok()) << out_shape.status();
  const Tensor upstream(*out_shape,
                        UniformValues(engine::NumElements(*out_shape), &rng));
  ExpectGradientsMatchFiniteDifferences(kernel, std::move(inputs), upstream,
                                        c.tolerance, c.zero_by_contract);
}

INSTANTIATE_TEST_SUITE_P(Ops, OpGradientTest,
                         ::testing::ValuesIn(GradientCases()),
                         [](const auto& info) { return info.param.name; });

class OpForwardTest : public ::testing::TestWithParam<ForwardCase> {};

TEST_P(OpForwardTest, MatchesHandComputedValues) {
  const ForwardCase& c = GetParam();
  absl::StatusOr<std::unique_ptr<Kernel>> kernel = MakeKernel(c.kernel);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  const Tensor out = RunKernel(**kernel, c.inputs);
  EXPECT_EQ(out.shape(), c.expected.shape());
  EXPECT_THAT(out.ToVector(),
              ::testing::Pointwise(::testing::FloatNear(kForwardTolerance),
                                   c.expected.ToVector()));
}

INSTANTIATE_TEST_SUITE_P(Ops, OpForwardTest,
                         ::testing::ValuesIn(ForwardCases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace mixq::testing
