#include "engine/finite.h"

#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "util/status_macros.h"

namespace mixq::engine {

absl::Status OverflowError(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(
      what,
      ": the forward pass overflowed float32 (the model's weights, "
      "attributes or inputs are too large)"));
}

absl::Status CheckFinite(const Tensor& x, absl::string_view what) {
  // One vectorised pass decides; the index is looked up only on failure.
  if (x.flat().allFinite()) return absl::OkStatus();
  const float* data = x.data();
  int64_t i = 0;
  while (std::isfinite(data[i])) ++i;
  return OverflowError(absl::StrCat(what, " holds ",
                                    std::isnan(data[i]) ? "NaN" : "infinity",
                                    " at element ", i));
}

absl::Status WithOverflowSource(const absl::Status& status,
                                absl::string_view node) {
  if (node.empty()) return status;
  return Annotate(status,
                  absl::StrCat(node, " computed the first NaN or infinity"));
}

}  // namespace mixq::engine
