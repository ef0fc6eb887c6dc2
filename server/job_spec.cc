#include "server/job_spec.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "engine/dataset.h"
#include "engine/model_inputs.h"
#include "proto/spec_defaults.h"
#include "search/cost_model.h"
#include "search/quantize.h"
#include "search/teacher.h"
#include "util/status_macros.h"

namespace mixq::server {
namespace {

// For errors whose message starts with a field path relative to `parent`
// ("bits: ..." → "spec.search.bits: ...").
absl::Status SubfieldError(absl::string_view parent,
                           const absl::Status& status) {
  return absl::Status(SpecErrorCode(status.code()),
                      absl::StrCat(parent, ".", status.message()));
}

}  // namespace

absl::StatusCode SpecErrorCode(absl::StatusCode code) {
  switch (code) {
    // What the engine and the search say about the submitted model, data
    // or options.
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kUnimplemented:
      return absl::StatusCode::kInvalidArgument;
    // The rest are the server's: a size limit (RESOURCE_EXHAUSTED), a bug
    // (INTERNAL), a failing disk (DATA_LOSS), ... The caller must not be
    // told its data is wrong when it is not.
    default:
      return code;
  }
}

absl::Status SpecFieldError(absl::string_view field,
                            const absl::Status& status) {
  return absl::Status(SpecErrorCode(status.code()),
                      absl::StrCat(field, ": ", status.message()));
}

absl::StatusOr<search::ProgressiveOptions> ToProgressiveOptions(
    const v1::SearchOptions& search) {
  search::ProgressiveOptions options;
  options.bit_levels.assign(search.bits().begin(), search.bits().end());
  for (const v1::LayerOptions& layer : search.layers()) {
    options.layers.push_back(
        {layer.name(),
         std::vector<int>(layer.bits().begin(), layer.bits().end())});
  }
  options.pin_first_last = search.pin_first_last();
  options.activation_bits = search.has_activation_bits()
                                ? search.activation_bits()
                                : spec_defaults::kActivationBits;
  switch (search.budget().target_case()) {
    case v1::Budget::kAvgBits:
      options.budget = {search::Budget::Kind::kAvgBits,
                        search.budget().avg_bits()};
      break;
    case v1::Budget::kSizeFraction:
      options.budget = {search::Budget::Kind::kSizeFraction,
                        search.budget().size_fraction()};
      break;
    case v1::Budget::kSizeBytes:
      options.budget = {search::Budget::Kind::kBytes,
                        static_cast<double>(search.budget().size_bytes())};
      break;
    case v1::Budget::kBops:
      options.budget = {search::Budget::Kind::kBops, search.budget().bops()};
      break;
    case v1::Budget::TARGET_NOT_SET:
      return absl::InvalidArgumentError(
          "spec.search.budget: required (avg_bits, size_fraction, size_bytes "
          "or bops)");
  }
  options.candidates = search.candidates() != 0 ? search.candidates()
                                                : spec_defaults::kCandidates;
  options.max_layers = search.max_layers() != 0 ? search.max_layers()
                                                : spec_defaults::kMaxLayers;
  options.finetune_steps = search.has_finetune_steps()
                               ? search.finetune_steps()
                               : spec_defaults::kFinetuneSteps;
  options.warmup_steps = search.has_warmup_steps() ? search.warmup_steps()
                                                   : options.finetune_steps;
  options.final_finetune_steps = search.has_final_finetune_steps()
                                     ? search.final_finetune_steps()
                                     : options.finetune_steps;
  options.learning_rate = search.learning_rate() != 0
                              ? search.learning_rate()
                              : spec_defaults::kLearningRate;
  options.batch_size = search.batch_size() != 0 ? search.batch_size()
                                                : spec_defaults::kBatchSize;
  options.lambda =
      search.has_lambda() ? search.lambda() : spec_defaults::kLambda;
  options.seed = search.seed();
  absl::StatusOr<search::Strategy> strategy = search::ParseStrategy(
      search.strategy().empty() ? spec_defaults::kStrategy : search.strategy());
  if (!strategy.ok()) return SubfieldError("spec.search", strategy.status());
  options.strategy = *strategy;
  const std::string& selection = search.selection().empty()
                                     ? spec_defaults::kSelection
                                     : search.selection();
  if (selection == "min_index") {
    options.selection = search::Selection::kMinIndex;
  } else if (selection == "per_cost_saved") {
    options.selection = search::Selection::kPerCostSaved;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("spec.search.selection: unknown '", selection,
                     "' (min_index, per_cost_saved)"));
  }
  options.refresh_fisher = search.refresh_fisher();
  options.land_on_budget = search.land_on_budget();
  options.knapsack_guided = search.knapsack_guided();
  options.activation_levels.assign(search.activation_levels().begin(),
                                   search.activation_levels().end());
  options.total_finetune_steps = search.total_finetune_steps();
  options.hutchinson_samples = search.hutchinson_samples() != 0
                                   ? search.hutchinson_samples()
                                   : spec_defaults::kHutchinsonSamples;
  const absl::Status valid = search::ValidateOptions(options);
  if (!valid.ok()) return SubfieldError("spec.search", valid);
  return options;
}

