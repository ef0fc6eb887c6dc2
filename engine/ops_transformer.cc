// Operators transformer exports need beyond the element-wise, convolution and
// shape families: Erf (PyTorch writes exact GELU as x/2 (1 + erf(x/sqrt 2)))
// and Gelu (opset 20, exact or tanh).
#include <cmath>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/ops.h"
#include "engine/ops_unary.h"
#include "engine/ops_util.h"
#include "unsupported/Eigen/SpecialFunctions"

namespace mixq::engine {
namespace {

// 2 / sqrt(pi): d/dx erf(x) = kTwoOverSqrtPi * exp(-x^2).
constexpr float kTwoOverSqrtPi = 1.1283791670955126f;
constexpr float kInvSqrt2 = 0.7071067811865476f;
// 1 / sqrt(2 pi): the standard normal density at 0.
constexpr float kInvSqrt2Pi = 0.3989422804014327f;
// sqrt(2 / pi) and the cubic coefficient of the tanh approximation of GELU.
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

struct ErfOp {
  void Forward(const ConstArrayMap& x, ArrayMap y) const { y = x.erf(); }
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = g * kTwoOverSqrtPi * (-x.square()).exp();
  }
};

// x * Phi(x), Phi the standard normal CDF.
struct GeluOp {
  void Forward(const ConstArrayMap& x, ArrayMap y) const {
    y = 0.5f * x * (1.0f + (x * kInvSqrt2).erf());
  }
  // Phi(x) + x * phi(x).
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = g * (0.5f * (1.0f + (x * kInvSqrt2).erf()) +
              x * kInvSqrt2Pi * (-0.5f * x.square()).exp());
  }
};

// x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
struct GeluTanhOp {
  void Forward(const ConstArrayMap& x, ArrayMap y) const {
    y = 0.5f * x *
        (1.0f + (kSqrt2OverPi * (x + kGeluCubic * x.cube())).tanh());
  }
  void Backward(const ConstArrayMap& x, const ConstArrayMap& g,
                ArrayMap dx) const {
    dx = (kSqrt2OverPi * (x + kGeluCubic * x.cube())).tanh();
    dx = g * (0.5f * (1.0f + dx) +
              0.5f * x * (1.0f - dx.square()) * kSqrt2OverPi *
                  (1.0f + 3.0f * kGeluCubic * x.square()));
  }
};

absl::StatusOr<std::unique_ptr<Kernel>> CreateGelu(const OpConfig& config) {
  const absl::StatusOr<std::string> approximate =
      config.GetString("approximate", "none");
  if (!approximate.ok()) return approximate.status();
  if (*approximate == "none") return MakeUnary(GeluOp{});
  if (*approximate == "tanh") return MakeUnary(GeluTanhOp{});
  return NodeError(config, absl::StrCat("unsupported attribute value "
                                        "approximate='",
                                        *approximate, "' (none or tanh)"));
}

}  // namespace

absl::Span<const OpEntry> TransformerOps() {
  static const OpEntry kOps[] = {
      {"Erf", {1, 1, 1, 1, &CreateUnary<ErfOp>}},
      {"Gelu", {1, 1, 1, 1, &CreateGelu}},
  };
  return kOps;
}

}  // namespace mixq::engine
