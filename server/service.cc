#include "server/service.h"

#include <deque>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/request_limits.h"
#include "util/logging.h"

namespace mixq::server {
namespace {

// UploadArtifact's initial metadata key (see proto/mixq.proto).
constexpr char kArtifactExistingKey[] = "mixq-artifact-existing";
// ExportModel's chunk size: well within any message size limit.
constexpr size_t kExportChunkBytes = size_t{1} << 20;

// The failure a stream or call the client abandoned is logged as.
absl::Status ClientWentAway(absl::string_view what) {
  return absl::CancelledError(absl::StrCat(
      what,
      " cancelled: the client cancelled it, its deadline passed or the "
      "connection closed"));
}

// The log line of a failed RPC: method, code, job id (if any) and message.
// The caller's mistakes are routine; the server's own failures are not.
void LogFailure(absl::string_view method, absl::string_view job_id,
                const absl::Status& status) {
  LogFields fields = {{"method", std::string(method)},
                      {"code", absl::StatusCodeToString(status.code())}};
  if (!job_id.empty()) fields.emplace_back("job", std::string(job_id));
  fields.emplace_back("error", std::string(status.message()));
  const bool server_fault = absl::IsInternal(status) ||
                            absl::IsUnknown(status) || absl::IsDataLoss(status);
  Log(server_fault ? LogLevel::kWarning : LogLevel::kInfo, "RPC failed",
      fields);
}

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
      absl::MutexLock lock(&mu_);
      FinishLocked(snapshot.status());
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
      FinishLocked(ClientWentAway("watch"));
      return;
    }
    WriteNextLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    FinishLocked(ClientWentAway("watch"));
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
      if (ended_) FinishLocked(absl::OkStatus());
      return;
    }
    current_ = std::move(pending_.front());
    pending_.pop_front();
    writing_ = true;
    StartWrite(&current_);
  }

  // Ends the stream once; a failure (a cancelled watch too) is logged.
  void FinishLocked(const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    if (!status.ok()) LogFailure("WatchJob", job_id_, status);
    Finish(ToGrpcStatus(status));
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
                      Excerpt(status.message(), kMaxErrorMessageBytes));
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

grpc::Status MixqService::Admit(
    const grpc::ServerContextBase* context, const char* method,
    const google::protobuf::Message& request) const {
  if (grpc::Status denied = Authorize(context, method); !denied.ok()) {
    return denied;
  }
  // Before anything reads the request: its job id may be over the limit too,
  // so the failure is logged without one.
  const absl::Status within = CheckRequestLimits(request);
  if (!within.ok()) return Fail(method, "", within);
  return grpc::Status::OK;
}

grpc::Status MixqService::Fail(const char* method, const std::string& job_id,
                               const absl::Status& status) const {
  LogFailure(method, job_id, status);
  return ToGrpcStatus(status);
}

grpc::Status MixqService::Reply(const grpc::ServerContextBase* context,
                                const char* method,
                                const std::string& job_id) const {
  if (!context->IsCancelled()) return grpc::Status::OK;
  return Fail(method, job_id, ClientWentAway("call"));
}

grpc::Status MixqService::SubmitJob(grpc::ServerContext* context,
                                    const v1::SubmitJobRequest* request,
                                    v1::SubmitJobResponse* response) {
  if (grpc::Status refused = Admit(context, "SubmitJob", *request);
      !refused.ok()) {
    return refused;
  }
  auto result = manager_->Submit(*request);
  if (!result.ok()) return Fail("SubmitJob", "", result.status());
  *response->mutable_job() = std::move(result->job);
  response->set_existing(result->existing);
  return Reply(context, "SubmitJob", response->job().id());
}

grpc::Status MixqService::EvaluatePolicy(
    grpc::ServerContext* context, const v1::EvaluatePolicyRequest* request,
    v1::EvaluatePolicyResponse* response) {
  if (grpc::Status refused = Admit(context, "EvaluatePolicy", *request);
      !refused.ok()) {
    return refused;
  }
  auto result = manager_->Evaluate(*request);
  if (!result.ok()) return Fail("EvaluatePolicy", "", result.status());
  *response = *std::move(result);
  return Reply(context, "EvaluatePolicy", "");
}