absl::Status FillSpecDefaults(v1::JobSpec* spec) {
  MIXQ_ASSIGN_OR_RETURN(const engine::Objective objective,
                        ResolveObjective(*spec));
  spec->set_objective(std::string(engine::ObjectiveName(objective)));
  v1::SearchOptions& search = *spec->mutable_search();
  if (search.candidates() == 0)
    search.set_candidates(spec_defaults::kCandidates);
  if (search.max_layers() == 0)
    search.set_max_layers(spec_defaults::kMaxLayers);
  if (!search.has_finetune_steps())
    search.set_finetune_steps(spec_defaults::kFinetuneSteps);
  if (!search.has_warmup_steps())
    search.set_warmup_steps(search.finetune_steps());
  if (!search.has_final_finetune_steps())
    search.set_final_finetune_steps(search.finetune_steps());
  if (search.learning_rate() == 0)
    search.set_learning_rate(spec_defaults::kLearningRate);
  if (search.batch_size() == 0)
    search.set_batch_size(spec_defaults::kBatchSize);
  if (!search.has_lambda()) search.set_lambda(spec_defaults::kLambda);
  if (!search.has_activation_bits())
    search.set_activation_bits(spec_defaults::kActivationBits);
  if (search.strategy().empty()) search.set_strategy(spec_defaults::kStrategy);
  if (search.selection().empty())
    search.set_selection(spec_defaults::kSelection);
  if (search.hutchinson_samples() == 0)
    search.set_hutchinson_samples(spec_defaults::kHutchinsonSamples);
  return absl::OkStatus();
}

absl::StatusOr<PreparedJob> PrepareJob(const v1::JobSpec& spec,
                                       const JobFiles& files) {
  MIXQ_ASSIGN_OR_RETURN(search::ProgressiveOptions options,
                        ToProgressiveOptions(spec.search()));
  MIXQ_ASSIGN_OR_RETURN(
      PreparedJob job,
      LoadModelAndData(spec, files, ValidationSplit::kHoldOut));
  job.options = std::move(options);
  const search::CostModel cost = search::CostModel::ForModel(*job.model);
  auto candidate_bits = search::ResolveCandidateBits(job.options, *job.model);
  if (!candidate_bits.ok())
    return SubfieldError("spec.search", candidate_bits.status());
  // With searched activation bits, the lowest of them counts.
  const int lowest_activation_bits =
      job.options.activation_levels.empty()
          ? job.options.activation_bits
          : *std::min_element(job.options.activation_levels.begin(),
                              job.options.activation_levels.end());
  const absl::Status reachable = search::CheckBudgetReachable(
      cost, job.options.budget, candidate_bits->Lowest(),
      lowest_activation_bits);
  if (!reachable.ok()) {
    if (candidate_bits->all_pinned()) {
      return SpecFieldError(
          "spec.search.layers",
          absl::InvalidArgumentError(absl::StrCat(
              "every quantizable layer is pinned, and ", reachable.message())));
    }
    return SpecFieldError("spec.search.budget", reachable);
  }
  job.candidate_bits = *std::move(candidate_bits);
  return job;
}

