// A finished job's exports (ExportModel): the QDQ ONNX model its search
// produced, built and stored when the job finishes (while the fine-tuned
// session still exists), and the PolicyDocument of its final policy.
// gRPC-free; thread-safe (the store is).
#ifndef MIXQ_SERVER_EXPORT_H_
#define MIXQ_SERVER_EXPORT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/model.h"
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

// BuildQdqExport, stored as an artifact: returns its SHA-256, for
// Store::FinishJob. A failed export does not fail the job: it is logged as a
// warning naming `job_id`, and the result is empty (the job then has no ONNX
// export; its policy can still be exported). Blocks on the store.
std::string SaveQdqExport(storage::Store* store, const std::string& job_id,
                          absl::string_view prepared_onnx,
                          const engine::Model& model,
                          const search::QatSession& session,
                          const search::Policy& policy);

// The final policy of `job` as a v1::PolicyDocument in protobuf's JSON
// mapping (field names as in the proto, every field printed), `layers`
// naming its bits.
std::string PolicyJson(const storage::JobRecord& job,
                       const std::vector<storage::LayerRecord>& layers,
                       const storage::PolicyRecord& final_policy);

// One export, whole.
struct ExportedDocument {
  std::string data;
  std::string sha256;    // of data
  std::string filename;  // "<job id>.qdq.onnx" or "<job id>.policy.json"
};

// The export of job `job_id` in `format`: "onnx" (or empty) or
// "policy_json". INVALID_ARGUMENT naming `format` for another one;
// NOT_FOUND for an unknown job; FAILED_PRECONDITION if the job has not
// succeeded, or (onnx) has no export (its export failed, or it finished
// before mixq stored exports). Blocks on the store.
absl::StatusOr<ExportedDocument> ExportJob(const storage::Store& store,
                                           const std::string& job_id,
                                           absl::string_view format);

}  // namespace mixq::server

#endif  // MIXQ_SERVER_EXPORT_H_
