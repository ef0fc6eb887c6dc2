// Operators that move data without arithmetic (Concat, Transpose, Pad, ...).
#include "engine/ops.h"

namespace mixq::engine {

absl::Span<const OpEntry> ShapeOps() { return {}; }

}  // namespace mixq::engine
