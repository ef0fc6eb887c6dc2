// Jobs started from another job's warm-up (JobSpec.from_job): the spec such
// a job runs is the submitted one with what its source job fixed filled in.
// gRPC-free; pure functions.
#ifndef MIXQ_SERVER_FROM_JOB_H_
#define MIXQ_SERVER_FROM_JOB_H_

#include "absl/status/statusor.h"
#include "proto/mixq.pb.h"
#include "storage/store.h"

namespace mixq::server {

// `spec` (which names source.id in from_job) with the source job's model,
// inputs and labels (by their SHA-256, filenames kept), normalisation,
// sample counts, validation fields, batch size, learning rate and
// activation bits, and warmup_steps 0: the spec the new job runs and
// stores. `source_spec` is the source job's stored spec. INVALID_ARGUMENT
// naming the field for a data field set in `spec`, a session setting that
// differs from the source's, or warmup_steps set ("spec.model: must be
// unset with from_job: ...").
absl::StatusOr<v1::JobSpec> ResolveFromJob(const v1::JobSpec& spec,
                                           const storage::JobRecord& source,
                                           const v1::JobSpec& source_spec);

}  // namespace mixq::server

#endif  // MIXQ_SERVER_FROM_JOB_H_