namespace {

// A file's name for messages: its DataSource.filename, else `fallback`.
std::string FileName(const v1::DataSource& source, absl::string_view fallback) {
  return source.filename().empty() ? std::string(fallback) : source.filename();
}

// Decodes one inputs/labels pair (at most `max_samples` of them; 0 = all),
// normalised as the spec says and conformed to `model`'s input, with labels
// checked against the model's classes; without `has_labels` (the distill
// objective), inputs only. `inputs_field` / `labels_field` name the spec
// fields in messages.
absl::StatusOr<search::LabeledData> LoadLabeledData(
    const v1::JobSpec& spec, const engine::Model& model,
    absl::string_view inputs_bytes, const v1::DataSource& inputs_source,
    absl::string_view inputs_field, bool has_labels,
    absl::string_view labels_bytes, const v1::DataSource& labels_source,
    absl::string_view labels_field, int64_t max_samples) {
  // Unnamed files are called after their field ("inputs", "val_labels").
  const std::string inputs_name =
      FileName(inputs_source, absl::StripPrefix(inputs_field, "spec."));
  const std::string labels_name =
      FileName(labels_source, absl::StripPrefix(labels_field, "spec."));
  // Conformed to the model's (packed) input: one file per graph input, or a
  // .npz keyed by input name for a model with several.
  auto inputs =
      engine::DecodeModelInputs(model.inputs(), inputs_bytes, inputs_name);
  if (!inputs.ok()) return SpecFieldError(inputs_field, inputs.status());
  absl::StatusOr<std::vector<int64_t>> labels = std::vector<int64_t>();
  if (has_labels) labels = engine::DecodeLabels(labels_bytes, labels_name);
  if (!labels.ok()) return SpecFieldError(labels_field, labels.status());
  const int64_t num_inputs = inputs->shape().empty() ? 0 : inputs->dim(0);
  if (has_labels && num_inputs != static_cast<int64_t>(labels->size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        labels_field, ": ", labels_name, " has ", labels->size(),
        " labels but ", inputs_name, " has ", num_inputs, " samples"));
  }
  const int64_t n =
      max_samples > 0 ? std::min(num_inputs, max_samples) : num_inputs;
  search::LabeledData data;
  data.inputs = n == num_inputs ? *std::move(inputs) : inputs->Slice(0, n);
  if (has_labels) data.labels.assign(labels->begin(), labels->begin() + n);
  if (spec.has_normalize()) {
    const absl::Status normalized = engine::NormalizeModelInputs(
        model.inputs(), static_cast<float>(spec.normalize().mean()),
        static_cast<float>(spec.normalize().std()), "spec.normalize",
        &data.inputs);
    if (!normalized.ok()) return SpecFieldError("spec.normalize", normalized);
  }
  if (!has_labels) return data;
  const engine::Shape& output = model.output_shape();
  const int64_t classes = output.size() == 2 ? output[1] : 0;
  const absl::Status in_range =
      engine::CheckLabels(data.labels, classes, labels_name);
  if (!in_range.ok()) return SpecFieldError(labels_field, in_range);
  return data;
}

}  // namespace

absl::StatusOr<engine::Objective> ResolveObjective(const v1::JobSpec& spec) {
  if (spec.objective().empty()) {
    return spec.has_labels() ? engine::Objective::kCrossEntropy
                             : engine::Objective::kDistill;
  }
  absl::StatusOr<engine::Objective> objective =
      engine::ParseObjective(spec.objective());
  if (!objective.ok())
    return SpecFieldError("spec.objective", objective.status());
  if (*objective == engine::Objective::kCrossEntropy && !spec.has_labels()) {
    return absl::InvalidArgumentError(
        "spec.objective: cross_entropy needs spec.labels (integer class "
        "labels, one per input); give labels, or use objective 'distill' to "
        "learn from the FP32 model's outputs without labels");
  }
  return *objective;
}

absl::Status CheckTeacherFits(const PreparedJob& job) {
  if (job.objective != engine::Objective::kDistill) return absl::OkStatus();
  constexpr int64_t kFloatBytes = sizeof(float);
  int64_t per_sample = 1;
  const engine::Shape& output = job.model->output_shape();
  for (size_t d = 1; d < output.size(); ++d) {
    if (output[d] <= 0) continue;  // symbolic: known only when run
    if (per_sample > kMaxTeacherBytes / kFloatBytes / output[d]) {
      per_sample = kMaxTeacherBytes;  // beyond the limit for one sample
      break;
    }
    per_sample *= output[d];
  }
  const int64_t samples = job.calib.size() + job.train.size() + job.val.size();
  if (samples <= kMaxTeacherBytes / kFloatBytes / per_sample)
    return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "spec.max_samples: the distill objective keeps the FP32 model's "
      "outputs for every sample, and ",
      samples, " samples of ", per_sample,
      " output values each would take more than the limit of ",
      kMaxTeacherBytes,
      " bytes; use fewer samples (max_samples, "
      "val_size or smaller files)"));
}

