#include "engine/winograd_cache.h"

#include <cstdint>
#include <cstring>

namespace mixq::engine {
namespace {

constexpr int64_t kFilterTaps = 9;

}  // namespace

std::shared_ptr<const WinogradWeights> WinogradWeightCache::Get(
    const Conv3x3Shape& s, WinogradTile tile, const float* w) {
  const size_t size = static_cast<size_t>(s.m * s.c * kFilterTaps);
  absl::MutexLock lock(&mu_);
  if (transform_ != nullptr && transform_->Fits(s, tile) &&
      weights_.size() == size &&
      std::memcmp(weights_.data(), w, size * sizeof(float)) == 0) {
    return transform_;
  }
  // Storage a caller still reads from stays theirs.
  if (transform_ == nullptr || transform_.use_count() > 1) {
    transform_ = std::make_shared<WinogradWeights>();
  }
  transform_->Assign(s, tile, w);
  weights_.assign(w, w + size);
  return transform_;
}

}  // namespace mixq::engine
