// A job's exports (ExportModel): the QDQ ONNX model of every policy its
// search kept (each step's and the final one), built, measured on the
// validation set and stored while the fine-tuned session holds that
// policy's weights, and PolicyDocuments of those policies.
// gRPC-free; thread-safe (the store is).
#ifndef MIXQ_SERVER_EXPORT_H_
#define MIXQ_SERVER_EXPORT_H_

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/model.h"
#include "engine/predict.h"
#include "engine/tensor.h"
#include "search/cost_model.h"
#include "search/qat.h"
#include "storage/store.h"

namespace mixq::server {

// The job's model with `session`'s fine-tuned weights, quantized under
// `policy`, and its activation grids, as serialized QDQ ONNX
// (search::ExportQuantized). `prepared_onnx` must be the bytes `model` was
// imported from (PreparedJob::prepared_onnx). Errors of ExportQuantized
// (e.g. FAILED_PRECONDITION for an opset onnx's converter cannot raise).
// Blocks while it rewrites the model.
absl::StatusOr<std::string> BuildQdqExport(absl::string_view prepared_onnx,
                                           const engine::Model& model,
                                           const search::QatSession& session,
                                           const search::Policy& policy);

// The FP32 model's (or any model's) loss and top-1 accuracy on `data` when
// `onnx` (a serialized model) is imported and run by the engine in batches
// of engine::kDefaultPredictBatch, scored by the data's objective
// (engine::ScoreOutputs: the distance to data.teacher when distilling,
// accuracy NaN without labels): for cross-entropy exactly what
// `mixq-run --labels` prints for that file and data. Errors of the import
// or the forward pass.
absl::StatusOr<engine::ClassifierScore> MeasureExport(
    absl::string_view onnx, const search::LabeledData& data);

// A kept policy's export: SHA-256 of its stored QDQ model (empty: none) and
// its validation figures (NaN: not measured).
struct KeptPolicyExport {
  std::string sha256;
  double val_loss = std::numeric_limits<double>::quiet_NaN();
  double val_accuracy = std::numeric_limits<double>::quiet_NaN();
};

// BuildQdqExport for a kept policy, measured on `val` with MeasureExport
// (skipped when `val` is empty) and stored as an artifact by
// `store_artifact(sha256, bytes)` (Store::PutArtifact, or the job manager's
// retrying wrapper of it). A failed export, measurement or store does not
// fail the job: it is logged as a warning naming `job_id` and `policy_id`,
// and the result is empty (the policy then has no model and is not ranked).
// Blocks while it exports, runs and stores.
KeptPolicyExport ExportKeptPolicy(
    absl::FunctionRef<absl::Status(const std::string&, absl::string_view)>
        store_artifact,
    const std::string& job_id, const std::string& policy_id,
    absl::string_view prepared_onnx, const engine::Model& model,
    const search::QatSession& session, const search::Policy& policy,
    const search::LabeledData& val);

// A kept policy of `job` as a v1::PolicyDocument in protobuf's JSON mapping
// (field names as in the proto, every field printed), `layers` naming its
// bits.
std::string PolicyJson(const storage::JobRecord& job,
                       const std::vector<storage::LayerRecord>& layers,
                       const storage::PolicyRecord& policy);

// The kept policy `policy_id` names ("step-N", or "final"/empty: the final
// policy, whose export_sha256 falls back to the job's). NOT_FOUND for a
// step the job does not have; INVALID_ARGUMENT for a malformed id;
// FAILED_PRECONDITION for the final policy of a job that has not succeeded.
absl::StatusOr<storage::PolicyRecord> FindKeptPolicy(
    const storage::Store& store, const storage::JobRecord& job,
    absl::string_view policy_id);

// One export, whole.
struct ExportedDocument {
  std::string data;
  std::string sha256;    // of data
  std::string filename;  // "<job id>.qdq.onnx" or "<job id>.policy.json"
};

// The export of job `job_id`'s kept policy `policy_id` (empty: the final
// one) in `format`: "onnx" (or empty) or "policy_json". INVALID_ARGUMENT
// naming `format` for another one; errors of FindKeptPolicy; NOT_FOUND for
// an unknown job; FAILED_PRECONDITION (onnx) for a policy without an export
// (its export failed, or it was recorded before mixq kept exports). Files
// are named "<job id>.qdq.onnx" / ".policy.json" for the final policy,
// "<job id>.step-N.qdq.onnx" for another. Blocks on the store.
absl::StatusOr<ExportedDocument> ExportJob(const storage::Store& store,
                                           const std::string& job_id,
                                           absl::string_view format,
                                           absl::string_view policy_id = {});

}  // namespace mixq::server

#endif  // MIXQ_SERVER_EXPORT_H_
