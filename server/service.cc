#include "server/service.h"

#include <deque>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "util/logging.h"

namespace mixq::server {
namespace {

// UploadArtifact's initial metadata key (see proto/mixq.proto).
constexpr char kArtifactExistingKey[] = "mixq-artifact-existing";
// ExportModel's chunk size: well within any message size limit.
constexpr size_t kExportChunkBytes = size_t{1} << 20;

bool IsTerminal(v1::JobState state) {
  return state == v1::SUCCEEDED || state == v1::FAILED ||
         state == v1::CANCELLED;
}

// A server stream refused before it started (e.g. unauthenticated): finishes
// at once with `status`. Owns itself; OnDone deletes it.
template <typename Message>
class RefusedWriteReactor final : public grpc::ServerWriteReactor<Message> {
 public:
  explicit RefusedWriteReactor(const grpc::Status& status) {
    this->Finish(status);
  }
  void OnDone() override { delete this; }
};

// Streams one job's events to one client. The reactor owns itself (gRPC
// deletes nothing; OnDone deletes it). Events arrive from JobManager on
// worker threads through WatchSubscriber, which outlives the reactor as long
// as the manager holds it and stops forwarding once the reactor is done.
class WatchReactor;

class WatchSubscriber final : public JobManager::Subscriber {
 public:
  explicit WatchSubscriber(WatchReactor* reactor) : reactor_(reactor) {}
  void OnEvent(const v1::JobEvent& event) override;
  // Called by the reactor when it is done; no event is forwarded after.
  void Detach() {
    absl::MutexLock lock(&mu_);
    reactor_ = nullptr;
  }

 private:
  absl::Mutex mu_;
  WatchReactor* reactor_ ABSL_GUARDED_BY(mu_);
};

class WatchReactor final : public grpc::ServerWriteReactor<v1::JobEvent> {
 public:
  WatchReactor(JobManager* manager, std::string job_id)
      : manager_(manager),
        job_id_(std::move(job_id)),
        subscriber_(std::make_shared<WatchSubscriber>(this)) {
    const auto snapshot = manager_->Subscribe(job_id_, subscriber_);
    if (!snapshot.ok()) {
      Log(LogLevel::kInfo, "RPC failed",
          {{"method", "WatchJob"},
           {"code", absl::StatusCodeToString(snapshot.status().code())},
           {"job", job_id_},
           {"error", std::string(snapshot.status().message())}});
      absl::MutexLock lock(&mu_);
      finished_ = true;
      Finish(ToGrpcStatus(snapshot.status()));
    }
  }

  // Queues an event and starts writing if idle.
  void Enqueue(const v1::JobEvent& event) {
    absl::MutexLock lock(&mu_);
    if (finished_ || ended_) return;
    pending_.push_back(event);
    if (IsTerminal(event.state())) ended_ = true;
    WriteNextLocked();
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      // The client went away; OnCancel/Finish follow.
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "stream closed"));
      return;
    }
    WriteNextLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled"));
  }

  void OnDone() override {
    subscriber_->Detach();
    manager_->Unsubscribe(job_id_, subscriber_.get());
    delete this;
  }

 private:
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return;
    if (pending_.empty()) {
      if (ended_) FinishLocked(grpc::Status::OK);
      return;
    }
    current_ = std::move(pending_.front());
    pending_.pop_front();
    writing_ = true;
    StartWrite(&current_);
  }

  void FinishLocked(const grpc::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  JobManager* const manager_;
  const std::string job_id_;
  const std::shared_ptr<WatchSubscriber> subscriber_;
  absl::Mutex mu_;
  std::deque<v1::JobEvent> pending_ ABSL_GUARDED_BY(mu_);
  v1::JobEvent current_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;     // the terminal event is queued
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // Finish was called
};

