// JobManager: the service's gRPC-free core. It validates and stores submitted
// jobs, runs them on a bounded pool of worker threads (never on RPC threads),
// records every step in the Store, answers queries, and publishes progress
// events to subscribers (WatchJob streams).
//
// A full disk never fails an accepted job: a running job's writes (its start,
// steps, checkpoints, exports and end) that fail for lack of space are
// retried with back-off until they succeed or the manager shuts down, and
// subscribers hear of a state only once the store holds it. Requests that
// would add data (Submit, uploads) fail with RESOURCE_EXHAUSTED meanwhile.
//
// A job found running at Start was running when the previous process died.
// One that was running at two such deaths in a row, without recording a step
// in between, is a poison job: it is failed ("quarantined") instead of run,
// so that it cannot take the server down forever.
//
// Thread-safety: all methods are thread-safe. Submit blocks while it decodes
// and validates the model and data.
#ifndef MIXQ_SERVER_JOB_MANAGER_H_
#define MIXQ_SERVER_JOB_MANAGER_H_

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "proto/mixq.pb.h"
#include "server/artifacts.h"
#include "server/export.h"
#include "server/job_spec.h"
#include "storage/store.h"

namespace mixq::server {

struct JobManagerOptions {
  int workers = 1;      // jobs that run at once
  int max_queued = 64;  // queued jobs beyond which Submit is RESOURCE_EXHAUSTED
  // Roots under which DataSource.server_path may point; empty = server paths
  // are refused.
  std::vector<std::string> allow_paths;
  size_t max_file_bytes = size_t{1} << 30;      // per server-side file
  size_t max_artifact_bytes = size_t{1} << 30;  // per uploaded artifact
  int engine_threads = 0;  // engine threads per running job; 0 = all cores
  // EvaluatePolicy requests that may run at once (each on its RPC thread);
  // beyond, Evaluate is RESOURCE_EXHAUSTED.
  int max_evaluations = 2;
};

class JobManager {
 public:
  // Receives a job's events, in order. OnEvent is called from worker or RPC
  // threads, sometimes with the manager's lock held: it must not block and
  // must not call back into the manager.
  class Subscriber {
   public:
    virtual ~Subscriber() = default;
    virtual void OnEvent(const v1::JobEvent& event) = 0;
  };

  struct SubmitResult {
    v1::Job job;
    bool existing = false;
  };

  // Borrows `store`, which must outlive the manager.
  JobManager(storage::Store* store, JobManagerOptions options);
  // Calls Shutdown().
  ~JobManager();
  JobManager(const JobManager&) = delete;
  JobManager& operator=(const JobManager&) = delete;

  // Re-queues jobs a previous process left running (first; each resumes
  // after its last checkpointed step, bit for bit, or starts over without a
  // usable checkpoint) or queued, and starts the workers. A running job
  // whose last kQuarantineStarts starts all ended with the process dying
  // is marked FAILED instead (kQuarantineMessage).
  absl::Status Start();
  // Stops the workers: running jobs stop between mini-batches (or scored
  // candidates) and go back to queued, to resume from their last checkpoint
  // at the next Start. Blocks until the workers exit. Idempotent.
  void Shutdown();

  // Validates, stores and queues a job. INVALID_ARGUMENT naming the field,
  // PERMISSION_DENIED for a server path outside the allowed roots,
  // RESOURCE_EXHAUSTED when the queue is full (checked, and a place
  // reserved, before the model is read) or the disk is.
  absl::StatusOr<SubmitResult> Submit(const v1::SubmitJobRequest& request);
  // NOT_FOUND for an unknown id; INVALID_ARGUMENT for a malformed one.
  absl::StatusOr<v1::Job> GetJob(const std::string& job_id) const;
  absl::StatusOr<v1::ListJobsResponse> ListJobs(
      const v1::ListJobsRequest& request) const;
  absl::StatusOr<v1::GetResultsResponse> GetResults(
      const std::string& job_id) const;
  // The ranked exportable policies, or (request.resolve) the one policy a
  // new limit predicts from the job's stored sensitivities (ResolvePolicy;
  // INVALID_ARGUMENT with same_model or model_sha256).
  absl::StatusOr<v1::QueryBestPoliciesResponse> QueryBestPolicies(
      const v1::QueryBestPoliciesRequest& request) const;
  // The job's (or model's) Pareto front of kept policies (ParetoFront) with
  // the FP32 point. INVALID_ARGUMENT for a malformed or doubled selector;
  // NOT_FOUND for an unknown job, or a model no job used.
  absl::StatusOr<v1::GetParetoFrontResponse> GetParetoFront(
      const v1::GetParetoFrontRequest& request) const;
  // Runs an EvaluatePolicy request in the calling thread (synchronous).
  // INVALID_ARGUMENT naming the field, PERMISSION_DENIED for a server path
  // outside the allowed roots, RESOURCE_EXHAUSTED when
  // options.max_evaluations are running already.
  absl::StatusOr<v1::EvaluatePolicyResponse> Evaluate(
      const v1::EvaluatePolicyRequest& request) const;
  // Starts receiving an uploaded artifact (UploadArtifact), within
  // options.max_artifact_bytes; errors as ArtifactUpload::Begin. The upload
  // borrows the manager's store.
  absl::StatusOr<std::unique_ptr<ArtifactUpload>> BeginUpload(
      const v1::ArtifactInfo& info);
  // A succeeded job's export (ExportModel); errors as ExportJob, and
  // INVALID_ARGUMENT for a malformed job id.
  absl::StatusOr<ExportedDocument> Export(
      const v1::ExportModelRequest& request) const;
  // Cancels a queued job at once, or asks a running one to stop between
  // steps (its state becomes CANCELLED when it does). FAILED_PRECONDITION for
  // a finished job; RESOURCE_EXHAUSTED (the job stays queued) when the disk
  // is full.
  absl::StatusOr<v1::Job> Cancel(const std::string& job_id);

