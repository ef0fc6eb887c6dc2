// WinogradWeightCache: the Winograd transform (engine/winograd.h) of the
// weights a Conv node last ran with, handed out again while they are
// unchanged.
//
// Inference and candidate scoring run a layer many times with the same
// weights, and the transform costs about as much as a batch-1 forward pass
// of the layer. The cache compares the weights by value, bit for bit, with a
// copy of those it transformed, so its callers need no weights version and
// it can never hand out a stale transform. A miss (training changes the
// weights every step) transforms into the storage it already has unless a
// caller still holds it, so a training loop does not allocate.
//
// Thread-safety: thread-safe; concurrent callers with different weights each
// get the transform of their own (the later waits for the earlier's
// transform, not for its convolution).
#ifndef MIXQ_ENGINE_WINOGRAD_CACHE_H_
#define MIXQ_ENGINE_WINOGRAD_CACHE_H_

#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "engine/winograd.h"

namespace mixq::engine {

class WinogradWeightCache {
 public:
  // The transform of w [s.m, s.c, 3, 3] for `tile` (as
  // WinogradWeights(s, tile, w)); the caller may use it for as long as it
  // holds the pointer. Requires WinogradValid(s).
  std::shared_ptr<const WinogradWeights> Get(const Conv3x3Shape& s,
                                             WinogradTile tile, const float* w);

 private:
  absl::Mutex mu_;
  std::vector<float> weights_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<WinogradWeights> transform_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_WINOGRAD_CACHE_H_
