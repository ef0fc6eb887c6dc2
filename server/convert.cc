#include "server/convert.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "google/protobuf/util/time_util.h"
#include "server/request_limits.h"

namespace mixq::server {
namespace {

using google::protobuf::util::TimeUtil;

void SetTimestamp(int64_t ms, google::protobuf::Timestamp* out) {
  *out = TimeUtil::MillisecondsToTimestamp(ms);
}

}  // namespace

std::string KeptPolicyName(const storage::PolicyRecord& policy) {
  return policy.kind == storage::PolicyKind::kFinal
             ? std::string(kFinalPolicyId)
             : absl::StrCat(kStepPolicyIdPrefix, policy.step);
}

std::string PolicyId(const storage::PolicyRecord& policy) {
  if (policy.export_sha256.empty() ||
      policy.kind == storage::PolicyKind::kCandidate) {
    return "";
  }
  return KeptPolicyName(policy);
}

absl::StatusOr<PolicyIdParts> ParsePolicyId(absl::string_view id) {
  if (id == kFinalPolicyId)
    return PolicyIdParts{storage::PolicyKind::kFinal, 0};
  int step = -1;
  if (absl::ConsumePrefix(&id, kStepPolicyIdPrefix) &&
      absl::SimpleAtoi(id, &step) && step >= 0 && id == absl::StrCat(step)) {
    return PolicyIdParts{storage::PolicyKind::kFinetuned, step};
  }
  return absl::InvalidArgumentError(
      "policy_id: expected \"final\" or \"step-N\" (N >= 0)");
}

v1::JobState ToProto(storage::JobState state) {
  switch (state) {
    case storage::JobState::kQueued:
      return v1::QUEUED;
    case storage::JobState::kRunning:
      return v1::RUNNING;
    case storage::JobState::kSucceeded:
      return v1::SUCCEEDED;
    case storage::JobState::kFailed:
      return v1::FAILED;
    case storage::JobState::kCancelled:
      return v1::CANCELLED;
  }
  return v1::JOB_STATE_UNSPECIFIED;
}

std::optional<storage::JobState> FromProto(v1::JobState state) {
  switch (state) {
    case v1::QUEUED:
      return storage::JobState::kQueued;
    case v1::RUNNING:
      return storage::JobState::kRunning;
    case v1::SUCCEEDED:
      return storage::JobState::kSucceeded;
    case v1::FAILED:
      return storage::JobState::kFailed;
    case v1::CANCELLED:
      return storage::JobState::kCancelled;
    default:
      return std::nullopt;
  }
}

storage::PolicyRecord ToRecord(const search::ScoredPolicy& policy,
                               storage::PolicyKind kind, int step, int rank,
                               bool chosen) {
  storage::PolicyRecord record;
  record.step = step;
  record.kind = kind;
  record.rank = rank;
  record.chosen = chosen;
  record.bits.assign(policy.policy.begin(), policy.policy.end());
  record.avg_bits = policy.avg_bits;
  record.size_bytes = policy.size_bytes;
  record.bops = policy.bops;
  record.activation_bits = policy.activation_bits;
  record.loss = policy.loss;
  record.accuracy = policy.accuracy;
  record.omega = policy.omega;
  record.index = policy.index;
  record.val_loss = policy.val_loss;
  record.val_accuracy = policy.val_accuracy;
  return record;
}

storage::StepRecord ToRecord(const search::StepReport& report) {
  storage::StepRecord step;
  step.step = report.step;
  step.elapsed_seconds = report.elapsed_seconds;
  step.finetune_steps = report.finetune_steps;
  step.node_runs = report.scoring.node_runs;
  step.naive_node_runs = report.scoring.naive_node_runs;
  step.scoring_seconds = report.scoring.seconds;
  step.oracle_omega = report.scoring.oracle_omega;
  for (size_t i = 0; i < report.candidates.size(); ++i) {
    step.candidates.push_back(
        ToRecord(report.candidates[i], storage::PolicyKind::kCandidate,
                 report.step, static_cast<int>(i) + 1, i == 0));
  }
  step.finetuned = ToRecord(report.finetuned, storage::PolicyKind::kFinetuned,
                            report.step, 0, false);
  step.sensitivities.bits.assign(report.sensitivities.bits.begin(),
                                 report.sensitivities.bits.end());
  step.sensitivities.omega = report.sensitivities.omega;
  return step;
}

v1::Policy ToProto(const storage::PolicyRecord& policy,
                   const std::vector<storage::LayerRecord>& layers) {
  v1::Policy out;
  for (size_t l = 0; l < policy.bits.size(); ++l) {
    v1::LayerBits* layer = out.add_layers();
    if (l < layers.size()) layer->set_name(layers[l].name);
    layer->set_bits(policy.bits[l]);
  }
  out.set_avg_bits(policy.avg_bits);
  out.set_size_bytes(policy.size_bytes);
  out.set_bops(static_cast<double>(policy.bops));
  out.set_activation_bits(policy.activation_bits);
  out.set_accuracy(policy.accuracy);
  out.set_loss(policy.loss);
  out.set_omega(policy.omega);
  out.set_index(policy.index);
  out.set_step(policy.step);
  out.set_kind(std::string(storage::PolicyKindName(policy.kind)));
  out.set_rank(policy.rank);
  out.set_chosen(policy.chosen);
  out.set_val_accuracy(policy.val_accuracy);
  out.set_val_loss(policy.val_loss);
  out.set_policy_id(PolicyId(policy));
  return out;
}

v1::Step ToProto(const storage::StepRecord& step,
                 const std::vector<storage::LayerRecord>& layers) {
  v1::Step out;
  out.set_step(step.step);
  for (const auto& candidate : step.candidates)
    *out.add_candidates() = ToProto(candidate, layers);
  *out.mutable_finetuned() = ToProto(step.finetuned, layers);
  out.set_elapsed_seconds(step.elapsed_seconds);
  out.set_finetune_steps(step.finetune_steps);
  out.set_node_runs(step.node_runs);
  out.set_naive_node_runs(step.naive_node_runs);
  out.set_scoring_seconds(step.scoring_seconds);
  out.set_oracle_omega(step.oracle_omega);
  return out;
}

v1::Job ToProto(const storage::JobRecord& job,
                const std::vector<storage::LayerRecord>& layers,
                const v1::JobSpec& spec,
                const std::optional<storage::PolicyRecord>& final_policy) {
  v1::Job out;
  out.set_id(job.id);
  out.set_request_id(job.request_id);
  // Jobs stored before the request limits may hold any length of name or
  // file name: they come back cut to the limits, so no job can outgrow a
  // reply (see JobPage).
  *out.mutable_spec() = spec;
  ClampToRequestLimits(out.mutable_spec());
  out.set_name(out.spec().name());
  out.set_state(ToProto(job.state));
  out.set_error(Excerpt(job.error, kMaxErrorMessageBytes));
  if (job.created_ms > 0) SetTimestamp(job.created_ms, out.mutable_created());
  if (job.started_ms > 0) SetTimestamp(job.started_ms, out.mutable_started());
  if (job.finished_ms > 0)
    SetTimestamp(job.finished_ms, out.mutable_finished());
  out.set_steps_done(job.steps_done);
  out.set_model_sha256(job.model_sha256);
  for (const auto& layer : layers) {
    v1::Layer* l = out.add_layers();
    l->set_name(layer.name);
    l->set_num_weights(layer.num_weights);
    l->set_macs(layer.macs);
  }
  out.set_fp32_size_bytes(job.fp32_size_bytes);
  out.set_val_samples(job.val_samples);
  out.set_val_source(job.val_source);
  out.set_fp32_val_accuracy(job.fp32_val_accuracy);
  out.set_fp32_val_loss(job.fp32_val_loss);
  if (final_policy.has_value())
    *out.mutable_final_policy() = ToProto(*final_policy, layers);
  return out;
}

}  // namespace mixq::server