  // Subscribes to a job's events. The subscriber first receives (and the
  // call returns) the job's current state; every later event follows in
  // order, none missed. The manager
  // keeps only a weak reference: a subscriber is dropped when its last owner
  // releases it, or by Unsubscribe.
  absl::StatusOr<v1::JobEvent> Subscribe(
      const std::string& job_id, const std::shared_ptr<Subscriber>& subscriber);
  void Unsubscribe(const std::string& job_id, const Subscriber* subscriber);

  // Jobs waiting in the queue.
  int queued() const;
  // Writes of running jobs now waiting for disk space (see the class
  // comment): non-zero while the disk is full.
  int waiting_for_disk() const;

  // Starts in a row that ended with the process dying after which a job is
  // quarantined, and the error it then ends with.
  static constexpr int kQuarantineStarts = 2;
  static constexpr absl::string_view kQuarantineMessage =
      "stopped the server twice; quarantined";

 private:
  void WorkerLoop();
  void RunJob(const std::string& job_id, const std::atomic<bool>& cancel);
  absl::Status RunSearch(const storage::JobRecord& job,
                         const std::atomic<bool>& cancel);
  // Records the end of a job that did not succeed (waiting for disk space as
  // WriteUntilStored does) and tells subscribers once it is recorded.
  void EndJob(const std::string& job_id, storage::JobState state,
              const std::string& error);
  // Tells subscribers that a job ended (as recorded in the store).
  void PublishEnd(const std::string& job_id, storage::JobState state,
                  const std::string& error);
  // Runs `write` (a store write for job `job_id`; `what` names it in logs)
  // until it succeeds or fails with something other than a full disk,
  // waiting between attempts from kFirstDiskRetry, doubling up to
  // kMaxDiskRetry. CANCELLED when the manager shuts down while it waits.
  // Blocks; call from worker threads only.
  absl::Status WriteUntilStored(const std::string& job_id,
                                absl::string_view what,
                                absl::FunctionRef<absl::Status()> write);
  void Publish(const v1::JobEvent& event);
  absl::StatusOr<std::string> ReadSource(const v1::DataSource& source,
                                         absl::string_view field) const;
  // The spec's model, inputs, labels and (if named) validation files.
  absl::StatusOr<JobFiles> ReadFiles(const v1::JobSpec& spec) const;
  // The exportable policies of job `job_id`, or (model_sha256 non-empty) of
  // every job on that model, ranked as Store::QueryBestPolicies does.
  absl::StatusOr<std::vector<v1::Policy>> RankedPolicies(
      const std::string& job_id, const std::string& model_sha256,
      const storage::PolicyLimits& limits, int32_t top_k) const;
  // INVALID_ARGUMENT unless exactly one of a well-formed job id and a
  // well-formed model SHA-256 is given.
  static absl::Status CheckPolicySelector(const std::string& job_id,
                                          const std::string& model_sha256);
  absl::StatusOr<v1::JobSpec> LoadSpec(const storage::JobRecord& job) const;
  // `spec`, or with from_job the spec ResolveFromJob makes of it; NOT_FOUND
  // for an unknown source job, FAILED_PRECONDITION when it has no warm
  // start yet.
  absl::StatusOr<v1::JobSpec> SpecToRun(const v1::JobSpec& spec) const;
  absl::StatusOr<v1::Job> BuildJob(const storage::JobRecord& job) const;
  static absl::Status CheckJobId(const std::string& job_id);

  storage::Store* const store_;
  const JobManagerOptions options_;

  mutable absl::Mutex mu_;
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);
  // Places in the queue held by Submit calls still validating and storing
  // their job: counted against options.max_queued with queue_.
  int reserved_ ABSL_GUARDED_BY(mu_) = 0;
  int waiting_for_disk_ ABSL_GUARDED_BY(mu_) = 0;
  // Cancel flags of running jobs.
  std::map<std::string, std::shared_ptr<std::atomic<bool>>> running_
      ABSL_GUARDED_BY(mu_);
  // The latest event of each running job (the snapshot new watchers get).
  std::map<std::string, v1::JobEvent> latest_ ABSL_GUARDED_BY(mu_);
  std::multimap<std::string, std::weak_ptr<Subscriber>> subscribers_
      ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  mutable int evaluations_ ABSL_GUARDED_BY(mu_) = 0;  // running Evaluate calls
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;  // touched only by Start/Shutdown
  absl::Mutex lifecycle_mu_;          // serialises Start and Shutdown
};

}  // namespace mixq::server

#endif  // MIXQ_SERVER_JOB_MANAGER_H_
