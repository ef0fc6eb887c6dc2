// The distill objective's reference: the FP32 model's outputs on a data set.
#ifndef MIXQ_SEARCH_TEACHER_H_
#define MIXQ_SEARCH_TEACHER_H_

#include "absl/status/status.h"
#include "engine/model.h"
#include "search/qat.h"

namespace mixq::search {

// Sets data->teacher to `model`'s outputs on data->inputs with the weights
// stored in the model (FP32), so the search's loss becomes
// engine::DistillLoss against them (LabeledData). Computed once per data set
// — the calibration, fine-tuning and validation sets are fixed for a job —
// which costs one forward pass over the data instead of a second forward
// per training step and per scored candidate. INVALID_ARGUMENT as
// engine::PredictInBatches (an output that overflows names its node). Blocks;
// uses the engine's threads. A no-op on an empty data set.
absl::Status AttachTeacher(const engine::Model& model, LabeledData* data);

}  // namespace mixq::search

#endif  // MIXQ_SEARCH_TEACHER_H_
