#include "server/export.h"

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "proto/mixq.pb.h"
#include "search/quantize.h"
#include "server/convert.h"
#include "util/logging.h"
#include "util/sha256.h"
#include "util/status_macros.h"

namespace mixq::server {
namespace {

constexpr char kOnnxFormat[] = "onnx";
constexpr char kPolicyJsonFormat[] = "policy_json";

}  // namespace

absl::StatusOr<std::string> BuildQdqExport(absl::string_view prepared_onnx,
                                           const engine::Model& model,
                                           const search::QatSession& session,
                                           const search::Policy& policy) {
  MIXQ_ASSIGN_OR_RETURN(
      search::QuantizedModel quantized,
      search::ExportQuantized(prepared_onnx, model, session, policy));
  return std::move(quantized.onnx);
}

std::string SaveQdqExport(storage::Store* store, const std::string& job_id,
                          absl::string_view prepared_onnx,
                          const engine::Model& model,
                          const search::QatSession& session,
                          const search::Policy& policy) {
  absl::StatusOr<std::string> onnx =
      BuildQdqExport(prepared_onnx, model, session, policy);
  absl::Status status = onnx.status();
  std::string sha256;
  if (status.ok()) {
    sha256 = Sha256Hex(*onnx);
    status = store->PutArtifact(sha256, *onnx);
  }
  if (!status.ok()) {
    Log(LogLevel::kWarning, "job has no ONNX export",
        {{"job", job_id}, {"error", status.ToString()}});
    return "";
  }
  Log(LogLevel::kInfo, "job exported",
      {{"job", job_id},
       {"onnx_sha256", sha256},
       {"bytes", absl::StrCat(onnx->size())}});
  return sha256;
}

std::string PolicyJson(const storage::JobRecord& job,
                       const std::vector<storage::LayerRecord>& layers,
                       const storage::PolicyRecord& final_policy) {
  v1::PolicyDocument document;
  document.set_job_id(job.id);
  v1::JobSpec spec;
  // The stored spec is the server's own JSON; only its name is wanted here.
  if (google::protobuf::util::JsonStringToMessage(job.spec, &spec).ok()) {
    document.set_job_name(spec.name());
  }
  document.set_model_sha256(job.model_sha256);
  document.set_strategy(job.strategy);
  const v1::Policy policy = ToProto(final_policy, layers);
  *document.mutable_layers() = policy.layers();
  document.set_activation_bits(policy.activation_bits());
  document.set_avg_bits(policy.avg_bits());
  document.set_size_bytes(policy.size_bytes());
  document.set_fp32_size_bytes(job.fp32_size_bytes);
  document.set_bops(policy.bops());
  document.set_accuracy(policy.accuracy());
  document.set_loss(policy.loss());
  document.set_onnx_sha256(job.export_sha256);
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  // Printing a message without Any fields cannot fail.
  (void)google::protobuf::util::MessageToJsonString(document, &json, options);
  return json;
}

absl::StatusOr<ExportedDocument> ExportJob(const storage::Store& store,
                                           const std::string& job_id,
                                           absl::string_view format) {
  const bool onnx = format.empty() || format == kOnnxFormat;
  if (!onnx && format != kPolicyJsonFormat) {
    return absl::InvalidArgumentError(
        absl::StrCat("format: \"", format, "\" is not one of \"", kOnnxFormat,
                     "\", \"", kPolicyJsonFormat, "\""));
  }
  MIXQ_ASSIGN_OR_RETURN(storage::JobRecord job, store.GetJob(job_id));
  if (job.state != storage::JobState::kSucceeded) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " is ", storage::JobStateName(job.state),
                     "; only a succeeded job has a result to export"));
  }
  ExportedDocument document;
  if (onnx) {
    if (job.export_sha256.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", job_id,
          " has no ONNX export (its export failed when it finished, see "
          "the server log, or it finished before mixq stored exports); "
          "format \"policy_json\" still works"));
    }
    MIXQ_ASSIGN_OR_RETURN(document.data, store.GetArtifact(job.export_sha256));
    document.sha256 = job.export_sha256;
    document.filename = absl::StrCat(job_id, ".qdq.onnx");
    return document;
  }
  MIXQ_ASSIGN_OR_RETURN(std::vector<storage::LayerRecord> layers,
                        store.GetLayers(job_id));
  MIXQ_ASSIGN_OR_RETURN(std::optional<storage::PolicyRecord> final_policy,
                        store.GetFinalPolicy(job_id));
  if (!final_policy.has_value()) {
    return absl::DataLossError(
        absl::StrCat("job ", job_id, " succeeded but has no final policy"));
  }
  document.data = PolicyJson(job, layers, *final_policy);
  document.sha256 = Sha256Hex(document.data);
  document.filename = absl::StrCat(job_id, ".policy.json");
  return document;
}

}  // namespace mixq::server
