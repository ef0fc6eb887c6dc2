#include "server/job_manager.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <random>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/predict.h"
#include "engine/threads.h"
#include "google/protobuf/util/json_util.h"
#include "search/cost_model.h"
#include "server/convert.h"
#include "server/from_job.h"
#include "server/job_page.h"
#include "server/pareto.h"
#include "server/resolve.h"
#include "storage/errors.h"
#include "util/file.h"
#include "util/logging.h"
#include "util/sha256.h"
#include "util/status_macros.h"

namespace mixq::server {
namespace {

constexpr size_t kMaxRequestIdLength = 128;
constexpr size_t kMaxJobIdLength = 64;
constexpr size_t kMaxPolicyIdLength = 32;
constexpr int kDefaultTopK = 5;
constexpr int kDefaultListLimit = 100;
constexpr double kFinalPhaseProgress = 0.99;
// Back-off of a job write that found the disk full: from a quick retry (a
// log rotated, a file deleted) to one every few seconds.
constexpr absl::Duration kFirstDiskRetry = absl::Milliseconds(50);
constexpr absl::Duration kMaxDiskRetry = absl::Seconds(5);

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

std::string NewJobId() {
  static std::mt19937_64 rng(std::random_device{}() ^
                             static_cast<uint64_t>(NowMs()));
  static absl::Mutex mu(absl::kConstInit);
  absl::MutexLock lock(&mu);
  return absl::StrFormat("job-%012x", rng() & 0xffffffffffffULL);
}

// The canonical form of `path` (symlinks and ".." resolved) if it lies under
// one of `roots` (resolved too). Containment is decided on resolved paths
// only, so neither ".." nor a symlink inside a root leads out of it. A path
// that does not exist is first resolved as far as it exists, so that a
// missing file outside the roots is refused like an existing one and
// requests cannot probe the server's files. PERMISSION_DENIED outside the
// roots; INVALID_ARGUMENT for a relative path or one under a root that does
// not resolve (e.g. a missing file).
absl::StatusOr<std::string> ResolveAllowedPath(
    const std::string& path, const std::vector<std::string>& roots,
    absl::string_view field) {
  if (roots.empty()) {
    return absl::PermissionDeniedError(
        absl::StrCat(field,
                     ".server_path: server paths are disabled (start "
                     "mixq-server with --allow-path)"));
  }
  if (!std::filesystem::path(path).is_absolute()) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".server_path: \"", path, "\" is not an absolute path"));
  }
  std::vector<std::filesystem::path> canonical_roots;
  for (const std::string& root : roots) {
    std::error_code ec;
    std::filesystem::path canonical_root =
        std::filesystem::weakly_canonical(root, ec);
    if (!ec) canonical_roots.push_back(std::move(canonical_root));
  }
  const auto under_a_root = [&](const std::filesystem::path& resolved) {
    return std::any_of(canonical_roots.begin(), canonical_roots.end(),
                       [&](const std::filesystem::path& root) {
                         return std::mismatch(root.begin(), root.end(),
                                              resolved.begin(), resolved.end())
                                    .first == root.end();
                       });
  };
  const auto outside = [&] {
    return absl::PermissionDeniedError(absl::StrCat(
        field, ".server_path: ", path, " is outside the allowed paths"));
  };
  std::error_code ec;
  const std::filesystem::path partly_resolved =
      std::filesystem::weakly_canonical(path, ec);
  if (ec || !under_a_root(partly_resolved)) return outside();
  const std::filesystem::path resolved = std::filesystem::canonical(path, ec);
  if (ec) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".server_path: cannot resolve ", path, ": ", ec.message()));
  }
  if (!under_a_root(resolved)) return outside();
  return resolved.string();
}

std::string SpecToJson(const v1::JobSpec& spec) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(spec, &json, options);
  return json;
}

// The spec as stored: file contents are in the artifact store, not here.
v1::JobSpec StrippedSpec(const v1::JobSpec& spec) {
  v1::JobSpec stripped = spec;
  for (v1::DataSource* source :
       {stripped.mutable_model(), stripped.mutable_inputs()}) {
    if (source->has_content()) source->clear_content();
  }
  // Labels are optional (distill): an unset field must stay unset.
  if (stripped.has_labels()) stripped.mutable_labels()->clear_content();
  // (Validation files are named by SHA-256 instead: see Submit.)
  return stripped;
}

// Fraction of the way from the highest-bits policy to the budget, in the
// budget's unit.
double Progress(const search::Budget& budget, const search::PolicyCost& start,
                const search::PolicyCost& current) {
  const double from = budget.Measure(start);
  const double to = budget.value;
  const double now = budget.Measure(current);
  if (from <= to) return 1.0;
  return std::clamp((from - now) / (from - to), 0.0, 1.0);
}

}  // namespace

JobManager::JobManager(storage::Store* store, JobManagerOptions options)
    : store_(store), options_(std::move(options)) {}

JobManager::~JobManager() { Shutdown(); }

absl::Status JobManager::CheckJobId(const std::string& job_id) {
  if (job_id.empty()) return absl::InvalidArgumentError("job_id: required");
  if (job_id.size() > kMaxJobIdLength ||
      !std::all_of(job_id.begin(), job_id.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' ||
               c == '_';
      })) {
    return absl::InvalidArgumentError(
        "job_id: malformed (expected letters, digits, '-' or '_')");
  }
  return absl::OkStatus();
}

