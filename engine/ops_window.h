// The sliding-window attributes of Conv, ConvTranspose and the pools
// (kernel_shape, strides, dilations, pads, auto_pad, ceil_mode), read from a
// node and checked against the window limits of engine/ops.h. Private to
// engine/.
#ifndef MIXQ_ENGINE_OPS_WINDOW_H_
#define MIXQ_ENGINE_OPS_WINDOW_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/ops.h"

namespace mixq::engine {

enum class AutoPad { kNotSet, kSameUpper, kSameLower, kValid };

// The sliding-window attributes for `rank` spatial dims. Empty vectors mean
// the defaults (filled in where the rank is known from the input).
struct WindowAttrs {
  std::vector<int64_t> kernel;  // empty: Conv takes it from W
  std::vector<int64_t> strides;
  std::vector<int64_t> dilations;
  std::vector<int64_t> pads;  // begins, then ends
  AutoPad auto_pad = AutoPad::kNotSet;
  bool ceil_mode = false;
};

// Reads kernel_shape, strides, dilations, pads and auto_pad (ceil_mode when
// `with_ceil_mode`), checking that they are positive (pads non-negative), at
// most kMaxWindowAttribute, and agree on the spatial rank; `rank` is that
// rank, or 0 when no attribute fixes it. INVALID_ARGUMENT naming the node and
// attribute otherwise.
absl::StatusOr<WindowAttrs> ParseWindow(const OpConfig& config,
                                        bool with_ceil_mode, int* rank);

// 1-D window attributes as 2-D ones with a unit leading dim (kernel 1,
// stride 1, no padding); others unchanged.
WindowAttrs LiftTo2d(WindowAttrs w);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_OPS_WINDOW_H_
