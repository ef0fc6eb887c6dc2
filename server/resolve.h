// Re-solving a budget a job never targeted from the per-layer sensitivities
// its search stored after the warm-up (QueryBestPoliciesRequest.resolve), as
// peer tools (AIMET AMP, ModelOpt AutoQuantize) answer a new budget without
// recomputing sensitivities. gRPC-free; thread-safe (reads the store only).
#ifndef MIXQ_SERVER_RESOLVE_H_
#define MIXQ_SERVER_RESOLVE_H_

#include "absl/status/statusor.h"
#include "proto/mixq.pb.h"
#include "storage/store.h"

namespace mixq::server {

// Policy.kind of a re-solved policy.
inline constexpr char kPredictedKind[] = "predicted";

// The least-Ω policy of job `job` (stored with spec `spec`) within the one
// limit `request` sets (max_avg_bits, max_size_bytes or max_bops; BOPs at
// the job's activation bits), each layer within its candidate bits: the
// allocation a "knapsack" job with that budget and the job's seed keeps
// before its fine-tune. Kind kPredictedKind, cost and omega set, accuracies
// and losses NaN, no policy_id. Errors: INVALID_ARGUMENT naming the fields
// for no limit or several, or naming the limit for one below the lowest
// reachable cost (the message gives it); FAILED_PRECONDITION when the job
// has no stored sensitivities; DATA_LOSS when the stored layers or table do
// not fit the spec. Blocks on the store's reads.
absl::StatusOr<v1::Policy> ResolvePolicy(
    const storage::Store& store, const storage::JobRecord& job,
    const v1::JobSpec& spec, const v1::QueryBestPoliciesRequest& request);

}  // namespace mixq::server

#endif  // MIXQ_SERVER_RESOLVE_H_