absl::Status JobManager::Start() {
  absl::MutexLock lifecycle(&lifecycle_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (started_)
      return absl::FailedPreconditionError("job manager already started");
    started_ = true;
  }
  // Jobs a previous process accepted but did not finish run again: those
  // it was running first (they resume from their checkpoints), then those it
  // had queued, oldest first. Both lists are read before any state changes,
  // so a job is queued once.
  std::vector<storage::JobRecord> unfinished;
  for (storage::JobState state :
       {storage::JobState::kRunning, storage::JobState::kQueued}) {
    storage::ListJobsOptions list;
    list.state = state;
    list.limit = std::numeric_limits<int32_t>::max();
    MIXQ_ASSIGN_OR_RETURN(std::vector<storage::JobRecord> jobs,
                          store_->ListJobs(list));
    unfinished.insert(unfinished.end(), jobs.rbegin(), jobs.rend());
  }
  // On a full disk the server still starts: a quarantine that cannot be
  // written yet waits for space on a thread of its own, and a job to resume
  // is queued with its row still RUNNING until its start is written.
  std::vector<std::pair<std::string, std::string>> quarantines_waiting;
  for (const storage::JobRecord& job : unfinished) {
    if (job.state == storage::JobState::kRunning &&
        job.unclean_starts >= kQuarantineStarts) {
      // Each of its last starts ended with the process dying (an abort,
      // the OOM killer, a signal) before it recorded a step: running it
      // again would most likely take the server down again, and with it
      // every job queued behind.
      std::string error = absl::StrCat(
          kQuarantineMessage, ": the server process died while running it ",
          job.unclean_starts,
          " times in a row, with no step recorded in between; resubmit it "
          "(with a new request_id) to try again");
      const absl::Status written = store_->UpdateJobState(
          job.id, storage::JobState::kFailed, error, 0, NowMs());
      if (storage::IsDiskFull(written)) {
        quarantines_waiting.emplace_back(job.id, std::move(error));
        continue;
      }
      MIXQ_RETURN_IF_ERROR(written);
      Log(LogLevel::kError, "job quarantined",
          {{"job", job.id},
           {"unclean_starts", absl::StrCat(job.unclean_starts)},
           {"steps_done", absl::StrCat(job.steps_done)}});
      continue;
    }
    if (job.state == storage::JobState::kRunning) {
      // Back to queued, its unclean start still counted.
      const absl::Status written =
          store_->UpdateJobState(job.id, storage::JobState::kQueued, "", 0, 0);
      if (storage::IsDiskFull(written)) {
        Log(LogLevel::kWarning,
            "disk full; job re-queued while its row still says RUNNING",
            {{"job", job.id}, {"error", written.ToString()}});
      } else {
        MIXQ_RETURN_IF_ERROR(written);
      }
    }
    absl::MutexLock lock(&mu_);
    // Jobs submitted before Start are in the queue already.
    if (std::find(queue_.begin(), queue_.end(), job.id) != queue_.end())
      continue;
    Log(LogLevel::kInfo, "re-queued unfinished job",
        {{"job", job.id}, {"steps_done", absl::StrCat(job.steps_done)}});
    queue_.push_back(job.id);
  }
  if (!quarantines_waiting.empty()) {
    // Joined by Shutdown, which also ends its waits.
    workers_.emplace_back([this, quarantines = std::move(quarantines_waiting)] {
      for (const auto& [job_id, error] : quarantines) {
        const absl::Status written =
            WriteUntilStored(job_id, "quarantine", [&] {
              return store_->UpdateJobState(job_id, storage::JobState::kFailed,
                                            error, 0, NowMs());
            });
        Log(written.ok() ? LogLevel::kError : LogLevel::kWarning,
            written.ok() ? "job quarantined" : "job quarantine not stored",
            {{"job", job_id}, {"status", written.ToString()}});
      }
    });
  }
  for (int i = 0; i < std::max(1, options_.workers); ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
  return absl::OkStatus();
}

void JobManager::Shutdown() {
  absl::MutexLock lifecycle(&lifecycle_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return;
    shutdown_ = true;
    for (auto& [id, cancel] : running_) cancel->store(true);
  }
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
}

int JobManager::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

int JobManager::waiting_for_disk() const {
  absl::MutexLock lock(&mu_);
  return waiting_for_disk_;
}

absl::Status JobManager::WriteUntilStored(
    const std::string& job_id, absl::string_view what,
    absl::FunctionRef<absl::Status()> write) {
  absl::Duration wait = kFirstDiskRetry;
  const absl::Time start = absl::Now();
  for (int attempt = 1;; ++attempt) {
    const absl::Status status = write();
    if (!storage::IsDiskFull(status)) {
      if (attempt > 1 && status.ok()) {
        Log(LogLevel::kInfo, "disk space is back; job write stored",
            {{"job", job_id},
             {"write", std::string(what)},
             {"attempts", absl::StrCat(attempt)},
             {"waited_ms",
              absl::StrCat(absl::ToInt64Milliseconds(absl::Now() - start))}});
      }
      return status;
    }
    if (attempt == 1) {
      Log(LogLevel::kWarning, "disk full; job write waits for space",
          {{"job", job_id},
           {"write", std::string(what)},
           {"error", status.ToString()}});
    }
    absl::MutexLock lock(&mu_);
    if (shutdown_) {
      return absl::CancelledError(absl::StrCat(
          what, ": not stored (disk full) before the server shut down"));
    }
    ++waiting_for_disk_;
    mu_.AwaitWithTimeout(absl::Condition(&shutdown_), wait);
    --waiting_for_disk_;
    wait = std::min(wait * 2, kMaxDiskRetry);
  }
}

absl::StatusOr<std::string> JobManager::ReadSource(
    const v1::DataSource& source, absl::string_view field) const {
  switch (source.source_case()) {
    case v1::DataSource::kContent:
      if (source.content().empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".content: empty"));
      }
      return source.content();
    case v1::DataSource::kServerPath: {
      MIXQ_ASSIGN_OR_RETURN(std::string path,
                            ResolveAllowedPath(source.server_path(),
                                               options_.allow_paths, field));
      auto data = ReadFile(path, options_.max_file_bytes);
      if (!data.ok()) {
        return absl::Status(
            data.status().code() == absl::StatusCode::kResourceExhausted
                ? absl::StatusCode::kResourceExhausted
                : absl::StatusCode::kInvalidArgument,
            absl::StrCat(field, ".server_path: ", data.status().message()));
      }
      return data;
    }
    case v1::DataSource::kArtifactSha256: {
      const std::string& sha256 = source.artifact_sha256();
      if (!IsSha256Hex(sha256)) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".artifact_sha256: \"", sha256,
                         "\" is not a SHA-256 (64 lower-case hex digits)"));
      }
      auto data = ReadVerifiedArtifact(store_, sha256, field);
      if (absl::IsNotFound(data.status())) {
        return absl::NotFoundError(
            absl::StrCat(field, ".artifact_sha256: no artifact ", sha256,
                         " on the server (upload it with UploadArtifact)"));
      }
      return data;
    }
    case v1::DataSource::SOURCE_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      field, ": required (content, server_path or artifact_sha256)"));
}

absl::StatusOr<JobFiles> JobManager::ReadFiles(const v1::JobSpec& spec) const {
  JobFiles files;
  MIXQ_ASSIGN_OR_RETURN(files.model, ReadSource(spec.model(), "spec.model"));
  MIXQ_ASSIGN_OR_RETURN(files.inputs, ReadSource(spec.inputs(), "spec.inputs"));
  // Labels are optional (the distill objective); PrepareJob decides.
  if (spec.has_labels()) {
    MIXQ_ASSIGN_OR_RETURN(files.labels,
                          ReadSource(spec.labels(), "spec.labels"));
  }
  if (spec.has_val_inputs()) {
    MIXQ_ASSIGN_OR_RETURN(files.val_inputs,
                          ReadSource(spec.val_inputs(), "spec.val_inputs"));
  }
  if (spec.has_val_labels()) {
    MIXQ_ASSIGN_OR_RETURN(files.val_labels,
                          ReadSource(spec.val_labels(), "spec.val_labels"));
  }
  return files;
}