absl::Status AttachTeachers(PreparedJob* job) {
  if (job->objective != engine::Objective::kDistill) return absl::OkStatus();
  MIXQ_RETURN_IF_ERROR(CheckTeacherFits(*job));
  for (search::LabeledData* data : {&job->calib, &job->train, &job->val}) {
    const absl::Status attached = search::AttachTeacher(*job->model, data);
    if (!attached.ok()) return SpecFieldError("spec.model", attached);
  }
  return absl::OkStatus();
}

int64_t DefaultValidationSize(int64_t samples) {
  return std::max<int64_t>(1,
                           samples * spec_defaults::kValidationPercent / 100);
}

absl::StatusOr<PreparedJob> LoadModelAndData(const v1::JobSpec& spec,
                                             const JobFiles& files,
                                             ValidationSplit split) {
  PreparedJob job;

  // BatchNormalization is folded into its Conv/Gemm first, as deployed
  // int8 runtimes do, so the search quantizes the weights that will ship.
  auto prepared = search::PrepareModel(files.model);
  if (!prepared.ok()) return SpecFieldError("spec.model", prepared.status());
  auto model = engine::Model::FromOnnxBytes(prepared->onnx);
  if (!model.ok()) return SpecFieldError("spec.model", model.status());
  job.model = *std::move(model);
  job.prepared_onnx = std::move(prepared->onnx);

  MIXQ_ASSIGN_OR_RETURN(job.objective, ResolveObjective(spec));
  // Scoring, fine-tuning and validation run at batches of their own (the
  // last one shorter): a graph that runs at one batch only would fail the
  // job at run time.
  if (job.model->fixed_batch() > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "spec.model: the graph only runs at batch ", job.model->fixed_batch(),
        ", the batch its input '", job.model->input_name(),
        "' declares (a shape in it is computed for that batch, e.g. a "
        "Reshape to a literal shape); mixq scores and fine-tunes at other "
        "batches. Export with a dynamic batch: torch.onnx.export(..., "
        "dynamic_axes={'<input>': {0: 'batch'}, '<output>': {0: 'batch'}}), "
        "and flatten with x.flatten(1) or x.view(x.size(0), -1) rather "
        "than a literal shape"));
  }
  const engine::Shape& output = job.model->output_shape();
  if (job.objective == engine::Objective::kCrossEntropy && output.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "spec.model: the output '", job.model->output_name(), "' has shape ",
        engine::ShapeToString(output),
        "; the cross_entropy objective needs classification logits [batch, "
        "classes] (use objective 'distill' for other outputs)"));
  }
  if (job.model->quantizable_layers().empty()) {
    return absl::InvalidArgumentError(
        "spec.model: no quantizable layer (a Conv, ConvTranspose, Gemm or "
        "MatMul with a weight initializer)");
  }
  if (spec.max_samples() < 0) {
    return absl::InvalidArgumentError("spec.max_samples: must not be negative");
  }
  if (spec.val_size() < 0) {
    return absl::InvalidArgumentError("spec.val_size: must not be negative");
  }
  const bool val_files = spec.has_val_inputs() || spec.has_val_labels();
  // Distilling, validation inputs alone are enough; labels add accuracy.
  const bool val_labels_optional =
      job.objective == engine::Objective::kDistill && spec.has_val_inputs();
  if (val_files && !val_labels_optional &&
      (!spec.has_val_inputs() || !spec.has_val_labels())) {
    return absl::InvalidArgumentError(absl::StrCat(
        spec.has_val_inputs() ? "spec.val_labels" : "spec.val_inputs",
        ": required with ",
        spec.has_val_inputs() ? "spec.val_inputs" : "spec.val_labels"));
  }
  if (val_files && spec.val_size() > 0) {
    return absl::InvalidArgumentError(
        "spec.val_size: give either validation files (spec.val_inputs, "
        "spec.val_labels) or val_size, not both");
  }

  MIXQ_ASSIGN_OR_RETURN(
      search::LabeledData data,
      LoadLabeledData(spec, *job.model, files.inputs, spec.inputs(),
                      "spec.inputs", spec.has_labels(), files.labels,
                      spec.labels(), "spec.labels", spec.max_samples()));
  const int64_t n = data.size();
  if (spec.calib_size() <= 0) {
    return absl::InvalidArgumentError(
        "spec.calib_size: required, must be positive");
  }
  if (spec.calib_size() >= n) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec.calib_size: ", spec.calib_size(),
                     " leaves no fine-tuning samples (", n, " samples used)"));
  }

  const std::string inputs_name = FileName(spec.inputs(), "inputs");
  int64_t held_out = 0;  // validation samples taken from the end of `data`
  if (val_files) {
    MIXQ_ASSIGN_OR_RETURN(
        job.val, LoadLabeledData(spec, *job.model, files.val_inputs,
                                 spec.val_inputs(), "spec.val_inputs",
                                 spec.has_val_labels(), files.val_labels,
                                 spec.val_labels(), "spec.val_labels", 0));
    if (job.val.size() == 0) {
      return absl::InvalidArgumentError("spec.val_inputs: no samples");
    }
    job.val_source =
        absl::StrCat("files: ", FileName(spec.val_inputs(), "val_inputs"), " (",
                     job.val.size(), " samples)");
  } else if (split == ValidationSplit::kHoldOut || spec.val_size() > 0) {
    const bool explicit_size = spec.val_size() > 0;
    held_out = explicit_size ? spec.val_size() : DefaultValidationSize(n);
    if (spec.calib_size() + held_out >= n) {
      return absl::InvalidArgumentError(absl::StrCat(
          explicit_size ? "spec.val_size: " : "spec.calib_size: ",
          spec.calib_size(), " calibration and ", held_out,
          explicit_size
              ? ""
              : absl::StrCat(" (default ", spec_defaults::kValidationPercent,
                             " %)"),
          " validation samples leave no fine-tuning samples (", n,
          " samples used); lower calib_size",
          explicit_size ? " or val_size" : ", set val_size",
          ", or give validation files (val_inputs, val_labels)"));
    }
    job.val = data.Slice(n - held_out, n);
    job.val_source = absl::StrCat(
        explicit_size
            ? "held out"
            : absl::StrCat("default: the last ",
                           spec_defaults::kValidationPercent, " % held out"),
        ": samples [", n - held_out, ", ", n, ") of ", inputs_name);
  }
  job.calib = data.Slice(0, spec.calib_size());
  job.train = data.Slice(spec.calib_size(), n - held_out);
  MIXQ_RETURN_IF_ERROR(CheckTeacherFits(job));
  return job;
}

