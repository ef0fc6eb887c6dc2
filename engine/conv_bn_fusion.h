// The import's last rewrite: each Conv and the inference-form
// BatchNormalization right after it, when that is the only reader of the
// Conv's output, run as one node (FuseConvBatchNorm, engine/ops.h): the
// convolution on BN-folded weights. Internal to the engine.
#ifndef MIXQ_ENGINE_CONV_BN_FUSION_H_
#define MIXQ_ENGINE_CONV_BN_FUSION_H_

#include "engine/model_impl.h"

namespace mixq::engine {

// Fills impl->fused and impl->fused_at (one entry per node: the index of the
// fused pair starting there, or -1). The pair's node keeps the Conv's name
// and layer; its label names both nodes.
void FuseConvBatchNorms(Model::Impl* impl);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_CONV_BN_FUSION_H_