absl::StatusOr<v1::EvaluatePolicyResponse> JobManager::Evaluate(
    const v1::EvaluatePolicyRequest& request) const {
  if (!request.has_spec()) return absl::InvalidArgumentError("spec: required");
  {
    absl::MutexLock lock(&mu_);
    if (evaluations_ >= options_.max_evaluations) {
      return absl::ResourceExhaustedError(
          absl::StrCat("EvaluatePolicy: ", evaluations_,
                       " evaluations are running, the server's limit "
                       "(--max-evaluations); retry later"));
    }
    ++evaluations_;
  }
  struct Release {
    const JobManager* self;
    ~Release() {
      absl::MutexLock lock(&self->mu_);
      --self->evaluations_;
    }
  } release{this};
  const auto start = std::chrono::steady_clock::now();
  MIXQ_ASSIGN_OR_RETURN(const JobFiles files, ReadFiles(request.spec()));
  MIXQ_ASSIGN_OR_RETURN(PreparedEvaluation prepared,
                        PrepareEvaluation(request, files));
  engine::SetEngineThreads(options_.engine_threads);
  MIXQ_RETURN_IF_ERROR(AttachTeachers(&prepared.job));
  // Validation files, when given, are what is measured; else the samples
  // after the calibration set.
  const search::LabeledData& evaluated =
      prepared.job.val.size() > 0 ? prepared.job.val : prepared.job.train;
  MIXQ_ASSIGN_OR_RETURN(
      search::PolicyEvaluation result,
      search::EvaluatePolicy(*prepared.job.model, prepared.policy,
                             prepared.job.calib, evaluated, prepared.options));
  v1::EvaluatePolicyResponse response;
  const auto& layers = prepared.job.model->quantizable_layers();
  for (size_t l = 0; l < layers.size(); ++l) {
    v1::LayerBits* entry = response.add_layers();
    entry->set_name(layers[l].name);
    entry->set_bits(prepared.policy[l]);
  }
  response.set_mode(std::string(search::EvalModeName(prepared.options.mode)));
  const auto& act = prepared.options.quant.activations;
  response.set_activation_bits(act.enabled() ? act.bits : search::kFloatBits);
  response.set_eval_samples(static_cast<int32_t>(evaluated.size()));
  response.set_fp32_accuracy(result.fp32.accuracy);
  response.set_fp32_loss(result.fp32.loss);
  response.set_accuracy(result.quantized.accuracy);
  response.set_loss(result.quantized.loss);
  response.set_avg_bits(result.cost.avg_bits);
  response.set_size_bytes(result.cost.size_bytes);
  response.set_bops(static_cast<double>(result.cost.bops));
  response.set_seconds(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count());
  return response;
}

absl::StatusOr<JobManager::SubmitResult> JobManager::Submit(
    const v1::SubmitJobRequest& request) {
  const std::string& request_id = request.request_id();
  if (request_id.size() > kMaxRequestIdLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request_id: longer than ", kMaxRequestIdLength, " characters"));
  }
  if (!request_id.empty()) {
    MIXQ_ASSIGN_OR_RETURN(auto existing,
                          store_->FindJobByRequestId(request_id));
    if (existing.has_value()) {
      MIXQ_ASSIGN_OR_RETURN(v1::Job job, BuildJob(*existing));
      return SubmitResult{std::move(job), true};
    }
  }
  if (!request.has_spec()) return absl::InvalidArgumentError("spec: required");
  // A place in the queue is taken before the (possibly long) read and
  // import of the model, under the lock, so that a full queue costs a
  // submitter nothing and concurrent submitters never overfill it. It is
  // given back on every early return, and turned into the queued job at the
  // end.
  struct Reservation {
    JobManager* self;
    bool held = true;
    ~Reservation() {
      if (!held) return;
      absl::MutexLock lock(&self->mu_);
      --self->reserved_;
    }
  } reservation{this};
  {
    absl::MutexLock lock(&mu_);
    if (static_cast<int>(queue_.size()) + reserved_ >= options_.max_queued) {
      reservation.held = false;
      return absl::ResourceExhaustedError(absl::StrCat(
          "the job queue is full (", options_.max_queued, " queued jobs)"));
    }
    ++reserved_;
  }
  MIXQ_ASSIGN_OR_RETURN(const v1::JobSpec spec, SpecToRun(request.spec()));
  MIXQ_ASSIGN_OR_RETURN(const JobFiles files, ReadFiles(spec));
  MIXQ_ASSIGN_OR_RETURN(PreparedJob prepared, PrepareJob(spec, files));

  storage::JobRecord record;
  record.id = NewJobId();
  record.request_id = request_id;
  record.model_sha256 = Sha256Hex(files.model);
  record.inputs_sha256 = Sha256Hex(files.inputs);
  // Empty for a job without labels (the distill objective).
  if (spec.has_labels()) record.labels_sha256 = Sha256Hex(files.labels);
  v1::JobSpec stored_spec = StrippedSpec(spec);
  // What the job runs with, every default written out.
  MIXQ_RETURN_IF_ERROR(FillSpecDefaults(&stored_spec));
  // Validation files have no columns of their own: the stored spec names
  // them by SHA-256, so the job reads them from the store when it runs.
  std::vector<std::pair<std::string, const std::string*>> val_artifacts;
  if (spec.has_val_inputs()) {
    val_artifacts.emplace_back(Sha256Hex(files.val_inputs), &files.val_inputs);
    stored_spec.mutable_val_inputs()->set_artifact_sha256(
        val_artifacts.back().first);
  }
  if (spec.has_val_labels()) {
    val_artifacts.emplace_back(Sha256Hex(files.val_labels), &files.val_labels);
    stored_spec.mutable_val_labels()->set_artifact_sha256(
        val_artifacts.back().first);
  }
  record.spec = SpecToJson(stored_spec);
  record.val_samples = static_cast<int32_t>(prepared.val.size());
  record.val_source = prepared.val_source;
  record.state = storage::JobState::kQueued;
  record.created_ms = NowMs();
  record.fp32_size_bytes =
      search::CostModel::ForModel(*prepared.model).Fp32SizeBytes();
  record.strategy = search::StrategyName(prepared.options.strategy);
  std::vector<storage::LayerRecord> layers;
  for (const auto& layer : prepared.model->quantizable_layers()) {
    layers.push_back({layer.name, layer.num_weights, layer.macs});
  }
  MIXQ_RETURN_IF_ERROR(store_->PutArtifact(record.model_sha256, files.model));
  MIXQ_RETURN_IF_ERROR(store_->PutArtifact(record.inputs_sha256, files.inputs));
  if (!record.labels_sha256.empty()) {
    MIXQ_RETURN_IF_ERROR(
        store_->PutArtifact(record.labels_sha256, files.labels));
  }
  for (const auto& [sha256, data] : val_artifacts)
    MIXQ_RETURN_IF_ERROR(store_->PutArtifact(sha256, *data));
  const absl::Status created = store_->CreateJob(record, layers);
  if (absl::IsAlreadyExists(created) && !request_id.empty()) {
    // A concurrent submit with the same request id won the race.
    MIXQ_ASSIGN_OR_RETURN(auto existing,
                          store_->FindJobByRequestId(request_id));
    if (existing.has_value()) {
      MIXQ_ASSIGN_OR_RETURN(v1::Job job, BuildJob(*existing));
      return SubmitResult{std::move(job), true};
    }
  }
  MIXQ_RETURN_IF_ERROR(created);
  Log(LogLevel::kInfo, "job queued",
      {{"job", record.id},
       {"model", record.model_sha256.substr(0, 12)},
       {"layers", absl::StrCat(layers.size())}});
  {
    absl::MutexLock lock(&mu_);
    queue_.push_back(record.id);
    --reserved_;
    reservation.held = false;
  }
  MIXQ_ASSIGN_OR_RETURN(v1::Job job, BuildJob(record));
  return SubmitResult{std::move(job), false};
}

