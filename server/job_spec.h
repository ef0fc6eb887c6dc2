// Turning a submitted JobSpec into what a search runs on, with every problem
// of the submitted data reported as INVALID_ARGUMENT naming the spec field
// (RESOURCE_EXHAUSTED, also naming it, for a model over the engine's size
// limits: see engine/validate.h; the server's own failures keep their codes:
// see SpecErrorCode). Used both when a job is
// submitted (so bad input is refused before it is queued) and when a worker
// runs it. gRPC-free; thread-safe (pure functions).
#ifndef MIXQ_SERVER_JOB_SPEC_H_
#define MIXQ_SERVER_JOB_SPEC_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/loss.h"
#include "engine/model.h"
#include "proto/mixq.pb.h"
#include "search/evaluate.h"
#include "search/progressive.h"
#include "search/qat.h"

namespace mixq::server {

// The bytes of a job's files; the validation pair is empty unless the spec
// names validation files.
struct JobFiles {
  std::string model;
  std::string inputs;
  std::string labels;
  std::string val_inputs;
  std::string val_labels;
};

// The default validation hold-out of `samples` samples:
// spec_defaults::kValidationPercent of them, at least one.
int64_t DefaultValidationSize(int64_t samples);

// A job ready to run: its model, data split, and search options.
struct PreparedJob {
  std::unique_ptr<engine::Model> model;
  // The submitted model after search::PrepareModel (BatchNormalization
  // folded, nodes named): the bytes `model` was imported from, which the
  // QDQ export rewrites.
  std::string prepared_onnx;
  search::LabeledData calib;
  search::LabeledData train;
  // Never trained or scored on: measures kept policies (empty when the
  // split is ValidationSplit::kFilesOnly and the spec names no files).
  search::LabeledData val;
  std::string val_source;  // for Job.val_source
  search::ProgressiveOptions options;
  // What calib, train and val are scored by; with kDistill their teacher
  // outputs are set by AttachTeachers (not by PrepareJob: submitting does
  // not run the model).
  engine::Objective objective = engine::Objective::kCrossEntropy;
  // `options` resolved against the model: each layer's candidate bits.
  search::CandidateBits candidate_bits;
};

// The code of a spec error made from `code`, an error of the engine or the
// search on the job's model, data or options: the codes that describe the
// submitted data (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE,
// NOT_FOUND, ALREADY_EXISTS, UNIMPLEMENTED) become INVALID_ARGUMENT; the
// others (RESOURCE_EXHAUSTED for a size limit, INTERNAL, DATA_LOSS, ...)
// stay as they are.
absl::StatusCode SpecErrorCode(absl::StatusCode code);
// `status` with SpecErrorCode's code and its message prefixed with `field`
// ("spec.model: ...").
absl::Status SpecFieldError(absl::string_view field,
                            const absl::Status& status);

// `spec` as the job runs it: every unset search option set to its default
// (proto/spec_defaults.h; warmup_steps and final_finetune_steps to
// finetune_steps) and the objective resolved (ResolveObjective), so the
// stored Job.spec records the parameters used. Options the job's strategy
// does not read (selection, hutchinson_samples) are filled too. Errors are
// ResolveObjective's.
absl::Status FillSpecDefaults(v1::JobSpec* spec);

// Search options with the documented defaults (proto/spec_defaults.h) filled
// in. INVALID_ARGUMENT naming the field ("spec.search.bits: ...",
// "spec.search.layers[1].bits:
// ...", "spec.search.activation_bits: ...") when unusable on any model.
absl::StatusOr<search::ProgressiveOptions> ToProgressiveOptions(
    const v1::SearchOptions& search);

// Loads the model and data and checks that everything fits together: model
// imports, inputs match the model input, labels match the inputs' count and
// the model's classes (labels optional with the distill objective:
// ResolveObjective), the model runs at any batch (a fixed-batch export is
// refused with how to export it with a dynamic batch), calib_size leaves a
// fine-tuning set, every layer named
// in spec.search.layers is a quantizable layer of the model, the budget is
// reachable with every layer at its lowest candidate bits (the message gives
// the lowest reachable cost; "spec.search.layers: every quantizable layer is
// pinned ..." when no layer can move). Errors are INVALID_ARGUMENT naming the
// field.
absl::StatusOr<PreparedJob> PrepareJob(const v1::JobSpec& spec,
                                       const JobFiles& files);

// The job's objective: spec.objective, or when it is empty cross_entropy if
// spec.labels is set and distill otherwise. INVALID_ARGUMENT naming
// spec.objective for an unknown name, or cross_entropy without labels.
absl::StatusOr<engine::Objective> ResolveObjective(const v1::JobSpec& spec);

// The most memory the distill objective's FP32 outputs may take for one
// job (calibration, fine-tuning and validation samples together).
inline constexpr int64_t kMaxTeacherBytes = int64_t{1} << 31;

// With the distill objective, RESOURCE_EXHAUSTED naming spec.max_samples if
// the FP32 outputs of the job's samples would take more than
// kMaxTeacherBytes (a model whose output is much larger than its input,
// e.g. an upsampler, multiplies the data's memory); checked at submit,
// before any of them is computed. OK for cross_entropy.
absl::Status CheckTeacherFits(const PreparedJob& job);

// With the distill objective, sets the teacher outputs (the FP32 model's, on
// each sample: search::AttachTeacher) of job->calib, train and val; a no-op
// for cross_entropy. Blocks for one forward pass over the job's data;
// errors name spec.model.
absl::Status AttachTeachers(PreparedJob* job);

// Where the validation set comes from when the spec names no files.
enum class ValidationSplit {
  kHoldOut,  // spec.val_size, else the default share, from the samples' end
  // spec.val_size if set, else none (EvaluatePolicy: the non-calibration
  // samples are what it measures)
  kFilesOnly,
};

// The model and data part of PrepareJob (spec.search is not read; `options`
// and `candidate_bits` stay empty): calib = the first calib_size samples;
// val = the validation files, or (kHoldOut) the last val_size samples or
// the default share of them; train = the samples between. Validation files
// are decoded, normalised and checked like inputs and labels (errors name
// spec.val_inputs / spec.val_labels). INVALID_ARGUMENT for only one
// validation file, both files and val_size, a negative val_size, or a
// split that leaves no fine-tuning sample.
absl::StatusOr<PreparedJob> LoadModelAndData(const v1::JobSpec& spec,
                                             const JobFiles& files,
                                             ValidationSplit split);

// An EvaluatePolicy request ready to run: `job.calib` calibrates or
// fine-tunes; `job.val` (validation files, or the last val_size samples) is
// evaluated when the spec sets one, else `job.train` (the samples after
// calib_size).
struct PreparedEvaluation {
  PreparedJob job;
  search::Policy policy;
  search::PolicyEvalOptions options;
};

// INVALID_ARGUMENT naming the field ("layers[0].name: ...", "mode: ...").
absl::StatusOr<PreparedEvaluation> PrepareEvaluation(
    const v1::EvaluatePolicyRequest& request, const JobFiles& files);

}  // namespace mixq::server

#endif  // MIXQ_SERVER_JOB_SPEC_H_
