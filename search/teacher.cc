#include "search/teacher.h"

#include <utility>

#include "engine/predict.h"
#include "util/status_macros.h"

namespace mixq::search {

absl::Status AttachTeacher(const engine::Model& model, LabeledData* data) {
  if (data->size() == 0) return absl::OkStatus();
  MIXQ_ASSIGN_OR_RETURN(engine::Tensor outputs,
                        engine::PredictInBatches(model, data->inputs,
                                                 engine::kDefaultPredictBatch));
  data->teacher = std::move(outputs);
  return absl::OkStatus();
}

}  // namespace mixq::search