absl::StatusOr<v1::JobSpec> JobManager::SpecToRun(
    const v1::JobSpec& spec) const {
  if (spec.from_job().empty()) return spec;
  const absl::Status id = CheckJobId(spec.from_job());
  if (!id.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec.from_job: ", id.message()));
  }
  MIXQ_ASSIGN_OR_RETURN(const storage::JobRecord source,
                        store_->GetJob(spec.from_job()));
  MIXQ_ASSIGN_OR_RETURN(const std::optional<std::string> warm_start,
                        store_->GetWarmStart(source.id));
  if (!warm_start.has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "spec.from_job: job ", source.id,
        " has no warm-up state yet (it is kept when its warm-up ends; jobs "
        "run before mixq kept it have none)"));
  }
  MIXQ_ASSIGN_OR_RETURN(const v1::JobSpec source_spec, LoadSpec(source));
  return ResolveFromJob(spec, source, source_spec);
}

absl::StatusOr<v1::JobSpec> JobManager::LoadSpec(
    const storage::JobRecord& job) const {
  v1::JobSpec spec;
  const auto parsed =
      google::protobuf::util::JsonStringToMessage(job.spec, &spec);
  if (!parsed.ok()) {
    return absl::DataLossError(absl::StrCat(
        "stored spec of job ", job.id, " is unreadable: ", parsed.ToString()));
  }
  return spec;
}

absl::StatusOr<v1::Job> JobManager::BuildJob(
    const storage::JobRecord& job) const {
  MIXQ_ASSIGN_OR_RETURN(v1::JobSpec spec, LoadSpec(job));
  MIXQ_ASSIGN_OR_RETURN(std::vector<storage::LayerRecord> layers,
                        store_->GetLayers(job.id));
  MIXQ_ASSIGN_OR_RETURN(std::optional<storage::PolicyRecord> final_policy,
                        store_->GetFinalPolicy(job.id));
  return ToProto(job, layers, spec, final_policy);
}

absl::StatusOr<v1::Job> JobManager::GetJob(const std::string& job_id) const {
  MIXQ_RETURN_IF_ERROR(CheckJobId(job_id));
  MIXQ_ASSIGN_OR_RETURN(storage::JobRecord job, store_->GetJob(job_id));
  return BuildJob(job);
}

absl::StatusOr<v1::ListJobsResponse> JobManager::ListJobs(
    const v1::ListJobsRequest& request) const {
  if (request.limit() < 0)
    return absl::InvalidArgumentError("limit: must not be negative");
  storage::ListJobsOptions options;
  options.state = FromProto(request.state());
  const int32_t limit =
      request.limit() > 0 ? request.limit() : kDefaultListLimit;
  // One more than the page holds: whether another page follows.
  options.limit =
      limit == std::numeric_limits<int32_t>::max() ? limit : limit + 1;
  if (const std::string& token = request.page_token(); !token.empty()) {
    absl::Status known = CheckJobId(token);
    if (known.ok()) known = store_->GetJob(token).status();
    if (absl::IsInvalidArgument(known) || absl::IsNotFound(known)) {
      return absl::InvalidArgumentError(
          "page_token: not a next_page_token a ListJobs reply gave");
    }
    MIXQ_RETURN_IF_ERROR(known);
    options.after_job_id = token;
  }
  MIXQ_ASSIGN_OR_RETURN(std::vector<storage::JobRecord> jobs,
                        store_->ListJobs(options));
  JobPage page(limit, kListJobsPageBytes);
  for (const auto& job : jobs) {
    MIXQ_ASSIGN_OR_RETURN(v1::Job built, BuildJob(job));
    if (!page.Add(std::move(built))) break;
  }
  return std::move(page).Finish();
}

absl::StatusOr<v1::GetResultsResponse> JobManager::GetResults(
    const std::string& job_id) const {
  MIXQ_RETURN_IF_ERROR(CheckJobId(job_id));
  MIXQ_ASSIGN_OR_RETURN(storage::JobRecord record, store_->GetJob(job_id));
  v1::GetResultsResponse response;
  MIXQ_ASSIGN_OR_RETURN(*response.mutable_job(), BuildJob(record));
  MIXQ_ASSIGN_OR_RETURN(std::vector<storage::LayerRecord> layers,
                        store_->GetLayers(job_id));
  MIXQ_ASSIGN_OR_RETURN(std::vector<storage::StepRecord> steps,
                        store_->GetSteps(job_id));
  for (const auto& step : steps) *response.add_steps() = ToProto(step, layers);
  if (response.job().has_final_policy()) {
    *response.mutable_final_policy() = response.job().final_policy();
  }
  return response;
}

