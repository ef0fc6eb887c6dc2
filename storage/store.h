// Store: mixq's persistent state in one SQLite database (WAL mode): content-
// addressed artifacts, jobs, the layers of each job's model, search steps, and
// every evaluated policy (ranked candidates, fine-tuned step policies, final).
// A write that fails for lack of space carries storage/errors.h's disk-full
// mark and changes nothing.
//
// Thread-safety: all methods are thread-safe. Every write goes through one
// writer connection (SQLite 3.40's WAL-reset bug forbids concurrent writers)
// inside a `BEGIN IMMEDIATE` transaction; reads use a separate read-only
// connection. Writes run one at a time, as do reads (each read method sees
// one consistent snapshot); a read never waits for a write. Methods block on
// disk I/O.
//
// Metrics are stored as SQLite REALs; SQLite has no NaN, so a NaN metric is
// stored as NULL and read back as NaN.
#ifndef MIXQ_STORAGE_STORE_H_
#define MIXQ_STORAGE_STORE_H_

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mixq::storage {

enum class JobState {
  kQueued = 0,
  kRunning = 1,
  kSucceeded = 2,
  kFailed = 3,
  kCancelled = 4
};

// The WAL file's size the store keeps after it is reset (SQLite's
// journal_size_limit): a large transaction (a checkpoint) grows the file,
// and the next write after the WAL is checkpointed shrinks it to this.
inline constexpr int64_t kWalSizeLimitBytes = int64_t{64} << 20;

// "queued", "running", "succeeded", "failed", "cancelled".
absl::string_view JobStateName(JobState state);
bool IsTerminal(JobState state);

struct JobRecord {
  std::string id;          // server-chosen, unique
  std::string request_id;  // client-chosen idempotency key; may be empty
  std::string spec;        // opaque to the store (the server keeps JSON here)
  std::string model_sha256;
  std::string inputs_sha256;
  std::string labels_sha256;
  JobState state = JobState::kQueued;
  std::string error;       // set when failed/cancelled
  int64_t created_ms = 0;  // Unix epoch milliseconds; 0 = unset
  int64_t started_ms = 0;
  int64_t finished_ms = 0;
  int32_t steps_done = 0;      // search steps recorded so far
  double fp32_size_bytes = 0;  // the model's size with every parameter in FP32
  std::string strategy = "progressive";  // the search strategy's name
  // SHA-256 of the finished job's exported QDQ ONNX model (an artifact);
  // empty when none.
  std::string export_sha256;
  // The validation set: its size and where it came from (for people), and
  // the FP32 model's figures on it (NaN until SetFp32Validation).
  int32_t val_samples = 0;
  std::string val_source;
  double fp32_val_loss = std::numeric_limits<double>::quiet_NaN();
  double fp32_val_accuracy = std::numeric_limits<double>::quiet_NaN();
  // Starts (StartJob) since the job last recorded a step (AppendStep) or
  // was stopped cleanly (StopJob). A job found kRunning when a process
  // starts was running when the last one died: this many starts in a row
  // ended so (CreateJob ignores it and stores 0).
  int32_t unclean_starts = 0;
};

// A running job's search state after its last recorded step (opaque to the
// store: the search serializes it), from which the job resumes.
struct CheckpointRecord {
  int32_t step = 0;
  std::string state;
};

// One quantizable layer of a job's model, in the model's order.
struct LayerRecord {
  std::string name;
  int64_t num_weights = 0;
  int64_t macs = 0;  // multiply-accumulates per sample; 0 = unknown
};

enum class PolicyKind { kCandidate = 0, kFinetuned = 1, kFinal = 2 };
absl::string_view PolicyKindName(PolicyKind kind);  // "candidate", ...

// An evaluated bit-width assignment. `bits` has one entry per job layer.
struct PolicyRecord {
  int32_t step = 0;  // search step (0 = warm-up)
  PolicyKind kind = PolicyKind::kCandidate;
  int32_t rank = 0;     // 1-based rank within its step (candidates), else 0
  bool chosen = false;  // the candidate the step kept
  std::vector<int32_t> bits;
  double avg_bits = 0;    // parameter-weighted mean weight bits
  double size_bytes = 0;  // model size at these bits
  // Bit operations per sample at these bits (exact); 0 = unknown (policies
  // recorded before schema version 2).
  int64_t bops = 0;
  // Bits of the quantized layers' inputs (32: float); 0 = unknown (policies
  // recorded before schema version 3).
  int32_t activation_bits = 0;
  double loss = 0;      // calibration loss
  double accuracy = 0;  // calibration top-1 accuracy in [0, 1]
  double omega = 0;     // Hessian-weighted perturbation Ω (0 if not scored)
  double index = 0;     // performance index (0 if not scored)
  // Kept policies: validation loss and accuracy (NaN: not measured), and the
  // SHA-256 of the exported model they were measured on (an artifact; empty
  // when none).
  double val_loss = std::numeric_limits<double>::quiet_NaN();
  double val_accuracy = std::numeric_limits<double>::quiet_NaN();
  std::string export_sha256;
};

// Per-layer sensitivities Ω_l(b) measured at a step (the warm-up's): the
// table a new budget is re-solved from. Every job layer (model order) has a
// value at every bit-width of `bits`.
struct SensitivityRecord {
  std::vector<int32_t> bits;               // distinct, each in 1..32
  std::vector<std::vector<double>> omega;  // omega[layer][column of bits]

  bool empty() const { return bits.empty(); }
};

// One search step: its ranked candidates and the policy it kept, evaluated
// after the step's fine-tune.
struct StepRecord {
  int32_t step = 0;
  std::vector<PolicyRecord> candidates;  // kind kCandidate, ranked
  PolicyRecord finetuned;                // kind kFinetuned
  double elapsed_seconds = 0;            // wall time of the step
  int32_t finetune_steps = 0;            // fine-tune steps the step ran
  // Scoring work (progressive): graph nodes run, and what a full forward
  // pass per candidate would have run; 0 = unknown.
  int64_t node_runs = 0;
  int64_t naive_node_runs = 0;
  double scoring_seconds = 0;
  double oracle_omega = 0;  // least Ω at the kept policy's cost
  // Written by AppendStep when not empty (the warm-up's table); GetSteps
  // leaves it empty: read it with GetSensitivities.
  SensitivityRecord sensitivities;
};

// A policy with the job that produced it (QueryBestPoliciesForModel).
struct JobPolicy {
  std::string job_id;
  std::string strategy;
  PolicyRecord policy;
};

// Cost limits for QueryBestPolicies; a limit <= 0 means none.
struct PolicyLimits {
  double max_avg_bits = 0;
  double max_size_bytes = 0;
  // A policy of unknown BOPs (0) never meets a BOPs limit.
  double max_bops = 0;
};

struct ListJobsOptions {
  std::optional<JobState> state;  // filter
  int32_t limit = 100;            // newest first
  // Non-empty: only the jobs listed after this one (the next page).
  std::string after_job_id;
};

class Store {
 public:
  // Opens (creating if needed) the database at `path`, enables WAL, checks
  // its integrity (PRAGMA quick_check), and runs pending schema migrations
  // (PRAGMA user_version). FAILED_PRECONDITION if the file is not a mixq
  // database or is newer than this binary; DATA_LOSS if it is corrupt (the
  // message quotes SQLite's first finding and says to restore a backup).
  // Error messages name `path`.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& path);

  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Schema version after migrations.
  int schema_version() const;

  // Stores `data` under its SHA-256 `sha256` (idempotent: a hash already
  // stored is not rewritten; the data is not re-hashed). INVALID_ARGUMENT if
  // `sha256` is empty.
  absl::Status PutArtifact(const std::string& sha256, absl::string_view data);
  // NOT_FOUND if absent.
  absl::StatusOr<std::string> GetArtifact(const std::string& sha256) const;
  // The stored artifact's size in bytes, or nullopt if absent (the blob is
  // not read).
  absl::StatusOr<std::optional<int64_t>> ArtifactSize(
      const std::string& sha256) const;
  // Drops a stored artifact (a corrupt one: a later PutArtifact stores the
  // bytes afresh). Absent is not an error.
  absl::Status DeleteArtifact(const std::string& sha256);
  // The largest artifact PutArtifact can store: SQLite's length limit less
  // the rest of the row.
  int64_t max_artifact_bytes() const;

  // Inserts a new job and its layers. ALREADY_EXISTS if the id, or a
  // non-empty request_id, is taken; INVALID_ARGUMENT if the id is empty.
  // Layers are stored in the given order.
  absl::Status CreateJob(const JobRecord& job,
                         const std::vector<LayerRecord>& layers);
  // NOT_FOUND if absent.
  absl::StatusOr<JobRecord> GetJob(const std::string& id) const;
  // The job created with `request_id`, if any (nullopt for an empty one).
  absl::StatusOr<std::optional<JobRecord>> FindJobByRequestId(
      const std::string& request_id) const;
  // Newest first (created_ms, then insertion order). INVALID_ARGUMENT if
  // options.limit <= 0. An after_job_id that names no job lists nothing.
  absl::StatusOr<std::vector<JobRecord>> ListJobs(
      const ListJobsOptions& options) const;
  // Every job whose model has SHA-256 `model_sha256`, newest first (none
  // for an unknown hash).
  absl::StatusOr<std::vector<JobRecord>> ListJobsForModel(
      const std::string& model_sha256) const;
  // The job's layers in model order. NOT_FOUND if the job is absent.
  absl::StatusOr<std::vector<LayerRecord>> GetLayers(
      const std::string& job_id) const;

  // Sets the job's state and error, and those of started_ms / finished_ms
  // that are non-zero (0 keeps the stored value). A terminal state drops the
  // job's checkpoint. NOT_FOUND if absent.
  absl::Status UpdateJobState(const std::string& id, JobState state,
                              const std::string& error, int64_t started_ms,
                              int64_t finished_ms);

  // Marks a job kRunning (started_ms set) and counts the start in
  // unclean_starts, in one transaction: called before the job's work begins,
  // so that a process that dies running it leaves the count behind.
  // NOT_FOUND if absent.
  absl::Status StartJob(const std::string& id, int64_t started_ms);
  // Puts a job that stopped cleanly (shutdown) back to kQueued, with
  // unclean_starts 0. NOT_FOUND if absent.
  absl::Status StopJob(const std::string& id);

  // Caps the database at `max_pages` pages (PRAGMA max_page_count; never
  // below its current size, which SQLite keeps instead): a write that needs
  // more fails as a full disk does (storage/errors.h). Returns the cap in
  // effect. For tests of a full disk, and as a size quota. INVALID_ARGUMENT
  // unless max_pages > 0.
  absl::StatusOr<int64_t> SetMaxPageCount(int64_t max_pages);

  // Records the FP32 model's loss and accuracy on the job's validation set.
  // NOT_FOUND if the job is absent.
  absl::Status SetFp32Validation(const std::string& job_id, double loss,
                                 double accuracy);

  // Records a step atomically (its candidates and fine-tuned policy) and sets
  // the job's steps_done to step.step (and unclean_starts to 0: progress). A
  // non-empty `checkpoint` replaces the job's checkpoint in the same
  // transaction (as of step.step), so a crash leaves either both or neither;
  // step 0's checkpoint is also kept as the job's warm start (GetWarmStart).
  // ALREADY_EXISTS if recorded before; NOT_FOUND if the job is absent;
  // INVALID_ARGUMENT unless every candidate has kind kCandidate, the fine-tuned
  // policy kind kFinetuned, all of them step step.step and one bit-width per
  // job layer, and unless non-empty sensitivities have distinct bits in 1..32
  // and one row of one value per bit-width for every job layer.
  absl::Status AppendStep(const std::string& job_id, const StepRecord& step,
                          absl::string_view checkpoint = {});
  // The job's latest checkpoint, if any. NOT_FOUND if the job is absent.
  absl::StatusOr<std::optional<CheckpointRecord>> GetCheckpoint(
      const std::string& job_id) const;
  // Records the final policy and marks the job succeeded (error cleared,
  // finished_ms set, export_sha256 recorded, the checkpoint dropped),
  // atomically. NOT_FOUND if the job is absent; ALREADY_EXISTS if it has a
  // final policy; INVALID_ARGUMENT unless the policy has kind kFinal and one
  // bit-width per job layer.
  absl::Status FinishJob(const std::string& job_id,
                         const PolicyRecord& final_policy, int64_t finished_ms,
                         const std::string& export_sha256 = "");
  // The checkpoint AppendStep recorded with the job's step 0 (its state
  // after the warm-up), kept when the job ends: what a job started from it
  // resumes (JobSpec.from_job). nullopt if step 0 was recorded without one
  // (or before schema version 7). NOT_FOUND if the job is absent.
  absl::StatusOr<std::optional<std::string>> GetWarmStart(
      const std::string& job_id) const;
  // Deletes a job's steps, policies and sensitivities after step
  // `keep_through`, and its checkpoint if that is of a later step; without
  // keep_through, all of them, the checkpoint and the warm start (also
  // dropped for a keep_through below 0). Sets steps_done to the last
  // step kept (0 if none): used when a job resumes from its checkpoint
  // (keep_through = its step; -1 for a warm-up interrupted) or starts over. The
  // final policy, if any, goes too. NOT_FOUND if the job is absent.
  absl::Status ResetJobResults(
      const std::string& job_id,
      std::optional<int32_t> keep_through = std::nullopt);
  // Replaces the job's checkpoint with `state`, a search stopped after step
  // `step` (-1: before any), without recording a step: a shutdown's
  // checkpoint from inside a fine-tune. NOT_FOUND if the job is absent;
  // INVALID_ARGUMENT for an empty state or a step below -1.
  absl::Status SaveCheckpoint(const std::string& job_id, int32_t step,
                              absl::string_view state);

  // All steps of a job in order, candidates ranked. NOT_FOUND if the job is
  // absent (here and in GetFinalPolicy and QueryBestPolicies).
  absl::StatusOr<std::vector<StepRecord>> GetSteps(
      const std::string& job_id) const;
  // The sensitivities stored with the job's earliest step that has some
  // (its warm-up), columns highest bits first; nullopt when none is stored
  // (the job has not finished its warm-up, or ran before schema version 6).
  // DATA_LOSS for a stored table with a missing entry.
  absl::StatusOr<std::optional<SensitivityRecord>> GetSensitivities(
      const std::string& job_id) const;
  // The final policy, if the job finished.
  absl::StatusOr<std::optional<PolicyRecord>> GetFinalPolicy(
      const std::string& job_id) const;

  // Up to `top_k` distinct bit assignments of the job within every limit
  // of `limits` (avg_bits, size_bytes, bops; each inclusive), best first:
  // validation accuracy descending (unmeasured last), then calibration
  // accuracy descending, then calibration loss ascending. Only policies with
  // an exported model (export_sha256) count: what is ranked can be
  // downloaded. For an assignment kept several times the best is returned;
  // ties go to the earlier recorded. INVALID_ARGUMENT if top_k <= 0 or a
  // limit is NaN.
  absl::StatusOr<std::vector<PolicyRecord>> QueryBestPolicies(
      const std::string& job_id, const PolicyLimits& limits,
      int32_t top_k) const;
  // The same across every job whose model has SHA-256 `model_sha256` (any
  // strategy): each bit assignment once, at its best evaluation in any job.
  // Accuracies are each job's own: comparable when the jobs share their
  // validation data. An unknown hash gives no policies (not an error);
  // INVALID_ARGUMENT as QueryBestPolicies, or for an empty hash.
  absl::StatusOr<std::vector<JobPolicy>> QueryBestPoliciesForModel(
      const std::string& model_sha256, const PolicyLimits& limits,
      int32_t top_k) const;

  struct Impl;

 private:
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mixq::storage

#endif  // MIXQ_STORAGE_STORE_H_
