// The importer: builds the executable form of a model (Model::Impl,
// engine/model_impl.h) from a parsed ONNX ModelProto. Internal to the
// engine; Model::FromOnnxBytes (engine/model.h) is the public entry and
// documents what is accepted.
#ifndef MIXQ_ENGINE_IMPORT_GRAPH_H_
#define MIXQ_ENGINE_IMPORT_GRAPH_H_

#include <memory>

#include "absl/status/statusor.h"
#include "engine/model_impl.h"
#include "onnx/onnx_pb.h"

namespace mixq::engine {

// Validates `proto` (ValidateModel, engine/validate.h), lowers its recurrent
// nodes (engine/rnn_import.h; hence the pointer), then imports its graph:
// values become slots, nodes are sorted topologically, constant and shape
// sub-graphs are folded (engine/constant_folding.h), nodes the first output
// does not need are dropped, the float initializers the rest read become the
// parameters, quantizable layers are recorded, and each Conv with the
// BatchNormalization after it is fused (engine/conv_bn_fusion.h). Shapes are
// inferred at batch 1 and at a probe batch, which tells where the batch
// flows; a graph that only imports at the fixed batch its input declares is
// imported at that batch (Model::Impl::fixed_batch). Errors as
// Model::FromOnnxBytes.
absl::StatusOr<std::unique_ptr<Model::Impl>> ImportModel(
    onnx::ModelProto* proto);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_IMPORT_GRAPH_H_
