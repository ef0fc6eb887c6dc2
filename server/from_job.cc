#include "server/from_job.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace mixq::server {
namespace {

absl::Status InheritedField(absl::string_view field,
                            const std::string& source_id) {
  return absl::InvalidArgumentError(absl::StrCat(
      "spec.", field, ": must be unset with from_job: the job starts from job ",
      source_id, "'s warm-up and uses its model and data"));
}

absl::Status DiffersFromSource(absl::string_view field,
                               const std::string& source_id) {
  return absl::InvalidArgumentError(
      absl::StrCat("spec.search.", field, ": differs from job ", source_id,
                   "'s; from_job continues its training, so leave it unset"));
}

// The stored source's file `stored` (content stripped), named by SHA-256.
v1::DataSource ByArtifact(const v1::DataSource& stored,
                          const std::string& sha256) {
  v1::DataSource source;
  source.set_artifact_sha256(sha256);
  source.set_filename(stored.filename());
  return source;
}

}  // namespace

absl::StatusOr<v1::JobSpec> ResolveFromJob(const v1::JobSpec& spec,
                                           const storage::JobRecord& source,
                                           const v1::JobSpec& source_spec) {
  const std::string& id = source.id;
  const struct {
    const char* field;
    bool set;
  } data_fields[] = {
      {"model", spec.has_model()},
      {"inputs", spec.has_inputs()},
      {"labels", spec.has_labels()},
      {"objective", !spec.objective().empty()},
      {"normalize", spec.has_normalize()},
      {"max_samples", spec.max_samples() != 0},
      {"calib_size", spec.calib_size() != 0},
      {"val_inputs", spec.has_val_inputs()},
      {"val_labels", spec.has_val_labels()},
      {"val_size", spec.val_size() != 0},
  };
  for (const auto& data : data_fields) {
    if (data.set) return InheritedField(data.field, id);
  }
  const v1::SearchOptions& search = spec.search();
  const v1::SearchOptions& from = source_spec.search();
  if (search.has_warmup_steps()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "spec.search.warmup_steps: must be unset with from_job: the job "
        "starts after job ",
        id, "'s warm-up"));
  }
  if (search.batch_size() != 0 && search.batch_size() != from.batch_size())
    return DiffersFromSource("batch_size", id);
  if (search.learning_rate() != 0 &&
      search.learning_rate() != from.learning_rate())
    return DiffersFromSource("learning_rate", id);
  if (search.has_activation_bits() &&
      (!from.has_activation_bits() ||
       search.activation_bits() != from.activation_bits()))
    return DiffersFromSource("activation_bits", id);

  v1::JobSpec resolved = spec;
  *resolved.mutable_model() =
      ByArtifact(source_spec.model(), source.model_sha256);
  *resolved.mutable_inputs() =
      ByArtifact(source_spec.inputs(), source.inputs_sha256);
  if (source_spec.has_labels()) {
    *resolved.mutable_labels() =
        ByArtifact(source_spec.labels(), source.labels_sha256);
  }
  resolved.set_objective(source_spec.objective());
  if (source_spec.has_normalize())
    *resolved.mutable_normalize() = source_spec.normalize();
  resolved.set_max_samples(source_spec.max_samples());
  resolved.set_calib_size(source_spec.calib_size());
  if (source_spec.has_val_inputs())
    *resolved.mutable_val_inputs() = source_spec.val_inputs();
  if (source_spec.has_val_labels())
    *resolved.mutable_val_labels() = source_spec.val_labels();
  resolved.set_val_size(source_spec.val_size());
  v1::SearchOptions* out = resolved.mutable_search();
  out->set_batch_size(from.batch_size());
  out->set_learning_rate(from.learning_rate());
  if (from.has_activation_bits())
    out->set_activation_bits(from.activation_bits());
  out->set_warmup_steps(0);
  return resolved;
}

}  // namespace mixq::server