grpc::Status MixqService::GetJob(grpc::ServerContext* context,
                                 const v1::GetJobRequest* request,
                                 v1::Job* response) {
  if (grpc::Status refused = Admit(context, "GetJob", *request);
      !refused.ok()) {
    return refused;
  }
  auto job = manager_->GetJob(request->job_id());
  if (!job.ok()) return Fail("GetJob", request->job_id(), job.status());
  *response = *std::move(job);
  return Reply(context, "GetJob", request->job_id());
}

grpc::Status MixqService::ListJobs(grpc::ServerContext* context,
                                   const v1::ListJobsRequest* request,
                                   v1::ListJobsResponse* response) {
  if (grpc::Status refused = Admit(context, "ListJobs", *request);
      !refused.ok()) {
    return refused;
  }
  auto jobs = manager_->ListJobs(*request);
  if (!jobs.ok()) return Fail("ListJobs", "", jobs.status());
  *response = *std::move(jobs);
  return Reply(context, "ListJobs", "");
}

grpc::Status MixqService::GetResults(grpc::ServerContext* context,
                                     const v1::GetResultsRequest* request,
                                     v1::GetResultsResponse* response) {
  if (grpc::Status refused = Admit(context, "GetResults", *request);
      !refused.ok()) {
    return refused;
  }
  auto results = manager_->GetResults(request->job_id());
  if (!results.ok()) {
    return Fail("GetResults", request->job_id(), results.status());
  }
  *response = *std::move(results);
  return Reply(context, "GetResults", request->job_id());
}

grpc::Status MixqService::QueryBestPolicies(
    grpc::ServerContext* context, const v1::QueryBestPoliciesRequest* request,
    v1::QueryBestPoliciesResponse* response) {
  if (grpc::Status refused = Admit(context, "QueryBestPolicies", *request);
      !refused.ok()) {
    return refused;
  }
  auto best = manager_->QueryBestPolicies(*request);
  if (!best.ok()) {
    return Fail("QueryBestPolicies", request->job_id(), best.status());
  }
  *response = *std::move(best);
  return Reply(context, "QueryBestPolicies", request->job_id());
}

grpc::Status MixqService::GetParetoFront(
    grpc::ServerContext* context, const v1::GetParetoFrontRequest* request,
    v1::GetParetoFrontResponse* response) {
  if (grpc::Status refused = Admit(context, "GetParetoFront", *request);
      !refused.ok()) {
    return refused;
  }
  auto front = manager_->GetParetoFront(*request);
  if (!front.ok()) {
    return Fail("GetParetoFront", request->job_id(), front.status());
  }
  *response = *std::move(front);
  return Reply(context, "GetParetoFront", request->job_id());
}

grpc::Status MixqService::CancelJob(grpc::ServerContext* context,
                                    const v1::CancelJobRequest* request,
                                    v1::Job* response) {
  if (grpc::Status refused = Admit(context, "CancelJob", *request);
      !refused.ok()) {
    return refused;
  }
  auto job = manager_->Cancel(request->job_id());
  if (!job.ok()) return Fail("CancelJob", request->job_id(), job.status());
  *response = *std::move(job);
  return Reply(context, "CancelJob", request->job_id());
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
  if (!reader->Read(&message) && context->IsCancelled()) {
    return Fail("UploadArtifact", "", ClientWentAway("upload"));
  }
  if (!message.has_info()) {
    return Fail("UploadArtifact", "",
                absl::InvalidArgumentError(
                    "info: required in the first message of an upload"));
  }
  if (const absl::Status within = CheckRequestLimits(message); !within.ok()) {
    return Fail("UploadArtifact", "", within);
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
      return Fail("UploadArtifact", "", ClientWentAway("upload"));
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
  return Reply(context, "UploadArtifact", "");
}

grpc::Status MixqService::ExportModel(
    grpc::ServerContext* context, const v1::ExportModelRequest* request,
    grpc::ServerWriter<v1::ExportChunk>* writer) {
  if (grpc::Status refused = Admit(context, "ExportModel", *request);
      !refused.ok()) {
    return refused;
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
      return Fail("ExportModel", request->job_id(), ClientWentAway("export"));
    }
  } while (offset < data.size());
  return Reply(context, "ExportModel", request->job_id());
}

grpc::ServerWriteReactor<v1::JobEvent>* MixqService::WatchJob(
    grpc::CallbackServerContext* context, const v1::WatchJobRequest* request) {
  if (grpc::Status refused = Admit(context, "WatchJob", *request);
      !refused.ok()) {
    return new RefusedWriteReactor<v1::JobEvent>(refused);
  }
  return new WatchReactor(manager_, request->job_id());
}

}  // namespace mixq::server
