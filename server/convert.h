// Conversions between the search's results, the store's records and the API's
// protos. Pure functions; thread-safe.
#ifndef MIXQ_SERVER_CONVERT_H_
#define MIXQ_SERVER_CONVERT_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/mixq.pb.h"
#include "search/progressive.h"
#include "storage/store.h"

namespace mixq::server {

// A kept policy's id (v1::Policy.policy_id): "final", or "step-N" for the
// policy kept at step N; empty for a policy without an exported model
// (candidates, and policies recorded before exports were kept per policy).
inline constexpr absl::string_view kFinalPolicyId = "final";
inline constexpr absl::string_view kStepPolicyIdPrefix = "step-";
std::string PolicyId(const storage::PolicyRecord& policy);
// The id a kept (finetuned or final) policy has or would have with an
// export: "final" or "step-N".
std::string KeptPolicyName(const storage::PolicyRecord& policy);

// The kind and step a policy id names (step 0 for "final").
// INVALID_ARGUMENT naming policy_id for anything else.
struct PolicyIdParts {
  storage::PolicyKind kind;
  int step = 0;
};
absl::StatusOr<PolicyIdParts> ParsePolicyId(absl::string_view id);

v1::JobState ToProto(storage::JobState state);
// JOB_STATE_UNSPECIFIED maps to nullopt (no filter).
std::optional<storage::JobState> FromProto(v1::JobState state);

storage::PolicyRecord ToRecord(const search::ScoredPolicy& policy,
                               storage::PolicyKind kind, int step, int rank,
                               bool chosen);
storage::StepRecord ToRecord(const search::StepReport& report);

// `layers` names the policy's bits (same order).
v1::Policy ToProto(const storage::PolicyRecord& policy,
                   const std::vector<storage::LayerRecord>& layers);
v1::Step ToProto(const storage::StepRecord& step,
                 const std::vector<storage::LayerRecord>& layers);

// `spec` is the stored spec (already parsed); `final_policy` is set once the
// job succeeded. The spec's strings come back within the request limits and
// the error within kMaxErrorMessageBytes (request_limits.h), cut with "…".
v1::Job ToProto(const storage::JobRecord& job,
                const std::vector<storage::LayerRecord>& layers,
                const v1::JobSpec& spec,
                const std::optional<storage::PolicyRecord>& final_policy);

}  // namespace mixq::server

#endif  // MIXQ_SERVER_CONVERT_H_