absl::Status JobManager::CheckPolicySelector(const std::string& job_id,
                                             const std::string& model_sha256) {
  if (!model_sha256.empty() && !job_id.empty()) {
    return absl::InvalidArgumentError(
        "job_id, model_sha256: give one (model_sha256 names the model "
        "directly)");
  }
  if (model_sha256.empty()) return CheckJobId(job_id);
  if (!IsSha256Hex(model_sha256)) {
    return absl::InvalidArgumentError(
        "model_sha256: must be 64 lowercase hex digits");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Policy>> JobManager::RankedPolicies(
    const std::string& job_id, const std::string& model_sha256,
    const storage::PolicyLimits& limits, int32_t top_k) const {
  std::vector<v1::Policy> ranked;
  if (model_sha256.empty()) {
    MIXQ_ASSIGN_OR_RETURN(storage::JobRecord record, store_->GetJob(job_id));
    MIXQ_ASSIGN_OR_RETURN(std::vector<storage::LayerRecord> layers,
                          store_->GetLayers(job_id));
    MIXQ_ASSIGN_OR_RETURN(std::vector<storage::PolicyRecord> policies,
                          store_->QueryBestPolicies(job_id, limits, top_k));
    for (const auto& policy : policies) {
      v1::Policy& out = ranked.emplace_back(ToProto(policy, layers));
      out.set_job_id(job_id);
      out.set_strategy(record.strategy);
    }
    return ranked;
  }
  // Every job on the model: the same layers (same file), named from each
  // policy's own job.
  MIXQ_ASSIGN_OR_RETURN(
      std::vector<storage::JobPolicy> policies,
      store_->QueryBestPoliciesForModel(model_sha256, limits, top_k));
  std::map<std::string, std::vector<storage::LayerRecord>> layers_of;
  for (const auto& policy : policies) {
    auto it = layers_of.find(policy.job_id);
    if (it == layers_of.end()) {
      MIXQ_ASSIGN_OR_RETURN(std::vector<storage::LayerRecord> layers,
                            store_->GetLayers(policy.job_id));
      it = layers_of.emplace(policy.job_id, std::move(layers)).first;
    }
    v1::Policy& out = ranked.emplace_back(ToProto(policy.policy, it->second));
    out.set_job_id(policy.job_id);
    out.set_strategy(policy.strategy);
  }
  return ranked;
}

absl::StatusOr<v1::QueryBestPoliciesResponse> JobManager::QueryBestPolicies(
    const v1::QueryBestPoliciesRequest& request) const {
  const bool by_model = request.same_model() || !request.model_sha256().empty();
  MIXQ_RETURN_IF_ERROR(
      CheckPolicySelector(request.job_id(), request.model_sha256()));
  if (request.top_k() < 0)
    return absl::InvalidArgumentError("top_k: must not be negative");
  if (request.max_avg_bits() < 0 || request.max_size_bytes() < 0 ||
      request.max_bops() < 0) {
    return absl::InvalidArgumentError(
        "max_avg_bits/max_size_bytes/max_bops: must not be negative");
  }
  if (request.resolve()) {
    if (by_model) {
      return absl::InvalidArgumentError(
          "resolve: re-solves one job's stored sensitivities; give job_id "
          "without same_model or model_sha256");
    }
    MIXQ_ASSIGN_OR_RETURN(const storage::JobRecord record,
                          store_->GetJob(request.job_id()));
    MIXQ_ASSIGN_OR_RETURN(const v1::JobSpec spec, LoadSpec(record));
    v1::QueryBestPoliciesResponse response;
    response.set_job_id(request.job_id());
    MIXQ_ASSIGN_OR_RETURN(*response.add_policies(),
                          ResolvePolicy(*store_, record, spec, request));
    return response;
  }
  storage::PolicyLimits limits;
  limits.max_avg_bits = request.max_avg_bits();
  limits.max_size_bytes = request.max_size_bytes();
  limits.max_bops = request.max_bops();
  const int32_t top_k = request.top_k() > 0 ? request.top_k() : kDefaultTopK;
  const bool no_limit = limits.max_avg_bits == 0 &&
                        limits.max_size_bytes == 0 && limits.max_bops == 0;
  v1::QueryBestPoliciesResponse response;
  response.set_job_id(request.job_id());
  std::string model_sha256 = request.model_sha256();
  if (!request.job_id().empty()) {
    MIXQ_ASSIGN_OR_RETURN(storage::JobRecord record,
                          store_->GetJob(request.job_id()));
    if (by_model) model_sha256 = record.model_sha256;
    if (no_limit && !by_model) {
      // No limit given: the job's own budget.
      MIXQ_ASSIGN_OR_RETURN(v1::JobSpec spec, LoadSpec(record));
      const v1::Budget& budget = spec.search().budget();
      if (budget.has_avg_bits()) limits.max_avg_bits = budget.avg_bits();
      if (budget.has_size_fraction()) {
        limits.max_size_bytes = budget.size_fraction() * record.fp32_size_bytes;
      }
      if (budget.has_size_bytes()) limits.max_size_bytes = budget.size_bytes();
      if (budget.has_bops()) limits.max_bops = budget.bops();
    }
  }
  response.set_model_sha256(model_sha256);
  MIXQ_ASSIGN_OR_RETURN(
      std::vector<v1::Policy> ranked,
      RankedPolicies(request.job_id(), model_sha256, limits, top_k));
  for (v1::Policy& policy : ranked)
    *response.add_policies() = std::move(policy);
  return response;
}

absl::StatusOr<v1::GetParetoFrontResponse> JobManager::GetParetoFront(
    const v1::GetParetoFrontRequest& request) const {
  MIXQ_RETURN_IF_ERROR(
      CheckPolicySelector(request.job_id(), request.model_sha256()));
  const bool by_model = request.same_model() || !request.model_sha256().empty();
  v1::GetParetoFrontResponse response;
  response.set_job_id(request.job_id());
  // The job whose FP32 figures are the reference: the one named, else the
  // newest job on the model that measured its validation set.
  std::optional<storage::JobRecord> reference;
  std::string model_sha256 = request.model_sha256();
  if (!request.job_id().empty()) {
    MIXQ_ASSIGN_OR_RETURN(reference, store_->GetJob(request.job_id()));
    if (by_model) model_sha256 = reference->model_sha256;
  } else {
    MIXQ_ASSIGN_OR_RETURN(std::vector<storage::JobRecord> jobs,
                          store_->ListJobsForModel(model_sha256));
    if (jobs.empty()) {
      return absl::NotFoundError(
          absl::StrCat("no job on model ", model_sha256));
    }
    reference = jobs.front();
    for (const storage::JobRecord& job : jobs) {
      if (!std::isnan(job.fp32_val_accuracy)) {
        reference = job;
        break;
      }
    }
  }
  if (by_model) response.set_model_sha256(reference->model_sha256);
  MIXQ_ASSIGN_OR_RETURN(std::vector<storage::LayerRecord> layers,
                        store_->GetLayers(reference->id));
  double fp32_bops = 0;
  for (const auto& layer : layers) {
    fp32_bops += static_cast<double>(layer.macs) * search::kFloatBits *
                 search::kFloatBits;
  }
  response.set_fp32_size_bytes(reference->fp32_size_bytes);
  response.set_fp32_bops(fp32_bops);
  response.set_fp32_val_accuracy(reference->fp32_val_accuracy);
  response.set_fp32_val_loss(reference->fp32_val_loss);
  MIXQ_ASSIGN_OR_RETURN(
      std::vector<v1::Policy> kept,
      RankedPolicies(by_model ? "" : request.job_id(),
                     by_model ? model_sha256 : "", storage::PolicyLimits{},
                     std::numeric_limits<int32_t>::max()));
  for (v1::Policy& policy : ParetoFront(std::move(kept)))
    *response.add_policies() = std::move(policy);
  return response;
}

absl::StatusOr<std::unique_ptr<ArtifactUpload>> JobManager::BeginUpload(
    const v1::ArtifactInfo& info) {
  return ArtifactUpload::Begin(store_, info, options_.max_artifact_bytes);
}

absl::StatusOr<ExportedDocument> JobManager::Export(
    const v1::ExportModelRequest& request) const {
  MIXQ_RETURN_IF_ERROR(CheckJobId(request.job_id()));
  if (request.policy_id().size() > kMaxPolicyIdLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "policy_id: longer than ", kMaxPolicyIdLength, " characters"));
  }
  return ExportJob(*store_, request.job_id(), request.format(),
                   request.policy_id());
}