void WatchSubscriber::OnEvent(const v1::JobEvent& event) {
  absl::MutexLock lock(&mu_);
  if (reactor_ != nullptr) reactor_->Enqueue(event);
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

MixqService::MixqService(JobManager* manager,
                         const TokenAuthenticator* authenticator)
    : manager_(manager), authenticator_(authenticator) {}

grpc::Status MixqService::Authorize(const grpc::ServerContextBase* context,
                                    const char* method) const {
  if (authenticator_ == nullptr) return grpc::Status::OK;
  grpc::Status status = authenticator_->Check(*context);
  if (!status.ok()) {
    Log(LogLevel::kWarning, "RPC refused",
        {{"method", method},
         {"code", "UNAUTHENTICATED"},
         {"peer", context->peer()},
         {"error", status.error_message()}});
  }
  return status;
}

grpc::Status MixqService::Fail(const char* method, const std::string& job_id,
                               const absl::Status& status) const {
  LogFields fields = {{"method", method},
                      {"code", absl::StatusCodeToString(status.code())}};
  if (!job_id.empty()) fields.emplace_back("job", job_id);
  fields.emplace_back("error", std::string(status.message()));
  // The caller's mistakes are routine; the server's own failures are not.
  const bool server_fault = absl::IsInternal(status) ||
                            absl::IsUnknown(status) || absl::IsDataLoss(status);
  Log(server_fault ? LogLevel::kWarning : LogLevel::kInfo, "RPC failed",
      fields);
  return ToGrpcStatus(status);
}

grpc::Status MixqService::SubmitJob(grpc::ServerContext* context,
                                    const v1::SubmitJobRequest* request,
                                    v1::SubmitJobResponse* response) {
  if (grpc::Status denied = Authorize(context, "SubmitJob"); !denied.ok()) {
    return denied;
  }
  auto result = manager_->Submit(*request);
  if (!result.ok()) return Fail("SubmitJob", "", result.status());
  *response->mutable_job() = std::move(result->job);
  response->set_existing(result->existing);
  return grpc::Status::OK;
}

grpc::Status MixqService::EvaluatePolicy(
    grpc::ServerContext* context, const v1::EvaluatePolicyRequest* request,
    v1::EvaluatePolicyResponse* response) {
  if (grpc::Status denied = Authorize(context, "EvaluatePolicy");
      !denied.ok()) {
    return denied;
  }
  auto result = manager_->Evaluate(*request);
  if (!result.ok()) return Fail("EvaluatePolicy", "", result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

grpc::Status MixqService::GetJob(grpc::ServerContext* context,
                                 const v1::GetJobRequest* request,
                                 v1::Job* response) {
  if (grpc::Status denied = Authorize(context, "GetJob"); !denied.ok()) {
    return denied;
  }
  auto job = manager_->GetJob(request->job_id());
  if (!job.ok()) return Fail("GetJob", request->job_id(), job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status MixqService::ListJobs(grpc::ServerContext* context,
                                   const v1::ListJobsRequest* request,
                                   v1::ListJobsResponse* response) {
  if (grpc::Status denied = Authorize(context, "ListJobs"); !denied.ok()) {
    return denied;
  }
  auto jobs = manager_->ListJobs(*request);
  if (!jobs.ok()) return Fail("ListJobs", "", jobs.status());
  *response = *std::move(jobs);
  return grpc::Status::OK;
}

grpc::Status MixqService::GetResults(grpc::ServerContext* context,
                                     const v1::GetResultsRequest* request,
                                     v1::GetResultsResponse* response) {
  if (grpc::Status denied = Authorize(context, "GetResults"); !denied.ok()) {
    return denied;
  }
  auto results = manager_->GetResults(request->job_id());
  if (!results.ok()) {
    return Fail("GetResults", request->job_id(), results.status());
  }
  *response = *std::move(results);
  return grpc::Status::OK;
}

grpc::Status MixqService::QueryBestPolicies(
    grpc::ServerContext* context, const v1::QueryBestPoliciesRequest* request,
    v1::QueryBestPoliciesResponse* response) {
  if (grpc::Status denied = Authorize(context, "QueryBestPolicies");
      !denied.ok()) {
    return denied;
  }
  auto best = manager_->QueryBestPolicies(*request);
  if (!best.ok()) {
    return Fail("QueryBestPolicies", request->job_id(), best.status());
  }
  *response = *std::move(best);
  return grpc::Status::OK;
}

grpc::Status MixqService::GetParetoFront(
    grpc::ServerContext* context, const v1::GetParetoFrontRequest* request,
    v1::GetParetoFrontResponse* response) {
  if (grpc::Status denied = Authorize(context, "GetParetoFront");
      !denied.ok()) {
    return denied;
  }
  auto front = manager_->GetParetoFront(*request);
  if (!front.ok()) {
    return Fail("GetParetoFront", request->job_id(), front.status());
  }
  *response = *std::move(front);
  return grpc::Status::OK;
}

grpc::Status MixqService::CancelJob(grpc::ServerContext* context,
                                    const v1::CancelJobRequest* request,
                                    v1::Job* response) {
  if (grpc::Status denied = Authorize(context, "CancelJob"); !denied.ok()) {
    return denied;
  }
  auto job = manager_->Cancel(request->job_id());
  if (!job.ok()) return Fail("CancelJob", request->job_id(), job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status MixqService::UploadArtifact(
    grpc::ServerContext* context,
    grpc::ServerReader<v1::UploadArtifactRequest>* reader,
    v1::Artifact* response) {
  if (grpc::Status denied = Authorize(context, "UploadArtifact");
      !denied.ok()) {
    return denied;
  }
  v1::UploadArtifactRequest message;
  if (!reader->Read(&message) || !message.has_info()) {
    return Fail("UploadArtifact", "",
                absl::InvalidArgumentError(
                    "info: required in the first message of an upload"));
  }
  const std::string filename = message.info().filename();
  auto upload = manager_->BeginUpload(message.info());
  if (!upload.ok()) return Fail("UploadArtifact", "", upload.status());
  // Tells the client, before it sends a byte, whether chunks are wanted.
  context->AddInitialMetadata(kArtifactExistingKey,
                              (*upload)->existing() ? "true" : "false");
  if (!(*upload)->existing()) {
    reader->SendInitialMetadata();
    while (reader->Read(&message)) {
      if (!message.has_chunk()) {
        return Fail("UploadArtifact", "",
                    absl::InvalidArgumentError(
                        "info: only the first message may carry it"));
      }
      // Returning on an error stops reading the rest of the stream.
      const absl::Status appended = (*upload)->Append(message.chunk());
      if (!appended.ok()) return Fail("UploadArtifact", "", appended);
    }
    if (context->IsCancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "upload cancelled");
    }
  }
  auto artifact = (*upload)->Finish();
  if (!artifact.ok()) return Fail("UploadArtifact", "", artifact.status());
  Log(LogLevel::kInfo, "artifact uploaded",
      {{"sha256", artifact->sha256()},
       {"bytes", absl::StrCat(artifact->size_bytes())},
       {"filename", filename},
       {"existing", artifact->existing() ? "true" : "false"}});
  *response = *std::move(artifact);
  return grpc::Status::OK;
}

grpc::Status MixqService::ExportModel(
    grpc::ServerContext* context, const v1::ExportModelRequest* request,
    grpc::ServerWriter<v1::ExportChunk>* writer) {
  if (grpc::Status denied = Authorize(context, "ExportModel"); !denied.ok()) {
    return denied;
  }
  auto document = manager_->Export(*request);
  if (!document.ok()) {
    return Fail("ExportModel", request->job_id(), document.status());
  }
  const absl::string_view data = document->data;
  size_t offset = 0;
  do {
    v1::ExportChunk chunk;
    if (offset == 0) {
      chunk.set_total_bytes(static_cast<int64_t>(data.size()));
      chunk.set_sha256(document->sha256);
      chunk.set_filename(document->filename);
    }
    const absl::string_view part = data.substr(offset, kExportChunkBytes);
    chunk.set_data(part.data(), part.size());
    offset += part.size();
    if (!writer->Write(chunk)) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    }
  } while (offset < data.size());
  return grpc::Status::OK;
}

grpc::ServerWriteReactor<v1::JobEvent>* MixqService::WatchJob(
    grpc::CallbackServerContext* context, const v1::WatchJobRequest* request) {
  if (grpc::Status denied = Authorize(context, "WatchJob"); !denied.ok()) {
    return new RefusedWriteReactor<v1::JobEvent>(denied);
  }
  return new WatchReactor(manager_, request->job_id());
}

}  // namespace mixq::server
