// Rewrites of ONNX graphs that keep what a model computes: serialized
// ModelProto in, serialized ModelProto out, so callers need no ONNX headers.
//
// Thread-safety: the functions are pure; they may run concurrently.
#ifndef MIXQ_ENGINE_GRAPH_REWRITE_H_
#define MIXQ_ENGINE_GRAPH_REWRITE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mixq::engine {

// What FoldBatchNorm did.
struct FoldReport {
  // A BatchNormalization node left in the graph, and why it was.
  struct Unfolded {
    std::string node;    // its name, or "#<index>" when it has none
    std::string reason;  // e.g. "the input is not produced by a Conv or Gemm"
  };

  int folded = 0;  // BatchNormalization nodes folded away
  std::vector<Unfolded> unfolded;
};

// Folds every BatchNormalization (inference form) into the Conv or Gemm that
// produces its input, as deployed int8 runtimes do before quantizing weights.
// With f_c = scale_c / sqrt(var_c + epsilon), the producer's weight becomes
// W'[c] = W[c] * f_c along its output channel (Conv: axis 0 of W; Gemm: the
// output axis of B, 1 or with transB 0) and its bias b'_c = (b_c - mean_c) *
// f_c + B_c (Gemm: beta * C takes the place of b, and beta becomes 1), a
// zero bias when it has none. The producer then writes the
// BatchNormalization's output; initializers only the removed node read are
// dropped. Arithmetic is in double, results stored as float.
//
// A node is folded only when it is safe: the producer's output is read by
// the BatchNormalization alone and is not a graph output; the weight (and
// bias, if any) are float initializers no other node reads; scale, B, mean
// and var are float initializers of one element per output channel; and
// var + epsilon > 0. Anything else is left unchanged and listed in
// `report->unfolded` with the reason (`report` may be null; it is
// overwritten).
//
// Errors: INVALID_ARGUMENT when `onnx_bytes` is not a serialized ONNX model
// (or has no graph). Never aborts on malformed graphs.
absl::StatusOr<std::string> FoldBatchNorm(absl::string_view onnx_bytes,
                                          FoldReport* report);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_GRAPH_REWRITE_H_