absl::StatusOr<PreparedEvaluation> PrepareEvaluation(
    const v1::EvaluatePolicyRequest& request, const JobFiles& files) {
  PreparedEvaluation out;
  absl::StatusOr<search::EvalMode> mode =
      search::ParseEvalMode(request.mode().empty() ? "static" : request.mode());
  if (!mode.ok()) return SpecFieldError("mode", mode.status());
  out.options.mode = *mode;
  const int default_bits =
      request.default_bits() == 0 ? search::kFloatBits : request.default_bits();
  const auto valid_bits = [](int bits) {
    return bits == search::kFloatBits ||
           (bits >= search::kMinWeightBits && bits <= search::kMaxWeightBits);
  };
  if (!valid_bits(default_bits)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "default_bits: ", default_bits, " is not 1..8 or 32 (float)"));
  }
  out.options.quant.activations.bits = request.has_activation_bits()
                                           ? request.activation_bits()
                                           : spec_defaults::kActivationBits;
  const absl::Status quant = search::ValidateQuantOptions(out.options.quant);
  if (!quant.ok()) return SpecFieldError("activation_bits", quant);
  if (request.finetune_steps() < 0) {
    return absl::InvalidArgumentError("finetune_steps: must not be negative");
  }
  if (request.finetune_steps() > 0) {
    out.options.finetune_steps = request.finetune_steps();
  }
  out.options.seed = request.seed();
  MIXQ_ASSIGN_OR_RETURN(out.job, LoadModelAndData(request.spec(), files,
                                                  ValidationSplit::kFilesOnly));
  const auto& layers = out.job.model->quantizable_layers();
  out.policy.assign(layers.size(), default_bits);
  std::vector<bool> seen(layers.size(), false);
  for (int i = 0; i < request.layers_size(); ++i) {
    const v1::LayerBits& entry = request.layers(i);
    const std::string field = absl::StrCat("layers[", i, "]");
    size_t l = 0;
    while (l < layers.size() && layers[l].name != entry.name()) ++l;
    if (l == layers.size()) {
      std::vector<std::string> names;
      for (const auto& layer : layers) names.push_back(layer.name);
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".name: no quantizable layer '", entry.name(),
                       "'; layers are: ", absl::StrJoin(names, ", ")));
    }
    if (seen[l]) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".name: '", entry.name(), "' is listed twice"));
    }
    if (!valid_bits(entry.bits())) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".bits: ", entry.bits(), " is not 1..8 or 32 (float)"));
    }
    seen[l] = true;
    out.policy[l] = entry.bits();
  }
  return out;
}

}  // namespace mixq::server