absl::StatusOr<v1::Job> JobManager::Cancel(const std::string& job_id) {
  MIXQ_RETURN_IF_ERROR(CheckJobId(job_id));
  MIXQ_ASSIGN_OR_RETURN(storage::JobRecord job, store_->GetJob(job_id));
  if (storage::IsTerminal(job.state)) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " already ended (",
                     storage::JobStateName(job.state), ")"));
  }
  bool was_queued = false;
  size_t position = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = std::find(queue_.begin(), queue_.end(), job_id);
    if (it != queue_.end()) {
      position = static_cast<size_t>(it - queue_.begin());
      queue_.erase(it);
      was_queued = true;
    } else if (auto running = running_.find(job_id);
               running != running_.end()) {
      running->second->store(true);
    }
  }
  if (was_queued) {
    constexpr char kCancelled[] = "cancelled by request";
    // On the RPC thread, not retried: a full disk is the caller's error,
    // and the job keeps its place.
    const absl::Status ended = store_->UpdateJobState(
        job_id, storage::JobState::kCancelled, kCancelled, 0, NowMs());
    if (!ended.ok()) {
      absl::MutexLock lock(&mu_);
      queue_.insert(queue_.begin() + static_cast<std::ptrdiff_t>(
                                         std::min(position, queue_.size())),
                    job_id);
      return ended;
    }
    PublishEnd(job_id, storage::JobState::kCancelled, kCancelled);
  }
  Log(LogLevel::kInfo, "job cancel requested", {{"job", job_id}});
  MIXQ_ASSIGN_OR_RETURN(job, store_->GetJob(job_id));
  return BuildJob(job);
}

absl::StatusOr<v1::JobEvent> JobManager::Subscribe(
    const std::string& job_id, const std::shared_ptr<Subscriber>& subscriber) {
  MIXQ_RETURN_IF_ERROR(CheckJobId(job_id));
  MIXQ_ASSIGN_OR_RETURN(storage::JobRecord job, store_->GetJob(job_id));
  MIXQ_ASSIGN_OR_RETURN(std::optional<storage::PolicyRecord> final_policy,
                        store_->GetFinalPolicy(job_id));
  absl::MutexLock lock(&mu_);
  v1::JobEvent snapshot;
  if (auto latest = latest_.find(job_id); latest != latest_.end()) {
    snapshot = latest->second;
  } else {
    // Not running now: describe it from the store. Re-read the state under
    // the lock so a job that just ended is seen as ended.
    MIXQ_ASSIGN_OR_RETURN(job, store_->GetJob(job_id));
    snapshot.set_job_id(job_id);
    snapshot.set_state(ToProto(job.state));
    snapshot.set_step(job.steps_done);
    snapshot.set_error(job.error);
    // A running job without an event yet is loading its model and data.
    snapshot.set_phase(storage::IsTerminal(job.state)             ? "done"
                       : job.state == storage::JobState::kRunning ? "loading"
                                                                  : "queued");
    snapshot.set_fp32_val_accuracy(job.fp32_val_accuracy);
    snapshot.set_accuracy(std::numeric_limits<double>::quiet_NaN());
    snapshot.set_loss(std::numeric_limits<double>::quiet_NaN());
    snapshot.set_val_accuracy(std::numeric_limits<double>::quiet_NaN());
    snapshot.set_val_loss(std::numeric_limits<double>::quiet_NaN());
    if (job.state == storage::JobState::kSucceeded) {
      MIXQ_ASSIGN_OR_RETURN(final_policy, store_->GetFinalPolicy(job_id));
      if (final_policy.has_value()) {
        snapshot.set_avg_bits(final_policy->avg_bits);
        snapshot.set_size_bytes(final_policy->size_bytes);
        snapshot.set_accuracy(final_policy->accuracy);
        snapshot.set_loss(final_policy->loss);
        snapshot.set_val_accuracy(final_policy->val_accuracy);
        snapshot.set_val_loss(final_policy->val_loss);
        snapshot.set_policy_id(PolicyId(*final_policy));
      }
      snapshot.set_progress(1.0);
    }
  }
  subscriber->OnEvent(snapshot);
  if (!storage::IsTerminal(job.state) || latest_.count(job_id) > 0) {
    subscribers_.emplace(job_id, subscriber);
  }
  return snapshot;
}

void JobManager::Unsubscribe(const std::string& job_id,
                             const Subscriber* subscriber) {
  absl::MutexLock lock(&mu_);
  auto [begin, end] = subscribers_.equal_range(job_id);
  for (auto it = begin; it != end;) {
    auto locked = it->second.lock();
    if (locked == nullptr || locked.get() == subscriber) {
      it = subscribers_.erase(it);
    } else {
      ++it;
    }
  }
}

void JobManager::Publish(const v1::JobEvent& event) {
  std::vector<std::shared_ptr<Subscriber>> targets;
  {
    absl::MutexLock lock(&mu_);
    const bool terminal = event.state() == v1::SUCCEEDED ||
                          event.state() == v1::FAILED ||
                          event.state() == v1::CANCELLED;
    if (terminal) {
      latest_.erase(event.job_id());
    } else {
      latest_[event.job_id()] = event;
    }
    auto [begin, end] = subscribers_.equal_range(event.job_id());
    for (auto it = begin; it != end;) {
      if (auto locked = it->second.lock()) {
        targets.push_back(std::move(locked));
        ++it;
      } else {
        it = subscribers_.erase(it);
      }
    }
    if (terminal) subscribers_.erase(event.job_id());
    // Delivered under the lock so that events reach each subscriber in
    // publication order and never before its snapshot.
    for (const auto& target : targets) target->OnEvent(event);
  }
}

void JobManager::EndJob(const std::string& job_id, storage::JobState state,
                        const std::string& error) {
  const absl::Status updated = WriteUntilStored(job_id, "job end", [&] {
    return store_->UpdateJobState(job_id, state, error, 0, NowMs());
  });
  if (!updated.ok()) {
    // Not recorded: subscribers are not told an end the store does not
    // hold. The job is found unfinished at the next start.
    Log(LogLevel::kError, "cannot record job end",
        {{"job", job_id},
         {"state", std::string(storage::JobStateName(state))},
         {"error", updated.ToString()}});
    return;
  }
  PublishEnd(job_id, state, error);
}

void JobManager::PublishEnd(const std::string& job_id, storage::JobState state,
                            const std::string& error) {
  Log(state == storage::JobState::kFailed ? LogLevel::kWarning
                                          : LogLevel::kInfo,
      "job ended",
      {{"job", job_id},
       {"state", std::string(storage::JobStateName(state))},
       {"error", error}});
  v1::JobEvent event;
  event.set_job_id(job_id);
  event.set_state(ToProto(state));
  event.set_phase("done");
  event.set_error(error);
  Publish(event);
}

void JobManager::WorkerLoop() {
  engine::SetEngineThreads(options_.engine_threads);
  while (true) {
    std::string job_id;
    auto cancel = std::make_shared<std::atomic<bool>>(false);
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](JobManager* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
            return self->shutdown_ || !self->queue_.empty();
          },
          this));
      if (shutdown_) return;
      job_id = queue_.front();
      queue_.pop_front();
      running_[job_id] = cancel;
    }
    RunJob(job_id, *cancel);
    absl::MutexLock lock(&mu_);
    running_.erase(job_id);
  }
}

