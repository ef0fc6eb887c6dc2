// Turning a submitted JobSpec into what a search runs on, with every problem
// reported as INVALID_ARGUMENT naming the spec field (RESOURCE_EXHAUSTED,
// also naming it, for a model over the engine's size limits: see
// engine/validate.h). Used both when a job is
// submitted (so bad input is refused before it is queued) and when a worker
// runs it. gRPC-free; thread-safe (pure functions).
#ifndef MIXQ_SERVER_JOB_SPEC_H_
#define MIXQ_SERVER_JOB_SPEC_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/model.h"
#include "proto/mixq.pb.h"
#include "search/evaluate.h"
#include "search/progressive.h"
#include "search/qat.h"

namespace mixq::server {

// The bytes of a job's three files.
struct JobFiles {
  std::string model;
  std::string inputs;
  std::string labels;
};

// A job ready to run: its model, data split, and search options.
struct PreparedJob {
  std::unique_ptr<engine::Model> model;
  // The submitted model after search::PrepareModel (BatchNormalization
  // folded, nodes named): the bytes `model` was imported from, which the
  // QDQ export rewrites.
  std::string prepared_onnx;
  search::LabeledData calib;
  search::LabeledData train;
  search::ProgressiveOptions options;
  // `options` resolved against the model: each layer's candidate bits.
  search::CandidateBits candidate_bits;
};

// Search options with the documented defaults filled in. INVALID_ARGUMENT
// naming the field ("spec.search.bits: ...", "spec.search.layers[1].bits:
// ...", "spec.search.activation_bits: ...") when unusable on any model.
absl::StatusOr<search::ProgressiveOptions> ToProgressiveOptions(
    const v1::SearchOptions& search);

// Loads the model and data and checks that everything fits together: model
// imports, inputs match the model input, labels match the inputs' count and
// the model's classes, calib_size leaves a fine-tuning set, every layer named
// in spec.search.layers is a quantizable layer of the model, the budget is
// reachable with every layer at its lowest candidate bits (the message gives
// the lowest reachable cost; "spec.search.layers: every quantizable layer is
// pinned ..." when no layer can move). Errors are INVALID_ARGUMENT naming the
// field.
absl::StatusOr<PreparedJob> PrepareJob(const v1::JobSpec& spec,
                                       const JobFiles& files);

// The model and data part of PrepareJob (spec.search is not read; `options`
// and `candidate_bits` stay empty): calib = the first calib_size samples,
// train = the rest.
absl::StatusOr<PreparedJob> LoadModelAndData(const v1::JobSpec& spec,
                                             const JobFiles& files);

// An EvaluatePolicy request ready to run: `job.calib` calibrates or
// fine-tunes, `job.train` is evaluated.
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
