// MixqService: the gRPC face of JobManager. Each unary RPC converts the
// request, calls the manager, and maps absl::Status to grpc::Status.
// WatchJob uses the callback API so an open stream holds no server thread.
// Thread-safe.
#ifndef MIXQ_SERVER_SERVICE_H_
#define MIXQ_SERVER_SERVICE_H_

#include "grpcpp/grpcpp.h"
#include "proto/mixq.grpc.pb.h"
#include "server/job_manager.h"

namespace mixq::server {

// The gRPC status for an absl::Status (same code and message).
grpc::Status ToGrpcStatus(const absl::Status& status);

class MixqService final
    : public v1::Mixq::WithCallbackMethod_WatchJob<v1::Mixq::Service> {
 public:
  // Borrows `manager`, which must outlive the service.
  explicit MixqService(JobManager* manager);

  grpc::Status SubmitJob(grpc::ServerContext* context,
                         const v1::SubmitJobRequest* request,
                         v1::SubmitJobResponse* response) override;
  grpc::Status GetJob(grpc::ServerContext* context,
                      const v1::GetJobRequest* request,
                      v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context,
                        const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status GetResults(grpc::ServerContext* context,
                          const v1::GetResultsRequest* request,
                          v1::GetResultsResponse* response) override;
  grpc::Status QueryBestPolicies(
      grpc::ServerContext* context, const v1::QueryBestPoliciesRequest* request,
      v1::QueryBestPoliciesResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context,
                         const v1::CancelJobRequest* request,
                         v1::Job* response) override;
  grpc::Status EvaluatePolicy(grpc::ServerContext* context,
                              const v1::EvaluatePolicyRequest* request,
                              v1::EvaluatePolicyResponse* response) override;
  grpc::ServerWriteReactor<v1::JobEvent>* WatchJob(
      grpc::CallbackServerContext* context,
      const v1::WatchJobRequest* request) override;

 private:
  JobManager* const manager_;
};

}  // namespace mixq::server

#endif  // MIXQ_SERVER_SERVICE_H_