void JobManager::RunJob(const std::string& job_id,
                        const std::atomic<bool>& cancel) {
  auto job = store_->GetJob(job_id);
  if (!job.ok()) {
    Log(LogLevel::kError, "cannot load job",
        {{"job", job_id}, {"error", std::string(job.status().message())}});
    return;
  }
  const absl::Status status = RunSearch(*job, cancel);
  if (status.ok()) return;
  bool shutting_down;
  {
    absl::MutexLock lock(&mu_);
    shutting_down = shutdown_;
    latest_.erase(job_id);
  }
  if (absl::IsCancelled(status) && shutting_down) {
    // Interrupted by shutdown: a clean stop (not counted towards
    // quarantine); it runs again at the next start. If even this write
    // fails (a full disk), the job is found running then, and re-queued.
    const absl::Status stopped = store_->StopJob(job_id);
    Log(stopped.ok() ? LogLevel::kInfo : LogLevel::kWarning,
        stopped.ok() ? "job interrupted by shutdown; re-queued"
                     : "job interrupted by shutdown; cannot record the stop",
        {{"job", job_id}, {"error", stopped.ToString()}});
    return;
  }
  if (absl::IsCancelled(status)) {
    EndJob(job_id, storage::JobState::kCancelled, "cancelled by request");
  } else {
    EndJob(job_id, storage::JobState::kFailed, status.ToString());
  }
}

