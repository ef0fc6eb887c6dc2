// MixqService: the gRPC face of JobManager. Each unary RPC converts the
// request, calls the manager, and maps absl::Status to grpc::Status.
// WatchJob uses the callback API so an open stream holds no server thread.
// With an authenticator, every handler first checks the caller's bearer token
// (UNAUTHENTICATED otherwise), then the request's limits (request_limits.h).
// Failed RPCs, cancelled ones included, are logged with their method, code
// and job id. Error messages are cut at 4 KiB. Thread-safe.
#ifndef MIXQ_SERVER_SERVICE_H_
#define MIXQ_SERVER_SERVICE_H_

#include "grpcpp/grpcpp.h"
#include "proto/mixq.grpc.pb.h"
#include "server/auth.h"
#include "server/job_manager.h"

namespace mixq::server {

// The gRPC status for an absl::Status: the same code and message, the
// message cut at 4 KiB.
grpc::Status ToGrpcStatus(const absl::Status& status);

class MixqService final
    : public v1::Mixq::WithCallbackMethod_WatchJob<v1::Mixq::Service> {
 public:
  // Borrows `manager` and `authenticator` (nullptr: no authentication), which
  // must outlive the service.
  explicit MixqService(JobManager* manager,
                       const TokenAuthenticator* authenticator = nullptr);

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
  grpc::Status GetParetoFront(grpc::ServerContext* context,
                              const v1::GetParetoFrontRequest* request,
                              v1::GetParetoFrontResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context,
                         const v1::CancelJobRequest* request,
                         v1::Job* response) override;
  grpc::Status EvaluatePolicy(grpc::ServerContext* context,
                              const v1::EvaluatePolicyRequest* request,
                              v1::EvaluatePolicyResponse* response) override;
  grpc::ServerWriteReactor<v1::JobEvent>* WatchJob(
      grpc::CallbackServerContext* context,
      const v1::WatchJobRequest* request) override;
  // UploadArtifact and ExportModel are transfers, not long-lived streams:
  // they use the sync API and hold a server thread while they run.
  grpc::Status UploadArtifact(
      grpc::ServerContext* context,
      grpc::ServerReader<v1::UploadArtifactRequest>* reader,
      v1::Artifact* response) override;
  grpc::Status ExportModel(
      grpc::ServerContext* context, const v1::ExportModelRequest* request,
      grpc::ServerWriter<v1::ExportChunk>* writer) override;

 private:
  // OK, or the authenticator's UNAUTHENTICATED status (logged with `method`).
  grpc::Status Authorize(const grpc::ServerContextBase* context,
                         const char* method) const;
  // Authorize, then the request limits (CheckRequestLimits; a refusal is
  // logged as a failed RPC).
  grpc::Status Admit(const grpc::ServerContextBase* context, const char* method,
                     const google::protobuf::Message& request) const;
  // Logs a failed RPC (method, code, job id) and converts its status.
  grpc::Status Fail(const char* method, const std::string& job_id,
                    const absl::Status& status) const;
  // The end of a call whose handler succeeded: OK, or, when the client
  // cancelled it, its deadline passed or its connection closed meanwhile,
  // CANCELLED, logged like every failed RPC.
  grpc::Status Reply(const grpc::ServerContextBase* context, const char* method,
                     const std::string& job_id) const;

  JobManager* const manager_;
  const TokenAuthenticator* const authenticator_;
};

}  // namespace mixq::server

#endif  // MIXQ_SERVER_SERVICE_H_
