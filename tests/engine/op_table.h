// The operator-test table: for every registered operator (engine/ops.h
// RegisteredOpTypes), the cases that check its forward pass and its
// gradient. op_table_test.cc fails when an operator has no forward case
// (a hand-computed one here, or an ONNX conformance case that must pass)
// or no gradient case (unless it is listed, with the reason, among the
// operators without one); it runs the gradient and hand-computed cases;
// conformance_test.cc runs the required conformance cases.
#ifndef MIXQ_TESTS_ENGINE_OP_TABLE_H_
#define MIXQ_TESTS_ENGINE_OP_TABLE_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "engine/tensor.h"
#include "tests/support/gradient_check.h"
#include "tests/support/kernel_testing.h"

namespace mixq::testing {

// How a gradient case draws a data input's values.
struct InputSpec {
  engine::Shape shape;
  // Uniform in [lo, hi], pushed kKinkMargin away from every kink (the points
  // where a non-smooth kernel's derivative jumps) ...
  float lo = -1.0f;
  float hi = 1.0f;
  std::vector<float> kinks = {};
  // ... or, when set, distinct values in [-1, 1] at least 2 / n apart,
  // shuffled, so that no finite-difference step flips a maximum (pooling).
  bool distinct = false;
};

// Inputs stay this far from their kinks.
inline constexpr float kKinkMargin = 0.05f;

// A kernel's Backward against central finite differences of its Forward,
// for L = Σ R ⊙ op(inputs) with a fixed random R.
struct GradientCase {
  std::string name;  // unique over the table
  KernelSpec kernel;
  std::vector<InputSpec> inputs;
  GradientTolerance tolerance = {};
  // Inputs whose gradient is zero by the kernel's contract rather than the
  // derivative (BatchNormalization's mean and var).
  std::vector<size_t> zero_by_contract = {};
};

// A kernel's Forward against hand-computed values.
struct ForwardCase {
  std::string name;  // unique over the table
  KernelSpec kernel;
  std::vector<engine::Tensor> inputs;
  engine::Tensor expected;
};

// A case of ONNX's conformance data (libonnx-testdata) that must import, run
// and match its reference outputs: <data root>/<dir>/<name>.
struct ConformanceCase {
  const char* dir;
  const char* name;
};

// A registered operator with no gradient case, and why.
struct NoGradient {
  const char* op_type;
  const char* reason;
};

std::vector<GradientCase> GradientCases();
std::vector<ForwardCase> ForwardCases();
std::vector<ConformanceCase> ConformanceCases();
absl::Span<const NoGradient> OpsWithoutGradient();

// The shapes of a recurrent kernel's inputs with `directions` and `gates`
// (RNN 1, GRU 3, LSTM 4): X [kRecurrentSteps, batch, kRecurrentInput], W, R,
// and the optional ones asked for (B, then sequence_lens omitted, `states`
// initial states, peepholes), an omitted one ({0}) where one is skipped
// before a later one. Hidden size kRecurrentHidden.
inline constexpr int64_t kRecurrentSteps = 3;
inline constexpr int64_t kRecurrentInput = 4;
inline constexpr int64_t kRecurrentHidden = 3;
std::vector<engine::Shape> RecurrentInputs(int64_t directions, int64_t gates,
                                           bool bias, int states,
                                           bool peepholes = false,
                                           int64_t batch = 2);

// The root of the conformance data: $MIXQ_ONNX_TESTDATA when set, else
// Debian's libonnx-testdata directory.
std::filesystem::path ConformanceDataRoot();

// Values for `spec` drawn from `rng` (see InputSpec).
engine::Tensor RandomInput(const InputSpec& spec, std::mt19937* rng);

inline void PrintTo(const GradientCase& c, std::ostream* os) { *os << c.name; }
inline void PrintTo(const ForwardCase& c, std::ostream* os) { *os << c.name; }
inline void PrintTo(const ConformanceCase& c, std::ostream* os) {
  *os << c.dir << "/" << c.name;
}

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_ENGINE_OP_TABLE_H_