absl::Status JobManager::RunSearch(const storage::JobRecord& job,
                                   const std::atomic<bool>& cancel) {
  // Marked running (and the start counted) before anything that could take
  // the process down: the model's import included.
  const int64_t started_ms = NowMs();
  MIXQ_RETURN_IF_ERROR(WriteUntilStored(job.id, "job start", [&] {
    return store_->StartJob(job.id, started_ms);
  }));
  MIXQ_ASSIGN_OR_RETURN(v1::JobSpec spec, LoadSpec(job));
  JobFiles files;
  MIXQ_ASSIGN_OR_RETURN(
      files.model,
      ReadVerifiedArtifact(store_, job.model_sha256, "spec.model"));
  MIXQ_ASSIGN_OR_RETURN(
      files.inputs,
      ReadVerifiedArtifact(store_, job.inputs_sha256, "spec.inputs"));
  if (!job.labels_sha256.empty()) {
    MIXQ_ASSIGN_OR_RETURN(
        files.labels,
        ReadVerifiedArtifact(store_, job.labels_sha256, "spec.labels"));
  }
  // Named by SHA-256 in the stored spec (see Submit).
  if (spec.has_val_inputs()) {
    MIXQ_ASSIGN_OR_RETURN(files.val_inputs,
                          ReadSource(spec.val_inputs(), "spec.val_inputs"));
  }
  if (spec.has_val_labels()) {
    MIXQ_ASSIGN_OR_RETURN(files.val_labels,
                          ReadSource(spec.val_labels(), "spec.val_labels"));
  }
  MIXQ_ASSIGN_OR_RETURN(PreparedJob prepared, PrepareJob(spec, files));
  // Distilling: the FP32 outputs, once per data set (every resume recomputes
  // the same ones: the model and data are fixed).
  MIXQ_RETURN_IF_ERROR(AttachTeachers(&prepared));
  // A job a previous process was running resumes after its last
  // checkpointed step (steps recorded after it, if any, are dropped); one
  // without a checkpoint starts over.
  MIXQ_ASSIGN_OR_RETURN(std::optional<storage::CheckpointRecord> checkpoint,
                        store_->GetCheckpoint(job.id));
  if (checkpoint.has_value()) {
    MIXQ_RETURN_IF_ERROR(WriteUntilStored(job.id, "results reset", [&] {
      return store_->ResetJobResults(job.id, checkpoint->step);
    }));
  } else if (job.steps_done > 0) {
    MIXQ_RETURN_IF_ERROR(WriteUntilStored(job.id, "results reset", [&] {
      return store_->ResetJobResults(job.id);
    }));
  }
  // A job started from another's warm-up (and not resuming its own
  // checkpoint) starts from that job's state; empty for other jobs.
  const auto load_warm_start = [&]() -> absl::StatusOr<std::string> {
    if (spec.from_job().empty()) return std::string();
    MIXQ_ASSIGN_OR_RETURN(std::optional<std::string> state,
                          store_->GetWarmStart(spec.from_job()));
    if (!state.has_value()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "from_job: job ", spec.from_job(), " has no warm-up state"));
    }
    return *std::move(state);
  };
  std::string warm_start;
  if (!checkpoint.has_value()) {
    MIXQ_ASSIGN_OR_RETURN(warm_start, load_warm_start());
  }
  if (checkpoint.has_value()) {
    Log(LogLevel::kInfo, "job resumed",
        {{"job", job.id}, {"after_step", absl::StrCat(checkpoint->step)}});
  } else {
    Log(LogLevel::kInfo, "job started", {{"job", job.id}});
  }

  // The FP32 model on the validation set: the reference every kept
  // policy's validation accuracy is read against.
  double fp32_val_accuracy = job.fp32_val_accuracy;
  if (std::isnan(fp32_val_accuracy) && prepared.val.size() > 0) {
    MIXQ_ASSIGN_OR_RETURN(const engine::ClassifierScore fp32,
                          MeasureExport(prepared.prepared_onnx, prepared.val));
    MIXQ_RETURN_IF_ERROR(WriteUntilStored(job.id, "FP32 validation", [&] {
      return store_->SetFp32Validation(job.id, fp32.loss, fp32.accuracy);
    }));
    fp32_val_accuracy = fp32.accuracy;
  }

  const search::CostModel cost = search::CostModel::ForModel(*prepared.model);
  const search::Budget& budget = prepared.options.budget;
  const int activation_bits = prepared.options.activation_bits;
  const search::PolicyCost start =
      cost.Cost(prepared.candidate_bits.Highest(), activation_bits);
  v1::JobEvent event;
  event.set_job_id(job.id);
  event.set_state(v1::RUNNING);
  if (budget.kind == search::Budget::Kind::kAvgBits)
    event.set_target_avg_bits(budget.value);
  event.set_target_size_bytes(budget.MaxSizeBytes(cost) < cost.Fp32SizeBytes()
                                  ? budget.MaxSizeBytes(cost)
                                  : 0);
  event.set_avg_bits(start.avg_bits);
  event.set_size_bytes(start.size_bytes);
  event.set_fp32_val_accuracy(fp32_val_accuracy);
  // Nothing is measured before the warm-up's policy is: NaN, not 0 %.
  event.set_accuracy(std::numeric_limits<double>::quiet_NaN());
  event.set_loss(std::numeric_limits<double>::quiet_NaN());
  event.set_val_accuracy(std::numeric_limits<double>::quiet_NaN());
  event.set_val_loss(std::numeric_limits<double>::quiet_NaN());

  search::SearchObserver observer;
  observer.cancel = &cancel;
  observer.checkpoints = true;
  // Stopped inside a fine-tune (shutdown, or a cancel that ends the job and
  // drops it): keep the point it stopped at, to resume from.
  observer.on_interrupted = [&](std::string checkpoint, int recorded_step) {
    const absl::Status saved = WriteUntilStored(job.id, "checkpoint", [&] {
      return store_->SaveCheckpoint(job.id, recorded_step, checkpoint);
    });
    LogFields fields = {{"job", job.id},
                        {"after_step", absl::StrCat(recorded_step)},
                        {"checkpoint_bytes", absl::StrCat(checkpoint.size())}};
    if (!saved.ok()) fields.emplace_back("error", saved.ToString());
    Log(saved.ok() ? LogLevel::kInfo : LogLevel::kWarning,
        saved.ok() ? "job checkpointed inside a fine-tune"
                   : "cannot checkpoint the stopped fine-tune",
        fields);
  };
  observer.on_phase = [&](search::Phase phase, int step) {
    event.set_phase(phase == search::Phase::kWarmup   ? "warmup"
                    : phase == search::Phase::kSearch ? "search"
                                                      : "final");
    // One numbering everywhere (watch, status, results): steps 1..N are
    // the search's, and the final fine-tune, which the search numbers N + 1,
    // shows the last search step done, as Job.steps_done does.
    event.set_step(phase == search::Phase::kFinal ? step - 1 : step);
    if (phase == search::Phase::kFinal) event.set_progress(kFinalPhaseProgress);
    Publish(event);
  };
  // Every kept policy is exported, measured on the validation set and
  // stored as it is kept, while the session holds its weights; its record
  // (on_step, FinishJob) then names the export.
  int final_step = 0;
  KeptPolicyExport kept_export;
  observer.on_kept = [&](const search::QatSession& session, int step,
                         search::ScoredPolicy* kept) -> absl::Status {
    const search::Phase phase = step > 0 && step == final_step
                                    ? search::Phase::kFinal
                                    : search::Phase::kSearch;
    // A put cut short by shutdown (the disk full) stops the search: the
    // step is then not recorded, and runs again at the next start.
    absl::Status put;
    kept_export = ExportKeptPolicy(
        [&](const std::string& sha256, absl::string_view data) {
          put = WriteUntilStored(job.id, "kept policy export", [&] {
            return store_->PutArtifact(sha256, data);
          });
          return put;
        },
        job.id,
        phase == search::Phase::kFinal
            ? std::string(kFinalPolicyId)
            : absl::StrCat(kStepPolicyIdPrefix, step),
        prepared.prepared_onnx, *prepared.model, session, kept->policy,
        prepared.val);
    kept->val_loss = kept_export.val_loss;
    kept->val_accuracy = kept_export.val_accuracy;
    if (absl::IsCancelled(put)) return put;
    return absl::OkStatus();
  };
  observer.on_step = [&](const search::StepReport& report) -> absl::Status {
    // The step and the state after it, in one transaction.
    const absl::Time store_start = absl::Now();
    storage::StepRecord record = ToRecord(report);
    record.finetuned.export_sha256 = kept_export.sha256;
    MIXQ_RETURN_IF_ERROR(WriteUntilStored(job.id, "step", [&] {
      return store_->AppendStep(job.id, record, report.checkpoint);
    }));
    const double store_ms =
        absl::ToDoubleMilliseconds(absl::Now() - store_start);
    event.set_step(report.step);
    event.set_avg_bits(report.finetuned.avg_bits);
    event.set_size_bytes(report.finetuned.size_bytes);
    event.set_accuracy(report.finetuned.accuracy);
    event.set_loss(report.finetuned.loss);
    event.set_val_accuracy(report.finetuned.val_accuracy);
    event.set_val_loss(report.finetuned.val_loss);
    event.set_policy_id(PolicyId(record.finetuned));
    event.set_progress(Progress(budget, start,
                                cost.Cost(report.finetuned.policy,
                                          report.finetuned.activation_bits > 0
                                              ? report.finetuned.activation_bits
                                              : activation_bits)));
    Log(LogLevel::kInfo, "job step",
        {{"job", job.id},
         {"step", absl::StrCat(report.step)},
         {"policy", search::PolicyToString(report.finetuned.policy)},
         {"avg_bits", absl::StrFormat("%.3f", report.finetuned.avg_bits)},
         {"accuracy", absl::StrFormat("%.4f", report.finetuned.accuracy)},
         {"val_accuracy",
          absl::StrFormat("%.4f", report.finetuned.val_accuracy)},
         {"checkpoint_bytes", absl::StrCat(report.checkpoint.size())},
         {"store_ms", absl::StrFormat("%.1f", store_ms)}});
    Publish(event);
    return absl::OkStatus();
  };
  observer.on_phase = [&, publish = observer.on_phase](search::Phase phase,
                                                       int step) {
    if (phase == search::Phase::kFinal) final_step = step;
    publish(phase, step);
  };
  absl::StatusOr<search::SearchResult> run = search::RunProgressiveSearch(
      *prepared.model, prepared.calib, prepared.train, prepared.options,
      observer, checkpoint.has_value() ? checkpoint->state : "", warm_start);
  if (checkpoint.has_value() && search::IsUnusableCheckpoint(run.status())) {
    // Written by another mixq version, say: start over rather than fail.
    Log(LogLevel::kWarning, "job checkpoint unusable; starting over",
        {{"job", job.id}, {"error", std::string(run.status().message())}});
    MIXQ_RETURN_IF_ERROR(WriteUntilStored(job.id, "results reset", [&] {
      return store_->ResetJobResults(job.id);
    }));
    MIXQ_ASSIGN_OR_RETURN(warm_start, load_warm_start());
    run = search::RunProgressiveSearch(*prepared.model, prepared.calib,
                                       prepared.train, prepared.options,
                                       observer, "", warm_start);
  }
  MIXQ_ASSIGN_OR_RETURN(search::SearchResult result, std::move(run));
  storage::PolicyRecord final_record =
      ToRecord(result.final_policy, storage::PolicyKind::kFinal,
               result.steps + 1, 0, false);
  final_record.export_sha256 = kept_export.sha256;
  const int64_t finished_ms = NowMs();
  MIXQ_RETURN_IF_ERROR(WriteUntilStored(job.id, "job end", [&] {
    return store_->FinishJob(job.id, final_record, finished_ms,
                             kept_export.sha256);
  }));
  Log(LogLevel::kInfo, "job succeeded",
      {{"job", job.id},
       {"policy", search::PolicyToString(result.final_policy.policy)},
       {"avg_bits", absl::StrFormat("%.3f", result.final_policy.avg_bits)},
       {"accuracy", absl::StrFormat("%.4f", result.final_policy.accuracy)},
       {"val_accuracy",
        absl::StrFormat("%.4f", result.final_policy.val_accuracy)}});
  event.set_state(v1::SUCCEEDED);
  event.set_phase("done");
  event.set_step(result.steps);
  event.set_avg_bits(result.final_policy.avg_bits);
  event.set_size_bytes(result.final_policy.size_bytes);
  event.set_accuracy(result.final_policy.accuracy);
  event.set_loss(result.final_policy.loss);
  event.set_val_accuracy(result.final_policy.val_accuracy);
  event.set_val_loss(result.final_policy.val_loss);
  event.set_policy_id(PolicyId(final_record));
  event.set_progress(1.0);
  Publish(event);
  return absl::OkStatus();
}

}  // namespace mixq::server
