#include "server/export.h"

#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/predict.h"
#include "google/protobuf/util/json_util.h"
#include "proto/mixq.pb.h"
#include "search/quantize.h"
#include "server/artifacts.h"
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

KeptPolicyExport ExportKeptPolicy(
    absl::FunctionRef<absl::Status(const std::string&, absl::string_view)>
        store_artifact,
    const std::string& job_id, const std::string& policy_id,
    absl::string_view prepared_onnx, const engine::Model& model,
    const search::QatSession& session, const search::Policy& policy,
    const search::LabeledData& val) {
  KeptPolicyExport result;
  absl::StatusOr<std::string> onnx =
      BuildQdqExport(prepared_onnx, model, session, policy);
  absl::Status status = onnx.status();
  if (status.ok() && val.size() > 0) {
    absl::StatusOr<engine::ClassifierScore> score = MeasureExport(*onnx, val);
    status = score.status();
    if (score.ok()) {
      result.val_loss = score->loss;
      result.val_accuracy = score->accuracy;
    }
  }
  std::string sha256;
  if (status.ok()) {
    sha256 = Sha256Hex(*onnx);
    status = store_artifact(sha256, *onnx);
  }
  if (!status.ok()) {
    Log(LogLevel::kWarning, "kept policy has no ONNX export",
        {{"job", job_id},
         {"policy_id", policy_id},
         {"error", status.ToString()}});
    return KeptPolicyExport{};
  }
  result.sha256 = std::move(sha256);
  Log(LogLevel::kInfo, "kept policy exported",
      {{"job", job_id},
       {"policy_id", policy_id},
       {"onnx_sha256", result.sha256},
       {"bytes", absl::StrCat(onnx->size())},
       {"val_accuracy", absl::StrFormat("%.4f", result.val_accuracy)}});
  return result;
}

absl::StatusOr<engine::ClassifierScore> MeasureExport(
    absl::string_view onnx, const search::LabeledData& data) {
  MIXQ_ASSIGN_OR_RETURN(std::unique_ptr<engine::Model> exported,
                        engine::Model::FromOnnxBytes(onnx));
  MIXQ_ASSIGN_OR_RETURN(const engine::Tensor outputs,
                        engine::PredictInBatches(*exported, data.inputs,
                                                 engine::kDefaultPredictBatch));
  return engine::ScoreOutputs(outputs, data.labels,
                              data.distill() ? &data.teacher : nullptr);
}

std::string PolicyJson(const storage::JobRecord& job,
                       const std::vector<storage::LayerRecord>& layers,
                       const storage::PolicyRecord& record) {
  v1::PolicyDocument document;
  document.set_job_id(job.id);
  v1::JobSpec spec;
  // The stored spec is the server's own JSON; only its name is wanted here.
  if (google::protobuf::util::JsonStringToMessage(job.spec, &spec).ok()) {
    document.set_job_name(spec.name());
  }
  document.set_model_sha256(job.model_sha256);
  document.set_strategy(job.strategy);
  const v1::Policy policy = ToProto(record, layers);
  *document.mutable_layers() = policy.layers();
  document.set_activation_bits(policy.activation_bits());
  document.set_avg_bits(policy.avg_bits());
  document.set_size_bytes(policy.size_bytes());
  document.set_fp32_size_bytes(job.fp32_size_bytes);
  document.set_bops(policy.bops());
  document.set_accuracy(policy.accuracy());
  document.set_loss(policy.loss());
  // Final policies recorded before exports were kept per policy carry theirs
  // on the job.
  document.set_onnx_sha256(!record.export_sha256.empty() ? record.export_sha256
                           : record.kind == storage::PolicyKind::kFinal
                               ? job.export_sha256
                               : "");
  document.set_policy_id(KeptPolicyName(record));
  document.set_val_accuracy(record.val_accuracy);
  document.set_val_loss(record.val_loss);
  document.set_fp32_val_accuracy(job.fp32_val_accuracy);
  document.set_val_samples(job.val_samples);
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  // Printing a message without Any fields cannot fail.
  (void)google::protobuf::util::MessageToJsonString(document, &json, options);
  return json;
}

absl::StatusOr<storage::PolicyRecord> FindKeptPolicy(
    const storage::Store& store, const storage::JobRecord& job,
    absl::string_view policy_id) {
  if (policy_id.empty() || policy_id == kFinalPolicyId) {
    if (job.state != storage::JobState::kSucceeded) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", job.id, " is ", storage::JobStateName(job.state),
          "; only a succeeded job has a final policy (name a kept policy "
          "with policy_id, e.g. \"step-1\")"));
    }
    MIXQ_ASSIGN_OR_RETURN(std::optional<storage::PolicyRecord> final_policy,
                          store.GetFinalPolicy(job.id));
    if (!final_policy.has_value()) {
      return absl::DataLossError(
          absl::StrCat("job ", job.id, " succeeded but has no final policy"));
    }
    if (final_policy->export_sha256.empty())
      final_policy->export_sha256 = job.export_sha256;
    return *final_policy;
  }
  MIXQ_ASSIGN_OR_RETURN(const PolicyIdParts parts, ParsePolicyId(policy_id));
  MIXQ_ASSIGN_OR_RETURN(std::vector<storage::StepRecord> steps,
                        store.GetSteps(job.id));
  for (storage::StepRecord& step : steps) {
    if (step.step == parts.step) return std::move(step.finetuned);
  }
  return absl::NotFoundError(
      absl::StrCat("policy_id: job ", job.id, " has no step ", parts.step));
}

absl::StatusOr<ExportedDocument> ExportJob(const storage::Store& store,
                                           const std::string& job_id,
                                           absl::string_view format,
                                           absl::string_view policy_id) {
  const bool onnx = format.empty() || format == kOnnxFormat;
  if (!onnx && format != kPolicyJsonFormat) {
    return absl::InvalidArgumentError(
        absl::StrCat("format: \"", format, "\" is not one of \"", kOnnxFormat,
                     "\", \"", kPolicyJsonFormat, "\""));
  }
  MIXQ_ASSIGN_OR_RETURN(storage::JobRecord job, store.GetJob(job_id));
  MIXQ_ASSIGN_OR_RETURN(storage::PolicyRecord policy,
                        FindKeptPolicy(store, job, policy_id));
  // The final policy keeps the plain file names it always had.
  const std::string stem =
      policy.kind == storage::PolicyKind::kFinal
          ? job_id
          : absl::StrCat(job_id, ".", KeptPolicyName(policy));
  ExportedDocument document;
  if (onnx) {
    if (policy.export_sha256.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", job_id, " policy ", policy_id.empty() ? "final" : policy_id,
          " has no ONNX export (its export failed, see the server log, or it "
          "was recorded before mixq kept exports); format \"policy_json\" "
          "still works"));
    }
    MIXQ_ASSIGN_OR_RETURN(document.data,
                          store.GetArtifact(policy.export_sha256));
    MIXQ_RETURN_IF_ERROR(
        CheckStoredArtifact("export", policy.export_sha256, document.data));
    document.sha256 = policy.export_sha256;
    document.filename = absl::StrCat(stem, ".qdq.onnx");
    return document;
  }
  MIXQ_ASSIGN_OR_RETURN(std::vector<storage::LayerRecord> layers,
                        store.GetLayers(job_id));
  document.data = PolicyJson(job, layers, policy);
  document.sha256 = Sha256Hex(document.data);
  document.filename = absl::StrCat(stem, ".policy.json");
  return document;
}

}  // namespace mixq::server
