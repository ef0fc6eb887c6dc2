// Numerical faults: values that leave float32's finite range while a model
// runs. A model may hold finite weights and attributes whose products
// overflow (a weight of 3e38, a Gemm alpha of 1e38): the forward pass then
// computes infinities and NaNs. Code that needs finite values (quantizers,
// observers, the loss) checks with CheckFinite and fails with its status;
// it never aborts.
//
// Thread-safety: pure functions; they may run concurrently.
#ifndef MIXQ_ENGINE_FINITE_H_
#define MIXQ_ENGINE_FINITE_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "engine/tensor.h"

namespace mixq::engine {

// INVALID_ARGUMENT "<what>: the forward pass overflowed float32 (...)": the
// error of a value that should be finite and is not. `what` says which value
// and how, e.g. "input of node 'fc2' (Gemm) holds inf at element 3".
absl::Status OverflowError(absl::string_view what);

// OK when every value of `x` is finite; otherwise OverflowError naming `what`
// ("the logits") with the first NaN or infinity and its index.
absl::Status CheckFinite(const Tensor& x, absl::string_view what);

// `status` (an overflow error) prefixed with the node where the NaN or
// infinity first appeared ("node 'fc0' (Gemm) computed the first NaN or
// infinity: ..."; see Model::FirstNonFiniteNode); unchanged when `node` is
// empty.
absl::Status WithOverflowSource(const absl::Status& status,
                                absl::string_view node);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_FINITE_H_
