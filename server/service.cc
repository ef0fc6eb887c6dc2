#include "server/service.h"

#include <deque>
#include <memory>

#include "absl/synchronization/mutex.h"
#include "util/logging.h"

namespace mixq::server {
namespace {

bool IsTerminal(v1::JobState state) {
  return state == v1::SUCCEEDED || state == v1::FAILED ||
         state == v1::CANCELLED;
}

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

MixqService::MixqService(JobManager* manager) : manager_(manager) {}

grpc::Status MixqService::SubmitJob(grpc::ServerContext*,
                                    const v1::SubmitJobRequest* request,
                                    v1::SubmitJobResponse* response) {
  auto result = manager_->Submit(*request);
  if (!result.ok()) {
    Log(LogLevel::kInfo, "SubmitJob refused",
        {{"error", result.status().ToString()}});
    return ToGrpcStatus(result.status());
  }
  *response->mutable_job() = std::move(result->job);
  response->set_existing(result->existing);
  return grpc::Status::OK;
}

grpc::Status MixqService::EvaluatePolicy(
    grpc::ServerContext*, const v1::EvaluatePolicyRequest* request,
    v1::EvaluatePolicyResponse* response) {
  auto result = manager_->Evaluate(*request);
  if (!result.ok()) {
    Log(LogLevel::kInfo, "EvaluatePolicy refused",
        {{"error", result.status().ToString()}});
    return ToGrpcStatus(result.status());
  }
  *response = *std::move(result);
  return grpc::Status::OK;
}

grpc::Status MixqService::GetJob(grpc::ServerContext*,
                                 const v1::GetJobRequest* request,
                                 v1::Job* response) {
  auto job = manager_->GetJob(request->job_id());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status MixqService::ListJobs(grpc::ServerContext*,
                                   const v1::ListJobsRequest* request,
                                   v1::ListJobsResponse* response) {
  auto jobs = manager_->ListJobs(*request);
  if (!jobs.ok()) return ToGrpcStatus(jobs.status());
  *response = *std::move(jobs);
  return grpc::Status::OK;
}

grpc::Status MixqService::GetResults(grpc::ServerContext*,
                                     const v1::GetResultsRequest* request,
                                     v1::GetResultsResponse* response) {
  auto results = manager_->GetResults(request->job_id());
  if (!results.ok()) return ToGrpcStatus(results.status());
  *response = *std::move(results);
  return grpc::Status::OK;
}

grpc::Status MixqService::QueryBestPolicies(
    grpc::ServerContext*, const v1::QueryBestPoliciesRequest* request,
    v1::QueryBestPoliciesResponse* response) {
  auto best = manager_->QueryBestPolicies(*request);
  if (!best.ok()) return ToGrpcStatus(best.status());
  *response = *std::move(best);
  return grpc::Status::OK;
}

grpc::Status MixqService::CancelJob(grpc::ServerContext*,
                                    const v1::CancelJobRequest* request,
                                    v1::Job* response) {
  auto job = manager_->Cancel(request->job_id());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::ServerWriteReactor<v1::JobEvent>* MixqService::WatchJob(
    grpc::CallbackServerContext*, const v1::WatchJobRequest* request) {
  return new WatchReactor(manager_, request->job_id());
}

}  // namespace mixq::server
